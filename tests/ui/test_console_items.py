"""Open points of the console in headless Chromium against the session's demo (conftest.py):
an auditor lands on the audit viewer (and a page it may not read says "not permitted"), the
alarm table keeps the keyboard focus across its refreshes, and a dashboard's widgets are
edited, moved and removed in place. Screenshots: ``artifacts/ui/ci-*.png``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.ui.conftest import Demo, login, shot
from tests.ui.test_tenant_switch import make_user

pytestmark = pytest.mark.timeout(240)

AUDITOR = ("ci-inspector", "Pw3-copper-meadow-61")


def test_an_auditor_lands_on_the_audit_viewer(demo: Demo, browser: Any) -> None:
    totp = make_user(demo, *AUDITOR, "--tenant", "demo", "--role", "auditor")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{demo.url}/ui/")
    page.get_by_label("Company (tenant)").fill("demo")
    page.get_by_label("User name").fill(AUDITOR[0])
    page.get_by_label("Password").fill(AUDITOR[1])
    page.get_by_label("Password").press("Enter")
    page.get_by_label("Authenticator code").wait_for()
    page.get_by_label("Authenticator code").fill(totp.at(time.time() + 30))
    page.get_by_label("Authenticator code").press("Enter")
    page.wait_for_url(f"{demo.url}/ui/audit", timeout=20_000)
    page.get_by_test_id("audit-status").filter(has_text="records").wait_for()
    # The navigation offers the auditor only what it may read.
    assert page.get_by_test_id("nav-audit").count() == 1
    assert page.get_by_test_id("nav-tree").count() == 0
    shot(page, "ci-01-auditor-lands-on-audit")
    # The plant page needs registry.read: a clear refusal, not an error page.
    response = page.goto(f"{demo.url}/ui/")
    assert response is not None
    assert response.status == 200
    panel = page.get_by_test_id("not-permitted")
    panel.wait_for()
    assert "Not permitted" in panel.inner_text()
    assert "registry.read" in panel.inner_text()  # the API's reason
    page.get_by_test_id("go-landing").click()
    page.wait_for_url(f"{demo.url}/ui/audit")
    shot(page, "ci-02-auditor-not-permitted")
    page.close()


FOCUS_RULES = ("ci-focus-a", "ci-focus-b")  # two alarms that are active at once


def _api(demo: Demo, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{demo.url}/api/v1{path}",
        json=body,
        headers={"X-API-Key": demo.key},
        timeout=30,
    )


def test_alarm_table_refresh_keeps_the_keyboard_focus(demo: Demo, browser: Any) -> None:
    # Two alarms of our own, active from the next reading (the meter only counts up), so the
    # test does not wait for the simulated factory to misbehave.
    for name in FOCUS_RULES:
        rule = {
            "name": name,
            "device": "press-01",
            "priority": 3,
            "message": "focus test",
            "definition": {"kind": "threshold", "signal": "energy_total", "limit": -1},
        }
        made = _api(demo, "POST", "/rules", rule)
        assert made.status_code == 201, made.text
    target = f"ack-{FOCUS_RULES[0]}|press-01"
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        login(page, demo)
        page.goto(f"{demo.url}/ui/alarms")
        page.get_by_test_id(f"ack-{FOCUS_RULES[1]}|press-01").wait_for(timeout=20_000)
        page.get_by_test_id(target).wait_for()
        # Tab from the filters into the table, to the first rule's acknowledge button.
        page.get_by_label("Priority").first.focus()
        for _ in range(300):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.dataset.testid") == target:
                break
        else:
            raise AssertionError(f"Tab never reached {target}")
        # Mark the focused element: a rebuilt table would put a new, unmarked one there.
        page.evaluate("() => { document.activeElement.dataset.probe = 'kept'; }")
        # Change the other alarm under the table (shelve it over the API): the refresh has a
        # new row to show, and the table shows it.
        shelved = _api(
            demo,
            "POST",
            f"/alarms/{FOCUS_RULES[1]}/press-01/shelve",
            {"comment": "focus test", "duration": "15m"},
        )
        assert shelved.status_code == 200, shelved.text
        page.get_by_test_id(f"unshelve-{FOCUS_RULES[1]}|press-01").wait_for(timeout=15_000)
        time.sleep(3.5)  # and at least one more refresh
        focused = page.evaluate(
            "() => [document.activeElement.dataset.testid, document.activeElement.dataset.probe]"
        )
        shot(page, "ci-03-alarm-focus")
        assert focused == [target, "kept"], focused
        page.close()
    finally:
        for name in FOCUS_RULES:
            _api(demo, "DELETE", f"/rules/{name}")


def _login_api(demo: Demo, user: str = "engineer") -> dict[str, str]:
    r = httpx.post(
        f"{demo.url}/api/v1/auth/login",
        json={"tenant": "demo", "username": user, "password": demo.users[user]},
        timeout=30,
    )
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_dashboard_widgets_edited_moved_and_removed_in_place(demo: Demo, browser: Any) -> None:
    headers = _login_api(demo)
    widgets = [
        {"kind": "value_card", "title": "Motor", "signals": ["press-01/motor_temp"]},
        {"kind": "line_chart", "title": "Temps", "signals": ["press-01/bearing_temp"]},
        {"kind": "alarm_list", "title": "Alarms"},
    ]
    made = httpx.post(
        f"{demo.url}/api/v1/dashboards",
        json={"name": "ci edit board", "scope": "user", "widgets": widgets},
        headers=headers,
        timeout=30,
    )
    assert made.status_code == 201, made.text
    board = int(made.json()["id"])

    def stored() -> list[dict[str, Any]]:
        r = httpx.get(f"{demo.url}/api/v1/dashboards/{board}", headers=headers, timeout=30)
        r.raise_for_status()
        out: list[dict[str, Any]] = r.json()["widgets"]
        return out

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    login(page, demo)
    page.goto(f"{demo.url}/ui/dashboards/{board}")
    page.get_by_test_id("widget-2").wait_for()
    page.get_by_label("Edit widget 1").click()
    dialog = page.get_by_test_id("edit-dialog")
    dialog.wait_for()
    dialog.get_by_label("Title").fill("Press 02 motor")
    signals = dialog.get_by_test_id("e-signals")
    signals.click()
    page.keyboard.press("Backspace")  # drop the chip of the old signal
    page.keyboard.type("press-02/motor_temp")
    page.get_by_role("option", name="press-02/motor_temp", exact=True).click()
    page.keyboard.press("Escape")
    shot(page, "ci-04-edit-dialog")
    dialog.get_by_test_id("e-save").click()
    dialog.wait_for(state="hidden")
    page.get_by_test_id("board-status").filter(has_text="Saved").wait_for()
    assert "Press 02 motor" in page.get_by_test_id("widget-0").inner_text()
    first = stored()[0]
    assert (first["title"], first["signals"]) == ("Press 02 motor", ["press-02/motor_temp"])

    # Reload: the change was stored, not only drawn.
    page.reload()
    page.get_by_test_id("widget-2").wait_for()
    assert "Press 02 motor" in page.get_by_test_id("widget-0").inner_text()
    page.wait_for_function(
        "/^-?[0-9.]+(e[-+]?[0-9]+)?$/.test("
        "document.querySelector('[data-testid=widget-0] [data-testid=value]').innerText)",
        timeout=20_000,
    )

    # Move the chart up, remove the alarm list: both stored at once.
    page.get_by_label("Move widget 2 up").click()
    page.get_by_test_id("widget-0").filter(has_text="Temps").wait_for()
    assert page.get_by_label("Move widget 1 up").is_disabled()
    page.get_by_label("Remove widget 3").click()
    page.get_by_test_id("widget-2").wait_for(state="detached")
    assert [w["title"] for w in stored()] == ["Temps", "Press 02 motor"]
    page.reload()
    page.get_by_test_id("widget-1").filter(has_text="Press 02 motor").wait_for()
    assert page.get_by_test_id("widget-2").count() == 0
    shot(page, "ci-05-moved-removed")
    page.close()
