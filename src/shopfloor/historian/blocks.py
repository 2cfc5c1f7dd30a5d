"""Turning sorted point columns into encoded block rows, and block rows back into columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.historian import codec

CHUNK_NS: Final = 3_600 * 1_000_000_000  # one block holds one signal's points of one hour
_BAD: Final = np.uint32(2)

BLOCK_COLUMNS: Final = [
    ("tenant_id", "INTEGER"),
    ("signal_id", "INTEGER"),
    ("chunk", "BIGINT"),
    ("n", "INTEGER"),
    ("t_first", "BIGINT"),
    ("t_last", "BIGINT"),
    # Aggregates of the numeric points of good or uncertain quality: the hourly rollup.
    ("agg_count", "INTEGER"),
    ("agg_sum", "DOUBLE"),
    ("agg_min", "DOUBLE"),
    ("agg_max", "DOUBLE"),
    ("agg_first_ts", "BIGINT"),
    ("agg_first", "DOUBLE"),
    ("agg_last_ts", "BIGINT"),
    ("agg_last", "DOUBLE"),
    # The newest point whatever its quality, to seed the latest-value cache at start.
    ("last_value", "DOUBLE"),
    ("last_text", "VARCHAR"),
    ("last_quality", "UINTEGER"),
    ("ts_blob", "BLOB"),
    ("v_blob", "BLOB"),
    ("vmask_blob", "BLOB"),
    ("q_blob", "BLOB"),
    ("text_blob", "BLOB"),
]


@dataclass
class Points:
    """Columns of points, sorted by signal then time unless said otherwise."""

    sid: npt.NDArray[np.int32]
    ts: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]  # NaN where the point has no numeric value
    quality: npt.NDArray[np.uint32]
    text: pa.Array

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def empty() -> Points:
        return Points(
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            np.zeros(0, np.float64),
            np.zeros(0, np.uint32),
            pa.array([], pa.string()),
        )

    @staticmethod
    def from_table(t: pa.Table) -> Points:
        return Points(
            np.asarray(t.column("signal_id"), dtype=np.int32),
            np.asarray(t.column("ts"), dtype=np.int64),
            np.asarray(t.column("value").to_numpy(zero_copy_only=False), dtype=np.float64),
            np.asarray(t.column("quality"), dtype=np.uint32),
            t.column("text").combine_chunks(),
        )

    @staticmethod
    def concat(parts: list[Points]) -> Points:
        if not parts:
            return Points.empty()
        if len(parts) == 1:
            return parts[0]
        return Points(
            np.concatenate([p.sid for p in parts]),
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.quality for p in parts]),
            pa.concat_arrays([p.text for p in parts]),
        )

    def slice(self, start: int, stop: int) -> Points:
        """Rows start..stop as views, no copy."""
        return Points(
            self.sid[start:stop],
            self.ts[start:stop],
            self.value[start:stop],
            self.quality[start:stop],
            self.text.slice(start, stop - start),
        )

    def take(self, idx: npt.NDArray[np.intp]) -> Points:
        return Points(
            self.sid[idx],
            self.ts[idx],
            self.value[idx],
            self.quality[idx],
            self.text.take(pa.array(idx, pa.int64())),
        )

    def newest_wins(self) -> Points:
        """Sort by (signal, ts) keeping, of equal keys, the one that came last in self."""
        n = len(self)
        if not n:
            return self
        # A stable radix sort on the signal keeps arrival order within each signal, which is
        # time order unless points came late: then, and only then, sort on time as well.
        order = np.argsort(self.sid, kind="stable")
        s, t = self.sid[order], self.ts[order]
        if np.any((t[1:] < t[:-1]) & (s[1:] == s[:-1])):
            order = np.lexsort((self.ts, self.sid))  # stable: of equal keys the later stays last
            s, t = self.sid[order], self.ts[order]
        keep = np.append((s[1:] != s[:-1]) | (t[1:] != t[:-1]), True)
        return self.take(order[keep])

    def to_table(self) -> pa.Table:
        from shopfloor.historian.backend import RAW_SCHEMA

        nan = np.isnan(self.value)
        return pa.Table.from_arrays(
            [
                pa.array(self.sid, pa.int32()),
                pa.array(self.ts, pa.int64()),
                pa.array(self.value, pa.float64(), mask=nan if nan.any() else None),
                self.text,
                pa.array(self.quality, pa.uint32()),
            ],
            schema=RAW_SCHEMA,
        )


def encode_block(tenant_id: int, sid: int, chunk: int, p: Points) -> dict[str, Any]:
    """One block row from one signal's points of one chunk (sorted by ts, unique)."""
    n = len(p)
    numeric = ~np.isnan(p.value)
    usable = numeric & ((p.quality >> np.uint32(30)) < _BAD)
    vals = p.value[usable]
    has_text = p.text.null_count < n
    row: dict[str, Any] = {
        "tenant_id": tenant_id,
        "signal_id": sid,
        "chunk": chunk,
        "n": n,
        "t_first": int(p.ts[0]),
        "t_last": int(p.ts[-1]),
        "agg_count": int(usable.sum()),
        "agg_sum": float(vals.sum()) if len(vals) else None,
        "agg_min": float(vals.min()) if len(vals) else None,
        "agg_max": float(vals.max()) if len(vals) else None,
        "agg_first_ts": int(p.ts[usable][0]) if len(vals) else None,
        "agg_first": float(vals[0]) if len(vals) else None,
        "agg_last_ts": int(p.ts[usable][-1]) if len(vals) else None,
        "agg_last": float(vals[-1]) if len(vals) else None,
        "last_value": None if np.isnan(p.value[-1]) else float(p.value[-1]),
        "last_text": p.text[n - 1].as_py(),
        "last_quality": int(p.quality[-1]),
        "ts_blob": codec.encode_ts(p.ts),
        "v_blob": codec.encode_values(p.value[numeric]) if numeric.any() else None,
        "vmask_blob": None if numeric.all() else codec.encode_mask(numeric),
        "q_blob": codec.encode_uints(p.quality),
        "text_blob": codec.encode_text(p.text) if has_text else None,
    }
    return row


def decode_block(
    sid: int,
    n: int,
    ts_blob: bytes,
    v_blob: bytes | None,
    vmask_blob: bytes | None,
    q_blob: bytes,
    text_blob: bytes | None,
) -> Points:
    ts = codec.decode_ts(ts_blob, n)
    value = np.full(n, np.nan)
    if vmask_blob is None:
        if v_blob is not None:
            value = codec.decode_values(v_blob, n)
    elif v_blob is not None:
        mask = codec.decode_mask(vmask_blob, n)
        value[mask] = codec.decode_values(v_blob, int(mask.sum()))
    text = codec.decode_text(text_blob) if text_blob is not None else pa.nulls(n, pa.string())
    return Points(np.full(n, sid, np.int32), ts, value, codec.decode_uints(q_blob, n), text)


def chunk_runs(p: Points) -> list[tuple[int, int, int, int]]:
    """(signal, chunk, start, stop) of each run of one signal's points within one chunk."""
    if not len(p):
        return []
    chunk = (p.ts // CHUNK_NS) * CHUNK_NS
    change = np.flatnonzero((p.sid[1:] != p.sid[:-1]) | (chunk[1:] != chunk[:-1])) + 1
    starts = np.concatenate(([0], change))
    stops = np.concatenate((change, [len(p)]))
    return [
        (int(p.sid[a]), int(chunk[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)
    ]


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    types = {
        "INTEGER": pa.int32(),
        "BIGINT": pa.int64(),
        "DOUBLE": pa.float64(),
        "VARCHAR": pa.string(),
        "UINTEGER": pa.uint32(),
        "BLOB": pa.binary(),
    }
    return pa.table(
        {name: pa.array([r[name] for r in rows], types[t]) for name, t in BLOCK_COLUMNS}
    )
