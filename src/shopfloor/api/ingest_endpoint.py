"""POST /api/v1/ingest as a bare ASGI handler in front of FastAPI.

Routing, dependency solving and request objects cost about 0.2 ms per request in FastAPI,
as much as decoding a 1,000-point frame batch. The ingest path is the one that carries the
load, so it is answered here directly (api.app.ShopfloorApp calls :func:`serve_ingest` before
its middleware stack); FastAPI still documents it (data_routes.ingest) and serves every other
route. Both call ``ingest_body``, so the rules are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qs

import orjson
from starlette.types import Message, Receive, Scope, Send

from shopfloor.api.deps import header_secret, resolve_secret
from shopfloor.api.errors import describe
from shopfloor.api.platform import Platform
from shopfloor.core.errors import BadInput, Forbidden, PayloadTooLarge, ShopfloorError, Unauthorized
from shopfloor.ingest.decode import decode_arrow, decode_json
from shopfloor.security.limits import LimitExceeded
from shopfloor.security.roles import Permission
from shopfloor.security.tls import security_headers

log = logging.getLogger(__name__)

INGEST_PATH: Final = "/api/v1/ingest"
ARROW_STREAM: Final = "application/vnd.apache.arrow.stream"


class UnsupportedMediaType(BadInput):
    status_code = 415


async def ingest_body(
    platform: Platform,
    headers: Mapping[str, str],
    body: bytes,
    device_param: str | None,
    source: str = "-",
) -> int:
    """Authenticate, decode and store one batch; returns the points accepted (durable)."""
    key = header_secret(headers)
    if not key:
        raise Unauthorized(
            "missing credential: send 'Authorization: Bearer <token>' or 'X-API-Key'"
        )
    principal = resolve_secret(platform, key, source)
    if principal is None:
        raise Unauthorized("unknown, expired or revoked credential")
    tenant = principal.tenant
    held = principal.holds(Permission.DATA_WRITE, tenant.id) if tenant is not None else []
    # Ingest may register devices anywhere in the tenant, so it needs a tenant-wide binding.
    if tenant is None or not any(b.asset_id is None for b in held):
        raise Forbidden("this call needs the data.write permission for the whole tenant")
    ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    max_points = platform.settings.max_batch_points
    if ctype == "application/json":
        cols = decode_json(body, max_points)
    elif ctype == ARROW_STREAM:
        cols = decode_arrow(body, device_param, max_points)
    else:
        raise UnsupportedMediaType(
            f"unsupported content type {ctype!r}; use application/json or {ARROW_STREAM}",
            "content-type",
        )
    # Limits after decoding (the batch size is known), before storing: a refused batch
    # leaves nothing behind. An admitted one counts against the quota until it fails.
    n = len(cols)
    platform.limits.admit_points(tenant, n)
    try:
        return await platform.ingestor.ingest(tenant, cols)
    except BaseException:
        platform.limits.release_points(tenant.id, n)
        raise


def check_length(declared: str | None, limit: int) -> None:
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes, at most {limit}", "body")


def is_ingest(scope: Scope) -> bool:
    return bool(
        scope["type"] == "http" and scope["path"] == INGEST_PATH and scope["method"] == "POST"
    )


# The request headers ingest reads; the others are not decoded at all.
_WANTED: Final = frozenset({b"x-api-key", b"authorization", b"content-type", b"content-length"})


async def serve_ingest(platform: Platform, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one POST /api/v1/ingest."""
    headers = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in scope["headers"]
        if k in _WANTED  # ASGI servers give header names in lower case
    }
    payload: dict[str, object]
    extra = security_headers(platform.settings.https, True)  # this path skips the middleware
    try:
        limit = platform.settings.max_body_bytes
        check_length(headers.get("content-length"), limit)
        body = await _read_body(receive, limit)
        qs = scope.get("query_string", b"")
        device = parse_qs(qs.decode("latin-1")).get("device", [None])[0] if qs else None
        client = scope.get("client")
        source = client[0] if client else "-"
        payload = {"accepted": await ingest_body(platform, headers, body, device, source)}
        status = 200
    except LimitExceeded as exc:
        status, payload = exc.status_code, describe(exc)
        extra.append((b"retry-after", exc.retry_after_header.encode()))
    except ShopfloorError as exc:
        status, payload = exc.status_code, describe(exc)
    except Exception:  # a bug: answer like the app's error handler would, and log it
        log.exception("ingest failed")
        status, payload = 500, {"error": {"type": "InternalError", "message": "internal error"}}
    await _respond(send, status, payload, extra)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise BadInput("client went away before sending the whole body", "body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes", "body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, payload: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    data = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
