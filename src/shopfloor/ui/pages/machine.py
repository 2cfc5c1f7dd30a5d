"""A machine: live values, charts over any historian range, and the state timeline.

Charts ask the historian for about ``BUCKETS`` buckets over the visible range (server-side
downsampling, min / avg / max per bucket), so a week of 1 Hz data renders as fast as an hour;
zooming in asks again for the narrower range at a finer bucket.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.pages.tree import STATE_COLOURS, STATE_KEYS
from shopfloor.ui.session import api

BUCKETS: Final = 600
RANGES: Final = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
NS: Final = 1_000_000_000
DEFAULT_SIGNALS: Final = ("motor_temp", "bearing_temp", "vib_x_rms")


def bucket_for(span_s: float) -> str:
    """A bucket width that gives about BUCKETS buckets over ``span_s`` (at least 1 s)."""
    return f"{max(1, int(span_s // BUCKETS))}s"


def _iso(ns: int) -> str:
    from shopfloor.core.timeutil import to_iso

    return to_iso(ns)


@ui.page("/machine/{name}")
async def machine_page(name: str) -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("machine.title"):
        ui.label(name).classes("text-xl").props('data-testid="machine-name"')
        latest = await client.get("/latest", device=name)
        signals = sorted(str(p["signal"]).split("/", 1)[1] for p in latest["points"])
        numeric = [s for s in signals if s != "state"]
        chosen = [s for s in DEFAULT_SIGNALS if s in numeric] or numeric[:3]
        with ui.row().classes("items-center gap-4"):
            picker = ui.select(numeric, value=chosen, multiple=True, label=t("machine.signals"))
            picker.props('use-chips data-testid="signals" aria-label="signals"').classes("w-96")
            span = ui.toggle(list(RANGES), value="1h").props('data-testid="range"')
        chart = (
            ui.echart(
                {
                    "tooltip": {"trigger": "axis"},
                    "legend": {},
                    "xAxis": {"type": "time"},
                    "yAxis": {"type": "value", "scale": True},
                    "dataZoom": [{"type": "inside"}, {"type": "slider"}],
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
                    "series": [],
                }
            )
            .classes("w-full h-24")
            .props('data-testid="timeline"')
        )
        status = ui.label("").props('data-testid="chart-status" role="status"')

        async def load(start_ns: int | None = None, end_ns: int | None = None) -> None:
            span_s = RANGES[str(span.value)]
            start = _iso(start_ns) if start_ns else f"-{span_s}s"
            end = _iso(end_ns) if end_ns else "now"
            width = (end_ns - start_ns) / NS if start_ns and end_ns else span_s
            interval = bucket_for(width)
            keys = [f"{name}/{s}" for s in picker.value or []]
            series: list[dict[str, Any]] = []
            if keys:
                data = await client.get(
                    "/downsample",
                    signal=keys,
                    start=start,
                    end=end,
                    interval=interval,
                    agg=["avg", "min", "max"],
                    time_format="ms",
                )
                for s in data["series"]:
                    label = str(s["signal"]).split("/", 1)[1]
                    series.append(
                        {
                            "name": label,
                            "type": "line",
                            "showSymbol": False,
                            "data": [[b, v] for b, v in zip(s["bucket"], s["avg"], strict=True)],
                        }
                    )
            chart.options["series"] = series
            chart.update()
            states = await client.get(
                "/downsample",
                signal=[f"{name}/state"],
                start=start,
                end=end,
                interval=interval,
                agg=["last"],
                time_format="ms",
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
            args = e.args or {}
            batch = (args.get("batch") or [args])[0]
            lo, hi = batch.get("startValue"), batch.get("endValue")
            if lo is not None and hi is not None:
                await load(int(lo) * 1_000_000, int(hi) * 1_000_000)

        chart.on("chart:datazoom", on_zoom)
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
