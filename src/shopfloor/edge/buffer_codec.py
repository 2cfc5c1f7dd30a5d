"""The on-disk format of the store-and-forward buffer: segment files of CRC-framed records.

A segment file is ``SEGMENT_MAGIC`` followed by records. A record is one ``append`` call::

    frame    u32 payload length, u32 CRC32 of the payload
    payload  header (seq, counts, min/max timestamp, new layouts)
             new layouts   (device, signal names) first used in this segment, utf-8
             reading table one 24-byte row per reading
             values        float64, every point of every reading
             ts64          int64 timestamps of readings whose timestamps span more than ~2 s
             quality       uint32 of readings whose points differ in quality
             ts32          int32 offsets from the reading's first timestamp (jittered polls)
             text          int32 byte length per point (-1 = None), then the utf-8 bytes

A *layout* is a reading's ``(device, signals)``. It is written once per segment, in the first
record that uses it, and later records name it by its number in that segment: a poll of 100
signals then costs ~8 bytes a point (the float64 value) plus ~0.6 bytes of framing. Readings
whose points share one timestamp or one quality (the usual poll) store it once in the table.

All little-endian; every 8-byte section starts 8-byte aligned so numpy reads it in place.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shopfloor.edge.model import Reading

__all__ = [
    "FRAME",
    "HEADER",
    "SEGMENT_MAGIC",
    "Layout",
    "LayoutTable",
    "RecordInfo",
    "decode_record",
    "encode_record",
    "scan_segment",
]

SEGMENT_MAGIC = b"SFBUF01\n"
FRAME = struct.Struct("<II")  # payload length, crc32(payload)
HEADER = struct.Struct("<QIIqqII")  # seq, readings, points, min ts, max ts, layouts, layout bytes
_U32 = struct.Struct("<I")
ROW = np.dtype([("layout", "<u4"), ("n", "<u4"), ("ts0", "<i8"), ("q0", "<u4"), ("flags", "<u4")])
# A record larger than this is refused: a length field this big is taken as corruption on read.
MAX_PAYLOAD = 1 << 30

F_SOURCE_TS = 1
F_TS64 = 2  # neither F_TS64 nor F_TS32: every point has ts0
F_TS32 = 4
F_QUALITY = 8  # not set: every point has q0
F_TEXT = 16

_INT32_SPAN = (1 << 31) - 1
_UTF8 = "utf-8"
# Lone surrogates are valid in a Python str; keep them instead of failing the append.
_ERRORS = "surrogatepass"

Layout = tuple[str, tuple[str, ...]]


@dataclass
class LayoutTable:
    """The layouts of one segment, in the order they were defined there."""

    layouts: list[Layout] = field(default_factory=list)
    ids: dict[Layout, int] = field(default_factory=dict)

    def add(self, layout: Layout) -> int:
        self.ids[layout] = len(self.layouts)
        self.layouts.append(layout)
        return len(self.layouts) - 1

    def rollback(self, mark: int) -> None:
        """Forget layouts defined after ``mark`` (their record was never stored)."""
        for layout in self.layouts[mark:]:
            del self.ids[layout]
        del self.layouts[mark:]


@dataclass(frozen=True)
class RecordInfo:
    """What the index keeps of a record: where it is and what it holds."""

    offset: int  # of the frame, from the start of the segment file
    size: int  # frame + payload
    seq: int
    points: int
    min_ts: int
    max_ts: int


def _pad8(n: int) -> bytes:
    return b"\0" * (-n % 8)


def _encode_layouts(layouts: Sequence[Layout]) -> bytes:
    parts: list[bytes] = []
    for device, signals in layouts:
        dev = device.encode(_UTF8, _ERRORS)
        names = [s.encode(_UTF8, _ERRORS) for s in signals]
        parts += [_U32.pack(len(dev)), dev, _U32.pack(len(names))]
        parts.append(np.array([len(b) for b in names], dtype="<u4").tobytes())
        parts += names
    return b"".join(parts)


def _decode_layouts(buf: bytes | memoryview, count: int) -> list[Layout]:
    out: list[Layout] = []
    pos = 0
    for _ in range(count):
        (n,) = _U32.unpack_from(buf, pos)
        device = bytes(buf[pos + 4 : pos + 4 + n]).decode(_UTF8, _ERRORS)
        pos += 4 + n
        (k,) = _U32.unpack_from(buf, pos)
        pos += 4
        lens = np.frombuffer(buf, dtype="<u4", count=k, offset=pos).tolist()
        pos += 4 * k
        blob = bytes(buf[pos : pos + sum(lens)])
        pos += sum(lens)
        names: list[str] = []
        start = 0
        for ln in lens:
            names.append(blob[start : start + ln].decode(_UTF8, _ERRORS))
            start += ln
        out.append((device, tuple(names)))
    return out


def _encode_text(text: tuple[str | None, ...]) -> tuple[npt.NDArray[np.int32], bytes]:
    # Text points are rare (string tags); this is the one per-point Python loop, text only.
    raw = [b"" if s is None else s.encode(_UTF8, _ERRORS) for s in text]
    lens = np.array(
        [-1 if s is None else len(b) for s, b in zip(text, raw, strict=True)], dtype="<i4"
    )
    return lens, b"".join(raw)


def encode_record(
    seq: int, readings: Sequence[Reading], table: LayoutTable, now_ns: int
) -> tuple[bytes, RecordInfo]:
    """Frame ``readings`` as one record; layouts new to ``table`` are added to it.

    The caller rolls ``table`` back (``LayoutTable.rollback``) when the record is not stored.
    ``RecordInfo.offset`` is 0: the caller knows where it writes the record.
    """
    n_read = len(readings)
    rows = np.zeros(n_read, dtype=ROW)
    layout_ids: list[int] = []
    counts: list[int] = []
    ts0s: list[int] = []
    q0s: list[int] = []
    flags_l: list[int] = []
    new: list[Layout] = []
    values: list[npt.NDArray[np.float64]] = []
    ts64: list[npt.NDArray[np.int64]] = []
    quality: list[npt.NDArray[np.uint32]] = []
    ts32: list[npt.NDArray[np.int32]] = []
    text_lens: list[npt.NDArray[np.int32]] = []
    text_blobs: list[bytes] = []
    lo_all, hi_all = None, None
    for r in readings:
        key = (r.device, r.signals)
        lid = table.ids.get(key)
        if lid is None:
            lid = table.add(key)
            new.append(key)
        n = len(r)
        flags = F_SOURCE_TS if r.source_ts else 0
        ts0 = q0 = 0
        if n:
            ts = np.ascontiguousarray(r.ts_ns, dtype="<i8")
            lo, hi = int(ts.min()), int(ts.max())
            lo_all = lo if lo_all is None else min(lo_all, lo)
            hi_all = hi if hi_all is None else max(hi_all, hi)
            ts0 = lo
            if hi - lo > _INT32_SPAN:
                flags |= F_TS64
                ts64.append(ts)
            elif hi != lo:
                flags |= F_TS32
                ts32.append((ts - lo).astype("<i4"))
            q = np.ascontiguousarray(r.quality, dtype="<u4")
            q0 = int(q[0])
            if n > 1 and int(q.min()) != int(q.max()):
                flags |= F_QUALITY
                quality.append(q)
            values.append(np.ascontiguousarray(r.values, dtype="<f8"))
        if r.text is not None:
            flags |= F_TEXT
            lens, blob = _encode_text(r.text)
            text_lens.append(lens)
            text_blobs.append(blob)
        layout_ids.append(lid)
        counts.append(n)
        ts0s.append(ts0)
        q0s.append(q0)
        flags_l.append(flags)
    rows["layout"] = layout_ids
    rows["n"] = counts
    rows["ts0"] = ts0s
    rows["q0"] = q0s
    rows["flags"] = flags_l
    n_points = sum(counts)
    if lo_all is None or hi_all is None:  # no points at all: age it from the append time
        lo_all = hi_all = now_ns
    layout_bytes = _encode_layouts(new)
    head = HEADER.pack(seq, n_read, n_points, lo_all, hi_all, len(new), len(layout_bytes))
    arrays: list[npt.NDArray[np.generic]] = [rows, *values, *ts64, *quality, *ts32, *text_lens]
    parts: list[bytes | memoryview] = [head, layout_bytes, _pad8(len(layout_bytes))]
    parts += [a.data.cast("B") for a in arrays]
    parts += text_blobs
    payload = b"".join(parts)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"one append of {n_points} points is {len(payload)} bytes; the buffer takes at most "
            f"{MAX_PAYLOAD} bytes per append: split it"
        )
    frame = FRAME.pack(len(payload), zlib.crc32(payload)) + payload
    return frame, RecordInfo(0, len(frame), seq, n_points, lo_all, hi_all)


def decode_record(payload: bytes, layouts: Sequence[Layout]) -> list[Reading]:
    """The readings of one record (``payload`` without its frame), given its segment's layouts.

    The arrays are read-only views of ``payload`` where the data is stored as is.
    """
    _, n_read, _, _, _, _, layout_len = HEADER.unpack_from(payload, 0)
    pos = HEADER.size + int(layout_len) + (-int(layout_len) % 8)
    rows = np.frombuffer(payload, dtype=ROW, count=n_read, offset=pos)
    pos += rows.nbytes
    counts = rows["n"].astype(np.int64)
    flags = rows["flags"]

    def section(mask: int, itemsize: int) -> int:
        # Where the section of readings flagged ``mask`` starts; moves ``pos`` past it.
        nonlocal pos
        start = pos
        pos += int(counts[(flags & mask) != 0].sum()) * itemsize
        return start

    v_at = pos
    pos += int(counts.sum()) * 8
    ts64_at = section(F_TS64, 8)
    q_at = section(F_QUALITY, 4)
    ts32_at = section(F_TS32, 4)
    tl_at = section(F_TEXT, 4)
    text_at = pos
    out: list[Reading] = []
    for lid, n, ts0, q0, fl in rows.tolist():
        device, signals = layouts[lid]
        values = np.frombuffer(payload, dtype="<f8", count=n, offset=v_at)
        v_at += 8 * n
        if fl & F_TS64:
            ts = np.frombuffer(payload, dtype="<i8", count=n, offset=ts64_at)
            ts64_at += 8 * n
        elif fl & F_TS32:
            ts = np.frombuffer(payload, dtype="<i4", count=n, offset=ts32_at) + np.int64(ts0)
            ts32_at += 4 * n
        else:
            ts = np.full(n, ts0, dtype=np.int64)
        if fl & F_QUALITY:
            q = np.frombuffer(payload, dtype="<u4", count=n, offset=q_at)
            q_at += 4 * n
        else:
            q = np.full(n, q0, dtype=np.uint32)
        text: tuple[str | None, ...] | None = None
        if fl & F_TEXT:
            lens = np.frombuffer(payload, dtype="<i4", count=n, offset=tl_at)
            tl_at += 4 * n
            text, text_at = _decode_text(payload, lens, text_at)
        out.append(Reading(device, signals, ts, values, q, text, bool(fl & F_SOURCE_TS)))
    return out


def _decode_text(
    payload: bytes, lens: npt.NDArray[np.int32], at: int
) -> tuple[tuple[str | None, ...], int]:
    total = int(lens[lens > 0].sum())
    blob = payload[at : at + total]
    out: list[str | None] = []
    start = 0
    for ln in lens.tolist():
        if ln < 0:
            out.append(None)
        else:
            out.append(blob[start : start + ln].decode(_UTF8, _ERRORS))
            start += ln
    return tuple(out), at + total


def scan_segment(data: bytes) -> tuple[list[RecordInfo], LayoutTable, int, str | None]:
    """Check every record of a segment file's content, in order, up to the first bad one.

    Returns the records, the layouts they define, the length of the valid part (where a torn
    or corrupt tail begins) and why the scan stopped early (``None`` when it read to the end).
    """
    if data[: len(SEGMENT_MAGIC)] != SEGMENT_MAGIC:
        return [], LayoutTable(), 0, "no segment header"
    records: list[RecordInfo] = []
    table = LayoutTable()
    pos = len(SEGMENT_MAGIC)
    end = len(data)
    view = memoryview(data)
    while pos < end:
        if end - pos < FRAME.size + HEADER.size:
            return records, table, pos, f"torn record at byte {pos}"
        length, crc = FRAME.unpack_from(data, pos)
        start = pos + FRAME.size
        if length < HEADER.size or length > MAX_PAYLOAD or start + length > end:
            return records, table, pos, f"torn record at byte {pos}"
        payload = view[start : start + length]
        if zlib.crc32(payload) != crc:
            return records, table, pos, f"CRC mismatch in the record at byte {pos}"
        seq, _, points, lo, hi, n_layouts, layout_len = HEADER.unpack_from(payload, 0)
        if records and seq != records[-1].seq + 1:
            return records, table, pos, f"record at byte {pos} is out of sequence"
        at = HEADER.size
        for layout in _decode_layouts(payload[at : at + layout_len], n_layouts):
            table.add(layout)
        records.append(RecordInfo(pos, FRAME.size + length, seq, points, lo, hi))
        pos = start + length
    return records, table, pos, None
