"""In-memory latest value per signal, updated after each commit so it never runs ahead of storage.

A scan for the last value of 1,000 series takes ~55 ms in DuckDB; the cache answers in
microseconds. Arrays are indexed by signal id (ids are dense small integers from the registry).
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.historian.backend import RAW_SCHEMA

_NO_TS = np.iinfo(np.int64).min


def newest_rows(sid: npt.NDArray[np.int32], ts: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Per signal, the row with the greatest timestamp; on a tie the later row, because
    lexsort is stable (a third key for the row order doubled the cost of every commit)."""
    order = np.lexsort((ts, sid))
    s = sid[order]
    newest: npt.NDArray[np.intp] = order[np.append(s[1:] != s[:-1], True)]
    return newest


class LatestCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenant = np.full(0, -1, dtype=np.int32)
        self._ts = np.full(0, _NO_TS, dtype=np.int64)
        self._value = np.full(0, np.nan, dtype=np.float64)
        self._quality = np.zeros(0, dtype=np.uint32)
        self._text: dict[int, str | None] = {}

    def _grow(self, top: int) -> None:
        size = len(self._ts)
        if top < size:
            return
        new = max(top + 1, size * 2, 1024)
        self._tenant = np.concatenate([self._tenant, np.full(new - size, -1, np.int32)])
        self._ts = np.concatenate([self._ts, np.full(new - size, _NO_TS, np.int64)])
        self._value = np.concatenate([self._value, np.full(new - size, np.nan)])
        self._quality = np.concatenate([self._quality, np.zeros(new - size, np.uint32)])

    def clear(self) -> None:
        with self._lock:
            self._tenant[:] = -1
            self._ts[:] = _NO_TS
            self._value[:] = np.nan
            self._quality[:] = 0
            self._text.clear()

    def update(
        self, batch: pa.Table | pa.RecordBatch, last: npt.NDArray[np.intp] | None = None
    ) -> None:
        """Fold a committed batch in: per signal its newest point; ties go to the later row.
        ``last``: those rows, when the caller found them already (:func:`newest_rows`)."""
        n = batch.num_rows
        if not n:
            return
        sid = np.asarray(batch.column("signal_id"), dtype=np.int32)
        ts = np.asarray(batch.column("ts"), dtype=np.int64)
        if last is None:
            last = newest_rows(sid, ts)
        self._apply(
            np.asarray(batch.column("tenant_id"), dtype=np.int32)[last],
            sid[last],
            ts[last],
            np.asarray(batch.column("value").to_numpy(zero_copy_only=False), dtype=np.float64)[
                last
            ],
            np.asarray(batch.column("quality"), dtype=np.uint32)[last],
            batch.column("text").take(pa.array(last)),
        )

    def apply_numbers(
        self,
        tenant: npt.NDArray[np.int32],
        sid: npt.NDArray[np.int32],
        ts: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint32],
    ) -> None:
        """Fold in points without text, at most one per signal (another process's commit,
        announced by the PostgreSQL historian); older than what is held changes nothing."""
        if len(sid):
            self._apply(tenant, sid, ts, value, quality, pa.nulls(len(sid), pa.string()))

    def _apply(
        self,
        tenant: npt.NDArray[np.int32],
        sid: npt.NDArray[np.int32],
        ts: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint32],
        text: pa.Array | pa.ChunkedArray,
    ) -> None:
        with self._lock:
            self._grow(int(sid.max()))
            newer = ts >= self._ts[sid]
            s = sid[newer]
            self._tenant[s] = tenant[newer]
            self._ts[s] = ts[newer]
            self._value[s] = value[newer]
            self._quality[s] = quality[newer]
            if text.null_count == len(text) and not self._text:
                return  # the usual commit: numbers only, and no text signal known
            has_text = np.asarray(text.is_valid(), dtype=bool)
            # Only points that set a text, or replace one with a number, touch the dict.
            touched = newer & (has_text | np.isin(sid, np.fromiter(self._text, np.int64)))
            texts = text.take(pa.array(np.flatnonzero(touched))).to_pylist()
            for key, txt in zip(sid[touched].tolist(), texts, strict=True):
                if txt is None:
                    self._text.pop(key, None)
                else:
                    self._text[key] = txt

    def drain(
        self,
    ) -> tuple[
        npt.NDArray[np.int32],
        npt.NDArray[np.int32],
        npt.NDArray[np.int64],
        npt.NDArray[np.float64],
        npt.NDArray[np.uint32],
        npt.NDArray[np.bool_],
    ]:
        """Every signal held (tenant, signal, ts, value, quality, whether its newest point is
        a text), then forget them all: the PostgreSQL historian's values not yet announced."""
        with self._lock:
            sid = np.flatnonzero(self._ts != _NO_TS).astype(np.int32)
            out = (
                self._tenant[sid],
                sid,
                self._ts[sid],
                self._value[sid],
                self._quality[sid],
                np.isin(sid, np.fromiter(self._text, np.int64, len(self._text))),
            )
            self._tenant[sid] = -1
            self._ts[sid] = _NO_TS
            self._value[sid] = np.nan
            self._quality[sid] = 0
            self._text.clear()
            return out

    def load(self, table: pa.Table) -> None:
        """Seed from storage: a table with tenant_id, signal_id, ts, value, text, quality."""
        if table.num_rows:
            self.update(table)

    def get(self, tenant_id: int, signal_ids: npt.NDArray[np.int32]) -> pa.Table:
        with self._lock:
            ids = signal_ids[(signal_ids >= 0) & (signal_ids < len(self._ts))]
            ids = ids[(self._tenant[ids] == tenant_id) & (self._ts[ids] != _NO_TS)]
            texts = [self._text.get(int(i)) for i in ids] if self._text else None
            value = self._value[ids]
            return pa.Table.from_arrays(
                [
                    pa.array(ids, pa.int32()),
                    pa.array(self._ts[ids]),
                    pa.array(value, mask=np.isnan(value)),
                    pa.array(texts, pa.string()) if texts else pa.nulls(len(ids), pa.string()),
                    pa.array(self._quality[ids]),
                ],
                schema=RAW_SCHEMA,
            )
