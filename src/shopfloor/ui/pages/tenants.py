"""The tenant choice of a platform user (a platform admin): every tenant, the ones that granted
this user access usable, the others shown with "no access grant".

A platform user reads a tenant's data only under the tenant's time-limited access grant
(``POST /access-grants`` by the tenant's admin); once chosen, every API call of the console
names the tenant in the ``X-Shopfloor-Tenant`` header and the API checks and audits the grant
on each call. This page decides nothing: whether a grant is live is the API's answer.
"""

from __future__ import annotations

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login, switch_tenant
from shopfloor.ui.session import chosen_tenant, is_platform_user, tenant_access


@ui.page("/tenants")
async def tenants_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    with frame("tenants.title"):
        if not is_platform_user():
            ui.label(t("tenants.only_platform")).props('data-testid="tenants-not-platform"')
            return None
        inside = chosen_tenant()
        ui.label(
            t("tenants.current", tenant=inside) if inside else t("tenants.none_chosen")
        ).classes("text-lg").props('role="status" data-testid="tenant-current"')
        ui.label(t("tenants.explain")).classes("text-sm text-gray-600")
        rows = await tenant_access(fresh=True)
        if rows is None:
            ui.label(t("tenants.cannot_list")).props('role="alert" data-testid="tenants-error"')
            return None
        if not rows:
            ui.label(t("tenants.no_tenants")).props('data-testid="tenants-none"')
            return None
        with (
            ui.column()
            .classes("gap-2")
            .props(f'role="list" data-testid="tenant-list" aria-label="{t("tenants.title")}"')
        ):
            for name, granted in rows:
                with ui.row().classes("items-center gap-4").props('role="listitem"'):
                    ui.label(name).classes("text-lg w-48 font-bold")
                    choose = ui.button(
                        t("tenants.enter", tenant=name),
                        on_click=lambda n=name: switch_tenant(n),
                    ).props(f'data-testid="enter-{name}"')
                    if granted:
                        ui.label(t("tenants.granted")).classes("text-green-700")
                    else:
                        choose.disable()
                        ui.label(t("tenants.no_grant")).classes("text-gray-600").props(
                            f'data-testid="no-grant-{name}"'
                        )
        if inside:
            ui.button(t("tenants.leave"), on_click=lambda: switch_tenant(None)).props(
                'outline data-testid="tenant-leave-page"'
            )
    return None
