"""The app views (OEE board, SPC chart, condition monitoring, RUL) in headless Chromium
against the session's `shopfloor demo` (conftest.py), checked against the apps' own routes.

The demo runs with 20 minutes of backfill: OEE has a shift in progress, while SPC, condition
monitoring and RUL are still collecting. The tests assert what the routes say is there (the
figures, or the "not enough data yet" state). Screenshots: ``artifacts/ui/views-*.png``.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.ui.conftest import Demo, login, shot

pytestmark = pytest.mark.timeout(240)

KPIS = ("oee", "availability", "effectiveness", "quality_ratio")


def pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f} %"


def api(demo: Demo, path: str, **params: Any) -> Any:
    """``demo.api``, again after a 503: the app was busy (a long report holds it)."""
    for _ in range(5):
        try:
            return demo.api(path, **params)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 503:
                raise
    return demo.api(path, **params)


def _page(browser: Any, demo: Demo) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    login(page, demo)
    return page


# -- the chart options, without a browser -----------------------------------------------------


def test_control_chart_marks_the_points_that_broke_a_rule() -> None:
    from shopfloor.ui.pages.spc import VIOLATION, control_chart_options

    def point(i: int, value: float, violations: list[str]) -> dict[str, Any]:
        return {"ts": (1_000 + i) * 1_000_000_000, "value": value, "dispersion": 0.5,
                "center": 10.0, "ucl": 12.0, "lcl": 8.0, "dispersion_center": 0.4,
                "dispersion_lcl": 0.0, "dispersion_ucl": 1.0, "phase": "monitoring",
                "violations": violations}  # fmt: skip

    points = [point(0, 10.1, []), point(1, 12.5, ["nelson_1"]), point(2, 9.9, []),
              point(3, 11.9, ["nelson_5", "nelson_6"]), point(4, 10.0, ["dispersion_beyond"])]  # fmt: skip
    opts = control_chart_options(points, title="seal_temp")
    main, center, ucl, lcl = opts["series"]
    red = [d for d in main["data"] if d.get("itemStyle", {}).get("color") == VIOLATION]
    assert [d["rules"] for d in red] == ["nelson_1", "nelson_5, nelson_6", "dispersion_beyond"]
    assert [m["coord"] for m in main["markPoint"]["data"]] == [
        [1_001_000, 12.5],
        [1_003_000, 11.9],
        [1_004_000, 10.0],
    ]
    assert [v for _, v in ucl["data"]] == [12.0] * 5
    assert [v for _, v in lcl["data"]] == [8.0] * 5
    assert [v for _, v in center["data"]] == [10.0] * 5
    assert "rules" in opts["tooltip"][":formatter"]  # the tooltip names the rules
    disp = control_chart_options(points, dispersion=True)
    marked = [d for d in disp["series"][0]["data"] if "rules" in d]
    assert [d["value"] for d in marked] == [[1_004_000, 0.5]]  # only the dispersion rule
    assert [v for _, v in disp["series"][2]["data"]] == [1.0] * 5


def test_pareto_shares_are_of_the_causes_shown() -> None:
    from shopfloor.ui.pages.oee import pareto_options

    pareto = [
        {"state": "down", "reason": "101", "seconds": 600.0},
        {"state": "idle", "reason": None, "seconds": 300.0},
        {"state": "setup", "reason": "0", "seconds": 300.0},
    ]
    opts = pareto_options(pareto, {"down": "down (fault)", "idle": "idle", "setup": "setup"})
    assert opts["xAxis"]["data"] == ["down (fault) · 101", "idle", "setup"]
    bars, line = opts["series"]
    assert bars["data"] == [10.0, 5.0, 5.0]  # minutes
    assert line["data"] == [50.0, 75.0, 100.0]


# -- in the browser ---------------------------------------------------------------------------


def _tiles(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => ({
              now: (document.querySelector('[data-testid=oee-period]') || {dataset: {}})
                .dataset.now,
              values: Object.fromEntries([...document.querySelectorAll('[data-testid^=tile-]')]
                .map(e => [e.dataset.testid, e.innerText.trim()])),
            })"""
        )
    )


def test_oee_board_shows_the_current_route_and_drills_down(demo: Demo, browser: Any) -> None:
    started = time.monotonic()
    page = _page(browser, demo)
    page.get_by_test_id("nav-apps").click()
    page.get_by_test_id("app-oee").get_by_role("link", name="OEE").click()
    page.wait_for_url("**/ui/apps/oee/view")
    for _ in range(4):  # the app recomputes once a minute: compare figures of one moment
        page.get_by_test_id("oee-lines").wait_for(timeout=20_000)
        shown = _tiles(page)
        current = api(demo, "/apps/oee/current")
        if shown["now"] == current["now"]:
            break
        page.reload()
    else:
        pytest.fail(f"the board never showed the route's moment: {shown['now']} {current['now']}")
    shot(page, "views-01-oee-board")
    lines = current["lines"]
    assert lines, current  # the demo has a shift in progress
    assert len(shown["values"]) == 4 * len(lines)
    for g in lines:
        for k in KPIS:
            assert shown["values"][f"tile-{g['name']}-{k}"] == pct(g["kpis"][k]), (g["name"], k)
    assert any(g["kpis"]["availability"] for g in lines)  # real numbers, not only dashes

    # Drill down to the first line's machines and its downtime Pareto.
    line = lines[0]["name"]
    shift_start = current["shift"]["start"]
    page.get_by_test_id(f"line-{line}").click()
    page.wait_for_url(f"**/ui/apps/oee/view/{line}")
    page.get_by_test_id("pareto-status").wait_for(timeout=20_000)
    after = api(demo, "/apps/oee/downtime", asset=line, start=shift_start, end="now")["pareto"]
    rows = page.locator("[data-testid=oee-machines] tbody tr")
    machines = sorted(rows.nth(i).locator("td").first.inner_text() for i in range(rows.count()))
    assert machines == sorted(m["machine"] for m in current["machines"] if m["line"] == line)
    n = int(page.get_by_test_id("pareto-status").inner_text().split()[0])
    assert n == len(after)  # the same causes (a new one in these seconds is rare)
    assert n >= 1
    assert page.locator("[data-testid=oee-pareto] canvas").count() >= 1
    shot(page, "views-02-oee-line")

    # A past shift from the picker: the tiles are the report route's totals of each line.
    print(f"OEE board and line: {time.monotonic() - started:.1f} s")
    page.get_by_test_id("oee-back").click()
    page.wait_for_url("**/ui/apps/oee/view")
    page.get_by_role("combobox", name="Shift").click()
    page.get_by_role("option").nth(1).click()  # the newest past shift
    page.wait_for_url("**/ui/apps/oee/view?*start=*")
    page.get_by_test_id("oee-lines").wait_for(timeout=30_000)
    query = parse_qs(urlparse(page.url).query)
    start, end = query["start"][0], query["end"][0]
    shown = _tiles(page)
    assert len(shown["values"]) == 4 * len(lines)
    totals = {
        g["name"]: api(demo, "/apps/oee/report", start=start, end=end, asset=g["name"])["total"]
        for g in lines
    }
    for name, total in totals.items():
        for k in KPIS:
            assert shown["values"][f"tile-{name}-{k}"] == pct(total["kpis"][k]), (name, k)
    without_data = all(
        t["times_s"]["pbt"] > 0 and t["times_s"]["unknown"] >= t["times_s"]["pbt"]
        for t in totals.values()
    )  # the demo's 20 minutes of history: past shifts have no state data at all
    notice = page.get_by_text("The historian holds no machine state for this period").count()
    assert notice == (1 if without_data else 0)
    shot(page, "views-03-oee-past-shift")
    page.close()
    print(f"OEE views: {time.monotonic() - started:.1f} s")


def test_spc_view_shows_the_chart_route(demo: Demo, browser: Any) -> None:
    page = _page(browser, demo)
    charts = api(demo, "/apps/spc/charts")["charts"]
    page.goto(f"{demo.url}/ui/apps/spc/view")
    page.get_by_test_id("app-title").wait_for(timeout=20_000)
    if not charts:
        page.get_by_test_id("no-data").wait_for()
        assert "no chart with data yet" in page.get_by_test_id("no-data-detail").inner_text()
        shot(page, "views-04-spc-empty")
        page.close()
        return
    first = charts[0]
    for _ in range(4):  # a subgroup may complete between the page and the route
        status = page.get_by_test_id("spc-status")
        status.wait_for(timeout=20_000)
        n_shown = int(str(status.get_attribute("data-points")))
        k_shown = int(str(status.get_attribute("data-violations")))
        answer = api(demo, "/apps/spc/chart", id=first["id"], device=first["device"], last=300)
        summary = api(demo, "/apps/spc/charts")["charts"][0]
        if n_shown == len(answer["points"]):
            break
        page.reload()
    assert n_shown == len(answer["points"])
    assert k_shown == sum(1 for p in answer["points"] if p["violations"])
    picked = page.get_by_test_id("spc-pick").inner_text()
    assert f"{first['id']} · {first['device']}" in picked
    if summary["phase"] == "baseline":  # not enough data for limits yet: said so
        detail = page.get_by_test_id("no-data-detail").first.inner_text()
        base = summary["baseline"]
        assert f": {base['collected']} of {base['needed']} subgroups" in detail
        assert page.get_by_test_id("spc-limits").count() == 0
    else:
        assert page.get_by_test_id("spc-limits").is_visible()
    if answer["points"]:
        assert page.locator("[data-testid=spc-chart] canvas").count() >= 1
        assert page.locator("[data-testid=spc-dispersion] canvas").count() >= 1
    cap = api(demo, "/apps/spc/capability", id=first["id"], device=first["device"])
    if cap["baseline"] is None and cap["recent"] is None:
        assert page.get_by_text("Capability figures need").is_visible()
    else:
        assert page.get_by_test_id("spc-capability").is_visible()
    shot(page, "views-04-spc")
    page.close()


def test_condition_view_shows_the_machines_route(demo: Demo, browser: Any) -> None:
    page = _page(browser, demo)
    page.goto(f"{demo.url}/ui/apps/condition/view")
    table = page.get_by_test_id("cm-machines")
    table.wait_for(timeout=20_000)
    rows = api(demo, "/apps/condition/machines")["machines"]
    assert rows
    assert page.locator("[data-testid=cm-machines] tbody tr").count() == len(rows)
    words = {"abnormal": "abnormal", "normal": "normal", "collecting": "learning baseline"}
    for r in rows:
        status = "abnormal" if r["abnormal"] else "collecting" if r["score"] is None else "normal"
        badge = page.get_by_test_id(f"cm-status-{r['machine']}").inner_text()
        assert badge.startswith(words[status]), (r["machine"], badge, r)
    scored = [r for r in rows if r["score"] is not None]
    learning = page.get_by_text("still learning their normal behaviour").count()
    assert learning == (0 if scored else 1)  # the not-enough-data state iff nothing is scored
    worst = api(demo, "/apps/condition/machine")
    if worst["machine"] is None:
        assert "not been scored" in page.get_by_test_id("no-data-detail").last.inner_text()
    else:
        assert page.locator("[data-testid=cm-score] canvas").count() >= 1
    shot(page, "views-05-condition")
    page.close()


def test_rul_view_shows_the_routes_and_german(demo: Demo, browser: Any) -> None:
    page = _page(browser, demo)
    page.goto(f"{demo.url}/ui/apps/predictive/view")
    page.get_by_test_id("rul-machines").wait_for(timeout=20_000)
    rows = api(demo, "/apps/predictive/machines")["machines"]
    model = api(demo, "/apps/predictive/model")
    cells = page.locator("[data-testid=rul-machines] tbody tr")
    assert cells.count() == len(rows)
    shown = {
        cells.nth(i).locator("td").nth(0).inner_text(): cells.nth(i).locator("td").nth(3)
        for i in range(cells.count())
    }
    for r in rows:
        rul = "—" if r["rul_hours"] is None else f"{r['rul_hours']:.1f} h"
        assert shown[r["machine"]].inner_text() == rul, r
        assert page.get_by_test_id(f"rul-warning-{r['machine']}").inner_text() == (
            "yes" if r["warning"] else "no"
        )
    if model["status"] != "trained":
        detail = page.get_by_test_id("no-data-detail").first.inner_text()
        assert (
            f"needs {model['failures_needed']} run-to-failure histories, "
            f"{model['failures_known']} are known" in detail
        )
    else:
        assert page.get_by_text("No model yet").count() == 0
        assert page.get_by_test_id("rul-model").inner_text().count(str(model["version"])) >= 1
    shot(page, "views-06-rul")
    page.get_by_label("language").first.click()
    page.get_by_role("option", name="Deutsch").click()
    page.wait_for_selector("text=Wartungswarnung", timeout=20_000)  # a column heading
    if model["status"] != "trained":
        assert page.get_by_text("Noch nicht genug Daten").first.is_visible()
    shot(page, "views-07-rul-de")
    page.get_by_label("language").first.click()
    page.get_by_role("option", name="English").click()
    page.wait_for_selector("text=Maintenance warning")
    page.close()


def test_a_view_of_a_disabled_app_says_so(demo: Demo, browser: Any) -> None:
    headers = {"X-API-Key": demo.key}
    url = f"{demo.url}/api/v1/apps/predictive"
    config = httpx.get(url, headers=headers, timeout=30).json()["config"]
    r = httpx.put(url, json={"enabled": False}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    try:
        page = _page(browser, demo)
        page.goto(f"{demo.url}/ui/apps/predictive/view")
        card = page.get_by_test_id("not-enabled")
        card.wait_for(timeout=20_000)
        assert "Predictive maintenance is not enabled" in card.inner_text()
        assert page.get_by_test_id("rul-machines").count() == 0
        shot(page, "views-08-not-enabled")
        page.close()
    finally:
        r = httpx.put(url, json={"enabled": True, "config": config}, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/model", headers=headers, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "predictive did not start again"
        time.sleep(0.5)
