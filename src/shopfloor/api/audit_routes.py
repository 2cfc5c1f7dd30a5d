"""The audit log over HTTP: read, export, retention settings and purge (docs/audit.md).

Tenant routes (/api/v1/audit/...) show the caller's tenant's records only; the platform
routes (/api/v1/platform/audit/...) need the permission held platform-wide and show every
record. Exports carry each record's HMAC seal (``hash``), so whoever holds the audit key can
verify them offline; the key itself is never served. Export is audited by the route itself (the request middleware records only writes).
None of these routes changes anything with audit.read or audit.export alone: the settings
and purge routes need audit.settings / audit.purge, which the auditor role lacks (roles.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from shopfloor.api.deps import get_platform, need, need_platform, source_of
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E422, ErrorBody, Responses
from shopfloor.core.timeutil import parse_instant
from shopfloor.security.audit import (
    EXPORT_FIELDS,
    MIN_RETENTION_DAYS,
    AuditEntry,
    AuditFilter,
    canonical_json,
)
from shopfloor.security.principal import Principal, Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1", tags=["audit"])

E403: Responses = {403: {"model": ErrorBody, "description": "The caller lacks the permission"}}
Plat = Annotated[Platform, Depends(get_platform)]
TenantRead = Annotated[Scope, Depends(need(Permission.AUDIT_READ))]
TenantExport = Annotated[Scope, Depends(need(Permission.AUDIT_EXPORT))]
PlatformRead = Annotated[Principal, Depends(need_platform(Permission.AUDIT_READ))]
PlatformExport = Annotated[Principal, Depends(need_platform(Permission.AUDIT_EXPORT))]
SettingsAdmin = Annotated[Principal, Depends(need_platform(Permission.AUDIT_SETTINGS))]
Purger = Annotated[Principal, Depends(need_platform(Permission.AUDIT_PURGE))]

_TIME = "RFC 3339, epoch ms, 'now' or relative such as '-7d'"
Since = Annotated[str | None, Query(max_length=64, description=f"From (inclusive): {_TIME}")]
Until = Annotated[str | None, Query(max_length=64, description=f"Up to (exclusive): {_TIME}")]
Actor = Annotated[str | None, Query(min_length=1, max_length=200, description="Exact actor")]
Action = Annotated[
    str | None,
    Query(min_length=1, max_length=200, description="Exact action, or a prefix ending in '*'"),
]
OutcomeQ = Annotated[Literal["ok", "denied", "failed"] | None, Query()]
Limit = Annotated[int, Query(ge=1, le=1000, description="Records per page")]
AfterSeq = Annotated[int, Query(ge=0, le=2**62, description="Only records after this seq (paging)")]
Format = Annotated[Literal["jsonl", "csv"], Query(description="jsonl or csv")]
TenantQ = Annotated[
    int | None, Query(ge=1, le=2**62, description="Only this tenant's records (tenant id)")
]


class AuditRecordOut(BaseModel):
    seq: int
    ts: datetime
    ts_ns: int
    actor: str
    role: str
    tenant_id: int | None
    action: str
    object: str
    outcome: str
    source: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    records: list[AuditRecordOut]
    next_after_seq: int | None = Field(
        description="Pass as after_seq for the next page; null on the last page"
    )


class AuditSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_days: StrictInt = Field(
        ge=MIN_RETENTION_DAYS, le=36500, description="Days audit records are kept (>= 180)"
    )


class AuditSettingsOut(BaseModel):
    retention_days: int
    updated_at: datetime | None
    updated_by: str | None


class PurgeOut(BaseModel):
    removed: int
    up_to_seq: int | None
    anchor: str | None
    retention_days: int


def _filter(
    tenant_id: int | None,
    all_tenants: bool,
    since: str | None,
    until: str | None,
    actor: str | None,
    action: str | None,
    outcome: str | None,
    after_seq: int = 0,
) -> AuditFilter:
    return AuditFilter(
        tenant_id=tenant_id,
        all_tenants=all_tenants,
        since_ns=parse_instant(since, "since") if since else None,
        until_ns=parse_instant(until, "until") if until else None,
        actor=actor,
        action=action,
        outcome=outcome,
        after_seq=after_seq,
    )


def _out(e: AuditEntry) -> AuditRecordOut:
    return AuditRecordOut(**e.as_dict(), ts=e.ts)


def _page(platform: Platform, flt: AuditFilter, limit: int) -> AuditPage:
    # One extra record tells whether another page follows.
    got = platform.audit.records(flt, limit + 1)
    more = len(got) > limit
    got = got[:limit]
    return AuditPage(
        records=[_out(e) for e in got], next_after_seq=got[-1].seq if more and got else None
    )


@router.get(
    "/audit/records",
    summary="Audit records of the caller's tenant (auditor)",
    responses={**AUTH, **E403, **E422},
)
def tenant_records(
    me: TenantRead,
    platform: Plat,
    since: Since = None,
    until: Until = None,
    actor: Actor = None,
    action: Action = None,
    outcome: OutcomeQ = None,
    limit: Limit = 100,
    after_seq: AfterSeq = 0,
) -> AuditPage:
    flt = _filter(me.tenant_id, False, since, until, actor, action, outcome, after_seq)
    return _page(platform, flt, limit)


@router.get(
    "/platform/audit/records",
    summary="Audit records of the whole platform (platform-wide auditor)",
    responses={**AUTH, **E403, **E422},
)
def platform_records(
    me: PlatformRead,
    platform: Plat,
    tenant_id: TenantQ = None,
    since: Since = None,
    until: Until = None,
    actor: Actor = None,
    action: Action = None,
    outcome: OutcomeQ = None,
    limit: Limit = 100,
    after_seq: AfterSeq = 0,
) -> AuditPage:
    flt = _filter(tenant_id, tenant_id is None, since, until, actor, action, outcome, after_seq)
    return _page(platform, flt, limit)


_EXPORT_RESPONSES: Responses = {
    200: {
        "description": "One record per line (JSONL) or row (CSV), with prev_hash and hash",
        "content": {"application/x-ndjson": {}, "text/csv": {}},
    },
    **AUTH,
    **E403,
    **E422,
}


def _stream(platform: Platform, flt: AuditFilter, fmt: str) -> Iterator[str]:
    """Read in pages so a long log never sits in memory (a sync iterator: Starlette runs it
    in its thread pool)."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(EXPORT_FIELDS)
        for e in platform.audit.iter_records(flt):
            row = e.as_dict()
            row["details"] = canonical_json(row["details"])
            row["tenant_id"] = "" if row["tenant_id"] is None else row["tenant_id"]
            writer.writerow([row[f] for f in EXPORT_FIELDS])
            if buf.tell() > 65536:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
    else:
        for e in platform.audit.iter_records(flt):
            yield json.dumps(e.as_dict(), ensure_ascii=False) + "\n"


def _export(
    request: Request,
    platform: Platform,
    principal: Principal,
    flt: AuditFilter,
    fmt: str,
    scope_name: str,
) -> StreamingResponse:
    # Audited before streaming, so a dropped connection cannot leave the export unrecorded.
    platform.audit.record(
        "audit.export",
        f"format={fmt}",
        "ok",
        principal=principal,
        tenant_id=flt.tenant_id,
        source=source_of(request),
        details={
            "scope": scope_name,
            "since_ns": flt.since_ns,
            "until_ns": flt.until_ns,
            "actor": flt.actor,
            "action": flt.action,
            "outcome": flt.outcome,
        },
    )
    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        _stream(platform, flt, fmt),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="shopfloor-audit.{fmt}"'},
    )


@router.get(
    "/audit/export",
    summary="Export the caller's tenant's audit records with their hashes (audited)",
    responses=_EXPORT_RESPONSES,
    response_class=StreamingResponse,
)
def tenant_export(
    request: Request,
    me: TenantExport,
    platform: Plat,
    format: Format = "jsonl",
    since: Since = None,
    until: Until = None,
    actor: Actor = None,
    action: Action = None,
    outcome: OutcomeQ = None,
) -> StreamingResponse:
    flt = _filter(me.tenant_id, False, since, until, actor, action, outcome)
    return _export(request, platform, me.principal, flt, format, "tenant")


@router.get(
    "/platform/audit/export",
    summary="Export the whole audit chain with its seals, verifiable offline with the audit key (audited)",
    responses=_EXPORT_RESPONSES,
    response_class=StreamingResponse,
)
def platform_export(
    request: Request,
    me: PlatformExport,
    platform: Plat,
    format: Format = "jsonl",
    tenant_id: TenantQ = None,
    since: Since = None,
    until: Until = None,
    actor: Actor = None,
    action: Action = None,
    outcome: OutcomeQ = None,
) -> StreamingResponse:
    flt = _filter(tenant_id, tenant_id is None, since, until, actor, action, outcome)
    return _export(request, platform, me, flt, format, "platform")


@router.get(
    "/audit/settings",
    summary="Audit retention (platform-wide security admin)",
    responses={**AUTH, **E403},
)
def get_settings(me: SettingsAdmin, platform: Plat) -> AuditSettingsOut:
    days, at, by = platform.audit.settings_info()
    return AuditSettingsOut(retention_days=days, updated_at=at, updated_by=by)


@router.put(
    "/audit/settings",
    summary="Change the audit retention (>= 180 days; audited with old and new value)",
    responses={**AUTH, **E403, **E422},
)
def put_settings(
    request: Request, body: AuditSettingsIn, me: SettingsAdmin, platform: Plat
) -> AuditSettingsOut:
    platform.audit.set_retention(body.retention_days, principal=me, source=source_of(request))
    days, at, by = platform.audit.settings_info()
    return AuditSettingsOut(retention_days=days, updated_at=at, updated_by=by)


@router.post(
    "/platform/audit/purge",
    summary="Remove audit records past the retention now (platform admin; recorded)",
    responses={**AUTH, **E403},
)
def purge(request: Request, me: Purger, platform: Plat) -> PurgeOut:
    result = platform.audit.purge(principal=me, source=source_of(request))
    return PurgeOut(
        removed=result.removed,
        up_to_seq=result.up_to_seq,
        anchor=result.anchor,
        retention_days=result.retention_days,
    )
