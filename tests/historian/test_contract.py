"""Behaviour every historian backend must show (see historian.backend)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.core import quality
from shopfloor.core.types import make_batch
from shopfloor.historian.blocks import CHUNK_NS

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z, an hour boundary
S = 10**9
TENANT = 1


def batch(sids, ts, values, q=None, tenant=TENANT, text=None):
    return make_batch(tenant, sids, ts, values, q, text)


def raw(b, sids, start=T0 - 10 * CHUNK_NS, end=T0 + 100 * CHUNK_NS, tenant=TENANT):
    return b.query_raw(tenant, sids, start, end)


def compacting(stage: str, b) -> None:
    """Move what was written to the stage under test: recent (log and memory) or blocks."""
    if stage == "compacted":
        b.compact()


@pytest.fixture(params=["recent", "compacted"])
def compact(request):
    return request.param


def test_roundtrip_values_and_order(backend, compact):
    ts = T0 + np.arange(100) * S
    vals = np.round(np.cumsum(np.random.default_rng(1).normal(size=100)), 2)
    backend.write(batch(np.full(100, 7), ts[::-1], vals[::-1]))  # arrives newest first
    compacting(compact, backend)
    out = raw(backend, [7])
    assert out.column("ts").to_pylist() == ts.tolist()
    assert out.column("value").to_pylist() == vals.tolist()
    assert set(out.column("signal_id").to_pylist()) == {7}


def test_duplicate_timestamp_last_write_wins(backend, compact):
    backend.write(batch([1, 1], [T0, T0 + S], [1.0, 2.0]))
    compacting(compact, backend)
    backend.write(batch([1, 1, 1], [T0, T0, T0 + 2 * S], [5.0, 6.0, 3.0]))  # in-batch dup too
    compacting(compact, backend)
    out = raw(backend, [1])
    assert out.column("ts").to_pylist() == [T0, T0 + S, T0 + 2 * S]
    assert out.column("value").to_pylist() == [6.0, 2.0, 3.0]


def test_late_points_merge_into_stored_hour(backend):
    backend.write(batch(np.full(10, 3), T0 + np.arange(0, 20, 2) * S, np.arange(10.0)))
    backend.compact()
    backend.write(batch(np.full(10, 3), T0 + np.arange(1, 21, 2) * S, np.arange(10.0) + 0.5))
    backend.compact()
    out = raw(backend, [3])
    assert out.column("ts").to_pylist() == (T0 + np.arange(20) * S).tolist()
    assert out.num_rows == 20


def test_value_kinds_and_quality(backend, compact):
    ts = T0 + np.arange(4) * S
    backend.write(
        batch([1, 1, 1, 1], ts, [1.5, -2.25, 1e300, 0.1 + 0.2], [0, quality.BAD, 0x40000000, 0])
    )
    backend.write(batch([2, 2], ts[:2], None, text=["RUN", "STOP"]))
    backend.write(batch([4, 4], ts[:2], [2**53, -(2**40)]))
    compacting(compact, backend)
    out = raw(backend, [1, 2, 4]).to_pylist()
    one = [r for r in out if r["signal_id"] == 1]
    assert [r["value"] for r in one] == [1.5, -2.25, 1e300, 0.1 + 0.2]
    assert [r["quality"] for r in one] == [0, quality.BAD, 0x40000000, 0]
    two = [r for r in out if r["signal_id"] == 2]
    assert [(r["text"], r["value"]) for r in two] == [("RUN", None), ("STOP", None)]
    assert [r["value"] for r in out if r["signal_id"] == 4] == [2.0**53, -(2.0**40)]


def test_range_is_half_open_and_limit(backend, compact):
    backend.write(batch(np.full(10, 1), T0 + np.arange(10) * S, np.arange(10.0)))
    compacting(compact, backend)
    out = backend.query_raw(TENANT, [1], T0 + 2 * S, T0 + 5 * S)
    assert out.column("value").to_pylist() == [2.0, 3.0, 4.0]
    assert backend.query_raw(TENANT, [1], T0, T0 + 10 * S, limit=4).num_rows == 4


def test_tenants_do_not_see_each_other(backend, compact):
    backend.write(batch([1], [T0], [1.0], tenant=1))
    backend.write(batch([2], [T0], [2.0], tenant=2))
    compacting(compact, backend)
    assert raw(backend, [1, 2], tenant=1).column("signal_id").to_pylist() == [1]
    assert backend.latest(1, [1, 2]).column("signal_id").to_pylist() == [1]
    assert backend.query_downsample(2, [1], T0, T0 + S, S, ["count"]).num_rows == 0


def _expected(ts, vals, interval):
    b = (ts // interval) * interval
    out = {}
    for bucket in np.unique(b):
        v = vals[b == bucket]
        out[int(bucket)] = (len(v), v.mean(), v.min(), v.max(), v[0], v[-1])
    return out


@pytest.mark.parametrize("interval", [60 * S, CHUNK_NS, 2 * CHUNK_NS])
def test_downsample_matches_numpy(backend, interval):
    rng = np.random.default_rng(3)
    n = 3 * 3600
    ts = T0 - 1800 * S + np.arange(n) * S
    vals = np.round(rng.normal(size=n), 3)
    backend.write(batch(np.full(n // 2, 9), ts[: n // 2], vals[: n // 2]))
    backend.compact()  # half in blocks (with rollups), half recent
    backend.write(batch(np.full(n - n // 2, 9), ts[n // 2 :], vals[n // 2 :]))
    aggs = ["count", "avg", "min", "max", "first", "last"]
    start, end = T0 - 1800 * S, T0 + 3 * CHUNK_NS
    out = backend.query_downsample(TENANT, [9], start, end, interval, aggs).to_pylist()
    sel = (ts >= start) & (ts < end)
    exp = _expected(ts[sel], vals[sel], interval)
    assert [r["bucket"] for r in out] == sorted(exp)
    for r in out:
        c, avg, lo, hi, first, last = exp[r["bucket"]]
        assert (r["count"], r["min"], r["max"], r["first"], r["last"]) == (c, lo, hi, first, last)
        assert r["avg"] == pytest.approx(avg)
    backend.compact()
    again = backend.query_downsample(TENANT, [9], start, end, interval, aggs).to_pylist()
    assert [r["count"] for r in again] == [r["count"] for r in out]
    assert [r["avg"] for r in again] == pytest.approx([r["avg"] for r in out])


def test_downsample_skips_bad_quality(backend, compact):
    backend.write(batch([1, 1, 1], T0 + np.arange(3) * S, [1.0, 100.0, 3.0], [0, quality.BAD, 0]))
    compacting(compact, backend)
    (row,) = backend.query_downsample(
        TENANT, [1], T0, T0 + CHUNK_NS, CHUNK_NS, ["count", "max"]
    ).to_pylist()
    assert (row["count"], row["max"]) == (2, 3.0)


def test_latest_follows_newest_timestamp(backend):
    backend.write(batch([1, 2], [T0 + 5 * S, T0], [5.0, 1.0]))
    backend.write(batch([1, 2], [T0 + S, T0 + S], [1.0, 2.0]))  # late for 1, newer for 2
    got = {r["signal_id"]: r["value"] for r in backend.latest(TENANT, [1, 2, 3]).to_pylist()}
    assert got == {1: 5.0, 2: 2.0}


def test_latest_survives_reopen(open_backend):
    b = open_backend()
    b.write(batch([1, 2], [T0, T0 + S], [1.0, 2.0]))
    b.compact()
    b.write(batch([1], [T0 + 9 * S], [9.0]))
    b.close()
    b2 = open_backend()
    got = {r["signal_id"]: (r["ts"], r["value"]) for r in b2.latest(TENANT, [1, 2]).to_pylist()}
    assert got == {1: (T0 + 9 * S, 9.0), 2: (T0 + S, 2.0)}
    assert raw(b2, [1, 2]).num_rows == 3


def test_retention_removes_only_old_points_of_that_tenant(backend):
    ts = T0 + np.arange(0, 7200, 10) * S
    backend.write(batch(np.full(len(ts), 1), ts, np.ones(len(ts))))
    backend.write(batch(np.full(len(ts), 2), ts, np.ones(len(ts)), tenant=2))
    backend.compact()
    backend.write(batch([1], [T0 + 5], [7.0]))  # a recent point that is already old
    cutoff = T0 + 1800 * S  # cuts the first hour in two
    removed = backend.apply_retention(1, cutoff)
    assert removed == 181
    assert raw(backend, [1]).column("ts").to_pylist()[0] == cutoff
    assert raw(backend, [2], tenant=2).num_rows == len(ts)


def test_tenant_points_count_recent_and_compacted_per_tenant(backend):
    ts = T0 + np.arange(0, 100) * S
    backend.write(batch(np.full(len(ts), 1), ts, np.ones(len(ts))))
    backend.write(batch(np.full(30, 2), ts[:30], np.ones(30), tenant=2))
    assert (backend.tenant_points(1), backend.tenant_points(2)) == (100, 30)
    backend.compact()
    backend.write(batch([1, 1], [T0 + 500 * S, T0 + 501 * S], [2.0, 3.0]))
    assert (backend.tenant_points(1), backend.tenant_points(2)) == (102, 30)
    assert backend.tenant_points(3) == 0
    backend.apply_retention(1, T0 + 50 * S)
    assert backend.tenant_points(1) == 52


def test_concurrent_writers_share_commits(backend):
    errors = []

    def worker(k: int) -> None:
        try:
            for i in range(20):
                backend.write(batch([k], [T0 + i * S], [float(i)]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert raw(backend, list(range(8))).num_rows == 160
    assert backend.stats()["commits"] < 160


def test_bad_write_is_not_acknowledged_and_store_keeps_working(backend):
    backend.write(batch([1], [T0], [1.0]))
    wrong = pa.table({"x": [1]})
    with pytest.raises(Exception, match="write failed"):
        backend.write(wrong)
    backend.write(batch([1], [T0 + S], [2.0]))
    assert raw(backend, [1]).num_rows == 2


def test_limit_returns_the_first_points_in_order(backend):
    for sid in (1, 2, 3):
        ts = T0 + np.arange(0, 3 * 3600, 10) * S
        backend.write(batch(np.full(len(ts), sid), ts, np.arange(len(ts), dtype=float)))
    backend.compact()
    backend.write(batch([2, 2], [T0 + 5 * S, T0 + 10 * S], [-1.0, -2.0]))  # recent, inside the cut
    full = backend.query_raw(TENANT, [1, 2, 3], T0 + 1800 * S, T0 + 3 * CHUNK_NS)
    for limit in (1, 500, 1262, 1263, 1264, 3000, full.num_rows + 5):
        part = backend.query_raw(TENANT, [1, 2, 3], T0 + 1800 * S, T0 + 3 * CHUNK_NS, limit=limit)
        assert part.equals(full.slice(0, limit)), limit


def test_stats_between_other_calls_on_one_thread(backend):
    backend.write(batch([1], [T0], [1.0]))
    assert backend.stats()["points_written"] == 1
    backend.compact()
    assert backend.stats()["block_points"] == 1
    assert raw(backend, [1]).num_rows == 1
