"""A machine: live values, charts over any historian range, and the state timeline.

Charts ask the historian for about ``BUCKETS`` buckets over the visible range (server-side
downsampling, the average per bucket; all chosen signals in one call), or whole hours over
long ranges (``bucket_for``), so a week of 1 Hz data renders as fast as an hour; zooming in
asks again for the narrower range at a finer bucket.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.core.timeutil import now_ns
from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import failure, frame, require_login
from shopfloor.ui.pages.tree import STATE_COLOURS, STATE_KEYS
from shopfloor.ui.session import api

BUCKETS: Final = 600
HOUR_S: Final = 3600
WHOLE_HOURS_FROM: Final = 100 * HOUR_S  # spans this long get buckets of whole hours
RANGES: Final = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
NS: Final = 1_000_000_000
DEFAULT_SIGNALS: Final = ("motor_temp", "bearing_temp", "vib_x_rms")


def bucket_for(span_s: float) -> str:
    """A bucket width that gives about BUCKETS buckets over ``span_s`` (at least 1 s).

    From WHOLE_HOURS_FROM on, whole hours (fewer buckets: 168 over a week): the historian
    answers those from its hourly rollups, any other width by decoding every point in the
    range. Measured on the demo with 7 days of 1 Hz data for 10 signals (6.05 M points):
    0.25 s at 1 h, 6 to 24 s at 1008 s (tests/ui/test_machine_week.py).
    """
    if span_s >= WHOLE_HOURS_FROM:
        return f"{max(1, round(span_s / BUCKETS / HOUR_S))}h"
    return f"{max(1, int(span_s // BUCKETS))}s"


def zoom_window(args: dict[str, Any], lo_ms: int, hi_ms: int) -> tuple[int, int] | None:
    """The window (ms) a dataZoom event asks for, over the full view ``lo_ms .. hi_ms``.

    ECharts sends values when the zoom was dispatched with them, and percentages of the axis
    when the user zooms with the wheel or the slider (the axis is fixed to the full view, so
    a percentage always means the same instant)."""
    batch = (args.get("batch") or [args])[0] or {}
    if batch.get("startValue") is not None and batch.get("endValue") is not None:
        return int(batch["startValue"]), int(batch["endValue"])
    if batch.get("start") is not None and batch.get("end") is not None:
        width = hi_ms - lo_ms
        return (
            lo_ms + int(width * float(batch["start"]) / 100),
            lo_ms + int(width * float(batch["end"]) / 100),
        )
    return None


@ui.page("/machine/{name}")
async def machine_page(
    name: str, range: str = "1h", signals: str | None = None
) -> RedirectResponse | None:
    """``?range=7d`` opens another span, ``?signals=a,b`` (or ``all``) other signals."""
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("machine.title"):
        ui.label(name).classes("text-xl").props('data-testid="machine-name"')
        try:
            latest = await client.get("/latest", device=name)
        except ApiError as exc:
            failure(exc)
            return None
        known = sorted(str(p["signal"]).split("/", 1)[1] for p in latest["points"])
        numeric = [s for s in known if s != "state"]
        if signals == "all":
            chosen = numeric
        elif signals:
            chosen = [s for s in signals.split(",") if s in numeric]
        else:
            chosen = [s for s in DEFAULT_SIGNALS if s in numeric] or numeric[:3]
        with ui.row().classes("items-center gap-4"):
            picker = ui.select(numeric, value=chosen, multiple=True, label=t("machine.signals"))
            picker.props('use-chips data-testid="signals" aria-label="signals"').classes("w-96")
            span = ui.toggle(list(RANGES), value=range if range in RANGES else "1h").props(
                'data-testid="range" aria-label="range"'
            )
        chart = (
            ui.echart(
                {
                    "tooltip": {"trigger": "axis"},
                    "legend": {"type": "scroll", "top": 0},
                    "grid": {"top": 40, "bottom": 60},
                    "xAxis": {"type": "time"},
                    "yAxis": {"type": "value", "scale": True},
                    "dataZoom": [{"type": "inside"}, {"type": "slider", "bottom": 10}],
                    "animation": False,
                    "series": [],
                }
            )
            .classes("w-full h-96")
            .props('data-testid="chart"')
        )
        timeline = (
            ui.echart(
                {
                    "xAxis": {"type": "time"},
                    "yAxis": {"type": "category", "data": [t("machine.state")]},
                    "animation": False,
                    "series": [],
                }
            )
            .classes("w-full h-24")
            .props('data-testid="timeline"')
        )
        timeline.set_visibility("state" in known)
        status = ui.label("").props('data-testid="chart-status" role="status"')
        view = {"lo": 0, "hi": 0}  # the full view in ms (the axis' fixed ends)

        async def load(lo_ms: int | None = None, hi_ms: int | None = None) -> None:
            if lo_ms is None or hi_ms is None:
                # One absolute window for all calls of this view: the chart's axis, the
                # signals and the state timeline cover the same instants.
                hi_ms = now_ns() // 1_000_000
                lo_ms = hi_ms - RANGES[str(span.value)] * 1000
                view["lo"], view["hi"] = lo_ms, hi_ms
                for axis in (chart.options["xAxis"], timeline.options["xAxis"]):
                    axis["min"], axis["max"] = lo_ms, hi_ms
            interval = bucket_for((hi_ms - lo_ms) / 1000)
            keys = [f"{name}/{s}" for s in picker.value or []]
            window = {"start": str(lo_ms), "end": str(hi_ms), "interval": interval}
            series: list[dict[str, Any]] = []
            if keys:
                # All signals in one call: the historian reads them in one query.
                data = await client.get(
                    "/downsample", signal=keys, agg=["avg"], time_format="ms", **window
                )
                for s in data["series"]:
                    label = str(s["signal"]).split("/", 1)[1]
                    points = [[b, v] for b, v in zip(s["bucket"], s["avg"], strict=True)]
                    series.append(
                        {
                            "name": label,
                            "type": "line",
                            "showSymbol": False,
                            "sampling": "lttb",
                            "data": points,
                        }
                    )
            chart.options["series"] = series
            chart.update()
            if "state" in known:
                states = await client.get(
                    "/downsample",
                    signal=[f"{name}/state"],
                    agg=["last"],
                    time_format="ms",
                    **window,
                )
                bars = []
                for s in states["series"]:
                    for b, v in zip(s["bucket"], s["last"], strict=True):
                        if v is None:
                            continue
                        colour = STATE_COLOURS.get(int(v), "grey")
                        bars.append({"value": [b, 0], "itemStyle": {"color": colour}})
                timeline.options["series"] = [
                    {"type": "scatter", "symbol": "rect", "symbolSize": [6, 30], "data": bars}
                ]
                timeline.update()
            status.text = t(
                "machine.loaded", n=sum(len(x["data"]) for x in series), bucket=interval
            )

        async def on_zoom(e: Any) -> None:
            window = zoom_window(e.args or {}, view["lo"], view["hi"])
            if window is None:
                return
            lo, hi = window
            if hi - lo >= view["hi"] - view["lo"]:
                await load(view["lo"], view["hi"])  # zoomed out to the whole view
            elif hi > lo:
                await load(lo, hi)

        chart.on("chart:datazoom", on_zoom, throttle=0.15, leading_events=False)
        picker.on_value_change(lambda _: load())
        span.on_value_change(lambda _: load())
        await load()

        ui.label(t("machine.live")).classes("text-lg")
        table = ui.table(
            columns=[
                {"name": "signal", "label": t("machine.signal"), "field": "signal"},
                {"name": "value", "label": t("machine.value"), "field": "value"},
                {"name": "time", "label": t("machine.time"), "field": "time"},
            ],
            rows=[],
            row_key="signal",
        ).props('dense data-testid="live" aria-label="live values"')

        async def refresh() -> None:
            now = await client.get("/latest", device=name)
            rows = []
            for p in now["points"]:
                sig = str(p["signal"]).split("/", 1)[1]
                value = p.get("value")
                if sig == "state" and value is not None:
                    value = f"{int(value)} · {t(STATE_KEYS.get(int(value), 'state.unknown'))}"
                rows.append({"signal": sig, "value": value, "time": p["ts"]})
            table.rows = sorted(rows, key=lambda r: r["signal"])
            table.update()

        await refresh()
        ui.timer(2.0, refresh)
    return None
