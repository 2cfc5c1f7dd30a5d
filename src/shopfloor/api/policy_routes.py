"""Data-classification labels and egress approvals over HTTP.

Labels are set by whoever holds ``labels.write`` (the security admin); every change is
audited with its old and new values. Egress approval requests are filed by users who may
export (``data.export``) and decided by a security admin (``egress.approve``), never by the
requester. Rules: security/egress.py and docs/data-classification.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from shopfloor.api.deps import Caller, get_platform, need, source_of
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E404, E409, E422, ErrorBody, Responses
from shopfloor.core.errors import Forbidden, NotFound
from shopfloor.core.types import Classification
from shopfloor.registry.models import LABEL_LEN
from shopfloor.security.egress import MAX_DURATION_S, ApprovalInfo, ApprovalStatus, EgressApprovals
from shopfloor.security.labels import EffectiveLabel, Labels, LabelService
from shopfloor.security.principal import Principal, Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1")

E403: Responses = {
    403: {"model": ErrorBody, "description": "The caller lacks the permission, or may not"}
}
Region = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$", min_length=1, max_length=LABEL_LEN)]
ClassField = Annotated[Classification, Field(strict=False)]
# Ids are SQLite integers: a larger number cannot name anything (and would overflow the driver).
MAX_ID = 2**63 - 1
AssetId = Annotated[int, Path(ge=1, le=MAX_ID)]
RequestId = Annotated[int, Path(ge=1, le=MAX_ID)]

Plat = Annotated[Platform, Depends(get_platform)]
LabelsWrite = Annotated[Scope, Depends(need(Permission.LABELS_WRITE))]
RegistryRead = Annotated[Scope, Depends(need(Permission.REGISTRY_READ))]
Export = Annotated[Scope, Depends(need(Permission.DATA_EXPORT))]
Approve = Annotated[Scope, Depends(need(Permission.EGRESS_APPROVE))]


def need_egress_approve_or_data_export(
    request: Request, principal: Caller, platform: Plat
) -> Scope:
    """Approvers see and revoke the requests inside their scope; exporters their own."""
    try:
        return need(Permission.EGRESS_APPROVE)(request, principal, platform)
    except Forbidden:
        # need() enters the tenant of a platform principal (under an access grant, audited)
        # and keeps the entered principal on request.state: use that one, so a request
        # enters (and audits) once. Not inside a tenant at all: that refusal stands.
        entered: Principal = getattr(request.state, "principal", principal)
        if entered.tenant is None:
            raise
    try:
        return need(Permission.DATA_EXPORT)(request, entered, platform)
    except Forbidden:
        raise Forbidden("this call needs the egress.approve or data.export permission") from None


EgressUser = Annotated[Scope, Depends(need_egress_approve_or_data_export)]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class LabelsIn(_In):
    """The labels set on one object; null (or left out) inherits from above."""

    classification: ClassField | None = None
    personal_data: StrictBool | None = None
    residency: Region | None = None

    def labels(self) -> Labels:
        return Labels(self.classification, self.personal_data, self.residency)


class LabelsOut(BaseModel):
    classification: Classification | None
    personal_data: bool | None
    residency: str | None


class LabelChange(BaseModel):
    object: str = Field(description="asset:<id>, device:<name>, signal:<key> or tenant")
    old: LabelsOut
    new: LabelsOut


class TenantResidencyIn(_In):
    residency: Region | None = Field(description="Default region of the tenant's data; null: none")


class TenantResidencyOut(BaseModel):
    old: str | None
    new: str | None


class EffectiveOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    signal_id: int
    key: str
    classification: Classification
    classification_from: str | None = Field(description="The object that sets the tier")
    personal_data: bool
    personal_data_from: str | None
    residency: str | None
    residency_from: str | None


class EgressRequestIn(_In):
    channel: str = Field(
        "export", pattern=r"^[A-Za-z0-9_]{1,32}$", description="export, webhook, mqtt_bridge"
    )
    destination: str = Field(min_length=1, max_length=2000)
    destination_region: Region | None = Field(None, description="Default: this deployment's")
    signals: list[Annotated[str, Field(min_length=3, max_length=401)]] = Field(
        default_factory=list, max_length=10_000, description="device/signal keys"
    )
    asset_id: StrictInt | None = Field(
        None, ge=1, le=MAX_ID, description="Cover every signal below this asset"
    )
    reason: str = Field(min_length=1, max_length=2000)
    duration_s: StrictInt = Field(ge=60, le=MAX_DURATION_S, description="Approval lifetime")


class EgressRequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    channel: str
    destination: str
    destination_region: str
    signals: list[str]
    assets: list[int]
    duration_s: int
    reason: str
    requested_by: str
    created_at: datetime
    status: ApprovalStatus
    decided_by: str | None
    approved_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


def _out(labels: Labels) -> LabelsOut:
    return LabelsOut.model_validate(labels.as_dict())


def _effective(e: EffectiveLabel) -> EffectiveOut:
    return EffectiveOut.model_validate(e)


def _request(info: ApprovalInfo) -> EgressRequestOut:
    return EgressRequestOut.model_validate(info)


def _approvals(platform: Platform) -> EgressApprovals:
    return EgressApprovals(platform.registry, platform.settings, platform.audit)


def _record_change(
    platform: Platform, scope: Scope, request: Request, obj: str, old: Any, new: Any
) -> None:
    platform.audit.record(
        "labels.set",
        obj,
        "ok",
        principal=scope.principal,
        tenant_id=scope.tenant_id,
        source=source_of(request),
        details={"old": old, "new": new},
    )


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


@router.get(
    "/labels/effective",
    summary="Effective labels of signals, and where each part comes from",
    responses={**AUTH, **E403, **E404, **E422},
    tags=["labels"],
)
def effective_labels(
    me: RegistryRead,
    platform: Plat,
    signal: Annotated[list[str], Query(description="device/signal, repeatable", min_length=1)],
) -> list[EffectiveOut]:
    svc = LabelService(platform.registry)
    # Signals outside the caller's subtree answer exactly as unknown ones.
    ids = svc.scoped_signal_ids(me, list(dict.fromkeys(signal)))
    labels = svc.effective(me.tenant_id, ids)
    return [_effective(labels[sid]) for sid in ids]


@router.put(
    "/labels/assets/{asset_id}",
    summary="Set an asset's labels (inherited by everything below it)",
    responses={**AUTH, **E403, **E404, **E422},
    tags=["labels"],
)
def put_asset_labels(
    asset_id: AssetId, body: LabelsIn, me: LabelsWrite, platform: Plat, request: Request
) -> LabelChange:
    if not me.allows_asset(asset_id):
        raise NotFound(f"asset {asset_id} not found")
    old, new = LabelService(platform.registry).set_asset(me.tenant_id, asset_id, body.labels())
    obj = f"asset:{asset_id}"
    _record_change(platform, me, request, obj, old.as_dict(), new.as_dict())
    return LabelChange(object=obj, old=_out(old), new=_out(new))


@router.put(
    "/labels/devices/{name}",
    summary="Set a device's labels (inherited by its signals)",
    responses={**AUTH, **E403, **E404, **E422},
    tags=["labels"],
)
def put_device_labels(
    name: str, body: LabelsIn, me: LabelsWrite, platform: Plat, request: Request
) -> LabelChange:
    if not me.allows_asset(platform.registry.get_device(me.tenant_id, name).asset_id):
        raise NotFound(f"device {name!r} not found")
    old, new = LabelService(platform.registry).set_device(me.tenant_id, name, body.labels())
    obj = f"device:{name}"
    _record_change(platform, me, request, obj, old.as_dict(), new.as_dict())
    return LabelChange(object=obj, old=_out(old), new=_out(new))


@router.put(
    "/labels/signals/{key:path}",
    summary="Set a signal's labels (null classification stores general)",
    responses={**AUTH, **E403, **E404, **E422},
    tags=["labels"],
)
def put_signal_labels(
    key: str, body: LabelsIn, me: LabelsWrite, platform: Plat, request: Request
) -> LabelChange:
    svc = LabelService(platform.registry)
    svc.scoped_signal_ids(me, [key])  # hidden (outside the subtree) answers as unknown
    old, new = svc.set_signal(me.tenant_id, key, body.labels())
    obj = f"signal:{key}"
    _record_change(platform, me, request, obj, old.as_dict(), new.as_dict())
    return LabelChange(object=obj, old=_out(old), new=_out(new))


@router.put(
    "/labels/tenant",
    summary="Set the tenant's default residency region",
    responses={**AUTH, **E403, **E422},
    tags=["labels"],
)
def put_tenant_residency(
    body: TenantResidencyIn, me: LabelsWrite, platform: Plat, request: Request
) -> TenantResidencyOut:
    if not me.whole_tenant:
        raise Forbidden("the tenant default residency needs labels.write on the whole tenant")
    old, new = LabelService(platform.registry).set_tenant_residency(me.tenant_id, body.residency)
    _record_change(platform, me, request, "tenant", {"residency": old}, {"residency": new})
    return TenantResidencyOut(old=old, new=new)


# ---------------------------------------------------------------------------------------------
# Egress approvals
# ---------------------------------------------------------------------------------------------


@router.post(
    "/egress/requests",
    status_code=201,
    summary="Ask a security admin to approve an egress of important or personal data",
    responses={**AUTH, **E403, **E404, **E422},
    tags=["egress"],
)
def create_egress_request(
    body: EgressRequestIn, me: Export, platform: Plat, request: Request
) -> EgressRequestOut:
    info = _approvals(platform).request(
        me,
        channel=body.channel,
        destination=body.destination,
        destination_region=body.destination_region,
        signals=body.signals,
        asset_id=body.asset_id,
        reason=body.reason,
        duration_s=body.duration_s,
        source=source_of(request),
    )
    return _request(info)


@router.get(
    "/egress/requests",
    summary="Egress requests: those in a security admin's scope, and the caller's own",
    responses={**AUTH, **E403},
    tags=["egress"],
)
def list_egress_requests(me: EgressUser, platform: Plat) -> list[EgressRequestOut]:
    approver = me.permission is Permission.EGRESS_APPROVE
    return [_request(i) for i in _approvals(platform).find(me, approver=approver)]


@router.post(
    "/egress/requests/{request_id}/approve",
    summary="Approve a pending egress request (not one's own); its duration starts now",
    responses={**AUTH, **E403, **E404, **E409, **E422},
    tags=["egress"],
)
def approve_egress_request(
    request_id: RequestId, me: Approve, platform: Plat, request: Request
) -> EgressRequestOut:
    return _request(_approvals(platform).approve(me, request_id, source_of(request)))


@router.post(
    "/egress/requests/{request_id}/reject",
    summary="Reject a pending egress request",
    responses={**AUTH, **E403, **E404, **E409, **E422},
    tags=["egress"],
)
def reject_egress_request(
    request_id: RequestId, me: Approve, platform: Plat, request: Request
) -> EgressRequestOut:
    return _request(_approvals(platform).reject(me, request_id, source_of(request)))


@router.delete(
    "/egress/requests/{request_id}",
    summary="Revoke an egress request or approval (its requester or a security admin)",
    responses={**AUTH, **E403, **E404, **E409, **E422},
    tags=["egress"],
)
def revoke_egress_request(
    request_id: RequestId, me: EgressUser, platform: Plat, request: Request
) -> EgressRequestOut:
    return _request(_approvals(platform).revoke(me, request_id, source_of(request)))
