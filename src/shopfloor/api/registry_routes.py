"""Registry CRUD over HTTP: tenants, assets, device types, devices and signals.

Every route is scoped to the tenant of the caller's API key, except creating and listing
tenants, which need the platform admin key. Registry calls are blocking SQL, so the routes
are plain ``def``: FastAPI runs them in its thread pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api import scoping
from shopfloor.api.deps import get_platform, need_platform
from shopfloor.api.scoping import asset_scope, device_scope, scope_of, signal_scope
from shopfloor.core.types import Classification, DataType
from shopfloor.registry.models import NAME_LEN, UNIT_LEN, AssetLevel
from shopfloor.registry.service import (
    AssetInfo,
    DeviceInfo,
    DeviceTypeInfo,
    Registry,
    SignalInfo,
    SignalSpec,
)
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1")

# ---------------------------------------------------------------------------------------------
# Bodies. Strict, so JSON `false` is not a number and "3" is not an int; enum fields stay lax
# because strict enums only accept enum instances, never the JSON strings.
# ---------------------------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=NAME_LEN)]
Unit = Annotated[str, Field(max_length=UNIT_LEN)]
DataTypeField = Annotated[DataType, Field(strict=False)]
ClassField = Annotated[Classification, Field(strict=False)]
LevelField = Annotated[AssetLevel, Field(strict=False)]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class TenantIn(_In):
    name: Name
    auto_register_signals: bool = True
    retention_days: int | None = Field(None, ge=1, description="Days of history kept; none: all.")


class TenantPatch(_In):
    auto_register_signals: bool | None = None
    retention_days: int | None = Field(None, ge=1, description="null keeps history forever.")


class TenantOut(_Out):
    id: int
    name: str
    auto_register_signals: bool
    retention_days: int | None
    created_at: datetime


class TenantCreated(TenantOut):
    api_key: str = Field(description="Shown only in this response; store it now.")


class AssetIn(_In):
    level: LevelField
    name: Name
    parent_id: int | None = None


class AssetOut(_Out):
    id: int
    level: AssetLevel
    name: str
    parent_id: int | None


class TreeNode(BaseModel):
    id: int
    level: AssetLevel
    name: str
    devices: list[str]
    children: list[TreeNode]


class SignalSpecIn(_In):
    name: Name
    data_type: DataTypeField = DataType.FLOAT
    unit: Unit = ""
    description: str = ""
    classification: ClassField = Classification.GENERAL

    def spec(self) -> SignalSpec:
        return SignalSpec(
            self.name, self.data_type, self.unit, self.description, self.classification
        )


class SignalSpecOut(_Out):
    name: str
    data_type: DataType
    unit: str
    description: str
    classification: Classification


class DeviceTypeIn(_In):
    name: Name
    signals: list[SignalSpecIn] = []
    extends: Name | None = None
    description: str = ""


class DeviceTypeOut(_Out):
    id: int
    name: str
    extends: str | None
    description: str
    signals: list[SignalSpecOut] = Field(description="Effective signals, inherited ones first.")


class DeviceIn(_In):
    name: Name
    device_type: Name | None = None
    asset_id: int | None = None


class DeviceOut(_Out):
    id: int
    name: str
    device_type: str | None
    asset_id: int | None
    created_at: datetime


class SignalPatch(_In):
    unit: Unit | None = None
    description: str | None = None
    classification: ClassField | None = None


class SignalOut(_Out):
    id: int
    key: str = Field(description="'<device>/<signal>'")
    device: str
    name: str
    data_type: DataType
    unit: str
    description: str
    classification: Classification
    created_at: datetime


# ---------------------------------------------------------------------------------------------
# Dependencies and documented error responses
# ---------------------------------------------------------------------------------------------


def get_registry(platform: Annotated[Any, Depends(get_platform)]) -> Registry:
    registry: Registry = platform.registry
    return registry


Reg = Annotated[Registry, Depends(get_registry)]
# The permission each route needs (security/roles.py); the scope's tenant is the caller's.
Read = Annotated[Scope, Depends(scope_of(Permission.REGISTRY_READ))]
Write = Annotated[Scope, Depends(scope_of(Permission.REGISTRY_WRITE))]
TenantSettings = Annotated[Scope, Depends(scope_of(Permission.TENANT_SETTINGS))]
# The same, and the object the path names (asset id, device name, signal key) is inside the
# caller's subtree, else 404 as for an unknown one (api/scoping.py).
AssetRead = Annotated[Scope, Depends(asset_scope(Permission.REGISTRY_READ))]
AssetWrite = Annotated[Scope, Depends(asset_scope(Permission.REGISTRY_WRITE))]
DeviceRead = Annotated[Scope, Depends(device_scope(Permission.REGISTRY_READ))]
DeviceWrite = Annotated[Scope, Depends(device_scope(Permission.REGISTRY_WRITE))]
SignalRead = Annotated[Scope, Depends(signal_scope(Permission.REGISTRY_READ))]
Admin = Depends(need_platform(Permission.TENANTS_MANAGE))


Responses = dict[int | str, dict[str, Any]]


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


AUTH: Responses = {
    401: _err("Missing or unknown credential"),
    403: _err("The caller lacks the permission, or holds it below an asset only"),
}
ADMIN: Responses = {401: _err("Missing API key"), 403: _err("Not the platform admin key")}
E404: Responses = {404: _err("Not found in the caller's tenant")}
E409: Responses = {409: _err("Conflicts with what exists")}
E422: Responses = {422: _err("Invalid input")}
# FastAPI answers 400 itself when a body is not JSON at all.
E400: Responses = {400: _err("The body is not valid JSON")}


# ---------------------------------------------------------------------------------------------
# Tenants
# ---------------------------------------------------------------------------------------------


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Admin],
    summary="Create a tenant (admin); returns its API key once",
    responses={**E400, **ADMIN, **E409, **E422},
    tags=["tenants"],
)
def create_tenant(body: TenantIn, reg: Reg) -> TenantCreated:
    info, key = reg.create_tenant(body.name, body.auto_register_signals, body.retention_days)
    return TenantCreated(**TenantOut.model_validate(info).model_dump(), api_key=key)


@router.get(
    "/tenants",
    dependencies=[Admin],
    summary="List all tenants (admin)",
    responses=ADMIN,
    tags=["tenants"],
)
def list_tenants(reg: Reg) -> list[TenantOut]:
    return [TenantOut.model_validate(t) for t in reg.list_tenants()]


@router.get("/tenant", summary="The caller's own tenant", responses=AUTH, tags=["tenants"])
def get_own_tenant(me: Read) -> TenantOut:
    return TenantOut.model_validate(me.tenant)


@router.patch(
    "/tenant",
    summary="Change the caller's tenant settings",
    responses={**E400, **AUTH, **E422},
    tags=["tenants"],
)
def patch_own_tenant(body: TenantPatch, me: TenantSettings, reg: Reg) -> TenantOut:
    scoping.require_whole_tenant(me, "changing tenant settings")
    # An explicit null retention clears it; the service spells that 0.
    retention = body.retention_days
    if "retention_days" in body.model_fields_set and retention is None:
        retention = 0
    info = reg.update_tenant(
        me.tenant_id, auto_register_signals=body.auto_register_signals, retention_days=retention
    )
    return TenantOut.model_validate(info)


# ---------------------------------------------------------------------------------------------
# Hierarchy
# ---------------------------------------------------------------------------------------------


@router.post(
    "/assets",
    status_code=status.HTTP_201_CREATED,
    summary="Add an asset to the ISA-95 hierarchy",
    description="The level must be the one right below the parent's; an enterprise has none.",
    responses={**E400, **AUTH, **E404, **E409, **E422},
    tags=["hierarchy"],
)
def create_asset(body: AssetIn, me: Write, reg: Reg) -> AssetOut:
    scoping.check_placement(me, body.parent_id, "a top-level asset")
    return _asset(reg.create_asset(me.tenant_id, body.level, body.name, body.parent_id))


@router.get("/assets", summary="List assets", responses=AUTH, tags=["hierarchy"])
def list_assets(me: Read, reg: Reg) -> list[AssetOut]:
    return [_asset(a) for a in scoping.visible(me, reg.list_assets(me.tenant_id), _asset_id)]


@router.get(
    "/assets/{asset_id}", summary="One asset", responses={**AUTH, **E404}, tags=["hierarchy"]
)
def get_asset(asset_id: int, me: AssetRead, reg: Reg) -> AssetOut:
    return _asset(reg.get_asset(me.tenant_id, asset_id))


@router.delete(
    "/assets/{asset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an asset without children or devices",
    responses={**AUTH, **E404, **E409},
    tags=["hierarchy"],
)
def delete_asset(asset_id: int, me: AssetWrite, reg: Reg) -> Response:
    reg.delete_asset(me.tenant_id, asset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/tree",
    summary="The whole hierarchy, nested, with devices under their asset",
    responses=AUTH,
    tags=["hierarchy"],
)
def get_tree(me: Read, reg: Reg) -> list[TreeNode]:
    return [TreeNode.model_validate(n) for n in scoping.visible_tree(me, reg.tree(me.tenant_id))]


def _asset(a: AssetInfo) -> AssetOut:
    return AssetOut.model_validate(a)


def _asset_id(a: AssetInfo) -> int:
    return a.id


# ---------------------------------------------------------------------------------------------
# Device types
# ---------------------------------------------------------------------------------------------


@router.post(
    "/device-types",
    status_code=status.HTTP_201_CREATED,
    summary="Create a device type (a template of signals), optionally extending another",
    responses={**E400, **AUTH, **E404, **E409, **E422},
    tags=["devices"],
)
def create_device_type(body: DeviceTypeIn, me: Write, reg: Reg) -> DeviceTypeOut:
    # Types are tenant-wide templates (every subtree sees them), so only a tenant-wide
    # binding defines them.
    scoping.require_whole_tenant(me, "creating a device type")
    specs = [s.spec() for s in body.signals]
    info = reg.create_device_type(me.tenant_id, body.name, specs, body.extends, body.description)
    return _type(info)


@router.get("/device-types", summary="List device types", responses=AUTH, tags=["devices"])
def list_device_types(me: Read, reg: Reg) -> list[DeviceTypeOut]:
    return [_type(t) for t in reg.list_device_types(me.tenant_id)]


@router.get(
    "/device-types/{name}",
    summary="One device type with its effective signals",
    responses={**AUTH, **E404},
    tags=["devices"],
)
def get_device_type(name: str, me: Read, reg: Reg) -> DeviceTypeOut:
    return _type(reg.get_device_type(me.tenant_id, name))


def _type(t: DeviceTypeInfo) -> DeviceTypeOut:
    return DeviceTypeOut.model_validate(t)


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


@router.post(
    "/devices",
    status_code=status.HTTP_201_CREATED,
    summary="Add a device; from a device type it gets the type's signals",
    responses={**E400, **AUTH, **E404, **E409, **E422},
    tags=["devices"],
)
def create_device(body: DeviceIn, me: Write, reg: Reg) -> DeviceOut:
    scoping.check_placement(me, body.asset_id, "an unplaced device")
    return _device(reg.create_device(me.tenant_id, body.name, body.device_type, body.asset_id))


@router.get("/devices", summary="List devices", responses=AUTH, tags=["devices"])
def list_devices(me: Read, reg: Reg) -> list[DeviceOut]:
    return [_device(d) for d in scoping.visible_devices(me, reg.list_devices(me.tenant_id))]


@router.get("/devices/{name}", summary="One device", responses={**AUTH, **E404}, tags=["devices"])
def get_device(name: str, me: DeviceRead, reg: Reg) -> DeviceOut:
    return _device(reg.get_device(me.tenant_id, name))


@router.delete(
    "/devices/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a device; one with signals only with force=true",
    responses={**AUTH, **E404, **E409},
    tags=["devices"],
)
def delete_device(
    name: str,
    me: DeviceWrite,
    reg: Reg,
    force: Annotated[bool, Query(description="Also delete the device's signals.")] = False,
) -> Response:
    reg.delete_device(me.tenant_id, name, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _device(d: DeviceInfo) -> DeviceOut:
    return DeviceOut.model_validate(d)


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


@router.post(
    "/devices/{name}/signals",
    status_code=status.HTTP_201_CREATED,
    summary="Add a signal to a device",
    responses={**E400, **AUTH, **E404, **E409, **E422},
    tags=["signals"],
)
def create_signal(name: str, body: SignalSpecIn, me: DeviceWrite, reg: Reg) -> SignalOut:
    return _signal(reg.create_signal(me.tenant_id, name, body.spec()))


@router.get(
    "/devices/{name}/signals",
    summary="List a device's signals",
    responses={**AUTH, **E404},
    tags=["signals"],
)
def list_device_signals(name: str, me: DeviceRead, reg: Reg) -> list[SignalOut]:
    return [_signal(s) for s in reg.list_signals(me.tenant_id, name)]


@router.get("/signals", summary="List all signals of the tenant", responses=AUTH, tags=["signals"])
def list_signals(me: Read, reg: Reg) -> list[SignalOut]:
    return [_signal(s) for s in scoping.visible_signals(me, reg, reg.list_signals(me.tenant_id))]


@router.get(
    "/signals/{key:path}",
    summary="One signal by '<device>/<signal>' key or numeric id",
    responses={**AUTH, **E404, **E422},
    tags=["signals"],
)
def get_signal(key: str, me: SignalRead, reg: Reg) -> SignalOut:
    return _signal(reg.get_signal(me.tenant_id, key))


@router.patch(
    "/signals/{key:path}",
    summary="Change a signal's unit, description or classification",
    description="The data type cannot change: stored history depends on it.",
    responses={
        **E400,
        **AUTH,
        **E404,
        **E422,
        403: _err("Changing classification needs labels.write"),
    },
    tags=["signals"],
    # A signal outside the caller's subtree answers as an unknown one (api/scoping.py).
    dependencies=[Depends(signal_scope(Permission.REGISTRY_WRITE))],
)
def patch_signal(
    key: str,
    body: SignalPatch,
    me: Write,
    reg: Reg,
    platform: Annotated[Any, Depends(get_platform)],
) -> SignalOut:
    # A classification is a security label: changing it is the security admin's (labels.write,
    # PUT /api/v1/labels/signals/{key}), and is audited; an unchanged one passes.
    from shopfloor.security.labels import classification_change

    change = classification_change(reg, me, key, body.classification)
    info = reg.update_signal(
        me.tenant_id,
        key,
        unit=body.unit,
        description=body.description,
        classification=body.classification,
    )
    if change is not None:
        platform.audit.record(
            "labels.set", f"signal:{info.key}", "ok", principal=me.principal,
            tenant_id=me.tenant_id, details={"old": change[0], "new": change[1]},
        )  # fmt: skip
    return _signal(info)


def _signal(s: SignalInfo) -> SignalOut:
    return SignalOut.model_validate(s)
