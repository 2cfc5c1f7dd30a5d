"""Remaining useful life: every machine's hours left with the 80 % interval and the
maintenance warning, the model's figures, and a machine's estimates over time
(``/apps/predictive/view?machine=<name>``; default: the lowest estimate now).

The figures are the app's ``machines``, ``model`` and ``history`` routes.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.pages.oee import app_ready, empty_state, fetch, iso_ms, num, short_time
from shopfloor.ui.session import api

FEW: Final = 50  # below this many points a chart draws each one


def hours(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1f} h"


def _status_names() -> dict[str, str]:
    return {
        "ok": t("rulview.status_ok"),
        "warning": t("rulview.status_warning"),
        "failed: in maintenance": t("rulview.status_failed"),
        "waiting for a model": t("rulview.status_waiting"),
        "collecting": t("rulview.status_collecting"),
        "no data": t("rulview.status_no_data"),
    }


def history_options(answer: dict[str, Any]) -> dict[str, Any]:
    """The estimate over time, its interval as a band and the warning level."""
    pts = answer.get("points", [])
    lower = [[iso_ms(p["ts"]), p.get("lower_hours")] for p in pts]
    width = [
        [
            iso_ms(p["ts"]),
            None
            if p.get("upper_hours") is None or p.get("lower_hours") is None
            else p["upper_hours"] - p["lower_hours"],
        ]
        for p in pts
    ]
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {},
        "xAxis": {"type": "time"},
        "yAxis": {"type": "value", "min": 0, "name": "h"},
        "series": [
            {
                "name": t("rulview.lower"),
                "type": "line",
                "stack": "band",
                "showSymbol": False,
                "lineStyle": {"opacity": 0},
                "data": lower,
            },
            {
                "name": t("rulview.interval"),
                "type": "line",
                "stack": "band",
                "showSymbol": False,
                "lineStyle": {"opacity": 0},
                "areaStyle": {"color": "#90caf9", "opacity": 0.5},
                "data": width,
            },
            {
                "name": t("rulview.rul"),
                "type": "line",
                "showSymbol": len(pts) < FEW,
                "itemStyle": {"color": "#1565c0"},
                "data": [[iso_ms(p["ts"]), p.get("rul_hours")] for p in pts],
                "markLine": {
                    "symbol": "none",
                    "lineStyle": {"color": "#c62828", "type": "dashed"},
                    "data": [{"yAxis": answer.get("warning_hours"), "name": t("rulview.warn")}],
                },
            },
        ],
    }


def _model_card(model: dict[str, Any]) -> None:
    training = model.get("training") or {}
    evaluation = model.get("evaluation") or {}
    trained = model.get("status") == "trained"
    figures = [
        (
            t("rulview.model_status"),
            t("rulview.model_trained") if trained else t("rulview.model_waiting"),
        ),
        (t("rulview.version"), "—" if model.get("version") is None else str(model["version"])),
        (t("rulview.trained_at"), short_time(model.get("trained_at"))),
        (
            t("rulview.failures"),
            t(
                "rulview.failures_of",
                known=model.get("failures_known", 0),
                needed=model.get("failures_needed", 0),
            ),
        ),
        (t("rulview.cv_rmse"), hours(training.get("cv_rmse_hours"))),
        (t("rulview.heldout_rmse"), hours(evaluation.get("rmse"))),
        (t("rulview.mae"), hours(evaluation.get("mae"))),
        (t("rulview.nasa"), num(evaluation.get("score"), 4)),
        (
            t("rulview.coverage"),
            "—"
            if evaluation.get("interval_coverage") is None
            else f"{float(evaluation['interval_coverage']) * 100:.0f} %",
        ),
        (t("rulview.runs"), "—" if not training else str(training.get("runs"))),
        (
            t("rulview.train_s"),
            "—" if training.get("train_s") is None else f"{float(training['train_s']):.1f} s",
        ),
        (t("rulview.cap"), hours(model.get("cap_hours"))),
        (t("rulview.warning_at"), hours(model.get("warning_hours"))),
    ]
    with ui.card().classes("w-full").props('data-testid="rul-model"'):
        ui.label(t("rulview.model")).classes("text-lg")
        with ui.grid(columns=4).classes("gap-x-6 gap-y-1 text-sm"):
            for i, (label, value) in enumerate(figures):
                ui.label(label).classes("text-gray-600")
                ui.label(value).props(f'data-testid="rul-model-{i}"')
        if model.get("problem"):
            ui.label(t("rulview.problem", problem=model["problem"])).classes("text-red-700")


@ui.page("/apps/predictive/view")
async def predictive_view(machine: str = "") -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("rulview.title"):
        if not await app_ready(client, "predictive"):
            return None
        data = await fetch(client, "/apps/predictive/machines")
        model = await fetch(client, "/apps/predictive/model")
        if data is None or model is None:
            return None
        rows = list(data["machines"])
        if not rows:
            empty_state(t("rulview.no_machines"))
            return None
        if model.get("status") != "trained":
            empty_state(
                t(
                    "rulview.waiting",
                    known=model.get("failures_known", 0),
                    needed=model.get("failures_needed", 0),
                )
            )
        names = _status_names()
        table_rows = [
            {
                "machine": r["machine"],
                "line": r.get("line") or "—",
                "status": names.get(str(r["status"]), str(r["status"])),
                "rul": hours(r.get("rul_hours")),
                "interval": "—"
                if r.get("lower_hours") is None
                else f"{hours(r['lower_hours'])} – {hours(r.get('upper_hours'))}",
                "warning": bool(r.get("warning")),
                "warning_text": t("rulview.yes") if r.get("warning") else t("rulview.no"),
                "failures": r.get("failures", 0),
                "updated": short_time(r.get("last_update")),
            }
            for r in rows
        ]
        table = ui.table(
            columns=[
                {
                    "name": "machine",
                    "label": t("rulview.machine"),
                    "field": "machine",
                    "align": "left",
                },
                {"name": "line", "label": t("rulview.line"), "field": "line", "align": "left"},
                {
                    "name": "status",
                    "label": t("rulview.status"),
                    "field": "status",
                    "align": "left",
                },
                {"name": "rul", "label": t("rulview.rul"), "field": "rul", "align": "left"},
                {
                    "name": "interval",
                    "label": t("rulview.interval"),
                    "field": "interval",
                    "align": "left",
                },
                {
                    "name": "warning",
                    "label": t("rulview.warning"),
                    "field": "warning_text",
                    "align": "left",
                },
                {
                    "name": "failures",
                    "label": t("rulview.failures_seen"),
                    "field": "failures",
                    "align": "left",
                },
                {
                    "name": "updated",
                    "label": t("rulview.updated"),
                    "field": "updated",
                    "align": "left",
                },
            ],
            rows=table_rows,
            row_key="machine",
        )
        table.props(f'dense data-testid="rul-machines" aria-label="{t("rulview.machines")}"')
        table.classes("w-full")
        table.add_slot(
            "body-cell-warning",
            """
            <q-td :props="props">
              <q-badge :color="props.row.warning ? 'red' : 'green'" :label="props.value"
                :data-testid="'rul-warning-' + props.row.machine" />
            </q-td>
            """,
        )
        _model_card(model)

        ui.label(t("rulview.history")).classes("text-lg")
        machines = [str(r["machine"]) for r in rows]
        ui.select(
            {"": t("rulview.lowest"), **{n: n for n in machines}},
            value=machine if machine in machines else "",
            label=t("rulview.machine"),
            on_change=lambda e: ui.navigate.to(
                f"/apps/predictive/view?machine={quote(str(e.value or ''))}"
            ),
        ).props(f'data-testid="rul-pick" aria-label="{t("rulview.machine")}"').classes("w-64")
        params = {"machine": machine} if machine in machines else {}
        hist = await fetch(client, "/apps/predictive/history", **params)
        if hist is None:
            return None
        if hist.get("machine") is None or not hist.get("points"):
            empty_state(t("rulview.no_estimates"))
            return None
        ui.label(t("rulview.of_machine", machine=hist["machine"], n=len(hist["points"]))).props(
            'data-testid="rul-chart-status" role="status"'
        )
        ui.echart(history_options(hist)).classes("w-full h-72").props(
            f'data-testid="rul-history" aria-label="{t("rulview.history")}"'
        )
    return None
