"""The audit API and the request audit middleware, through the real app."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from shopfloor.api.platform import Platform
from shopfloor.core.timeutil import DAY_NS, now_ns
from shopfloor.security.audit import AuditFilter, read_export, read_key, verify_export
from shopfloor.security.roles import Role
from tests.security.conftest import Tenant, UserHeaders

SECURITY = "token:tests@security_admin-1"  # user tokens act as token:<name>@<user>


def everything(platform: Platform) -> list[Any]:
    return platform.audit.records(AuditFilter(all_tenants=True), None)


def last_http(platform: Platform, action: str) -> Any:
    hits = [e for e in everything(platform) if e.action == action]
    assert hits, f"no {action} record"
    return hits[-1]


# -- the middleware ----------------------------------------------------------------------------


def test_write_calls_are_recorded_with_caller_and_outcome(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders
) -> None:
    engineer = user_headers(Role.ENGINEER, acme.info.id)
    r = client.post(
        "/api/v1/assets", json={"level": "enterprise", "name": "plant-1"}, headers=engineer
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "plant-1"  # the middleware passes the answer through untouched
    rec = last_http(platform, "POST /api/v1/assets")
    assert (rec.actor, rec.role, rec.tenant_id, rec.outcome) == (
        "token:tests@engineer-1",
        "engineer",
        acme.info.id,
        "ok",
    )
    assert rec.object == "-"
    assert rec.source == "testclient"
    assert rec.details["status"] == 201
    assert isinstance(rec.details["user_id"], int)

    asset_id = r.json()["id"]
    assert client.delete(f"/api/v1/assets/{asset_id}", headers=engineer).status_code == 204
    rec = last_http(platform, "DELETE /api/v1/assets/{asset_id}")
    assert (rec.object, rec.outcome) == (f"asset_id={asset_id}", "ok")


def test_denied_and_failed_calls_are_recorded(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders
) -> None:
    viewer = user_headers(Role.VIEWER, acme.info.id)
    r = client.post("/api/v1/assets", json={"level": "enterprise", "name": "x"}, headers=viewer)
    assert r.status_code == 403
    rec = last_http(platform, "POST /api/v1/assets")
    assert (rec.actor, rec.role, rec.tenant_id, rec.outcome) == (
        "token:tests@viewer-1",
        "viewer",
        acme.info.id,
        "denied",
    )
    assert rec.details["status"] == 403

    assert (
        client.post("/api/v1/assets", json={"level": "enterprise", "name": "x"}).status_code == 401
    )
    rec = last_http(platform, "POST /api/v1/assets")
    assert (rec.actor, rec.role, rec.tenant_id, rec.outcome) == ("anonymous", "-", None, "denied")

    r = client.post("/api/v1/assets", json={"level": "enterprise"}, headers=acme.key_headers)
    assert r.status_code == 422
    rec = last_http(platform, "POST /api/v1/assets")
    assert (rec.actor, rec.outcome, rec.details["status"]) == ("tenant-key", "failed", 422)


def test_reads_and_ingest_are_not_recorded(
    client: TestClient, platform: Platform, acme: Tenant
) -> None:
    before = platform.audit.count()
    assert client.get("/api/v1/assets", headers=acme.key_headers).status_code == 200
    doc = {"device": "press-01", "signal": ["temp"], "ts": [now_ns() // 10**6], "value": [1.5]}
    r = client.post("/api/v1/ingest", content=orjson.dumps(doc), headers=acme.key_headers)
    assert r.status_code == 200, r.text
    assert platform.audit.count() == before
    # ...while a write right after is: the counter above would have seen it.
    client.post(
        "/api/v1/assets", json={"level": "enterprise", "name": "s"}, headers=acme.key_headers
    )
    assert platform.audit.count() == before + 1


# -- separation of duties ----------------------------------------------------------------------


def test_auditors_change_nothing(
    client: TestClient, acme: Tenant, user_headers: UserHeaders, platform: Platform
) -> None:
    for auditor in (user_headers(Role.AUDITOR, acme.info.id), user_headers(Role.AUDITOR, None)):
        calls: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", "/api/v1/assets", {"level": "enterprise", "name": "a"}),
            ("PUT", "/api/v1/audit/settings", {"retention_days": 365}),
            ("POST", "/api/v1/platform/audit/purge", None),
            ("PATCH", "/api/v1/tenant", {"retention_days": 5}),
        ]
        for method, path, body in calls:
            r = client.request(method, path, json=body, headers=auditor)
            assert r.status_code == 403, (method, path, r.text)
    assert platform.audit.retention_days() == 180


def test_security_admin_changes_retention_and_it_takes_effect(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    user_headers: UserHeaders,
    admin_headers: dict[str, str],
) -> None:
    # Records 250 and 100 days old, first in the chain (purges remove a prefix): the default
    # 180 days would keep only the younger one.
    real = platform.audit.clock
    for days in (250, 100):
        platform.audit.clock = lambda d=days: real() - d * DAY_NS
        platform.audit.record("test.aged", f"days={days}", "ok")
    platform.audit.clock = real
    security = user_headers(Role.SECURITY_ADMIN, None)

    r = client.put("/api/v1/audit/settings", json={"retention_days": 300}, headers=security)
    assert r.status_code == 200, r.text
    assert r.json()["retention_days"] == 300
    assert r.json()["updated_by"] == SECURITY
    changed = last_http(platform, "audit.settings.changed")
    assert changed.details["old_retention_days"] == 180
    assert changed.details["new_retention_days"] == 300
    assert changed.actor == SECURITY
    got = client.get("/api/v1/audit/settings", headers=security).json()
    assert got["retention_days"] == 300

    # Separation of duties: the security admin sets retention, the platform admin purges.
    assert client.post("/api/v1/platform/audit/purge", headers=security).status_code == 403
    r = client.post("/api/v1/platform/audit/purge", headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["removed"] == 0

    r = client.put("/api/v1/audit/settings", json={"retention_days": 200}, headers=security)
    assert r.status_code == 200
    r = client.post("/api/v1/platform/audit/purge", headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["removed"] == 1
    objects = {e.object for e in everything(platform)}
    assert "days=250" not in objects
    assert "days=100" in objects
    assert platform.audit.verify().ok


def test_retention_bounds_and_who_may_set_it(
    client: TestClient, acme: Tenant, user_headers: UserHeaders, admin_headers: dict[str, str]
) -> None:
    security = user_headers(Role.SECURITY_ADMIN, None)
    for bad in (179, "365", 365.0, True, None):
        r = client.put("/api/v1/audit/settings", json={"retention_days": bad}, headers=security)
        assert r.status_code == 422, bad
        assert r.json()["error"]["field"] == "retention_days"
    r = client.put("/api/v1/audit/settings", json={"retention_days": 365, "x": 1}, headers=security)
    assert r.status_code == 422
    others = [
        acme.key_headers,  # tenant admin
        user_headers(Role.TENANT_ADMIN, acme.info.id),
        user_headers(Role.SECURITY_ADMIN, acme.info.id),  # a tenant's, not the platform's
        user_headers(Role.AUDITOR, None),
        admin_headers,  # the platform admin purges but may not loosen the audit
    ]
    for headers in others:
        r = client.put("/api/v1/audit/settings", json={"retention_days": 365}, headers=headers)
        assert r.status_code == 403, r.text


# -- reading and exporting ---------------------------------------------------------------------


def two_tenants_busy(
    client: TestClient, make_tenant: Callable[[str], Tenant]
) -> tuple[Tenant, Tenant]:
    a, b = make_tenant("alpha"), make_tenant("beta")
    for t in (a, b):
        for i in range(3):
            r = client.post(
                "/api/v1/assets",
                json={"level": "enterprise", "name": f"s{i}"},
                headers=t.key_headers,
            )
            assert r.status_code == 201
    return a, b


def test_tenant_auditor_reads_only_own_tenant(
    client: TestClient,
    make_tenant: Callable[[str], Tenant],
    user_headers: UserHeaders,
    platform: Platform,
) -> None:
    a, b = two_tenants_busy(client, make_tenant)
    auditor = user_headers(Role.AUDITOR, a.info.id)
    r = client.get("/api/v1/audit/records", headers=auditor)
    assert r.status_code == 200, r.text
    recs = r.json()["records"]
    assert {x["tenant_id"] for x in recs} == {a.info.id}
    assert len([x for x in recs if x["action"] == "POST /api/v1/assets"]) == 3
    assert len(recs) == len([e for e in everything(platform) if e.tenant_id == a.info.id])
    # Paging walks the same records.
    seqs, after = [], 0
    while True:
        page = client.get(
            "/api/v1/audit/records", params={"limit": 2, "after_seq": after}, headers=auditor
        ).json()
        assert len(page["records"]) <= 2
        seqs += [x["seq"] for x in page["records"]]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert seqs == [x["seq"] for x in recs]
    assets = {"action": "POST /api/v1/assets"}
    # Filters, and the platform-wide view stays closed to a tenant's auditor.
    r = client.get("/api/v1/audit/records", params={**assets, "outcome": "denied"}, headers=auditor)
    assert r.json()["records"] == []
    r = client.get(
        "/api/v1/audit/records", params={**assets, "since": "-1h", "until": "now"}, headers=auditor
    )
    assert len(r.json()["records"]) == 3
    r = client.get("/api/v1/audit/records", params={**assets, "until": "-1h"}, headers=auditor)
    assert r.json()["records"] == []
    r = client.get("/api/v1/audit/records", params={"since": "yesterday"}, headers=auditor)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "since"
    assert client.get("/api/v1/platform/audit/records", headers=auditor).status_code == 403
    assert client.get("/api/v1/audit/records", headers=b.key_headers).status_code == 403


def test_platform_auditor_sees_all(
    client: TestClient,
    make_tenant: Callable[[str], Tenant],
    user_headers: UserHeaders,
) -> None:
    a, b = two_tenants_busy(client, make_tenant)
    auditor = user_headers(Role.AUDITOR, None)
    r = client.get("/api/v1/platform/audit/records", params={"limit": 1000}, headers=auditor)
    assert r.status_code == 200, r.text
    tenants = {x["tenant_id"] for x in r.json()["records"]}
    assert {a.info.id, b.info.id} <= tenants
    r = client.get(
        "/api/v1/platform/audit/records", params={"tenant_id": b.info.id}, headers=auditor
    )
    assert {x["tenant_id"] for x in r.json()["records"]} == {b.info.id}
    # A platform-wide binding is not a tenant's: the tenant route needs a tenant.
    assert client.get("/api/v1/audit/records", headers=auditor).status_code == 403


def test_export_jsonl_round_trip_verifies_offline_and_is_audited(
    client: TestClient,
    make_tenant: Callable[[str], Tenant],
    user_headers: UserHeaders,
    platform: Platform,
    tmp_path: Path,
) -> None:
    two_tenants_busy(client, make_tenant)
    auditor = user_headers(Role.AUDITOR, None)
    r = client.get("/api/v1/platform/audit/export", params={"format": "jsonl"}, headers=auditor)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) >= 6
    assert all({"seq", "prev_hash", "hash", "details"} <= set(x) for x in lines)
    key = read_key(platform.audit.key_path)
    assert key is not None
    result = verify_export(lines, key)
    assert result.ok, result.message
    # Only the key holder can check it: under another key the very first seal is wrong.
    other = verify_export(lines, bytes(32))
    assert (other.ok, other.bad_seq, other.kind) == (False, lines[0]["seq"], "hash-mismatch")
    assert result.last_seq == lines[-1]["seq"]
    # The export recorded itself before streaming, so it is in its own output.
    assert lines[-1]["action"] == "audit.export"
    assert lines[-1]["actor"] == "token:tests@auditor-1"

    lines[2]["outcome"] = "denied"
    tampered = verify_export(lines, key)
    assert (tampered.ok, tampered.bad_seq) == (False, lines[2]["seq"])

    r = client.get("/api/v1/platform/audit/export", params={"format": "csv"}, headers=auditor)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    path = tmp_path / "audit.csv"
    path.write_text(r.text)
    assert verify_export(read_export(path), key).ok
    assert sum(1 for e in everything(platform) if e.action == "audit.export") == 2


def test_tenant_export_holds_only_the_tenant(
    client: TestClient,
    make_tenant: Callable[[str], Tenant],
    user_headers: UserHeaders,
    platform: Platform,
) -> None:
    a, _ = two_tenants_busy(client, make_tenant)
    auditor = user_headers(Role.AUDITOR, a.info.id)
    r = client.get("/api/v1/audit/export", headers=auditor)
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert {x["tenant_id"] for x in lines} == {a.info.id}
    assert len([x for x in lines if x["action"] == "POST /api/v1/assets"]) == 3
    assert lines[-1]["action"] == "audit.export"  # recorded before it streamed
    rec = last_http(platform, "audit.export")
    assert (rec.tenant_id, rec.details["scope"]) == (a.info.id, "tenant")
    r = client.get("/api/v1/audit/export", params={"format": "xml"}, headers=auditor)
    assert r.status_code == 422
