"""Monthly partitions of the PostgreSQL historian's blocks (docs/historian-postgres.md).

Also a measurement, not a test: ``python -m tests.historian.test_postgres_partitions
[--points N]`` times retention by DROP and by DELETE on the same data (throwaway cluster).
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa

from shopfloor.core.types import make_batch
from shopfloor.historian.blocks import BLOCK_COLUMNS, CHUNK_NS, Points, encode_block
from tests.historian import postgres_service
from tests.historian.postgres_service import open_historian as _open

S = 10**9
DAY = 86_400 * S
JAN = 1_767_225_600 * S  # 2026-01-01 UTC
FEB = JAN + 31 * DAY
MAR = FEB + 28 * DAY
APR = MAR + 31 * DAY
JUN = APR + 61 * DAY

# The layout of hist_blocks before partitioning (as the code of 2026-11 created it).
OLD_DDL = [
    "CREATE TABLE hist_recent (tenant_id int4 NOT NULL, signal_id int4 NOT NULL, "
    "ts int8 NOT NULL, value float8, text text, quality int4 NOT NULL, wseq int8 NOT NULL)",
    "CREATE INDEX hist_recent_key ON hist_recent (tenant_id, signal_id, ts)",
    "CREATE SEQUENCE hist_batch",
    "CREATE TABLE hist_blocks (tenant_id int4, signal_id int4, chunk int8, n int4, "
    "t_first int8, t_last int8, agg_count int4, agg_sum float8, agg_min float8, "
    "agg_max float8, agg_first_ts int8, agg_first float8, agg_last_ts int8, agg_last float8, "
    "last_value float8, last_text text, last_quality int8, ts_blob bytea, v_blob bytea, "
    "vmask_blob bytea, q_blob bytea, text_blob bytea, "
    "PRIMARY KEY (tenant_id, signal_id, chunk))",
]


def _rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        return con.execute(query.encode(), params).fetchall()


def _partitions(url: str) -> list[str]:
    return [
        r[0]
        for r in _rows(
            url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('hist_blocks') ORDER BY 1",
        )
    ]


def _hourly(tenant: int, sids: range, start: int, hours: int, step_s: int = 60) -> pa.Table:
    """Points every ``step_s`` of each signal over ``hours`` hours from ``start``."""
    ts = start + np.arange(0, hours * 3600, step_s, dtype=np.int64) * S
    all_ts = np.tile(ts, len(sids))
    all_sid = np.repeat(np.asarray(list(sids)), len(ts))
    return make_batch(tenant, all_sid, all_ts, (all_ts // S % 1000).astype(float))


def _three_months(url: str, opened: list[Any]) -> Any:
    h = _open(url, opened)
    for start in (JAN + 10 * DAY, FEB + 10 * DAY, MAR + 10 * DAY):
        h.write(_hourly(1, range(1, 4), start, 3))
    assert h.compact() == 3 * 3 * 3 * 60
    return h


def test_blocks_go_into_monthly_partitions_that_keep_the_key_and_storage(url, opened):
    h = _three_months(url, opened)
    assert _partitions(url) == [
        "hist_blocks_default",
        "hist_blocks_p202601",
        "hist_blocks_p202602",
        "hist_blocks_p202603",
    ]
    per = dict(_rows(url, "SELECT tableoid::regclass::text, count(*) FROM hist_blocks GROUP BY 1"))
    assert per == {"hist_blocks_p202601": 9, "hist_blocks_p202602": 9, "hist_blocks_p202603": 9}
    # The primary key of the parent is on every partition, and the blobs stay out of pglz.
    keys = _rows(
        url,
        # this test's schema only: other tests' schemas in the shared cluster have partitions too
        "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid "
        "WHERE x.indisprimary AND c.relname LIKE 'hist_blocks_p%' "
        "AND c.relnamespace = current_schema()::regnamespace ORDER BY 1",
    )
    assert [k[0] for k in keys] == [
        "hist_blocks_p202601",
        "hist_blocks_p202602",
        "hist_blocks_p202603",
    ]
    blobs = [n for n, t in BLOCK_COLUMNS if t == "BLOB"]
    storage = _rows(
        url,
        "SELECT DISTINCT attstorage::text FROM pg_attribute "
        "WHERE attrelid = 'hist_blocks_p202602'::regclass AND attname = ANY(%s)",
        [blobs],
    )
    assert storage == [("e",)]
    st = h.stats()
    assert st["partitions"] == 3
    assert st["block_points"] == 3 * 3 * 3 * 60
    size = _rows(
        url, "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('hist_blocks')"
    )
    assert st["blocks_bytes"] == int(size[0][0]) > 0  # the parent alone would be 0
    out = h.query_raw(1, [2], FEB, MAR)
    assert out.num_rows == 3 * 60
    assert out.column("ts").to_pylist()[0] == FEB + 10 * DAY
    # A new month mid-way: one more partition, the reads across the boundary are whole.
    h.write(_hourly(1, [1], APR - 3600 * S, 2))
    h.compact()
    assert h.stats()["partitions"] == 4
    assert h.query_raw(1, [1], APR - 3600 * S, APR + 3600 * S).num_rows == 120


def _plan(url: str, where: str, start: int, end: int, mode: str) -> str:
    """EXPLAIN of the backend's blocks query, prepared with typed parameters as the driver
    sends them, under ``plan_cache_mode = mode``."""
    import psycopg

    from shopfloor.historian.postgres_backend import _BLOCK_FETCH

    numbered = (
        where.replace("%(tenant)s", "$1")
        .replace("%(ids)s", "$2")
        .replace("%(start)s", "$3")
        .replace("%(end)s", "$4")
    )
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"SET plan_cache_mode = {mode}".encode())
        con.execute(
            f"PREPARE q(int4, int4[], int8, int8) AS SELECT {_BLOCK_FETCH} {numbered}".encode()
        )
        rows = con.execute(f"EXPLAIN (COSTS OFF) EXECUTE q(1, '{{1,2}}', {start}, {end})".encode())
        return "\n".join(r[0] for r in rows.fetchall())


def test_a_one_hour_query_on_three_months_touches_one_partition(url, opened):
    from shopfloor.historian.postgres_backend import PostgresHistorian

    _three_months(url, opened)
    where = PostgresHistorian._blocks_where({})
    assert re.search(r"chunk > %\(start\)s - \d+ AND chunk < %\(end\)s", where)  # sargable
    start = FEB + 10 * DAY + CHUNK_NS  # an hour in the middle of February
    custom = _plan(url, where, start, start + CHUNK_NS, "force_custom_plan")
    assert set(re.findall(r" on (hist_blocks_\w+)", custom)) == {"hist_blocks_p202602"}, custom
    # A plan cached for any parameters prunes at executor start: 4 partitions, 3 removed.
    generic = _plan(url, where, start, start + CHUNK_NS, "force_generic_plan")
    assert "Subplans Removed: 3" in generic, generic
    # A range over the boundary of two months touches those two.
    across = _plan(url, where, FEB - CHUNK_NS, FEB + CHUNK_NS, "force_custom_plan")
    assert set(re.findall(r" on (hist_blocks_\w+)", across)) == {
        "hist_blocks_p202601",
        "hist_blocks_p202602",
    }, across


def test_retention_drops_a_month_of_one_tenant_and_deletes_in_a_shared_one(url, opened):
    h = _three_months(url, opened)  # tenant 1: 3 signals x 3 hours x 60 in each month
    h.write(_hourly(2, [7], JAN + 20 * DAY, 1))  # tenant 2 shares January
    h.write(_hourly(2, [7], MAR + 20 * DAY, 1))
    h.compact()
    assert h.apply_retention(1, MAR) == 2 * 3 * 3 * 60
    # February held only tenant 1's rows: dropped. January holds tenant 2's: rows deleted.
    assert _partitions(url) == ["hist_blocks_default", "hist_blocks_p202601", "hist_blocks_p202603"]
    assert _rows(url, "SELECT DISTINCT tenant_id FROM hist_blocks_p202601") == [(2,)]
    assert h.tenant_points(1) == 3 * 3 * 60
    assert h.query_raw(1, [1, 2, 3], JAN, MAR).num_rows == 0
    assert h.query_raw(2, [7], JAN, APR).num_rows == 120
    # Tenant 2's turn, cutting March in the middle of an hour: January goes whole now, the
    # hour cut in two is re-encoded, tenant 1's March is untouched.
    cut = MAR + 20 * DAY + 1800 * S
    assert h.apply_retention(2, cut) == 60 + 30
    assert _partitions(url) == ["hist_blocks_default", "hist_blocks_p202603"]
    assert h.query_raw(2, [7], JAN, APR).column("ts").to_pylist()[0] == cut
    assert h.tenant_points(1) == 3 * 3 * 60
    assert h.stats()["partitions"] == 1
    # An old point written after the drop lands in a recreated month and reads back.
    h.write(make_batch(1, [1], [FEB + DAY], [5.0]))
    h.compact()
    assert h.query_raw(1, [1], FEB, MAR).column("value").to_pylist() == [5.0]
    assert "hist_blocks_p202602" in _partitions(url)


def test_an_old_unpartitioned_database_is_converted_at_open(url, opened):
    import psycopg

    from shopfloor.historian.postgres_backend import PostgresHistorian

    rows = []
    for month, sid in ((JAN, 1), (FEB, 2), (FEB + CHUNK_NS, 2)):
        ts = month + np.arange(0, 3600, 10, dtype=np.int64) * S
        p = Points(
            np.full(len(ts), sid, np.int32),
            ts,
            np.arange(len(ts), dtype=float),
            np.zeros(len(ts), np.uint32),
            pa.nulls(len(ts), pa.string()),
        )
        rows.append(encode_block(1, sid, month, p))
    with psycopg.connect(url, autocommit=True) as con:
        for stmt in OLD_DDL:
            con.execute(stmt.encode())
        with con.transaction():
            PostgresHistorian._copy_blocks(con.cursor(binary=True), rows)
            con.execute(
                "INSERT INTO hist_recent VALUES (1, 2, %s, 42.0, NULL, 0, 1)", [FEB + 7200 * S]
            )
    assert _rows(
        url, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('hist_blocks')"
    ) == [("r",)]
    h = _open(url, opened)
    assert _rows(
        url, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('hist_blocks')"
    ) == [("p",)]
    assert _partitions(url) == ["hist_blocks_default", "hist_blocks_p202601", "hist_blocks_p202602"]
    assert _rows(url, "SELECT to_regclass('hist_blocks_unpartitioned') IS NULL") == [(True,)]
    assert h.stats()["block_points"] == 3 * 360
    assert h.tenant_points(1) == 3 * 360 + 1
    out = h.query_raw(1, [2], FEB, MAR)
    assert out.num_rows == 2 * 360 + 1
    assert out.column("value").to_pylist()[-1] == 42.0
    hourly = h.query_downsample(1, [2], FEB, FEB + 2 * CHUNK_NS, CHUNK_NS, ["count", "max"])
    assert hourly.column("count").to_pylist() == [360, 360]
    assert h.latest(1, [1, 2]).column("value").to_pylist() == [359.0, 42.0]
    h.close()
    again = _open(url, opened)  # already partitioned: nothing to do, nothing lost
    assert again.query_raw(1, [1, 2], JAN, MAR).num_rows == 3 * 360 + 1
    again.compact()
    assert again.stats()["partitions"] == 2
    assert again.query_raw(1, [1, 2], JAN, MAR).num_rows == 3 * 360 + 1


def test_rows_in_the_default_partition_move_when_their_month_gets_one(url, opened):
    import psycopg

    from shopfloor.historian.postgres_backend import PostgresHistorian

    h = _open(url, opened)
    ts = JUN + np.arange(0, 600, 60, dtype=np.int64) * S
    p = Points(
        np.full(10, 1, np.int32),
        ts,
        np.ones(10),
        np.zeros(10, np.uint32),
        pa.nulls(10, pa.string()),
    )
    with psycopg.connect(url, autocommit=True) as con, con.transaction():
        # No June partition yet: the DEFAULT one takes it instead of failing the insert.
        PostgresHistorian._copy_blocks(con.cursor(binary=True), [encode_block(1, 1, JUN, p)])
    assert _rows(url, "SELECT count(*) FROM hist_blocks_default") == [(1,)]
    h.write(make_batch(1, [1], [JUN + 1200 * S], [2.0]))  # June, the same hour
    assert h.compact() == 1
    assert _rows(url, "SELECT count(*) FROM hist_blocks_default") == [(0,)]
    assert _rows(url, "SELECT tableoid::regclass::text, n FROM hist_blocks") == [
        ("hist_blocks_p202606", 11)
    ]
    assert h.query_raw(1, [1], JUN, JUN + CHUNK_NS).column("value").to_pylist() == [1.0] * 10 + [
        2.0
    ]


def test_two_processes_compacting_into_new_months_at_once_lose_nothing(url, opened):
    a = _open(url, opened)
    b = _open(url, opened)
    errors: list[BaseException] = []

    def run(h: Any, sid: int) -> None:
        try:
            for k in range(6):  # a new month at every round, both at once
                h.write(_hourly(1, [sid], JAN + k * 31 * DAY, 1, step_s=600))
                h.compact()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h, sid)) for h, sid in ((a, 1), (b, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    a.compact()
    assert a.stats()["partitions"] == 6
    assert a.stats()["block_points"] == 2 * 6 * 6
    assert b.query_raw(1, [1, 2], JAN, JAN + 200 * DAY).num_rows == 2 * 6 * 6
    assert _rows(url, "SELECT count(*) FROM hist_blocks_default") == [(0,)]


# ---- measurement (not collected by pytest) -----------------------------------------------------


def _blocks(tenant: int, sids: int, start: int, hours: int, step_s: int) -> list[dict[str, Any]]:
    """Block rows of ``sids`` signals x ``hours`` hours, a point every ``step_s``."""
    per_hour = 3600 // step_s
    rows = []
    for hour in range(hours):
        chunk = start + hour * CHUNK_NS
        ts = chunk + np.arange(per_hour, dtype=np.int64) * step_s * S
        for sid in range(sids):
            p = Points(
                np.full(per_hour, sid, np.int32),
                ts,
                np.round(20 + np.sin(ts / 1e12 + sid), 2),
                np.zeros(per_hour, np.uint32),
                pa.nulls(per_hour, pa.string()),
            )
            rows.append(encode_block(tenant, sid, chunk, p))
    return rows


def _load_blocks(h: Any, tenant: int, sids: int, start: int, hours: int, step_s: int) -> int:
    """Blocks written straight into hist_blocks (the backend's own partition check and COPY),
    skipping ingest and compaction; returns the points stored."""
    rows = _blocks(tenant, sids, start, hours, step_s)
    chunks = np.asarray([r["chunk"] for r in rows], np.int64)

    def load() -> None:
        con = h._maint_con
        with con.transaction():
            h._check_partitions(con, chunks)
            h._copy_blocks(con.cursor(binary=True), rows)

    with h._maint:
        h._maintain(lambda: h._with_partitions(load))
    return sum(int(r["n"]) for r in rows)


def measure(points: int) -> dict[str, Any]:
    """Retention of two months out of three, by DROP (one tenant) and by DELETE (a second
    tenant's rows keep the months from being dropped), on the same blocks."""
    from shopfloor.historian.postgres_backend import PostgresHistorian

    hours = (APR - JAN) // CHUNK_NS
    step_s = 10
    sids = max(1, points // (hours * 3600 // step_s))
    out: dict[str, Any] = {"signals": sids, "hours": hours, "step_s": step_s}
    with postgres_service.PostgresCluster() as cluster:
        for how in ("drop", "delete"):
            url = cluster.new_schema(how)
            h = PostgresHistorian(url, background=False, listen=False, notify=False)
            try:
                began = time.perf_counter()
                stored = _load_blocks(h, 1, sids, JAN, hours, step_s)
                out[f"{how}_load_s"] = round(time.perf_counter() - began, 2)
                if how == "delete":
                    _load_blocks(h, 2, 1, JAN, 1, 3600)
                    _load_blocks(h, 2, 1, FEB, 1, 3600)
                out["points"] = stored
                out[f"{how}_blocks"] = h.stats()["blocks"]
                out[f"{how}_bytes_before"] = h.stats()["blocks_bytes"]
                began = time.perf_counter()
                removed = h.apply_retention(1, MAR)
                out[f"{how}_s"] = round(time.perf_counter() - began, 3)
                out[f"{how}_removed"] = removed
                out[f"{how}_partitions_left"] = h.stats()["partitions"]
                out[f"{how}_bytes_after"] = h.stats()["blocks_bytes"]
                # What DELETE leaves to do: dead rows and TOAST to vacuum (DROP has none);
                # a plain VACUUM makes the space reusable but does not give it back.
                began = time.perf_counter()
                h._maint_con.execute(b"VACUUM hist_blocks")
                out[f"{how}_vacuum_s"] = round(time.perf_counter() - began, 3)
                out[f"{how}_bytes_after_vacuum"] = h.stats()["blocks_bytes"]
            finally:
                h.close()
        # The same blocks in the old, unpartitioned layout, converted by the next open.
        import psycopg

        url = cluster.new_schema("old")
        rows = _blocks(1, sids, JAN, hours, step_s)
        with psycopg.connect(url, autocommit=True) as con:
            for stmt in OLD_DDL:
                con.execute(stmt.encode())
            with con.transaction():
                PostgresHistorian._copy_blocks(con.cursor(binary=True), rows)
        began = time.perf_counter()
        h = PostgresHistorian(url, background=False, listen=False, notify=False)
        out["convert_open_s"] = round(time.perf_counter() - began, 2)
        out["convert_blocks"] = h.stats()["blocks"]
        h.close()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=10_000_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.points)))
