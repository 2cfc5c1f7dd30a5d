"""Edge gateways configured from the platform: connectors, sync state and OPC UA browse.

- ``GET /api/v1/gateways``: every device flagged a gateway or holding a remote configuration,
  with its sync state.
- ``GET|PUT /api/v1/gateways/{name}/config``: the connector sections the gateway should run,
  versioned (a PUT names the version it replaces: 409 on a lost update), validated with the
  edge's own parser (422 naming ``connectors.<i>...``), audited as ``gateway.config``. The GET
  is also the gateway's long-poll (``wait_s``, ``after_version``).
- ``POST /api/v1/gateways/{name}/config/status``: the gateway's report (applied version, error).
- ``POST /api/v1/gateways/{name}/browse``, ``GET .../browse/{id}``,
  ``POST .../browse/{id}/result``: an OPC UA browse the gateway runs next to the server.

Secrets in connector sections (any key naming a password, secret, token or key) read back as
``********``; a PUT that sends ``********`` keeps the stored value of the same connector and
field. Only ``?secrets=reveal`` with ``devices.credentials`` (the gateway's tenant key) gets
them, since the gateway must log in to its devices.

Browse requests live in this process's memory (they are short-lived: they expire 10 minutes
after they were made); configurations and reports live in the registry (migration 0007).
See docs/edge-remote-config.md.
"""

from __future__ import annotations

import asyncio
import secrets as _secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api import scoping
from shopfloor.api.deps import get_platform
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E400, E404, E409, E422, Responses, _err
from shopfloor.api.scoping import device_scope, scope_of
from shopfloor.core.errors import BadInput, Conflict, Forbidden, NotFound
from shopfloor.registry.gateway_config import GatewayConfigInfo, GatewayConfigs, Sync
from shopfloor.registry.service import check_name
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

__all__ = ["BROWSE_TTL_S", "MASK", "MAX_WAIT_S", "router"]

router = APIRouter(prefix="/api/v1", tags=["gateways"])

MASK: Final = "********"
MAX_WAIT_S: Final = 30.0
BROWSE_TTL_S: Final = 600.0
BROWSE_REDELIVER_S: Final = 60.0  # a request handed out but not answered is handed out again
MAX_PENDING_BROWSE: Final = 20  # per gateway
MAX_CONNECTORS: Final = 100
MAX_NODES: Final = 10_000

Read = Annotated[Scope, Depends(scope_of(Permission.REGISTRY_READ))]
GwRead = Annotated[Scope, Depends(device_scope(Permission.REGISTRY_READ))]
GwWrite = Annotated[Scope, Depends(device_scope(Permission.REGISTRY_WRITE))]
GwReport = Annotated[Scope, Depends(device_scope(Permission.DATA_WRITE))]
Plat = Annotated[Platform, Depends(get_platform)]
E403: Responses = {403: _err("secrets=reveal needs devices.credentials")}


# -- bodies ------------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class BrowseRequestOut(BaseModel):
    id: str
    endpoint: str
    root: str | None
    max_depth: int


class GatewayOut(BaseModel):
    name: str
    desired_version: int
    applied_version: int | None
    sync: Sync
    error: str | None
    last_seen: datetime | None
    devices: int = Field(description="Devices the gateway acts for (registered under it)")


class ConfigOut(BaseModel):
    name: str
    version: int
    connectors: list[dict[str, Any]] = Field(
        description="Connector sections exactly as in edge.yaml's connectors: list"
    )
    updated_at: datetime | None
    updated_by: str | None
    applied_version: int | None
    sync: Sync
    error: str | None
    last_seen: datetime | None
    browse_requests: list[BrowseRequestOut] = Field(
        description="Browse requests waiting for this gateway"
    )


class ConfigIn(_In):
    connectors: Annotated[list[dict[str, Any]], Field(max_length=MAX_CONNECTORS)]
    expected_version: int = Field(ge=0, description="The version this one replaces")


class StatusIn(_In):
    applied_version: int = Field(ge=0)
    error: str | None = None


class BrowseIn(_In):
    endpoint: str = Field(pattern=r"^opc\.tcp://.+", max_length=2000)
    root: str | None = Field(None, max_length=2000, description="Node id; default Objects")
    max_depth: int = Field(3, ge=1, le=10)


class BrowseCreated(BaseModel):
    id: str
    state: Literal["pending"]


class Node(_In):
    node_id: str
    browse_path: str
    name: str
    data_type: str
    writable: bool


class BrowseResultIn(_In):
    nodes: Annotated[list[Node], Field(max_length=MAX_NODES)] | None = None
    error: str | None = None


class BrowseOut(BaseModel):
    id: str
    state: Literal["pending", "done", "error"]
    error: str | None
    nodes: list[Node]


# -- browse requests (in memory) ---------------------------------------------------------------


@dataclass
class _Browse:
    id: str
    tenant_id: int
    gateway: str
    endpoint: str
    root: str | None
    max_depth: int
    created: float = field(default_factory=time.monotonic)
    delivered: float | None = None
    state: Literal["pending", "done", "error"] = "pending"
    error: str | None = None
    nodes: list[Node] = field(default_factory=list)


class _Store:
    """Browse requests and a change counter per gateway that wakes its long-poll."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.browse: dict[str, _Browse] = {}
        self.changes: dict[tuple[int, str], int] = {}

    def bump(self, tenant_id: int, gateway: str) -> None:
        with self.lock:
            key = (tenant_id, gateway)
            self.changes[key] = self.changes.get(key, 0) + 1

    def change_count(self, tenant_id: int, gateway: str) -> int:
        with self.lock:
            return self.changes.get((tenant_id, gateway), 0)

    def _expire(self) -> None:
        limit = time.monotonic() - BROWSE_TTL_S
        for rid in [r.id for r in self.browse.values() if r.created < limit]:
            del self.browse[rid]

    def add(self, req: _Browse) -> None:
        with self.lock:
            self._expire()
            waiting = [
                r
                for r in self.browse.values()
                if (r.tenant_id, r.gateway, r.state) == (req.tenant_id, req.gateway, "pending")
            ]
            if len(waiting) >= MAX_PENDING_BROWSE:
                raise Conflict(
                    f"gateway {req.gateway!r} has {len(waiting)} browse requests waiting, the "
                    "most it may have; is it running with remote: enabled?"
                )
            self.browse[req.id] = req

    def get(self, tenant_id: int, gateway: str, rid: str) -> _Browse:
        with self.lock:
            self._expire()
            req = self.browse.get(rid)
        if req is None or (req.tenant_id, req.gateway) != (tenant_id, gateway):
            raise NotFound(f"browse request {rid!r} not found")
        return req

    def due(self, tenant_id: int, gateway: str, mark: bool) -> list[_Browse]:
        """Pending requests not handed out yet (or handed out long ago without an answer)."""
        now = time.monotonic()
        with self.lock:
            self._expire()
            out = [
                r
                for r in self.browse.values()
                if (r.tenant_id, r.gateway, r.state) == (tenant_id, gateway, "pending")
                and (r.delivered is None or now - r.delivered > BROWSE_REDELIVER_S)
            ]
            if mark:
                for r in out:
                    r.delivered = now
            return sorted(out, key=lambda r: r.created)


def _store(request: Request) -> _Store:
    store: _Store | None = getattr(request.app.state, "gateway_store", None)
    if store is None:
        store = request.app.state.gateway_store = _Store()
    return store


Store = Annotated[_Store, Depends(_store)]


# -- secrets -----------------------------------------------------------------------------------


def _is_secret(key: str) -> bool:
    k = key.lower()
    return "password" in k or "secret" in k or k in ("token", "api_key", "key_password")


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (MASK if _is_secret(k) and isinstance(v, str) and v else _mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def _keep(new: Any, old: Any, at: str) -> Any:
    """``new`` with every MASK replaced by the stored secret at the same place in ``old``."""
    if isinstance(new, dict):
        out = {}
        for k, v in new.items():
            if v == MASK and _is_secret(k):
                if not isinstance(old, dict) or not isinstance(old.get(k), str):
                    raise BadInput(
                        "a masked secret can be kept only where one was stored before; "
                        "give the secret itself",
                        f"{at}.{k}",
                    )
                out[k] = old[k]
            else:
                out[k] = _keep(v, old.get(k) if isinstance(old, dict) else None, f"{at}.{k}")
        return out
    if isinstance(new, list):
        olds = old if isinstance(old, list) else []
        return [
            _keep(v, olds[i] if i < len(olds) else None, f"{at}.{i}") for i, v in enumerate(new)
        ]
    return new


def _keep_secrets(connectors: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[Any]:
    # Matched by connector name: a reordered list keeps its secrets.
    by_name = {c.get("name"): c for c in stored if isinstance(c, dict)}
    return [
        _keep(c, by_name.get(c.get("name")), f"connectors.{i}") for i, c in enumerate(connectors)
    ]


# -- validation and devices --------------------------------------------------------------------


def _dotted(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _validate(gateway: str, connectors: list[Any]) -> None:
    """The edge's own parser on these sections: BadInput naming the first wrong field."""
    from shopfloor.edge.config import EdgeConfigError
    from shopfloor.edge.remote import validate_remote

    try:
        validate_remote(gateway, connectors)
    except EdgeConfigError as exc:
        first = exc.issues[0] if exc.issues else None
        if first is None:
            raise BadInput("the connectors are not valid", "connectors") from None
        more = f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        raise BadInput(
            f"{first.where}: {first.message}{more}", _dotted(first.loc) or "connectors"
        ) from None


@dataclass(frozen=True)
class _DeviceEntry:
    name: str
    device_type: str | None
    at: str


def _device_entries(connectors: list[Any]) -> list[_DeviceEntry]:
    """Every device entry (a dict with a name in a ``devices`` list) of the sections."""
    out: list[_DeviceEntry] = []

    def walk(value: Any, at: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "devices" and isinstance(v, list):
                    for j, d in enumerate(v):
                        here = f"{at}.devices.{j}"
                        if isinstance(d, dict) and isinstance(d.get("name"), str):
                            dtype = d.get("device_type")
                            if dtype is not None and not isinstance(dtype, str):
                                raise BadInput("device_type must be a name", f"{here}.device_type")
                            out.append(_DeviceEntry(d["name"], dtype, here))
                        walk(d, here)
                else:
                    walk(v, f"{at}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{at}.{i}")

    for i, c in enumerate(connectors):
        walk(c, f"connectors.{i}")
    return out


def _check_devices(platform: Platform, scope: Scope, entries: list[_DeviceEntry]) -> list[str]:
    """Names valid, device types known, existing devices in scope; returns the missing ones."""
    registry = platform.registry
    places = registry.device_assets(scope.tenant_id)
    missing: list[str] = []
    for e in entries:
        try:
            check_name(e.name, "device")
        except BadInput as exc:
            raise BadInput(exc.message, f"{e.at}.name") from None
        if e.device_type is not None:
            try:
                registry.get_device_type(scope.tenant_id, e.device_type)
            except NotFound:
                raise BadInput(
                    f"unknown device type {e.device_type!r}", f"{e.at}.device_type"
                ) from None
        if e.name in places:
            if not scope.allows_asset(places[e.name]):
                raise BadInput(f"unknown device {e.name!r}", f"{e.at}.name")
        elif e.name not in missing:
            missing.append(e.name)
    return missing


def _register(
    platform: Platform, scope: Scope, gateway: GatewayConfigInfo, entries: list[_DeviceEntry]
) -> list[str]:
    """Create the missing devices (with their device type, placed where the gateway is) and
    let the gateway act for every device its sections name; returns the created ones."""
    registry, creds = platform.registry, platform.credentials
    places = registry.device_assets(scope.tenant_id)
    created: list[str] = []
    for e in entries:
        if e.name in places or e.name in created:
            continue
        try:
            registry.create_device(scope.tenant_id, e.name, e.device_type, gateway.asset_id)
        except Conflict:
            continue  # made meanwhile by someone else: fine, it exists
        created.append(e.name)
    owned = creds.gateway_devices(scope.tenant_id, gateway.name)
    names = set(owned or []) | {e.name for e in entries}
    if owned is None or names != set(owned):  # union: devices named before stay owned
        creds.set_gateway(scope.tenant_id, gateway.name, sorted(names))
    return created


# -- answers -----------------------------------------------------------------------------------


def _gateway_out(info: GatewayConfigInfo) -> GatewayOut:
    return GatewayOut(
        name=info.name,
        desired_version=info.version,
        applied_version=info.applied_version,
        sync=info.sync,
        error=info.error,
        last_seen=info.last_seen,
        devices=info.devices,
    )


def _config_out(info: GatewayConfigInfo, browse: list[_Browse], reveal: bool) -> ConfigOut:
    return ConfigOut(
        name=info.name,
        version=info.version,
        connectors=info.connectors if reveal else _mask(info.connectors),
        updated_at=info.updated_at,
        updated_by=info.updated_by,
        applied_version=info.applied_version,
        sync=info.sync,
        error=info.error,
        last_seen=info.last_seen,
        browse_requests=[
            BrowseRequestOut(id=b.id, endpoint=b.endpoint, root=b.root, max_depth=b.max_depth)
            for b in browse
        ],
    )


# -- routes ------------------------------------------------------------------------------------


@router.get("/gateways", summary="Gateways and their configuration sync state", responses=AUTH)
def list_gateways(scope: Read, platform: Plat) -> list[GatewayOut]:
    infos = GatewayConfigs(platform.registry).all(scope.tenant_id)
    return [_gateway_out(i) for i in scoping.visible(scope, infos, lambda i: i.asset_id)]


@router.get(
    "/gateways/{name}/config",
    summary="A gateway's remote configuration (also the gateway's long-poll)",
    description="Version 0 with no connectors when none was set. With `wait_s` the answer "
    "waits (at most 30 s) until the version differs from `after_version` or a browse request "
    "is waiting for the gateway. `secrets=reveal` (needs devices.credentials) shows secrets "
    "unmasked: the gateway's own call.",
    responses={**AUTH, **E403, **E404, **E422},
)
async def get_config(
    name: str,
    scope: GwRead,
    platform: Plat,
    store: Store,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0,
    after_version: Annotated[int | None, Query(ge=0)] = None,
    secrets: Literal["reveal"] | None = None,
) -> ConfigOut:
    reveal = secrets == "reveal"
    if reveal and not scope.principal.holds(Permission.DEVICE_CREDENTIALS, scope.tenant_id):
        raise Forbidden("secrets=reveal needs the devices.credentials permission")
    configs = GatewayConfigs(platform.registry)
    tid = scope.tenant_id
    deadline = time.monotonic() + wait_s
    mark = after_version is not None  # the gateway's poll: what it gets is handed out
    while True:
        changes = store.change_count(tid, name)
        info = await anyio.to_thread.run_sync(configs.get, tid, name)
        due = store.due(tid, name, mark=False)
        woke = after_version is None or info.version != after_version or bool(due)
        if woke or time.monotonic() >= deadline:
            break
        # A change made in this process bumps the counter at once; another API process's
        # change is seen by the next read of the registry, at most a second later.
        recheck = time.monotonic() + 1.0
        while time.monotonic() < min(recheck, deadline):
            await asyncio.sleep(0.1)
            if store.change_count(tid, name) != changes:
                break
    if mark:
        due = store.due(tid, name, mark=True)
    return _config_out(info, due, reveal)


@router.put(
    "/gateways/{name}/config",
    summary="Set a gateway's connectors (a new version)",
    description="Validated with the edge's own parser (422 names the field, e.g. "
    "`connectors.0.connections.0.port`); 409 when `expected_version` is not the current "
    "version. Devices the sections name are registered under the gateway when missing "
    "(with the entry's `device_type`). Audited as gateway.config.",
    responses={**E400, **AUTH, **E404, **E409, **E422},
)
def put_config(
    name: str, body: ConfigIn, scope: GwWrite, platform: Plat, store: Store
) -> ConfigOut:
    configs = GatewayConfigs(platform.registry)
    current = configs.get(scope.tenant_id, name)
    connectors = _keep_secrets(body.connectors, current.connectors)
    _validate(name, connectors)
    entries = _device_entries(connectors)
    _check_devices(platform, scope, entries)
    info = configs.put(
        scope.tenant_id, name, connectors, body.expected_version, scope.principal.name
    )
    created = _register(platform, scope, info, entries)
    platform.audit.record(
        "gateway.config", f"device:{name}", "ok", principal=scope.principal,
        tenant_id=scope.tenant_id,
        details={
            "version": info.version,
            "connectors": [str(c.get("name")) for c in connectors],
            "devices_registered": created,
        },
    )  # fmt: skip
    store.bump(scope.tenant_id, name)
    info = configs.get(scope.tenant_id, name)
    return _config_out(info, store.due(scope.tenant_id, name, mark=False), reveal=False)


@router.post(
    "/gateways/{name}/config/status",
    summary="The gateway's report: the version it runs and the error of its last attempt",
    responses={**E400, **AUTH, **E404, **E422},
)
def report_status(name: str, body: StatusIn, scope: GwReport, platform: Plat) -> GatewayOut:
    info = GatewayConfigs(platform.registry).report(
        scope.tenant_id, name, body.applied_version, body.error
    )
    return _gateway_out(info)


@router.post(
    "/gateways/{name}/browse",
    summary="Ask the gateway to browse an OPC UA server",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**E400, **AUTH, **E404, **E409, **E422},
)
def create_browse(
    name: str, body: BrowseIn, scope: GwWrite, platform: Plat, store: Store
) -> BrowseCreated:
    GatewayConfigs(platform.registry).get(scope.tenant_id, name)  # the device exists
    req = _Browse(
        id=_secrets.token_urlsafe(12),
        tenant_id=scope.tenant_id,
        gateway=name,
        endpoint=body.endpoint,
        root=body.root,
        max_depth=body.max_depth,
    )
    store.add(req)
    store.bump(scope.tenant_id, name)
    return BrowseCreated(id=req.id, state="pending")


@router.get(
    "/gateways/{name}/browse/{browse_id}",
    summary="A browse request and, once done, the nodes found",
    responses={**AUTH, **E404},
)
def get_browse(name: str, browse_id: str, scope: GwRead, store: Store) -> BrowseOut:
    req = store.get(scope.tenant_id, name, browse_id)
    return BrowseOut(id=req.id, state=req.state, error=req.error, nodes=req.nodes)


@router.post(
    "/gateways/{name}/browse/{browse_id}/result",
    summary="The gateway's answer to a browse request: nodes or an error",
    responses={**E400, **AUTH, **E404, **E409, **E422},
)
def post_browse_result(
    name: str, browse_id: str, body: BrowseResultIn, scope: GwReport, store: Store
) -> BrowseOut:
    if (body.nodes is None) == (body.error is None):
        raise BadInput("give either nodes or error", "nodes")
    req = store.get(scope.tenant_id, name, browse_id)
    with store.lock:
        if req.state != "pending":
            raise Conflict(f"browse request {browse_id!r} is answered already")
        if body.error is not None:
            req.state, req.error = "error", body.error
        else:
            req.state, req.nodes = "done", list(body.nodes or [])
    return BrowseOut(id=req.id, state=req.state, error=req.error, nodes=req.nodes)
