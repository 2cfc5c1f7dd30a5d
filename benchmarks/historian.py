"""Historian benchmark: ingest rate against a plain DuckDB insert, bytes per point, query p99.

Data (seeded numpy): N signals polled at 1 Hz for T seconds; each timestamp is the second
grid plus a uniform integer jitter of -5..+5 ms, at millisecond resolution, as polled data
has. Half the signals are 2-decimal random walks, half are step signals (setpoints). Batches
are what a poller sends: all signals for 10 consecutive seconds.

Run: ``shopfloor bench historian [--quick]`` or ``python -m benchmarks.historian [--quick]``.
The last line of stdout is one JSON object; see benchmarks/README.md for the keys.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from benchmarks import emit, p99_ms, progress
from shopfloor.core.types import make_batch
from shopfloor.historian.duckdb_backend import DuckDBHistorian

TENANT = 1
T0_S = 1_704_067_200  # 2024-01-01T00:00:00Z: a day (and hour) boundary
SEC_NS = 1_000_000_000
MIN_NS = 60 * SEC_NS
HOUR_NS = 3600 * SEC_NS
DAY_NS = 24 * HOUR_NS
BATCH_SECONDS = 10
FRESH_SECONDS = 60  # written after compaction, so queries also read a recent segment

TARGETS = {
    "ingest_ratio": (">=", 0.5),
    "bytes_per_point": ("<=", 1.5),
    "latest_p99_ms": ("<=", 5.0),
    "window_1h_1min_p99_ms": ("<=", 20.0),
}


class Data:
    """Values and timestamps laid out [second, signal]; signal ids are 1..n."""

    def __init__(self, n_signals: int, n_seconds: int, seed: int = 42) -> None:
        rng = np.random.default_rng(seed)
        self.n_signals, self.n_seconds = n_signals, n_seconds
        self.sid = np.arange(1, n_signals + 1, dtype=np.int32)
        jitter_ms = rng.integers(-5, 6, size=(n_seconds, n_signals), dtype=np.int64)
        grid_ms = (T0_S + np.arange(n_seconds, dtype=np.int64))[:, None] * 1000
        self.ts = (grid_ms + jitter_ms) * 1_000_000
        self.value = np.empty((n_seconds, n_signals), dtype=np.float64)
        n_walk = n_signals // 2
        # Random walks: start 0..100, steps N(0, 0.1) rounded to 0.01 (integer hundredths).
        start = rng.integers(0, 10_000, size=n_walk, dtype=np.int64)
        steps = np.rint(rng.normal(0.0, 10.0, size=(n_seconds, n_walk))).astype(np.int64)
        steps[0] = 0
        self.value[:, :n_walk] = (start + np.cumsum(steps, axis=0)) / 100.0
        # Step signals: a setpoint (1 decimal, 20..80) that changes every 2..10 minutes.
        for j in range(n_walk, n_signals):
            col = self.value[:, j]
            t = 0
            while t < n_seconds:
                run = int(rng.integers(120, 601))
                col[t : t + run] = np.round(rng.uniform(20.0, 80.0), 1)
                t += run

    @property
    def points(self) -> int:
        return self.n_seconds * self.n_signals

    def batches(self, first_second: int = 0, last_second: int | None = None) -> list[pa.Table]:
        last = self.n_seconds if last_second is None else last_second
        out = []
        for a in range(first_second, last, BATCH_SECONDS):
            b = min(a + BATCH_SECONDS, last)
            rows = b - a
            out.append(
                make_batch(
                    TENANT,
                    np.tile(self.sid, rows),
                    self.ts[a:b].reshape(-1),
                    self.value[a:b].reshape(-1),
                )
            )
        return out

    def extend(self, seconds: int, seed: int = 7) -> None:
        """Append fresh seconds (continuing each series) for the post-compaction writes."""
        rng = np.random.default_rng(seed)
        n = self.n_signals
        jitter_ms = rng.integers(-5, 6, size=(seconds, n), dtype=np.int64)
        grid_ms = (T0_S + self.n_seconds + np.arange(seconds, dtype=np.int64))[:, None] * 1000
        ts = (grid_ms + jitter_ms) * 1_000_000
        n_walk = n // 2
        steps = np.rint(rng.normal(0.0, 10.0, size=(seconds, n_walk))).astype(np.int64)
        last_cents = np.rint(self.value[-1, :n_walk] * 100).astype(np.int64)
        value = np.empty((seconds, n))
        value[:, :n_walk] = (last_cents + np.cumsum(steps, axis=0)) / 100.0
        value[:, n_walk:] = self.value[-1, n_walk:]
        self.ts = np.concatenate([self.ts, ts])
        self.value = np.concatenate([self.value, value])
        self.n_seconds += seconds


def _ingest_backend(h: DuckDBHistorian, batches: list[pa.Table], inflight: int) -> float:
    """Submit batches keeping ``inflight`` of them waiting, as concurrent requests would."""
    pending: deque[Future[None]] = deque()
    t = time.perf_counter()
    for b in batches:
        if len(pending) >= inflight:
            pending.popleft().result()
        pending.append(h.submit(b))
    while pending:
        pending.popleft().result()
    return time.perf_counter() - t


_RAW_TABLE = (
    "CREATE TABLE t (tenant_id INTEGER NOT NULL, signal_id INTEGER NOT NULL, "
    "ts BIGINT NOT NULL, value DOUBLE, text VARCHAR, quality UINTEGER NOT NULL)"
)


def _ingest_raw(folder: Path, batches: list[pa.Table], mode: str) -> tuple[float, int]:
    """Plain DuckDB: the same Arrow batches into a plain table (no index, no key).

    - ``bulk``: one ``INSERT INTO t SELECT * FROM data`` of all batches (a chunked Arrow
      table, one chunk per batch), one commit: the ceiling, DuckDB's own insert speed.
    - ``transaction``: one INSERT per batch, all in one transaction, one commit at the end.
    - ``autocommit``: one INSERT per batch, each its own commit (one sync per batch): what a
      writer without group commit gets.
    """
    folder.mkdir(parents=True)
    con = duckdb.connect(str(folder / "raw.duckdb"))
    con.execute(_RAW_TABLE)
    t = time.perf_counter()
    if mode == "bulk":
        con.register("data", pa.concat_tables(batches))
        con.execute("INSERT INTO t SELECT * FROM data")
        con.unregister("data")
    else:
        if mode == "transaction":
            con.execute("BEGIN")
        for b in batches:
            con.register("batch", b)
            con.execute("INSERT INTO t SELECT * FROM batch")
            con.unregister("batch")
        if mode == "transaction":
            con.execute("COMMIT")
    elapsed = time.perf_counter() - t
    n = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    con.execute("CHECKPOINT")
    con.close()
    size = sum(p.stat().st_size for p in folder.glob("raw.duckdb*"))
    expected = sum(b.num_rows for b in batches)
    if n != expected:
        raise AssertionError(f"raw table holds {n} rows, {expected} inserted")
    shutil.rmtree(folder)
    return elapsed, size


def _stats(h: DuckDBHistorian) -> dict[str, Any]:
    """stats() in a throwaway thread: under DuckDB 2.0 its fetchone() leaves the calling
    thread's cursor with an unfinished result, and the next relation query on that thread
    (compact(), queries) then fails with ResourceInUseException. See README, known issues."""
    with cf.ThreadPoolExecutor(1) as ex:
        return dict(ex.submit(h.stats).result())


def _timed(fn: Any, calls: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"historian benchmark: wrong result: {what}")


def _verify(h: DuckDBHistorian, data: Data, rng: np.random.Generator) -> None:
    """Results must match what was written; fail loudly otherwise."""
    start, end = T0_S * SEC_NS - SEC_NS, (T0_S + data.n_seconds + 1) * SEC_NS
    for j in rng.choice(data.n_signals, size=min(5, data.n_signals), replace=False).tolist():
        sid = int(data.sid[j])
        raw = h.query_raw(TENANT, [sid], start, end)
        _check(raw.num_rows == data.n_seconds, f"signal {sid}: {raw.num_rows} raw points")
        _check(np.array_equal(np.asarray(raw.column("ts")), data.ts[:, j]), f"signal {sid}: ts")
        _check(
            np.array_equal(np.asarray(raw.column("value")), data.value[:, j]),
            f"signal {sid}: values",
        )
        ds = h.query_downsample(TENANT, [sid], start, end, MIN_NS, ["count", "avg"])
        _check(
            int(pa.compute.sum(ds.column("count")).as_py()) == data.n_seconds,
            f"signal {sid}: downsample count",
        )
        bucket = (data.ts[:, j] // MIN_NS) * MIN_NS
        keys, inv = np.unique(bucket, return_inverse=True)
        avg = np.bincount(inv, weights=data.value[:, j]) / np.bincount(inv)
        _check(np.array_equal(np.asarray(ds.column("bucket")), keys), f"signal {sid}: buckets")
        _check(np.allclose(np.asarray(ds.column("avg")), avg, rtol=1e-12), f"signal {sid}: avg")
    latest = h.latest(TENANT, data.sid)
    _check(latest.num_rows == data.n_signals, "latest: row count")
    _check(np.array_equal(np.asarray(latest.column("ts")), data.ts[-1]), "latest: ts")
    _check(np.array_equal(np.asarray(latest.column("value")), data.value[-1]), "latest: values")


def run(quick: bool, data_dir: Path, inflight: int) -> dict[str, Any]:
    n_signals, n_seconds = (100, 3_600) if quick else (1_000, 10_000)
    progress(f"generating {n_signals} signals x {n_seconds} s at 1 Hz")
    data = Data(n_signals, n_seconds)
    points = data.points
    batches = data.batches()
    progress(f"{points:,} points in {len(batches)} batches of {batches[0].num_rows:,}")

    raw: dict[str, float] = {}
    raw_bytes = 0
    for mode in ("bulk", "transaction", "autocommit"):
        secs, size = _ingest_raw(data_dir / f"raw-{mode}", batches, mode)
        raw[mode] = points / secs
        raw_bytes = raw_bytes or size
        progress(f"plain DuckDB insert ({mode}): {raw[mode]:,.0f} points/s")
    raw_rate = raw["bulk"]
    progress(f"plain DuckDB table after CHECKPOINT: {raw_bytes / points:.2f} B/point")

    h = DuckDBHistorian(
        data_dir / "historian",
        hot_max_points=2 * points + 1_000_000,
        compact_interval_s=1e9,
        background=False,
    )
    try:
        ingest_s = _ingest_backend(h, batches, inflight)
        ingest_rate = points / ingest_s
        st = _stats(h)
        progress(f"historian ingest: {ingest_rate:,.0f} points/s in {st['commits']} commits")
        _check(st["points_written"] == points, f"points_written {st['points_written']}")
        del batches

        t = time.perf_counter()
        compacted = h.compact()
        compact_s = time.perf_counter() - t
        _check(compacted == points, f"compacted {compacted} of {points} points")
        progress(f"compact: {points / compact_s:,.0f} points/s ({compact_s:.2f} s)")
        t = time.perf_counter()
        h.checkpoint()
        checkpoint_s = time.perf_counter() - t
        disk = h.disk_bytes()
        st = _stats(h)
        _check(st["block_points"] == points, f"blocks hold {st['block_points']} points")
        progress(f"on disk after checkpoint: {disk:,} bytes = {disk / points:.3f} B/point")

        data.extend(FRESH_SECONDS)
        for b in data.batches(n_seconds):
            h.write(b)
        rng = np.random.default_rng(1)
        _verify(h, data, rng)
        progress("results verified against the generated data")

        total_s = data.n_seconds
        all_ids = data.sid
        latest = _timed(lambda: h.latest(TENANT, all_ids), 200)

        def window() -> None:
            sid = int(rng.integers(1, n_signals + 1))
            s0 = int(rng.integers(0, total_s - 3600 + 1))
            a = (T0_S + s0) * SEC_NS
            h.query_downsample(TENANT, [sid], a, a + HOUR_NS, MIN_NS, ["avg"])

        win = _timed(window, 200)

        day0 = (T0_S * SEC_NS // DAY_NS) * DAY_NS
        k = min(100, n_signals)

        def multi() -> None:
            ids = rng.choice(all_ids, size=k, replace=False)
            out = h.query_downsample(TENANT, ids, day0, day0 + DAY_NS, MIN_NS, ["avg"])
            if out.num_rows < k * (total_s // 60):
                raise AssertionError(f"24 h query returned {out.num_rows} buckets")

        multi_t = _timed(multi, 30, warmup=2)
        st = _stats(h)
    finally:
        h.close()

    result: dict[str, Any] = {
        "benchmark": "historian",
        "quick": quick,
        "signals": n_signals,
        "seconds": n_seconds,
        "points": points,
        "batch_points": BATCH_SECONDS * n_signals,
        "inflight_batches": inflight,
        "ingest_points_per_s": round(ingest_rate),
        "raw_insert_points_per_s": round(raw_rate),
        "ingest_ratio": round(ingest_rate / raw_rate, 3),
        "raw_per_batch_one_txn_points_per_s": round(raw["transaction"]),
        "raw_per_batch_autocommit_points_per_s": round(raw["autocommit"]),
        "ingest_ratio_vs_per_batch_autocommit": round(ingest_rate / raw["autocommit"], 3),
        "compact_points_per_s": round(points / compact_s),
        "checkpoint_s": round(checkpoint_s, 3),
        "bytes_per_point": round(disk / points, 3),
        "raw_bytes_per_point": round(raw_bytes / points, 3),
        "latest_p99_ms": p99_ms(latest),
        "window_1h_1min_p99_ms": p99_ms(win),
        "multi_24h_1min_100_p99_ms": p99_ms(multi_t),
        "multi_24h_signals": k,
        "latest_median_ms": round(float(np.median(latest)) * 1000, 3),
        "window_1h_1min_median_ms": round(float(np.median(win)) * 1000, 3),
        "multi_24h_1min_100_median_ms": round(float(np.median(multi_t)) * 1000, 3),
        "duckdb_version": duckdb.__version__,
    }
    result["targets_met"] = {
        key: (result[key] >= limit if op == ">=" else result[key] <= limit)
        for key, (op, limit) in TARGETS.items()
    }
    if quick:
        result["targets_note"] = "targets apply to the full size run, not --quick"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench historian", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100 signals x 1 h; well under 60 s")
    ap.add_argument("--data-dir", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument(
        "--inflight", type=int, default=32, help="batches submitted and not yet durable"
    )
    args = ap.parse_args(argv)
    t = time.perf_counter()
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="historian-", dir=args.data_dir))
    else:
        work = Path(tempfile.mkdtemp(prefix="shopfloor-bench-historian-"))
    try:
        result = run(args.quick, work, args.inflight)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["elapsed_s"] = round(time.perf_counter() - t, 1)
    return emit(result)


if __name__ == "__main__":
    main()
