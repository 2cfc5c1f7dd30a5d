"""The web console end to end in a real headless Chromium against a running `shopfloor demo`.

Debian's Chromium (`/usr/bin/chromium`, installed by `.ci/run`) driven by Playwright for
Python with ``executable_path`` (no browser download). Without Chromium the test skips
locally and fails under CI=true. Screenshots go to ``artifacts/ui/`` (one per step), so a
failed run shows what the browser saw.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import free_port, require

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.timeout(240)


@dataclass
class Demo:
    url: str
    data: Path
    users: dict[str, str]
    key: str

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(
            f"{self.url}/api/v1{path}", params=params, headers={"X-API-Key": self.key}, timeout=30
        )
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    require("Debian's chromium (/usr/bin/chromium)", CHROMIUM.exists())
    data = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = data / "demo.log"
    cmd = [sys.executable, "-m", "shopfloor.cli.main", "demo", "--data-dir", str(data / "d"),
           "--port", str(port), "--backfill", "20m", "--history", "0"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=data)
    try:
        deadline = time.monotonic() + 120
        while "Backfill done" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        users = dict(
            line.split(" ", 1) for line in (data / "d" / "demo-users.txt").read_text().splitlines()
        )
        key = (data / "d" / "demo-api.key").read_text().strip()
        yield Demo(f"http://127.0.0.1:{port}", data / "d", users, key)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(demo: Demo) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def login(page: Any, demo: Demo, user: str = "engineer") -> None:
    page.goto(f"{demo.url}/ui/")
    # Every control is labelled: the test finds them as a screen reader would.
    page.get_by_label("Company (tenant)").fill("demo")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(demo.users[user])
    page.get_by_label("Password").press("Enter")  # the keyboard alone logs in
    page.wait_for_selector("text=Plant", timeout=20_000)


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
