"""Store-and-forward buffer benchmark: durable append rate, replay rate, bytes per point.

Data (seeded numpy): readings of 100 points (one poll of 100 signals of one device, one
timestamp, good quality, 2-decimal random-walk values), as a connector appends them.

- ``append_points_per_s``: W concurrent asyncio tasks (one per device, default 16) each
  ``await append_async`` their readings one after another, with the default ``fsync="always"``:
  every append has returned only once it is on disk, and concurrent appends share one
  ``fdatasync`` (group commit).
- ``append_points_per_s_single_writer``: one task doing the same alone (one sync per append).
- ``replay_points_per_s``: after closing and reopening the buffer, ``peek(10_000)`` + ``ack``
  until it is empty (the forwarder after an outage), the open excluded (``reopen_s``).
- ``bytes_per_point``: the segment files on disk / points.

Run: ``shopfloor bench buffer [--quick]`` or ``python -m benchmarks.buffer [--quick]``.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import emit, progress
from shopfloor.edge.buffer import StoreForwardBuffer
from shopfloor.edge.model import Reading

POINTS_PER_READING = 100
PEEK_POINTS = 10_000
TARGETS = {"append_points_per_s": (">=", 200_000), "replay_points_per_s": (">=", 200_000)}


def make_readings(n_readings: int, writers: int, seed: int = 42) -> list[list[Reading]]:
    """Per writer (device), its readings in poll order, 1 s apart, ending now."""
    rng = np.random.default_rng(seed)
    per = n_readings // writers
    now = time.time_ns()
    out: list[list[Reading]] = []
    for w in range(writers):
        signals = tuple(f"line-1/machine-{w:02d}/signal-{i:03d}" for i in range(100))
        steps = np.rint(rng.normal(0, 10, size=(per, POINTS_PER_READING)))
        values = (rng.integers(0, 10_000, POINTS_PER_READING) + np.cumsum(steps, axis=0)) / 100
        out.append(
            [
                Reading.at(f"machine-{w:02d}", now - (per - k) * 1_000_000_000, signals, values[k])
                for k in range(per)
            ]
        )
    return out


async def _append_concurrently(buf: StoreForwardBuffer, per_writer: list[list[Reading]]) -> float:
    async def writer(readings: list[Reading]) -> None:
        for r in readings:
            await buf.append_async([r])

    t = time.perf_counter()
    await asyncio.gather(*(writer(rs) for rs in per_writer))
    return time.perf_counter() - t


def _replay(buf: StoreForwardBuffer, expect_points: int) -> tuple[float, int]:
    t = time.perf_counter()
    points = 0
    for _ in range(expect_points):  # bounded: at least one point per round
        cursor, rs = buf.peek(PEEK_POINTS)
        if not rs:
            break
        points += sum(len(r) for r in rs)
        buf.ack(cursor)
    return time.perf_counter() - t, points


def run(quick: bool, work: Path, writers: int) -> dict[str, Any]:
    n_points = 200_000 if quick else 2_000_000
    n_single = 20_000 if quick else 200_000
    per_writer = make_readings(n_points // POINTS_PER_READING, writers)
    points = sum(len(r) for rs in per_writer for r in rs)

    progress(f"{writers} concurrent writers: {points:,} points, fsync=always")
    folder = work / "concurrent"
    buf = StoreForwardBuffer(folder)
    append_s = asyncio.run(_append_concurrently(buf, per_writer))
    stats = buf.stats()
    buf.close()
    if stats.depth_points != points:
        raise RuntimeError(f"stored {stats.depth_points} points, appended {points}")
    disk = sum(p.stat().st_size for p in folder.glob("*.seg"))

    progress("reopen and replay (peek + ack)")
    t = time.perf_counter()
    buf = StoreForwardBuffer(folder)
    reopen_s = time.perf_counter() - t
    replay_s, replayed = _replay(buf, points)
    buf.close()
    if replayed != points:
        raise RuntimeError(f"replayed {replayed} points, appended {points}")

    progress(f"one writer: {n_single:,} points")
    single = make_readings(n_single // POINTS_PER_READING, 1, seed=7)
    buf = StoreForwardBuffer(work / "single")
    single_s = asyncio.run(_append_concurrently(buf, single))
    buf.close()

    result: dict[str, Any] = {
        "append_points_per_s": round(points / append_s),
        "append_points_per_s_single_writer": round(n_single / single_s),
        "replay_points_per_s": round(points / replay_s),
        "bytes_per_point": round(disk / points, 3),
        "points": points,
        "fsync": "always",
        "writers": writers,
        "points_per_append": POINTS_PER_READING,
        "peek_max_points": PEEK_POINTS,
        "reopen_s": round(reopen_s, 3),
        "quick": quick,
    }
    result["targets_met"] = all(
        result[k] >= v if op == ">=" else result[k] <= v for k, (op, v) in TARGETS.items()
    )
    if quick:
        result["targets_note"] = "targets apply to the full size run, not --quick"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench buffer", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="200K points; well under 30 s")
    ap.add_argument("--data-dir", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--writers", type=int, default=16, help="concurrent appending tasks")
    args = ap.parse_args(argv)
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="buffer-", dir=args.data_dir))
    else:
        work = Path(tempfile.mkdtemp(prefix="buffer-"))
    try:
        result = run(args.quick, work, args.writers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return emit(result)


if __name__ == "__main__":
    main()
