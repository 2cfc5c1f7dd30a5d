"""The OEE board: per line and shift, with a drill-down to the line's machines.

- ``/apps/oee/view``: a tile per line (OEE, availability, effectiveness, quality) of the shift
  in progress (the app's ``current`` route, refreshed every minute), or of a past shift picked
  from the last hours (``report`` with ``asset=<line>``), and the site's figures by shift.
- ``/apps/oee/view/<line>``: the line's machines with the same figures and the downtime
  Pareto of the shift (``downtime``) as a bar chart.

Both take ``start`` and ``end`` (a past shift; none: the shift in progress) and ``span``
(how far back the shift picker reaches). This module also holds what the four app views
share: the "app not enabled" and "not enough data yet" states and the number formats.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiClient, ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.session import api

__all__ = ["app_ready", "empty_state", "fetch", "iso_ms", "num", "pct", "short_time"]

SPANS: Final = ("8h", "24h", "3d", "7d")
DEFAULT_SPAN: Final = "8h"  # each report reads the historian shift by shift: keep it short
KPIS: Final = ("oee", "availability", "effectiveness", "quality_ratio")
REFRESH_S: Final = 60.0  # the app computes the shift in progress once a minute


# -- shared by the app views ---------------------------------------------------------------


def pct(value: Any) -> str:
    """A ratio as a percentage with one decimal; an undefined KPI (None) as a dash."""
    return "—" if value is None else f"{float(value) * 100:.1f} %"


def num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; None as a dash."""
    return "—" if value is None else f"{float(value):.{digits}g}"


def short_time(iso: Any) -> str:
    """An RFC 3339 time as ``YYYY-MM-DD HH:MM:SS`` (UTC); None as a dash."""
    return "—" if not iso else str(iso).replace("T", " ")[:19]


def iso_ms(ts_ns: Any) -> int:
    """Epoch nanoseconds as epoch milliseconds (ECharts' time axis)."""
    return int(ts_ns) // 1_000_000


def empty_state(detail: str) -> None:
    """The "not enough data yet" notice, with what the app is waiting for."""
    with ui.card().classes("w-full bg-amber-50").props('data-testid="no-data" role="status"'):
        ui.label(t("appviews.no_data")).classes("text-lg font-bold")
        ui.label(detail).props('data-testid="no-data-detail"')


def error_state(message: str) -> None:
    ui.label(t("app.error", reason=message)).classes("text-red-700").props(
        'data-testid="view-error" role="alert"'
    )


async def fetch(client: ApiClient, path: str, **params: Any) -> Any | None:
    """An app route's answer, or None after showing the API's error."""
    try:
        return await client.get(path, **params)
    except ApiError as exc:
        error_state(exc.message)
        return None


async def app_ready(client: ApiClient, name: str) -> bool:
    """The app's heading; False (after saying why) unless the app is enabled and running.

    Waits for the browser's connection first: the page is delivered at once and its parts
    follow as the app's routes answer (a report over past shifts reads the historian)."""
    await ui.context.client.connected()
    try:
        detail = await client.get(f"/apps/{name}")
    except ApiError as exc:
        error_state(exc.message)
        return False
    with ui.row().classes("items-center gap-4"):
        ui.label(detail["title"]).classes("text-xl").props('data-testid="app-title"')
        ui.link(t("appviews.panels"), f"/apps/{name}").props('data-testid="raw-panels"')
    if not detail["enabled"]:
        with (
            ui.card().classes("w-full bg-gray-100").props('data-testid="not-enabled" role="status"')
        ):
            ui.label(t("appviews.not_enabled", app=detail["title"])).classes("text-lg font-bold")
            ui.label(t("appviews.not_enabled_hint"))
            ui.link(t("appviews.to_catalogue"), "/apps")
        return False
    failed = (detail.get("status") or {}).get("failed")
    if failed:
        with ui.card().classes("w-full bg-red-50").props('data-testid="app-failed" role="alert"'):
            ui.label(t("apps.failed", reason=failed)).classes("text-red-700")
        return False
    return True


# -- the OEE board -------------------------------------------------------------------------


def _state_names() -> dict[str, str]:
    return {
        "running": t("oeeview.state_running"),
        "setup": t("oeeview.state_setup"),
        "down": t("oeeview.state_down"),
        "idle": t("oeeview.state_idle"),
        "planned_stop": t("oeeview.state_planned_stop"),
        "unknown": t("oeeview.state_unknown"),
    }


def _kpi_names() -> dict[str, str]:
    return {
        "oee": t("oeeview.oee"),
        "availability": t("oeeview.availability"),
        "effectiveness": t("oeeview.effectiveness"),
        "quality_ratio": t("oeeview.quality"),
    }


def _query(start: str, end: str, span: str) -> str:
    params = {k: v for k, v in (("start", start), ("end", end)) if v}
    if span and span != DEFAULT_SPAN:
        params["span"] = span
    return f"?{urlencode(params)}" if params else ""


def pareto_options(pareto: list[dict[str, Any]], states: dict[str, str]) -> dict[str, Any]:
    """A Pareto bar chart (minutes, longest first) with the cumulative share (of the causes
    shown) as a line."""
    total = sum(float(p["seconds"]) for p in pareto)
    cumulative: list[float | None] = []
    running = 0.0
    for p in pareto:
        running += float(p["seconds"])
        cumulative.append(round(running / total * 100, 1) if total else None)
    names = [
        f"{states.get(str(p['state']), str(p['state']))}"
        + (f" · {p['reason']}" if p.get("reason") not in (None, "", "0") else "")
        for p in pareto
    ]
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0},
        "grid": {"bottom": 90, "top": 50},
        "xAxis": {"type": "category", "data": names, "axisLabel": {"rotate": 30}},
        "yAxis": [
            {"type": "value", "name": t("oeeview.minutes")},
            {"type": "value", "name": "%", "min": 0, "max": 100},
        ],
        "series": [
            {
                "name": t("oeeview.minutes"),
                "type": "bar",
                "data": [round(float(p["seconds"]) / 60, 1) for p in pareto],
            },
            {
                "name": t("oeeview.cumulative"),
                "type": "line",
                "yAxisIndex": 1,
                "data": cumulative,
            },
        ],
    }


def past_shifts(config: dict[str, Any] | None, span_ns: int, now_ns: int) -> list[dict[str, Any]]:
    """The shift instances of the last ``span_ns`` from the app's own calendar (its config,
    as the API gives it), newest first: ``label``, ``start``, ``end`` (at most now)."""
    from shopfloor.apps.oee.app import OeeConfig
    from shopfloor.apps.oee.calendar import expand
    from shopfloor.core.timeutil import to_iso

    calendar = OeeConfig.model_validate(config or {}).parsed_calendar()
    out = []
    for s in reversed(expand(calendar, now_ns - span_ns, now_ns)):
        end = min(s.planned_end_ns, now_ns)
        out.append(
            {
                "label": s.label,
                "start": to_iso(s.planned_start_ns),
                "end": to_iso(end),
                "partial": end < s.planned_end_ns,
            }
        )
    return out


async def _picker(client: ApiClient, span: str, start: str, end: str, current: str | None) -> None:
    """The span toggle and the shift select (the shifts come from the app's calendar)."""
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.core.timeutil import now_ns, parse_duration

    options: dict[str, str] = {"": t("oeeview.current_shift")}
    try:
        config = (await client.get("/apps/oee")).get("config")
        shifts = past_shifts(config, parse_duration(span), now_ns())
    except (ApiError, ShopfloorError, ValueError) as exc:
        error_state(str(exc))
        shifts = []
    for s in shifts:
        if s["label"] == current and s["partial"]:
            continue  # the shift in progress is the first choice already
        label = s["label"] + (f" ({t('oeeview.partial')})" if s["partial"] else "")
        options[f"{s['start']}|{s['end']}"] = label
    chosen = f"{start}|{end}" if start and end else ""
    if chosen not in options:
        options[chosen] = f"{short_time(start)} – {short_time(end)}"

    def go(new_span: str = span, value: str = chosen) -> None:
        s, _, e = value.partition("|")
        ui.navigate.to("/apps/oee/view" + _query(s, e, new_span))

    with ui.row().classes("items-center gap-4"):
        ui.toggle(list(SPANS), value=span, on_change=lambda e: go(new_span=str(e.value))).props(
            f'data-testid="oee-span" aria-label="{t("oeeview.span")}"'
        )
        ui.select(
            options,
            value=chosen,
            label=t("oeeview.shift"),
            on_change=lambda e: go(value=str(e.value or "")),
        ).props(f'data-testid="oee-shift" aria-label="{t("oeeview.shift")}"').classes("w-80")


async def _by_shift(client: ApiClient, box: ui.element, span: str) -> None:
    """The whole plant by shift over the span (the ``report`` route), into ``box``."""
    box.clear()
    with box:
        loading = ui.spinner().props(f'aria-label="{t("oeeview.loading")}"')
        report = await fetch(client, "/apps/oee/report", start=f"-{span}")
        loading.delete()
        if report is None:
            return
        names = _kpi_names()
        columns = [
            {"name": "label", "label": t("oeeview.shift"), "field": "label", "align": "left"}
        ]
        columns += [{"name": k, "label": names[k], "field": k, "align": "left"} for k in KPIS]
        rows = [
            {"label": s["label"], **{k: pct(s["kpis"].get(k)) for k in KPIS}}
            for s in reversed(report["shifts"])
        ]
        ui.table(columns=columns, rows=rows, row_key="label").props(
            f'dense data-testid="oee-shifts" aria-label="{t("oeeview.by_shift", span=span)}"'
        ).classes("w-full")


def no_state_data(figures: dict[str, Any]) -> bool:
    """Whether the whole planned busy time of these figures is without any state sample."""
    times = figures.get("times_s") or {}
    pbt, unknown = float(times.get("pbt") or 0), float(times.get("unknown") or 0)
    return pbt > 0 and unknown >= pbt


def _kpi_rows(label: str, testid: str, kpis: dict[str, Any]) -> None:
    names = _kpi_names()
    ui.label(label).classes("font-bold")
    ui.label(pct(kpis.get("oee"))).classes("text-3xl").props(f'data-testid="{testid}-oee"')
    with ui.grid(columns=2).classes("gap-x-4 gap-y-0 text-sm"):
        for k in KPIS[1:]:
            ui.label(names[k])
            ui.label(pct(kpis.get(k))).props(f'data-testid="{testid}-{k}"')


@ui.page("/apps/oee/view")
async def oee_board(
    start: str = "", end: str = "", span: str = DEFAULT_SPAN
) -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    span = span if span in SPANS else DEFAULT_SPAN
    with frame("oeeview.title"):
        if not await app_ready(client, "oee"):
            return None
        current = await fetch(client, "/apps/oee/current")
        if current is None:
            return None
        label = None if current.get("shift") is None else current["shift"]["label"]
        await _picker(client, span, start, end, label)
        past = bool(start and end)
        line_names = [str(g["name"]) for g in current.get("lines", [])]

        @ui.refreshable
        async def board(data: dict[str, Any]) -> None:
            if past:
                ui.label(t("oeeview.past", start=short_time(start), end=short_time(end))).props(
                    'data-testid="oee-period"'
                )
                groups = []
                loading = ui.spinner().props(f'aria-label="{t("oeeview.loading")}"')
                for name in line_names:
                    rep = await fetch(client, "/apps/oee/report", start=start, end=end, asset=name)
                    if rep is not None:
                        groups.append({"name": name, **rep["total"]})
                loading.delete()
            else:
                if data.get("shift") is None or not data.get("machines"):
                    empty_state(t("oeeview.no_shift"))
                    return
                sh = data["shift"]
                ui.label(
                    t("oeeview.now", shift=sh["label"], now=short_time(data.get("now")))
                ).props(f'data-testid="oee-period" data-now="{data.get("now")}"')
                groups = list(data.get("lines", []))
            if not groups:
                empty_state(t("oeeview.no_lines"))
                return
            if all(no_state_data(g) for g in groups):
                empty_state(t("oeeview.no_state_data"))
            with ui.row().classes("gap-4").props('data-testid="oee-lines"'):
                for g in groups:
                    target = f"/apps/oee/view/{g['name']}" + _query(start, end, span)
                    with (
                        ui.link(target=target)
                        .classes("no-underline text-black")
                        .props(f'data-testid="line-{g["name"]}"'),
                        ui.card().classes("p-3 w-64"),
                    ):
                        _kpi_rows(str(g["name"]), f"tile-{g['name']}", g.get("kpis", {}))
            for s in data.get("sites", []) if not past else []:
                ui.label(t("oeeview.site", site=s["name"], oee=pct(s["kpis"].get("oee")))).props(
                    'data-testid="oee-site"'
                )

        await board(current)
        if not past:

            async def tick() -> None:
                try:
                    fresh = await client.get("/apps/oee/current")
                except ApiError:
                    return  # keep the last figures; the next tick tries again
                board.refresh(fresh)

            ui.timer(REFRESH_S, tick)

        ui.label(t("oeeview.by_shift", span=span)).classes("text-lg")
        box = ui.column().classes("w-full")
        with box:
            ui.button(
                t("oeeview.show_by_shift"), on_click=lambda: _by_shift(client, box, span)
            ).props('flat data-testid="oee-by-shift"')
    return None


@ui.page("/apps/oee/view/{line}")
async def oee_line(
    line: str, start: str = "", end: str = "", span: str = DEFAULT_SPAN
) -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("oeeview.title"):
        if not await app_ready(client, "oee"):
            return None
        ui.link(t("oeeview.back"), "/apps/oee/view" + _query(start, end, span)).props(
            'data-testid="oee-back"'
        )
        ui.label(t("oeeview.line", line=line)).classes("text-xl").props('data-testid="oee-line"')
        if start and end:
            rep = await fetch(client, "/apps/oee/report", start=start, end=end, asset=line)
            if rep is None:
                return None
            machines = list(rep["by_machine"])
            d_start, d_end = start, end
            ui.label(t("oeeview.past", start=short_time(start), end=short_time(end)))
        else:
            cur = await fetch(client, "/apps/oee/current")
            if cur is None:
                return None
            if cur.get("shift") is None:
                empty_state(t("oeeview.no_shift"))
                return None
            machines = [m for m in cur["machines"] if m.get("line") == line]
            d_start, d_end = str(cur["shift"]["start"]), "now"
            ui.label(t("oeeview.now", shift=cur["shift"]["label"], now=short_time(cur.get("now"))))
        if not machines:
            empty_state(t("oeeview.no_machines", line=line))
            return None
        names = _kpi_names()
        columns = [
            {"name": "machine", "label": t("oeeview.machine"), "field": "machine", "align": "left"}
        ]
        columns += [{"name": k, "label": names[k], "field": k, "align": "left"} for k in KPIS]
        columns += [
            {
                "name": "produced",
                "label": t("oeeview.produced"),
                "field": "produced",
                "align": "left",
            },
            {"name": "good", "label": t("oeeview.good"), "field": "good", "align": "left"},
            {"name": "scrap", "label": t("oeeview.scrap"), "field": "scrap", "align": "left"},
            {
                "name": "failures",
                "label": t("oeeview.failures"),
                "field": "failures",
                "align": "left",
            },
        ]
        rows = []
        for m in machines:
            counts = m.get("counts", {})
            rows.append(
                {
                    "machine": m["machine"],
                    **{k: pct(m["kpis"].get(k)) for k in KPIS},
                    **{c: int(counts.get(c) or 0) for c in ("produced", "good", "scrap")},
                    "failures": m.get("failures", 0),
                }
            )
        ui.table(columns=columns, rows=rows, row_key="machine").props(
            f'dense data-testid="oee-machines" aria-label="{t("oeeview.machines")}"'
        ).classes("w-full")

        ui.label(t("oeeview.pareto")).classes("text-lg")
        down = await fetch(client, "/apps/oee/downtime", start=d_start, end=d_end, asset=line)
        if down is None:
            return None
        pareto = list(down["pareto"])
        if not pareto:
            empty_state(t("oeeview.no_downtime"))
            return None
        unknown = sum(float(p["seconds"]) for p in pareto if p["state"] == "unknown")

        only_unknown = all(p["state"] == "unknown" for p in pareto)  # then show it

        def shown(with_unknown: bool) -> list[dict[str, Any]]:
            return [p for p in pareto if with_unknown or p["state"] != "unknown"]

        chart = (
            ui.echart(pareto_options(shown(only_unknown), _state_names()))
            .classes("w-full h-96")
            .props(f'data-testid="oee-pareto" aria-label="{t("oeeview.pareto")}"')
        )

        def redraw(e: Any) -> None:
            chart.options.update(pareto_options(shown(bool(e.value)), _state_names()))
            chart.update()

        if unknown:
            ui.checkbox(
                t("oeeview.with_unknown", minutes=f"{unknown / 60:.0f}"),
                value=only_unknown,
                on_change=redraw,
            ).props('data-testid="oee-with-unknown"')
        ui.label(t("oeeview.pareto_status", n=len(pareto))).props(
            'data-testid="pareto-status" role="status"'
        )
    return None
