"""The egress policy: core never leaves, important and personal data need a live approval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopfloor.api.platform import Platform
from shopfloor.core.errors import Forbidden
from shopfloor.core.kinds import Role
from shopfloor.core.types import Classification
from shopfloor.registry import SignalSpec
from shopfloor.security.audit import AuditFilter
from shopfloor.security.egress import EgressApprovals, EgressPolicy, Verdict
from shopfloor.security.labels import Labels, LabelService
from shopfloor.security.principal import Binding, Principal, PrincipalKind, Scope
from tests.security.conftest import Tenant, UserHeaders

DEST = "https://erp.example/in"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(platform: Platform, acme: Tenant) -> dict[str, int]:
    """Signals of each kind: general, important, core, personal, resident (general in cn)."""
    reg, t = platform.registry, acme.info.id
    ent = reg.create_asset(t, "enterprise", "acme")
    site = reg.create_asset(t, "site", "plant", ent.id)
    reg.create_device(t, "dev", asset_id=site.id)
    out = {}
    for name in ("general", "important", "core", "personal", "resident", "important_cn"):
        out[name] = reg.create_signal(t, "dev", SignalSpec(name)).id
    labels = LabelService(reg)
    labels.set_signal(t, "dev/important", Labels(Classification.IMPORTANT))
    labels.set_signal(t, "dev/core", Labels(Classification.CORE))
    labels.set_signal(t, "dev/personal", Labels(personal_data=True))
    labels.set_signal(t, "dev/resident", Labels(residency="cn"))
    labels.set_signal(t, "dev/important_cn", Labels(Classification.IMPORTANT, residency="cn"))
    return out


def principal(tenant: Tenant, name: str, *roles: Role, user_id: int) -> Scope:
    p = Principal(
        PrincipalKind.USER,
        name,
        tenant.info,
        tuple(Binding(r, tenant.info.id) for r in roles),
        user_id=user_id,
    )
    return Scope(p, next(iter(p.permissions(tenant.info.id))), tenant.info)


@pytest.fixture
def policy(platform: Platform, clock: Clock) -> EgressPolicy:
    return EgressPolicy(platform.registry, platform.settings, platform.audit, clock)


@pytest.fixture
def approvals(platform: Platform, clock: Clock) -> EgressApprovals:
    return EgressApprovals(platform.registry, platform.settings, platform.audit, clock)


@pytest.fixture
def eng(acme: Tenant) -> Scope:
    return principal(acme, "eng", Role.ENGINEER, user_id=101)


@pytest.fixture
def sec(acme: Tenant) -> Scope:
    return principal(acme, "sec", Role.SECURITY_ADMIN, user_id=102)


def approve(
    approvals: EgressApprovals,
    eng: Scope,
    sec: Scope,
    signals: list[str],
    region: str | None = None,
    duration_s: int = 3600,
) -> int:
    info = approvals.request(
        eng,
        channel="webhook",
        destination=DEST,
        destination_region=region,
        signals=signals,
        reason="monthly report",
        duration_s=duration_s,
    )
    assert info.status == "pending"
    assert approvals.approve(sec, info.id).status == "approved"
    return info.id


def check(policy: EgressPolicy, eng: Scope, ids: list[int], region: str | None = None) -> Any:
    return policy.check(eng.principal, "webhook", DEST, region, ids)


def test_general_data_leaves(policy: EgressPolicy, eng: Scope, keys: dict[str, int]) -> None:
    d = check(policy, eng, [keys["general"]])
    assert d.allowed
    assert not d.needs_approval
    assert d.signals[0].verdict is Verdict.ALLOWED


def test_core_is_denied_even_with_an_approval(
    policy: EgressPolicy,
    approvals: EgressApprovals,
    eng: Scope,
    sec: Scope,
    keys: dict[str, int],
) -> None:
    approve(approvals, eng, sec, ["dev/core", "dev/general"])
    with pytest.raises(Forbidden, match=r"dev/core: classified core.*never leaves"):
        check(policy, eng, [keys["general"], keys["core"]])
    d = policy.decide(eng.tenant_id, "webhook", DEST, None, [keys["core"]])
    assert not d.allowed
    assert not d.needs_approval
    assert d.blocking[0].verdict is Verdict.DENIED


def test_important_needs_a_live_approval(
    policy: EgressPolicy,
    approvals: EgressApprovals,
    eng: Scope,
    sec: Scope,
    keys: dict[str, int],
    clock: Clock,
) -> None:
    ids = [keys["important"], keys["general"]]
    with pytest.raises(Forbidden, match=r"dev/important: classified important.*approval request"):
        check(policy, eng, ids)
    assert policy.decide(eng.tenant_id, "webhook", DEST, None, ids).needs_approval
    approval = approve(approvals, eng, sec, ["dev/important"], duration_s=600)
    d = check(policy, eng, ids)
    assert d.allowed
    assert d.approval_id == approval
    # The approval covers this channel and destination only.
    with pytest.raises(Forbidden):
        policy.check(eng.principal, "webhook", "https://elsewhere.example", None, ids)
    with pytest.raises(Forbidden):
        policy.check(eng.principal, "mqtt_bridge", DEST, None, ids)
    # ...and lasts its duration.
    clock.now += timedelta(seconds=601)
    assert approvals.get(eng.tenant_id, approval).status == "expired"
    with pytest.raises(Forbidden):
        check(policy, eng, ids)


def test_a_revoked_approval_no_longer_allows(
    policy: EgressPolicy,
    approvals: EgressApprovals,
    eng: Scope,
    sec: Scope,
    keys: dict[str, int],
) -> None:
    approval = approve(approvals, eng, sec, ["dev/important"])
    assert check(policy, eng, [keys["important"]]).allowed
    assert approvals.revoke(sec, approval).status == "revoked"
    with pytest.raises(Forbidden):
        check(policy, eng, [keys["important"]])


def test_important_data_stays_in_its_region_even_with_an_approval(
    policy: EgressPolicy,
    approvals: EgressApprovals,
    eng: Scope,
    sec: Scope,
    keys: dict[str, int],
) -> None:
    approve(approvals, eng, sec, ["dev/important_cn"], region="eu")
    with pytest.raises(Forbidden, match=r"resident in 'cn'.*stays in its region"):
        check(policy, eng, [keys["important_cn"]], "eu")
    approve(approvals, eng, sec, ["dev/important_cn"], region="cn")
    assert check(policy, eng, [keys["important_cn"]], "cn").allowed


def test_personal_data_and_foreign_residency_need_an_approval(
    policy: EgressPolicy,
    approvals: EgressApprovals,
    eng: Scope,
    sec: Scope,
    keys: dict[str, int],
) -> None:
    with pytest.raises(Forbidden, match="personal data"):
        check(policy, eng, [keys["personal"]])
    # General data resident in cn: fine inside cn, needs an approval to go elsewhere.
    assert check(policy, eng, [keys["resident"]], "cn").allowed
    with pytest.raises(Forbidden, match="resident in 'cn'"):
        check(policy, eng, [keys["resident"]], "eu")
    approve(approvals, eng, sec, ["dev/personal", "dev/resident"], region="eu")
    d = check(policy, eng, [keys["personal"], keys["resident"]], "eu")
    assert d.allowed
    assert {v.verdict for v in d.signals} == {Verdict.APPROVED}


def test_an_asset_subtree_approval_covers_the_signals_below(
    policy: EgressPolicy,
    approvals: EgressApprovals,
    platform: Platform,
    eng: Scope,
    sec: Scope,
    keys: dict[str, int],
) -> None:
    site = platform.registry.get_device(eng.tenant_id, "dev").asset_id
    info = approvals.request(
        eng,
        channel="webhook",
        destination=DEST,
        destination_region=None,
        asset_id=site,
        reason="all of the plant",
        duration_s=3600,
    )
    approvals.approve(sec, info.id)
    assert check(policy, eng, [keys["important"], keys["personal"]]).allowed


def test_every_decision_is_audited_without_the_data(
    policy: EgressPolicy, platform: Platform, eng: Scope, keys: dict[str, int]
) -> None:
    check(policy, eng, [keys["general"]])
    with pytest.raises(Forbidden):
        check(policy, eng, [keys["general"], keys["core"]], "eu")
    recs = platform.audit.records(AuditFilter(tenant_id=eng.tenant_id, action="egress"))
    assert [r.outcome for r in recs] == ["ok", "denied"]
    allowed, denied = recs
    assert allowed.actor == "eng"
    assert allowed.object == f"webhook:{DEST}"
    assert allowed.details["signals"] == 1
    assert allowed.details["region"] == "default"
    assert denied.details["decision"] == "denied"
    assert denied.details["channel"] == "webhook"
    assert denied.details["region"] == "eu"
    assert denied.details["signals"] == 2
    assert list(denied.details["reasons"]) == ["dev/core"]
    # A local operator's decision is audited under their name.
    with pytest.raises(Forbidden):
        policy.check_local(
            eng.tenant_id, "cli:alice", "export", "file:/tmp/x", None, [keys["core"]]
        )
    last = platform.audit.records(AuditFilter(tenant_id=eng.tenant_id, action="egress"))[-1]
    assert (last.actor, last.role, last.outcome) == ("cli:alice", "local", "denied")


def test_the_requester_cannot_approve_their_own_request(
    approvals: EgressApprovals, acme: Tenant, keys: dict[str, int], platform: Platform
) -> None:
    # Roles keep exporters and approvers apart; should one person hold both, still no.
    both = principal(acme, "both", Role.ENGINEER, Role.SECURITY_ADMIN, user_id=7)
    info = approvals.request(
        both,
        channel="export",
        destination="download",
        destination_region=None,
        signals=["dev/important"],
        reason="me",
        duration_s=600,
    )
    with pytest.raises(Forbidden, match="own egress request"):
        approvals.approve(both, info.id)
    # The same user through another token is the same person.
    token = Scope(
        Principal(
            PrincipalKind.TOKEN,
            "token:ci@both",
            acme.info,
            both.principal.bindings,
            user_id=7,
            token_id=3,
        ),
        both.permission,
        acme.info,
    )
    with pytest.raises(Forbidden):
        approvals.approve(token, info.id)
    assert approvals.get(acme.info.id, info.id).status == "pending"
    recs = platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="egress.approve"))
    assert [r.outcome for r in recs] == ["denied", "denied"]


def test_approval_flow_over_http(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    user_headers: UserHeaders,
    keys: dict[str, int],
) -> None:
    eng = user_headers(Role.ENGINEER, acme.info.id)
    other = user_headers(Role.ENGINEER, acme.info.id)
    sec = user_headers(Role.SECURITY_ADMIN, acme.info.id)
    body = {
        "channel": "export",
        "destination": "download",
        "signals": ["dev/important"],
        "reason": "quarterly audit",
        "duration_s": 3600,
    }
    r = client.post("/api/v1/egress/requests", json=body, headers=eng)
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "pending"
    assert req["destination_region"] == "default"
    # A security admin cannot file (no data.export); an engineer cannot approve.
    assert client.post("/api/v1/egress/requests", json=body, headers=sec).status_code == 403
    assert (
        client.post(f"/api/v1/egress/requests/{req['id']}/approve", headers=other).status_code
        == 403
    )
    assert (
        client.post(f"/api/v1/egress/requests/{req['id']}/approve", headers=eng).status_code == 403
    )
    # Requesters see their own requests; the security admin sees all.
    assert [x["id"] for x in client.get("/api/v1/egress/requests", headers=eng).json()] == [
        req["id"]
    ]
    assert client.get("/api/v1/egress/requests", headers=other).json() == []
    assert len(client.get("/api/v1/egress/requests", headers=sec).json()) == 1
    r = client.post(f"/api/v1/egress/requests/{req['id']}/approve", headers=sec)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert r.json()["expires_at"]
    # Deciding twice conflicts; another engineer cannot revoke it; the requester can.
    assert (
        client.post(f"/api/v1/egress/requests/{req['id']}/reject", headers=sec).status_code == 409
    )
    assert client.delete(f"/api/v1/egress/requests/{req['id']}", headers=other).status_code == 403
    r = client.delete(f"/api/v1/egress/requests/{req['id']}", headers=eng)
    assert r.status_code == 200
    assert r.json()["status"] == "revoked"
    actions = [
        r.action
        for r in platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="egress.*"))
    ]
    assert actions[:1] == ["egress.request"]
    assert {"egress.approve", "egress.revoke"} <= set(actions)


def test_requests_are_validated_and_scoped_to_the_tenant(
    client: TestClient,
    make_tenant: Any,
    acme: Tenant,
    user_headers: UserHeaders,
    keys: dict[str, int],
) -> None:
    eng = user_headers(Role.ENGINEER, acme.info.id)
    base = {"destination": "download", "reason": "x", "duration_s": 3600}
    for body, field in (
        ({**base, "signals": []}, "signals"),
        ({**base, "signals": ["dev/general"], "duration_s": "3600"}, "duration_s"),
        ({**base, "signals": ["dev/general"], "duration_s": 10}, "duration_s"),
        ({**base, "signals": ["dev/general"], "destination_region": "Mars!"}, "destination_region"),
    ):
        r = client.post("/api/v1/egress/requests", json=body, headers=eng)
        assert r.status_code == 422, (body, r.text)
        assert field in (r.json()["error"]["field"] or ""), r.json()
    beta = make_tenant("beta")
    beta_eng = user_headers(Role.ENGINEER, beta.info.id)
    beta_sec = user_headers(Role.SECURITY_ADMIN, beta.info.id)
    r = client.post(
        "/api/v1/egress/requests", json={**base, "signals": ["dev/general"]}, headers=beta_eng
    )
    assert r.status_code == 404  # acme's signal does not exist for beta
    mine = client.post(
        "/api/v1/egress/requests", json={**base, "signals": ["dev/general"]}, headers=eng
    )
    assert mine.status_code == 201
    rid = mine.json()["id"]
    assert (
        client.post(f"/api/v1/egress/requests/{rid}/approve", headers=beta_sec).status_code == 404
    )
    assert (
        client.post("/api/v1/egress/requests/999999/approve", headers=beta_sec).status_code == 404
    )


# -- subtree-bound approvers and requesters ------------------------------------------------------


@pytest.fixture
def sites(platform: Platform, acme: Tenant) -> tuple[int, int]:
    """acme > site-1 (device in1) and site-2 (device out2), a general signal each."""
    reg, t = platform.registry, acme.info.id
    ent = reg.create_asset(t, "enterprise", "acme")
    site1 = reg.create_asset(t, "site", "site-1", ent.id)
    site2 = reg.create_asset(t, "site", "site-2", ent.id)
    reg.create_device(t, "in1", asset_id=site1.id)
    reg.create_device(t, "out2", asset_id=site2.id)
    for device in ("in1", "out2"):
        reg.create_signal(t, device, SignalSpec("temp"))
    return site1.id, site2.id


def test_a_subtree_security_admin_decides_only_inside_their_subtree(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    user_headers: UserHeaders,
    sites: tuple[int, int],
) -> None:
    site1, site2 = sites
    t = acme.info.id
    eng = user_headers(Role.ENGINEER, t)
    local_sec = user_headers(Role.SECURITY_ADMIN, t, site1)
    sec = user_headers(Role.SECURITY_ADMIN, t)
    base = {"destination": "download", "reason": "report", "duration_s": 3600}

    def file(**subject: Any) -> int:
        r = client.post("/api/v1/egress/requests", json={**base, **subject}, headers=eng)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    inside = file(signals=["in1/temp"])
    inside_asset = file(asset_id=site1)
    outside = file(signals=["out2/temp"])
    outside_asset = file(asset_id=site2)
    mixed = file(signals=["in1/temp", "out2/temp"])
    listed = client.get("/api/v1/egress/requests", headers=local_sec).json()
    assert sorted(x["id"] for x in listed) == [inside, inside_asset]
    everything = client.get("/api/v1/egress/requests", headers=sec).json()
    assert len(everything) == 5
    # Outside the subtree: exactly the answer for an id nobody uses.
    for rid in (outside, outside_asset, mixed):
        for method, path in (
            ("POST", f"/api/v1/egress/requests/{rid}/approve"),
            ("POST", f"/api/v1/egress/requests/{rid}/reject"),
            ("DELETE", f"/api/v1/egress/requests/{rid}"),
        ):
            r_hidden = client.request(method, path, headers=local_sec)
            r_ghost = client.request(method, path.replace(str(rid), "999999"), headers=local_sec)
            assert r_hidden.status_code == r_ghost.status_code == 404, (path, r_hidden.text)
            assert (
                r_hidden.json()["error"]["message"].replace(str(rid), "999999")
                == (r_ghost.json()["error"]["message"])
            )
    assert {x["status"] for x in client.get("/api/v1/egress/requests", headers=sec).json()} == {
        "pending"
    }
    # Inside: decided as usual.
    r = client.post(f"/api/v1/egress/requests/{inside}/approve", headers=local_sec)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/egress/requests/{inside_asset}/reject", headers=local_sec)
    assert r.status_code == 200, r.text
    assert client.post(f"/api/v1/egress/requests/{outside}/approve", headers=sec).status_code == 200


def test_a_hidden_signal_cannot_be_probed_through_a_request(
    client: TestClient, acme: Tenant, user_headers: UserHeaders, sites: tuple[int, int]
) -> None:
    scoped = user_headers(Role.ENGINEER, acme.info.id, sites[0])
    base = {"destination": "download", "reason": "report", "duration_s": 3600}

    def file(*keys: str) -> Any:
        return client.post(
            "/api/v1/egress/requests", json={**base, "signals": list(keys)}, headers=scoped
        )

    hidden = file("in1/temp", "out2/temp", "nowhere/temp")
    ghost = file("in1/temp", "ghost/temp", "nowhere/temp")
    assert hidden.status_code == ghost.status_code == 404, (hidden.text, ghost.text)
    assert ghost.json()["error"]["message"] == "unknown signals: ghost/temp, nowhere/temp"
    assert hidden.json()["error"]["message"] == "unknown signals: out2/temp, nowhere/temp"
    assert file("in1/temp").status_code == 201


def test_a_platform_admin_enters_the_tenant_once_per_request(
    client: TestClient, platform: Platform, acme: Tenant
) -> None:
    from tests.security.conftest import PASSWORD

    root = platform.auth.create_user(None, "root", PASSWORD, [Role.PLATFORM_ADMIN])
    _, token = platform.auth.issue_token(root.id, "ops")
    platform.auth.create_grant(acme.info.id, "root", 3600, "support ticket 7")
    headers = {"Authorization": f"Bearer {token}", "X-Shopfloor-Tenant": "acme"}
    # The grant gives reading only: neither egress.approve nor data.export.
    r = client.get("/api/v1/egress/requests", headers=headers)
    assert r.status_code == 403, r.text
    assert "egress.approve or data.export" in r.json()["error"]["message"]
    used = platform.audit.records(AuditFilter(all_tenants=True, action="access.grant.used"))
    assert [(u.outcome, u.tenant_id) for u in used] == [("ok", acme.info.id)]
    # Without a grant the refusal is the grant's, recorded once as well.
    r = client.get("/api/v1/egress/requests", headers={**headers, "X-Shopfloor-Tenant": "beta"})
    assert r.status_code == 403
    used = platform.audit.records(AuditFilter(all_tenants=True, action="access.grant.used"))
    assert [u.outcome for u in used] == ["ok", "denied"]
