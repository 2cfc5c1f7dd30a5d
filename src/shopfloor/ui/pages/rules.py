"""The rules editor: the tenant's rules, a form per rule kind (or the rule as JSON), the API's
validation messages at the field they name, enable / disable with a reason, delete.

Whether the controls are offered follows the caller's permissions (``GET /auth/me``:
``rules.write``); the API decides anyway, and its refusal is shown like any other error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.session import api

KINDS: Final = ("threshold", "rate", "expression", "window", "stale", "state")
# The definition fields of each kind (rules_routes.py: ThresholdDef, RateDef, ...).
FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "threshold": ("signal", "limit", "direction", "deadband", "on_delay", "off_delay"),
    "rate": ("signal", "limit", "deadband", "on_delay", "off_delay"),
    "expression": ("expression", "on_delay", "off_delay"),
    "window": ("signal", "window", "agg", "limit", "mode", "direction", "deadband"),
    "stale": ("signal", "timeout"),
    "state": ("conditions", "default"),
}
NUMBERS: Final = frozenset(
    {"limit", "deadband", "on_delay", "off_delay", "window", "timeout", "priority"}
)
DEFAULTS: Final[dict[str, Any]] = {
    "direction": "high",
    "deadband": 0.0,
    "on_delay": 0.0,
    "off_delay": 0.0,
    "agg": "avg",
    "mode": "tumbling",
    "default": "unknown",
}
_INDEX: Final = re.compile(r"\[\d+\]|\.\d+")


def kind_labels() -> dict[str, str]:
    return {
        "threshold": t("rules.kind_threshold"),
        "rate": t("rules.kind_rate"),
        "expression": t("rules.kind_expression"),
        "window": t("rules.kind_window"),
        "stale": t("rules.kind_stale"),
        "state": t("rules.kind_state"),
    }


def field_of(path: str | None) -> str | None:
    """The form field an API error names: ``definition.threshold.limit`` -> ``limit``,
    ``definition.conditions[1]`` -> ``conditions``, ``device_type`` -> ``target``."""
    if not path:
        return None
    parts = _INDEX.sub("", path).split(".")
    if parts[0] == "definition":
        parts = parts[1:]
        if len(parts) > 1 and parts[0] in KINDS:  # pydantic names the kind: drop it
            parts = parts[1:]
        if parts and parts[0] == "conditions":
            return "conditions"
        return parts[0] if parts else "kind"
    if parts[0] in ("device", "device_type"):
        return "target"
    return parts[0]


def conditions_text(conditions: list[dict[str, Any]]) -> str:
    """A state rule's conditions, one ``state: expression`` a line."""
    return "\n".join(f"{c.get('state', '')}: {c.get('expression', '')}" for c in conditions)


def parse_conditions(text: str) -> list[dict[str, str]]:
    out = []
    for line in text.splitlines():
        if line.strip():
            state, _, expression = line.partition(":")
            out.append({"expression": expression.strip(), "state": state.strip()})
    return out


def target_text(rule: dict[str, Any]) -> str:
    if rule.get("device"):
        return str(rule["device"])
    return t("rules.every_of_type", type=rule.get("device_type"))


@ui.page("/rules")
async def rules_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("rules.title"):
        me = await client.get("/auth/me")
        may_write = "rules.write" in (me.get("permissions") or [])
        if not may_write:
            ui.label(t("rules.read_only")).props('data-testid="rules-read-only"')
        notice = ui.label("").props('role="status" data-testid="rules-notice"')
        top = ui.column().classes("w-full gap-2")  # New rule and the editor, above the list
        columns: list[dict[str, Any]] = [
            {
                "name": "name",
                "label": t("rules.name"),
                "field": "name",
                "align": "left",
                "sortable": True,
            },
            {
                "name": "kind",
                "label": t("rules.kind"),
                "field": "kind_text",
                "align": "left",
                "sortable": True,
            },
            {"name": "target", "label": t("rules.target"), "field": "target_text", "align": "left"},
            {
                "name": "priority",
                "label": t("rules.priority"),
                "field": "priority",
                "align": "left",
            },
            {
                "name": "enabled",
                "label": t("rules.enabled"),
                "field": "enabled_text",
                "align": "left",
            },
            {
                "name": "reason",
                "label": t("rules.disabled_reason"),
                "field": "reason_text",
                "align": "left",
            },
        ]
        if may_write:
            columns.append(
                {"name": "actions", "label": t("rules.actions"), "field": "name", "align": "left"}
            )
        table = (
            ui.table(columns=columns, rows=[], row_key="name", pagination=50)
            .props('dense data-testid="rules" aria-label="rules"')
            .classes("w-full")
        )
        if may_write:
            table.add_slot(
                "body-cell-actions",
                f"""
                <q-td :props="props">
                  <q-btn dense flat color="primary" label="{t("rules.edit")}"
                    :aria-label="'{t("rules.edit")} ' + props.row.name"
                    :data-testid="'edit-' + props.row.name"
                    @click="$parent.$emit('edit', props.row)" />
                  <q-btn dense flat color="secondary" label="{t("rules.disable")}"
                    v-if="props.row.enabled"
                    :aria-label="'{t("rules.disable")} ' + props.row.name"
                    :data-testid="'disable-' + props.row.name"
                    @click="$parent.$emit('disable', props.row)" />
                  <q-btn dense flat color="secondary" label="{t("rules.enable")}"
                    v-if="!props.row.enabled"
                    :aria-label="'{t("rules.enable")} ' + props.row.name"
                    :data-testid="'enable-' + props.row.name"
                    @click="$parent.$emit('enable', props.row)" />
                  <q-btn dense flat color="negative" label="{t("rules.delete")}"
                    :aria-label="'{t("rules.delete")} ' + props.row.name"
                    :data-testid="'delete-' + props.row.name"
                    @click="$parent.$emit('delete', props.row)" />
                </q-td>
                """,
            )
        rules: dict[str, dict[str, Any]] = {}

        async def refresh() -> None:
            data = await client.get("/rules")
            rules.clear()
            labels = kind_labels()
            rows = []
            for r in data["rules"]:
                rules[r["name"]] = r
                rows.append(
                    {
                        **r,
                        "kind_text": labels.get(r["kind"], r["kind"]),
                        "target_text": target_text(r),
                        "enabled_text": t("rules.yes") if r["enabled"] else t("rules.no"),
                        "reason_text": r.get("disabled_reason") or "",
                    }
                )
            table.rows = rows
            table.update()

        try:
            await refresh()
        except ApiError as exc:  # e.g. a role without registry.read
            notice.text = t("app.error", reason=exc.message)
            return None
        if not may_write:
            return None

        devices = sorted(d["name"] for d in await client.get("/devices"))
        types = sorted(d["name"] for d in await client.get("/device-types"))
        editing: dict[str, Any] = {"name": None, "actions": []}

        with top:
            ui.button(t("rules.new"), on_click=lambda: open_editor(None)).props(
                'data-testid="rule-new" icon=add'
            )
            editor = (
                ui.card()
                .classes("w-full")
                .props(f'data-testid="rule-editor" role="region" aria-label="{t("rules.editor")}"')
            )
            editor.visible = False
            inputs: dict[str, Any] = {}
            with editor:
                heading = ui.label("").classes("text-lg").props('role="heading" aria-level="2"')
                mode = ui.toggle(
                    {"form": t("rules.mode_form"), "json": t("rules.mode_json")}, value="form"
                ).props(f'data-testid="rule-mode" aria-label="{t("rules.mode")}"')
                form = ui.column().classes("w-full gap-2")
                with form:
                    with ui.row().classes("items-start gap-4"):
                        inputs["name"] = ui.input(t("rules.name")).props('data-testid="rule-name"')
                        inputs["target_kind"] = (
                            ui.select(
                                {"device": t("rules.on_device"), "device_type": t("rules.on_type")},
                                value="device",
                                label=t("rules.target_kind"),
                            )
                            .props(
                                f'data-testid="rule-target-kind" aria-label="{t("rules.target_kind")}"'
                            )
                            .classes("w-48")
                        )
                        inputs["target"] = (
                            ui.select(devices, label=t("rules.target"), with_input=True)
                            .props(f'data-testid="rule-target" aria-label="{t("rules.target")}"')
                            .classes("w-56")
                        )
                        inputs["priority"] = (
                            ui.select(
                                {
                                    1: t("alarms.p1"),
                                    2: t("alarms.p2"),
                                    3: t("alarms.p3"),
                                    4: t("alarms.p4"),
                                },
                                value=3,
                                label=t("rules.priority"),
                            )
                            .props(
                                f'data-testid="rule-priority" aria-label="{t("rules.priority")}"'
                            )
                            .classes("w-36")
                        )
                    inputs["message"] = (
                        ui.input(t("rules.message"))
                        .props('data-testid="rule-message"')
                        .classes("w-full")
                    )
                    inputs["kind"] = (
                        ui.select(kind_labels(), value="threshold", label=t("rules.kind"))
                        .props(f'data-testid="rule-kind" aria-label="{t("rules.kind")}"')
                        .classes("w-56")
                    )
                    with ui.row().classes("items-start gap-4 w-full"):
                        inputs["signal"] = ui.input(t("rules.signal")).props(
                            'data-testid="rule-signal"'
                        )
                        inputs["expression"] = (
                            ui.input(t("rules.expression"))
                            .props('data-testid="rule-expression" spellcheck=false')
                            .classes("w-full font-mono")
                        )
                        inputs["conditions"] = (
                            ui.textarea(t("rules.conditions"))
                            .props('data-testid="rule-conditions" spellcheck=false')
                            .classes("w-full font-mono")
                        )
                        inputs["default"] = (
                            ui.select(
                                {
                                    "unknown": t("rules.state_unknown"),
                                    "running": t("rules.state_running"),
                                    "idle": t("rules.state_idle"),
                                    "down": t("rules.state_down"),
                                    "setup": t("rules.state_setup"),
                                },
                                value="unknown",
                                label=t("rules.default_state"),
                            )
                            .props(
                                f'data-testid="rule-default" aria-label="{t("rules.default_state")}"'
                            )
                            .classes("w-40")
                        )
                        inputs["agg"] = (
                            ui.select(
                                {
                                    "avg": t("rules.agg_avg"),
                                    "min": t("rules.agg_min"),
                                    "max": t("rules.agg_max"),
                                    "count": t("rules.agg_count"),
                                    "stddev": t("rules.agg_stddev"),
                                },
                                value="avg",
                                label=t("rules.agg"),
                            )
                            .props(f'data-testid="rule-agg" aria-label="{t("rules.agg")}"')
                            .classes("w-40")
                        )
                        inputs["window"] = ui.number(t("rules.window")).props(
                            'data-testid="rule-window"'
                        )
                        inputs["mode"] = (
                            ui.select(
                                {"tumbling": t("rules.tumbling"), "sliding": t("rules.sliding")},
                                value="tumbling",
                                label=t("rules.window_mode"),
                            )
                            .props(
                                f'data-testid="rule-window-mode" aria-label="{t("rules.window_mode")}"'
                            )
                            .classes("w-40")
                        )
                        inputs["limit"] = ui.number(t("rules.limit")).props(
                            'data-testid="rule-limit"'
                        )
                        inputs["direction"] = (
                            ui.select(
                                {"high": t("rules.high"), "low": t("rules.low")},
                                value="high",
                                label=t("rules.direction"),
                            )
                            .props(
                                f'data-testid="rule-direction" aria-label="{t("rules.direction")}"'
                            )
                            .classes("w-32")
                        )
                        inputs["deadband"] = ui.number(t("rules.deadband"), value=0.0).props(
                            'data-testid="rule-deadband"'
                        )
                        inputs["timeout"] = ui.number(t("rules.timeout")).props(
                            'data-testid="rule-timeout"'
                        )
                        inputs["on_delay"] = ui.number(t("rules.on_delay"), value=0.0).props(
                            'data-testid="rule-on-delay"'
                        )
                        inputs["off_delay"] = ui.number(t("rules.off_delay"), value=0.0).props(
                            'data-testid="rule-off-delay"'
                        )
                inputs["json"] = (
                    ui.textarea(t("rules.json"))
                    .props('data-testid="rule-json" spellcheck=false autogrow')
                    .classes("w-full font-mono")
                )
                inputs["json"].visible = False
                problem = (
                    ui.label("")
                    .classes("text-red-700")
                    .props('role="alert" data-testid="rule-error"')
                )
                with ui.row():
                    ui.button(t("rules.save"), on_click=lambda: save()).props(
                        'data-testid="rule-save"'
                    )
                    ui.button(t("app.cancel"), on_click=lambda: close_editor()).props(
                        'flat data-testid="rule-cancel"'
                    )

        def show_kind_fields() -> None:
            wanted = FIELDS[str(inputs["kind"].value)]
            for fields in FIELDS.values():
                for f in fields:
                    inputs[f].visible = f in wanted

        def retarget() -> None:
            el = inputs["target"]
            el.options = devices if inputs["target_kind"].value == "device" else types
            if el.value not in el.options:
                el.value = None
            el.update()

        inputs["kind"].on_value_change(lambda _: show_kind_fields())
        inputs["target_kind"].on_value_change(lambda _: retarget())
        show_kind_fields()

        def clear_errors() -> None:
            problem.text = ""
            for el in inputs.values():
                el.props.pop("error", None)
                el.props.pop("error-message", None)

        def show_error(path: str | None, message: str) -> None:
            text = f"{path}: {message}" if path else message
            name = "json" if mode.value == "json" else field_of(path)
            el = inputs.get(name or "")
            if el is None or not el.visible:
                problem.text = t("app.error", reason=text)
                return
            el.props["error"] = True
            el.props["error-message"] = text

        def body_from_form() -> dict[str, Any]:
            kind = str(inputs["kind"].value)
            definition: dict[str, Any] = {"kind": kind}
            for f in FIELDS[kind]:
                value = inputs[f].value
                if f == "conditions":
                    value = parse_conditions(str(value or ""))
                if value is None:
                    continue  # left out: the API names it when it is required
                definition[f] = value
            body: dict[str, Any] = {
                str(inputs["target_kind"].value): inputs["target"].value,
                "priority": inputs["priority"].value,
                "message": inputs["message"].value or "",
                "definition": definition,
                "actions": editing["actions"],
            }
            if editing["name"] is None:
                body = {"name": inputs["name"].value or "", **body}
            return body

        def form_from_body(body: dict[str, Any]) -> None:
            definition = dict(body.get("definition") or {})
            # a stored rule (RuleOut) names its kind beside the definition; a body inside it
            kind = str(definition.get("kind") or body.get("kind") or "threshold")
            inputs["name"].value = body.get("name") or editing["name"] or ""
            target_kind = "device_type" if body.get("device_type") else "device"
            inputs["target_kind"].value = target_kind
            retarget()
            target = inputs["target"]
            value = body.get(target_kind)
            if value is not None and value not in target.options:  # the API will name it
                target.options = [*target.options, value]
                target.update()
            target.value = value
            inputs["priority"].value = body.get("priority", 3)
            inputs["message"].value = body.get("message", "")
            inputs["kind"].value = kind if kind in KINDS else "threshold"
            for fields in FIELDS.values():
                for f in fields:
                    value = definition.get(f, DEFAULTS.get(f))
                    if f == "conditions":
                        value = conditions_text(list(value or []))
                    elif f not in NUMBERS and value is None:
                        value = ""
                    inputs[f].value = value
            editing["actions"] = list(body.get("actions") or [])
            show_kind_fields()

        def switch_mode() -> None:
            if editing.get("quiet"):
                return
            clear_errors()
            if mode.value == "json":
                inputs["json"].value = json.dumps(body_from_form(), indent=2, ensure_ascii=False)
                form.visible, inputs["json"].visible = False, True
                return
            try:
                parsed = json.loads(inputs["json"].value or "{}")
                if not isinstance(parsed, dict):
                    raise ValueError(t("rules.json_object"))
                form_from_body(parsed)
            except ValueError as exc:  # not a rule the form can show: stay with the text
                set_mode("json")
                show_error(None, t("rules.bad_json", reason=exc))
                return
            form.visible, inputs["json"].visible = True, False

        def set_mode(value: str) -> None:
            editing["quiet"] = True
            try:
                mode.value = value
            finally:
                editing["quiet"] = False

        mode.on_value_change(lambda _: switch_mode())

        def open_editor(name: str | None) -> None:
            clear_errors()
            editing["name"] = name
            rule = rules.get(name or "", {})
            heading.text = t("rules.edit_title", name=name) if name else t("rules.new_title")
            form_from_body(rule or {"definition": {"kind": "threshold"}})
            inputs["name"].enabled = name is None
            set_mode("form")
            form.visible, inputs["json"].visible = True, False
            editor.visible = True
            (inputs["message"] if name else inputs["name"]).run_method("focus")

        def close_editor() -> None:
            editor.visible = False
            editing["name"] = None

        async def save() -> None:
            clear_errors()
            if mode.value == "json":
                try:
                    body = json.loads(inputs["json"].value or "")
                    if not isinstance(body, dict):
                        raise ValueError(t("rules.json_object"))
                except ValueError as exc:
                    show_error(None, t("rules.bad_json", reason=exc))
                    return
                if editing["name"] is not None:
                    body.pop("name", None)  # the name of a stored rule does not change
            else:
                body = body_from_form()
            name = editing["name"]
            try:
                if name is None:
                    saved = await client.post("/rules", body)
                else:
                    saved = await client.put(f"/rules/{name}", body)
            except ApiError as exc:
                show_error(exc.field, exc.message)
                return
            close_editor()
            notice.text = t("rules.saved", name=saved["name"])
            await refresh()

        async def call(path: str, body: Any, done: str) -> None:
            try:
                await client.post(path, body)
            except ApiError as exc:
                notice.text = t("app.error", reason=exc.message)
                return
            notice.text = done
            await refresh()

        def disable_dialog(row: dict[str, Any]) -> None:
            name = str(row["name"])
            with ui.dialog() as dialog, ui.card():
                ui.label(t("rules.disable_title", name=name))
                reason = (
                    ui.input(t("rules.reason"))
                    .props('autofocus data-testid="disable-reason"')
                    .classes("w-96")
                )

                async def ok() -> None:
                    dialog.close()
                    text = str(reason.value or "").strip()
                    await call(
                        f"/rules/{name}/disable",
                        {"reason": text} if text else None,
                        t("rules.disabled", name=name),
                    )

                reason.on("keydown.enter", ok)
                with ui.row():
                    ui.button(t("rules.disable"), on_click=ok).props('data-testid="disable-ok"')
                    ui.button(t("app.cancel"), on_click=dialog.close).props("flat")
            dialog.open()

        def delete_dialog(row: dict[str, Any]) -> None:
            name = str(row["name"])
            with ui.dialog() as dialog, ui.card():
                ui.label(t("rules.delete_confirm", name=name))

                async def ok() -> None:
                    dialog.close()
                    try:
                        await client.request("DELETE", f"/rules/{name}")
                    except ApiError as exc:
                        notice.text = t("app.error", reason=exc.message)
                        return
                    notice.text = t("rules.deleted", name=name)
                    await refresh()

                with ui.row():
                    ui.button(t("rules.delete"), on_click=ok).props(
                        'color=negative data-testid="delete-ok"'
                    )
                    ui.button(t("app.cancel"), on_click=dialog.close).props("flat autofocus")
            dialog.open()

        def on(event: str, handler: Callable[[dict[str, Any]], Any]) -> None:
            table.on(event, lambda e: handler(dict(e.args)))

        on("edit", lambda row: open_editor(str(row["name"])))
        on("disable", disable_dialog)
        on("delete", delete_dialog)
        on(
            "enable",
            lambda row: call(
                f"/rules/{row['name']}/enable", None, t("rules.enabled_done", name=row["name"])
            ),
        )
    return None
