"""HTTP middleware of the security layer: audit, transport headers and per-tenant limits.

``install_audit`` records every state-changing call; ``install_transport`` adds HSTS and
secure-cookie handling on HTTPS; ``install_limits`` applies per-tenant rate limits;
``document_common_answers`` adds the 400 and 429 every operation may give to the OpenAPI.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from shopfloor.api.deps import credential_of, resolve_secret, source_of
from shopfloor.api.errors import describe
from shopfloor.api.ingest_endpoint import INGEST_PATH
from shopfloor.api.registry_routes import ErrorBody
from shopfloor.core.errors import ShopfloorError
from shopfloor.registry.service import TenantInfo
from shopfloor.security.limits import LimitExceeded
from shopfloor.security.principal import Principal
from shopfloor.security.tls import secure_cookie, security_headers

log = logging.getLogger(__name__)


def install_audit(app: FastAPI) -> None:
    """Record every state-changing API call in the audit log (security/audit.py).

    POST/PUT/PATCH/DELETE under /api/v1 are recorded once they complete, as
    ``"<METHOD> <route template>"`` with the path parameters as object, the outcome from the
    status (2xx/3xx ok, 401/403 denied, else failed) and the caller that deps.authenticate left
    on request.state. Ingest (data, not a change) and /api/v1/auth/ (the auth service records
    logins with more detail) are left out. A pure ASGI middleware: it only watches the
    response start, so streamed bodies pass untouched, and the blocking DB write runs in a
    worker thread after the response has gone out.
    """
    writes = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def audited(method: str, path: str) -> bool:
        if method not in writes or not path.startswith("/api/v1/"):
            return False
        return path != "/api/v1/ingest" and not path.startswith("/api/v1/auth/")

    def record(scope: AsgiScope, status: int) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or scope["path"]
        params = scope.get("path_params") or {}
        principal = scope.get("state", {}).get("principal")
        client = scope.get("client")
        if 200 <= status < 400:
            outcome = "ok"
        elif status in (401, 403):
            outcome = "denied"
        else:
            outcome = "failed"
        app.state.platform.audit.record(
            f"{scope['method']} {template}",
            ",".join(f"{k}={v}" for k, v in params.items()) or "-",
            outcome,
            principal=principal if isinstance(principal, Principal) else None,
            source=client[0] if client else "-",
            details={"status": status},
        )

    class AuditMiddleware:
        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not audited(scope["method"], scope["path"]):
                await self.inner(scope, receive, send)
                return
            # One dict shared with request.state below, where authenticate puts the principal.
            scope.setdefault("state", {})
            status = 500  # what the client sees if the app raises before answering

            async def watch(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.inner(scope, receive, watch)
            finally:
                try:
                    await anyio.to_thread.run_sync(record, scope, status)
                except Exception:  # the response is out; a lost record must still be loud
                    log.exception("could not audit %s %s", scope["method"], scope["path"])

    app.add_middleware(AuditMiddleware)


def install_transport(app: FastAPI) -> None:
    """HSTS and secure cookies when serving HTTPS, and the hardening headers always.

    Decided by ``settings.https``, not by the request's scheme: TLS ends in uvicorn (or in a
    proxy in front), and a cookie must never leave a deployment that serves HTTPS without
    Secure. Ingest answers skip this stack; ingest_endpoint adds the same headers itself.
    """

    def transport(inner: ASGIApp) -> ASGIApp:
        async def call(scope: AsgiScope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            https = bool(app.state.platform.settings.https)
            extra = security_headers(https, scope["path"].startswith("/api/"))

            async def send_secured(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers: list[tuple[bytes, bytes]] = []
                    for k, v in message.get("headers", ()):
                        if https and k.lower() == b"set-cookie":
                            v = secure_cookie(v)
                        headers.append((k, v))
                    present = {k.lower() for k, _ in headers}
                    headers.extend(h for h in extra if h[0] not in present)
                    message = {**message, "headers": headers}
                await send(message)

            await inner(scope, receive, send_secured)

        return call

    app.add_middleware(transport)


def install_limits(app: FastAPI) -> None:
    """Per-tenant API rate limits with 429 answers (security/limits.py).

    A middleware rather than a step in deps.need: it must run before routing and the
    audit, so a tenant over its limit costs a dict lookup, not a request. The tenant comes
    from the credential: resolved once (deps.resolve_secret, off the event loop) and then
    cached for TENANT_CACHE_S by the credential's hash; the principal found is handed on in
    request.state, so authenticate() does not resolve it a second time. Platform-level
    callers (the admin key, platform users) have no tenant and are not limited; requests
    without a credential (login) are not limited either (lockout guards logins).
    """
    tenant_cache_s, tenant_cache_max = 5.0, 10_000
    cache: dict[bytes, tuple[TenantInfo | None, float]] = {}

    async def tenant_of(scope: AsgiScope, platform: Any) -> TenantInfo | None:
        request = Request(scope)
        secret = credential_of(request)
        if not secret:
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        now = time.monotonic()
        hit = cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            principal = await asyncio.to_thread(
                resolve_secret, platform, secret, source_of(request)
            )
        except ShopfloorError:
            return None  # authenticate() raises it again, with the right answer
        if principal is None:
            return None
        scope.setdefault("state", {})["principal"] = principal
        if len(cache) >= tenant_cache_max:
            cache.clear()  # junk credentials must not grow memory
        cache[digest] = (principal.tenant, now + tenant_cache_s)
        return principal.tenant

    def limited(inner: ASGIApp) -> ASGIApp:
        async def call(scope: AsgiScope, receive: Receive, send: Send) -> None:
            path = scope["path"] if scope["type"] == "http" else ""
            if path.startswith("/api/v1/") and path != INGEST_PATH:  # ingest counts points
                platform = app.state.platform
                tenant = await tenant_of(scope, platform)
                if tenant is not None:
                    try:
                        platform.limits.check_api(tenant)
                    except LimitExceeded as exc:
                        await _refuse(send, exc, platform.settings.https)
                        return
            await inner(scope, receive, send)

        return call

    async def _refuse(send: Send, exc: LimitExceeded, https: bool) -> None:
        body = orjson.dumps(describe(exc))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", exc.retry_after_header.encode()),
            *security_headers(https, True),  # this answer never reaches install_transport
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @app.exception_handler(LimitExceeded)
    async def _limit_exceeded(_: Request, exc: LimitExceeded) -> JSONResponse:
        """Routes that raise a limit themselves (the documented ingest route) answer 429
        with Retry-After."""
        return JSONResponse(describe(exc), 429, headers={"Retry-After": exc.retry_after_header})

    app.add_middleware(limited)


def document_common_answers(app: FastAPI) -> None:
    """The answers every operation may give, added to the OpenAPI document: 429 on /api/v1
    (install_limits) and 400 where a body is taken and is not JSON at all. Schemathesis
    checks every answer against the document; it is amended once, where it is built."""
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_openapi()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            if "ErrorBody" not in schemas:  # normally there: the registry routes use it
                schemas["ErrorBody"] = ErrorBody.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
                schemas.update(schemas["ErrorBody"].pop("$defs", {}))
            answer = {
                "description": "Over the tenant's rate limit (RateLimited) or stored-points "
                "quota (QuotaExceeded)",
                "headers": {
                    "Retry-After": {
                        "description": "Seconds to wait before retrying",
                        "schema": {"type": "integer"},
                    }
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                },
            }
            unparsable = {
                "description": "The body is not valid JSON",
                "content": answer["content"],
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/api/v1/"):
                    for op in operations.values():
                        if isinstance(op, dict) and "responses" in op:
                            op["responses"].setdefault("429", answer)
                            if "requestBody" in op:
                                op["responses"].setdefault("400", unparsable)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
