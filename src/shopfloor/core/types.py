"""The point batch: the one columnar shape data takes from ingest to the historian.

A batch is a ``pyarrow.Table`` with :data:`POINT_SCHEMA`. Every layer passes whole
batches; nothing on the hot path handles single points in Python.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.core.errors import BadInput
from shopfloor.core.kinds import Classification, DataType

__all__ = ["MIN_TS_NS", "POINT_SCHEMA", "Classification", "DataType", "empty_batch", "make_batch"]


POINT_SCHEMA: Final = pa.schema(
    [
        pa.field("tenant_id", pa.int32(), nullable=False),
        pa.field("signal_id", pa.int32(), nullable=False),
        # Nanoseconds since the Unix epoch, UTC. Never naive.
        pa.field("ts", pa.int64(), nullable=False),
        # float, int (exact to 2**53) and bool (0/1) values; null for string points.
        pa.field("value", pa.float64()),
        # String values; null for numeric points.
        pa.field("text", pa.string()),
        # OPC UA status code, see core.quality.
        pa.field("quality", pa.uint32(), nullable=False),
    ]
)

# Timestamps accepted: 1970-01-01 up to 2262-04-11 (the int64 nanosecond range), and in practice
# nothing before 1990 or more than a day in the future of the server clock is plausible data.
MIN_TS_NS: Final = 631_152_000_000_000_000  # 1990-01-01T00:00:00Z


def make_batch(
    tenant_id: int,
    signal_ids: npt.ArrayLike,
    ts_ns: npt.ArrayLike,
    values: npt.ArrayLike | None = None,
    quality: npt.ArrayLike | None = None,
    text: pa.Array | list[str | None] | None = None,
) -> pa.Table:
    """Build a validated point batch from columns (no per-point Python work)."""
    sid = np.ascontiguousarray(signal_ids, dtype=np.int32)
    ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
    n = len(sid)
    if len(ts) != n:
        raise BadInput(f"{len(ts)} timestamps for {n} signals", "ts")
    if values is None:
        val = pa.nulls(n, pa.float64())
    else:
        arr = np.ascontiguousarray(values, dtype=np.float64)
        if len(arr) != n:
            raise BadInput(f"{len(arr)} values for {n} points", "value")
        val = pa.array(arr, type=pa.float64())
    if quality is None:
        q = pa.array(np.zeros(n, dtype=np.uint32))
    else:
        qa = np.ascontiguousarray(quality, dtype=np.uint32)
        if len(qa) != n:
            raise BadInput(f"{len(qa)} quality codes for {n} points", "quality")
        q = pa.array(qa)
    txt = pa.nulls(n, pa.string()) if text is None else pa.array(text, type=pa.string())
    return pa.Table.from_arrays(
        [pa.array(np.full(n, tenant_id, dtype=np.int32)), pa.array(sid), pa.array(ts), val, txt, q],
        schema=POINT_SCHEMA,
    )


def empty_batch() -> pa.Table:
    return POINT_SCHEMA.empty_table()
