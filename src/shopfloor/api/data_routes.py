"""Ingest and query endpoints: the data plane of the HTTP API.

JSON reads (``/points``, ``/downsample``, ``/latest``) deliver data inside the platform to an
authenticated user of the tenant (``data.read``): they are not egress. A file download is:
``/points?format=csv`` needs ``data.export`` and passes the egress policy exactly like
``GET /export`` (api/export_routes.check_download; docs/data-classification.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from shopfloor.api import scoping
from shopfloor.api.deps import get_platform
from shopfloor.api.export_routes import audit_download, check_download
from shopfloor.api.ingest_endpoint import ARROW_STREAM, check_length, ingest_body
from shopfloor.api.platform import Platform
from shopfloor.api.responses import JSON
from shopfloor.api.scoping import scope_of
from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import parse_duration, parse_instant
from shopfloor.historian.backend import AGGREGATES, Aggregate
from shopfloor.interop.transfer import rfc3339
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1", tags=["data"])

MAX_BUCKETS: Final = 1_000_000
MAX_RAW: Final = 1_000_000

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"description": "Malformed body"},
    401: {"description": "Missing or unknown API key"},
    403: {"description": "The caller lacks the permission"},
    404: {"description": "Unknown signal"},
    413: {"description": "Body or batch too large"},
    415: {"description": "Unsupported content type"},
    422: {"description": "Invalid value; the error names the field and index"},
    503: {"description": "Storage unavailable; nothing of the batch was stored"},
}

_INGEST_BODY: Final = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {
                        "title": "Columnar batch",
                        "type": "object",
                        "required": ["signal", "ts", "value"],
                        "properties": {
                            "device": {"type": "string"},
                            "ts_unit": {"type": "string", "enum": ["s", "ms", "us", "ns"]},
                            "signal": {"type": "array", "items": {"type": "string"}},
                            "ts": {"type": "array", "items": {"type": ["integer", "string"]}},
                            "value": {"type": "array", "items": {}},
                            "quality": {"type": "array", "items": {}},
                        },
                    },
                    {
                        "title": "Frame batch",
                        "description": "Shared timestamps, one array of values per signal; "
                        "null means no sample of that signal at that time.",
                        "type": "object",
                        "required": ["ts", "values"],
                        "properties": {
                            "device": {"type": "string"},
                            "ts_unit": {"type": "string", "enum": ["s", "ms", "us", "ns"]},
                            "ts": {"type": "array", "items": {"type": ["integer", "string"]}},
                            "values": {
                                "type": "object",
                                "additionalProperties": {"type": "array", "items": {}},
                            },
                        },
                    },
                    {
                        "title": "Row batch",
                        "type": "object",
                        "required": ["points"],
                        "properties": {
                            "device": {"type": "string"},
                            "ts_unit": {"type": "string", "enum": ["s", "ms", "us", "ns"]},
                            "points": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["signal", "ts", "value"],
                                    "properties": {
                                        "signal": {"type": "string"},
                                        "ts": {"type": ["integer", "string"]},
                                        "value": {},
                                        "quality": {},
                                    },
                                },
                            },
                        },
                    },
                ]
            }
        },
        ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
    },
}


@router.post(
    "/ingest",
    summary="Store a batch of points",
    description=(
        "Frame, columnar or row JSON, or an Arrow IPC stream. The answer comes once the batch is "
        "durable. A batch is all-or-nothing: one bad point rejects it with an error naming "
        "the field and index, and nothing of it is stored."
    ),
    responses={200: {"description": "Stored: {'accepted': n}"}, **_ERRORS},
    openapi_extra={"requestBody": _INGEST_BODY},
)
async def ingest(request: Request) -> Response:
    # Normally answered before routing by app.ShopfloorApp (same rules: ingest_body); this
    # route documents ingest and serves a request that reaches the router all the same.
    platform: Platform = request.app.state.platform
    check_length(request.headers.get("content-length"), platform.settings.max_body_bytes)
    body = await request.body()
    check_length(str(len(body)), platform.settings.max_body_bytes)
    device = request.query_params.get("device")
    source = request.client.host if request.client else "-"
    return JSON({"accepted": await ingest_body(platform, request.headers, body, device, source)})


def _window(start: str, end: str) -> tuple[int, int]:
    t0, t1 = parse_instant(start, "start"), parse_instant(end, "end")
    if t1 <= t0:
        raise BadInput("end must be after start", "end")
    return t0, t1


def _resolve(platform: Platform, scope: Scope, keys: list[str]) -> dict[int, str]:
    if not keys:
        raise BadInput("name at least one signal as device/signal", "signal")
    # Signals of devices outside the caller's subtree answer as unknown ones.
    scoping.check_signal_keys(scope, platform.registry, keys)
    ids = platform.registry.resolve_keys(scope.tenant_id, keys)
    return dict(zip(ids.tolist(), keys, strict=True))


def _times(ts: np.ndarray, fmt: str) -> Any:
    if fmt == "ms":
        return ts // 1_000_000
    if fmt == "ns":
        return ts
    return np.char.add(np.datetime_as_string(ts.astype("datetime64[ns]"), unit="ms"), "Z").tolist()


def _series(
    table: pa.Table, names: dict[int, str], time_key: str, time_fmt: str, cols: Sequence[str]
) -> list[dict[str, Any]]:
    """Split a table ordered by signal into one column-object per signal."""
    sid = np.asarray(table.column("signal_id"), dtype=np.int64)
    cuts = np.flatnonzero(np.diff(sid)) + 1
    starts, stops = np.concatenate(([0], cuts)), np.concatenate((cuts, [len(sid)]))
    arrays = {c: table.column(c).to_numpy(zero_copy_only=False) for c in cols}
    ts = np.asarray(table.column(time_key), dtype=np.int64)
    out = []
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        if a == b:
            continue
        item: dict[str, Any] = {"signal": names[int(sid[a])], time_key: _times(ts[a:b], time_fmt)}
        for c in cols:
            col = arrays[c][a:b]
            item[c] = col.tolist() if col.dtype == object else col
        out.append(item)
    return out


TimeFormat = Literal["iso", "ms", "ns"]
Signals = Annotated[list[str], Query(alias="signal", description="device/signal, repeatable")]


@router.get(
    "/points",
    summary="Raw points of one or more signals",
    description=(
        "format=json is a read inside the platform (data.read). format=csv is a file "
        "download, an egress: it also needs data.export and passes the egress policy like "
        "GET /api/v1/export (channel 'export', destination 'download'); audited."
    ),
    responses=_ERRORS,
)
async def points(
    request: Request,
    signal: Signals,
    scope: Annotated[Scope, Depends(scope_of(Permission.DATA_READ))],
    platform: Annotated[Platform, Depends(get_platform)],
    start: Annotated[str, Query(description="RFC 3339, epoch ms, 'now' or '-1h'")] = "-1h",
    end: Annotated[str, Query(description="RFC 3339, epoch ms, 'now' or '-1h'")] = "now",
    limit: Annotated[int, Query(ge=1, le=MAX_RAW)] = 100_000,
    time_format: Annotated[TimeFormat, Query()] = "iso",
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    t0, t1 = _window(start, end)
    if format == "csv":
        return await _csv_download(request, platform, scope, signal, t0, t1, limit)
    names = _resolve(platform, scope, signal)
    table = await asyncio.to_thread(
        platform.historian.query_raw, scope.tenant_id, list(names), t0, t1, limit
    )
    cols = (
        ["value", "text", "quality"]
        if table.column("text").null_count < table.num_rows
        else ["value", "quality"]
    )
    return JSON({"series": _series(table, names, "ts", time_format, cols)})


async def _csv_download(
    request: Request,
    platform: Platform,
    scope: Scope,
    signal: list[str],
    t0: int,
    t1: int,
    limit: int,
) -> Response:
    """Raw points as a CSV file: an egress, checked and audited as GET /export is."""
    # The read scope's principal has entered its tenant already: no second grant use.
    export = scope_of(Permission.DATA_EXPORT)(request, scope.principal, platform)
    if not signal:
        raise BadInput("name at least one signal as device/signal", "signal")
    keys = list(dict.fromkeys(signal))
    ids, decision = await asyncio.to_thread(check_download, platform, export, request, keys)
    table = await asyncio.to_thread(
        platform.historian.query_raw, export.tenant_id, ids, t0, t1, limit
    )
    response = _csv(table, dict(zip(ids, keys, strict=True)))
    details: dict[str, object] = {
        "signals": len(keys),
        "rows": table.num_rows,
        "bytes": len(response.body),
        "format": "csv",
        "route": "points",
    }
    audit_download(platform, export, request, "download", decision, details)
    return response


def signal_keys(sid: np.ndarray, names: dict[int, str]) -> pa.Array:
    """The device/signal key of every row, by a sorted lookup rather than a loop over rows."""
    ids = np.array(sorted(names), dtype=np.int64)
    keys = pa.array([names[int(i)] for i in ids], pa.string())
    return keys.take(pa.array(np.searchsorted(ids, sid)))


def _csv(table: pa.Table, names: dict[int, str]) -> Response:
    sid = np.asarray(table.column("signal_id"), dtype=np.int64)
    out = pa.table(
        {
            "signal": signal_keys(sid, names),
            "ts": rfc3339(table.column("ts")),
            "value": table.column("value"),
            "text": table.column("text"),
            "quality": table.column("quality"),
        }
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(out, sink)
    return Response(bytes(sink.getvalue()), media_type="text/csv")


@router.get("/downsample", summary="Aggregates per time bucket", responses=_ERRORS)
async def downsample(
    signal: Signals,
    scope: Annotated[Scope, Depends(scope_of(Permission.DATA_READ))],
    platform: Annotated[Platform, Depends(get_platform)],
    interval: Annotated[str, Query(description="bucket width: 10s, 1m, 1h, 1d")],
    start: Annotated[str, Query()] = "-1h",
    end: Annotated[str, Query()] = "now",
    agg: Annotated[list[Aggregate], Query(description=f"any of {', '.join(AGGREGATES)}")] = ["avg"],  # noqa: B006
    time_format: Annotated[TimeFormat, Query()] = "iso",
) -> Response:
    t0, t1 = _window(start, end)
    step = parse_duration(interval)
    names = _resolve(platform, scope, signal)
    buckets = (t1 - t0) // step + 1
    if buckets * len(names) > MAX_BUCKETS:
        raise BadInput(
            f"{buckets * len(names)} buckets asked, at most {MAX_BUCKETS}: widen the interval",
            "interval",
        )
    aggs = list(dict.fromkeys(agg))
    table = await asyncio.to_thread(
        platform.historian.query_downsample, scope.tenant_id, list(names), t0, t1, step, aggs
    )
    return JSON({"interval_ns": step, "series": _series(table, names, "bucket", time_format, aggs)})


@router.get("/latest", summary="Newest point of each signal", responses=_ERRORS)
async def latest(
    scope: Annotated[Scope, Depends(scope_of(Permission.DATA_READ))],
    platform: Annotated[Platform, Depends(get_platform)],
    signal: Annotated[list[str] | None, Query(description="device/signal, repeatable")] = None,
    device: Annotated[str | None, Query(description="all signals of this device")] = None,
    time_format: Annotated[TimeFormat, Query()] = "iso",
) -> Response:
    keys = list(signal or [])
    if device:
        scoping.check_device(scope, platform.registry, device)
        keys += [s.key for s in platform.registry.list_signals(scope.tenant_id, device)]
    names = _resolve(platform, scope, keys)
    table = platform.historian.latest(scope.tenant_id, list(names))
    rows = table.to_pylist()
    ts = _times(np.asarray(table.column("ts"), dtype=np.int64), time_format)
    for r, t in zip(rows, list(ts), strict=True):
        r["signal"] = names[r.pop("signal_id")]
        r["ts"] = t
    return JSON({"points": rows})
