"""PostgreSQL historian benchmark: ingest rate against a plain COPY, bytes per point, queries.

Data: the historian benchmark's (benchmarks.historian.Data: 1 Hz polled signals with +-5 ms
jitter, half 2-decimal random walks, half step signals; batches of 10 s of every signal).

The server: a throwaway cluster (tests/historian/postgres_service.py: initdb in a temp folder,
fsync on, default settings) unless ``--url`` names one.

Run: ``python -m benchmarks.historian_postgres [--quick] [--url postgresql://...]``.
The last line of stdout is one JSON object:

- ``ingest_points_per_s``: points / time through ``PostgresHistorian.submit`` with 32 batches in
  flight, each future awaited (= committed); no compaction during ingest.
- ``postgres_copy_ceiling_points_per_s``: the same rows, pre-encoded, by plain binary COPY into
  a table of the same columns and index, one COPY per batch, one transaction; the better of a
  run before and one after the ingest (the first one meets a cold server).
- ``ingest_ratio``: the two above.
- ``compact_points_per_s``: points / time of ``compact()`` (VACUUM of the recent table included).
- ``bytes_per_point``: size of the blocks table (heap, TOAST, index) / points, after compaction.
- ``disk_bytes_per_point``: both tables with their indexes / points (the recent table keeps its
  emptied pages after VACUUM, ready for the next rows).
- ``rows_bytes_per_point``: the ceiling table (plain rows + index) / points: what rows alone cost.
- ``latest_p99_ms``, ``window_1h_1min_p99_ms``, ``raw_1h_p99_ms``: query latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import psycopg

from benchmarks import emit, p99_ms, progress
from benchmarks.historian import HOUR_NS, MIN_NS, SEC_NS, T0_S, TENANT, Data
from shopfloor.historian.postgres_backend import PostgresHistorian
from shopfloor.historian.postgres_copy import RECENT_COLUMNS, encode_points

TARGETS = {"bytes_per_point": ("<=", 4.0)}


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.historian.postgres_service import PostgresCluster

    with PostgresCluster() as cluster:
        yield cluster.new_database("bench")


def _ceiling(url: str, payloads: list[bytes], points: int) -> tuple[float, float]:
    """Plain COPY of the same rows: (points/s, bytes/point of rows + index)."""
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS bench_rows")
        con.execute(
            "CREATE TABLE bench_rows (tenant_id int4 NOT NULL, signal_id int4 NOT NULL, "
            "ts int8 NOT NULL, value float8, text text, quality int4 NOT NULL, wseq int8 NOT NULL)"
        )
        con.execute("CREATE INDEX ON bench_rows (tenant_id, signal_id, ts)")
        cols = ", ".join(RECENT_COLUMNS)
        t = time.perf_counter()
        with con.transaction(), con.cursor() as cur:
            for p in payloads:
                with cur.copy(f"COPY bench_rows ({cols}) FROM STDIN (FORMAT binary)") as cp:
                    cp.write(p)
        rate = points / (time.perf_counter() - t)
        con.execute("VACUUM ANALYZE bench_rows")
        row = con.execute("SELECT pg_total_relation_size('bench_rows')").fetchone()
        assert row is not None
        con.execute("DROP TABLE bench_rows")
        return rate, int(row[0]) / points


def run(quick: bool, url: str, inflight: int) -> dict[str, Any]:
    n_signals, n_seconds = (100, 3_600) if quick else (1_000, 3_600)
    progress(f"data: {n_signals} signals x {n_seconds} s")
    data = Data(n_signals, n_seconds)
    batches = data.batches()
    points = data.points
    payloads = [encode_points(b, i << 32) for i, b in enumerate(batches)]
    progress("plain COPY ceiling (1st run)")
    ceiling, rows_bpp = _ceiling(url, payloads, points)

    h = PostgresHistorian(url, background=False, hot_max_points=10 * points)
    try:
        progress("ingest through PostgresHistorian.submit")
        pending: deque[Future[None]] = deque()
        t = time.perf_counter()
        for b in batches:
            if len(pending) >= inflight:
                pending.popleft().result()
            pending.append(h.submit(b))
        while pending:
            pending.popleft().result()
        ingest = points / (time.perf_counter() - t)
        progress("plain COPY ceiling (2nd run, warm)")
        ceiling = max(ceiling, _ceiling(url, payloads, points)[0])
        progress("compaction")
        t = time.perf_counter()
        done = h.compact()
        compact_s = time.perf_counter() - t
        st = h.stats()
        progress("queries")
        # A minute of fresh points after compaction, so queries read recent rows too.
        data.extend(60)
        for b in data.batches(n_seconds, n_seconds + 60):
            h.write(b)
        rng = np.random.default_rng(1)
        sids = data.sid
        lat, win, raw = [], [], []
        start = T0_S * SEC_NS
        for _ in range(50 if quick else 200):
            s = int(rng.choice(sids))
            t = time.perf_counter()
            h.latest(TENANT, [s])
            lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            h.query_downsample(TENANT, [s], start, start + HOUR_NS, MIN_NS, ["avg", "max"])
            win.append(time.perf_counter() - t)
            t = time.perf_counter()
            h.query_raw(TENANT, [s], start, start + HOUR_NS)
            raw.append(time.perf_counter() - t)
    finally:
        h.close()
    result: dict[str, Any] = {
        "benchmark": "historian-postgres",
        "quick": quick,
        "points": points,
        "signals": n_signals,
        "ingest_points_per_s": round(ingest),
        "postgres_copy_ceiling_points_per_s": round(ceiling),
        "ingest_ratio": round(ingest / ceiling, 3),
        "compacted_points": done,
        "compact_points_per_s": round(done / compact_s),
        "bytes_per_point": round(st["blocks_bytes"] / st["block_points"], 3),
        "disk_bytes_per_point": round(st["disk_bytes"] / st["block_points"], 3),
        "rows_bytes_per_point": round(rows_bpp, 1),
        "timescaledb": bool(st["timescaledb"]),
        "latest_p99_ms": p99_ms(lat),
        "window_1h_1min_p99_ms": p99_ms(win),
        "raw_1h_p99_ms": p99_ms(raw),
    }
    result["targets_met"] = all(
        result[k] <= v if op == "<=" else result[k] >= v for k, (op, v) in TARGETS.items()
    )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench historian-postgres", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100 signals x 1 h")
    ap.add_argument("--url", help="an existing database (default: a throwaway cluster)")
    ap.add_argument("--inflight", type=int, default=32, help="batches in flight")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    with _server(args.url) as url:
        result = run(args.quick, url, args.inflight)
    result["elapsed_s"] = round(time.perf_counter() - t, 1)
    return emit(result)


if __name__ == "__main__":
    main()
