"""The FastAPI application: one process serves the API for the platform it opens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

import shopfloor
from shopfloor.api import (
    apps_routes,
    audit_routes,
    auth_routes,
    dashboard_routes,
    data_routes,
    device_routes,
    errors,
    export_routes,
    gateway_routes,
    limits_routes,
    mqtt_routes,
    policy_routes,
    registry_routes,
    rules_routes,
    security_middleware,
)
from shopfloor.api.ingest_endpoint import is_ingest, serve_ingest
from shopfloor.api.platform import Platform
from shopfloor.api.responses import JSON
from shopfloor.apps.catalogue import installed_apps
from shopfloor.core.config import Settings

StartHook = Callable[[Platform], Coroutine[Any, Any, None]]


class ShopfloorApp(FastAPI):
    """FastAPI with POST /api/v1/ingest answered before the middleware stack.

    Routing, middleware and telemetry cost about 0.2 ms per request, as much as decoding a
    1,000-point batch; ingest carries the load, so it skips them (same rules: ingest_body).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        platform = getattr(self.state, "platform", None)
        if platform is not None and is_ingest(scope):
            scope["app"] = self
            await serve_ingest(platform, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _lifespan(
    make: Callable[[], Platform], on_start: Sequence[StartHook], *, close: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the platform (``make``), run its background tasks and the ``on_start`` hooks for
    the life of the app, stop them at the end, and close the platform when it is ours."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plat = make()
        app.state.platform = plat
        plat.start_background()
        for hook in on_start:
            plat.spawn(hook(plat))
        try:
            yield
        finally:
            await plat.stop_background()
            if close:
                plat.close()

    return lifespan


def create_app(
    settings: Settings | None = None,
    platform: Platform | None = None,
    on_start: Sequence[StartHook] = (),
) -> FastAPI:
    """Build the app; it opens (and closes) its own Platform unless one is handed in.

    ``on_start`` coroutines run as background tasks for the life of the app (the demo's
    simulated factory is one).
    """
    lifespan = _lifespan(
        (lambda: platform) if platform is not None else (lambda: Platform(settings or Settings())),
        on_start,
        close=platform is None,
    )
    app = ShopfloorApp(
        title="Shopfloor",
        version=shopfloor.__version__,
        description="Open industrial internet platform: ingest, registry and historian API.",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    if platform is not None:
        app.state.platform = platform
    errors.install(app)
    app.include_router(data_routes.router)
    app.include_router(registry_routes.router)
    app.include_router(device_routes.router)
    app.include_router(mqtt_routes.router)
    app.include_router(auth_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(policy_routes.router)
    app.include_router(limits_routes.router)
    app.include_router(export_routes.router)
    app.include_router(rules_routes.router)
    app.include_router(apps_routes.router)
    app.include_router(dashboard_routes.router)
    app.include_router(gateway_routes.router)
    # The installed apps' own routes (known before the platform opens: from the entry points).
    apps_routes.install_app_routes(
        app, platform.catalogue.apps if platform is not None else installed_apps()
    )
    # Outermost last: limits answer 429 before anything else runs; the audit sees the outcome.
    security_middleware.install_audit(app)
    security_middleware.install_transport(app)
    security_middleware.install_limits(app)
    security_middleware.document_common_answers(app)

    @app.get("/health", tags=["ops"], summary="Liveness and storage figures")
    async def health() -> dict[str, object]:
        plat: Platform = app.state.platform
        return {
            "status": "ok",
            "version": shopfloor.__version__,
            "historian": plat.historian.stats(),
        }

    return app


# Roles whose processes serve no API: only a health probe for the orchestrator.
HEALTH_ONLY_ROLES = frozenset({"ingest", "rules"})


def create_worker_app(settings: Settings, on_start: Sequence[StartHook] = ()) -> FastAPI:
    """The HTTP side of an ``ingest`` or ``rules`` process: ``/api/v1/health`` (and
    ``/health``) alone, so an orchestrator can probe it; no API, no console.

    The probe answers 503 until the process does its work: an ingest worker's subscription is
    up (its MQTT session connected), so a rolling restart waits for it.
    """

    lifespan = _lifespan(lambda: Platform(settings), on_start, close=True)
    app = FastAPI(
        title=f"Shopfloor {settings.role} worker",
        version=shopfloor.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    async def health() -> JSONResponse:
        plat: Platform = app.state.platform
        body: dict[str, object] = {
            "status": "ok",
            "role": plat.role,
            "version": shopfloor.__version__,
            # Committed by this process; a count that needs no query (probed often).
            "historian": {"points_written": getattr(plat.historian, "points_written", None)},
        }
        if plat.bus is not None:
            bus = plat.bus
            body["bus"] = {
                "published": bus.published,
                "received": bus.received,
                "dropped": bus.dropped,
                "rejected": bus.rejected,
            }
        if plat.mqtt is not None:
            body["mqtt"] = plat.mqtt.stats()
            body["messages_stored"] = plat.mqtt.batcher.messages
            if not plat.mqtt.started.is_set():
                body["status"] = "starting"
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    app.add_api_route("/api/v1/health", health, methods=["GET"])
    app.add_api_route("/health", health, methods=["GET"])
    return app
