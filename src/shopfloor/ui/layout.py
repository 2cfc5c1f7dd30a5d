"""The frame of every page: header with navigation, tenant (for platform users), language and
logout; keyboard-friendly. Also the panels a page shows when the API refuses it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import app, ui

from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import LANGUAGES, current_language, t
from shopfloor.ui.session import (
    choose_tenant,
    chosen_tenant,
    held_permissions,
    is_platform_user,
    landing,
    logged_in,
    tenant_access,
    user,
)

__all__ = ["NAV", "failure", "frame", "require_login", "set_language"]

# (path, message key, icon): the main pages, in the order of the navigation.
NAV: Final = (
    ("/", "nav.tree", "account_tree"),
    ("/alarms", "nav.alarms", "notifications"),
    ("/dashboards", "nav.dashboards", "dashboard"),
    ("/apps", "nav.apps", "apps"),
    ("/rules", "nav.rules", "rule"),
    ("/audit", "nav.audit", "fact_check"),
    ("/gateways", "nav.gateways", "router"),
)
# A NAV entry shown only to users whose roles hold this permission (the API decides anyway).
NAV_NEEDS: Final = {"/rules": "registry.read", "/audit": "audit.read", "/gateways": "registry.read"}


# The permission the first API call of the other main pages needs: an auditor, or a platform
# admin outside any tenant, is not offered pages that would only say "not permitted".
PAGE_READS: Final = {
    "/": "registry.read",
    "/alarms": "data.read",
    "/dashboards": "data.read",
    "/apps": "registry.read",
}


def may_see(path: str, roles: Any, tenant: str | None = None) -> bool:
    """Whether the NAV entry ``path`` is for a user with these role bindings (inside
    ``tenant`` under an access grant, for a platform user)."""
    need = NAV_NEEDS.get(path) or PAGE_READS.get(path)
    if need is None:
        return True
    return need in held_permissions({"roles": roles}, tenant)


def require_login() -> RedirectResponse | None:
    """The redirect to the login page unless a user is logged in (a page returns it)."""
    return None if logged_in() else RedirectResponse("/ui/login")


def set_language(lang: str) -> None:
    app.storage.user["lang"] = lang
    ui.navigate.reload()


@contextmanager
def frame(title_key: str) -> Iterator[None]:
    """Header, navigation and the page's main area (a landmark for screen readers)."""
    ui.page_title(f"{t(title_key)} · Shopfloor")
    me = user()
    inside = chosen_tenant()
    with ui.header().classes("items-center gap-4 bg-slate-800"):
        ui.label("Shopfloor").classes("text-lg font-bold").props('role="banner"')
        with ui.row().classes("gap-1").props(f'role="navigation" aria-label="{t("nav.main")}"'):
            for path, key, icon in NAV:
                if not may_see(path, me.get("roles"), inside):
                    continue
                ui.link(t(key), path).classes("text-white px-2 py-1 rounded").props(
                    f'data-testid="nav-{key.split(".")[1]}"'
                )
                del icon
        ui.space()
        if me:
            ui.label(f"{me.get('username', '')} · {me.get('tenant') or t('app.platform')}").classes(
                "text-sm"
            )
        if me and is_platform_user(me):
            _tenant_switcher(inside)
        ui.select(
            LANGUAGES,
            value=current_language(),
            on_change=lambda e: set_language(str(e.value)),
            label=t("app.language"),
        ).props('dense dark options-dense data-testid="language" aria-label="language"').classes(
            "w-32"
        )
        if me:
            ui.button(t("app.logout"), on_click=_logout).props(
                'flat color=white data-testid="logout"'
            )
    with ui.column().classes("w-full p-4 gap-4").props('role="main"'):
        ui.label(t(title_key)).classes("text-2xl").props('role="heading" aria-level="1"')
        yield


def _tenant_switcher(inside: str | None) -> None:
    """The tenant a platform user works in, and the menu to change it: every tenant, those
    without a live access grant for this user disabled (the API refuses them anyway)."""
    text = t("tenants.current", tenant=inside) if inside else t("tenants.none_chosen")
    button = ui.button(text, icon="domain").props(
        f'flat no-caps color=white data-testid="tenant-switch" '
        f'aria-label="{t("tenants.switch")}: {inside or t("tenants.none_chosen")}"'
    )
    with button, ui.menu().props('data-testid="tenant-menu"') as menu:
        ui.menu_item(t("tenants.loading")).props("disable")

    async def fill() -> None:
        rows = await tenant_access()
        menu.clear()
        with menu:
            if rows is None:
                ui.menu_item(t("tenants.cannot_list")).props("disable")
                return
            for name, granted in rows:
                if granted:
                    item = ui.menu_item(name, on_click=lambda n=name: switch_tenant(n))
                    item.props(f'data-testid="tenant-{name}" aria-label="{name}"')
                    if name == inside:
                        item.props("active")
                else:
                    item = ui.menu_item(t("tenants.no_grant_item", tenant=name))
                    item.props(f'disable data-testid="tenant-{name}"')
            if inside:
                ui.separator()
                ui.menu_item(t("tenants.leave"), on_click=lambda: switch_tenant(None)).props(
                    'data-testid="tenant-leave"'
                )

    # Filled after the page is out: probing the grants takes one API call per tenant.
    ui.timer(0.05, fill, once=True)


def switch_tenant(name: str | None) -> None:
    """Work in tenant ``name`` (None: at the platform level) and go to its first page."""
    choose_tenant(name)
    ui.navigate.to(landing(tenant=name))


def failure(exc: ApiError) -> None:
    """What a page shows instead of its content when its API call failed: a "not permitted"
    panel for a refusal (403: the role or, for a platform user, the tenant's access grant),
    else the API's message. Never a 500 page."""
    if exc.status == 403:
        with (
            ui.card()
            .classes("bg-amber-50 border border-amber-300")
            .props('role="alert" data-testid="not-permitted"')
        ):
            ui.label(t("tenants.not_permitted")).classes("text-lg font-bold")
            ui.label(exc.message).classes("text-sm text-gray-700")
            if is_platform_user():
                ui.link(t("tenants.choose"), "/tenants").props('data-testid="go-choose-tenant"')
            else:
                ui.link(t("tenants.go_landing"), landing()).props('data-testid="go-landing"')
        return
    ui.label(t("app.error", reason=exc.message)).classes("text-red-700").props(
        'role="alert" data-testid="page-error"'
    )


def _page_failed(exc: Exception) -> None:
    # The safety net of every page (also the ones that do not catch their API errors): a
    # refused call shows the "not permitted" panel in the frame instead of a bare error page.
    if isinstance(exc, ApiError):
        with frame("tenants.problem"):
            failure(exc)
        return
    ui.label(t("app.error", reason=type(exc).__name__)).props('role="alert"')


app.on_page_exception(_page_failed)


async def _logout() -> None:
    from shopfloor.ui.session import api

    client = api()
    try:
        await client.post("/auth/logout")
    except Exception:  # the session may have ended already
        pass
    finally:
        await client.close()
    app.storage.user.pop("token", None)
    app.storage.user.pop("user", None)
    choose_tenant(None)
    ui.navigate.to("/login")
