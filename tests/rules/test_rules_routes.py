"""The rules and alarms HTTP API over the real app (TestClient over create_app(platform))."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.timeutil import now_ns
from shopfloor.registry.service import SignalSpec
from shopfloor.rules.model import Event
from shopfloor.security.audit import AuditFilter
from shopfloor.security.roles import Role

PASSWORD = "correct-horse-battery-9"  # meets the default password policy
V1 = "/api/v1"
HOT = {
    "name": "hot",
    "device_type": "press",
    "priority": 2,
    "message": "Press too hot",
    "definition": {"kind": "threshold", "signal": "temp", "limit": 80},
}


@dataclass
class World:
    platform: Platform
    client: TestClient
    tenant: int
    line: int  # the asset press-01 sits at; press-02 is elsewhere
    headers: Callable[..., dict[str, str]]


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    plat = Platform(Settings(data_dir=tmp_path / "data", mqtt_mode="off"))
    reg = plat.registry
    t, _ = reg.create_tenant("acme")
    ent = reg.create_asset(t.id, "enterprise", "works")
    site = reg.create_asset(t.id, "site", "plant", ent.id)
    area = reg.create_asset(t.id, "area", "press-shop", site.id)
    other = reg.create_asset(t.id, "area", "paint-shop", site.id)
    reg.create_device_type(t.id, "press", [SignalSpec("temp"), SignalSpec("run", "bool")])
    reg.create_device(t.id, "press-01", "press", area.id)
    reg.create_device(t.id, "press-02", "press", other.id)
    count = 0

    def headers(role: Role, asset_id: int | None = None) -> dict[str, str]:
        nonlocal count
        count += 1
        user = plat.auth.create_user(t.id, f"{role.value}-{count}", PASSWORD, [(role, asset_id)])
        _, token = plat.auth.issue_token(user.id, "tests")
        return {"Authorization": f"Bearer {token}"}

    with TestClient(create_app(platform=plat)) as client:
        yield World(plat, client, t.id, area.id, headers)
    plat.close()


def _activate(w: World, *devices: str, rule: str = "hot") -> None:
    ts = now_ns() - 1_000_000_000
    w.platform.alarms.apply(w.tenant, [Event(rule, d, "activated", ts, 91.5) for d in devices])


def test_rule_crud(w: World) -> None:
    eng, viewer = w.headers(Role.ENGINEER), w.headers(Role.VIEWER)
    r = w.client.post(f"{V1}/rules", json=HOT, headers=eng)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["kind"], body["device_type"], body["priority"]) == (
        "hot",
        "threshold",
        "press",
        2,
    )
    assert body["definition"]["limit"] == 80
    assert body["enabled"] is True
    assert w.client.post(f"{V1}/rules", json=HOT, headers=eng).status_code == 409
    r = w.client.get(f"{V1}/rules", headers=viewer)
    assert r.status_code == 200
    assert [x["name"] for x in r.json()["rules"]] == ["hot"]
    assert w.client.get(f"{V1}/rules/hot", headers=viewer).json() == body
    # Replace: another kind on one device.
    new = {
        "device": "press-01",
        "definition": {"kind": "expression", "expression": "run and temp > 70"},
    }
    r = w.client.put(f"{V1}/rules/hot", json=new, headers=eng)
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["device"], r.json()["device_type"]) == (
        "expression",
        "press-01",
        None,
    )
    # A viewer reads but cannot change.
    assert w.client.put(f"{V1}/rules/hot", json=new, headers=viewer).status_code == 403
    assert w.client.delete(f"{V1}/rules/hot", headers=viewer).status_code == 403
    assert w.client.delete(f"{V1}/rules/hot", headers=eng).status_code == 204
    r = w.client.get(f"{V1}/rules/hot", headers=viewer)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "rule 'hot' not found"
    # Changes are audited by the middleware.
    records = w.platform.audit.records(AuditFilter(tenant_id=w.tenant), limit=None)
    assert any("rule" in f"{r.action} {r.object}" for r in records), records


@pytest.mark.parametrize(
    ("definition", "field", "message"),
    [
        (
            {"kind": "expression", "expression": "temp > (1 +"},
            "definition.expression",
            "syntax error at",
        ),
        (
            {"kind": "expression", "expression": "temp > 1 and nope"},
            "definition.expression",
            "column 14: unknown signal 'nope'",
        ),
        (
            {"kind": "expression", "expression": "temp * 2"},
            "definition.expression",
            "gives a number",
        ),
        (
            {"kind": "threshold", "signal": "pressure", "limit": 1},
            "definition.signal",
            "no signal 'pressure'",
        ),
    ],
)
def test_a_bad_rule_is_422_with_its_position_and_nothing_stored(
    w: World, definition: dict[str, Any], field: str, message: str
) -> None:
    eng = w.headers(Role.ENGINEER)
    r = w.client.post(f"{V1}/rules", json={**HOT, "definition": definition}, headers=eng)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    assert message in err["message"], err
    assert w.client.get(f"{V1}/rules", headers=eng).json()["rules"] == []


def test_body_validation(w: World) -> None:
    eng = w.headers(Role.ENGINEER)
    both = {**HOT, "device": "press-01"}
    assert w.client.post(f"{V1}/rules", json=both, headers=eng).status_code == 422
    strict = {**HOT, "priority": "2"}
    assert w.client.post(f"{V1}/rules", json=strict, headers=eng).status_code == 422
    r = w.client.post(f"{V1}/rules", json={**HOT, "device_type": "ghost"}, headers=eng)
    assert r.status_code == 404
    assert "device type 'ghost'" in r.json()["error"]["message"]


def test_enable_disable(w: World) -> None:
    eng = w.headers(Role.ENGINEER)
    w.client.post(f"{V1}/rules", json=HOT, headers=eng)
    r = w.client.post(f"{V1}/rules/hot/disable", json={"reason": "sensor swap"}, headers=eng)
    assert r.status_code == 200
    assert (r.json()["enabled"], r.json()["disabled_reason"]) == (
        False,
        "sensor swap",
    )
    r = w.client.post(f"{V1}/rules/hot/disable", headers=eng)  # no body: a default reason
    assert r.json()["disabled_reason"] == "disabled by a user"
    r = w.client.post(f"{V1}/rules/hot/enable", headers=eng)
    assert (r.json()["enabled"], r.json()["disabled_reason"]) == (True, None)
    assert w.client.post(f"{V1}/rules/ghost/enable", headers=eng).status_code == 404
    assert (
        w.client.post(f"{V1}/rules/hot/enable", headers=w.headers(Role.OPERATOR)).status_code == 403
    )


def test_alarms_ack_shelve_unshelve_history_flood(w: World) -> None:
    eng, op, viewer = w.headers(Role.ENGINEER), w.headers(Role.OPERATOR), w.headers(Role.VIEWER)
    assert w.client.post(f"{V1}/rules", json=HOT, headers=eng).status_code == 201
    _activate(w, "press-01", "press-02")
    r = w.client.get(f"{V1}/alarms", headers=viewer)
    assert r.status_code == 200, r.text
    alarms = r.json()["alarms"]
    assert [(a["device"], a["state"], a["area"], a["value"]) for a in alarms] == [
        ("press-01", "unack_active", "press-shop", 91.5),
        ("press-02", "unack_active", "paint-shop", 91.5),
    ]
    only = w.client.get(f"{V1}/alarms", params={"area": "paint-shop"}, headers=viewer).json()
    assert [a["device"] for a in only["alarms"]] == ["press-02"]
    assert (
        w.client.get(f"{V1}/alarms", params={"priority": 1}, headers=viewer).json()["alarms"] == []
    )
    assert (
        w.client.get(f"{V1}/alarms", params={"device": "ghost"}, headers=viewer).status_code == 404
    )

    ack = f"{V1}/alarms/hot/press-01/ack"
    assert w.client.post(ack, json={"comment": "on it"}, headers=viewer).status_code == 403
    assert w.client.post(ack, json={}, headers=op).status_code == 422
    r = w.client.post(ack, json={"comment": "  "}, headers=op)
    assert r.status_code == 422, r.text
    r = w.client.post(ack, json={"comment": "on it"}, headers=op)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "ack_active"
    r = w.client.post(ack, json={"comment": "again"}, headers=op)
    assert r.status_code == 409
    assert "already acknowledged" in r.json()["error"]["message"]
    r = w.client.post(f"{V1}/alarms/hot/press-03/ack", json={"comment": "x"}, headers=op)
    assert r.status_code == 404

    shelve = f"{V1}/alarms/hot/press-02/shelve"
    assert w.client.post(shelve, json={"duration": "1h"}, headers=op).status_code == 422
    r = w.client.post(shelve, json={"duration": "1h", "comment": "maintenance"}, headers=op)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "shelved"
    assert r.json()["shelved_until"] > now_ns()
    r = w.client.post(f"{V1}/alarms/hot/press-02/unshelve", headers=op)
    assert r.status_code == 200
    assert r.json()["state"] == "unack_active"
    r = w.client.post(f"{V1}/alarms/hot/press-02/unshelve", json={"comment": "x"}, headers=op)
    assert r.status_code == 409

    r = w.client.get(f"{V1}/alarms/history", headers=viewer)
    assert r.status_code == 200, r.text
    page = r.json()
    causes = [(e["device"], e["cause"], e["user"]) for e in page["events"]]
    assert ("press-01", "acknowledge", "token:tests@operator-2") in causes  # as audited
    assert [c for _, c, _ in causes].count("shelve") == 1
    assert page["next_offset"] is None
    r = w.client.get(f"{V1}/alarms/history", params={"limit": 2}, headers=viewer)
    assert len(r.json()["events"]) == 2
    assert r.json()["next_offset"] == 2
    r2 = w.client.get(f"{V1}/alarms/history", params={"limit": 2, "offset": 2}, headers=viewer)
    assert {e["id"] for e in r2.json()["events"]}.isdisjoint(e["id"] for e in r.json()["events"])
    old = w.client.get(
        f"{V1}/alarms/history", params={"end": "-1d", "start": "-2d"}, headers=viewer
    )
    assert old.json()["events"] == []

    r = w.client.get(f"{V1}/alarms/flood", params={"start": "-1h", "bucket": "10m"}, headers=viewer)
    assert r.status_code == 200, r.text
    flood = r.json()
    areas = {a["area"]: a["total"] for a in flood["areas"]}
    assert areas == {"press-shop": 1, "paint-shop": 2}  # the unshelve re-annunciated press-02
    assert flood["bad_actors"][0]["device"] == "press-02"
    r = w.client.get(f"{V1}/alarms/flood", params={"start": "-1d", "bucket": "1s"}, headers=viewer)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "bucket"


def test_subtree_scope_sees_and_acks_only_its_devices(w: World) -> None:
    eng = w.headers(Role.ENGINEER)
    w.client.post(f"{V1}/rules", json=HOT, headers=eng)
    one = {**HOT, "name": "one", "device_type": None, "device": "press-02"}
    assert w.client.post(f"{V1}/rules", json=one, headers=eng).status_code == 201
    _activate(w, "press-01", "press-02")
    op = w.headers(Role.OPERATOR, w.line)
    r = w.client.get(f"{V1}/alarms", headers=op)
    assert [a["device"] for a in r.json()["alarms"]] == ["press-01"]
    hidden = w.client.post(f"{V1}/alarms/hot/press-02/ack", json={"comment": "x"}, headers=op)
    ghost = w.client.post(f"{V1}/alarms/hot/press-09/ack", json={"comment": "x"}, headers=op)
    assert hidden.status_code == ghost.status_code == 404
    ok = w.client.post(f"{V1}/alarms/hot/press-01/ack", json={"comment": "x"}, headers=op)
    assert ok.status_code == 200, ok.text
    devices = {
        e["device"] for e in w.client.get(f"{V1}/alarms/history", headers=op).json()["events"]
    }
    assert devices == {"press-01"}
    # Rules: the device rule outside the subtree is unknown, the type rule tenant-wide.
    assert w.client.get(f"{V1}/rules", headers=op).json()["rules"] == []
    assert w.client.get(f"{V1}/rules/one", headers=op).status_code == 404
    assert w.client.get(f"{V1}/rules/hot", headers=op).status_code == 403
