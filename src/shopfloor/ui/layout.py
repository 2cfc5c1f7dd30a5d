"""The frame of every page: header with navigation, language and logout; keyboard-friendly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import app, ui

from shopfloor.ui.i18n import LANGUAGES, current_language, t
from shopfloor.ui.session import logged_in, user

__all__ = ["NAV", "frame", "require_login", "set_language"]

# (path, message key, icon): the main pages, in the order of the navigation.
NAV: Final = (
    ("/", "nav.tree", "account_tree"),
    ("/alarms", "nav.alarms", "notifications"),
    ("/dashboards", "nav.dashboards", "dashboard"),
    ("/apps", "nav.apps", "apps"),
    ("/rules", "nav.rules", "rule"),
    ("/audit", "nav.audit", "fact_check"),
)
# A NAV entry shown only to users whose roles hold this permission (the API decides anyway).
NAV_NEEDS: Final = {"/rules": "registry.read", "/audit": "audit.read"}


def may_see(path: str, roles: Any) -> bool:
    """Whether the NAV entry ``path`` is for a user with these role bindings."""
    need = NAV_NEEDS.get(path)
    if need is None:
        return True
    from shopfloor.security.roles import ROLE_PERMISSIONS

    held = {str(b.get("role")) for b in roles or [] if isinstance(b, dict)}
    return any(need in perms for role, perms in ROLE_PERMISSIONS.items() if role in held)


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
    with ui.header().classes("items-center gap-4 bg-slate-800"):
        ui.label("Shopfloor").classes("text-lg font-bold").props('role="banner"')
        with ui.row().classes("gap-1").props(f'role="navigation" aria-label="{t("nav.main")}"'):
            for path, key, icon in NAV:
                if not may_see(path, me.get("roles")):
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
    ui.navigate.to("/login")
