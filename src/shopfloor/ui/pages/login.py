"""Login: tenant, user name, password and, for roles that need it, the TOTP code."""

from __future__ import annotations

from fastapi.responses import RedirectResponse
from nicegui import app, ui

from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import LANGUAGES, current_language, t
from shopfloor.ui.layout import set_language
from shopfloor.ui.session import api, choose_tenant, landing


@ui.page("/login")
def login_page() -> RedirectResponse | None:
    ui.page_title(f"{t('login.title')} · Shopfloor")
    with ui.card().classes("absolute-center w-96").props('role="main"'):
        ui.label(t("login.title")).classes("text-xl").props('role="heading" aria-level="1"')
        tenant = (
            ui.input(t("login.tenant")).props('data-testid="tenant" autofocus').classes("w-full")
        )
        username = ui.input(t("login.username")).props('data-testid="username"').classes("w-full")
        password = (
            ui.input(t("login.password"), password=True)
            .props('data-testid="password"')
            .classes("w-full")
        )
        totp = (
            ui.input(t("login.totp"))
            .props('data-testid="totp" inputmode="numeric"')
            .classes("w-full")
        )
        totp.visible = False
        error = ui.label("").classes("text-red-600").props('role="alert" data-testid="login-error"')

        async def submit() -> None:
            body = {
                "tenant": tenant.value.strip() or None,
                "username": username.value.strip(),
                "password": password.value,
            }
            if totp.visible and totp.value.strip():
                body["totp"] = totp.value.strip()
            client = api()
            try:
                answer = await client.post("/auth/login", body)
            except ApiError as exc:
                if exc.field == "totp" or "TOTP" in exc.message or "code" in exc.message:
                    totp.visible = True
                    error.text = t("login.need_totp")
                else:
                    error.text = t("login.failed", reason=exc.message)
                return
            finally:
                await client.close()
            app.storage.user["token"] = answer["token"]
            app.storage.user["user"] = me = {**answer["user"], "tenant": body["tenant"]}
            # A new login starts outside any tenant a platform user had chosen before.
            choose_tenant(None)
            app.storage.user.pop("tenant_access", None)
            # The first page the roles may read: an auditor the audit log, a platform admin
            # the tenant choice (the plant page would only be refused).
            ui.navigate.to(landing(me))

        for field in (tenant, username, password, totp):
            field.on("keydown.enter", submit)
        ui.button(t("login.submit"), on_click=submit).props('data-testid="login"').classes("w-full")
        ui.select(
            LANGUAGES,
            value=current_language(),
            on_change=lambda e: set_language(str(e.value)),
            label=t("app.language"),
        ).props('dense data-testid="language" aria-label="language"')
    return None
