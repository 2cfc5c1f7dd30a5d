"""Dashboards: compose a grid of widgets, keep it for oneself or share it with the tenant,
watch it live, export it as a JSON file and import such a file.

``/dashboards`` lists the caller's own and the tenant's shared dashboards, creates one and
imports a file; ``/dashboards/{id}`` shows one live (charts over ``/downsample``, values from
``/latest`` every few seconds, alarms from ``/alarms``, the OEE tile from the OEE app when it
runs) and edits it: widgets are added in the page and kept with "Save"; each widget's own
buttons edit its settings in a dialog, move it up or down or remove it, and keep the dashboard
at once (PUT), redrawing the widgets but not the page. Who may
change what is decided by the API (``api/dashboard_routes.py``); the page only hides the
controls a read-only dashboard would refuse.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui
from nicegui.events import UploadEventArguments

from shopfloor.ui.client import ApiClient, ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import failure, frame, require_login
from shopfloor.ui.pages.machine import bucket_for
from shopfloor.ui.pages.tree import STATE_COLOURS, STATE_KEYS
from shopfloor.ui.session import api

REFRESH_S: Final = 5.0  # values, alarms, OEE
CHART_EVERY: Final = 3  # charts and timelines every third refresh (15 s)
RANGES: Final = ("15m", "1h", "6h", "24h", "7d")
SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_IMPORT_BYTES: Final = 1_000_000

Updater = Callable[[bool], Awaitable[None]]


def kind_labels() -> dict[str, str]:
    return {
        "line_chart": t("dashboards.kind_line_chart"),
        "gauge": t("dashboards.kind_gauge"),
        "value_card": t("dashboards.kind_value_card"),
        "state_timeline": t("dashboards.kind_state_timeline"),
        "alarm_list": t("dashboards.kind_alarm_list"),
        "oee_tile": t("dashboards.kind_oee_tile"),
    }


def scope_labels() -> dict[str, str]:
    return {"user": t("dashboards.scope_user"), "tenant": t("dashboards.scope_tenant")}


def width_labels() -> dict[int, str]:
    return {
        3: t("dashboards.width_3"),
        4: t("dashboards.width_4"),
        6: t("dashboards.width_6"),
        12: t("dashboards.width_12"),
    }


def range_seconds(text: str) -> int:
    """``"6h"`` -> 21600 (the API checked the form)."""
    return int(text[:-1]) * SECONDS[text[-1]]


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def widget_title(w: dict[str, Any]) -> str:
    if w.get("title"):
        return str(w["title"])
    what = ", ".join(w.get("signals") or []) or w.get("device") or ""
    return f"{kind_labels()[w['kind']]} {what}".strip()


def _refused(exc: ApiError) -> str:
    return t("dashboards.failed", reason=exc.message, field=exc.field or "-")


def _attr(text: str) -> str:
    """Text safe inside a double-quoted prop (user-given titles and names)."""
    return text.replace('"', "'").replace("\n", " ")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "dashboard"


# -- the list: create and import ---------------------------------------------------------------


@ui.page("/dashboards")
async def dashboards_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("dashboards.title"):
        notice = ui.label("").props('role="status" data-testid="dash-notice"')

        @ui.refreshable
        async def listing() -> None:
            try:
                boards = (await client.get("/dashboards"))["dashboards"]
            except ApiError as exc:
                failure(exc)
                return
            if not boards:
                ui.label(t("dashboards.none")).props('data-testid="dash-none"')
                return
            scopes = scope_labels()
            with (
                ui.column()
                .classes("gap-1")
                .props(f'role="list" data-testid="dash-list" aria-label="{t("dashboards.list")}"')
            ):
                for b in boards:
                    with ui.row().classes("items-center gap-3").props('role="listitem"'):
                        ui.link(b["name"], f"/dashboards/{b['id']}").classes("text-lg").props(
                            f'data-testid="dash-{b["id"]}"'
                        )
                        ui.label(
                            t(
                                "dashboards.summary",
                                id=b["id"],
                                scope=scopes[b["scope"]],
                                widgets=len(b["widgets"]),
                                owner=b["created_by"],
                            )
                        ).classes("text-sm text-gray-600")

        ui.label(t("dashboards.list")).classes("text-lg")
        await listing()
        ui.separator()

        ui.label(t("dashboards.new")).classes("text-lg").props('role="heading" aria-level="2"')
        with ui.row().classes("items-end gap-4"):
            name = (
                ui.input(t("dashboards.name"))
                .props('data-testid="new-name" maxlength=200')
                .classes("w-72")
            )
            scope = (
                ui.select(scope_labels(), value="user", label=t("dashboards.scope"))
                .props('data-testid="new-scope" aria-label="scope"')
                .classes("w-64")
            )

            async def create() -> None:
                if not name.value.strip():
                    notice.text = t("dashboards.name_needed")
                    return
                body = {"name": name.value.strip(), "scope": scope.value, "widgets": []}
                try:
                    made = await client.post("/dashboards", body)
                except ApiError as exc:
                    notice.text = _refused(exc)
                    return
                ui.navigate.to(f"/dashboards/{made['id']}")

            name.on("keydown.enter", create)
            ui.button(t("dashboards.create"), on_click=create).props('data-testid="create"')

        ui.label(t("dashboards.import")).classes("text-lg").props('role="heading" aria-level="2"')

        async def imported(e: UploadEventArguments) -> None:
            try:
                doc = json.loads(await e.file.text())
            except (UnicodeDecodeError, ValueError) as exc:
                notice.text = t("dashboards.not_json", reason=str(exc))
                return
            finally:
                upload.reset()
            try:
                made = await client.post("/dashboards/import", doc)
            except ApiError as exc:
                notice.text = _refused(exc)
                return
            notice.text = t("dashboards.imported", name=made["name"])
            listing.refresh()

        upload = (
            ui.upload(
                label=t("dashboards.import_file"),
                auto_upload=True,
                max_file_size=MAX_IMPORT_BYTES,
                on_upload=imported,
            )
            .props(
                f'accept=".json,application/json" data-testid="import" '
                f'aria-label="{t("dashboards.import_file")}"'
            )
            .classes("w-96")
        )
    return None


# -- one dashboard: live widgets, editing ------------------------------------------------------


async def _value_card(client: ApiClient, w: dict[str, Any]) -> Updater:
    unit = w["options"].get("unit") or ""
    with ui.row().classes("items-baseline gap-2"):
        value = ui.label("…").classes("text-4xl font-bold").props('data-testid="value"')
        ui.label(unit).classes("text-lg text-gray-600")
    when = ui.label("").classes("text-xs text-gray-500")

    async def update(_full: bool) -> None:
        points = (await client.get("/latest", signal=w["signals"]))["points"]
        point = points[0] if points else None
        if point is None or point.get("value") is None:
            value.text, when.text = "–", t("dashboards.no_data")
            return
        value.text = fmt(point["value"])
        when.text = t("dashboards.updated", time=point["ts"])

    return update


async def _gauge(client: ApiClient, w: dict[str, Any]) -> Updater:
    opts = w["options"]
    lo = opts.get("min") if opts.get("min") is not None else 0.0
    hi = opts.get("max") if opts.get("max") is not None else 100.0
    chart = ui.echart(
        {
            "series": [
                {
                    "type": "gauge",
                    "min": lo,
                    "max": hi,
                    "progress": {"show": True},
                    "axisLabel": {"distance": 16, "fontSize": 10},
                    "detail": {
                        "formatter": "{value} " + (opts.get("unit") or ""),
                        "offsetCenter": [0, "80%"],
                        "fontSize": 22,
                    },
                    "data": [{"value": None}],
                }
            ]
        }
    ).classes("w-full h-56")
    chart.props('data-testid="gauge"')
    empty = ui.label("").classes("text-xs text-gray-500")

    async def update(_full: bool) -> None:
        points = (await client.get("/latest", signal=w["signals"]))["points"]
        v = points[0].get("value") if points else None
        empty.text = t("dashboards.no_data") if v is None else ""
        chart.options["series"][0]["data"] = [{"value": None if v is None else round(v, 3)}]
        chart.update()

    return update


async def _line_chart(client: ApiClient, w: dict[str, Any]) -> Updater:
    span = range_seconds(w["options"].get("range") or "1h")
    chart = ui.echart(
        {
            "tooltip": {"trigger": "axis"},
            "legend": {"type": "scroll"},
            "xAxis": {"type": "time"},
            "yAxis": {"type": "value", "scale": True, "name": w["options"].get("unit") or ""},
            "series": [],
        }
    ).classes("w-full h-64")
    chart.props('data-testid="line-chart"')
    empty = ui.label("").classes("text-xs text-gray-500")

    async def update(full: bool) -> None:
        if not full:
            return
        data = await client.get(
            "/downsample",
            signal=w["signals"],
            start=f"-{span}s",
            end="now",
            interval=bucket_for(span),
            agg=["avg"],
            time_format="ms",
        )
        series = [
            {
                "name": s["signal"],
                "type": "line",
                "showSymbol": False,
                "data": [
                    [b, v] for b, v in zip(s["bucket"], s["avg"], strict=True) if v is not None
                ],
            }
            for s in data["series"]
        ]
        points = sum(len(s["data"]) for s in series)
        empty.text = t("dashboards.no_data") if points < 2 else t("dashboards.points", n=points)
        chart.options["series"] = series
        chart.update()

    return update


async def _state_timeline(client: ApiClient, w: dict[str, Any]) -> Updater:
    key = w["signals"][0] if w["signals"] else f"{w['device']}/state"
    span = range_seconds(w["options"].get("range") or "1h")
    chart = ui.echart(
        {
            "tooltip": {},
            "xAxis": {"type": "time"},
            "yAxis": {"type": "category", "data": [t("dashboards.state")]},
            "series": [],
        }
    ).classes("w-full h-24")
    chart.props('data-testid="state-timeline"')
    now = ui.label("").classes("text-sm")

    async def update(full: bool) -> None:
        if not full:
            return
        data = await client.get(
            "/downsample",
            signal=[key],
            start=f"-{span}s",
            end="now",
            interval=bucket_for(span),
            agg=["last"],
            time_format="ms",
        )
        bars, last = [], None
        for s in data["series"]:
            for b, v in zip(s["bucket"], s["last"], strict=True):
                if v is None:
                    continue
                last = int(v)
                colour = STATE_COLOURS.get(last, "grey")
                bars.append({"value": [b, 0], "itemStyle": {"color": colour}})
        chart.options["series"] = [
            {"type": "scatter", "symbol": "rect", "symbolSize": [6, 30], "data": bars}
        ]
        chart.update()
        now.text = (
            t("dashboards.no_data") if last is None else t(STATE_KEYS.get(last, "state.unknown"))
        )

    return update


async def _alarm_list(client: ApiClient, w: dict[str, Any]) -> Updater:
    table = ui.table(
        columns=[
            {"name": "device", "label": t("alarms.device"), "field": "device"},
            {"name": "rule", "label": t("alarms.rule"), "field": "rule"},
            {"name": "state", "label": t("alarms.state"), "field": "state_text"},
            {"name": "since", "label": t("alarms.since"), "field": "last_change"},
        ],
        rows=[],
        row_key="key",
    ).props(f'dense flat data-testid="alarm-list" aria-label="{t("dashboards.kind_alarm_list")}"')
    table.classes("w-full")
    empty = ui.label("").classes("text-xs text-gray-500")

    async def update(_full: bool) -> None:
        params = {"device": w["device"]} if w.get("device") else {}
        alarms = (await client.get("/alarms", **params))["alarms"]
        shown = [a for a in alarms if a["state"] != "normal"][:20]
        table.rows = [
            {
                **a,
                "key": f"{a['rule']}|{a['device']}",
                "state_text": t(f"alarm_state.{a['state']}"),
            }
            for a in shown
        ]
        table.update()
        empty.text = "" if shown else t("dashboards.no_alarms")

    return update


async def _oee_tile(client: ApiClient, w: dict[str, Any]) -> Updater:
    big = ui.label("…").classes("text-4xl font-bold").props('data-testid="oee"')
    parts = ui.label("").classes("text-sm")
    shift = ui.label("").classes("text-xs text-gray-500")

    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * float(v):.1f} %"

    async def update(_full: bool) -> None:
        try:
            cur = await client.get("/apps/oee/current")
        except ApiError as exc:
            if exc.status in (403, 404):
                big.text, parts.text = "–", t("dashboards.oee_not_running")
                return
            raise
        if w.get("device"):
            found = [r for r in cur.get("machines", []) if r.get("machine") == w["device"]]
        else:
            found = list(cur.get("sites", []))
        kpis = found[0].get("kpis", {}) if found else {}
        if cur.get("shift") is None or kpis.get("oee") is None:
            big.text, parts.text = "–", t("dashboards.no_data")
        else:
            big.text = pct(kpis["oee"])
            parts.text = t(
                "dashboards.oee_parts",
                a=pct(kpis.get("availability")),
                p=pct(kpis.get("effectiveness")),
                q=pct(kpis.get("quality_ratio")),
            )
        shift.text = t("dashboards.shift", shift=cur["shift"]["label"]) if cur.get("shift") else ""

    return update


WIDGETS: Final[dict[str, Callable[[ApiClient, dict[str, Any]], Awaitable[Updater]]]] = {
    "line_chart": _line_chart,
    "gauge": _gauge,
    "value_card": _value_card,
    "state_timeline": _state_timeline,
    "alarm_list": _alarm_list,
    "oee_tile": _oee_tile,
}


async def _options(client: ApiClient) -> tuple[list[str], list[str]]:
    """The tenant's signal keys and device names the caller may see (for the pickers)."""
    try:
        signals = sorted(str(s["key"]) for s in await client.get("/signals"))
        devices = sorted(str(d["name"]) for d in await client.get("/devices"))
    except ApiError:
        return [], []
    return signals, devices


@ui.page("/dashboards/{dashboard_id}")
async def dashboard_page(dashboard_id: int) -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("dashboards.title"):
        ui.link(t("dashboards.back"), "/dashboards").props('data-testid="back"')
        try:
            board = await client.get(f"/dashboards/{dashboard_id}")
        except ApiError as exc:
            if exc.status == 403:
                failure(exc)
            else:
                ui.label(t("app.error", reason=exc.message)).classes("text-red-700").props(
                    'role="alert" data-testid="board-error"'
                )
            return None
        editable = bool(board["editable"])
        widgets: list[dict[str, Any]] = list(board["widgets"])
        updaters: list[Updater] = []
        ticks = [0]

        with ui.row().classes("items-end gap-4 w-full"):
            name = (
                ui.input(t("dashboards.name"), value=board["name"])
                .props('data-testid="board-name" maxlength=200')
                .classes("w-72")
            )
            scope = (
                ui.select(scope_labels(), value=board["scope"], label=t("dashboards.scope"))
                .props('data-testid="board-scope" aria-label="scope"')
                .classes("w-64")
            )
            save = ui.button(t("dashboards.save")).props('data-testid="save"')
            export = ui.button(t("dashboards.export")).props('outline data-testid="export"')
            delete = ui.button(t("dashboards.delete")).props(
                'outline color=negative data-testid="delete"'
            )
        status = ui.label("").props('role="status" data-testid="board-status"')
        if not editable:
            for control in (name, scope, save, delete):
                control.disable()
            ui.label(t("dashboards.read_only")).classes("text-gray-600").props(
                'data-testid="read-only"'
            )

        def dirty() -> None:
            status.text = t("dashboards.unsaved")

        name.on_value_change(lambda _: dirty())
        scope.on_value_change(lambda _: dirty())

        async def do_save() -> bool:
            body = {"name": name.value.strip(), "scope": scope.value, "widgets": widgets}
            try:
                saved = await client.put(f"/dashboards/{dashboard_id}", body)
            except ApiError as exc:
                status.text = _refused(exc)
                return False
            status.text = t("dashboards.saved", name=saved["name"])
            return True

        async def do_export() -> None:
            try:
                doc = await client.get(f"/dashboards/{dashboard_id}/export")
            except ApiError as exc:
                status.text = _refused(exc)
                return
            text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
            ui.download.content(text, f"{_slug(doc['dashboard']['name'])}.json", "application/json")
            status.text = t("dashboards.exported", name=doc["dashboard"]["name"])

        def ask_delete() -> None:
            with ui.dialog() as dialog, ui.card():
                ui.label(t("dashboards.delete_title", name=name.value))

                async def yes() -> None:
                    try:
                        await client.request("DELETE", f"/dashboards/{dashboard_id}")
                    except ApiError as exc:
                        status.text = _refused(exc)
                        dialog.close()
                        return
                    dialog.close()
                    ui.navigate.to("/dashboards")

                with ui.row():
                    ui.button(t("dashboards.delete"), on_click=yes).props(
                        'color=negative data-testid="delete-ok"'
                    )
                    ui.button(t("app.cancel"), on_click=dialog.close).props("flat")
            dialog.open()

        save.on_click(do_save)
        export.on_click(do_export)
        delete.on_click(ask_delete)

        @ui.refreshable
        async def grid() -> None:
            updaters.clear()
            if not widgets:
                ui.label(t("dashboards.empty")).props('data-testid="no-widgets"')
                return
            with (
                ui.element("div")
                .classes("grid grid-cols-12 gap-4 w-full")
                .props('data-testid="widgets"')
            ):
                for i, w in enumerate(widgets):
                    span = int(w.get("w") or 6)
                    tall = (
                        f"; min-height: {12 * int(w['h'])}rem" if int(w.get("h") or 1) > 1 else ""
                    )
                    card = (
                        ui.card()
                        .classes("min-w-0")
                        .style(f"grid-column: span {span} / span {span}{tall}")
                    )
                    with card.props(
                        f'data-testid="widget-{i}" role="region" aria-label="{_attr(widget_title(w))}"'
                    ):
                        with ui.row().classes("w-full items-center"):
                            ui.label(widget_title(w)).classes("font-bold")
                            ui.space()
                            if editable:
                                _widget_buttons(i, len(widgets), move, edit, remove)
                        error = ui.label("").classes("text-xs text-red-700")
                        update = await WIDGETS[w["kind"]](client, w)
                        updaters.append(_guarded(update, error))
            # Filled after the page is out: a slow source (an app in a long update) must not
            # hold the page, nor one widget the others.
            ui.timer(0.05, lambda: _run_all(list(updaters), True), once=True)

        async def keep(changed: list[dict[str, Any]]) -> bool:
            """Store the dashboard with ``changed`` as its widgets; on a refusal keep the old
            ones (the status line names the API's reason)."""
            before = list(widgets)
            widgets[:] = changed
            if not await do_save():
                widgets[:] = before
                return False
            await grid.refresh()
            return True

        async def remove(i: int) -> None:
            await keep(widgets[:i] + widgets[i + 1 :])

        async def move(i: int, step: int) -> None:
            j = i + step
            if not 0 <= j < len(widgets):
                return
            order = list(widgets)
            order[i], order[j] = order[j], order[i]
            await keep(order)

        def edit(i: int) -> None:
            async def store(changed: dict[str, Any]) -> bool:
                return await keep([changed if k == i else w for k, w in enumerate(widgets)])

            with dialogs:  # outside the grid: storing redraws the grid, not the dialog
                _edit_dialog(i, widgets[i], signals, devices, store, status)

        dialogs = ui.element("div")
        signals: list[str] = []
        devices: list[str] = []
        if editable:
            signals, devices = await _options(client)
            with (
                ui.expansion(t("dashboards.add_widget"), icon="add", value=True)
                .classes("w-full")
                .props('data-testid="add-widget"')
            ):
                await _widget_form(signals, devices, widgets, grid, dirty)

        await grid()

        async def tick() -> None:
            ticks[0] += 1
            full = ticks[0] % CHART_EVERY == 0
            await _run_all(list(updaters), full)

        ui.timer(REFRESH_S, tick)
    return None


def _widget_buttons(
    i: int,
    count: int,
    move: Callable[[int, int], Awaitable[None]],
    edit: Callable[[int], None],
    remove: Callable[[int], Awaitable[None]],
) -> None:
    """A widget's own controls: move up, move down, edit, remove (each labelled)."""
    up = ui.button(icon="arrow_upward", on_click=lambda: move(i, -1)).props(
        f'flat dense round data-testid="up-{i}" aria-label="{t("dashboards.move_up", n=i + 1)}"'
    )
    down = ui.button(icon="arrow_downward", on_click=lambda: move(i, 1)).props(
        f'flat dense round data-testid="down-{i}" aria-label="{t("dashboards.move_down", n=i + 1)}"'
    )
    if i == 0:
        up.disable()
    if i == count - 1:
        down.disable()
    ui.button(icon="edit", on_click=lambda: edit(i)).props(
        f'flat dense round data-testid="edit-{i}" aria-label="{t("dashboards.edit_widget", n=i + 1)}"'
    )
    ui.button(icon="close", on_click=lambda: remove(i)).props(
        f'flat dense round data-testid="remove-{i}" '
        f'aria-label="{t("dashboards.remove_widget", n=i + 1)}"'
    )


def _edit_dialog(
    i: int,
    w: dict[str, Any],
    signals: list[str],
    devices: list[str],
    store: Callable[[dict[str, Any]], Awaitable[bool]],
    status: ui.label,
) -> None:
    """The settings of widget ``i`` in a dialog; "Save" stores the dashboard at once."""
    opts = dict(w.get("options") or {})
    # The widget's own values stay choosable even when the pickers' lists lack them (a signal
    # since removed, a device out of the caller's view): the API decides on saving.
    signal_choices = sorted(set(signals) | set(w.get("signals") or []))
    device_choices = {"": t("dashboards.any_device"), **{d: d for d in devices}}
    if w.get("device") and w["device"] not in device_choices:
        device_choices[w["device"]] = w["device"]
    heading = t("dashboards.edit_title", n=i + 1, kind=kind_labels()[w["kind"]])
    with (
        ui.dialog() as dialog,
        ui.card()
        .classes("w-[44rem] max-w-full")
        .props(f'data-testid="edit-dialog" role="dialog" aria-label="{_attr(heading)}"'),
    ):
        ui.label(heading).classes("text-lg").props('role="heading" aria-level="2"')
        title = (
            ui.input(t("dashboards.widget_title"), value=w.get("title") or "")
            .props('data-testid="e-title" maxlength=200 autofocus')
            .classes("w-full")
        )
        picked = (
            ui.select(
                signal_choices,
                multiple=True,
                with_input=True,
                value=list(w.get("signals") or []),
                label=t("dashboards.signals"),
            )
            .props('use-chips data-testid="e-signals" aria-label="signals"')
            .classes("w-full")
        )
        device = (
            ui.select(
                device_choices,
                value=w.get("device") or "",
                with_input=True,
                label=t("dashboards.device"),
            )
            .props('data-testid="e-device" aria-label="device"')
            .classes("w-72")
        )
        with ui.row().classes("items-end gap-4"):
            span = (
                ui.select(
                    list(RANGES), value=opts.get("range") or "1h", label=t("dashboards.range")
                )
                .props('data-testid="e-range" aria-label="range"')
                .classes("w-32")
            )
            low = ui.number(t("dashboards.min"), value=opts.get("min")).props('data-testid="e-min"')
            high = ui.number(t("dashboards.max"), value=opts.get("max")).props(
                'data-testid="e-max"'
            )
            for field in (low, high):
                field.classes("w-28").set_visibility(w["kind"] == "gauge")
            unit = (
                ui.input(t("dashboards.unit"), value=opts.get("unit") or "")
                .props('data-testid="e-unit" maxlength=50')
                .classes("w-24")
            )
            widths = width_labels()
            current_w = int(w.get("w") or 6)
            if current_w not in widths:  # an imported width the picker does not offer
                widths[current_w] = str(current_w)
            width = (
                ui.select(widths, value=current_w, label=t("dashboards.width"))
                .props('data-testid="e-width" aria-label="width"')
                .classes("w-32")
            )
        problem = ui.label("").classes("text-red-700").props('role="alert" data-testid="e-error"')

        async def ok() -> None:
            changed = {
                **w,
                "title": title.value.strip(),
                "signals": list(picked.value or []),
                "device": device.value or None,
                "options": {
                    **opts,
                    "range": span.value,
                    "min": None if low.value is None else float(low.value),
                    "max": None if high.value is None else float(high.value),
                    "unit": unit.value.strip(),
                },
                "w": int(width.value),
            }
            if await store(changed):
                dialog.close()
            else:  # the API's refusal, naming the field, where the user is looking
                problem.text = status.text

        title.on("keydown.enter", ok)
        with ui.row():
            ui.button(t("dashboards.save"), on_click=ok).props('data-testid="e-save"')
            ui.button(t("app.cancel"), on_click=dialog.close).props('flat data-testid="e-cancel"')
    dialog.open()


async def _run_all(updaters: list[Updater], full: bool) -> None:
    await asyncio.gather(*(u(full) for u in updaters))


def _guarded(update: Updater, error: ui.label) -> Updater:
    """One widget's refresh; a refused call shows on its card, the others go on."""

    async def run(full: bool) -> None:
        try:
            await update(full)
            error.text = ""
        except ApiError as exc:
            error.text = t("app.error", reason=exc.message)
        except Exception as exc:  # a timeout, a bad answer: this card says so, the rest go on
            error.text = t("app.error", reason=type(exc).__name__)

    return run


async def _widget_form(
    signals: list[str],
    devices: list[str],
    widgets: list[dict[str, Any]],
    grid: Any,
    dirty: Callable[[], None],
) -> None:
    with ui.row().classes("items-end gap-4 w-full"):
        kind = (
            ui.select(kind_labels(), value="line_chart", label=t("dashboards.kind"))
            .props('data-testid="w-kind" aria-label="kind"')
            .classes("w-48")
        )
        title = (
            ui.input(t("dashboards.widget_title"))
            .props('data-testid="w-title" maxlength=200')
            .classes("w-56")
        )
        picked = (
            ui.select(
                signals,
                multiple=True,
                with_input=True,
                value=[],
                label=t("dashboards.signals"),
            )
            .props('use-chips data-testid="w-signals" aria-label="signals"')
            .classes("w-96")
        )
        device = (
            ui.select(
                {"": t("dashboards.any_device"), **{d: d for d in devices}},
                value="",
                with_input=True,
                label=t("dashboards.device"),
            )
            .props('data-testid="w-device" aria-label="device"')
            .classes("w-56")
        )
    with ui.row().classes("items-end gap-4"):
        span = (
            ui.select(list(RANGES), value="1h", label=t("dashboards.range"))
            .props('data-testid="w-range" aria-label="range"')
            .classes("w-32")
        )
        low = ui.number(t("dashboards.min")).props('data-testid="w-min"').classes("w-28")
        high = ui.number(t("dashboards.max")).props('data-testid="w-max"').classes("w-28")
        unit = ui.input(t("dashboards.unit")).props('data-testid="w-unit" maxlength=50')
        unit.classes("w-24")
        width = (
            ui.select(width_labels(), value=6, label=t("dashboards.width"))
            .props('data-testid="w-width" aria-label="width"')
            .classes("w-32")
        )

        async def add() -> None:
            w: dict[str, Any] = {
                "kind": kind.value,
                "title": title.value.strip(),
                "signals": list(picked.value or []),
                "device": device.value or None,
                "options": {
                    "range": span.value,
                    "min": None if low.value is None else float(low.value),
                    "max": None if high.value is None else float(high.value),
                    "unit": unit.value.strip(),
                },
                "w": int(width.value),
                "h": 1,
            }
            widgets.append(w)
            title.value, picked.value = "", []
            dirty()
            await grid.refresh()

        ui.button(t("dashboards.add"), icon="add", on_click=add).props('data-testid="w-add"')
    for field in (low, high):
        field.bind_visibility_from(kind, "value", value="gauge")
