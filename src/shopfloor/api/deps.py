"""FastAPI dependencies: the platform, who is calling, and what the call may touch.

Every route takes ``need(PERMISSION)`` (a tenant :class:`Scope`) or ``need_platform(...)``
(platform-wide work): the tenant a route works in comes from the caller's credential alone,
so tenant isolation is decided here once, not route by route. ``tests/security/
test_isolation.py`` walks every registered route and fails on one without such a dependency.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request

from shopfloor.api.platform import Platform
from shopfloor.core.errors import Forbidden, Unauthorized
from shopfloor.security.principal import Binding, Principal, PrincipalKind, Scope, scope_roots
from shopfloor.security.roles import Permission, Role

SESSION_COOKIE = "sf_session"
TENANT_HEADER = "X-Shopfloor-Tenant"  # a platform admin names the tenant that granted access


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def header_secret(headers: Mapping[str, str]) -> str | None:
    """The secret in X-API-Key or an ``Authorization: Bearer`` header (names lower case, as
    ASGI gives them); the ingest path reads headers without building a Request."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def credential_of(request: Request) -> str | None:
    """The secret a request carries: X-API-Key, a Bearer token, or the session cookie."""
    return header_secret(request.headers) or request.cookies.get(SESSION_COOKIE)


def source_of(request: Request) -> str:
    return request.client.host if request.client else "-"


def admin_key_principal() -> Principal:
    return Principal(
        kind=PrincipalKind.ADMIN_KEY,
        name="admin-key",
        tenant=None,
        bindings=(Binding(Role.PLATFORM_ADMIN, None),),
    )


def resolve_secret(platform: Platform, secret: str, source: str) -> Principal | None:
    """The principal a secret stands for, or None. Shared by the API and the ingest path."""
    if hmac.compare_digest(secret.encode(), platform.admin_key.encode()):
        return admin_key_principal()
    principal = platform.auth.resolve(secret, source)  # sessions and user API tokens
    if principal is not None:
        return principal
    tenant = platform.registry.tenant_by_api_key(secret)
    if tenant is None:
        return None
    # The tenant key from `tenant create` bootstraps the tenant: it acts as its tenant admin.
    return Principal(
        kind=PrincipalKind.TENANT_KEY,
        name="tenant-key",
        tenant=tenant,
        bindings=(Binding(Role.TENANT_ADMIN, tenant.id),),
    )


def authenticate(
    request: Request, platform: Annotated[Platform, Depends(get_platform)]
) -> Principal:
    """The caller; 401 without a valid credential. Kept on request.state for the audit."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    secret = credential_of(request)
    if not secret:
        raise Unauthorized(
            "missing credential: send 'Authorization: Bearer <token>', 'X-API-Key' or log in"
        )
    principal = resolve_secret(platform, secret, source_of(request))
    if principal is None:
        raise Unauthorized("unknown, expired or revoked credential")
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def need(perm: Permission) -> Callable[..., Scope]:
    """A dependency giving the tenant scope in which the caller holds ``perm`` (else 403)."""

    def dependency(
        request: Request, principal: Caller, platform: Annotated[Platform, Depends(get_platform)]
    ) -> Scope:
        if principal.tenant is None:
            # A platform-level caller reaches tenant data only through that tenant's grant.
            name = request.headers.get(TENANT_HEADER)
            if not name:
                raise Forbidden(
                    f"this call works inside a tenant ({perm.value}); a platform admin needs "
                    f"an access grant from the tenant and the {TENANT_HEADER} header"
                )
            principal = platform.auth.enter_tenant(principal, name, source_of(request))
            request.state.principal = principal
        assert principal.tenant is not None
        roots = scope_roots(principal, perm, principal.tenant.id)
        assets = (
            None if roots is None else platform.registry.asset_subtree(principal.tenant.id, roots)
        )
        return Scope(principal, perm, principal.tenant, roots, assets)

    dependency.__name__ = f"need_{perm.name.lower()}"
    return dependency


def need_platform(perm: Permission) -> Callable[..., Principal]:
    """A dependency for platform-wide work (tenants, platform audit): ``perm`` held globally."""

    def dependency(principal: Caller) -> Principal:
        if not principal.holds(perm, None):
            raise Forbidden(f"this call needs the platform-wide {perm.value} permission")
        return principal

    dependency.__name__ = f"need_platform_{perm.name.lower()}"
    return dependency
