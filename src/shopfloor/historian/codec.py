"""Block codec: one signal's points of one chunk encoded into a few compact byte strings.

Why not store rows as they come: DuckDB or Parquet keep polled 1 Hz data at 6-8 bytes a
point. Per-signal time-ordered blocks with the right transforms before zstd get near 1 byte:

- timestamps: divided by their common unit (ms data has 10**6 ns of zeros), then either the
  residual from a regular grid (polled data jitters around a clock) or delta-of-delta from the
  nominal period (robust to gaps); whichever compresses smaller wins, a method byte says which.
- values: if every value is an exact decimal with <= 6 places, scaled to integers and
  delta-encoded (a 2-decimal random walk costs ~5-6 bits); otherwise float64 with its bytes
  XORed against the previous value's (Gorilla) and byte-shuffled.
- integers are zigzagged, narrowed to the smallest width that holds them and byte-shuffled,
  so zstd's entropy stage sees one byte plane at a time.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

# Level 1: on these byte planes it compressed as well as level 9 (0.83 vs 0.85 bytes/point on
# polled data) at 1.6x the speed; the transforms before it do the real work.
_ZSTD: Final = pa.Codec("zstd", compression_level=1)
_HEAD: Final = struct.Struct("<BBqqq")  # method, width, t0/base, unit/scale, period/extra

TS_GRID: Final = 0
TS_DOD: Final = 1
V_DECIMAL: Final = 0
V_XOR: Final = 1
V_CONST: Final = 2
MAX_DECIMALS: Final = 6

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def _zigzag(x: I64) -> npt.NDArray[np.uint64]:
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(u: npt.NDArray[np.uint64]) -> I64:
    return ((u >> np.uint64(1)).view(np.int64)) ^ -((u & np.uint64(1)).view(np.int64))


def _pack_ints(x: I64) -> tuple[int, bytes]:
    """Zigzag, narrow, byte-shuffle and compress; returns (width, payload)."""
    u = _zigzag(x)
    top = int(u.max()) if len(u) else 0
    width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4 if top < 1 << 32 else 8
    narrow = u.astype(f"<u{width}")
    planes = np.ascontiguousarray(narrow.view(np.uint8).reshape(-1, width).T)
    return width, bytes(_ZSTD.compress(planes.tobytes(), asbytes=True))


def _unpack_ints(width: int, payload: bytes, n: int) -> I64:
    raw = np.frombuffer(
        _ZSTD.decompress(payload, decompressed_size=n * width, asbytes=True), dtype=np.uint8
    )
    narrow = np.ascontiguousarray(raw.reshape(width, n).T).view(f"<u{width}").reshape(n)
    return _unzigzag(narrow.astype(np.uint64))


def encode_ts(ts: I64) -> bytes:
    """Encode sorted int64 ns timestamps."""
    n = len(ts)
    t0 = int(ts[0])
    rel = ts - t0
    unit = int(np.gcd.reduce(rel)) if n > 1 else 1
    unit = unit or 1
    scaled = rel // unit
    deltas = np.diff(scaled)
    period = int(np.median(deltas)) if n > 1 else 0
    grid = scaled - np.arange(n, dtype=np.int64) * period
    dod = np.diff(scaled, prepend=np.int64(0)) - period
    best = b""
    for method, series in ((TS_GRID, grid), (TS_DOD, dod)):
        width, payload = _pack_ints(series)
        blob = _HEAD.pack(method, width, t0, unit, period) + payload
        if not best or len(blob) < len(best):
            best = blob
    return best


def decode_ts(blob: bytes, n: int) -> I64:
    method, width, t0, unit, period = _HEAD.unpack_from(blob)
    series = _unpack_ints(width, blob[_HEAD.size :], n)
    if method == TS_GRID:
        scaled = series + np.arange(n, dtype=np.int64) * period
    else:
        scaled = np.cumsum(series + period)
    out: I64 = scaled * unit + t0
    return out


def _decimals(v: F64) -> int | None:
    """Fewest decimal places (<= 6) that represent every value exactly, else None."""
    if not len(v) or np.abs(v).max() >= 2.0**52 / 10**MAX_DECIMALS:
        return None
    if np.any((v == 0) & np.signbit(v)):  # -0.0 would come back as 0.0
        return None
    for d in range(MAX_DECIMALS + 1):
        scaled = np.round(v * 10.0**d)
        if np.array_equal(scaled / 10.0**d, v):
            return d
    return None


def encode_values(v: F64) -> bytes:
    """Encode a float64 column without nulls (callers mask nulls out first)."""
    bits = v.view(np.int64)
    if len(v) and np.all(bits == bits[0]):  # bitwise: 0.0 and -0.0 are not the same value
        return _HEAD.pack(V_CONST, 0, 0, 0, 0) + struct.pack("<d", float(v[0]))
    d = _decimals(v)
    if d is not None:
        ints = np.round(v * 10.0**d).astype(np.int64)
        width, payload = _pack_ints(np.diff(ints, prepend=np.int64(0)))
        return _HEAD.pack(V_DECIMAL, width, 0, d, 0) + payload
    xored = bits ^ np.concatenate(([np.int64(0)], bits[:-1]))
    planes = np.ascontiguousarray(xored.view(np.uint8).reshape(-1, 8).T)
    packed: bytes = _ZSTD.compress(planes.tobytes(), asbytes=True)
    return _HEAD.pack(V_XOR, 8, 0, 0, 0) + packed


def decode_values(blob: bytes, n: int) -> F64:
    method, width, _, scale, _ = _HEAD.unpack_from(blob)
    body = blob[_HEAD.size :]
    if method == V_CONST:
        return np.full(n, struct.unpack("<d", body)[0], dtype=np.float64)
    if method == V_DECIMAL:
        ints = np.cumsum(_unpack_ints(width, body, n))
        # Division, not multiplication by 10**-d: it gives back exactly the decimal we stored.
        decimals: F64 = ints / 10.0**scale
        return decimals
    raw = np.frombuffer(_ZSTD.decompress(body, decompressed_size=n * 8, asbytes=True), np.uint8)
    xored = np.ascontiguousarray(raw.reshape(8, n).T).view(np.int64).reshape(n)
    out: F64 = np.bitwise_xor.accumulate(xored).view(np.float64)
    return out


def encode_uints(q: npt.NDArray[np.uint32]) -> bytes:
    """Quality codes: a constant block (the usual case) costs a dozen bytes."""
    if len(q) and np.all(q == q[0]):
        return _HEAD.pack(V_CONST, 0, int(q[0]), 0, 0)
    width, payload = _pack_ints(q.astype(np.int64))
    return _HEAD.pack(V_DECIMAL, width, 0, 0, 0) + payload


def decode_uints(blob: bytes, n: int) -> npt.NDArray[np.uint32]:
    method, width, const, _, _ = _HEAD.unpack_from(blob)
    if method == V_CONST:
        return np.full(n, const, dtype=np.uint32)
    return _unpack_ints(width, blob[_HEAD.size :], n).astype(np.uint32)


def encode_mask(mask: npt.NDArray[np.bool_]) -> bytes:
    return bytes(_ZSTD.compress(np.packbits(mask).tobytes(), asbytes=True))


def decode_mask(blob: bytes, n: int) -> npt.NDArray[np.bool_]:
    packed = np.frombuffer(
        _ZSTD.decompress(blob, decompressed_size=(n + 7) // 8, asbytes=True), np.uint8
    )
    return np.unpackbits(packed, count=n).astype(bool)


def encode_text(text: pa.Array) -> bytes:
    sink = pa.BufferOutputStream()
    batch = pa.record_batch([text.cast(pa.string())], names=["t"])
    with pa.ipc.new_stream(
        sink, batch.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")
    ) as w:
        w.write_batch(batch)
    return bytes(sink.getvalue())


def decode_text(blob: bytes) -> pa.Array:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all().column(0).combine_chunks()
