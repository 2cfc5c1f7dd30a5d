"""Several PostgreSQL historians on one database: latest values through LISTEN/NOTIFY, and one
background compaction at a time (pg_try_advisory_lock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from shopfloor.core.types import make_batch
from tests.historian import postgres_service
from tests.historian.postgres_service import open_historian as _open

T0 = 1_767_225_600 * 10**9
S = 10**9


def _eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
    """Seconds until ``check`` held; fails naming ``what`` after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"{what} not seen within {timeout} s")


def _latest(h: Any, tenant: int, ids: list[int]) -> dict[int, tuple[int, Any]]:
    t = h.latest(tenant, ids).to_pydict()
    vals = [x if v is None else v for v, x in zip(t["value"], t["text"], strict=True)]
    return {s: (ts, v) for s, ts, v in zip(t["signal_id"], t["ts"], vals, strict=True)}


def test_a_commit_in_one_process_reaches_the_others_latest_cache(url, opened):
    writer, reader = _open(url, opened), _open(url, opened)
    n = 1_000  # more signals than one payload holds (200): several NOTIFYs in one commit
    ids = list(range(1, n + 1))
    writer.write(make_batch(1, ids, [T0] * n, [float(i) for i in ids]))
    writer.write(make_batch(1, ids, [T0 + S] * n, [float(i) + 0.5 for i in ids]))
    lag = _eventually(
        lambda: _latest(reader, 1, ids) == {i: (T0 + S, i + 0.5) for i in ids},
        "the writer's newest points in the reader's cache",
    )
    assert lag < 2.0
    # A later write of an older point does not take the newest one's place.
    writer.write(make_batch(1, [7], [T0 - S], [-1.0]))
    writer.write(make_batch(1, [8], [T0 + 2 * S], [80.0]))
    _eventually(lambda: _latest(reader, 1, [8]) == {8: (T0 + 2 * S, 80.0)}, "signal 8")
    assert _latest(reader, 1, [7]) == {7: (T0 + S, 7.5)}
    # Tenants stay apart: tenant 2 asks for the same ids and has nothing.
    assert _latest(reader, 2, ids) == {}


def test_text_points_and_a_number_after_a_text_reach_the_other_process(url, opened):
    writer, reader = _open(url, opened), _open(url, opened)
    writer.write(make_batch(1, [5], [T0], [float("nan")], text=["running"]))
    _eventually(lambda: _latest(reader, 1, [5]) == {5: (T0, "running")}, "the text")
    writer.write(make_batch(1, [5], [T0 + S], [3.0]))
    _eventually(lambda: _latest(reader, 1, [5]) == {5: (T0 + S, 3.0)}, "the number")
    assert reader.latest(1, [5]).column("text").to_pylist() == [None]


def test_another_schema_hears_nothing_and_a_non_listener_is_not_updated(url, opened):
    writer, listener = _open(url, opened), _open(url, opened)
    deaf = _open(url, opened, listen=False)
    other = _open(postgres_service.shared_cluster().new_schema("pgn"), opened)
    writer.write(make_batch(1, [1], [T0], [1.0]))
    _eventually(lambda: _latest(listener, 1, [1]) == {1: (T0, 1.0)}, "the point")
    time.sleep(0.2)
    assert _latest(other, 1, [1]) == {}
    assert _latest(deaf, 1, [1]) == {}
    assert other.notifications_applied == 0
    assert deaf.notifications_applied == 0
    # The writer ignored its own notification (its cache was updated at commit).
    assert writer.notifications_applied == 0
    assert listener.notifications_applied >= 1


def test_the_listener_listens_again_after_losing_its_connection(url, opened):
    import psycopg

    writer, reader = _open(url, opened), _open(url, opened)
    pid = reader._listen_con.info.backend_pid
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SELECT pg_terminate_backend(%s)", [pid])
    # Written while the listener is away: the reload on reconnection brings it in.
    writer.write(make_batch(1, [1], [T0], [1.0]))
    _eventually(lambda: _latest(reader, 1, [1]) == {1: (T0, 1.0)}, "the point after reconnect")
    assert reader._listen_con.info.backend_pid != pid
    writer.write(make_batch(1, [2], [T0], [2.0]))
    _eventually(lambda: _latest(reader, 1, [2]) == {2: (T0, 2.0)}, "a notification after it")


def test_background_compaction_skips_while_another_process_compacts(url, opened):
    import psycopg

    h = _open(url, opened)
    h.write(make_batch(1, [1, 1], [T0, T0 + S], [1.0, 2.0]))
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [h._lock_key])  # "another process"
        t0 = time.monotonic()
        assert h._compact_unless_busy() == 0  # at once, not waiting for the lock
        assert time.monotonic() - t0 < 1.0
        assert h.stats()["recent_points"] == 2
        other.execute("SELECT pg_advisory_unlock(%s)", [h._lock_key])
    assert h._compact_unless_busy() == 2
    assert h.stats()["recent_points"] == 0
    got = h.query_raw(1, [1], T0, T0 + 2 * S)
    assert np.asarray(got.column("value")).tolist() == [1.0, 2.0]


def test_a_busy_writer_announces_the_newest_points_not_every_commit(url, opened):
    writer = _open(url, opened, notify_interval_s=0.2)
    reader = _open(url, opened)
    for i in range(60):  # one commit each: write() returns after its commit
        writer.write(make_batch(1, [1, 2], [T0 + i, T0 + i], [i, -i]))
    commits = writer.stats()["commits"]
    assert commits == 60
    _eventually(
        lambda: _latest(reader, 1, [1, 2]) == {1: (T0 + 59, 59.0), 2: (T0 + 59, -59.0)},
        "the last commit's points",
    )
    # One payload per announcement here (2 signals): fewer than the commits, at least two
    # (the first commit at once, the rest coalesced).
    assert 2 <= writer.notifications_sent < commits, (writer.notifications_sent, commits)
