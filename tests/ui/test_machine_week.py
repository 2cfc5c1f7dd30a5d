"""A machine page over 7 days of 1 Hz data for 10 signals (6.05 M points), in headless
Chromium against the session's demo (conftest.py): measured and reported, not asserted as a
timing (issue 7/8 asks for "interactive within 2 s").

The points go in through the HTTP ingest API in its fastest form (frame JSON: one timestamp
column and a value column per signal, docs/api.md), for a new machine registered under line-1
of the demo's hierarchy. The browser then opens the machine's page with the 7-day range and
all ten signals; the load time runs from navigation start until the chart's ECharts instance
holds data for all ten series, the zoom time from a dispatched dataZoom until the chart holds
the finer data of the narrower range. Both go to ``artifacts/ui/machine-week.json``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.ui.conftest import ARTIFACTS, Demo, login, shot

pytestmark = pytest.mark.timeout(300)

MACHINE = "week-press-01"
SIGNALS = tuple(f"s{i:02d}" for i in range(10))
DAYS = 7
STEPS_PER_BODY = 86_400  # a day per request: 864,000 points, under max_batch_points
ZOOM_S = 6 * 3600  # the zoom: the last 6 hours of the week
RECENT_SETTLED = 1_000_000  # points in the historian's recent segment once it has compacted

# The chart's ECharts instance (NiceGUI's getElement gives the Vue component holding it).
SERIES = """() => {
  const el = document.querySelector('[data-testid=chart]');
  const vm = el && getElement(el);
  const opt = vm && vm.chart && vm.chart.getOption();
  return opt ? (opt.series || []).map(s => ({name: s.name, data: s.data || []})) : [];
}"""
ALL_LOADED = (
    "(n) => { const s = (" + SERIES + ")();"
    " return s.length === n && s.every(x => x.data.length > 0) ? performance.now() : false; }"
)


def _place(demo: Demo) -> int:
    """The asset id of line-1 in the demo's tree."""

    def walk(nodes: list[dict[str, Any]]) -> int | None:
        for n in nodes:
            if n["name"] == "line-1":
                return int(n["id"])
            found = walk(n.get("children", []))
            if found is not None:
                return found
        return None

    line = walk(demo.api("/tree"))
    assert line is not None, "the demo has no line-1"
    return line


def _write_week(demo: Demo) -> tuple[int, float]:
    """7 days of 1 Hz data for 10 signals ending now; (points, seconds)."""
    headers = {"X-API-Key": demo.key, "Content-Type": "application/json"}
    api = f"{demo.url}/api/v1"
    line = _place(demo)
    with httpx.Client(timeout=120, headers=headers) as http:
        asset = http.post(
            f"{api}/assets", json={"level": "machine", "name": MACHINE, "parent_id": line}
        )
        assert asset.status_code == 201, asset.text
        device = http.post(f"{api}/devices", json={"name": MACHINE, "asset_id": asset.json()["id"]})
        assert device.status_code == 201, device.text
        end_ms = (time.time_ns() // 1_000_000_000 - 1) * 1000
        start_ms = end_ms - (DAYS * 86_400 - 1) * 1000
        rng = np.random.default_rng(7)
        points = 0
        started = time.monotonic()
        for day in range(DAYS):
            ts = start_ms + 1000 * (
                day * STEPS_PER_BODY + np.arange(STEPS_PER_BODY, dtype=np.int64)
            )
            hours = (ts - start_ms) / 3.6e6
            values = {
                s: np.round(
                    50 + 10 * i + 5 * np.sin(hours / (3 + i)) + rng.normal(0, 0.5, ts.size), 2
                ).tolist()
                for i, s in enumerate(SIGNALS)
            }
            body = orjson.dumps({"device": MACHINE, "ts": ts.tolist(), "values": values})
            r = http.post(f"{api}/ingest", content=body)
            assert r.status_code == 200, r.text[:500]
            points += ts.size * len(SIGNALS)
        return points, time.monotonic() - started


def _historian(demo: Demo) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{demo.url}/health", timeout=30).json()["historian"]
    return stats


def _settled(demo: Demo, timeout_s: float = 90) -> dict[str, int]:
    """Wait for the compaction the week's writes started (the historian compacts its recent
    segment into hourly blocks past ``hot_max_points``, 2 M by default): a week of history
    is in blocks in real life, only the newest points are recent. Measuring during the
    compaction would measure the two competing for the CPU."""
    deadline = time.monotonic() + timeout_s
    while (stats := _historian(demo))["recent_points"] >= RECENT_SETTLED:
        assert time.monotonic() < deadline, stats
        time.sleep(0.5)
    return stats


def test_a_week_of_1hz_data_for_10_signals(demo: Demo, browser: Any) -> None:
    points, write_s = _write_week(demo)
    assert points == DAYS * 86_400 * len(SIGNALS)
    stats = _settled(demo)
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    login(page, demo)
    url = f"{demo.url}/ui/machine/{MACHINE}?range=7d&signals=all"
    page.goto(url, wait_until="commit")
    try:
        loaded = page.wait_for_function(ALL_LOADED, arg=len(SIGNALS), polling=20, timeout=60_000)
    except Exception:
        shot(page, "mw-00-not-loaded")  # what the browser saw instead
        raise
    loaded_ms = float(loaded.json_value())
    week = page.evaluate(SERIES)
    assert sorted(s["name"] for s in week) == list(SIGNALS)
    assert all(len(s["data"]) > 100 for s in week), [len(s["data"]) for s in week]
    week_step = week[0]["data"][1][0] - week[0]["data"][0][0]
    shot(page, "mw-01-week")

    # Zoom to the last 6 hours: the page asks the historian for that range at a finer bucket.
    last = max(p[0] for p in week[0]["data"])
    lo, hi = last - ZOOM_S * 1000, last
    zoom_ms = float(
        page.evaluate(
            """([lo, hi]) => new Promise((resolve) => {
              const vm = getElement(document.querySelector('[data-testid=chart]'));
              const t0 = performance.now();
              const check = () => {
                const s = vm.chart.getOption().series || [];
                const fine = s.length === 10 && s.every(x => x.data.length > 10
                  && x.data[0][0] >= lo - 60000);
                if (fine) resolve(performance.now() - t0); else setTimeout(check, 10);
              };
              vm.chart.dispatchAction({type: 'dataZoom', dataZoomIndex: 0,
                                       startValue: lo, endValue: hi});
              check();
            })""",
            [lo, hi],
        )
    )
    zoomed = page.evaluate(SERIES)
    zoom_step = zoomed[0]["data"][1][0] - zoomed[0]["data"][0][0]
    assert all(s["data"][0][0] >= lo - 60_000 for s in zoomed)
    assert zoom_step < week_step, (zoom_step, week_step)
    shot(page, "mw-02-zoomed")
    figures = {
        "machine": MACHINE,
        "signals": len(SIGNALS),
        "points": points,
        "ingest_s": round(write_s, 2),
        "ingest_points_per_s": round(points / write_s),
        "load_ms": round(loaded_ms),
        "zoom_ms": round(zoom_ms),
        "buckets_per_series": len(week[0]["data"]),
        "week_bucket_s": week_step / 1000,
        "zoom_bucket_s": zoom_step / 1000,
        "zoom_range_s": ZOOM_S,
        # the points the historian still held uncompacted (read point by point) at the start
        "recent_points_at_load": stats["recent_points"],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "machine-week.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("machine-week", json.dumps(figures))  # reported, not asserted
    page.close()
