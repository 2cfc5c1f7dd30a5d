"""The alarm console: current alarms with filters, acknowledge / shelve with a comment, history."""

from __future__ import annotations

from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.session import api

STATES: Final = (
    "unack_active",
    "ack_active",
    "unack_rtn",
    "normal",
    "shelved",
    "suppressed_by_design",
    "out_of_service",
)
PRIORITY_KEYS: Final = {1: "alarms.p1", 2: "alarms.p2", 3: "alarms.p3", 4: "alarms.p4"}


@ui.page("/alarms")
async def alarms_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("alarms.title"):
        with ui.row().classes("items-center gap-4"):
            state = (
                ui.select(
                    {"": t("alarms.all"), **{s: t(f"alarm_state.{s}") for s in STATES}},
                    value="",
                    label=t("alarms.state"),
                )
                .props('data-testid="filter-state" aria-label="state"')
                .classes("w-56")
            )
            prio = (
                ui.select(
                    {0: t("alarms.all"), **{p: t(k) for p, k in PRIORITY_KEYS.items()}},
                    value=0,
                    label=t("alarms.priority"),
                )
                .props('data-testid="filter-priority" aria-label="priority"')
                .classes("w-40")
            )
        columns: list[dict[str, Any]] = [
            {"name": "rule", "label": t("alarms.rule"), "field": "rule", "sortable": True},
            {"name": "device", "label": t("alarms.device"), "field": "device", "sortable": True},
            {"name": "state", "label": t("alarms.state"), "field": "state_text"},
            {"name": "priority", "label": t("alarms.priority"), "field": "priority_text"},
            {"name": "message", "label": t("alarms.message"), "field": "message"},
            {"name": "since", "label": t("alarms.since"), "field": "last_change"},
            {"name": "actions", "label": t("alarms.actions"), "field": "key"},
        ]
        table = (
            ui.table(columns=columns, rows=[], row_key="key")
            .props('data-testid="alarms" aria-label="alarms"')
            .classes("w-full")
        )
        table.add_slot(
            "body-cell-actions",
            f"""
            <q-td :props="props">
              <q-btn dense flat color="primary" label="{t("alarms.ack")}"
                v-if="props.row.state === 'unack_active' || props.row.state === 'unack_rtn'"
                :data-testid="'ack-' + props.row.key"
                @click="$parent.$emit('ack', props.row)" />
              <q-btn dense flat color="secondary" label="{t("alarms.shelve")}"
                v-if="props.row.state !== 'shelved' && props.row.state !== 'normal'"
                @click="$parent.$emit('shelve', props.row)" />
              <q-btn dense flat label="{t("alarms.unshelve")}" v-if="props.row.state === 'shelved'"
                @click="$parent.$emit('unshelve', props.row)" />
            </q-td>
            """,
        )
        notice = ui.label("").props('role="status" data-testid="alarm-notice"')

        async def refresh() -> None:
            params: dict[str, Any] = {}
            if state.value:
                params["state"] = state.value
            if prio.value:
                params["priority"] = prio.value
            data = await client.get("/alarms", **params)
            rows = []
            for a in data["alarms"]:
                rows.append(
                    {
                        **a,
                        "key": f"{a['rule']}|{a['device']}",
                        "state_text": t(f"alarm_state.{a['state']}"),
                        "priority_text": t(PRIORITY_KEYS.get(int(a["priority"]), "alarms.p3")),
                    }
                )
            table.rows = rows
            table.update()

        async def act(row: dict[str, Any], action: str, body: dict[str, Any] | None) -> None:
            path = f"/alarms/{row['rule']}/{row['device']}/{action}"
            try:
                await client.post(path, body)
            except ApiError as exc:
                notice.text = t("app.error", reason=exc.message)
                return
            notice.text = t(f"alarms.done_{action}", rule=row["rule"], device=row["device"])
            await refresh()

        def comment_dialog(row: dict[str, Any], action: str) -> None:
            with ui.dialog() as dialog, ui.card():
                ui.label(t(f"alarms.{action}_title", rule=row["rule"], device=row["device"]))
                comment = (
                    ui.input(t("alarms.comment"))
                    .props('autofocus data-testid="comment" aria-label="comment"')
                    .classes("w-96")
                )
                duration = None
                if action == "shelve":
                    duration = ui.select(["15m", "1h", "8h", "24h"], value="1h").props(
                        'aria-label="duration"'
                    )

                async def ok() -> None:
                    if not comment.value.strip():
                        comment.props("error error-message=" + t("alarms.comment_needed"))
                        return
                    body: dict[str, Any] = {"comment": comment.value.strip()}
                    if duration is not None:
                        body["duration"] = duration.value
                    dialog.close()
                    await act(row, action, body)

                comment.on("keydown.enter", ok)
                with ui.row():
                    ui.button(t("app.ok"), on_click=ok).props('data-testid="comment-ok"')
                    ui.button(t("app.cancel"), on_click=dialog.close).props("flat")
            dialog.open()

        table.on("ack", lambda e: comment_dialog(e.args, "ack"))
        table.on("shelve", lambda e: comment_dialog(e.args, "shelve"))
        table.on("unshelve", lambda e: act(e.args, "unshelve", None))
        state.on_value_change(lambda _: refresh())
        prio.on_value_change(lambda _: refresh())
        await refresh()
        ui.timer(3.0, refresh)

        ui.label(t("alarms.history")).classes("text-lg")
        history = (
            ui.table(
                columns=[
                    {"name": "time", "label": t("machine.time"), "field": "time"},
                    {"name": "rule", "label": t("alarms.rule"), "field": "rule"},
                    {"name": "device", "label": t("alarms.device"), "field": "device"},
                    {"name": "to", "label": t("alarms.state"), "field": "to_text"},
                    {"name": "user", "label": t("alarms.user"), "field": "user"},
                    {"name": "comment", "label": t("alarms.comment"), "field": "comment"},
                ],
                rows=[],
                row_key="id",
            )
            .props('dense data-testid="history" aria-label="alarm history"')
            .classes("w-full")
        )
        data = await client.get("/alarms/history", limit=200)
        history.rows = [
            {**h, "to_text": t(f"alarm_state.{h['to_state']}")} for h in reversed(data["events"])
        ]
    return None
