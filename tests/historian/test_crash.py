"""A process that dies without closing the historian loses nothing it acknowledged."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from shopfloor.historian.duckdb_backend import DuckDBHistorian
from shopfloor.historian.wal import wal_files

T0 = 1_767_225_600 * 10**9

WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from shopfloor.core.types import make_batch
    from shopfloor.historian.duckdb_backend import DuckDBHistorian
    h = DuckDBHistorian(sys.argv[1], background=False)
    T0 = 1_767_225_600 * 10**9
    for k in range(int(sys.argv[2])):
        h.write(make_batch(1, np.arange(100), np.full(100, T0 + k * 10**9), np.full(100, float(k))))
        if k == 4:
            h.compact()  # the first five batches go into blocks, the rest stay in the log
    os._exit(0)  # no close, no checkpoint: as if killed
    """
)


def _crash_after_writing(folder: Path, batches: int) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(folder), str(batches)], check=True)


def test_logged_and_flushed_batches_survive_a_dead_process(tmp_path: Path) -> None:
    _crash_after_writing(tmp_path, 12)
    assert wal_files(tmp_path), "the batches after the compaction should still be in the log"
    h = DuckDBHistorian(tmp_path, background=False)
    try:
        out = h.query_raw(1, np.arange(100), T0, T0 + 100 * 10**9)
        assert out.num_rows == 12 * 100
        assert sorted(set(out.column("value").to_pylist())) == [float(k) for k in range(12)]
        assert h.latest(1, [0]).column("value").to_pylist() == [11.0]
    finally:
        h.close()
    assert [seq for seq, _ in wal_files(tmp_path)] == [2], "replayed logs stay until compacted"


def test_torn_last_record_is_ignored_and_the_rest_kept(tmp_path: Path) -> None:
    _crash_after_writing(tmp_path, 8)
    (_, last), *_ = reversed(wal_files(tmp_path))
    with last.open("ab") as f:
        f.write(
            b"\\xff\\xff\\xff\\xff\\x40\\x00\\x00\\x00partial"
        )  # a record cut short by the crash
    h = DuckDBHistorian(tmp_path, background=False)
    try:
        assert h.query_raw(1, np.arange(100), T0, T0 + 100 * 10**9).num_rows == 8 * 100
    finally:
        h.close()


def test_replay_twice_does_not_duplicate_or_reorder(tmp_path: Path) -> None:
    _crash_after_writing(tmp_path, 7)
    for compact in (False, True, False):  # reopen with the log as it was, then after compacting
        h = DuckDBHistorian(tmp_path, background=False)
        try:
            if compact:
                h.compact()
            out = h.query_raw(1, [3], T0, T0 + 100 * 10**9)
            assert out.column("value").to_pylist() == [float(k) for k in range(7)]
        finally:
            h.close()
    assert not wal_files(tmp_path)
