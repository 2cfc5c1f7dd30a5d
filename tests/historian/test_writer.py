"""The group-commit writer under awkward callers: many tiny batches, cancellations, bad schemas."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import pyarrow as pa
import pytest

from shopfloor.core.errors import StorageError
from shopfloor.core.types import make_batch
from shopfloor.historian.duckdb_backend import DuckDBHistorian

T0 = 1_767_225_600 * 10**9


@pytest.fixture
def hist(tmp_path: Path):
    h = DuckDBHistorian(tmp_path, commit_interval_ms=50, background=False)
    yield h
    h.close()


def test_a_group_of_thousands_of_batches_commits(hist: DuckDBHistorian) -> None:
    # More record batches in one group commit than one writev call accepts (IOV_MAX).
    futures = [hist.submit(make_batch(1, [k % 50], [T0 + k], [float(k)])) for k in range(5000)]
    for f in futures:
        f.result(timeout=60)
    assert hist.query_raw(1, range(50), T0, T0 + 10**9).num_rows == 5000


def test_a_cancelled_write_does_not_stop_the_writer(hist: DuckDBHistorian) -> None:
    futures = [hist.submit(make_batch(1, [1], [T0 + k], [1.0])) for k in range(200)]
    for f in futures[::3]:
        f.cancel()
    later = hist.submit(make_batch(1, [2], [T0], [2.0]))
    later.result(timeout=30)
    for f in futures:
        assert f.cancelled() or f.result(timeout=30) is None


def test_a_batch_of_the_wrong_shape_fails_only_its_caller(hist: DuckDBHistorian) -> None:
    good = hist.submit(make_batch(1, [1], [T0], [1.0]))
    bad = hist.submit(pa.table({"x": [1]}))
    with pytest.raises(StorageError):
        bad.result(timeout=30)
    good.result(timeout=30)
    assert hist.query_raw(1, [1], T0, T0 + 1).num_rows == 1


def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    h = DuckDBHistorian(tmp_path, background=False)
    h.close()
    with pytest.raises(StorageError, match="closed"):
        h.submit(make_batch(1, [1], [T0], [1.0])).result(timeout=5)
    assert isinstance(h.submit(make_batch(1, [1], [T0], [1.0])), cf.Future)


def test_failing_compaction_retries_leave_no_empty_log_files(
    hist: DuckDBHistorian, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopfloor.historian.wal import wal_files

    hist.write(make_batch(1, [1, 2], [T0, T0 + 1], [1.0, 2.0]))

    def broken(*_: object) -> int:
        raise OSError("disk on fire")

    monkeypatch.setattr(hist, "_compact", broken)
    for _ in range(5):  # as the compactor thread retries
        with pytest.raises(OSError, match="disk on fire"):
            hist.compact()
    # the written file sealed once, plus the open one: not one new file per attempt
    assert len(wal_files(tmp_path)) == 2
    hist.write(make_batch(1, [3], [T0 + 2], [3.0]))
    monkeypatch.undo()
    assert hist.compact() == 3  # every point of both files, nothing lost
    assert hist.query_raw(1, [1, 2, 3], T0, T0 + 10).num_rows == 3
    assert len(wal_files(tmp_path)) == 1


def test_a_failed_fsync_is_cut_off_and_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from shopfloor.historian import wal

    h = DuckDBHistorian(tmp_path, commit_interval_ms=1, background=False)
    h.write(make_batch(1, [1], [T0], [1.0]))
    real = os.fsync
    calls = {"n": 0}

    def fsync_fails_once(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(wal.os, "fsync", fsync_fails_once)
    with pytest.raises(StorageError, match="nothing of it was stored"):
        h.write(make_batch(1, [2], [T0 + 1], [2.0]))
    monkeypatch.undo()
    h.write(make_batch(1, [3], [T0 + 2], [3.0]))
    # A crash now (no close, no compaction): the replay holds what was acknowledged, and not
    # the batch whose caller was told it failed, though its bytes were written.
    del h
    h2 = DuckDBHistorian(tmp_path, background=False)
    try:
        got = h2.query_raw(1, [1, 2, 3], T0, T0 + 10)
        assert sorted(got.column("signal_id").to_pylist()) == [1, 3]
    finally:
        h2.close()
