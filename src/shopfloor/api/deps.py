"""FastAPI dependencies: the platform object and the tenant a request is scoped to."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from shopfloor.api.platform import Platform
from shopfloor.core.errors import Forbidden, Unauthorized
from shopfloor.registry.service import TenantInfo


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _key_from_headers(authorization: str | None, x_api_key: str | None) -> str:
    if x_api_key:
        return x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")


def current_tenant(
    platform: Annotated[Platform, Depends(get_platform)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> TenantInfo:
    """The tenant whose API key the request carries; every data call is scoped to it."""
    key = _key_from_headers(authorization, x_api_key)
    tenant = platform.registry.tenant_by_api_key(key)
    if tenant is None:
        raise Unauthorized("unknown API key")
    return tenant


def require_admin(
    platform: Annotated[Platform, Depends(get_platform)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """Platform administration (creating tenants) needs the admin key from the data folder."""
    key = _key_from_headers(authorization, x_api_key)
    if not hmac.compare_digest(key.encode(), platform.admin_key.encode()):
        raise Forbidden("this call needs the platform admin key")
