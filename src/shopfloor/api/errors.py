"""One error shape for every failure: {"error": {"type", "message", "field"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopfloor.api.responses import JSON as ORJSONResponse
from shopfloor.core.errors import BadInput, ShopfloorError

log = logging.getLogger(__name__)


def error_body(kind: str, message: str, field: str | None = None) -> dict[str, object]:
    return {"error": {"type": kind, "message": message, "field": field}}


def describe(exc: ShopfloorError) -> dict[str, object]:
    """The response body for an error we raised on purpose."""
    if exc.status_code >= 500:
        log.error("%s: %s", type(exc).__name__, exc)
    if isinstance(exc, BadInput):
        return error_body(type(exc).__name__, exc.message, exc.field)
    return error_body(type(exc).__name__, str(exc))


def install(app: FastAPI) -> None:
    @app.exception_handler(ShopfloorError)
    async def _shopfloor(_: Request, exc: ShopfloorError) -> ORJSONResponse:
        return ORJSONResponse(describe(exc), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return ORJSONResponse(
            error_body("BadInput", str(first.get("msg", "invalid request")), where or None),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        return ORJSONResponse(error_body("HTTPError", str(exc.detail)), status_code=exc.status_code)
