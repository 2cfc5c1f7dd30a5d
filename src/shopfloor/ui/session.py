"""Who is logged in to the console (kept in NiceGUI's per-browser user storage).

A platform-level user (logged in without a tenant, e.g. a platform admin) reaches a tenant's
data only under that tenant's access grant: the console keeps the tenant they chose and every
API call of theirs names it in the ``X-Shopfloor-Tenant`` header. The API checks the grant and
audits every use of it on each call (``api/deps.need``); the console decides nothing itself.
"""

from __future__ import annotations

import time
from typing import Any, Final

from nicegui import app

from shopfloor.ui.client import ApiClient, ApiError

__all__ = [
    "api",
    "choose_tenant",
    "chosen_tenant",
    "held_permissions",
    "is_platform_user",
    "landing",
    "logged_in",
    "tenant_access",
    "user",
]

_APP: dict[str, Any] = {}  # the FastAPI app the console runs on (set by mount.install)

# The pages a user may land on after login, in order of preference, with the permission each
# page's first API call needs. The first one the user holds wins.
LANDINGS: Final = (
    ("/", "registry.read"),
    ("/dashboards", "data.read"),
    ("/alarms", "data.read"),
    ("/audit", "audit.read"),
)
TENANT_CHOICE: Final = "/tenants"
ACCESS_CACHE_S: Final = 30.0  # how long the header trusts its last look at the grants


def bind(fastapi_app: Any) -> None:
    _APP["app"] = fastapi_app


def logged_in() -> bool:
    return bool(app.storage.user.get("token"))


def user() -> dict[str, Any]:
    return dict(app.storage.user.get("user") or {})


def is_platform_user(me: dict[str, Any] | None = None) -> bool:
    """Logged in without a tenant: a platform admin, a platform auditor."""
    me = user() if me is None else me
    return bool(me) and not me.get("tenant") and me.get("tenant_id") is None


def chosen_tenant() -> str | None:
    """The tenant a platform user works in now (None: none chosen, or a tenant user)."""
    value = app.storage.user.get("as_tenant")
    return str(value) if value and is_platform_user() else None


def choose_tenant(name: str | None) -> None:
    if name:
        app.storage.user["as_tenant"] = name
    else:
        app.storage.user.pop("as_tenant", None)


def held_permissions(me: dict[str, Any] | None = None, tenant: str | None = None) -> set[str]:
    """The permissions the user's roles hold (the API decides anyway; this picks what to show).

    A platform user inside a tenant holds what the access grant gives (GRANTED_ROLE) besides
    their own platform permissions.
    """
    from shopfloor.security.roles import GRANTED_ROLE, ROLE_PERMISSIONS

    me = user() if me is None else me
    held = {str(b.get("role")) for b in me.get("roles") or [] if isinstance(b, dict)}
    if tenant:
        held.add(GRANTED_ROLE.value)
    return {p.value for role, perms in ROLE_PERMISSIONS.items() if role in held for p in perms}


def landing(me: dict[str, Any] | None = None, tenant: str | None = None) -> str:
    """The first page the user may read: the plant, ..., the audit log; a platform user who
    has not chosen a tenant (and may not read the audit log) chooses one first."""
    me = user() if me is None else me
    perms = held_permissions(me, tenant)
    if is_platform_user(me) and not tenant and "audit.read" not in perms:
        return TENANT_CHOICE
    for path, need in LANDINGS:
        if need in perms:
            return path
    return TENANT_CHOICE if is_platform_user(me) else "/"


def api() -> ApiClient:
    """A client of the API as the logged-in user (anonymous before login), inside the tenant
    a platform user chose."""
    return ApiClient(_APP["app"], app.storage.user.get("token"), tenant=chosen_tenant())


async def tenant_access(fresh: bool = False) -> list[tuple[str, bool]] | None:
    """Every tenant with whether this platform user holds a live access grant for it, or None
    when the user may not list the tenants.

    The console has no view of the grants of its own: it asks the API as the user inside each
    tenant (``GET /tenant`` with the tenant header), so the answer is the API's, and each look
    is in the audit log like any other use of a grant. Kept for ACCESS_CACHE_S per browser so
    that every page's header does not ask again.
    """
    cached = app.storage.user.get("tenant_access")
    if not fresh and cached and time.time() - float(cached["at"]) < ACCESS_CACHE_S:
        return [(str(n), bool(g)) for n, g in cached["rows"]]
    token = app.storage.user.get("token")
    client = ApiClient(_APP["app"], token)
    try:
        tenants = [str(x["name"]) for x in await client.get("/tenants")]
    except ApiError:
        return None
    finally:
        await client.close()
    rows = []
    for name in sorted(tenants):
        inside = ApiClient(_APP["app"], token, tenant=name)
        try:
            await inside.get("/tenant")
            rows.append((name, True))
        except ApiError:
            rows.append((name, False))
        finally:
            await inside.close()
    app.storage.user["tenant_access"] = {"at": time.time(), "rows": rows}
    return rows
