"""The audit log viewer (auditors, ``audit.read``): filters, the records, an export, and what
can be said about the chain from here.

A tenant's auditor reads ``/audit/records`` (the tenant's records), a platform-wide auditor
``/platform/audit/records`` (all of them). Seals can only be recomputed with the audit key,
which the API never serves, and the API has no verification route: the page checks the links
between the consecutive records it shows (``prev_hash`` = the previous record's ``hash``) and
names ``shopfloor audit verify`` for the full check.
"""

from __future__ import annotations

import json
from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiClient, ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.session import api

PAGE: Final = 200


def link_check(records: list[dict[str, Any]]) -> tuple[int, list[int]]:
    """Links between consecutive records (seq n and n + 1) among ``records``: how many were
    checked, and the seqs whose ``prev_hash`` is not their predecessor's ``hash``."""
    by_seq = {int(r["seq"]): r for r in records}
    checked, broken = 0, []
    for seq, rec in sorted(by_seq.items()):
        before = by_seq.get(seq - 1)
        if before is None:
            continue
        checked += 1
        if rec.get("prev_hash") != before.get("hash"):
            broken.append(seq)
    return checked, broken


async def _download(client: ApiClient, path: str, params: dict[str, Any]) -> tuple[bytes, str]:
    """An export's bytes and file name (the API streams it; ApiClient.get expects JSON)."""
    r = await client._client.get(f"/api/v1{path}", params=params)
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
            raise ApiError(r.status_code, str(err.get("message")), err.get("field"))
        except (ValueError, KeyError, TypeError):
            raise ApiError(r.status_code, r.text[:200]) from None
    disposition = r.headers.get("content-disposition", "")
    name = disposition.partition("filename=")[2].strip('"') or "shopfloor-audit"
    return r.content, name


@ui.page("/audit")
async def audit_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("audit.title"):
        me = await client.get("/auth/me")
        permissions = set(me.get("permissions") or [])
        if "audit.read" not in permissions:
            ui.label(t("audit.no_permission")).props('role="alert" data-testid="audit-denied"')
            return None
        base = "/audit" if me.get("tenant") else "/platform/audit"
        ui.label(t("audit.scope_tenant") if me.get("tenant") else t("audit.scope_platform"))
        with ui.row().classes("items-start gap-4"):
            since = ui.input(t("audit.since"), value="-24h").props('data-testid="audit-since"')
            until = ui.input(t("audit.until")).props('data-testid="audit-until"')
            actor = ui.input(t("audit.actor")).props('data-testid="audit-actor"')
            action = (
                ui.input(t("audit.action"))
                .props(f'data-testid="audit-action" hint="{t("audit.action_hint")}"')
                .classes("w-72")
            )
            outcome = (
                ui.select(
                    {
                        "": t("audit.all"),
                        "ok": t("audit.outcome_ok"),
                        "denied": t("audit.outcome_denied"),
                        "failed": t("audit.outcome_failed"),
                    },
                    value="",
                    label=t("audit.outcome"),
                )
                .props(f'data-testid="audit-outcome" aria-label="{t("audit.outcome")}"')
                .classes("w-40")
            )
            ui.button(t("audit.apply"), on_click=lambda: load(0)).props('data-testid="audit-apply"')
        with ui.row().classes("items-center gap-4"):
            if "audit.export" in permissions:
                ui.button(t("audit.export_jsonl"), on_click=lambda: export("jsonl")).props(
                    'outline icon=download data-testid="audit-export-jsonl"'
                )
                ui.button(t("audit.export_csv"), on_click=lambda: export("csv")).props(
                    'outline icon=download data-testid="audit-export-csv"'
                )
            status = ui.label("").props('role="status" data-testid="audit-status"')
        columns: list[dict[str, Any]] = [
            {
                "name": "seq",
                "label": t("audit.seq"),
                "field": "seq",
                "align": "left",
                "sortable": True,
            },
            {"name": "time", "label": t("audit.time"), "field": "ts", "align": "left"},
            {
                "name": "actor",
                "label": t("audit.actor"),
                "field": "actor",
                "align": "left",
                "sortable": True,
            },
            {"name": "role", "label": t("audit.role"), "field": "role", "align": "left"},
            {
                "name": "action",
                "label": t("audit.action"),
                "field": "action",
                "align": "left",
                "sortable": True,
            },
            {"name": "object", "label": t("audit.object"), "field": "object", "align": "left"},
            {
                "name": "outcome",
                "label": t("audit.outcome"),
                "field": "outcome_text",
                "align": "left",
            },
            {"name": "source", "label": t("audit.source"), "field": "source", "align": "left"},
            {
                "name": "details",
                "label": t("audit.details"),
                "field": "details_text",
                "align": "left",
            },
        ]
        table = (
            ui.table(
                columns=columns,
                rows=[],
                row_key="seq",
                pagination={"rowsPerPage": 50, "sortBy": "seq", "descending": True},
            )
            .props(f'dense wrap-cells data-testid="audit-records" aria-label="{t("audit.title")}"')
            .classes("w-full")
        )
        more = ui.button(t("audit.next_page"), on_click=lambda: load(state["next"])).props(
            'flat data-testid="audit-next"'
        )
        more.visible = False
        ui.label(t("audit.verification")).classes("text-lg").props('role="heading" aria-level="2"')
        links = ui.label("").props('data-testid="audit-links"')
        ui.label(t("audit.verify_cli")).classes("text-sm text-gray-600")
        state: dict[str, Any] = {"next": None}
        outcome_text = {
            "ok": t("audit.outcome_ok"),
            "denied": t("audit.outcome_denied"),
            "failed": t("audit.outcome_failed"),
        }

        def filters() -> dict[str, Any]:
            params: dict[str, Any] = {}
            for key, el in (("since", since), ("until", until), ("actor", actor)):
                if str(el.value or "").strip():
                    params[key] = str(el.value).strip()
            if str(action.value or "").strip():
                params["action"] = str(action.value).strip()
            if outcome.value:
                params["outcome"] = outcome.value
            return params

        async def load(after_seq: int) -> None:
            params = {**filters(), "limit": PAGE}
            if after_seq:
                params["after_seq"] = after_seq
            try:
                page = await client.get(f"{base}/records", **params)
            except ApiError as exc:
                status.text = t(
                    "app.error", reason=f"{exc.field}: {exc.message}" if exc.field else exc.message
                )
                return
            records = page["records"]
            table.rows = [
                {
                    **r,
                    "outcome_text": outcome_text.get(r["outcome"], r["outcome"]),
                    "details_text": json.dumps(r["details"], ensure_ascii=False, sort_keys=True),
                }
                for r in records
            ]
            table.update()
            state["next"] = page.get("next_after_seq")
            more.visible = state["next"] is not None
            if records:
                status.text = t(
                    "audit.shown", n=len(records), first=records[0]["seq"], last=records[-1]["seq"]
                )
            else:
                status.text = t("audit.none")
            checked, broken = link_check(records)
            if broken:
                links.text = t(
                    "audit.links_broken", checked=checked, seqs=", ".join(map(str, broken))
                )
                links.classes(replace="text-red-700")
            else:
                links.text = t("audit.links_ok", checked=checked)
                links.classes(replace="text-green-700")

        async def export(fmt: str) -> None:
            try:
                content, name = await _download(
                    client, f"{base}/export", {**filters(), "format": fmt}
                )
            except ApiError as exc:
                status.text = t("app.error", reason=exc.message)
                return
            media = "text/csv" if fmt == "csv" else "application/x-ndjson"
            ui.download.content(content, name, media)
            status.text = t("audit.exported", name=name)

        for el in (since, until, actor, action):
            el.on("keydown.enter", lambda: load(0))
        await load(0)
    return None
