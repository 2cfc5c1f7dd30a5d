"""The write-ahead log: what makes a write durable before it reaches DuckDB.

Each group commit appends its batch as Arrow IPC record-batch messages to ``wal-<seq>.arrow``
and fsyncs; only then is the write acknowledged. DuckDB gets the data later in large inserts,
because an insert statement has a high fixed cost (it also takes the GIL about ten times,
which a busy event loop turns into tens of milliseconds). Ack latency is one write plus one
fsync; insert cost is amortised over hundreds of thousands of rows.

IPC messages carry their own length, so a crash mid-write leaves a truncated last message
that the reader stops at: everything before it (everything acknowledged) is read back.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pyarrow as pa

from shopfloor.core.types import POINT_SCHEMA

log = logging.getLogger(__name__)

_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_NAME: Final = re.compile(r"^wal-(\d{9})\.arrow$")


def wal_path(folder: Path, seq: int) -> Path:
    return folder / f"wal-{seq:09d}.arrow"


def wal_files(folder: Path) -> list[tuple[int, Path]]:
    """Existing log files, oldest first."""
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


class WalWriter:
    """Appends batches to one log file; ``append`` returns once they are on disk."""

    def __init__(self, folder: Path, seq: int) -> None:
        self.seq = seq
        self.path = wal_path(folder, seq)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.bytes = 0
        # Set before the first write: a failed append may have left bytes though ``bytes`` is 0.
        self.touched = False
        try:
            # The directory entry must be durable too, or a crash could lose the whole file.
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            os.close(self._fd)
            raise

    def append(self, table: pa.Table) -> None:
        if self._fd < 0:
            raise OSError("write-ahead log file is closed")
        # writev straight from Arrow's buffers: no copy of the batch in Python.
        pending = [memoryview(rb.serialize()) for rb in table.to_batches()]
        total = sum(len(p) for p in pending)
        self.touched = True
        try:
            while pending:
                written = os.writev(self._fd, pending[:_IOV_MAX])  # the kernel takes that many
                while pending and written >= len(pending[0]):
                    written -= len(pending[0])
                    pending.pop(0)
                if pending and written:
                    pending[0] = pending[0][written:]
            os.fsync(self._fd)
        except BaseException:
            self._undo()
            raise
        self.bytes += total

    def _undo(self) -> None:
        """Cut a failed append off again: its caller is told nothing was stored, so a replay
        after a crash must not bring it back (the data may well be complete in the file)."""
        try:
            os.ftruncate(self._fd, self.bytes)
            os.fsync(self._fd)
        except OSError as exc:
            # The disk refuses even that: the batch may come back after a crash. Say so.
            log.error("%s: could not cut off a failed append (%s)", self.path, exc)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1  # never write through a closed (reusable) fd number
            os.close(fd)


def read_wal(path: Path) -> Iterator[pa.RecordBatch]:
    """Every complete batch in a log file; stops at a truncated tail (a crash mid-write)."""
    with pa.OSFile(str(path), "rb") as f:
        reader = pa.ipc.MessageReader.open_stream(f)
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as exc:
                log.warning("%s ends in an incomplete record (%s); later bytes ignored", path, exc)
                return
            if message is None:
                return
            try:
                yield pa.ipc.read_record_batch(message, POINT_SCHEMA)
            except (pa.ArrowInvalid, OSError) as exc:
                log.warning("%s holds an unreadable record (%s); later bytes ignored", path, exc)
                return
