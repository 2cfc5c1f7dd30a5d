"""Dashboards in a real headless Chromium against the running demo (conftest.py): build one
with two widgets, save, reload and see it live, export it (a browser download) and import the
file again as a copy. Screenshots: ``artifacts/ui/dash-*.png``.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ui.conftest import Demo, login, shot

pytestmark = pytest.mark.timeout(240)


def _pick(page: Any, testid: str, option: str, typed: bool = False) -> None:
    """Choose ``option`` in the select ``testid`` with the keyboard's help where it filters."""
    field = page.get_by_test_id(testid)
    field.click()
    if typed:  # the select filters as one types
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


def _close_menu(page: Any) -> None:
    page.keyboard.press("Escape")
    page.locator(".q-menu").wait_for(state="detached", timeout=5_000)


def _as_user(demo: Demo, user: str, method: str, path: str, body: Any = None) -> Any:
    """One API call as ``user`` (a login of its own, ended afterwards)."""
    r = httpx.post(
        f"{demo.url}/api/v1/auth/login",
        json={"tenant": "demo", "username": user, "password": demo.users[user]},
        timeout=30,
    )
    r.raise_for_status()
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    try:
        answer = httpx.request(
            method, f"{demo.url}/api/v1{path}", json=body, headers=headers, timeout=30
        )
        answer.raise_for_status()
        return answer.json() if answer.content else None
    finally:
        httpx.post(f"{demo.url}/api/v1/auth/logout", headers=headers, timeout=30)


def _dashboards_of(demo: Demo, user: str) -> list[dict[str, Any]]:
    boards: list[dict[str, Any]] = _as_user(demo, user, "GET", "/dashboards")["dashboards"]
    return boards


def test_build_save_reload_export_and_import_a_dashboard(
    demo: Demo, browser: Any, tmp_path: Path
) -> None:
    latest = demo.api("/latest", device="press-01")["points"]
    present = {str(p["signal"]) for p in latest if p.get("value") is not None}
    wanted = [s for s in ("press-01/motor_temp", "press-01/bearing_temp") if s in present]
    assert len(wanted) == 2, f"the demo's press-01 lacks the signals the test uses: {present}"
    name = f"Press board {secrets.token_hex(3)}"

    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    login(page, demo)
    page.get_by_test_id("nav-dashboards").click()
    page.wait_for_url("**/ui/dashboards")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Name").press("Enter")  # the keyboard alone creates it
    page.wait_for_url(re.compile(r".*/ui/dashboards/\d+$"))
    board_id = int(page.url.rsplit("/", 1)[1])
    page.get_by_test_id("no-widgets").wait_for()

    # Widget 1: a value card of the motor temperature.
    _pick(page, "w-kind", "Value card")
    page.get_by_label("Title").fill("Motor temperature")
    _pick(page, "w-signals", wanted[0], typed=True)
    _close_menu(page)
    page.get_by_test_id("w-add").click()
    page.get_by_test_id("widget-0").wait_for()
    # Widget 2: a line chart of both temperatures, full width.
    _pick(page, "w-kind", "Line chart")
    page.get_by_label("Title").fill("Temperatures")
    for key in wanted:
        _pick(page, "w-signals", key, typed=True)
        _close_menu(page)
    _pick(page, "w-width", "full")
    page.get_by_test_id("w-add").click()
    page.get_by_test_id("widget-1").wait_for()
    assert page.get_by_test_id("board-status").inner_text() == "Unsaved changes"
    shot(page, "dash-01-composed")
    page.get_by_test_id("save").click()
    page.wait_for_selector(f"[data-testid=board-status]:has-text('Saved “{name}”.')")

    # Reload: the saved dashboard comes back, live.
    page.reload()
    page.get_by_test_id("widget-1").wait_for()
    assert "Motor temperature" in page.get_by_test_id("widget-0").inner_text()
    assert "Temperatures" in page.get_by_test_id("widget-1").inner_text()
    page.wait_for_function(
        "/^-?[0-9.]+(e[-+]?[0-9]+)?$/.test("
        "document.querySelector('[data-testid=widget-0] [data-testid=value]').innerText)",
        timeout=20_000,
    )
    page.wait_for_selector("[data-testid=widget-1] >> text=/[0-9]+ points/", timeout=20_000)
    shot(page, "dash-02-reloaded")

    # Export: the browser downloads the document.
    with page.expect_download() as download:
        page.get_by_test_id("export").click()
    exported = tmp_path / "board.json"
    download.value.save_as(exported)
    doc = json.loads(exported.read_text())
    assert (doc["format"], doc["version"]) == ("shopfloor.dashboard", 1)
    assert doc["source"]["id"] == board_id
    board = doc["dashboard"]
    assert (board["name"], board["scope"]) == (name, "user")
    assert [w["kind"] for w in board["widgets"]] == ["value_card", "line_chart"]
    assert board["widgets"][0]["signals"] == wanted[:1]
    assert board["widgets"][1]["signals"] == wanted
    assert board["widgets"][1]["w"] == 12

    # Import the file again: a copy next to the original.
    page.get_by_test_id("back").click()
    page.wait_for_url("**/ui/dashboards")
    page.locator("[data-testid=import] input[type=file]").set_input_files(str(exported))
    page.wait_for_selector(f"[data-testid=dash-notice]:has-text('Imported “{name}”')")
    links = page.locator("[data-testid=dash-list] a", has_text=name)
    links.nth(1).wait_for()
    assert links.count() == 2
    shot(page, "dash-03-imported")
    ids = {
        int(str(links.nth(i).get_attribute("data-testid")).removeprefix("dash-")) for i in (0, 1)
    }
    assert board_id in ids
    assert len(ids) == 2

    # The API agrees: two dashboards of the engineer with that name and the same widgets,
    # and nobody else (the operator) sees them.
    mine = [d for d in _dashboards_of(demo, "engineer") if d["name"] == name]
    assert {d["id"] for d in mine} == ids
    assert mine[0]["widgets"] == mine[1]["widgets"] == board["widgets"]
    assert not [d for d in _dashboards_of(demo, "operator") if d["name"] == name]

    # The copy opens on its own page.
    copy_id = (ids - {board_id}).pop()
    page.get_by_test_id(f"dash-{copy_id}").click()
    page.wait_for_url(f"**/ui/dashboards/{copy_id}")
    page.get_by_test_id("widget-1").wait_for()
    assert "Temperatures" in page.get_by_test_id("widget-1").inner_text()
    page.close()


STATE_WORDS = ("off", "idle", "running", "blocked", "down", "changeover", "unknown")


def test_a_shared_dashboard_shows_every_kind_live_and_read_only(demo: Demo, browser: Any) -> None:
    """A tenant dashboard the engineer made: the operator sees gauge, state timeline, alarm
    list and OEE tiles live, and cannot change it."""
    name = f"Shared board {secrets.token_hex(3)}"
    widgets = [
        {"kind": "gauge", "title": "Motor", "signals": ["press-01/motor_temp"],
         "options": {"min": 0, "max": 120, "unit": "°C"}, "w": 4},
        {"kind": "state_timeline", "title": "Press state", "device": "press-01", "w": 8},
        {"kind": "alarm_list", "title": "All alarms", "w": 6},
        {"kind": "oee_tile", "title": "Site OEE", "w": 3},
        {"kind": "oee_tile", "title": "Press OEE", "device": "press-01", "w": 3},
    ]  # fmt: skip
    made = _as_user(
        demo, "engineer", "POST", "/dashboards",
        {"name": name, "scope": "tenant", "widgets": widgets},
    )  # fmt: skip
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        login(page, demo, "operator")
        page.get_by_test_id("nav-dashboards").click()
        page.get_by_test_id(f"dash-{made['id']}").click()
        page.wait_for_url(f"**/ui/dashboards/{made['id']}")
        page.get_by_test_id("widget-4").wait_for()
        # Read only for the operator: no save, no delete, no widget form, no remove buttons.
        assert page.get_by_test_id("read-only").is_visible()
        assert page.get_by_test_id("save").is_disabled()
        assert page.get_by_test_id("delete").is_disabled()
        assert page.get_by_test_id("add-widget").count() == 0
        assert page.locator("[data-testid^=remove-]").count() == 0
        # The state timeline names the press's current state.
        page.wait_for_function(
            "(words) => words.some(w => document.querySelector('[data-testid=widget-1]')"
            ".innerText.split('\\n').includes(w))",
            arg=list(STATE_WORDS),
            timeout=20_000,
        )
        # The gauge has a value (the motor temperature is there): no "not enough data".
        assert "Not enough data yet" not in page.get_by_test_id("widget-0").inner_text()
        assert page.locator("[data-testid=widget-0] canvas").count() == 1
        # The alarm list shows what the API has, or says there is none.
        alarms = [a for a in demo.api("/alarms")["alarms"] if a["state"] != "normal"]
        listed = page.locator("[data-testid=widget-2] tbody tr")
        if alarms:
            listed.first.wait_for(timeout=20_000)
            assert listed.count() >= 1
        else:
            assert "No alarms" in page.get_by_test_id("widget-2").inner_text()
        # OEE tiles: a percentage where the app has one for the shift, else "not enough data".
        current = demo.api("/apps/oee/current")
        site = (current.get("sites") or [{}])[0].get("kpis", {}).get("oee")
        page.wait_for_function(
            "document.querySelector('[data-testid=widget-3] [data-testid=oee]').innerText !== '…'"
        )
        tile = page.get_by_test_id("widget-3").inner_text()
        if current.get("shift") and site is not None:
            assert re.search(r"[0-9]+\.[0-9] %", tile), tile
            assert "Availability" in tile
        else:
            assert "Not enough data yet" in tile or re.search(r"[0-9]+\.[0-9] %", tile), tile
        shot(page, "dash-04-shared-read-only")
        page.close()
    finally:
        _as_user(demo, "engineer", "DELETE", f"/dashboards/{made['id']}")
    assert not [d for d in _dashboards_of(demo, "operator") if d["name"] == name]
