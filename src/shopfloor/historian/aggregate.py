"""Bucket aggregation over sorted columns, and merging of partial aggregates.

Raw points and the hourly rollups stored with each block are both "partials": per signal and
bucket a count, sum, min, max, first and last. A downsample query collects partials from
whichever source covers each hour and combines them here, vectorised with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.historian.backend import Aggregate, downsample_schema
from shopfloor.historian.blocks import Points

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass
class Partials:
    sid: npt.NDArray[np.int32]
    bucket: I64
    count: I64
    sum: F64
    min: F64
    max: F64
    first_ts: I64
    first: F64
    last_ts: I64
    last: F64

    @staticmethod
    def from_points(p: Points, interval: int) -> Partials:
        """Each usable point (numeric, not bad) becomes a partial of count 1."""
        ok = ~np.isnan(p.value) & ((p.quality >> np.uint32(30)) < 2)
        v, ts = p.value[ok], p.ts[ok]
        return Partials(
            p.sid[ok], (ts // interval) * interval, np.ones(len(v), np.int64),
            v, v, v, ts, v, ts, v,
        )  # fmt: skip

    @staticmethod
    def concat(parts: Sequence[Partials]) -> Partials:
        fields = Partials.__dataclass_fields__
        return Partials(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})

    def combine(self) -> Partials:
        """Merge rows with equal (signal, bucket)."""
        n = len(self.sid)
        if not n:
            return self
        order = np.lexsort((self.first_ts, self.bucket, self.sid))
        sid, bucket = self.sid[order], self.bucket[order]
        starts = np.flatnonzero(
            np.concatenate(([True], (sid[1:] != sid[:-1]) | (bucket[1:] != bucket[:-1])))
        )
        first_ts = self.first_ts[order]
        # last: within each group the row with the greatest last_ts.
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
        by_last = np.lexsort((self.last_ts[order], group))
        ends = np.append(starts[1:], n) - 1
        last_rows = order[by_last[ends]]
        return Partials(
            sid[starts],
            bucket[starts],
            np.add.reduceat(self.count[order], starts),
            np.add.reduceat(self.sum[order], starts),
            np.minimum.reduceat(self.min[order], starts),
            np.maximum.reduceat(self.max[order], starts),
            first_ts[starts],
            self.first[order][starts],
            self.last_ts[last_rows],
            self.last[last_rows],
        )

    def to_table(self, aggs: Sequence[Aggregate]) -> pa.Table:
        cols: dict[str, npt.NDArray[np.generic]] = {
            "count": self.count,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "first": self.first,
            "last": self.last,
        }
        arrays = [pa.array(self.sid, pa.int32()), pa.array(self.bucket, pa.int64())]
        for a in aggs:
            arrays.append(pa.array(self.sum / self.count if a == "avg" else cols[a]))
        return pa.Table.from_arrays(arrays, schema=downsample_schema(aggs))


def empty_partials() -> Partials:
    z = np.zeros(0, np.int64)
    f = np.zeros(0, np.float64)
    return Partials(np.zeros(0, np.int32), z, z, f, f, f, z, f, z, f)
