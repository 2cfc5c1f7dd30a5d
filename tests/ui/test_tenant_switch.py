"""The tenant switcher of a platform admin, in headless Chromium against the session's demo
(conftest.py). Screenshots: ``artifacts/ui/tn-*.png``.

The module makes a platform admin with ``shopfloor user create --platform`` (and its TOTP
factor through the API, computed with pyotp), a second tenant that grants nothing, and an
access grant from the demo tenant (its tenant key acts as the tenant admin). The console must
offer only the granted tenant, send the tenant header on every call (the API audits each use
of the grant), and show the API's refusal as a "not permitted" panel once the grant is gone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest

from tests.ui.conftest import Demo, shot

pytestmark = pytest.mark.timeout(240)

ADMIN = ("root-ops", "Vq4-harbor-kettle-58")
AUDITOR = ("tn-inspector", "Lm8-violet-anchor-27")
OTHER = "tn-other"


@dataclass
class Platform:
    totp: pyotp.TOTP
    grant_id: int


def make_user(demo: Demo, name: str, password: str, *where: str) -> pyotp.TOTP:
    """A user made on the CLI, with a confirmed TOTP factor (its roles need one)."""
    cli = [sys.executable, "-m", "shopfloor.cli.main", "user", "create", name, *where,
           "--password-stdin", "-d", str(demo.data)]  # fmt: skip
    done = subprocess.run(cli, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    tenant = where[where.index("--tenant") + 1] if "--tenant" in where else None
    body = {"tenant": tenant, "username": name, "password": password}
    api = f"{demo.url}/api/v1"
    enrolled = httpx.post(f"{api}/auth/totp/enroll", json=body, timeout=30)
    assert enrolled.status_code == 200, enrolled.text
    totp = pyotp.TOTP(enrolled.json()["secret"])
    confirmed = httpx.post(f"{api}/auth/totp/confirm", json={**body, "code": totp.now()})
    assert confirmed.status_code == 204, confirmed.text
    return totp


def session_of(demo: Demo, tenant: str | None, user: tuple[str, str], totp: pyotp.TOTP) -> str:
    """An API session token (the code of the next 30 s step: each code counts once)."""
    body = {"tenant": tenant, "username": user[0], "password": user[1]}
    r = httpx.post(
        f"{demo.url}/api/v1/auth/login",
        json={**body, "totp": totp.at(time.time() + 30)},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def platform_admin(demo: Demo) -> Platform:
    totp = make_user(demo, *ADMIN, "--platform", "--role", "platform_admin")
    # The second tenant, made with the platform's admin key (the operator's, in the data
    # folder): logging the admin in here would spend the TOTP code the browser needs.
    admin_key = (demo.data / "admin.key").read_text().strip()
    made = httpx.post(
        f"{demo.url}/api/v1/tenants",
        json={"name": OTHER},
        headers={"X-API-Key": admin_key},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    grant = httpx.post(
        f"{demo.url}/api/v1/access-grants",
        json={"grantee": ADMIN[0], "duration_hours": 1, "reason": "console test ticket 7"},
        headers={"X-API-Key": demo.key},
        timeout=30,
    )
    assert grant.status_code == 201, grant.text
    return Platform(totp, int(grant.json()["id"]))


def log_in(page: Any, demo: Demo, tenant: str, user: tuple[str, str], totp: pyotp.TOTP) -> None:
    page.goto(f"{demo.url}/ui/")
    page.get_by_label("Company (tenant)").fill(tenant)
    page.get_by_label("User name").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_label("Password").press("Enter")
    page.get_by_label("Authenticator code").wait_for()
    # the next step's code: the one of this step may have been used already
    page.get_by_label("Authenticator code").fill(totp.at(time.time() + 30))
    page.get_by_label("Authenticator code").press("Enter")


def grant_uses(demo: Demo, token: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{demo.url}/api/v1/audit/records",
        params={"action": "access.grant.used", "actor": ADMIN[0], "limit": 1000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    records: list[dict[str, Any]] = r.json()["records"]
    return records


def test_platform_admin_switches_to_the_granted_tenant(
    demo: Demo, browser: Any, platform_admin: Platform
) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    log_in(page, demo, "", ADMIN, platform_admin.totp)
    # No tenant yet: the login lands on the tenant choice, not on a page it cannot read.
    page.wait_for_url(f"{demo.url}/ui/tenants", timeout=20_000)
    page.get_by_test_id("tenant-list").wait_for()
    assert page.get_by_test_id("tenant-current").inner_text() == "No company chosen"
    assert page.get_by_test_id("enter-demo").is_enabled()
    assert page.get_by_test_id(f"enter-{OTHER}").is_disabled()
    assert page.get_by_test_id(f"no-grant-{OTHER}").inner_text() == "no access grant"
    # No tenant: no registry.read nor data.read, so no page of a tenant in the navigation.
    assert page.get_by_test_id("nav-rules").count() == 0
    assert page.get_by_test_id("nav-tree").count() == 0
    shot(page, "tn-01-choice")

    # The header's switcher lists the same: demo usable, the other one disabled.
    page.get_by_test_id("tenant-switch").click()
    page.get_by_test_id("tenant-demo").wait_for()
    other = page.get_by_test_id(f"tenant-{OTHER}")
    assert "no access grant" in other.inner_text()
    assert "disabled" in (other.get_attribute("class") or "")
    shot(page, "tn-02-menu")
    page.get_by_test_id("tenant-demo").click()

    # Inside demo: the plant page with demo's data, read through the grant.
    page.wait_for_url(f"{demo.url}/ui/", timeout=20_000)
    page.get_by_text("Demo Manufacturing", exact=True).first.wait_for()
    assert page.get_by_test_id("tenant-switch").inner_text().endswith("Company: demo")
    page.wait_for_function(
        "document.querySelector('[data-testid=state-press-01]').innerText !== '…'"
    )
    assert page.get_by_test_id("nav-rules").count() == 1  # the grant's viewer role reads rules
    assert page.get_by_test_id("nav-alarms").count() == 1
    shot(page, "tn-03-inside-demo")

    # Every call went through the grant, and the API audited it.
    auditor = make_user(demo, *AUDITOR, "--tenant", "demo", "--role", "auditor")
    token = session_of(demo, "demo", AUDITOR, auditor)
    used = grant_uses(demo, token)
    assert any(r["outcome"] == "ok" for r in used), used

    # The grant revoked: the next page shows the API's refusal, not an error page.
    revoked = httpx.delete(
        f"{demo.url}/api/v1/access-grants/{platform_admin.grant_id}",
        headers={"X-API-Key": demo.key},
        timeout=30,
    )
    assert revoked.status_code == 204, revoked.text
    response = page.goto(f"{demo.url}/ui/alarms")
    assert response is not None
    assert response.status == 200
    panel = page.get_by_test_id("not-permitted")
    panel.wait_for()
    assert "Not permitted" in panel.inner_text()
    assert "grant" in panel.inner_text()  # the API's own message names what is missing
    page.goto(f"{demo.url}/ui/machine/press-01")
    page.get_by_test_id("not-permitted").wait_for()
    shot(page, "tn-04-grant-revoked")
    assert any(r["outcome"] == "denied" for r in grant_uses(demo, token))

    # Leaving the tenant: back at the platform level, on the choice.
    page.goto(f"{demo.url}/ui/tenants")
    page.get_by_test_id("tenant-leave-page").click()
    page.wait_for_url(f"{demo.url}/ui/tenants")
    page.get_by_test_id("tenant-current").filter(has_text="No company chosen").wait_for()
    assert page.get_by_test_id("enter-demo").is_disabled()  # the grant is gone
    page.close()
