"""The alarm console: current alarms with filters, acknowledge / shelve with a comment, history.

The table refreshes every few seconds in place: its rows are replaced only when the alarms
changed, and then by row key (Vue patches the rows it has), so a keyboard user's focus on a
button in the table stays where it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import failure, frame, require_login
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
# (row field, heading key): the columns of the current alarms, before the actions
COLUMNS: Final = (
    ("rule", "alarms.rule"),
    ("device", "alarms.device"),
    ("state_text", "alarms.state"),
    ("priority_text", "alarms.priority"),
    ("message", "alarms.message"),
    ("last_change", "alarms.since"),
)
ACKABLE: Final = frozenset({"unack_active", "unack_rtn"})
BUTTONS: Final = ("ack", "shelve", "unshelve")  # their order in a row


class _Row:
    """One alarm's row: its cells and buttons, kept and changed in place by key."""

    def __init__(
        self,
        data: dict[str, Any],
        ask: Callable[[dict[str, Any], str], None],
        act: Callable[[dict[str, Any], str, dict[str, Any] | None], Awaitable[None]],
    ) -> None:
        self.data = data
        self.tr = ui.element("tr").classes("border-b align-top")
        self.cells: dict[str, ui.label] = {}
        with self.tr:
            for field, _ in COLUMNS:
                with ui.element("td").classes("p-2"):
                    self.cells[field] = ui.label("")
            self.actions = ui.element("td").classes("p-1 whitespace-nowrap")
        self.ask, self.act = ask, act
        self.buttons: dict[str, ui.button] = {}

    def show(self, data: dict[str, Any]) -> None:
        self.data = data
        for field, label in self.cells.items():
            text = "" if data.get(field) is None else str(data[field])
            if label.text != text:  # an unchanged cell sends nothing to the browser
                label.text = text
        state = data["state"]
        wanted = {
            "ack": state in ACKABLE,
            "shelve": state not in ("shelved", "normal"),
            "unshelve": state == "shelved",
        }
        # A button exists only while its action applies (not hidden: the page's and the
        # tests' "first acknowledge button" is one that can be pressed).
        for action, needed in wanted.items():
            button = self.buttons.get(action)
            if needed and button is None:
                with self.actions:
                    self.buttons[action] = self._button(action)
            elif not needed and button is not None:
                self.buttons.pop(action).delete()
        for i, action in enumerate(a for a in BUTTONS if a in self.buttons):
            if self.actions.default_slot.children.index(self.buttons[action]) != i:
                self.buttons[action].move(target_index=i)

    def _button(self, action: str) -> ui.button:
        key = self.data["key"]
        if action == "unshelve":
            button = ui.button(
                t("alarms.unshelve"), on_click=lambda: self.act(self.data, action, None)
            )
        else:
            text = t("alarms.ack") if action == "ack" else t("alarms.shelve")
            button = ui.button(text, on_click=lambda: self.ask(self.data, action))
        colour = {"ack": "color=primary", "shelve": "color=secondary"}.get(action, "")
        return button.props(f'dense flat {colour} data-testid="{action}-{key}"')


@ui.page("/alarms")
async def alarms_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("alarms.title"):
        try:
            first = await client.get("/alarms")
        except ApiError as exc:  # the role (or a platform user's grant) does not allow it
            failure(exc)
            return None
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
        with (
            ui.element("table")
            .classes("w-full text-sm border-collapse")
            .props('data-testid="alarms" aria-label="alarms"')
        ):
            with ui.element("thead"), ui.element("tr").classes("border-b text-left"):
                for _, key in COLUMNS:
                    with ui.element("th").props("scope=col").classes("p-2 font-medium"):
                        ui.label(t(key))
                with ui.element("th").props("scope=col").classes("p-2 font-medium"):
                    ui.label(t("alarms.actions"))
            body = ui.element("tbody")
        empty = (
            ui.label(t("alarms.none")).classes("text-gray-600").props('data-testid="alarms-none"')
        )
        rows: dict[str, _Row] = {}
        notice = ui.label("").props('role="status" data-testid="alarm-notice"')

        def show(data: dict[str, Any]) -> None:
            """Update the table in place: cells and buttons of the rows it has, new rows
            added, gone ones removed. (A ui.table redraws its slot templates as new Vue
            components on every update, which dropped the keyboard focus; these are plain
            elements patched by key, so a focused button stays focused.)"""
            wanted = [
                {
                    **a,
                    "key": f"{a['rule']}|{a['device']}",
                    "state_text": t(f"alarm_state.{a['state']}"),
                    "priority_text": t(PRIORITY_KEYS.get(int(a["priority"]), "alarms.p3")),
                }
                for a in data["alarms"]
            ]
            keys = {r["key"] for r in wanted}
            for key in [k for k in rows if k not in keys]:
                rows.pop(key).tr.delete()
            for i, r in enumerate(wanted):
                row = rows.get(r["key"])
                if row is None:
                    with body:
                        row = rows[r["key"]] = _Row(r, comment_dialog, act)
                row.show(r)
                if body.default_slot.children.index(row.tr) != i:
                    row.tr.move(target_index=i)
            if empty.visible != (not wanted):
                empty.set_visibility(not wanted)

        async def refresh() -> None:
            params: dict[str, Any] = {}
            if state.value:
                params["state"] = state.value
            if prio.value:
                params["priority"] = prio.value
            try:
                data = await client.get("/alarms", **params)
            except ApiError as exc:  # e.g. the session or the grant ended: say so, keep rows
                notice.text = t("app.error", reason=exc.message)
                return
            show(data)

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

        state.on_value_change(lambda _: refresh())
        prio.on_value_change(lambda _: refresh())
        show(first)
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
        try:
            data = await client.get("/alarms/history", limit=200)
        except ApiError as exc:
            failure(exc)
            return None
        history.rows = [
            {**h, "to_text": t(f"alarm_state.{h['to_state']}")} for h in reversed(data["events"])
        ]
    return None
