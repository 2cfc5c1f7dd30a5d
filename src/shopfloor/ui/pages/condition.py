"""Condition monitoring: every machine's anomaly score with a status colour and the signals
to blame, and one machine's score over time with the signals' shares
(``/apps/condition/view?machine=<name>``; default: the machine with the highest score).

The figures are the app's ``machines`` and ``machine`` routes; the page refreshes every
30 s (the app scores one interval a minute).
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

REFRESH_S: Final = 30.0
COLOURS: Final = {"abnormal": "red", "normal": "green", "collecting": "grey"}


def status_of(row: dict[str, Any]) -> str:
    """``abnormal`` (the alarm is up), ``normal`` (scored) or ``collecting`` (no score yet)."""
    if row.get("abnormal"):
        return "abnormal"
    return "collecting" if row.get("score") is None else "normal"


def _status_names() -> dict[str, str]:
    return {
        "abnormal": t("cmview.abnormal"),
        "normal": t("cmview.normal"),
        "collecting": t("cmview.collecting_short"),
    }


def top_text(top: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['signal']} {float(c['share']) * 100:.0f} %" for c in top) or "—"


def score_options(answer: dict[str, Any]) -> dict[str, Any]:
    """The machine's score (0..1) over time with the alarm limit."""
    points = answer.get("points", [])
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {},
        "xAxis": {"type": "time"},
        "yAxis": {"type": "value", "min": 0, "max": 1},
        "dataZoom": [{"type": "inside"}],
        "series": [
            {
                "name": t("cmview.score"),
                "type": "line",
                "showSymbol": False,
                "data": [[iso_ms(p["ts"]), p["score"]] for p in points],
                "markLine": {
                    "symbol": "none",
                    "lineStyle": {"color": "#c62828", "type": "dashed"},
                    "data": [{"yAxis": answer.get("alarm_score"), "name": t("cmview.limit")}],
                },
            }
        ],
    }


def contribution_options(answer: dict[str, Any]) -> dict[str, Any]:
    """Each signal's share of the score over time, stacked (they sum to 1)."""
    points = answer.get("points", [])
    signals = list(answer.get("signals", []))
    for p in points:
        for s in p.get("contributions") or {}:
            if s not in signals:
                signals.append(s)
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {"type": "scroll"},
        "xAxis": {"type": "time"},
        "yAxis": {"type": "value", "min": 0, "max": 1},
        "series": [
            {
                "name": s,
                "type": "line",
                "stack": "share",
                "areaStyle": {},
                "showSymbol": False,
                "data": [
                    [iso_ms(p["ts"]), (p.get("contributions") or {}).get(s, 0.0)] for p in points
                ],
            }
            for s in signals
        ],
    }


@ui.page("/apps/condition/view")
async def condition_view(machine: str = "") -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("cmview.title"):
        if not await app_ready(client, "condition"):
            return None
        first = await fetch(client, "/apps/condition/machines")
        if first is None:
            return None
        names = [str(m["machine"]) for m in first["machines"]]
        if not names:
            empty_state(t("cmview.no_machines"))
            return None

        @ui.refreshable
        def board(data: dict[str, Any]) -> None:
            rows = data["machines"]
            if all(r.get("score") is None for r in rows):
                most = max(rows, key=lambda r: int(r["baseline"].get("steps") or 0))
                empty_state(
                    t(
                        "cmview.collecting",
                        steps=most["baseline"].get("steps", 0),
                        needed=most["baseline"].get("needed", 0),
                    )
                )
            status_names = _status_names()
            table_rows = []
            for r in rows:
                st = status_of(r)
                base = r.get("baseline") or {}
                table_rows.append(
                    {
                        "machine": r["machine"],
                        "line": r.get("line") or "—",
                        "score": num(r.get("score"), 3),
                        "status": st,
                        "status_text": status_names[st]
                        + (
                            f" ({base.get('steps', 0)}/{base.get('needed', 0)})"
                            if st == "collecting"
                            else ""
                        ),
                        "colour": COLOURS[st],
                        "since": short_time(r.get("abnormal_since")),
                        "top": top_text(r.get("top") or []),
                        "time": short_time(r.get("time")),
                    }
                )
            table = ui.table(
                columns=[
                    {
                        "name": "machine",
                        "label": t("cmview.machine"),
                        "field": "machine",
                        "align": "left",
                    },
                    {"name": "line", "label": t("cmview.line"), "field": "line", "align": "left"},
                    {
                        "name": "status",
                        "label": t("cmview.status"),
                        "field": "status_text",
                        "align": "left",
                    },
                    {
                        "name": "score",
                        "label": t("cmview.score"),
                        "field": "score",
                        "align": "left",
                    },
                    {"name": "top", "label": t("cmview.top"), "field": "top", "align": "left"},
                    {
                        "name": "since",
                        "label": t("cmview.since"),
                        "field": "since",
                        "align": "left",
                    },
                    {"name": "time", "label": t("cmview.time"), "field": "time", "align": "left"},
                ],
                rows=table_rows,
                row_key="machine",
            )
            table.props(f'dense data-testid="cm-machines" aria-label="{t("cmview.machines")}"')
            table.classes("w-full")
            table.add_slot(
                "body-cell-status",
                """
                <q-td :props="props">
                  <q-badge :color="props.row.colour" :label="props.value"
                    :data-testid="'cm-status-' + props.row.machine" />
                </q-td>
                """,
            )

        board(first)

        async def tick() -> None:
            data = await fetch(client, "/apps/condition/machines")
            if data is not None:
                board.refresh(data)

        ui.timer(REFRESH_S, tick)

        ui.label(t("cmview.history")).classes("text-lg")
        ui.select(
            {"": t("cmview.worst"), **{n: n for n in names}},
            value=machine if machine in names else "",
            label=t("cmview.machine"),
            on_change=lambda e: ui.navigate.to(
                f"/apps/condition/view?machine={quote(str(e.value or ''))}"
            ),
        ).props(f'data-testid="cm-pick" aria-label="{t("cmview.machine")}"').classes("w-64")
        params = {"name": machine} if machine in names else {}
        answer = await fetch(client, "/apps/condition/machine", **params)
        if answer is None:
            return None
        points = answer.get("points", [])
        if answer.get("machine") is None or not points:
            empty_state(t("cmview.no_scores"))
            return None
        ui.label(t("cmview.of_machine", machine=answer["machine"], n=len(points))).props(
            f'data-testid="cm-chart-status" role="status" data-points="{len(points)}"'
        )
        ui.echart(score_options(answer)).classes("w-full h-72").props(
            f'data-testid="cm-score" aria-label="{t("cmview.score")}"'
        )
        ui.label(t("cmview.contributions")).classes("text-md")
        ui.echart(contribution_options(answer)).classes("w-full h-72").props(
            f'data-testid="cm-contributions" aria-label="{t("cmview.contributions")}"'
        )
    return None
