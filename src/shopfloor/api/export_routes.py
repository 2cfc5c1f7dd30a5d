"""GET /api/v1/export: a file download of points, an egress checked against the labels.

The egress policy (security/egress.py) runs before any point is read; a refusal is a 403
naming the blocking signals. The file is written by interop/transfer.export_file (bounded
memory, the same columns as the CLI export) into a private temporary folder, streamed, then
removed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from shopfloor.api.deps import get_platform, need, source_of
from shopfloor.api.platform import Platform
from shopfloor.api.policy_routes import E403
from shopfloor.api.registry_routes import AUTH, E404, E422
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.timeutil import parse_instant
from shopfloor.interop.transfer import export_file
from shopfloor.security.egress import EgressPolicy
from shopfloor.security.labels import LabelService
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1", tags=["data"])

_MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


@router.get(
    "/export",
    summary="Download points as CSV or Parquet (an egress: checked against the labels)",
    description=(
        "Core data is refused; important and personal data need a live approval for this "
        "channel ('export'), destination and destination region (POST /api/v1/egress/"
        "requests). Every decision is audited."
    ),
    responses={
        200: {
            "description": "The points: signal, ts, value, text, quality",
            "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
        },
        **AUTH,
        **E403,
        **E404,
        **E422,
    },
    response_class=FileResponse,
)
def export(
    request: Request,
    me: Annotated[Scope, Depends(need(Permission.DATA_EXPORT))],
    platform: Annotated[Platform, Depends(get_platform)],
    signal: Annotated[list[str], Query(description="device/signal, repeatable", min_length=1)],
    start: Annotated[str, Query(description="RFC 3339, epoch ms, 'now' or '-1h'")] = "-1h",
    end: Annotated[str, Query(description="RFC 3339, epoch ms, 'now' or '-1h'")] = "now",
    format: Annotated[Literal["csv", "parquet"], Query()] = "csv",
    destination: Annotated[
        str, Query(min_length=1, max_length=2000, description="Where the file goes")
    ] = "download",
    destination_region: Annotated[
        str | None, Query(max_length=32, description="Default: this deployment's region")
    ] = None,
) -> FileResponse:
    t0, t1 = parse_instant(start, "start"), parse_instant(end, "end")
    if t1 <= t0:
        raise BadInput("end must be after start", "end")
    keys = list(dict.fromkeys(signal))
    labels = LabelService(platform.registry)
    ids = labels.signal_ids(me.tenant_id, keys)
    if not me.whole_tenant:
        for lab in labels.effective(me.tenant_id, ids).values():
            if not me.allows_asset(lab.asset_id):
                raise NotFound(f"unknown signals: {lab.key}")  # outside the caller's subtree
    policy = EgressPolicy(platform.registry, platform.settings, platform.audit)
    source = source_of(request)
    decision = policy.check(
        me.principal, "export", destination, destination_region, ids, source=source
    )
    folder = Path(tempfile.mkdtemp(prefix="sf-export-"))
    path = folder / f"export.{format}"
    try:
        report = export_file(platform, me.tenant, path, signals=keys, start=t0, end=t1, fmt=format)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    platform.audit.record(
        "data.export",
        f"export:{destination}",
        "ok",
        principal=me.principal,
        tenant_id=me.tenant_id,
        source=source,
        details={
            "signals": len(keys),
            "rows": report.rows,
            "bytes": report.bytes,
            "format": format,
            "approvals": list(decision.approval_ids),
        },
    )
    return FileResponse(
        path,
        media_type=_MEDIA[format],
        filename=f"shopfloor-export.{format}",
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
