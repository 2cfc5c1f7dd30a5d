"""Login, lockout, sessions, TOTP, tokens, user admin and access grants over the real API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopfloor.api.platform import Platform
from shopfloor.security import totp
from shopfloor.security.auth import LOGIN_RATE_PER_S
from shopfloor.security.roles import Role
from tests.security.conftest import PASSWORD, Tenant, UserHeaders


class Clock:
    """Injected time: tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def clock(platform: Platform) -> Clock:
    c = Clock()
    platform.auth.clock = c
    platform.auth.monotonic = lambda: c.mono
    return c


Login = Callable[..., Any]


@pytest.fixture
def login(client: TestClient) -> Login:
    def do(
        username: str, password: str = PASSWORD, tenant: str | None = "acme", **extra: Any
    ) -> Any:
        body = {"tenant": tenant, "username": username, "password": password, **extra}
        return client.post("/api/v1/auth/login", json=body)

    return do


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_user(platform: Platform, tenant: Tenant | None, name: str, *roles: Role) -> int:
    tid = None if tenant is None else tenant.info.id
    return platform.auth.create_user(tid, name, PASSWORD, list(roles)).id


def enrol(platform: Platform, tenant: str | None, name: str, clock: Clock) -> str:
    e = platform.auth.enroll_totp(tenant, name, PASSWORD)
    code = totp.code_at(e.secret, clock().timestamp())
    platform.auth.confirm_totp(tenant, name, PASSWORD, code)
    clock.advance(totp.STEP_S)  # the confirming code is used up
    return e.secret


# ---------------------------------------------------------------------------------------------
# Login, lockout, same answer
# ---------------------------------------------------------------------------------------------


def test_login_gives_session_cookie_and_me(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    r = login("olga")
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert token.startswith("sfs_")
    cookie = r.headers["set-cookie"].lower()
    assert "sf_session=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "secure" not in cookie  # settings.https is off here
    me = client.get("/api/v1/auth/me", headers=bearer(token)).json()
    assert me["name"] == "olga"
    assert me["tenant"] == "acme"
    assert me["kind"] == "user"
    assert "commands.send" in me["permissions"]
    assert "registry.write" not in me["permissions"]
    # The cookie alone authenticates too (the TestClient keeps it).
    assert client.get("/api/v1/assets").status_code == 200


def test_unknown_user_and_wrong_password_get_the_same_401(
    platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    wrong = login("olga", "Wrong-password-123")
    unknown = login("nobody", "Wrong-password-123")
    no_tenant = login("olga", tenant="no-such-tenant")
    assert wrong.status_code == unknown.status_code == no_tenant.status_code == 401
    assert wrong.json() == unknown.json() == no_tenant.json()


def test_lockout_after_failures_then_unlock_and_expiry(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    login: Login,
    clock: Clock,
    user_headers: UserHeaders,
) -> None:
    n = platform.settings.login_max_failures
    make_user(platform, acme, "olga", Role.OPERATOR)
    for _ in range(n - 1):
        assert login("olga", "Wrong-password-123").status_code == 401
    r = login("olga", "Wrong-password-123")
    assert r.status_code == 423
    assert "account locked until" in r.json()["error"]["message"]
    # The right password does not open a locked account.
    assert login("olga").status_code == 423
    clock.advance(platform.settings.login_lockout_s - 1)
    assert login("olga").status_code == 423
    clock.advance(2)
    assert login("olga").status_code == 200  # the lock expired; success resets the counter
    for _ in range(n - 1):
        assert login("olga", "Wrong-password-123").status_code == 401
    assert login("olga").status_code == 200  # n-1 failures, then success: not locked
    for _ in range(n):
        login("olga", "Wrong-password-123")
    assert login("olga").status_code == 423
    admin = user_headers(Role.TENANT_ADMIN, acme.info.id)
    r = client.post("/api/v1/users/olga/unlock", headers=admin)
    assert r.status_code == 200
    assert r.json()["locked_until"] is None
    assert login("olga").status_code == 200


def test_unknown_and_disabled_names_lock_like_real_accounts(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    """A lockout answer must not tell which names exist: an unknown name and a disabled user
    answer 401, 401, ... then 423 after the same number of failures as a real account."""
    n = platform.settings.login_max_failures
    make_user(platform, acme, "olga", Role.OPERATOR)
    make_user(platform, acme, "dora", Role.OPERATOR)
    platform.auth.update_user(acme.info.id, "dora", disabled=True)
    answers: dict[str, list[int]] = {}
    for name in ("olga", "nobody", "dora"):
        answers[name] = [login(name, "Wrong-password-123").status_code for _ in range(n + 1)]
    assert answers["olga"] == [401] * (n - 1) + [423, 423]
    assert answers["nobody"] == answers["olga"]
    assert answers["dora"] == answers["olga"]
    clock.advance(platform.settings.login_lockout_s + 1)
    assert login("nobody", "Wrong-password-123").status_code == 401  # the lock expires too


def test_lock_ends_open_sessions(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    token = login("olga").json()["token"]
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 200
    for _ in range(platform.settings.login_max_failures):
        login("olga", "Wrong-password-123")
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------


def test_idle_timeout_and_activity(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    h = bearer(login("olga").json()["token"])
    idle = platform.settings.session_idle_timeout_s
    for _ in range(3):  # activity keeps the session alive well past one idle period
        clock.advance(idle * 0.6)
        assert client.get("/api/v1/auth/me", headers=h).status_code == 200
    clock.advance(idle + 1)
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401
    clock.advance(-idle - 1)  # ended for good, not just by the clock
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401


def test_max_age_ends_an_active_session(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    h = bearer(login("olga").json()["token"])
    step = platform.settings.session_idle_timeout_s / 2
    elapsed = 0.0
    while elapsed + step < platform.settings.session_max_age_s:
        clock.advance(step)
        elapsed += step
        assert client.get("/api/v1/auth/me", headers=h).status_code == 200
    clock.advance(step)
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401


def test_logout_ends_the_session(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    h = bearer(login("olga").json()["token"])
    r = client.post("/api/v1/auth/logout", headers=h)
    assert r.status_code == 204
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401


# ---------------------------------------------------------------------------------------------
# TOTP
# ---------------------------------------------------------------------------------------------


def test_mfa_role_must_enrol_then_give_codes(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "ada", Role.TENANT_ADMIN)
    r = login("ada")
    assert r.status_code == 403
    assert "TOTP enrolment required" in r.json()["error"]["message"]
    creds = {"tenant": "acme", "username": "ada", "password": PASSWORD}
    r = client.post("/api/v1/auth/totp/enroll", json=creds)
    assert r.status_code == 200
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/")
    bad = client.post("/api/v1/auth/totp/confirm", json={**creds, "code": "000000"})
    assert bad.status_code == 422
    code = totp.code_at(secret, clock().timestamp())
    assert client.post("/api/v1/auth/totp/confirm", json={**creds, "code": code}).status_code == 204
    # Once confirmed, enrolment is closed: nobody knowing the password can replace it.
    assert client.post("/api/v1/auth/totp/enroll", json=creds).status_code == 409
    assert login("ada").status_code == 403  # no code given
    assert login("ada", totp=code).status_code == 401  # the confirming code is used up
    clock.advance(totp.STEP_S)
    code = totp.code_at(secret, clock().timestamp())
    assert login("ada", totp="123456" if code != "123456" else "654321").status_code == 401
    ok = login("ada", totp=code)
    assert ok.status_code == 200
    assert login("ada", totp=code).status_code == 401  # the same code never works twice


def test_totp_accepts_one_step_of_skew_not_two(
    platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "ada", Role.TENANT_ADMIN)
    secret = enrol(platform, "acme", "ada", clock)
    t = clock().timestamp()
    clock.advance(10 * totp.STEP_S)
    assert login("ada", totp=totp.code_at(secret, t + 8 * totp.STEP_S)).status_code == 401
    now = clock().timestamp()
    assert login("ada", totp=totp.code_at(secret, now - totp.STEP_S)).status_code == 200
    assert login("ada", totp=totp.code_at(secret, now + totp.STEP_S)).status_code == 200


def test_non_mfa_role_needs_no_code(platform: Platform, acme: Tenant, login: Login) -> None:
    make_user(platform, acme, "vic", Role.VIEWER)
    assert login("vic").status_code == 200


# ---------------------------------------------------------------------------------------------
# Passwords
# ---------------------------------------------------------------------------------------------


def test_password_expiry_and_change(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    clock.advance(platform.settings.password_max_age_days * 86400 + 1)
    r = login("olga")
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "PasswordExpired"
    assert "password expired: change it" in r.json()["error"]["message"]
    change = {"tenant": "acme", "username": "olga", "password": PASSWORD}
    weak = client.post("/api/v1/auth/password", json={**change, "new_password": "short"})
    assert weak.status_code == 422
    assert weak.json()["error"]["field"] == "password"
    same = client.post("/api/v1/auth/password", json={**change, "new_password": PASSWORD})
    assert same.status_code == 422
    assert "last" in same.json()["error"]["message"]
    new = "Another-good-pass-42"
    assert (
        client.post("/api/v1/auth/password", json={**change, "new_password": new}).status_code
        == 204
    )
    assert login("olga").status_code == 401
    assert login("olga", new).status_code == 200


def test_password_reset_gives_one_time_password(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, user_headers: UserHeaders
) -> None:
    make_user(platform, acme, "olga", Role.OPERATOR)
    admin = user_headers(Role.TENANT_ADMIN, acme.info.id)
    r = client.post("/api/v1/users/olga/password-reset", headers=admin)
    assert r.status_code == 200
    one_time = r.json()["password"]
    assert login("olga").status_code == 401  # the old one is gone
    assert login("olga", one_time).json()["error"]["type"] == "PasswordExpired"
    body = {"tenant": "acme", "username": "olga", "password": one_time}
    r = client.post("/api/v1/auth/password", json={**body, "new_password": "Fresh-password-77"})
    assert r.status_code == 204
    assert login("olga", "Fresh-password-77").status_code == 200


# ---------------------------------------------------------------------------------------------
# API tokens
# ---------------------------------------------------------------------------------------------


def session_of(
    login: Login, platform: Platform, acme: Tenant, role: Role, name: str
) -> dict[str, str]:
    make_user(platform, acme, name, role)
    return bearer(login(name).json()["token"])


def test_token_scopes_narrow_and_must_be_held(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    h = session_of(login, platform, acme, Role.ENGINEER, "eng")
    r = client.post(
        "/api/v1/auth/tokens", headers=h, json={"name": "ro", "scopes": ["registry.read"]}
    )
    assert r.status_code == 201, r.text
    ro = bearer(r.json()["token"])
    assert r.json()["token"].startswith("sft_")
    assert client.get("/api/v1/assets", headers=ro).status_code == 200
    site = {"level": "enterprise", "name": "hq"}
    assert client.post("/api/v1/assets", headers=ro, json=site).status_code == 403
    assert client.post("/api/v1/assets", headers=h, json=site).status_code == 201
    # An engineer holds no users.manage: a token cannot widen what its user holds.
    r = client.post(
        "/api/v1/auth/tokens", headers=h, json={"name": "x", "scopes": ["users.manage"]}
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "scopes"
    r = client.post("/api/v1/auth/tokens", headers=h, json={"name": "x", "scopes": ["bogus"]})
    assert r.status_code == 422
    listed = client.get("/api/v1/auth/tokens", headers=h).json()
    assert [t["name"] for t in listed] == ["ro"]
    assert "token" not in listed[0]


def test_token_revocation_is_effective_on_the_next_request(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    h = session_of(login, platform, acme, Role.VIEWER, "vic")
    r = client.post("/api/v1/auth/tokens", headers=h, json={"name": "ci"})
    tok, tid = bearer(r.json()["token"]), r.json()["info"]["id"]
    assert client.get("/api/v1/assets", headers=tok).status_code == 200  # now cached
    assert client.delete(f"/api/v1/auth/tokens/{tid}", headers=h).status_code == 204
    assert client.get("/api/v1/assets", headers=tok).status_code == 401
    # Another user's token id is not found, exactly like a missing one.
    other = session_of(login, platform, acme, Role.VIEWER, "val")
    assert client.delete(f"/api/v1/auth/tokens/{tid}", headers=other).status_code == 404


def test_token_expiry(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    h = session_of(login, platform, acme, Role.VIEWER, "vic")
    r = client.post("/api/v1/auth/tokens", headers=h, json={"name": "ci", "expires_in_days": 1})
    tok = bearer(r.json()["token"])
    assert client.get("/api/v1/assets", headers=tok).status_code == 200
    clock.advance(86400 + 1)
    assert client.get("/api/v1/assets", headers=tok).status_code == 401
    too_long = {"name": "x", "expires_in_days": 366}
    h2 = session_of(login, platform, acme, Role.VIEWER, "val")
    assert client.post("/api/v1/auth/tokens", headers=h2, json=too_long).status_code == 422


def test_disabling_a_user_stops_their_tokens_at_once(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders
) -> None:
    admin = user_headers(Role.TENANT_ADMIN, acme.info.id)
    uid = make_user(platform, acme, "vic", Role.VIEWER)
    _, secret = platform.auth.issue_token(uid, "ci")
    assert client.get("/api/v1/assets", headers=bearer(secret)).status_code == 200
    r = client.patch("/api/v1/users/vic", headers=admin, json={"disabled": True})
    assert r.status_code == 200
    assert r.json()["disabled"] is True
    assert client.get("/api/v1/assets", headers=bearer(secret)).status_code == 401


# ---------------------------------------------------------------------------------------------
# User administration
# ---------------------------------------------------------------------------------------------


def test_tenant_admin_manages_own_tenant_only(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    make_tenant: Callable[[str], Tenant],
    user_headers: UserHeaders,
) -> None:
    globex = make_tenant("globex")
    make_user(platform, globex, "gus", Role.OPERATOR)
    admin = user_headers(Role.TENANT_ADMIN, acme.info.id)
    body = {"username": "olga", "password": PASSWORD, "roles": [{"role": "operator"}]}
    r = client.post("/api/v1/users", headers=admin, json=body)
    assert r.status_code == 201
    assert r.json()["roles"] == [{"role": "operator", "asset_id": None}]
    assert client.post("/api/v1/users", headers=admin, json=body).status_code == 409
    names = [u["username"] for u in client.get("/api/v1/users", headers=admin).json()]
    assert "olga" in names
    assert "gus" not in names
    missing = client.get("/api/v1/users/nobody", headers=admin)
    foreign = client.get("/api/v1/users/gus", headers=admin)
    assert missing.status_code == foreign.status_code == 404
    assert missing.json()["error"]["message"].replace("nobody", "X") == foreign.json()["error"][
        "message"
    ].replace("gus", "X")
    for call in (
        lambda: client.patch("/api/v1/users/gus", headers=admin, json={"disabled": True}),
        lambda: client.delete("/api/v1/users/gus", headers=admin),
        lambda: client.put("/api/v1/users/gus/roles", headers=admin, json={"roles": []}),
        lambda: client.post("/api/v1/users/gus/unlock", headers=admin),
        lambda: client.post("/api/v1/users/gus/password-reset", headers=admin),
    ):
        assert call().status_code == 404
    assert platform.auth.get_user(globex.info.id, "gus").disabled is False
    # An operator may not manage users at all.
    op = user_headers(Role.OPERATOR, acme.info.id)
    assert client.get("/api/v1/users", headers=op).status_code == 403


def test_role_rules_on_the_api(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    make_tenant: Callable[[str], Tenant],
    login: Login,
    clock: Clock,
) -> None:
    admin_id = make_user(platform, acme, "ada", Role.TENANT_ADMIN)
    secret = enrol(platform, "acme", "ada", clock)
    r = login("ada", totp=totp.code_at(secret, clock().timestamp()))
    admin = bearer(r.json()["token"])
    make_user(platform, acme, "eve", Role.ENGINEER)
    r = client.put(
        "/api/v1/users/eve/roles",
        headers=admin,
        json={"roles": [{"role": "engineer"}, {"role": "auditor"}]},
    )
    assert r.status_code == 422
    assert "separate duties" in r.json()["error"]["message"]
    r = client.put(
        "/api/v1/users/eve/roles", headers=admin, json={"roles": [{"role": "platform_admin"}]}
    )
    assert r.status_code == 422
    # Asset bindings must name an asset of this tenant.
    globex = make_tenant("globex")
    foreign = platform.registry.create_asset(globex.info.id, "enterprise", "g-hq")
    r = client.put(
        "/api/v1/users/eve/roles",
        headers=admin,
        json={"roles": [{"role": "engineer", "asset_id": foreign.id}]},
    )
    assert r.status_code == 422
    own = platform.registry.create_asset(acme.info.id, "enterprise", "hq")
    r = client.put(
        "/api/v1/users/eve/roles",
        headers=admin,
        json={"roles": [{"role": "operator", "asset_id": own.id}]},
    )
    assert r.status_code == 200
    assert r.json()["roles"] == [{"role": "operator", "asset_id": own.id}]
    # Lock-out protection: ada cannot strip her own last tenant_admin binding.
    r = client.put("/api/v1/users/ada/roles", headers=admin, json={"roles": [{"role": "viewer"}]})
    assert r.status_code == 422
    assert "yourself" in r.json()["error"]["message"]
    assert platform.auth.user_by_id(admin_id).bindings[0].role is Role.TENANT_ADMIN
    # A role change applies at once: the token resolves to the new bindings on its next use.
    eve = platform.auth.get_user(acme.info.id, "eve")
    _, tok = platform.auth.issue_token(eve.id, "ci")
    assert (
        client.get("/api/v1/auth/me", headers=bearer(tok)).json()["roles"][0]["role"] == "operator"
    )
    client.put("/api/v1/users/eve/roles", headers=admin, json={"roles": [{"role": "viewer"}]})
    me = client.get("/api/v1/auth/me", headers=bearer(tok)).json()
    assert me["roles"] == [{"role": "viewer", "asset_id": None}]


def test_delete_user_ends_their_credentials(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders
) -> None:
    admin = user_headers(Role.TENANT_ADMIN, acme.info.id)
    uid = make_user(platform, acme, "vic", Role.VIEWER)
    _, secret = platform.auth.issue_token(uid, "ci")
    assert client.get("/api/v1/assets", headers=bearer(secret)).status_code == 200
    assert client.delete("/api/v1/users/vic", headers=admin).status_code == 204
    assert client.get("/api/v1/assets", headers=bearer(secret)).status_code == 401
    assert client.get("/api/v1/users/vic", headers=admin).status_code == 404


# ---------------------------------------------------------------------------------------------
# Access grants
# ---------------------------------------------------------------------------------------------


def test_grant_flow_for_a_platform_admin(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    user_headers: UserHeaders,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used: list[tuple[str, str]] = []
    real = platform.audit.record

    def spy(action: str, obj: str, outcome: str, **kw: Any) -> int:
        used.append((action, outcome))
        return real(action, obj, outcome, **kw)

    monkeypatch.setattr(platform.audit, "record", spy)
    pa = user_headers(Role.PLATFORM_ADMIN, None)
    inside = {**pa, "X-Shopfloor-Tenant": "acme"}
    nowhere = {**pa, "X-Shopfloor-Tenant": "no-such-tenant"}
    denied = client.get("/api/v1/assets", headers=inside)
    unknown = client.get("/api/v1/assets", headers=nowhere)
    assert denied.status_code == unknown.status_code == 403
    assert denied.json() == unknown.json()  # does not tell whether the tenant exists
    admin = user_headers(Role.TENANT_ADMIN, acme.info.id)
    grantee = platform.auth.list_users(None)[0].username
    r = client.post(
        "/api/v1/access-grants",
        headers=admin,
        json={"grantee": grantee, "duration_hours": 2, "reason": "ticket 42"},
    )
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    assert ("access.grant.created", "ok") in used
    used.clear()
    assert client.get("/api/v1/assets", headers=inside).status_code == 200
    assert ("access.grant.used", "ok") in used
    # The grant lets the platform admin read, nothing more.
    site = {"level": "enterprise", "name": "hq"}
    assert client.post("/api/v1/assets", headers=inside, json=site).status_code == 403
    assert client.get("/api/v1/users", headers=inside).status_code == 403
    clock.advance(2 * 3600 + 1)
    assert client.get("/api/v1/assets", headers=inside).status_code == 403  # expired
    r = client.post(
        "/api/v1/access-grants",
        headers=admin,
        json={"grantee": grantee, "duration_hours": 1, "reason": "ticket 43"},
    )
    assert client.get("/api/v1/assets", headers=inside).status_code == 200
    assert (
        client.delete(f"/api/v1/access-grants/{r.json()['id']}", headers=admin).status_code == 204
    )
    assert client.get("/api/v1/assets", headers=inside).status_code == 403  # revoked
    grants = client.get("/api/v1/access-grants", headers=admin).json()
    assert [g["id"] for g in grants] == [gid, r.json()["id"]]
    assert grants[1]["revoked_at"]
    # A grant names a platform user: a tenant user is not found.
    r = client.post(
        "/api/v1/access-grants",
        headers=admin,
        json={"grantee": "nobody", "duration_hours": 1, "reason": "x"},
    )
    assert r.status_code == 404


# ---------------------------------------------------------------------------------------------
# Review fixes: separation of duties, promotions, token minting, password change, rate limit
# ---------------------------------------------------------------------------------------------

OPERATOR_ONLY = "managed by the platform operator (shopfloor user"


def test_tenant_admin_cannot_grant_or_touch_oversight_roles(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders
) -> None:
    """A tenant admin must not appoint, disable or reset the people who check their work."""
    make_user(platform, acme, "sec", Role.SECURITY_ADMIN)  # the platform operator's (CLI)
    make_user(platform, acme, "aud", Role.AUDITOR)
    make_user(platform, acme, "eve", Role.ENGINEER)
    for admin in (user_headers(Role.TENANT_ADMIN, acme.info.id), acme.key_headers):
        for granted in ("security_admin", "auditor"):
            body = {
                "username": f"new-{granted}",
                "password": PASSWORD,
                "roles": [{"role": granted}],
            }
            r = client.post("/api/v1/users", headers=admin, json=body)
            assert r.status_code == 403, r.text
            assert OPERATOR_ONLY in r.json()["error"]["message"]
            r = client.put(
                "/api/v1/users/eve/roles", headers=admin, json={"roles": [{"role": granted}]}
            )
            assert r.status_code == 403, r.text
        listed = {u["username"] for u in client.get("/api/v1/users", headers=admin).json()}
        assert {"sec", "aud"} <= listed  # visible, not changeable
        for name in ("sec", "aud"):
            assert client.get(f"/api/v1/users/{name}", headers=admin).status_code == 200
            for method, suffix, body in (
                ("PATCH", "", {"disabled": True}),
                ("DELETE", "", None),
                ("PUT", "/roles", {"roles": [{"role": "viewer"}]}),
                ("POST", "/unlock", None),
                ("POST", "/password-reset", None),
            ):
                r = client.request(
                    method, f"/api/v1/users/{name}{suffix}", headers=admin, json=body
                )
                assert r.status_code == 403, f"{method} {suffix}: {r.text}"
                assert OPERATOR_ONLY in r.json()["error"]["message"]
    sec = platform.auth.get_user(acme.info.id, "sec")
    assert not sec.disabled
    assert [b.role for b in sec.bindings] == [Role.SECURITY_ADMIN]
    assert [b.role for b in platform.auth.get_user(acme.info.id, "eve").bindings] == [Role.ENGINEER]
    # The delegated roles still work as before.
    admin = acme.key_headers
    r = client.put("/api/v1/users/eve/roles", headers=admin, json={"roles": [{"role": "viewer"}]})
    assert r.status_code == 200
    assert (
        client.patch("/api/v1/users/eve", headers=admin, json={"disabled": True}).status_code == 200
    )


def test_role_change_ends_sessions_and_promotion_does_not_widen_tokens(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    """A viewer's session (no TOTP) and token must not become a tenant admin's."""
    make_user(platform, acme, "bob", Role.VIEWER)
    session = bearer(login("bob").json()["token"])
    r = client.post("/api/v1/auth/tokens", headers=session, json={"name": "ci"})
    assert r.status_code == 201, r.text
    assert r.json()["info"]["scopes"] == ["data.read", "registry.read"]  # the snapshot
    token = bearer(r.json()["token"])
    r = client.put(
        "/api/v1/users/bob/roles",
        headers=acme.key_headers,
        json={"roles": [{"role": "tenant_admin"}]},
    )
    assert r.status_code == 200
    assert client.get("/api/v1/auth/me", headers=session).status_code == 401  # ended
    body = {"username": "eve", "password": PASSWORD, "roles": [{"role": "engineer"}]}
    assert client.post("/api/v1/users", headers=token, json=body).status_code == 403
    assert client.get("/api/v1/users", headers=token).status_code == 403
    assert client.get("/api/v1/assets", headers=token).status_code == 200  # still what it was
    # bob logging in again as tenant admin needs the second factor now.
    assert login("bob").status_code == 403


def test_demotion_narrows_a_token_and_reinstating_restores_it(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders
) -> None:
    uid = make_user(platform, acme, "eng", Role.ENGINEER)
    _, secret = platform.auth.issue_token(uid, "ci")
    site = {"level": "enterprise", "name": "hq"}
    set_role = {"roles": [{"role": "viewer"}]}
    assert client.put("/api/v1/users/eng/roles", headers=acme.key_headers, json=set_role)
    assert client.post("/api/v1/assets", headers=bearer(secret), json=site).status_code == 403
    set_role = {"roles": [{"role": "engineer"}]}
    assert client.put("/api/v1/users/eng/roles", headers=acme.key_headers, json=set_role)
    assert client.post("/api/v1/assets", headers=bearer(secret), json=site).status_code == 201


def test_tokens_are_made_from_login_sessions_only(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    session = session_of(login, platform, acme, Role.VIEWER, "vic")
    r = client.post(
        "/api/v1/auth/tokens", headers=session, json={"name": "ci", "expires_in_days": 1}
    )
    assert r.status_code == 201
    token = bearer(r.json()["token"])
    child = {"name": "child", "expires_in_days": 365}
    r = client.post("/api/v1/auth/tokens", headers=token, json=child)
    assert r.status_code == 403
    assert "cannot create API tokens" in r.json()["error"]["message"]
    assert [t["name"] for t in client.get("/api/v1/auth/tokens", headers=session).json()] == ["ci"]
    r = client.post("/api/v1/auth/tokens", headers=acme.key_headers, json=child)
    assert r.status_code == 403  # the tenant key is no user


def test_password_change_needs_the_second_factor_once_enrolled(
    client: TestClient, platform: Platform, acme: Tenant, login: Login, clock: Clock
) -> None:
    make_user(platform, acme, "ada", Role.TENANT_ADMIN)
    change = {"tenant": "acme", "username": "ada", "password": PASSWORD}
    # Not enrolled yet: the password alone changes it (it is what enrolment rests on too).
    second = "Second-good-pass-42"
    r = client.post("/api/v1/auth/password", json={**change, "new_password": second})
    assert r.status_code == 204
    change["password"] = second
    e = platform.auth.enroll_totp("acme", "ada", second)
    platform.auth.confirm_totp("acme", "ada", second, totp.code_at(e.secret, clock().timestamp()))
    clock.advance(totp.STEP_S)
    third = {**change, "new_password": "Third-good-pass-43"}
    r = client.post("/api/v1/auth/password", json=third)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "TotpRequired"
    code = totp.code_at(e.secret, clock().timestamp())
    wrong = "123456" if code != "123456" else "654321"
    assert client.post("/api/v1/auth/password", json={**third, "totp": wrong}).status_code == 401
    assert login("ada", second, totp=code).status_code == 200  # nothing changed so far
    # The code was used by that login: a second use fails, even for a password change.
    assert client.post("/api/v1/auth/password", json={**third, "totp": code}).status_code == 401
    clock.advance(totp.STEP_S)
    code = totp.code_at(e.secret, clock().timestamp())
    assert client.post("/api/v1/auth/password", json={**third, "totp": code}).status_code == 204
    clock.advance(totp.STEP_S)
    code = totp.code_at(e.secret, clock().timestamp())
    assert login("ada", "Third-good-pass-43", totp=code).status_code == 200


def test_password_calls_are_rate_limited_per_source(
    client: TestClient, platform: Platform, acme: Tenant, login: Login
) -> None:
    t = [0.0]
    platform.auth.rate_clock = lambda: t[0]
    make_user(platform, acme, "olga", Role.OPERATOR)
    answers = [login(f"guess-{i % 3}", "Wrong-password-123").status_code for i in range(20)]
    assert set(answers) == {401, 423}  # the burst: answered, none refused
    r = login("olga")  # even the right password: refused before any work is done
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "RateLimited"
    assert r.headers["Retry-After"] == "1"
    creds = {"tenant": "acme", "username": "olga", "password": PASSWORD}
    for path, extra in (
        ("/api/v1/auth/password", {"new_password": "Another-good-pass-42"}),
        ("/api/v1/auth/totp/enroll", {}),
        ("/api/v1/auth/totp/confirm", {"code": "123456"}),
    ):
        assert client.post(path, json={**creds, **extra}).status_code == 429
    # Another address is not slowed by this one.
    platform.auth.login("acme", "olga", PASSWORD, source="10.0.0.9")
    t[0] += 1 / LOGIN_RATE_PER_S
    assert login("olga").status_code == 200  # the bucket refilled one call's worth
    assert login("olga").status_code == 429
