"""Console dashboards over HTTP: compose, save per user or per tenant, export and import JSON.

- ``GET /api/v1/dashboards``: the caller's own dashboards and the tenant's shared ones.
- ``POST /api/v1/dashboards``, ``GET|PUT|DELETE /api/v1/dashboards/{dashboard_id}``.
- ``GET /api/v1/dashboards/{dashboard_id}/export``: a JSON document with a format version.
- ``POST /api/v1/dashboards/import``: a new dashboard from such a document.

A dashboard has a scope: ``user`` (its owner alone sees it; anyone else, in the tenant or not,
gets the same 404 as for a dashboard that does not exist) or ``tenant`` (every user of the
tenant reads it). Reading and keeping one's own dashboards needs ``data.read`` (a viewer may);
creating, changing or deleting a tenant dashboard needs ``registry.write`` for the whole tenant.

Every widget's signals and device must be known to the caller (in its subtree, for a role
bound below an asset): an unknown or hidden one is the same 422 naming the field
(``widgets.2.signals.0``). An imported document is checked the same way; it never brings ids,
owners or tenants with it: the import is a new dashboard of the caller.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from shopfloor.api.deps import get_platform
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E400, E404, E409, E422, Responses, _err
from shopfloor.api.scoping import scope_of
from shopfloor.core.errors import BadInput, Conflict, Forbidden, NotFound
from shopfloor.core.timeutil import now_ns, to_iso
from shopfloor.registry import models as m
from shopfloor.registry.models import NAME_LEN, UNIT_LEN
from shopfloor.security.principal import Principal, Scope
from shopfloor.security.roles import Permission

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "MAX_DASHBOARDS",
    "MAX_SIGNALS",
    "MAX_WIDGETS",
    "router",
]

router = APIRouter(prefix="/api/v1", tags=["dashboards"])

DataRead = Annotated[Scope, Depends(scope_of(Permission.DATA_READ))]
Plat = Annotated[Platform, Depends(get_platform)]
E403: Responses = {403: _err("A tenant dashboard changes only with registry.write tenant-wide")}

FORMAT: Final = "shopfloor.dashboard"
FORMAT_VERSION: Final = 1
MAX_WIDGETS: Final = 24  # per dashboard
MAX_SIGNALS: Final = 8  # per widget
MAX_DASHBOARDS: Final = 500  # per tenant

WidgetKind = Literal[
    "line_chart", "gauge", "value_card", "state_timeline", "alarm_list", "oee_tile"
]
KINDS: Final = ("line_chart", "gauge", "value_card", "state_timeline", "alarm_list", "oee_tile")
# How many signals each kind takes (min, max); state timelines take a device or one signal.
SIGNALS: Final = {
    "line_chart": (1, MAX_SIGNALS),
    "gauge": (1, 1),
    "value_card": (1, 1),
    "state_timeline": (0, 1),
    "alarm_list": (0, 0),
    "oee_tile": (0, 0),
}

Name = Annotated[str, Field(min_length=1, max_length=NAME_LEN)]
Title = Annotated[str, Field(max_length=NAME_LEN)]
SignalKey = Annotated[
    str,
    Field(
        min_length=3,
        max_length=2 * NAME_LEN + 1,
        pattern=r"^[^/]+/[^/].*$",
        description="'<device>/<signal>'",
    ),
]
Range = Annotated[
    str,
    Field(
        pattern=r"^[1-9][0-9]{0,2}[smhd]$",
        description="How far back a chart or timeline looks: '15m', '1h', '7d'",
    ),
]
DashScope = Literal["user", "tenant"]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class WidgetOptions(_In):
    range: Range = "1h"
    min: float | None = Field(None, description="A gauge's lower end (default 0)")
    max: float | None = Field(None, description="A gauge's upper end (default 100)")
    unit: Annotated[str, Field(max_length=UNIT_LEN)] = ""


class Widget(_In):
    kind: WidgetKind
    title: Title = ""
    signals: Annotated[list[SignalKey], Field(max_length=MAX_SIGNALS)] = Field(
        default_factory=list,
        description="line_chart: 1-8; gauge and value_card: exactly 1; state_timeline: 1 or "
        "a device; alarm_list and oee_tile: none",
    )
    device: Name | None = Field(
        None,
        description="state_timeline: the machine (its 'state' signal); alarm_list: only this "
        "device's alarms; oee_tile: this machine (none: the whole site)",
    )
    options: WidgetOptions = Field(default_factory=WidgetOptions)
    w: Annotated[int, Field(ge=1, le=12, description="Width in twelfths of the grid")] = 6
    h: Annotated[int, Field(ge=1, le=4, description="Height in grid rows")] = 1


class DashboardIn(_In):
    name: Name
    scope: DashScope = "user"
    widgets: Annotated[list[Widget], Field(max_length=MAX_WIDGETS)] = Field(default_factory=list)


class DashboardOut(BaseModel):
    id: int
    name: str
    scope: DashScope
    widgets: list[Widget]
    mine: bool = Field(description="The caller owns it (always true for a user dashboard)")
    editable: bool = Field(description="The caller may change or delete it")
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class DashboardList(BaseModel):
    dashboards: list[DashboardOut]


class DashboardDocument(_In):
    """An exported dashboard. ``source`` says where it came from and is never trusted."""

    format: Literal["shopfloor.dashboard"]
    # A strict int, not Literal[1]: a literal takes JSON `true` as 1.
    version: int = Field(description="The format version; this platform reads version 1")
    dashboard: DashboardIn
    source: dict[str, Any] | None = Field(
        None, description="Informational (the exporting dashboard's id and time); ignored."
    )

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"format version {v} is not known here; this platform reads 1")
        return v


# -- who may do what ---------------------------------------------------------------------------


def owner_of(principal: Principal) -> str:
    """The owner key of a caller: its user, or the kind of a credential without one."""
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return principal.kind.value


def _may_change_tenant_boards(scope: Scope) -> bool:
    held = scope.principal.holds(Permission.REGISTRY_WRITE, scope.tenant_id)
    return any(b.asset_id is None for b in held)


def _require_tenant_write(scope: Scope) -> None:
    if not _may_change_tenant_boards(scope):
        raise Forbidden(
            "a tenant dashboard is created, changed or deleted only with the registry.write "
            "permission for the whole tenant; keep it as a user dashboard instead"
        )


def _not_found(dashboard_id: int) -> NotFound:
    return NotFound(f"dashboard {dashboard_id} not found")


def _row(s: Session, scope: Scope, dashboard_id: int) -> m.Dashboard:
    """The dashboard if the caller may see it; another tenant's or another user's private
    dashboard answers exactly like one that does not exist."""
    row = s.scalar(
        select(m.Dashboard).where(
            m.Dashboard.id == dashboard_id, m.Dashboard.tenant_id == scope.tenant_id
        )
    )
    if row is None or (row.scope == "user" and row.owner != owner_of(scope.principal)):
        raise _not_found(dashboard_id)
    return row


def _editable(scope: Scope, row: m.Dashboard) -> bool:
    if row.scope == "tenant":
        return _may_change_tenant_boards(scope)
    return row.owner == owner_of(scope.principal)


def _out(scope: Scope, row: m.Dashboard) -> DashboardOut:
    return DashboardOut(
        id=row.id,
        name=row.name,
        scope="tenant" if row.scope == "tenant" else "user",
        widgets=[Widget.model_validate(w) for w in json.loads(row.widgets)],
        mine=row.owner == owner_of(scope.principal),
        editable=_editable(scope, row),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


# -- the widgets' references -------------------------------------------------------------------


def check_widgets(platform: Platform, scope: Scope, widgets: list[Widget], at: str = "") -> None:
    """Each kind's signals and device, and every named signal and device known to the caller
    (hidden ones are reported as unknown); BadInput names the field."""
    registry = platform.registry
    places = registry.device_assets(scope.tenant_id)
    devices = {d for d, a in places.items() if scope.allows_asset(a)}
    keys = {s.key for s in registry.list_signals(scope.tenant_id) if s.device in devices}
    for i, w in enumerate(widgets):
        here = f"{at}widgets.{i}"
        low, high = SIGNALS[w.kind]
        n = len(w.signals)
        if w.kind == "state_timeline":
            if (w.device is None) == (n == 0) or n > 1:
                raise BadInput(
                    "a state_timeline widget shows one device or one signal: give exactly one",
                    f"{here}.device" if n == 0 else f"{here}.signals",
                )
        elif not low <= n <= high:
            wanted = f"exactly {low}" if low == high else f"{low} to {high}"
            raise BadInput(
                f"a {w.kind} widget takes {wanted} signal(s), not {n}", f"{here}.signals"
            )
        if w.device is not None and w.kind in ("line_chart", "gauge", "value_card"):
            raise BadInput(f"a {w.kind} widget takes signals, not a device", f"{here}.device")
        if len(set(w.signals)) != n:
            raise BadInput("a signal is named twice", f"{here}.signals")
        lo, hi = w.options.min, w.options.max
        if lo is not None and hi is not None and lo >= hi:
            raise BadInput(f"min ({lo}) must be below max ({hi})", f"{here}.options.max")
        for j, key in enumerate(w.signals):
            if key not in keys:
                raise BadInput(f"unknown signal {key!r}", f"{here}.signals.{j}")
        if w.device is not None and w.device not in devices:
            raise BadInput(f"unknown device {w.device!r}", f"{here}.device")


def _widgets_json(widgets: list[Widget]) -> str:
    return json.dumps([w.model_dump(mode="json") for w in widgets])


def _create(platform: Platform, scope: Scope, body: DashboardIn, at: str = "") -> DashboardOut:
    if body.scope == "tenant":
        _require_tenant_write(scope)
    check_widgets(platform, scope, body.widgets, at)
    who = scope.principal.name
    with platform.registry._write() as s:
        count = s.scalar(
            select(func.count(m.Dashboard.id)).where(m.Dashboard.tenant_id == scope.tenant_id)
        )
        if int(count or 0) >= MAX_DASHBOARDS:
            raise Conflict(f"the tenant has {MAX_DASHBOARDS} dashboards, the most it may keep")
        now = m.utcnow()
        row = m.Dashboard(
            tenant_id=scope.tenant_id,
            owner=owner_of(scope.principal),
            scope=body.scope,
            name=body.name,
            widgets=_widgets_json(body.widgets),
            created_by=who,
            created_at=now,
            updated_by=who,
            updated_at=now,
        )
        s.add(row)
        s.flush()
        return _out(scope, row)


# -- routes ------------------------------------------------------------------------------------


@router.get(
    "/dashboards",
    summary="The caller's own dashboards and the tenant's shared ones",
    responses=AUTH,
)
def list_dashboards(scope: DataRead, platform: Plat) -> DashboardList:
    with platform.registry._read() as s:
        rows = s.scalars(
            select(m.Dashboard)
            .where(
                m.Dashboard.tenant_id == scope.tenant_id,
                or_(m.Dashboard.scope == "tenant", m.Dashboard.owner == owner_of(scope.principal)),
            )
            .order_by(m.Dashboard.name, m.Dashboard.id)
        )
        return DashboardList(dashboards=[_out(scope, r) for r in rows])


@router.post(
    "/dashboards",
    summary="Create a dashboard (scope user: the caller's own; tenant: needs registry.write)",
    status_code=status.HTTP_201_CREATED,
    responses={**E400, **AUTH, **E403, **E409, **E422},
)
def create_dashboard(body: DashboardIn, scope: DataRead, platform: Plat) -> DashboardOut:
    return _create(platform, scope, body)


@router.get(
    "/dashboards/{dashboard_id}",
    summary="One dashboard",
    responses={**AUTH, **E404},
)
def get_dashboard(dashboard_id: int, scope: DataRead, platform: Plat) -> DashboardOut:
    with platform.registry._read() as s:
        return _out(scope, _row(s, scope, dashboard_id))


@router.put(
    "/dashboards/{dashboard_id}",
    summary="Replace a dashboard's name, scope and widgets",
    description="A user dashboard changes only by its owner; a tenant dashboard, and moving a "
    "dashboard between the scopes, needs registry.write tenant-wide. A tenant dashboard "
    "moved to the user scope becomes the caller's.",
    responses={**E400, **AUTH, **E403, **E404, **E422},
)
def replace_dashboard(
    dashboard_id: int, body: DashboardIn, scope: DataRead, platform: Plat
) -> DashboardOut:
    with platform.registry._read() as s:
        before = _row(s, scope, dashboard_id)
        old_scope = before.scope
    if old_scope == "tenant" or body.scope == "tenant":
        _require_tenant_write(scope)
    check_widgets(platform, scope, body.widgets)
    with platform.registry._write() as s:
        row = _row(s, scope, dashboard_id)
        if row.scope != old_scope:  # changed meanwhile: decide again
            raise Conflict(f"dashboard {dashboard_id} changed meanwhile; try again")
        if body.scope == "user" and row.scope == "tenant":
            row.owner = owner_of(scope.principal)
        row.scope = body.scope
        row.name = body.name
        row.widgets = _widgets_json(body.widgets)
        row.updated_by = scope.principal.name
        row.updated_at = m.utcnow()
        s.flush()
        return _out(scope, row)


@router.delete(
    "/dashboards/{dashboard_id}",
    summary="Delete a dashboard",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**AUTH, **E403, **E404},
)
def delete_dashboard(dashboard_id: int, scope: DataRead, platform: Plat) -> Response:
    with platform.registry._write() as s:
        row = _row(s, scope, dashboard_id)
        if row.scope == "tenant":
            _require_tenant_write(scope)
        s.delete(row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/dashboards/{dashboard_id}/export",
    summary="A dashboard as a JSON document (format shopfloor.dashboard, version 1)",
    responses={**AUTH, **E404},
)
def export_dashboard(
    dashboard_id: int, scope: DataRead, platform: Plat, response: Response
) -> DashboardDocument:
    with platform.registry._read() as s:
        row = _row(s, scope, dashboard_id)
        board = DashboardIn(
            name=row.name,
            scope="tenant" if row.scope == "tenant" else "user",
            widgets=[Widget.model_validate(w) for w in json.loads(row.widgets)],
        )
    response.headers["Content-Disposition"] = (
        f'attachment; filename="dashboard-{dashboard_id}.json"'
    )
    return DashboardDocument(
        format=FORMAT,
        version=FORMAT_VERSION,
        dashboard=board,
        source={"id": dashboard_id, "exported_at": to_iso(now_ns())},
    )


@router.post(
    "/dashboards/import",
    summary="A new dashboard of the caller from an exported document",
    description="The document is checked like a new dashboard (422 naming the field, e.g. "
    "`dashboard.widgets.1.kind` or `version`); ids, owners and tenants are never taken from "
    "it. A tenant-scoped document needs registry.write tenant-wide.",
    status_code=status.HTTP_201_CREATED,
    responses={**E400, **AUTH, **E403, **E409, **E422},
)
def import_dashboard(body: DashboardDocument, scope: DataRead, platform: Plat) -> DashboardOut:
    return _create(platform, scope, body.dashboard, at="dashboard.")
