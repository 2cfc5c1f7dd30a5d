"""The rules editor, the audit log viewer and keyboard navigation, in headless Chromium against
the session's running `shopfloor demo` (conftest.py). Screenshots: ``artifacts/ui/ra-*.png``.

The demo has no auditor: the module makes one the way an operator of the platform would, with
``shopfloor user create --role auditor`` on the demo's data folder, then enrols its TOTP factor
through the API (the auditor role needs a second factor) and computes codes with pyotp.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import expect

from shopfloor.ui.pages.audit import link_check
from shopfloor.ui.pages.rules import field_of, parse_conditions
from tests.ui.conftest import Demo, login, shot

pytestmark = pytest.mark.timeout(240)

RULE = "ui-hot-press"
BAD = "motor_temp > 80 and x > 1"
GOOD = "motor_temp > 80 and bearing_temp > 70"
AUDITOR = ("inspector", "Kq7-zebra-lantern-93")

# The accessible name of the focused element, as a screen reader would announce it (enough of
# the accessible-name rules for Quasar's controls: aria-label, aria-labelledby, <label>).
FOCUSED_NAME = r"""() => {
  const el = document.activeElement;
  if (!el || el === document.body) return '';
  const own = el.getAttribute('aria-label');
  if (own) return own.trim();
  const by = el.getAttribute('aria-labelledby');
  if (by) return by.split(' ').map(id => (document.getElementById(id) || {}).innerText || '')
    .join(' ').trim();
  if (el.labels && el.labels.length) {
    const field = el.labels[0].querySelector('.q-field__label');
    return (field ? field.innerText : el.labels[0].innerText).trim();
  }
  const text = el.cloneNode(true);  // the text a screen reader reads: not hidden icons
  text.querySelectorAll('[aria-hidden=true]').forEach(n => n.remove());
  return (text.textContent || '').replace(/\s+/g, ' ').trim();
}"""


def rule_names(demo: Demo) -> set[str]:
    return {r["name"] for r in demo.api("/rules")["rules"]}


def choose(page: Any, testid: str, option: str) -> None:
    page.get_by_test_id(testid).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_rule_editor_validation_disable_and_read_only(demo: Demo, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    login(page, demo)
    # an engineer holds no audit.read: no audit entry in the navigation
    assert page.get_by_test_id("nav-rules").is_visible()
    assert page.get_by_test_id("nav-audit").count() == 0
    page.get_by_test_id("nav-rules").click()
    page.wait_for_url("**/ui/rules")
    page.locator("[data-testid=rules] tr", has_text="high-vibration-press").first.wait_for()
    shot(page, "ra-01-rules")

    page.get_by_test_id("rule-new").click()
    page.get_by_label("Name", exact=True).fill(RULE)
    page.get_by_test_id("rule-target").click()
    page.keyboard.type("press-01")
    page.get_by_role("option", name="press-01", exact=True).click()
    page.get_by_label("Alarm message").fill("hot motor and bearing")
    choose(page, "rule-kind", "expression")
    expression = page.get_by_label("Expression", exact=True)
    expression.fill(BAD)
    page.get_by_test_id("rule-save").click()
    column = BAD.index("x") + 1
    wanted = f"definition.expression: column {column}: unknown signal 'x'"
    # the API's message with its column, at the expression input (its Quasar field)
    field = page.locator(".q-field", has=expression)
    field.locator(".q-field__messages", has_text=wanted).wait_for(timeout=10_000)
    assert "q-field--error" in str(field.get_attribute("class"))
    shot(page, "ra-02-bad-expression")
    assert RULE not in rule_names(demo)  # nothing stored

    expression.fill(GOOD)
    page.get_by_test_id("rule-save").click()
    page.wait_for_selector(f"text=Rule {RULE} saved")
    row = page.locator("[data-testid=rules] tr", has_text=RULE)
    row.wait_for()
    assert "press-01" in row.inner_text()
    assert "yes" in row.inner_text()
    stored = demo.api(f"/rules/{RULE}")
    assert stored["definition"]["expression"] == GOOD
    assert stored["device"] == "press-01"
    assert stored["kind"] == "expression"
    assert stored["message"] == "hot motor and bearing"
    assert stored["enabled"] is True

    # the same rule as JSON: the form's content, and a bad field named at the JSON text
    page.get_by_test_id(f"edit-{RULE}").click()
    page.get_by_role("button", name="JSON", exact=True).click()
    text = page.get_by_label("Rule as JSON")
    expect(text).to_have_value(re.compile(re.escape(GOOD)))
    text.fill(text.input_value().replace('"off_delay": 0.0', '"off_delay": -1'))
    page.get_by_test_id("rule-save").click()
    page.locator(".q-field", has=text).locator(
        ".q-field__messages", has_text="definition.expression.off_delay"
    ).wait_for(timeout=10_000)
    shot(page, "ra-03-json-error")
    assert demo.api(f"/rules/{RULE}")["definition"]["off_delay"] == 0.0
    page.get_by_test_id("rule-cancel").click()

    page.get_by_test_id(f"disable-{RULE}").click()
    page.get_by_label("Reason").fill("commissioning: sensors not wired yet")
    page.get_by_test_id("disable-ok").click()
    page.wait_for_selector(f"text=Rule {RULE} disabled")
    row = page.locator("[data-testid=rules] tr", has_text=RULE)
    page.wait_for_function(
        "(name) => [...document.querySelectorAll('[data-testid=rules] tr')]"
        ".some(r => r.innerText.includes(name) && r.innerText.includes('commissioning'))",
        arg=RULE,
    )
    shot(page, "ra-04-disabled")
    stored = demo.api(f"/rules/{RULE}")
    assert stored["enabled"] is False
    assert stored["disabled_reason"] == "commissioning: sensors not wired yet"
    page.close()

    # an operator reads the rules and gets no controls to change them
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    login(page, demo, "operator")
    page.goto(f"{demo.url}/ui/rules")
    page.locator("[data-testid=rules] tr", has_text=RULE).wait_for()
    assert page.get_by_test_id("rules-read-only").is_visible()
    assert page.get_by_test_id("rule-new").count() == 0
    assert page.locator("[data-testid^=edit-], [data-testid^=delete-]").count() == 0
    shot(page, "ra-05-operator-read-only")
    page.close()


@pytest.fixture(scope="module")
def auditor(demo: Demo) -> pyotp.TOTP:
    """An auditor of tenant demo, made on the CLI, with a confirmed TOTP factor."""
    name, password = AUDITOR
    cli = [sys.executable, "-m", "shopfloor.cli.main", "user", "create", name, "--tenant",
           "demo", "--role", "auditor", "--password-stdin", "-d", str(demo.data)]  # fmt: skip
    done = subprocess.run(cli, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    body = {"tenant": "demo", "username": name, "password": password}
    api = f"{demo.url}/api/v1"
    refused = httpx.post(f"{api}/auth/login", json=body, timeout=30)
    assert refused.status_code == 403, refused.text  # an MFA role: enrol first
    enrolled = httpx.post(f"{api}/auth/totp/enroll", json=body, timeout=30)
    assert enrolled.status_code == 200, enrolled.text
    totp = pyotp.TOTP(enrolled.json()["secret"])
    confirmed = httpx.post(f"{api}/auth/totp/confirm", json={**body, "code": totp.now()})
    assert confirmed.status_code == 204, confirmed.text
    return totp


def test_audit_viewer_shows_the_rule_records(demo: Demo, browser: Any, auditor: Any) -> None:
    if RULE not in rule_names(demo):
        pytest.skip("needs the rule the editor test made")
    page = browser.new_page(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    page.goto(f"{demo.url}/ui/")
    page.get_by_label("Company (tenant)").fill("demo")
    page.get_by_label("User name").fill(AUDITOR[0])
    page.get_by_label("Password").fill(AUDITOR[1])
    page.get_by_label("Password").press("Enter")
    page.get_by_label("Authenticator code").wait_for()
    # the code of the next 30 s step: the confirm used the current one, and a code counts once
    page.get_by_label("Authenticator code").fill(auditor.at(time.time() + 30))
    page.get_by_label("Authenticator code").press("Enter")
    # The login lands on the audit viewer, the first page an auditor may read.
    page.wait_for_url(f"{demo.url}/ui/audit", timeout=20_000)
    shot(page, "ra-06-auditor-landing")
    page.get_by_test_id("nav-audit").wait_for()  # the auditor's navigation has the entry
    assert page.get_by_test_id("nav-rules").count() == 0  # rules need registry.read
    page.get_by_test_id("audit-status").filter(has_text="records").wait_for()
    page.get_by_label("Action", exact=True).fill("POST /api/v1/rules")
    page.get_by_label("Actor", exact=True).fill("engineer")
    page.get_by_test_id("audit-apply").click()
    table = page.get_by_test_id("audit-records")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=audit-records] tbody tr')]"
        ".some(r => r.innerText.includes('POST /api/v1/rules') && r.innerText.includes('ok'))"
    )
    rows = [r.inner_text() for r in table.locator("tbody tr").all()]
    assert rows
    assert all("POST /api/v1/rules" in r for r in rows), rows
    assert all("engineer" in r for r in rows), rows
    # the refused create (422) and the stored one: failed, then ok
    assert any("failed" in r and "422" in r for r in rows), rows
    assert any("\tok" in r or " ok" in r for r in rows), rows
    assert "none broken" in page.get_by_test_id("audit-links").inner_text()
    shot(page, "ra-06-audit")
    with page.expect_download() as download:
        page.get_by_test_id("audit-export-jsonl").click()
    path = Path(download.value.path())
    lines = path.read_text().splitlines()
    assert lines
    assert all('"POST /api/v1/rules"' in line for line in lines), lines[:3]
    assert any('"actor":"engineer"' in line.replace(" ", "") for line in lines)
    page.close()


def test_keyboard_only_to_alarms_and_rules(demo: Demo, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{demo.url}/ui/")
    page.get_by_label("Company (tenant)").wait_for()
    # the tenant field has the focus on arrival; Tab moves through the labelled fields
    assert page.evaluate(FOCUSED_NAME) == "Company (tenant)"
    page.keyboard.type("demo")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED_NAME) == "User name"
    page.keyboard.type("engineer")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED_NAME) == "Password"
    page.keyboard.type(demo.users["engineer"])
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Plant", timeout=20_000)

    def tab_to(target: str, key: str = "Tab", limit: int = 40) -> list[str]:
        """Tab (or Shift+Tab) until the focus is on the control with this test id or name;
        the names of the controls passed on the way (each must have one)."""
        passed: list[str] = []
        for _ in range(limit):
            page.keyboard.press(key)
            name = page.evaluate(FOCUSED_NAME)
            testid = page.evaluate("() => document.activeElement.dataset.testid")
            if target in (testid, name):
                return passed
            assert name, f"unlabelled focus stop after {passed}"
            passed.append(name)
        raise AssertionError(f"Tab never reached {target}: {passed}")

    passed = tab_to("nav-alarms")
    assert page.evaluate(FOCUSED_NAME) == "Alarms"
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/alarms")
    page.get_by_test_id("alarms").wait_for()
    # past the header (every stop labelled) to the page's filters, in order
    passed = tab_to("State")
    assert {"Plant", "Alarms", "Rules", "Language"} <= set(passed), passed
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED_NAME) == "Priority"
    page.keyboard.press("Enter")  # the keyboard opens the filter's options
    page.get_by_role("option", name="urgent").wait_for()
    page.keyboard.press("Escape")
    shot(page, "ra-07-keyboard-alarms")

    # back up into the header (the alarm table below refreshes every few seconds)
    tab_to("nav-rules", "Shift+Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/rules")
    page.get_by_test_id("rules").wait_for()
    tab_to("rule-new")
    assert page.evaluate(FOCUSED_NAME) == "New rule"
    page.keyboard.press("Enter")
    page.get_by_test_id("rule-editor").wait_for()
    page.wait_for_function("() => document.activeElement.tagName === 'INPUT'")
    assert page.evaluate(FOCUSED_NAME) == "Name"
    names = []
    for _ in range(14):  # the editor's controls in order, every one labelled
        page.keyboard.press("Tab")
        names.append(page.evaluate(FOCUSED_NAME))
    assert all(names), names
    assert {"Attach to", "Applies to", "Priority", "Alarm message", "Kind"} <= set(names), names
    shot(page, "ra-08-keyboard-rules")
    page.close()


def test_delete_asks_first(demo: Demo, browser: Any) -> None:
    if RULE not in rule_names(demo):
        pytest.skip("needs the rule the editor test made")
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    login(page, demo)
    page.goto(f"{demo.url}/ui/rules")
    page.get_by_test_id(f"delete-{RULE}").click()
    page.get_by_text(f"Delete rule {RULE} and its alarms?").wait_for()
    shot(page, "ra-09-delete-confirm")
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text(f"Delete rule {RULE} and its alarms?").wait_for(state="hidden")
    assert RULE in rule_names(demo)  # cancelled: still there
    page.get_by_test_id(f"delete-{RULE}").click()
    page.get_by_test_id("delete-ok").click()
    page.wait_for_selector(f"text=Rule {RULE} deleted")
    assert RULE not in rule_names(demo)
    assert page.locator("[data-testid=rules] tr", has_text=RULE).count() == 0
    page.close()


def test_api_error_fields_map_to_form_fields() -> None:
    assert field_of("definition.expression") == "expression"
    assert field_of("definition.expression.off_delay") == "off_delay"  # pydantic names the kind
    assert field_of("definition.threshold.limit") == "limit"
    assert field_of("definition.conditions[1]") == "conditions"
    assert field_of("definition.state.conditions.0.state") == "conditions"
    assert field_of("device_type") == "target"
    assert field_of(None) is None
    assert parse_conditions("running: speed > 0\n\nidle: speed == 0") == [
        {"expression": "speed > 0", "state": "running"},
        {"expression": "speed == 0", "state": "idle"},
    ]


def test_link_check_finds_a_broken_link() -> None:
    recs = [{"seq": 4, "prev_hash": "c", "hash": "d"}, {"seq": 2, "prev_hash": "a", "hash": "b"},
            {"seq": 3, "prev_hash": "b", "hash": "c"}, {"seq": 7, "prev_hash": "x", "hash": "y"}]  # fmt: skip
    assert link_check(recs) == (2, [])  # 2-3, 3-4; 7 has no neighbour shown
    recs[0]["prev_hash"] = "forged"
    assert link_check(recs) == (2, [4])
