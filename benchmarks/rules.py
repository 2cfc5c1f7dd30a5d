"""Rule engine benchmark: points evaluated per second with 1,000 rules over 10,000 signals.

Fleet (seeded numpy): 100 device types x 10 devices x 10 signals (s0..s9) = 10,000 signals.
Each device type has 10 rules, 1,000 in all: 8 thresholds (s0..s7; high and low, half with a
deadband, a quarter with on/off delays), 1 rate of change (s8), and 1 other rule, the kinds
in turn: an expression over s0, s1 and s9, a 60 s tumbling avg, a 30 s sliding max, a 30 s
stale check, a machine-state derivation (running / idle / down). Every rule applies to all 10
devices of its type: 10,000 (rule, device) bindings.

Data: every signal polled at 1 Hz, a random walk (step N(0, 0.5)) around 50; limits sit about
3 sigma of the walk away so that some rules fire. A batch is 10 consecutive seconds of all
signals, time ordered (100,000 points; ``--quick``: a smaller fleet, see ``--devices``).

- ``points_per_s``: points / time of ``RuleEngine.process_arrays`` over all batches (with
  ``now``, so stale checks run), events built and sorted included.
- ``numpy_compare_points_per_s``: **the ceiling**, in the same run: a bare ``values > limits``
  over the same arrays (one limit per point), batch by batch.
- ``ratio``: ``points_per_s / numpy_compare_points_per_s``.

Run: ``shopfloor bench rules [--quick]`` or ``python -m benchmarks.rules [--quick]``.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import emit, progress
from shopfloor.core.kinds import DataType
from shopfloor.rules.engine import RuleEngine
from shopfloor.rules.model import (
    Device,
    ExpressionRule,
    RateRule,
    Rule,
    StaleRule,
    StateRule,
    ThresholdRule,
    WindowRule,
)

NS = 1_000_000_000
SIGNALS_PER_DEVICE = 10
DEVICES_PER_TYPE = 10
TARGETS = {"points_per_s": (">=", 2_000_000)}


def fleet(n_types: int) -> tuple[list[Device], list[Rule]]:
    devices: list[Device] = []
    rules: list[Rule] = []
    sid = 1
    for t in range(n_types):
        dtype = f"type-{t:03d}"
        for k in range(DEVICES_PER_TYPE):
            sigs = {f"s{i}": sid + i for i in range(SIGNALS_PER_DEVICE)}
            sid += SIGNALS_PER_DEVICE
            devices.append(Device(f"dev-{t:03d}-{k:02d}", dtype, sigs, {"s9": DataType.BOOL}))
        for i in range(8):
            low = i % 2 == 1
            rules.append(
                ThresholdRule(
                    id=f"{dtype}/th{i}",
                    device_type=dtype,
                    signal=f"s{i}",
                    limit=35.0 if low else 65.0,
                    direction="low" if low else "high",
                    deadband=2.0 if i % 4 < 2 else 0.0,
                    on_delay=5.0 if i % 4 == 3 else 0.0,
                    off_delay=5.0 if i % 4 == 3 else 0.0,
                )
            )
        rules.append(RateRule(id=f"{dtype}/rate", device_type=dtype, signal="s8", limit=1.6))
        rules.append(_other(t, dtype))
    return devices, rules


def _other(t: int, dtype: str) -> Rule:
    rid = f"{dtype}/x"
    kind = t % 5
    if kind == 0:
        return ExpressionRule(id=rid, device_type=dtype, expression="s0 - s1 > 25 and s9")
    if kind == 1:
        return WindowRule(id=rid, device_type=dtype, signal="s2", window=60, agg="avg", limit=60)
    if kind == 2:
        return WindowRule(
            id=rid, device_type=dtype, signal="s3", window=30, agg="max", limit=62, mode="sliding"
        )
    if kind == 3:
        return StaleRule(id=rid, device_type=dtype, signal="s4", timeout=30)
    return StateRule(
        id=rid,
        device_type=dtype,
        conditions=[("not s9", "down"), ("s5 > 52", "running")],
        default="idle",
    )


def make_data(
    n_signals: int, seconds: int, start_ns: int, seed: int = 42
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Time-ordered columns: each second, every signal once (signal ids 1..n)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.5, size=(seconds, n_signals))
    walk = 50 + np.cumsum(steps, axis=0)
    walk = 50 + (walk - 50) * 0.98  # keep most of the walk within the limits
    sid = np.tile(np.arange(1, n_signals + 1, dtype=np.int32), seconds)
    ts = np.repeat(start_ns + np.arange(seconds, dtype=np.int64) * NS, n_signals)
    values = walk.ravel()
    bools = (sid % SIGNALS_PER_DEVICE) == 0  # s9: a running flag, off now and then
    values[bools] = (rng.random(int(bools.sum())) > 0.05).astype(np.float64)
    return sid, ts, values


def run(quick: bool, n_types: int, batch_seconds: int, seconds: int) -> dict[str, Any]:
    devices, rules = fleet(n_types)
    n_signals = len(devices) * SIGNALS_PER_DEVICE
    start = 1_700_000_000 * NS
    progress(f"{len(rules)} rules over {n_signals:,} signals, {seconds} s of 1 Hz data")
    sid, ts, val = make_data(n_signals, seconds, start)
    per_batch = n_signals * batch_seconds
    batches = [
        (sid[i : i + per_batch], ts[i : i + per_batch], val[i : i + per_batch])
        for i in range(0, len(sid), per_batch)
    ]
    engine = RuleEngine(devices, rules)
    # One batch before timing: numpy's first calls of each function are slower.
    warm = RuleEngine(devices, rules)
    warm.process_arrays(*batches[0], now=int(batches[0][1][-1]))
    progress(f"{len(batches)} batches of {per_batch:,} points")
    events = 0
    t = time.perf_counter()
    for b_sid, b_ts, b_val in batches:
        events += len(engine.process_arrays(b_sid, b_ts, b_val, now=int(b_ts[-1])))
    engine_s = time.perf_counter() - t
    points = len(sid)
    disabled = [r for r, s in engine.status().items() if not s.enabled]
    if disabled:
        raise RuntimeError(f"rules disabled during the run: {disabled[:5]}")

    progress("ceiling: bare values > limits")
    limit_of = np.full(n_signals + 1, 65.0)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        hits = 0
        for b_sid, _b_ts, b_val in batches:
            hits += int(np.count_nonzero(b_val > limit_of[b_sid]))
        best = min(best, time.perf_counter() - t)
    result: dict[str, Any] = {
        "points_per_s": round(points / engine_s),
        "numpy_compare_points_per_s": round(points / best),
        "ratio": round((points / engine_s) / (points / best), 4),
        "rules": len(rules),
        "signals": n_signals,
        "devices": len(devices),
        "bindings": sum(s.devices for s in engine.status().values()),
        "points": points,
        "batch_points": per_batch,
        "events": events,
        "quick": quick,
    }
    result["targets_met"] = all(
        result[k] >= v if op == ">=" else result[k] <= v for k, (op, v) in TARGETS.items()
    )
    if quick:
        result["targets_note"] = "targets apply to the full size run, not --quick"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench rules", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer seconds of data; under 30 s")
    ap.add_argument("--types", type=int, default=100, help="device types (10 devices each)")
    ap.add_argument("--batch-seconds", type=int, default=10, help="seconds of data per batch")
    ap.add_argument("--seconds", type=int, help="seconds of data (default 600; --quick 60)")
    ap.add_argument("--data-dir", type=Path, help="unused (no files); accepted like the others")
    args = ap.parse_args(argv)
    seconds = args.seconds or (60 if args.quick else 600)
    return emit(run(args.quick, args.types, args.batch_seconds, seconds))


if __name__ == "__main__":
    main()
