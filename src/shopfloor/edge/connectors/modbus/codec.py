"""Registers to values and back, vectorised with numpy.

The answers of one poll are laid into one register buffer (and one bit buffer for coils and
discrete inputs). Everything that depends only on the configuration is computed once: for each
fixed-width data type, a matrix of byte indices into the buffer's big-endian bytes, one row per
point, with the point's byte and word order already folded in. Decoding a poll is then one
gather and one ``view`` per data type, one shift per bit-in-register group, one scale and offset
over all points. Only strings, which are text by nature, are decoded one by one.

Byte order is the order of the two bytes inside each register; word order is the order of the
registers of a multi-register value. big/big is ABCD, big/little CDAB (word swap), little/big
BADC (byte swap), little/little DCBA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connectors.modbus.config import PointConfig
from shopfloor.edge.connectors.modbus.plan import ReadPlan

__all__ = ["NUMPY_TYPES", "DeviceCodec", "EncodeError", "byte_permutation"]

# Big-endian numpy type of each fixed-width data type.
NUMPY_TYPES: dict[str, str] = {
    "int16": ">i2",
    "uint16": ">u2",
    "int32": ">i4",
    "uint32": ">u4",
    "int64": ">i8",
    "uint64": ">u8",
    "float32": ">f4",
    "float64": ">f8",
}

# What one block's answer is: registers, bits, or None when the request failed.
BlockData = Sequence[int] | Sequence[bool] | npt.NDArray[Any] | None


class EncodeError(ValueError):
    """A value that cannot be written to a point (type, range, length)."""


def byte_permutation(width: int, byte_order: str, word_order: str) -> npt.NDArray[np.int64]:
    """``canonical[k] = wire[perm[k]]``: canonical is the value's big-endian bytes, wire the
    registers' bytes as they arrive (each register high byte first)."""
    words = np.arange(width, dtype=np.int64)
    if word_order == "little":
        words = words[::-1]
    halves = np.array([0, 1] if byte_order == "big" else [1, 0], dtype=np.int64)
    return (2 * words[:, None] + halves[None, :]).ravel()


class DeviceCodec:
    """Decodes the answers to one :class:`ReadPlan` into a device's values, and encodes writes."""

    def __init__(self, points: Sequence[PointConfig], plan: ReadPlan) -> None:
        self.points = tuple(points)
        self.plan = plan
        n = len(points)
        self.n = n
        base: list[int] = []
        regs = bits = 0
        for b in plan.blocks:
            if b.is_bits:
                base.append(bits)
                bits += b.count
            else:
                base.append(regs)
                regs += b.count
        self._base = base
        self.n_registers, self.n_bits = regs, bits
        self._point_block = np.asarray(plan.point_block, dtype=np.int64)

        numeric: dict[str, tuple[list[int], list[npt.NDArray[np.int64]]]] = {}
        bit_pos: list[int] = []
        bit_idx: list[int] = []
        reg_bit_pos: list[int] = []
        reg_bit_idx: list[int] = []
        reg_bit_num: list[int] = []
        self._strings: list[tuple[int, npt.NDArray[np.int64]]] = []
        self._perms: list[npt.NDArray[np.int64]] = []
        for i, p in enumerate(points):
            block = plan.blocks[plan.point_block[i]]
            at = base[plan.point_block[i]] + p.address - block.start  # register / bit index
            perm = byte_permutation(p.width, p.byte_order, p.word_order)
            self._perms.append(perm)
            dt = p.data_type
            if p.is_bit_table:
                bit_pos.append(i)
                bit_idx.append(at)
            elif dt == "bool":
                reg_bit_pos.append(i)
                reg_bit_idx.append(at)
                reg_bit_num.append(p.bit or 0)
            elif dt == "string":
                self._strings.append((i, 2 * at + perm))
            else:
                pos, rows = numeric.setdefault(dt, ([], []))
                pos.append(i)
                rows.append(2 * at + perm)
        self._numeric = [
            (np.dtype(NUMPY_TYPES[dt]), np.asarray(pos, dtype=np.int64), np.stack(rows))
            for dt, (pos, rows) in numeric.items()
        ]
        self._bits = (np.asarray(bit_pos, dtype=np.int64), np.asarray(bit_idx, dtype=np.int64))
        self._reg_bits = (
            np.asarray(reg_bit_pos, dtype=np.int64),
            np.asarray(reg_bit_idx, dtype=np.int64),
            np.asarray(reg_bit_num, dtype=np.uint16),
        )
        self._scale = np.array([p.scale for p in points], dtype=np.float64)
        self._offset = np.array([p.offset for p in points], dtype=np.float64)
        self._scaled = bool((self._scale != 1.0).any() or (self._offset != 0.0).any())

    def decode(
        self, answers: Sequence[BlockData]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint32], tuple[str | None, ...] | None]:
        """Values, qualities and (when the device has strings) texts, in point order.

        ``answers[k]`` is the answer to ``plan.blocks[k]``, or None when that request failed:
        its points get NaN and a bad quality, the others decode as usual.
        """
        if len(answers) != len(self.plan.blocks):
            raise ValueError(f"{len(answers)} answers for {len(self.plan.blocks)} requests")
        regs = np.zeros(self.n_registers, dtype=np.uint16)
        bits = np.zeros(self.n_bits, dtype=np.bool_)
        failed: list[int] = []
        for k, (block, data) in enumerate(zip(self.plan.blocks, answers, strict=True)):
            if data is None:
                failed.append(k)
                continue
            if len(data) < block.count:
                raise ValueError(f"request {k} returned {len(data)} values, {block.count} asked")
            target = bits if block.is_bits else regs
            target[self._base[k] : self._base[k] + block.count] = np.asarray(data[: block.count])

        values = np.full(self.n, np.nan)
        wire = regs.astype(">u2").view(np.uint8)
        for dtype, pos, rows in self._numeric:
            values[pos] = wire[rows].view(dtype)[:, 0]
        pos, idx = self._bits
        values[pos] = bits[idx]
        pos, idx, num = self._reg_bits
        values[pos] = (regs[idx] >> num) & 1
        if self._scaled:
            values = values * self._scale + self._offset

        quality = np.full(self.n, GOOD, dtype=np.uint32)
        bad = np.zeros(self.n, dtype=np.bool_)
        if failed:
            bad = np.isin(self._point_block, failed)
            values[bad] = np.nan
            quality[bad] = BAD
        text: tuple[str | None, ...] | None = None
        if self._strings:
            texts: list[str | None] = [None] * self.n
            for i, rows in self._strings:
                if not bad[i]:
                    texts[i] = _text(wire[rows].tobytes())
            text = tuple(texts)
        return values, quality, text

    # -- writes ------------------------------------------------------------------------------

    def encode(self, index: int, value: Any) -> list[int] | bool:
        """The registers (or, for a coil, the bit) that make point ``index`` hold ``value``.

        A bool in a register is returned as the bit value; the caller sets it in the register
        it read (read-modify-write).
        """
        p = self.points[index]
        dt = p.data_type
        if dt == "bool":
            return _as_bool(value, p.name)
        if dt == "string":
            if not isinstance(value, str):
                raise EncodeError(f"{p.name} is a string point; got {type(value).__name__}")
            raw = value.encode("utf-8")
            assert p.length is not None
            if len(raw) > p.length:
                raise EncodeError(f"{p.name} holds {p.length} bytes; {value!r} needs {len(raw)}")
            canonical = raw.ljust(2 * p.width, b"\0")
        else:
            canonical = _encode_number(p, dt, value)
        wire = bytearray(len(canonical))
        for k, at in enumerate(self._perms[index]):
            wire[at] = canonical[k]
        return [int.from_bytes(wire[j : j + 2], "big") for j in range(0, len(wire), 2)]


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").rstrip(" ")


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise EncodeError(f"{name} is a bool point; got {value!r}")


def _encode_number(p: PointConfig, dt: str, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise EncodeError(f"{p.name} is a {dt} point; got {type(value).__name__} {value!r}")
    dtype = np.dtype(NUMPY_TYPES[dt])
    if dt.startswith("float"):
        raw_f = (float(value) - p.offset) / p.scale
        if math.isfinite(raw_f) and abs(raw_f) > float(np.finfo(dtype).max):
            raise EncodeError(f"{value!r} does not fit {p.name} ({dt})")
        return np.array([raw_f], dtype=dtype).tobytes()
    if isinstance(value, int | np.integer) and p.scale == 1.0 and p.offset == 0.0:
        raw = int(value)  # exact, also beyond 2**53
    else:
        raw_f = (float(value) - p.offset) / p.scale
        if not np.isfinite(raw_f):
            raise EncodeError(f"{value!r} is not a finite number for {p.name}")
        raw = round(raw_f)
    info = np.iinfo(dtype)
    if not info.min <= raw <= info.max:
        raise EncodeError(
            f"{value!r} gives raw {raw} for {p.name}, outside {dt} ({info.min}..{info.max})"
        )
    return np.array([raw], dtype=dtype).tobytes()
