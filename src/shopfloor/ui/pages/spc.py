"""The SPC chart view: a control chart with its limits and rule violations, the dispersion
chart and the capability figures (``/apps/spc/view?key=<id>@<device>``).

The chart list is the app's ``charts`` route; the plotted subgroups come from ``chart``
(the last 300 kept), each with its own centre line and limits (a recipe change starts a new
baseline, so the limits may step), and the figures from ``capability``. A subgroup that
broke a rule is drawn red, pinned with a mark, and its rule ids are in the tooltip.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import quote

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.pages.oee import app_ready, empty_state, fetch, iso_ms, num
from shopfloor.ui.session import api

LAST: Final = 300  # the app keeps this many subgroups per chart
VIOLATION: Final = "#c62828"
MAX_PINS: Final = 30  # more pins hide the chart: the red points still mark every one


def _phase_names() -> dict[str, str]:
    return {"baseline": t("spcview.phase_baseline"), "monitoring": t("spcview.phase_monitoring")}


def _tooltip_js() -> str:
    """An axis tooltip: every series' value at the subgroup, plus its broken rules."""
    rules = json.dumps(t("spcview.rules_broken"))
    return (
        "(ps) => { const p = [].concat(ps); if (!p.length) return '';"
        " let s = new Date(p[0].value[0]).toISOString().replace('T', ' ').slice(0, 19);"
        " for (const x of p) { if (x.value[1] === null || x.value[1] === undefined) continue;"
        " s += '<br/>' + x.marker + x.seriesName + ': ' + Number(x.value[1]).toPrecision(6);"
        f" if (x.data && x.data.rules) s += '<br/>⚠ ' + {rules} + ': ' + x.data.rules; }}"
        " return s; }"
    )


def control_chart_options(
    points: list[dict[str, Any]], dispersion: bool = False, title: str = ""
) -> dict[str, Any]:
    """ECharts options of a control chart of ``points`` (the ``chart`` route's subgroups):
    the statistic (or its dispersion), centre line, UCL and LCL per subgroup, and the
    subgroups that broke a rule in red, marked, with the rule ids in their data item."""
    value_key = "dispersion" if dispersion else "value"
    prefix = "dispersion_" if dispersion else ""
    data: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    for p in points:
        x, y = iso_ms(p["ts"]), p.get(value_key)
        broke = [] if dispersion else [str(r) for r in p.get("violations") or []]
        if dispersion and "dispersion_beyond" in (p.get("violations") or []):
            broke = ["dispersion_beyond"]
        item: dict[str, Any] = {"value": [x, y]}
        if broke:
            item["rules"] = ", ".join(broke)
            item["itemStyle"] = {"color": VIOLATION}
            item["symbolSize"] = 10
            if y is not None and len(marks) < MAX_PINS:
                marks.append({"coord": [x, y], "value": len(broke), "name": item["rules"]})
        data.append(item)

    def limit(key: str, name: str, colour: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "line",
            "step": "end",
            "showSymbol": False,
            "connectNulls": False,
            "lineStyle": {"type": "dashed" if key != "center" else "solid", "color": colour},
            "itemStyle": {"color": colour},
            "data": [[iso_ms(p["ts"]), p.get(prefix + key)] for p in points],
        }

    return {
        "title": {"text": title, "textStyle": {"fontSize": 14}},
        "tooltip": {"trigger": "axis", ":formatter": _tooltip_js()},
        "legend": {"top": 0, "right": 0},
        "xAxis": {"type": "time"},
        "yAxis": {"type": "value", "scale": True},
        "dataZoom": [{"type": "inside"}],
        "series": [
            {
                "name": title or value_key,
                "type": "line",
                "symbol": "circle",
                "symbolSize": 6,
                "itemStyle": {"color": "#1565c0"},
                "data": data,
                "markPoint": {
                    "symbol": "pin",
                    "symbolSize": 36,
                    "itemStyle": {"color": VIOLATION},
                    "data": marks,
                },
            },
            limit("center", t("spcview.center"), "#2e7d32"),
            limit("ucl", t("spcview.ucl"), "#ef6c00"),
            limit("lcl", t("spcview.lcl"), "#ef6c00"),
        ],
    }


def _capability_table(cap: dict[str, Any]) -> None:
    figures = ("cp", "cpk", "pp", "ppk", "mean", "sigma_within", "sigma_overall", "count")
    rows = []
    for which, label in (("baseline", t("spcview.baseline")), ("recent", t("spcview.recent"))):
        c = cap.get(which)
        row: dict[str, Any] = {"which": label}
        for f in figures:
            row[f] = "—" if c is None else (c.get(f) if f == "count" else num(c.get(f), 4))
        if c is not None and c.get("cpk_interval"):
            lo, hi = c["cpk_interval"]
            row["cpk"] = f"{num(c.get('cpk'), 4)} [{num(lo, 3)}, {num(hi, 3)}]"
        rows.append(row)
    heads = {
        "cp": "Cp",
        "cpk": "Cpk",
        "pp": "Pp",
        "ppk": "Ppk",
        "mean": t("spcview.mean"),
        "sigma_within": t("spcview.sigma_within"),
        "sigma_overall": t("spcview.sigma_overall"),
        "count": t("spcview.count"),
    }
    columns = [{"name": "which", "label": "", "field": "which", "align": "left"}]
    columns += [{"name": f, "label": heads[f], "field": f, "align": "left"} for f in figures]
    ui.table(columns=columns, rows=rows, row_key="which").props(
        f'dense data-testid="spc-capability" aria-label="{t("spcview.capability")}"'
    ).classes("w-full")


@ui.page("/apps/spc/view")
async def spc_view(key: str = "") -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("spcview.title"):
        if not await app_ready(client, "spc"):
            return None
        listing = await fetch(client, "/apps/spc/charts")
        if listing is None:
            return None
        charts = {str(c["key"]): c for c in listing["charts"]}
        if not charts:
            empty_state(t("spcview.no_charts"))
            return None
        key = key if key in charts else next(iter(charts))
        summary = charts[key]
        options = {k: f"{c['id']} · {c['device']} · {c['signal']}" for k, c in charts.items()}
        ui.select(
            options,
            value=key,
            label=t("spcview.chart"),
            on_change=lambda e: ui.navigate.to(f"/apps/spc/view?key={quote(str(e.value))}"),
        ).props(f'data-testid="spc-pick" aria-label="{t("spcview.chart")}"').classes("w-96")

        phase = _phase_names().get(str(summary["phase"]), str(summary["phase"]))
        with ui.row().classes("gap-6 text-sm").props('data-testid="spc-summary"'):
            ui.label(t("spcview.phase", phase=phase)).props('data-testid="spc-phase"')
            ui.label(t("spcview.kind", kind=str(summary["kind"]), n=summary["subgroup_size"]))
            ui.label(t("spcview.subgroups", n=summary["subgroups"]))
            ui.label(t("spcview.violations", n=summary["violations"])).props(
                'data-testid="spc-violations"'
            )
            ui.label(
                t("spcview.spec", lsl=num(summary.get("lsl"), 5), usl=num(summary.get("usl"), 5))
            )
        if summary["phase"] == "baseline":
            base = summary["baseline"]
            n, needed = base["collected"], base["needed"]
            if summary.get("resets"):
                empty_state(t("spcview.collecting_again", n=n, needed=needed))
            else:
                empty_state(t("spcview.collecting", n=n, needed=needed))

        cid, device = str(summary["id"]), str(summary["device"])
        answer = await fetch(client, "/apps/spc/chart", id=cid, device=device, last=LAST)
        if answer is None:
            return None
        points = list(answer["points"])
        limits = answer.get("limits")
        if limits:
            ui.label(
                t(
                    "spcview.limits",
                    center=num(limits.get("center"), 5),
                    ucl=num(limits.get("ucl"), 5),
                    lcl=num(limits.get("lcl"), 5),
                )
            ).props('data-testid="spc-limits"')
        broke = sum(1 for p in points if p.get("violations"))
        ui.label(t("spcview.shown", n=len(points), k=broke)).props(
            f'data-testid="spc-status" role="status" data-points="{len(points)}"'
            f' data-violations="{broke}"'
        )
        if not points:
            empty_state(t("spcview.no_subgroups"))
        else:
            signal = str(answer.get("signal") or summary["signal"])
            kind = str(answer.get("kind") or summary["kind"])
            disp = {"xbar_r": "R", "xbar_s": "S", "imr": "MR"}.get(kind, "R")
            ui.echart(control_chart_options(points, title=signal)).classes("w-full h-96").props(
                f'data-testid="spc-chart" aria-label="{t("spcview.control_chart")}"'
            )
            ui.echart(
                control_chart_options(points, dispersion=True, title=f"{disp} · {signal}")
            ).classes("w-full h-64").props(
                f'data-testid="spc-dispersion" aria-label="{t("spcview.dispersion_chart")}"'
            )

        ui.label(t("spcview.capability")).classes("text-lg")
        cap = await fetch(client, "/apps/spc/capability", id=cid, device=device)
        if cap is None:
            return None
        if cap.get("baseline") is None and cap.get("recent") is None:
            empty_state(t("spcview.no_capability"))
        else:
            _capability_table(cap)
    return None
