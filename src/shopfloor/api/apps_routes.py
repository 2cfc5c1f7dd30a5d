"""The app catalogue over HTTP, and the apps' own read-only routes.

- ``GET /api/v1/apps``: the installed apps with the caller's tenant's choice and status.
- ``GET /api/v1/apps/{name}``: one app: manifest, config, its JSON schema, status, routes,
  panels.
- ``PUT /api/v1/apps/{name}``: enable (with a config, checked by the app) or disable
  (``apps.manage``).
- ``GET /api/v1/apps/{name}/events``: the app's recent events.
- ``GET /api/v1/apps/<app>/<path>``: each installed app's routes (``App.routes``), wrapped
  here with authentication (``data.read``) and the tenant's instance, so an app never sees
  another tenant or a request.

Apps work on the whole tenant (an OEE roll-up spans every line), so all of this needs the
permission tenant-wide: a role bound below an asset gets 403.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api import scoping
from shopfloor.api.deps import get_platform
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E400, E404, E422, Responses, _err
from shopfloor.api.scoping import scope_of
from shopfloor.apps.host import Instance
from shopfloor.apps.sdk import App, AppRoute
from shopfloor.core.errors import BadInput, NotFound, ShopfloorError
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

__all__ = ["install_app_routes", "router"]

router = APIRouter(prefix="/api/v1", tags=["apps"])

Read = Annotated[Scope, Depends(scope_of(Permission.REGISTRY_READ))]
DataRead = Annotated[Scope, Depends(scope_of(Permission.DATA_READ))]
Manage = Annotated[Scope, Depends(scope_of(Permission.APPS_MANAGE))]
Plat = Annotated[Platform, Depends(get_platform)]
E403: Responses = {403: _err("The caller lacks the permission tenant-wide")}
E503: Responses = {503: _err("The app is busy with a long update")}
ROUTE_WAIT_S = 20.0


class AppBusy(ShopfloorError):
    status_code = 503


class AppIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool
    config: dict[str, Any] | None = Field(
        None, description="The app's settings (see config_schema); omitted keeps the stored."
    )


class AppOut(BaseModel):
    name: str
    title: str
    version: str
    summary: str
    enabled: bool
    status: dict[str, Any] | None = Field(None, description="Running figures, when enabled.")


class AppList(BaseModel):
    apps: list[AppOut]


class AppDetail(AppOut):
    description: str
    author: str
    config: dict[str, Any] | None
    config_schema: dict[str, Any]
    example_config: dict[str, Any]
    routes: list[dict[str, Any]]
    panels: list[dict[str, str]]
    updated_by: str | None


def _whole(scope: Scope, what: str) -> None:
    scoping.require_whole_tenant(scope, what)


def _status(platform: Platform, tenant_id: int, name: str) -> dict[str, Any] | None:
    inst = platform.apps.instance(tenant_id, name)
    return None if inst is None else inst.status()


def _out(platform: Platform, tenant_id: int, name: str) -> AppOut:
    cls = platform.catalogue.app_class(name)
    choice = platform.catalogue.get(tenant_id, name)
    m = cls.manifest
    enabled = choice is not None and choice.enabled
    return AppOut(
        name=m.name,
        title=m.title,
        version=m.version,
        summary=m.summary,
        enabled=enabled,
        status=_status(platform, tenant_id, name) if enabled else None,
    )


def _detail(platform: Platform, tenant_id: int, name: str) -> AppDetail:
    cls = platform.catalogue.app_class(name)
    choice = platform.catalogue.get(tenant_id, name)
    base = _out(platform, tenant_id, name)
    return AppDetail(
        **base.model_dump(),
        description=cls.manifest.description,
        author=cls.manifest.author,
        config=None if choice is None else choice.config,
        config_schema=cls.config_model.model_json_schema(),
        example_config=dict(cls.example_config),
        routes=[
            {"path": f"/api/v1/apps/{name}/{r.path}", "summary": r.summary, "params": r.params}
            for r in cls.routes()
        ],
        panels=[p.to_json() for p in cls.panels()],
        updated_by=None if choice is None else choice.updated_by,
    )


@router.get("/apps", summary="The app catalogue, with this tenant's choices", responses=AUTH)
def list_apps(scope: Read, platform: Plat) -> AppList:
    _whole(scope, "the app catalogue")
    return AppList(apps=[_out(platform, scope.tenant_id, n) for n in platform.catalogue.apps])


@router.get(
    "/apps/{name}",
    summary="One app: manifest, config and its schema, status, routes, panels",
    responses={**AUTH, **E404},
)
def get_app(name: str, scope: Read, platform: Plat) -> AppDetail:
    _whole(scope, "an app")
    return _detail(platform, scope.tenant_id, name)


@router.put(
    "/apps/{name}",
    summary="Enable (with a config) or disable an app for this tenant",
    description="The config is checked by the app's own model (422 naming config.<key>); an "
    "enabled app starts within a second, a failed one is started afresh.",
    responses={**E400, **AUTH, **E404, **E422},
)
def put_app(name: str, body: AppIn, scope: Manage, platform: Plat) -> AppDetail:
    _whole(scope, "enabling an app")
    actor = scope.principal.name
    if body.enabled:
        platform.catalogue.enable(scope.tenant_id, name, body.config, actor=actor)
    else:
        if body.config is not None:
            raise BadInput("a config is given only with enabled: true", "config")
        platform.catalogue.disable(scope.tenant_id, name, actor=actor)
    return _detail(platform, scope.tenant_id, name)


@router.get(
    "/apps/{name}/events",
    summary="An app's recent events, newest last",
    responses={**AUTH, **E404},
)
def app_events(name: str, scope: DataRead, platform: Plat) -> dict[str, Any]:
    _whole(scope, "an app's events")
    inst = _instance(platform, scope.tenant_id, name)
    return {"events": [e.to_json() for e in list(inst.ctx.events)]}


def _instance(platform: Platform, tenant_id: int, name: str) -> Instance:
    platform.catalogue.app_class(name)  # NotFound: not installed
    inst = platform.apps.instance(tenant_id, name)
    if inst is None:
        raise NotFound(f"app {name!r} is not enabled for this tenant")
    if inst.failed is not None:
        raise NotFound(f"app {name!r} is not running: {inst.failed}")
    return inst


# -- the apps' own routes ----------------------------------------------------------------------


def _endpoint(name: str, route: AppRoute) -> Callable[..., Any]:
    async def endpoint(request: Request, scope: DataRead, platform: Plat) -> Any:
        _whole(scope, "an app's data")
        inst = _instance(platform, scope.tenant_id, name)
        params: Mapping[str, str] = {
            k: v for k, v in request.query_params.items() if k in route.params
        }
        unknown = sorted(set(request.query_params) - set(route.params))
        if unknown:
            raise BadInput(f"unknown query parameter(s): {', '.join(unknown)}", unknown[0])

        def call() -> Any:
            # The app may be in a long tick (training a model): wait a while, then say so.
            if not inst.lock.acquire(timeout=ROUTE_WAIT_S):
                raise AppBusy(f"app {name!r} is busy (a long update); try again shortly")
            try:
                return route.handler(inst.app, params)
            finally:
                inst.lock.release()

        return await asyncio.to_thread(call)

    endpoint.__name__ = f"app_{name}_{route.path}".replace("-", "_").replace("/", "_")
    return endpoint


def install_app_routes(app: FastAPI, apps: Mapping[str, type[App[Any]]]) -> None:
    """Add every installed app's routes, each documented with its query parameters."""
    sub = APIRouter(prefix="/api/v1/apps", tags=["apps"])
    for name, cls in apps.items():
        for route in cls.routes():
            params = ", ".join(f"`{k}`: {v}" for k, v in route.params.items())
            sub.add_api_route(
                f"/{name}/{route.path}",
                _endpoint(name, route),
                methods=["GET"],
                summary=f"{cls.manifest.title}: {route.summary}",
                description=f"Query parameters: {params}." if params else None,
                responses={**E400, **AUTH, **E403, **E404, **E422, **E503},
                name=f"{name}:{route.path}",
            )
    app.include_router(sub)
