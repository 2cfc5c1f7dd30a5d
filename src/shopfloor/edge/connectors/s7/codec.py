"""From configured points to area reads and back: coalescing, big-endian decoding, encoding.

A :class:`ReadPlan` is built once per device. It merges the device's points into as few
contiguous byte ranges (:class:`Block`) per area as the ``max_gap`` allows, and precomputes,
per data type, the byte positions of its points in the concatenated blocks. Decoding a poll is
then one fancy-index and one ``view`` per data type (S7 is big-endian), not a loop over points;
only strings, which have a length header, are sliced one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shopfloor.edge.connectors.s7.config import S7Point

__all__ = ["NUMERIC_DTYPES", "Block", "ReadPlan", "decode_one", "encode"]

# numpy dtype of each numeric S7 type, big-endian as the PLC stores it.
NUMERIC_DTYPES: dict[str, str] = {
    "byte": ">u1",
    "int": ">i2",
    "dint": ">i4",
    "word": ">u2",
    "dword": ">u4",
    "real": ">f4",
    "lreal": ">f8",
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "byte": (0, 0xFF),
    "int": (-(2**15), 2**15 - 1),
    "dint": (-(2**31), 2**31 - 1),
    "word": (0, 0xFFFF),
    "dword": (0, 0xFFFFFFFF),
}


@dataclass(frozen=True)
class Block:
    """One contiguous byte range read in one request item."""

    area: str
    db: int  # 0 outside area DB
    start: int
    size: int


@dataclass(frozen=True)
class _TypeGroup:
    dtype: np.dtype[np.generic]
    index: npt.NDArray[np.intp]  # which points of the device
    gather: npt.NDArray[np.intp]  # (points, itemsize) byte positions in the joined buffer


class ReadPlan:
    """How to read and decode one device's points with the fewest area reads."""

    def __init__(self, points: Sequence[S7Point], max_gap: int) -> None:
        self.points = tuple(points)
        self.signals = tuple(p.name for p in self.points)
        self.blocks, pos = _coalesce(self.points, max_gap)
        self.pos = pos  # byte position of each point in the joined buffer
        self.total_bytes = sum(b.size for b in self.blocks)
        self._scale = np.array([p.scale for p in self.points])
        self._offset = np.array([p.offset for p in self.points])
        self._groups: list[_TypeGroup] = []
        for type_name, dt in NUMERIC_DTYPES.items():
            idx = np.array([i for i, p in enumerate(self.points) if p.type == type_name], np.intp)
            if len(idx):
                dtype = np.dtype(dt)
                gather = pos[idx][:, None] + np.arange(dtype.itemsize, dtype=np.intp)
                self._groups.append(_TypeGroup(dtype, idx, gather))
        self._bools = np.array([i for i, p in enumerate(self.points) if p.type == "bool"], np.intp)
        self._bits = np.array([self.points[i].bit for i in self._bools], np.uint8)
        self._strings = [i for i, p in enumerate(self.points) if p.type == "string"]

    def decode(
        self, chunks: Sequence[bytes | bytearray]
    ) -> tuple[npt.NDArray[np.float64], tuple[str | None, ...] | None]:
        """Values (scaled) and, when the device has strings, their text; one entry per point."""
        raw = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        if len(raw) != self.total_bytes:
            raise ValueError(f"PLC returned {len(raw)} bytes, expected {self.total_bytes}")
        values = np.full(len(self.points), np.nan)
        for g in self._groups:
            values[g.index] = raw[g.gather].view(g.dtype).ravel()
        if len(self._bools):
            values[self._bools] = (raw[self.pos[self._bools]] >> self._bits) & 1
        values = values * self._scale + self._offset
        if not self._strings:
            return values, None
        text: list[str | None] = [None] * len(self.points)
        for i in self._strings:
            text[i] = _decode_string(raw, int(self.pos[i]), self.points[i])
        return values, tuple(text)


def _coalesce(points: Sequence[S7Point], max_gap: int) -> tuple[list[Block], npt.NDArray[np.intp]]:
    """Merge points per area into ranges; a point's position is its byte in the joined reads."""
    order = sorted(
        range(len(points)), key=lambda i: (points[i].area, points[i].db or 0, points[i].byte)
    )
    blocks: list[Block] = []
    members: list[list[int]] = []
    for i in order:
        p = points[i]
        db = p.db or 0
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.area == p.area
            and last.db == db
            and p.byte <= last.start + last.size + max_gap
        ):
            end = max(last.start + last.size, p.byte + p.size)
            blocks[-1] = Block(last.area, db, last.start, end - last.start)
            members[-1].append(i)
        else:
            blocks.append(Block(p.area, db, p.byte, p.size))
            members.append([i])
    pos = np.zeros(len(points), dtype=np.intp)
    base = 0
    for block, idx in zip(blocks, members, strict=True):
        for i in idx:
            pos[i] = base + points[i].byte - block.start
        base += block.size
    return blocks, pos


def _decode_string(raw: npt.NDArray[np.uint8], pos: int, point: S7Point) -> str:
    # An S7 STRING is [declared max length][current length][characters...].
    assert point.length is not None
    n = min(int(raw[pos + 1]), point.length)
    return bytes(raw[pos + 2 : pos + 2 + n]).decode("latin-1")


def decode_one(point: S7Point, data: bytes | bytearray) -> float | str:
    """The value of one point from its own bytes (the read-back after a write)."""
    values, text = ReadPlan([point], 0).decode([data])
    if text is not None and text[0] is not None:
        return text[0]
    return float(values[0])


def encode(point: S7Point, value: object, current: bytes | bytearray = b"") -> bytes:
    """The bytes to write for ``value`` (in engineering units), with a clear error if it cannot.

    A bool is written as its whole byte: ``current`` is that byte as read just before, so the
    other seven bits keep their values.
    """
    where = f"point {point.name!r} ({point.type} at {point.address})"
    if point.type == "string":
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected text, got {type(value).__name__}")
        assert point.length is not None
        data = value.encode("latin-1", errors="strict")
        if len(data) > point.length:
            raise ValueError(f"{where}: {len(data)} characters exceed STRING[{point.length}]")
        return bytes([point.length, len(data)]) + data
    if isinstance(value, str) or not isinstance(value, int | float | bool | np.number):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    if point.type == "bool":
        if value not in (0, 1):
            raise ValueError(f"{where}: a bool takes 0/1 or true/false, got {value!r}")
        if len(current) != 1:
            raise ValueError(f"{where}: the current byte is needed to write one bit")
        assert point.bit is not None
        mask = 1 << point.bit
        return bytes([(current[0] | mask) if value else (current[0] & ~mask & 0xFF)])
    raw = (float(value) - point.offset) / point.scale
    if not np.isfinite(raw):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    dtype = np.dtype(NUMERIC_DTYPES[point.type])
    if point.type in _INT_RANGES:
        lo, hi = _INT_RANGES[point.type]
        rounded = round(raw)
        if not lo <= rounded <= hi:
            raise ValueError(f"{where}: {value!r} is raw {rounded}, outside {lo}..{hi}")
        return np.array([rounded], dtype=dtype).tobytes()
    if point.type == "real" and abs(raw) > float(np.finfo(np.float32).max):
        raise ValueError(f"{where}: {value!r} does not fit a REAL")
    return np.array([raw], dtype=dtype).tobytes()
