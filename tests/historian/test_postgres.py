"""What is particular to the PostgreSQL historian (the contract suite covers the rest)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.core import quality
from shopfloor.core.errors import StorageError
from shopfloor.core.types import make_batch
from shopfloor.historian.blocks import CHUNK_NS
from tests.historian import postgres_service
from tests.historian.postgres_service import open_historian as _open
from tests.services import require

T0 = 1_767_225_600 * 10**9
S = 10**9


def _count(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as con:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_reopen_after_close_keeps_recent_and_compacted_points(url, opened):
    h = _open(url, opened)
    h.write(make_batch(1, [1, 1], [T0, T0 + S], [1.0, 2.0]))
    h.compact()
    h.write(make_batch(1, [1, 2], [T0 + 2 * S, T0], [3.0, None], text=[None, "RUN"]))
    h.close()
    h2 = _open(url, opened)
    out = h2.query_raw(1, [1, 2], T0, T0 + CHUNK_NS).to_pylist()
    assert [(r["signal_id"], r["value"], r["text"]) for r in out] == [
        (1, 1.0, None),
        (1, 2.0, None),
        (1, 3.0, None),
        (2, None, "RUN"),
    ]
    assert h2.latest(1, [2]).column("text").to_pylist() == ["RUN"]
    assert h2.tenant_points(1) == 4


def test_write_returns_after_commit(url, opened):
    h = _open(url, opened)
    h.write(make_batch(1, np.arange(100) % 7, T0 + np.arange(100) * S, np.arange(100.0)))
    assert _count(url, "hist_recent") == 100  # another connection sees it at once


def test_copy_path_with_thousands_of_points_roundtrips_exactly(url, opened):
    rng = np.random.default_rng(5)
    n = 30_000
    sid = rng.integers(0, 40, n)
    ts = T0 + rng.integers(0, 3 * 3600, n) * S  # three hours, in random order
    vals = rng.normal(size=n)
    vals[::97] = np.round(vals[::97], 2)
    q = np.zeros(n, np.uint32)
    q[::13] = quality.BAD
    q[::17] = 0x40000000  # uncertain: the top bits, above int32's range once unsigned
    q[::19] = 0xFFFFFFFF
    texts = [f"state-{i}" if i % 500 == 0 else None for i in range(n)]
    values: list[float | None] = [None if t else float(v) for t, v in zip(texts, vals, strict=True)]
    h = _open(url, opened)
    parts = np.array_split(np.arange(n), 7)
    for part in parts:
        p = part.tolist()
        h.write(make_batch(1, sid[p], ts[p], [values[i] for i in p], q[p], [texts[i] for i in p]))
    expected = (
        pa.table(
            {
                "signal_id": pa.array(sid, pa.int32()),
                "ts": pa.array(ts, pa.int64()),
                "value": pa.array(values, pa.float64()),
                "text": pa.array(texts, pa.string()),
                "quality": pa.array(q, pa.uint32()),
                "row": np.arange(n),
            }
        )
        .sort_by([("signal_id", "ascending"), ("ts", "ascending"), ("row", "ascending")])
        .to_pylist()
    )
    newest: dict[tuple[int, int], dict[str, Any]] = {}
    for r in expected:  # the later write of a (signal, ts) wins
        r.pop("row")
        newest[(r["signal_id"], r["ts"])] = r
    want = list(newest.values())
    assert h.query_raw(1, range(40), T0, T0 + 3 * CHUNK_NS).to_pylist() == want
    assert h.compact() == len(want)
    assert h.query_raw(1, range(40), T0, T0 + 3 * CHUNK_NS).to_pylist() == want
    assert _count(url, "hist_recent") == 0
    assert h.stats()["block_points"] == len(want)


def test_bytes_per_point_after_compaction(url, opened):
    rng = np.random.default_rng(2)
    h = _open(url, opened)
    hours, signals = 4, 25
    n = hours * 3600
    for sid in range(signals):
        ts = T0 + np.arange(n) * S + rng.integers(-5, 6, n) * 10**6  # 1 Hz, +-5 ms jitter
        vals = np.round(20 + np.cumsum(rng.normal(0, 0.05, n)), 2)
        h.write(make_batch(1, np.full(n, sid), ts, vals))
    h.compact()
    st = h.stats()
    assert st["block_points"] == hours * signals * 3600
    per_point = st["blocks_bytes"] / st["block_points"]
    assert per_point <= 4.0, st


def test_two_stores_on_one_database_lose_nothing_while_one_compacts(url, opened):
    a = _open(url, opened)
    b = _open(url, opened)
    stop = threading.Event()
    errors: list[BaseException] = []

    def compactor() -> None:
        try:
            while not stop.is_set():
                b.compact()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=compactor)
    t.start()
    try:
        for i in range(60):
            a.write(make_batch(1, np.arange(50), np.full(50, T0 + i * S), np.full(50, float(i))))
    finally:
        stop.set()
        t.join()
    assert not errors
    out = b.query_raw(1, range(50), T0, T0 + CHUNK_NS)
    assert out.num_rows == 50 * 60
    assert a.tenant_points(1) == 50 * 60
    b.compact()
    assert a.query_raw(1, range(50), T0, T0 + CHUNK_NS).equals(out)


def test_stats_report_timescaledb_and_sizes(url, opened):
    h = _open(url, opened)
    h.write(make_batch(1, [1], [T0], [1.0]))
    st = h.stats()
    assert st["timescaledb"] in (0, 1)
    assert st["recent_points"] == 1
    assert st["disk_bytes"] == st["blocks_bytes"] + st["recent_bytes"] > 0


def test_urls(url, opened):
    from shopfloor.historian.postgres_backend import PostgresHistorian

    with pytest.raises(StorageError, match="not a PostgreSQL URL"):
        PostgresHistorian("duckdb:///x")
    h = _open(url.replace("postgresql://", "postgres://"), opened)
    assert h.url.startswith("postgresql://")
    with pytest.raises(StorageError, match="cannot open"):
        PostgresHistorian("postgresql://nobody@/none?host=/nonexistent&port=1")


def test_acknowledged_points_survive_a_server_crash_and_the_store_reconnects(url, opened):
    cluster = postgres_service.shared_cluster()  # crashed and restarted: no second initdb
    h = _open(url, opened)
    for i in range(20):
        h.write(make_batch(1, np.arange(10), np.full(10, T0 + i * S), np.full(10, float(i))))
    h.compact()
    h.write(make_batch(1, [1], [T0 + 99 * S], [99.0]))  # recent, acknowledged
    try:
        cluster.halt("immediate")  # no checkpoint, no clean shutdown: a crash
        with pytest.raises(StorageError):
            h.write(make_batch(1, [1], [T0 + 100 * S], [100.0]))  # not acknowledged
    finally:
        if not cluster.running:
            cluster.start()  # recovers from the WAL
    h.write(make_batch(1, [2], [T0 + 100 * S], [100.0]))  # the writer reconnected
    assert h.query_raw(1, range(10), T0, T0 + CHUNK_NS).num_rows == 202  # reads too
    assert h.compact() == 2  # and maintenance
    h.close()
    h2 = _open(url, opened)
    out = h2.query_raw(1, [1, 2], T0 + 99 * S, T0 + CHUNK_NS).to_pylist()
    assert [(r["signal_id"], r["value"]) for r in out] == [(1, 99.0), (2, 100.0)]


def test_readers_on_many_threads_share_a_small_pool(url, opened):
    h = _open(url, opened, pool_size=2)
    h.write(make_batch(1, np.arange(5), np.full(5, T0), np.ones(5)))
    errors: list[BaseException] = []
    counts: list[int] = []

    def reader() -> None:
        try:
            for _ in range(10):
                counts.append(h.query_raw(1, range(5), T0, T0 + CHUNK_NS).num_rows)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for i in range(1, 20):
        h.write(make_batch(1, np.arange(5), np.full(5, T0 + i * S), np.ones(5)))
        if i == 10:
            h.compact()
    for t in threads:
        t.join()
    assert not errors
    assert len(counts) == 60
    assert all(5 <= c <= 100 and c % 5 == 0 for c in counts)  # whole writes, never half
    assert h.query_raw(1, range(5), T0, T0 + CHUNK_NS).num_rows == 100


def test_the_platform_runs_on_a_postgresql_historian_by_url(tmp_path: Path) -> None:
    """Only historian_url changes: points ingested over the API are stored in PostgreSQL and
    read back, and a new platform on the same URL still has them."""
    from fastapi.testclient import TestClient

    from shopfloor.api.app import create_app
    from shopfloor.api.platform import Platform
    from shopfloor.core.config import Settings
    from shopfloor.historian.postgres_backend import PostgresHistorian

    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    url = postgres_service.shared_cluster().new_schema("platform")
    settings = Settings(data_dir=tmp_path / "data", mqtt_mode="off", historian_url=url)
    plat = Platform(settings)
    try:
        assert isinstance(plat.historian, PostgresHistorian)
        tenant, key = plat.registry.create_tenant("acme")
        t0 = 1_767_225_600_000  # 2026-01-01, ms
        doc = {"device": "press-01", "signal": ["temp", "temp"], "ts": [t0, t0 + 1000],
               "ts_unit": "ms", "value": [21.5, 22.0]}  # fmt: skip
        with TestClient(create_app(platform=plat)) as c:
            r = c.post("/api/v1/ingest", json=doc, headers={"X-API-Key": key})
            assert r.status_code == 200, r.text
    finally:
        plat.close()
    again = Platform(settings)
    try:
        sid = again.registry.get_signal(tenant.id, "press-01/temp").id
        out = again.historian.query_raw(tenant.id, [sid], 0, 2**62)
        assert out.column("value").to_pylist() == [21.5, 22.0]
    finally:
        again.close()
