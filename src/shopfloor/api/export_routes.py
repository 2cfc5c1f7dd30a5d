"""GET /api/v1/export: a file download of points, an egress checked against the labels.

The egress policy (security/egress.py) runs before any point is read; a refusal is a 403
naming the blocking signals. The file is written by interop/transfer.export_file (bounded
memory, the same columns as the CLI export) into a private temporary folder, streamed, then
removed.

Every HTTP file download (this route and ``GET /points?format=csv``) goes through
:func:`check_download` and :func:`audit_download`: channel ``export``, the destination region
always this deployment's (the file goes to the caller), audited as ``egress`` and
``data.export``.
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
from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import parse_instant
from shopfloor.interop.transfer import export_file
from shopfloor.security.egress import Decision, EgressPolicy
from shopfloor.security.labels import LabelService
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1", tags=["data"])

_MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def check_download(
    platform: Platform,
    scope: Scope,
    request: Request,
    keys: list[str],
    destination: str = "download",
    destination_region: str | None = None,
) -> tuple[list[int], Decision]:
    """The signal ids of an HTTP file download, once the egress policy allowed it.

    Keys outside the caller's subtree answer as unknown ones; a destination region other
    than this deployment's is a 422 (``EgressPolicy.download_region``); the decision is
    audited and a refusal raised (403) before any point is read."""
    ids = LabelService(platform.registry).scoped_signal_ids(scope, keys)
    policy = EgressPolicy(platform.registry, platform.settings, platform.audit)
    region = policy.download_region(destination_region)
    decision = policy.check(
        scope.principal, "export", destination, region, ids, source=source_of(request)
    )
    return ids, decision


def audit_download(
    platform: Platform,
    scope: Scope,
    request: Request,
    destination: str,
    decision: Decision,
    details: dict[str, object],
) -> None:
    """The ``data.export`` record of a download that was sent (rows, bytes, format, ...)."""
    platform.audit.record(
        "data.export",
        f"export:{destination}",
        "ok",
        principal=scope.principal,
        tenant_id=scope.tenant_id,
        source=source_of(request),
        details={**details, "approvals": list(decision.approval_ids)},
    )


@router.get(
    "/export",
    summary="Download points as CSV or Parquet (an egress: checked against the labels)",
    description=(
        "Core data is refused; important and personal data need a live approval for this "
        "channel ('export'), destination and this deployment's region (POST /api/v1/egress/"
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
        str | None,
        Query(
            max_length=32,
            description="Only this deployment's region (the default): a download goes to "
            "the caller; any other region is a 422",
        ),
    ] = None,
) -> FileResponse:
    t0, t1 = parse_instant(start, "start"), parse_instant(end, "end")
    if t1 <= t0:
        raise BadInput("end must be after start", "end")
    keys = list(dict.fromkeys(signal))
    _, decision = check_download(platform, me, request, keys, destination, destination_region)
    folder = Path(tempfile.mkdtemp(prefix="sf-export-"))
    path = folder / f"export.{format}"
    try:
        report = export_file(platform, me.tenant, path, signals=keys, start=t0, end=t1, fmt=format)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    audit_download(
        platform,
        me,
        request,
        destination,
        decision,
        {"signals": len(keys), "rows": report.rows, "bytes": report.bytes, "format": format},
    )
    return FileResponse(
        path,
        media_type=_MEDIA[format],
        filename=f"shopfloor-export.{format}",
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
