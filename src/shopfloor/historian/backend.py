"""The historian backend protocol: what every storage engine (DuckDB, PostgreSQL) provides.

Semantics every backend keeps (the contract suite in tests/historian checks them):

- ``write`` returns only once the batch is durable (committed and synced); concurrent writes
  share commits, so a caller waits at most about one commit interval plus one commit.
- Late and out-of-order points are accepted. A second write of the same (signal, timestamp)
  replaces the first: the last write wins, also within one batch (later row wins).
- Timestamps are int64 nanoseconds UTC; ranges are half-open ``[start, end)``.
- Aggregates (count, sum, avg, min, max, first, last) take points of good or uncertain quality;
  bad points are stored and returned by raw queries but do not enter aggregates.
- Downsampling buckets are aligned to multiples of the interval since the Unix epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Final, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Aggregate = Literal["avg", "min", "max", "first", "last", "count", "sum"]
AGGREGATES: Final[tuple[Aggregate, ...]] = ("avg", "min", "max", "first", "last", "count", "sum")

RAW_SCHEMA: Final = pa.schema(
    [
        pa.field("signal_id", pa.int32()),
        pa.field("ts", pa.int64()),
        pa.field("value", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("quality", pa.uint32()),
    ]
)


def downsample_schema(aggs: Sequence[Aggregate]) -> pa.Schema:
    fields = [pa.field("signal_id", pa.int32()), pa.field("bucket", pa.int64())]
    for a in aggs:
        fields.append(pa.field(a, pa.int64() if a == "count" else pa.float64()))
    return pa.schema(fields)


LATEST_SCHEMA: Final = RAW_SCHEMA


@runtime_checkable
class HistorianBackend(Protocol):
    """A time-series store for point batches (see core.types.POINT_SCHEMA)."""

    def submit(self, batch: pa.Table) -> Future[None]:
        """Queue a batch; the future resolves once it is durable (or fails with StorageError)."""

    def write(self, batch: pa.Table) -> None:
        """Store a batch; return once it is durable. Raises StorageError if it is not."""

    async def write_async(self, batch: pa.Table) -> None:
        """``write`` for the event loop."""

    def query_raw(
        self,
        tenant_id: int,
        signal_ids: npt.NDArray[np.int32] | Sequence[int],
        start: int,
        end: int,
        limit: int | None = None,
    ) -> pa.Table:
        """Points in ``[start, end)``, ordered by signal then time (RAW_SCHEMA)."""

    def query_downsample(
        self,
        tenant_id: int,
        signal_ids: npt.NDArray[np.int32] | Sequence[int],
        start: int,
        end: int,
        interval: int,
        aggs: Sequence[Aggregate],
    ) -> pa.Table:
        """One row per signal and non-empty bucket, ordered by signal then bucket."""

    def latest(self, tenant_id: int, signal_ids: npt.NDArray[np.int32] | Sequence[int]) -> pa.Table:
        """The newest point of each signal that has one (RAW_SCHEMA), from memory."""

    def apply_retention(self, tenant_id: int, before: int) -> int:
        """Delete the tenant's points older than ``before``; returns how many went."""

    def tenant_points(self, tenant_id: int) -> int:
        """Points held for the tenant, recent writes included (for its stored-points quota).

        A point overwritten but not yet compacted may count twice: the figure errs high.
        """

    def compact(self) -> int:
        """Fold recent writes into compressed blocks; returns points compacted."""

    def stats(self) -> dict[str, int | float]:
        """Sizes and counters for status pages and benchmarks."""

    def close(self) -> None:
        """Flush, checkpoint and release files."""
