"""AuthService over a real registry: password policy, role rules, TOTP steps and the cache."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from shopfloor.api.deps import resolve_secret
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput, Conflict, Forbidden, NotFound, Unauthorized
from shopfloor.security import passwords, totp
from shopfloor.security.audit import AuditLog
from shopfloor.security.auth import CACHE_TTL_S, AuthService
from shopfloor.security.principal import PrincipalKind
from shopfloor.security.roles import Permission, Role
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
