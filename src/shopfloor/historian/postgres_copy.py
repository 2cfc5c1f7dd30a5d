"""Recent points in and out of PostgreSQL with numpy, no Python per point.

In: one binary ``COPY ... FROM STDIN`` per group commit. A row of the binary format is a field
count (int16) then, per field, a length (int32, -1 for NULL) and the value in network byte
order. Numeric points have a fixed layout, so a whole batch is one numpy structured array and
one ``tobytes``; only text points (rare: states, batch ids) are packed one by one.

Out: not ``COPY ... TO`` (the server sends one message per row, and reading them cost ~3 us a
row in Python), but one row of byte strings, one per column, built by the server with
``string_agg(int8send(ts), '')`` and the like: one ``np.frombuffer`` per column. A NULL value
comes back as NaN, text as a flag; texts are fetched apart when the flag says there are any.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER: Final = struct.pack("!h", -1)

# Columns of the recent table in COPY order.
RECENT_COLUMNS: Final = ("tenant_id", "signal_id", "ts", "value", "text", "quality", "wseq")

_ROW: Final = np.dtype(
    [
        ("nf", ">i2"),
        ("l_tenant", ">i4"), ("tenant", ">i4"),
        ("l_sid", ">i4"), ("sid", ">i4"),
        ("l_ts", ">i4"), ("ts", ">i8"),
        ("l_value", ">i4"), ("value", ">f8"),
        ("l_text", ">i4"),
        ("l_q", ">i4"), ("q", ">i4"),
        ("l_wseq", ">i4"), ("wseq", ">i8"),
    ]
)  # fmt: skip
_TEXT_HEAD: Final = struct.Struct("!hiiiiiqi")  # nf, tenant, sid, ts, value length
_TEXT_TAIL: Final = struct.Struct("!iiiq")  # quality, wseq


def encode_points(batch: pa.Table, wseq_base: int) -> bytes:
    """A whole COPY ... FROM STDIN (FORMAT binary) payload for a POINT_SCHEMA table.

    Row i gets write sequence ``wseq_base + i``: of two points with the same (signal, ts) the
    one with the greater sequence is the later write.
    """
    n = batch.num_rows
    tenant = np.asarray(batch.column("tenant_id"), dtype=np.int32)
    sid = np.asarray(batch.column("signal_id"), dtype=np.int32)
    ts = np.asarray(batch.column("ts"), dtype=np.int64)
    value = np.asarray(batch.column("value").to_numpy(zero_copy_only=False), dtype=np.float64)
    quality = np.asarray(batch.column("quality"), dtype=np.uint32).view(np.int32)
    wseq = wseq_base + np.arange(n, dtype=np.int64)
    text = batch.column("text")
    has_text = (
        np.zeros(n, dtype=bool)
        if text.null_count == n
        else np.asarray(text.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    )
    plain = ~has_text
    rows = np.empty(int(plain.sum()), dtype=_ROW)
    rows["nf"] = len(RECENT_COLUMNS)
    rows["l_tenant"] = 4
    rows["tenant"] = tenant[plain]
    rows["l_sid"] = 4
    rows["sid"] = sid[plain]
    rows["l_ts"] = 8
    rows["ts"] = ts[plain]
    rows["l_value"] = 8  # a numeric point without a value is stored as NaN
    rows["value"] = value[plain]
    rows["l_text"] = -1
    rows["l_q"] = 4
    rows["q"] = quality[plain]
    rows["l_wseq"] = 8
    rows["wseq"] = wseq[plain]
    parts = [HEADER, rows.tobytes()]
    if has_text.any():
        idx = np.flatnonzero(has_text)
        texts = text.take(pa.array(idx)).to_pylist()
        for i, txt in zip(idx.tolist(), texts, strict=True):
            raw = str(txt).encode()
            v = float(value[i])
            head = _TEXT_HEAD.pack(7, 4, int(tenant[i]), 4, int(sid[i]), 8, int(ts[i]), -1)
            if v == v:  # a text point that also carries a number
                head = head[:-4] + struct.pack("!id", 8, v)
            parts += [head, struct.pack("!i", len(raw)), raw]
            parts.append(_TEXT_TAIL.pack(4, int(quality[i]), 8, int(wseq[i])))
    parts.append(TRAILER)
    return b"".join(parts)


# Reading: one row of byte strings, one per column, each the column's values end to end in
# network byte order (``string_agg`` of ``int8send`` and the like). Every aggregate of one group
# sees the rows in the same order, so the columns line up; no per-row message or object.
_READ_COLUMNS: Final = (
    ("sid", "int4send(signal_id)", ">i4"),
    ("ts", "int8send(ts)", ">i8"),
    ("value", "float8send(coalesce(value, 'NaN'::float8))", ">f8"),
    ("quality", "int4send(quality)", ">i4"),
    ("wseq", "int8send(wseq)", ">i8"),
    ("has_text", "boolsend(text IS NOT NULL)", "u1"),
    ("tenant", "int4send(tenant_id)", ">i4"),
)
READ_SELECT: Final = ", ".join(f"string_agg({expr}, ''::bytea)" for _, expr, _ in _READ_COLUMNS)


class Rows:
    """Recent rows read back by :func:`decode_rows`."""

    def __init__(self, cols: dict[str, npt.NDArray[Any]]) -> None:
        self.sid = np.asarray(cols["sid"], dtype=np.int32)
        self.ts = np.asarray(cols["ts"], dtype=np.int64)
        self.value = np.asarray(cols["value"], dtype=np.float64)
        self.quality = np.asarray(cols["quality"], dtype=np.int32).view(np.uint32)
        self.wseq = np.asarray(cols["wseq"], dtype=np.int64)
        self.has_text = np.asarray(cols["has_text"], dtype=bool)
        self.tenant = np.asarray(cols["tenant"], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.ts)


def decode_rows(row: Sequence[bytes | None]) -> Rows:
    """Columns from the one row of ``SELECT READ_SELECT FROM hist_recent WHERE ...``
    (all NULL when no row matched)."""
    cols = {
        name: np.frombuffer(b"" if raw is None else raw, dtype=dt)
        for (name, _, dt), raw in zip(_READ_COLUMNS, row, strict=True)
    }
    if len({len(c) for c in cols.values()}) != 1:
        raise ValueError("recent columns of different lengths")
    return Rows(cols)
