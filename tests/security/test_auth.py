"""AuthService over a real registry: password policy, role rules, TOTP steps and the cache."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from shopfloor.api.deps import resolve_secret
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    ShopfloorError,
    Unauthorized,
)
from shopfloor.registry.models import UserSession
from shopfloor.security import auth as auth_module
from shopfloor.security import passwords, totp
from shopfloor.security.audit import AuditLog
from shopfloor.security.auth import CACHE_TTL_S, AccountLocked, AuthService
from shopfloor.security.principal import PrincipalKind
from shopfloor.security.roles import Permission, Role, permissions_of
from tests.security.conftest import PASSWORD, Tenant

SETTINGS = Settings(password_min_length=12, password_history=3)


# ---------------------------------------------------------------------------------------------
# Password policy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("Short-1a", "at least 12"),
        ("alllowercaseletters", "3 of"),  # 19 characters, one class
        ("lowercase123456", "3 of"),  # two classes
        ("My-olga-Password-1", "username"),
        ("x" * 1025, "at most"),
    ],
)
def test_policy_refuses(password: str, why: str) -> None:
    with pytest.raises(BadInput, match=why) as exc:
        passwords.check_policy(password, "Olga", SETTINGS)
    assert exc.value.field == "password"


@pytest.mark.parametrize(
    "password", ["Three-classes-1", "lower-and-digits-123", "a long passphrase of words"]
)
def test_policy_accepts(password: str) -> None:
    assert passwords.check_policy(password, "olga", SETTINGS) == password


def test_policy_refuses_recent_passwords_only() -> None:
    hasher = passwords.default_hasher()
    old = [hasher.hash(f"Old-password-{i}") for i in range(5)]  # newest first
    for i in range(3):
        with pytest.raises(BadInput, match="last 3"):
            passwords.check_policy(
                f"Old-password-{i}", "olga", SETTINGS, hasher=hasher, earlier=old
            )
    # The fourth-newest is outside the history of 3: allowed again.
    passwords.check_policy("Old-password-3", "olga", SETTINGS, hasher=hasher, earlier=old)


def test_hashes_are_argon2id_and_salted() -> None:
    hasher = passwords.default_hasher()
    a, b = hasher.hash(PASSWORD), hasher.hash(PASSWORD)
    assert a.startswith("$argon2id$")
    assert a != b
    assert passwords.verify(hasher, a, PASSWORD)
    assert not passwords.verify(hasher, a, "x")
    assert not passwords.verify(hasher, "not a hash", PASSWORD)


# ---------------------------------------------------------------------------------------------
# TOTP
# ---------------------------------------------------------------------------------------------


def test_totp_window_and_replay() -> None:
    secret = totp.new_secret()
    t = 1_900_000_000.0
    step = totp.step_of(t)
    assert totp.match(secret, totp.code_at(secret, t), t, None) == step
    assert totp.match(secret, totp.code_at(secret, t - 30), t, None) == step - 1
    assert totp.match(secret, totp.code_at(secret, t + 30), t, None) == step + 1
    assert totp.match(secret, totp.code_at(secret, t - 60), t, None) is None
    assert totp.match(secret, totp.code_at(secret, t), t, step) is None  # used already
    assert totp.match(secret, totp.code_at(secret, t - 30), t, step) is None  # older still
    assert totp.match(secret, "12345", t, None) is None
    assert totp.match(secret, None, t, None) is None


# ---------------------------------------------------------------------------------------------
# Users and roles
# ---------------------------------------------------------------------------------------------


def test_role_combinations_refused(platform: Platform, acme: Tenant) -> None:
    auth = platform.auth
    with pytest.raises(BadInput, match="separate duties"):
        auth.create_user(acme.info.id, "a1", PASSWORD, [Role.AUDITOR, Role.ENGINEER])
    with pytest.raises(BadInput, match="separate duties"):
        auth.create_user(None, "p1", PASSWORD, [Role.SECURITY_ADMIN, Role.PLATFORM_ADMIN])
    with pytest.raises(BadInput, match="platform user may hold"):
        auth.create_user(None, "p2", PASSWORD, [Role.ENGINEER])
    with pytest.raises(BadInput, match="platform users only"):
        auth.create_user(acme.info.id, "t1", PASSWORD, [Role.PLATFORM_ADMIN])
    # Nothing of a refused user was kept.
    assert auth.list_users(acme.info.id) == []
    assert auth.list_users(None) == []
    u = auth.create_user(acme.info.id, "ok", PASSWORD, [Role.ENGINEER, Role.OPERATOR])
    with pytest.raises(BadInput, match="separate duties"):
        auth.set_roles(acme.info.id, "ok", [Role.ENGINEER, Role.SECURITY_ADMIN])
    assert {b.role for b in auth.user_by_id(u.id).bindings} == {Role.ENGINEER, Role.OPERATOR}


def test_asset_binding_must_be_in_the_tenant(platform: Platform, make_tenant: Any) -> None:
    a, b = make_tenant("a"), make_tenant("b")
    foreign = platform.registry.create_asset(b.info.id, "enterprise", "hq")
    with pytest.raises(BadInput, match="not found in this tenant"):
        platform.auth.create_user(a.info.id, "u", PASSWORD, [(Role.ENGINEER, foreign.id)])


def test_usernames_unique_per_tenant(platform: Platform, make_tenant: Any) -> None:
    a, b = make_tenant("a"), make_tenant("b")
    platform.auth.create_user(a.info.id, "sam", PASSWORD)
    platform.auth.create_user(b.info.id, "sam", PASSWORD)  # another tenant: fine
    platform.auth.create_user(None, "sam", PASSWORD)
    with pytest.raises(Conflict):
        platform.auth.create_user(a.info.id, "sam", PASSWORD)
    with pytest.raises(Conflict):
        platform.auth.create_user(None, "sam", PASSWORD)


def test_user_password_checked_against_policy(platform: Platform, acme: Tenant) -> None:
    with pytest.raises(BadInput, match="username"):
        platform.auth.create_user(acme.info.id, "harbour", "Harbour-master-1")


# ---------------------------------------------------------------------------------------------
# resolve() and its cache
# ---------------------------------------------------------------------------------------------


def count_queries(platform: Platform) -> list[str]:
    seen: list[str] = []
    event.listen(
        platform.registry.engine,
        "before_cursor_execute",
        lambda *a: seen.append(a[2]),
    )
    return seen


def test_unprefixed_secret_costs_no_query(platform: Platform, acme: Tenant) -> None:
    seen = count_queries(platform)
    assert platform.auth.resolve("some-tenant-key-or-junk", "-") is None
    assert seen == []
    assert platform.auth.resolve("sft_unknown", "-") is None
    assert len([q for q in seen if q.startswith("SELECT")]) == 1  # prefixed: one lookup


def test_token_resolves_from_cache_then_revocation_drops_it(
    platform: Platform, acme: Tenant
) -> None:
    u = platform.auth.create_user(acme.info.id, "eng", PASSWORD, [Role.ENGINEER])
    info, secret = platform.auth.issue_token(u.id, "ci", [Permission.DATA_WRITE])
    p = resolve_secret(platform, secret, "-")
    assert p is not None
    assert p.kind is PrincipalKind.TOKEN
    assert p.token_id == info.id
    assert p.scopes == {Permission.DATA_WRITE}
    assert p.tenant == acme.info
    assert p.holds(Permission.DATA_WRITE, acme.info.id)
    assert not p.holds(Permission.REGISTRY_WRITE, acme.info.id)  # the role has it, not the token
    seen = count_queries(platform)
    for _ in range(50):
        assert platform.auth.resolve(secret, "-") == p
    assert seen == []  # the hot path is served from memory
    platform.auth.revoke_token(u.id, info.id)
    assert platform.auth.resolve(secret, "-") is None


def test_another_process_revocation_seen_within_ttl(platform: Platform, acme: Tenant) -> None:
    mono = [0.0]
    platform.auth.monotonic = lambda: mono[0]
    u = platform.auth.create_user(acme.info.id, "eng", PASSWORD, [Role.ENGINEER])
    info, secret = platform.auth.issue_token(u.id, "ci")
    assert platform.auth.resolve(secret, "-") is not None
    # Another process (the CLI) revokes through its own service over the same database.
    other = AuthService(
        platform.registry, platform.settings, AuditLog(platform.registry, platform.settings)
    )
    other.revoke_token(u.id, info.id)
    mono[0] += CACHE_TTL_S / 2
    assert platform.auth.resolve(secret, "-") is not None  # still cached: bounded staleness
    mono[0] += CACHE_TTL_S
    assert platform.auth.resolve(secret, "-") is None


def test_token_scopes_must_be_held_and_non_empty(platform: Platform, acme: Tenant) -> None:
    u = platform.auth.create_user(acme.info.id, "vic", PASSWORD, [Role.VIEWER])
    with pytest.raises(BadInput, match=r"data\.write") as exc:
        platform.auth.issue_token(u.id, "x", [Permission.DATA_WRITE])
    assert exc.value.field == "scopes"
    with pytest.raises(BadInput, match="at least one"):
        platform.auth.issue_token(u.id, "x", [])
    with pytest.raises(BadInput, match="days"):
        platform.auth.issue_token(u.id, "x", None, 400 * 86400.0)


def test_enter_tenant_needs_a_user_with_a_grant(platform: Platform, acme: Tenant) -> None:
    from shopfloor.api.deps import admin_key_principal

    with pytest.raises(Forbidden, match="no live access grant"):
        platform.auth.enter_tenant(admin_key_principal(), "acme", "-")
    pa = platform.auth.create_user(None, "root", PASSWORD, [Role.PLATFORM_ADMIN])
    _, secret = platform.auth.issue_token(pa.id, "ops")
    p = platform.auth.resolve(secret, "-")
    assert p is not None
    assert p.tenant is None
    with pytest.raises(Forbidden):
        platform.auth.enter_tenant(p, "acme", "-")
    g = platform.auth.create_grant(acme.info.id, "root", 3600, "support ticket 7")
    inside = platform.auth.enter_tenant(p, "acme", "-")
    assert inside.grant_id == g.id
    assert inside.tenant == acme.info
    assert inside.permissions(acme.info.id) == {Permission.DATA_READ, Permission.REGISTRY_READ}
    with pytest.raises(BadInput, match="reason"):
        platform.auth.create_grant(acme.info.id, "root", 3600, "  ")
    with pytest.raises(NotFound):
        platform.auth.create_grant(acme.info.id, "nobody", 3600, "x")


def test_secrets_never_reach_the_audit(
    platform: Platform, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(platform.audit, "record", lambda *a, **kw: calls.append(repr((a, kw))) or 0)
    auth = platform.auth
    u = auth.create_user(acme.info.id, "olga", PASSWORD, [Role.OPERATOR])
    _, token = auth.issue_token(u.id, "ci")
    _, session, _ = auth.login("acme", "olga", PASSWORD, source="10.0.0.1")
    with pytest.raises(Unauthorized):
        auth.login("acme", "olga", "Wrong-Password-99")
    one_time = auth.reset_password(acme.info.id, "olga")
    auth.change_password("acme", "olga", one_time, "Brand-new-pass-1")
    e = auth.enroll_totp("acme", "olga", "Brand-new-pass-1")
    assert len(calls) >= 6
    text = "\n".join(calls)
    for secret in (
        PASSWORD,
        token,
        session,
        "Wrong-Password-99",
        one_time,
        "Brand-new-pass-1",
        e.secret,
    ):
        assert secret not in text
    assert "10.0.0.1" in text  # the source address is recorded


# ---------------------------------------------------------------------------------------------
# Review fixes: TOTP race, phantom eviction, cache kept on failed logins, tenant gone
# ---------------------------------------------------------------------------------------------


def mfa_user(platform: Platform, acme: Tenant, now: datetime) -> str:
    """A tenant admin with TOTP confirmed at ``now - 1 step``; their TOTP secret."""
    platform.auth.clock = lambda: now
    platform.auth.create_user(acme.info.id, "ada", PASSWORD, [Role.TENANT_ADMIN])
    e = platform.auth.enroll_totp("acme", "ada", PASSWORD)
    platform.auth.clock = lambda: now - timedelta(seconds=totp.STEP_S)
    platform.auth.confirm_totp(
        "acme", "ada", PASSWORD, totp.code_at(e.secret, now.timestamp() - totp.STEP_S)
    )
    platform.auth.clock = lambda: now
    return e.secret


def test_one_totp_code_opens_one_session_under_concurrent_logins(
    platform: Platform, acme: Tenant
) -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    secret = mfa_user(platform, acme, now)
    code = totp.code_at(secret, now.timestamp())
    n = 4  # below login_max_failures: the losers are failures, not a lock
    start = threading.Barrier(n)
    results: list[str] = []

    def attempt() -> None:
        start.wait()  # all read totp_last_step before any of them writes it
        try:
            platform.auth.login("acme", "ada", PASSWORD, code)
            results.append("ok")
        except ShopfloorError as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["Unauthorized"] * (n - 1) + ["ok"]
    with platform.registry._read() as s:
        assert s.scalar(select(func.count()).select_from(UserSession)) == 1


def test_phantom_lock_survives_a_flood_of_other_names(
    platform: Platform, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "PHANTOMS_MAX", 20)
    auth = platform.auth
    for _ in range(platform.settings.login_max_failures):
        with pytest.raises(ShopfloorError):
            auth.login("acme", "ghost", "Wrong-password-123", source="10.0.0.1")
    with pytest.raises(AccountLocked):
        auth.login("acme", "ghost", "Wrong-password-123", source="10.0.0.1")
    # 30 other names, one guess each (from other addresses, past the rate limit).
    for i in range(30):
        with pytest.raises(Unauthorized):
            auth.login("acme", f"name-{i}", "Wrong-password-123", source=f"10.1.0.{i}")
    assert len(auth._phantoms) <= 20  # memory stays bounded
    with pytest.raises(AccountLocked):  # a real account would still answer 423: so does this
        auth.login("acme", "ghost", "Wrong-password-123", source="10.0.0.1")


def test_failed_logins_keep_the_resolve_cache(platform: Platform, acme: Tenant) -> None:
    auth = platform.auth
    u = auth.create_user(acme.info.id, "eng", PASSWORD, [Role.ENGINEER])
    auth.create_user(acme.info.id, "olga", PASSWORD, [Role.OPERATOR])
    _, secret = auth.issue_token(u.id, "ci")
    assert auth.resolve(secret, "-") is not None  # cached now
    for name in ("eng", "olga", "nobody"):  # below the lock limit
        with pytest.raises(Unauthorized):
            auth.login("acme", name, "Wrong-password-123")
    auth.login("acme", "olga", PASSWORD)  # a new session alters no other credential
    auth.issue_token(u.id, "another")
    seen = count_queries(platform)
    assert auth.resolve(secret, "-") is not None
    assert seen == []  # still served from memory
    # A change that ends a credential does drop it.
    auth.update_user(acme.info.id, "eng", disabled=True)
    assert auth.resolve(secret, "-") is None


def test_credential_of_a_vanished_tenant_is_unknown_not_an_error(
    platform: Platform, client: TestClient, acme: Tenant
) -> None:
    u = platform.auth.create_user(acme.info.id, "olga", PASSWORD, [Role.OPERATOR])
    _, token = platform.auth.issue_token(u.id, "ci")
    _, session, _ = platform.auth.login("acme", "olga", PASSWORD)
    # No route deletes a tenant yet; remove the row behind the service's back.
    raw = platform.registry.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.execute("DELETE FROM tenants WHERE id = ?", (acme.info.id,))
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
    finally:
        raw.close()
    platform.auth._changed()
    for secret in (token, session):
        assert platform.auth.resolve(secret, "-") is None
        r = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 401, r.text


def test_a_promotion_does_not_widen_an_unscoped_token(platform: Platform, acme: Tenant) -> None:
    auth = platform.auth
    u = auth.create_user(acme.info.id, "bob", PASSWORD, [Role.ENGINEER])
    info, secret = auth.issue_token(u.id, "ci")  # scopes None: what bob holds now
    assert info.scopes == permissions_of([Role.ENGINEER])
    auth.set_roles(acme.info.id, "bob", [Role.TENANT_ADMIN])
    p = auth.resolve(secret, "-")
    assert p is not None
    assert not p.holds(Permission.USERS_MANAGE, acme.info.id)  # the new role's, not the token's
    assert p.holds(Permission.REGISTRY_WRITE, acme.info.id)
    auth.set_roles(acme.info.id, "bob", [Role.VIEWER])  # a demotion still narrows it
    p = auth.resolve(secret, "-")
    assert p is not None
    assert p.permissions(acme.info.id) == {Permission.DATA_READ, Permission.REGISTRY_READ}


def test_a_token_cannot_mint_tokens(platform: Platform, acme: Tenant) -> None:
    auth = platform.auth
    u = auth.create_user(acme.info.id, "eng", PASSWORD, [Role.ENGINEER])
    _, secret = auth.issue_token(u.id, "ci")
    p = auth.resolve(secret, "-")
    assert p is not None
    with pytest.raises(Forbidden, match="cannot create API tokens"):
        auth.issue_token(u.id, "child", None, 365 * 86400.0, actor=p)
    assert [t.name for t in auth.list_tokens(u.id)] == ["ci"]
