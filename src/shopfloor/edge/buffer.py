"""The store-and-forward buffer: readings wait on disk until the platform acknowledged them.

Connectors append readings; the forwarder peeks the oldest, sends them through the uplink and
acks them once the platform confirmed. Everything between an append's return and its ack
survives a crash of the gateway (``kill -9``, power loss with ``fsync="always"``).

On disk (see ``docs/edge-buffer.md`` and :mod:`shopfloor.edge.buffer_codec`):

- ``NNNNNNNNNNNN.seg``: append-only segment files of CRC-framed records, one record per
  append. A process never appends to a segment an earlier process wrote, so a torn tail left
  by a crash is always the end of its file; it is cut off when the buffer is opened.
- ``state.json``: the ack position and the count of dropped points, replaced atomically
  (written, fsynced, renamed).
- ``lock``: held with ``flock`` while the buffer is open, so two gateways cannot share it.

One writer thread owns the files' tails. Appends queue to it; it writes whatever queued up
while it was busy in one ``write`` and one ``fdatasync`` (group commit), so concurrent
appenders share the cost of a sync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import errno
import fcntl
import json
import logging
import os
import queue
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np

from shopfloor.edge.buffer_codec import (
    FRAME,
    SEGMENT_MAGIC,
    LayoutTable,
    RecordInfo,
    decode_record,
    encode_record,
    scan_segment,
)
from shopfloor.edge.model import Reading

__all__ = [
    "BufferClosed",
    "BufferDiskFull",
    "BufferFull",
    "BufferStats",
    "BufferWriteError",
    "StoreForwardBuffer",
    "estimate_outage_s",
]

log = logging.getLogger(__name__)

WhenFull = Literal["drop_oldest", "reject"]
FsyncPolicy = Literal["always", "interval", "never"]

_STATE = "state.json"
_STATE_TMP = "state.json.tmp"
_SUFFIX = ".seg"
_NS = 1_000_000_000


@dataclass(frozen=True)
class BufferStats:
    depth_points: int  # buffered, not yet acknowledged
    depth_bytes: int  # on disk
    records: int
    oldest_ts_ns: int | None  # smallest point timestamp still buffered
    oldest_age_s: float | None  # now - oldest_ts_ns
    dropped_points: int  # dropped by the full/age policy since the buffer was created
    appended_points: int  # since this process opened the buffer
    forwarded_points: int  # acknowledged since this process opened the buffer
    max_bytes: int
    max_age_s: float


class BufferFull(Exception):
    """The buffer holds ``max_bytes`` and its policy is ``reject``: the append was not stored."""


class BufferWriteError(OSError):
    """Writing to the buffer's folder failed; the append (or ack) was not stored."""


class BufferDiskFull(BufferWriteError):
    """The file system holding the buffer is full (ENOSPC); nothing stored before is harmed."""


class BufferClosed(RuntimeError):
    """The buffer was closed; nothing more can be appended."""


def estimate_outage_s(stats: BufferStats, points_per_s: float, bytes_per_point: float) -> float:
    """How long an outage starting now the buffer bridges before it loses data.

    The free space (``max_bytes - depth_bytes``) fills at ``points_per_s * bytes_per_point``;
    independently no point is kept longer than ``max_age_s``, and the oldest buffered point
    already used ``oldest_age_s`` of that. The smaller of the two limits is returned.
    """
    if bytes_per_point <= 0:
        raise ValueError(f"bytes_per_point must be > 0, not {bytes_per_point}")
    age_left = max(0.0, stats.max_age_s - (stats.oldest_age_s or 0.0))
    if points_per_s <= 0:
        return age_left
    space_left = max(0, stats.max_bytes - stats.depth_bytes) / (points_per_s * bytes_per_point)
    return min(space_left, age_left)


class _Segment:
    """One segment file and the index of its records (compact arrays, one entry a record)."""

    def __init__(self, number: int, path: Path, fd: int, first_seq: int, size: int) -> None:
        self.number = number
        self.path = path
        self.fd = fd
        self.first_seq = first_seq
        self.size = size
        self.sealed = False
        self.layouts = LayoutTable()
        # Layouts defined by records on disk; those after it belong to records being written.
        self.stored_layouts = 0
        self.offsets = array("q")
        self.sizes = array("q")
        self.points = array("q")
        self.min_ts = array("q")
        self.max_ts = array("q")

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def end_seq(self) -> int:
        return self.first_seq + len(self.offsets)

    def add(self, info: RecordInfo, offset: int) -> None:
        self.offsets.append(offset)
        self.sizes.append(info.size)
        self.points.append(info.points)
        self.min_ts.append(info.min_ts)
        self.max_ts.append(info.max_ts)

    def points_from(self, seq: int, end: int | None = None) -> int:
        i = max(0, seq - self.first_seq)
        j = self.count if end is None else max(0, min(self.count, end - self.first_seq))
        return int(sum(self.points[i:j])) if j > i else 0


@dataclass
class _Item:
    readings: tuple[Reading, ...]
    future: cf.Future[None]


class StoreForwardBuffer:
    """A durable FIFO of readings bounded by size and age; see the module docstring."""

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = 1 << 30,
        max_age_s: float = 7 * 86400,
        when_full: WhenFull = "drop_oldest",
        fsync: FsyncPolicy = "always",
        fsync_interval_ms: float = 20.0,
        segment_bytes: int = 16 << 20,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, not {max_bytes}")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, not {max_age_s}")
        if when_full not in ("drop_oldest", "reject"):
            raise ValueError(f"when_full must be 'drop_oldest' or 'reject', not {when_full!r}")
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be 'always', 'interval' or 'never', not {fsync!r}")
        if not fsync_interval_ms > 0:
            raise ValueError(f"fsync_interval_ms must be > 0, not {fsync_interval_ms}")
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be > 0, not {segment_bytes}")
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_age_s = float(max_age_s)
        self.when_full: WhenFull = when_full
        self.fsync: FsyncPolicy = fsync
        self.fsync_interval_s = fsync_interval_ms / 1000.0
        # Space is reclaimed a whole segment at a time, so keep segments small against the
        # bound: dropping the oldest then loses at most an eighth of the buffer.
        self.segment_limit = max(1, min(segment_bytes, max_bytes // 8))

        self._lock = threading.Lock()  # the index, the ack position and the counters
        self._segments: list[_Segment] = []
        self._acked = 0  # records with a smaller seq are delivered (or dropped)
        self._dropped = 0
        self._depth_points = 0
        self._bytes = 0
        self._appended = 0
        self._forwarded = 0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

        # Only the writer thread touches these after the constructor.
        self._active: _Segment | None = None
        self._next_seq = 0
        self._next_number = 1
        self._last_sync = time.monotonic()
        self._unsynced = False

        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_lock()
        self._dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._recover()
        except BaseException:
            for seg in self._segments:
                os.close(seg.fd)
            os.close(self._dir_fd)
            os.close(self._lock_fd)
            raise
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._put_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._writer, name=f"buffer-writer:{self.folder.name}", daemon=True
        )
        self._thread.start()

    # ---- public API ------------------------------------------------------------------------

    def append(self, readings: Sequence[Reading]) -> None:
        """Store ``readings`` as one record; returns once it is durable per the fsync policy.

        Blocks for the sync (~2 ms with ``fsync="always"``): from the event loop use
        :meth:`append_async`. Raises :class:`BufferFull` (policy ``reject``),
        :class:`BufferDiskFull` / :class:`BufferWriteError` (nothing of this append stored).
        """
        if readings:
            self._submit(readings).result()

    async def append_async(self, readings: Sequence[Reading]) -> None:
        """:meth:`append` without blocking the loop; concurrent callers share one sync.

        If the awaiting task is cancelled the append may still be stored.
        """
        if readings:
            await asyncio.wrap_future(self._submit(readings))

    def peek(self, max_points: int) -> tuple[int, list[Reading]]:
        """The oldest unacknowledged readings in append order, whole records up to
        ``max_points`` (at least one record, however large). Returns ``(cursor, readings)``;
        ``(cursor, [])`` when nothing is waiting. Peeking again without an ack returns the
        same readings. Records older than ``max_age_s`` are dropped first.
        """
        with self._lock:
            self._expire_locked()
            seq = self._acked
            out: list[Reading] = []
            total = taken = 0
            for seg in self._segments:
                if seg.end_seq <= seq:
                    continue
                i = j = max(0, seq - seg.first_seq)
                while j < seg.count and (not taken or total + seg.points[j] <= max_points):
                    total += seg.points[j]
                    taken += 1
                    j += 1
                out += self._read(seg, i, j)
                seq = seg.first_seq + j
                if j < seg.count or total >= max_points:
                    break
            if not taken:
                if self._event is not None:
                    self._event.clear()
                return self._acked, []
            return seq, out

    def ack(self, cursor: int) -> None:
        """Everything :meth:`peek` returned up to ``cursor`` was delivered: forget it durably.

        Blocks for one small file write and sync. A cursor at or behind the ack position
        (for example one whose records were dropped meanwhile) does nothing.
        """
        with self._lock:
            if cursor <= self._acked:
                return
            end = self._segments[-1].end_seq if self._segments else self._acked
            if cursor > end:
                raise ValueError(f"ack({cursor}) is beyond the last record buffered ({end})")
            points = sum(s.points_from(self._acked, cursor) for s in self._segments)
            self._save_state(cursor, self._dropped)
            self._acked = cursor
            self._depth_points -= points
            self._forwarded += points
            self._delete_consumed_locked()

    def stats(self) -> BufferStats:
        with self._lock:
            oldest: int | None = None
            records = 0
            for seg in self._segments:
                i = max(0, self._acked - seg.first_seq)
                if i >= seg.count:
                    continue
                records += seg.count - i
                lo = int(np.frombuffer(seg.min_ts, dtype=np.int64)[i:].min())
                oldest = lo if oldest is None else min(oldest, lo)
            age = None if oldest is None else (time.time_ns() - oldest) / _NS
            return BufferStats(
                depth_points=self._depth_points,
                depth_bytes=self._bytes,
                records=records,
                oldest_ts_ns=oldest,
                oldest_age_s=age,
                dropped_points=self._dropped,
                appended_points=self._appended,
                forwarded_points=self._forwarded,
                max_bytes=self.max_bytes,
                max_age_s=self.max_age_s,
            )

    def wait_for_data(self) -> asyncio.Event:
        """An :class:`asyncio.Event`, bound to the running loop, set while data is waiting.

        The writer sets it after every stored append; :meth:`peek` clears it when it finds
        nothing. So the forwarder does ``cursor, rs = buf.peek(n)`` and, when ``rs`` is empty,
        ``await buf.wait_for_data().wait()``. Call it from the event loop.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._event is None or self._loop is not loop:
                self._event = asyncio.Event()
                self._loop = loop
            if self._has_unacked_locked():
                self._event.set()
            return self._event

    def close(self) -> None:
        """Finish queued appends, sync, and release the folder. Safe to call twice."""
        with self._put_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        with self._lock:
            for seg in self._segments:
                os.close(seg.fd)
            self._segments.clear()
        os.close(self._dir_fd)
        os.close(self._lock_fd)

    def __enter__(self) -> StoreForwardBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- opening -----------------------------------------------------------------------------

    def _take_lock(self) -> int:
        fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"store-and-forward buffer {self.folder} is already open (another gateway "
                "process, or a second StoreForwardBuffer on the same folder)"
            ) from None
        return fd

    def _recover(self) -> None:
        state = self.folder / _STATE
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / _STATE_TMP)
        if state.exists():
            try:
                doc = json.loads(state.read_text())
                self._acked, self._dropped = int(doc["acked_seq"]), int(doc["dropped_points"])
            except (ValueError, KeyError, TypeError) as e:
                # Written atomically, so this is outside damage: resending beats losing data.
                log.error("buffer %s: unreadable %s (%s); resending everything", state, _STATE, e)
        numbers = sorted(int(p.stem) for p in self.folder.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        for number in numbers:
            self._recover_segment(number)
        self._next_number = (numbers[-1] + 1) if numbers else 1
        last = self._segments[-1].end_seq if self._segments else 0
        self._next_seq = max(self._acked, last)
        self._bytes = sum(s.size for s in self._segments)
        self._depth_points = sum(s.points_from(self._acked) for s in self._segments)

    def _recover_segment(self, number: int) -> None:
        path = self.folder / f"{number:012d}{_SUFFIX}"
        data = path.read_bytes()
        records, layouts, valid, problem = scan_segment(data)
        if problem is not None:
            log.warning(
                "buffer %s: %s; keeping the %d records before it and cutting off %d bytes",
                path,
                problem,
                len(records),
                len(data) - valid,
            )
        if not records or records[-1].seq < self._acked:
            path.unlink()  # empty, or delivered before the crash
            return
        fd = os.open(path, os.O_RDWR)
        if valid != len(data):
            os.ftruncate(fd, valid)
            if self.fsync != "never":
                os.fsync(fd)
        seg = _Segment(number, path, fd, records[0].seq, valid)
        seg.sealed = True
        seg.layouts = layouts
        seg.stored_layouts = len(layouts.layouts)
        for r in records:
            seg.add(r, r.offset)
        self._segments.append(seg)

    # ---- reading and acknowledging (called with the lock held) --------------------------------

    def _read(self, seg: _Segment, i: int, j: int) -> list[Reading]:
        if j <= i:
            return []
        start = seg.offsets[i]
        data = os.pread(seg.fd, seg.offsets[j - 1] + seg.sizes[j - 1] - start, start)
        out: list[Reading] = []
        layouts = seg.layouts.layouts
        for k in range(i, j):
            at = seg.offsets[k] - start
            out += decode_record(data[at + FRAME.size : at + seg.sizes[k]], layouts)
        return out

    def _has_unacked_locked(self) -> bool:
        return bool(self._segments) and self._segments[-1].end_seq > self._acked

    def _save_state(self, acked: int, dropped: int) -> None:
        body = json.dumps({"format": 1, "acked_seq": acked, "dropped_points": dropped}).encode()
        tmp = self.folder / _STATE_TMP
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, body)
                if self.fsync != "never":
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.folder / _STATE)
            if self.fsync != "never":
                os.fsync(self._dir_fd)
        except OSError as e:
            raise _write_error(e, f"recording the ack position in {self.folder / _STATE}") from e

    def _delete_consumed_locked(self) -> None:
        """Delete sealed segments whose every record is acknowledged (oldest first)."""
        while self._segments and self._segments[0].sealed:
            seg = self._segments[0]
            if seg.end_seq > self._acked:
                break
            self._segments.pop(0)
            self._bytes -= seg.size
            os.close(seg.fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(seg.path)

    def _drop_until_locked(self, seq: int, why: str) -> None:
        """Give up every record before ``seq`` (full or too old): counted, then forgotten."""
        seq = max(seq, self._acked)
        points = sum(s.points_from(self._acked, seq) for s in self._segments)
        self._save_state(seq, self._dropped + points)
        log.warning("buffer %s: dropped %d points (%s)", self.folder, points, why)
        self._acked = seq
        self._dropped += points
        self._depth_points -= points
        self._delete_consumed_locked()

    def _expire_locked(self) -> None:
        try:
            self._expire_now_locked()
        except BufferWriteError:
            # Could not record the drop (disk full): keep the data, try again next time.
            log.exception("buffer %s: could not drop expired records", self.folder)

    def _expire_now_locked(self) -> None:
        cutoff = time.time_ns() - int(self.max_age_s * _NS)
        for seg in list(self._segments):  # dropping deletes segments from the list
            i = max(0, self._acked - seg.first_seq)
            if i >= seg.count:
                continue
            if seg.max_ts[i] >= cutoff:
                return  # the usual case: the oldest record is young enough
            # One expression: a numpy view of an array.array blocks its growth while alive.
            young = np.flatnonzero(np.frombuffer(seg.max_ts, dtype=np.int64)[i:] >= cutoff)
            if len(young):
                self._drop_until_locked(seg.first_seq + i + int(young[0]), "older than max_age_s")
                return
            self._drop_until_locked(seg.end_seq, "older than max_age_s")

    # ---- the writer thread ---------------------------------------------------------------------

    def _submit(self, readings: Sequence[Reading]) -> cf.Future[None]:
        item = _Item(tuple(readings), cf.Future())
        # Running futures cannot be cancelled: a cancelled append_async leaves the writer
        # free to resolve the future (the append may still be stored, as documented).
        item.future.set_running_or_notify_cancel()
        with self._put_lock:
            if self._closed:
                raise BufferClosed(f"store-and-forward buffer {self.folder} is closed")
            self._queue.put(item)
        return item.future

    def _writer(self) -> None:
        while True:
            timeout = None
            if self._unsynced:
                timeout = max(0.0, self._last_sync + self.fsync_interval_s - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._sync_quietly()
                continue
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 4096:
                    batch.append(self._queue.get_nowait())
            items = [b for b in batch if b is not None]
            try:
                self._write_batch(items)
            except Exception as e:  # a bug must not hang the appenders
                log.exception("buffer %s: writer failed", self.folder)
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(e)
            if len(items) < len(batch):  # close() was called
                self._sync_quietly()
                return

    def _sync_quietly(self) -> None:
        if self._active is not None and self._unsynced:
            try:
                os.fdatasync(self._active.fd)
            except OSError:
                log.exception("buffer %s: fdatasync failed", self.folder)
        self._unsynced = False
        self._last_sync = time.monotonic()

    def _write_batch(self, items: list[_Item]) -> None:
        with self._lock:
            self._expire_locked()
        pending: list[tuple[_Item, bytes, RecordInfo]] = []
        for item in items:
            try:
                frame, info = self._place(item, pending)
            except Exception as e:
                item.future.set_exception(e)
                continue
            pending.append((item, frame, info))
        self._flush(pending)

    def _place(
        self, item: _Item, pending: list[tuple[_Item, bytes, RecordInfo]]
    ) -> tuple[bytes, RecordInfo]:
        """Encode ``item`` for the active segment, rotating and making room as needed.

        ``pending`` (encoded, not yet written) is flushed first whenever the segment changes.
        """
        for _ in range(4):
            seg = self._active
            if seg is None:
                self._flush(pending)
                seg = self._new_segment()
            mark = len(seg.layouts.layouts)
            pending_bytes = sum(len(f) for _, f, _ in pending)
            seq = self._next_seq + len(pending)
            frame, info = encode_record(seq, item.readings, seg.layouts, time.time_ns())
            size = len(frame)
            if seg.size + pending_bytes + size > self.segment_limit and (seg.count or pending):
                seg.layouts.rollback(mark)
                self._flush(pending)
                self._seal(seg)
                continue
            if self._bytes + pending_bytes + size > self.max_bytes:
                seg.layouts.rollback(mark)
                self._flush(pending)
                self._make_room(size)
                continue
            return frame, info
        raise BufferFull(
            f"store-and-forward buffer {self.folder}: no room for an append of "
            f"{sum(len(r) for r in item.readings)} points with max_bytes={self.max_bytes}"
        )

    def _make_room(self, size: int) -> None:
        """Free ``size`` bytes below ``max_bytes``: acknowledged segments, then by policy."""
        with self._lock:
            self._delete_consumed_locked()
            active = self._active
            if active is not None and active.end_seq <= self._acked and active.count:
                self._seal_locked(active)
                self._delete_consumed_locked()
            if self._bytes + size <= self.max_bytes:
                return
            if size + len(SEGMENT_MAGIC) > self.max_bytes:
                # Checked before dropping anything: it would not fit in an empty buffer either.
                raise BufferFull(
                    f"store-and-forward buffer {self.folder}: an append of {size} bytes does "
                    f"not fit max_bytes={self.max_bytes} even when empty"
                )
            if self.when_full == "reject":
                raise BufferFull(
                    f"store-and-forward buffer {self.folder} is full: "
                    f"{self._depth_points} points in {self._bytes} bytes, max_bytes="
                    f"{self.max_bytes}; the append was rejected (when_full='reject')"
                )
            while self._bytes + size > self.max_bytes and self._segments:
                oldest = self._segments[0]
                if not oldest.sealed:
                    if not oldest.count:
                        break  # nothing left to drop: the append alone exceeds max_bytes
                    self._seal_locked(oldest)
                self._drop_until_locked(oldest.end_seq, "buffer full, when_full='drop_oldest'")
            if self._bytes + size > self.max_bytes:
                raise BufferFull(
                    f"store-and-forward buffer {self.folder}: an append of {size} bytes does "
                    f"not fit max_bytes={self.max_bytes} even when empty"
                )

    def _new_segment(self) -> _Segment:
        number = self._next_number
        path = self.folder / f"{number:012d}{_SUFFIX}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise _write_error(e, f"creating segment {path}") from e
        try:
            _write_all(fd, SEGMENT_MAGIC)
            if self.fsync != "never":
                os.fdatasync(fd)
                os.fsync(self._dir_fd)
        except OSError as e:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise _write_error(e, f"creating segment {path}") from e
        self._next_number += 1
        seg = _Segment(number, path, fd, self._next_seq, len(SEGMENT_MAGIC))
        with self._lock:
            self._segments.append(seg)
            self._bytes += seg.size
        self._active = seg
        return seg

    def _seal(self, seg: _Segment) -> None:
        with self._lock:
            self._seal_locked(seg)

    def _seal_locked(self, seg: _Segment) -> None:
        if self._unsynced and self.fsync != "never":
            os.fdatasync(seg.fd)
            self._unsynced = False
            self._last_sync = time.monotonic()
        seg.sealed = True
        if self._active is seg:
            self._active = None

    def _flush(self, pending: list[tuple[_Item, bytes, RecordInfo]]) -> None:
        """Write the encoded records to the active segment, sync per policy, publish them."""
        if not pending:
            return
        seg = self._active
        assert seg is not None
        batch = list(pending)
        pending.clear()
        data = b"".join(f for _, f, _ in batch)
        try:
            _write_all(seg.fd, data, seg.size)
            if self.fsync == "always":
                os.fdatasync(seg.fd)
        except OSError as e:
            self._undo_write(seg)
            err = _write_error(e, f"writing {len(data)} bytes to segment {seg.path}")
            for it, _, _ in batch:
                it.future.set_exception(err)
            return
        if self.fsync == "interval":
            self._unsynced = True
            if time.monotonic() - self._last_sync >= self.fsync_interval_s:
                self._sync_quietly()
        points = 0
        with self._lock:
            offset = seg.size
            for _, frame, info in batch:
                seg.add(info, offset)
                offset += len(frame)
                points += info.points
            seg.size = offset
            seg.stored_layouts = len(seg.layouts.layouts)
            self._bytes += len(data)
            self._depth_points += points
            self._appended += points
            loop, event = self._loop, self._event
        self._next_seq += len(batch)
        for it, _, _ in batch:
            it.future.set_result(None)
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def _undo_write(self, seg: _Segment) -> None:
        """Forget a failed write: cut the file back and the layouts it would have defined."""
        seg.layouts.rollback(seg.stored_layouts)
        try:
            os.ftruncate(seg.fd, seg.size)
        except OSError:
            # The torn bytes stay; no record may follow them in this file, so start another.
            log.exception("buffer %s: could not cut back %s", self.folder, seg.path)
            self._seal(seg)


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[n:]
        if offset is not None:
            offset += n


def _write_error(e: OSError, what: str) -> BufferWriteError:
    if e.errno == errno.ENOSPC:
        return BufferDiskFull(
            errno.ENOSPC, f"store-and-forward buffer: disk full {what}; not stored"
        )
    return BufferWriteError(e.errno or errno.EIO, f"store-and-forward buffer: {what}: {e}")
