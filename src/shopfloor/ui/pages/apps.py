"""The app catalogue and each app's panels (drawn from the app's own read-only routes)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.session import api, user


@ui.page("/apps")
async def apps_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("apps.title"):
        data = await client.get("/apps")
        roles = {str(b.get("role")) for b in user().get("roles", []) if isinstance(b, dict)}
        may_manage = bool(roles & {"tenant_admin", "engineer"})
        for a in data["apps"]:
            with ui.card().classes("w-full").props(f'data-testid="app-{a["name"]}"'):
                with ui.row().classes("items-center w-full"):
                    views = ("oee", "spc", "condition", "predictive")  # their own pages (app views)
                    view = "/view" if a["name"] in views else ""
                    ui.link(a["title"], f"/apps/{a['name']}{view}").classes("text-lg")
                    ui.label(f"v{a['version']}").classes("text-sm text-gray-500")
                    ui.space()
                    status = a.get("status") or {}
                    if not a["enabled"]:
                        ui.label(t("apps.disabled")).classes("text-gray-500")
                    elif status.get("failed"):
                        ui.label(t("apps.failed", reason=status["failed"])).classes("text-red-700")
                    else:
                        ui.label(t("apps.running")).classes("text-green-700")
                    if may_manage:

                        async def toggle(
                            name: str = a["name"], on: bool = not a["enabled"]
                        ) -> None:
                            try:
                                await client.put(f"/apps/{name}", {"enabled": on})
                            except ApiError as exc:
                                ui.notify(t("app.error", reason=exc.message), type="negative")
                                return
                            ui.navigate.reload()

                        ui.button(
                            t("apps.disable") if a["enabled"] else t("apps.enable"), on_click=toggle
                        ).props("flat")
                ui.label(a["summary"])
    return None


def _rows(answer: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The first list of objects in an answer, as table rows with their scalar columns."""
    if isinstance(answer, list):
        items = answer
    elif isinstance(answer, dict):
        items = next((v for v in answer.values() if isinstance(v, list)), [answer])
    else:
        items = [{"value": answer}]
    rows = [i if isinstance(i, dict) else {"value": i} for i in items]
    columns: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in columns and not isinstance(v, dict | list):
                columns.append(k)
    return rows, columns


@ui.page("/apps/{name}")
async def app_page(name: str) -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("apps.title"):
        detail = await client.get(f"/apps/{name}")
        ui.label(detail["title"]).classes("text-xl").props('data-testid="app-title"')
        ui.label(detail["summary"])
        if not detail["enabled"]:
            ui.label(t("apps.disabled")).classes("text-gray-500")
            return None
        for panel in detail["panels"]:
            ui.label(panel["title"]).classes("text-lg")
            try:
                answer = await client.get(f"/apps/{name}/{panel['path']}")
            except ApiError as exc:
                ui.label(t("app.error", reason=exc.message)).classes("text-red-700")
                continue
            rows, columns = _rows(answer)
            if columns:
                ui.table(
                    columns=[{"name": c, "label": c, "field": c} for c in columns],
                    rows=[{c: r.get(c) for c in columns} for r in rows],
                ).props(f'dense data-testid="panel-{panel["id"]}"').classes("w-full")
            else:
                ui.code(json.dumps(answer, indent=2)[:20000], language="json").classes("w-full")
    return None
