"""The web console end to end in a real headless Chromium against a running `shopfloor demo`
(the fixtures in conftest.py). Screenshots go to ``artifacts/ui/`` (one per step), so a failed
run shows what the browser saw.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.ui.conftest import Demo, login, shot

pytestmark = pytest.mark.timeout(240)


def test_login_tree_machine_live_value(demo: Demo, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{demo.url}/ui/machine/press-01")
    page.wait_for_selector("text=Log in to Shopfloor")  # no session: the login page
    page.get_by_label("Company (tenant)").fill("demo")
    page.get_by_label("User name").fill("engineer")
    page.get_by_label("Password").fill("not-the-password-1")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("text=Login failed")
    shot(page, "01-login-refused")
    login(page, demo)
    shot(page, "02-tree")
    # The tree holds the ISA-95 levels; a machine's state card shows a state word.
    for name in ("Demo Manufacturing", "line-1", "press-01"):
        assert page.get_by_text(name, exact=True).first.is_visible()
    page.wait_for_function(
        "document.querySelector('[data-testid=state-press-01]').innerText !== '…'"
    )
    # Walk the tree to the machine page.
    page.get_by_text("press-01", exact=True).first.click()
    page.wait_for_url("**/ui/machine/press-01")
    started = time.monotonic()
    page.wait_for_function(
        "(document.querySelector('[data-testid=chart-status]') || {}).innerText"
        " && document.querySelector('[data-testid=chart-status]').innerText.includes('points')"
    )
    loaded_s = time.monotonic() - started
    print(f"machine page chart ready in {loaded_s:.2f} s")  # reported, not asserted
    shot(page, "03-machine")
    # A live value changes: the energy meter of a machine only counts up.
    cell = page.locator("[data-testid=live] tr", has_text="energy_total").first
    first = cell.inner_text()
    page.wait_for_function(
        "(before) => { const row = [...document.querySelectorAll('[data-testid=live] tr')]"
        ".find(r => r.innerText.includes('energy_total')); return row && row.innerText !== before; }",
        arg=first,
        timeout=30_000,
    )
    page.close()


def test_acknowledge_an_alarm_the_simulator_raised(demo: Demo, browser: Any) -> None:
    deadline = time.monotonic() + 120
    while True:  # the demo's rules raise alarms from the simulated machines
        alarms = demo.api("/alarms", state="unack_active")["alarms"]
        alarms += demo.api("/alarms", state="unack_rtn")["alarms"]
        if alarms:
            break
        assert time.monotonic() < deadline, "the simulator raised no alarm"
        time.sleep(2)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    login(page, demo)
    page.get_by_test_id("nav-alarms").click()
    page.wait_for_url("**/ui/alarms")
    button = page.locator("[data-testid^=ack-]").first
    button.wait_for(timeout=20_000)
    key = str(button.get_attribute("data-testid")).removeprefix("ack-")
    rule, device = key.split("|")
    shot(page, "04-alarms")
    button.click()
    page.get_by_label("Comment").fill("seen on the console, maintenance informed")
    shot(page, "05-ack-dialog")
    page.get_by_test_id("comment-ok").click()
    page.wait_for_selector(f"text={rule} on {device} acknowledged")
    shot(page, "06-acknowledged")
    states = {
        a["state"]: a for a in demo.api("/alarms", device=device)["alarms"] if a["rule"] == rule
    }
    assert set(states) <= {"ack_active", "normal"}, states
    history = demo.api("/alarms/history", rule=rule, device=device, start="-1h", limit=1000)
    acks = [h for h in history["events"] if h["cause"] == "acknowledge"]
    assert acks, history
    assert acks[-1]["comment"] == "seen on the console, maintenance informed"
    assert acks[-1]["user"] == "engineer"
    page.close()


def test_switch_language_to_german_and_chinese(demo: Demo, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    login(page, demo)
    for lang, word, name in (("Deutsch", "Alarme", "de"), ("简体中文", "报警", "zh")):
        page.get_by_label("language").first.click()
        page.get_by_role("option", name=lang).click()
        page.wait_for_selector(f"[data-testid=nav-alarms]:has-text('{word}')", timeout=20_000)
        shot(page, f"07-language-{name}")
    # back to English for the other tests' sessions (the choice is per browser)
    page.get_by_label("language").first.click()
    page.get_by_role("option", name="English").click()
    page.wait_for_selector("[data-testid=nav-alarms]:has-text('Alarms')")
    page.close()
