"""Roles bound below an asset: the routes see, change and query only that subtree.

Tenant acme: enterprise > site-1 > line-1 and enterprise > site-2. Devices: ``press-in`` at
line-1, ``press-site`` at site-1, ``press-out`` at site-2 and ``press-loose`` with no place. An
engineer bound to site-1 works on press-in and press-site only; everything else answers as if
it did not exist (docs/tenant-isolation.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from shopfloor.api import scoping
from shopfloor.api.platform import Platform
from shopfloor.core.errors import NotFound
from shopfloor.core.timeutil import now_ns
from shopfloor.registry.service import SignalSpec
from shopfloor.security.principal import Principal, PrincipalKind, Scope
from shopfloor.security.roles import Permission, Role
from tests.security.conftest import Tenant, UserHeaders

V1 = "/api/v1"
GHOST_ID = 987_654


@dataclass
class Plant:
    tenant: Tenant
    enterprise: int
    site1: int
    line1: int
    site2: int
    scoped: dict[str, str]  # an engineer bound to site-1
    whole: dict[str, str]  # an engineer of the whole tenant


@pytest.fixture
def plant(platform: Platform, client: TestClient, acme: Tenant, user_headers: UserHeaders) -> Plant:
    reg, tid = platform.registry, acme.info.id
    ent = reg.create_asset(tid, "enterprise", "acme-works")
    site1 = reg.create_asset(tid, "site", "site-1", ent.id)
    line1 = reg.create_asset(tid, "area", "area-1", site1.id)
    site2 = reg.create_asset(tid, "site", "site-2", ent.id)
    reg.create_device_type(tid, "press", [SignalSpec("temp")])
    for name, asset in [
        ("press-in", line1.id),
        ("press-site", site1.id),
        ("press-out", site2.id),
        ("press-loose", None),
    ]:
        reg.create_device(tid, name, "press", asset)
        platform.credentials.issue_token(tid, name)
    platform.credentials.create_provisioning_key(tid, "key-in", asset_id=line1.id)
    platform.credentials.create_provisioning_key(tid, "key-out", asset_id=site2.id)
    platform.credentials.create_provisioning_key(tid, "key-loose")
    now_ms = now_ns() // 1_000_000
    for device in ("press-in", "press-out"):
        r = client.post(
            f"{V1}/ingest",
            json={
                "device": device,
                "ts_unit": "ms",
                "points": [{"signal": "temp", "ts": now_ms - 1000, "value": 1.5}],
            },
            headers=acme.key_headers,
        )
        assert r.status_code == 200, r.text
    return Plant(
        acme,
        ent.id,
        site1.id,
        line1.id,
        site2.id,
        user_headers(Role.ENGINEER, tid, site1.id),
        user_headers(Role.ENGINEER, tid),
    )


def _same_as_unknown(r_hidden: Any, r_ghost: Any, hidden: str, ghost: str) -> None:
    """The answer for a hidden object is the answer for a nonexistent one, name swapped."""
    assert r_hidden.status_code == r_ghost.status_code == 404, (r_hidden.text, r_ghost.text)
    e_hidden, e_ghost = r_hidden.json()["error"], r_ghost.json()["error"]
    e_hidden["message"] = e_hidden["message"].replace(hidden, ghost)
    assert e_hidden == e_ghost


def _names(r: Any, key: str = "name") -> list[str]:
    assert r.status_code == 200, r.text
    return sorted(x[key] for x in r.json())


# -- lists --------------------------------------------------------------------------------------


def test_lists_show_the_subtree_only(client: TestClient, plant: Plant) -> None:

    def get(path: str) -> Any:
        return client.get(f"{V1}{path}", headers=plant.scoped)

    assert _names(get("/assets")) == ["area-1", "site-1"]
    tree = get("/tree").json()
    assert [(n["name"], n["devices"]) for n in tree] == [("site-1", ["press-site"])]
    assert [(c["name"], c["devices"]) for c in tree[0]["children"]] == [("area-1", ["press-in"])]
    assert _names(get("/devices")) == ["press-in", "press-site"]
    assert _names(get("/signals"), "key") == ["press-in/temp", "press-site/temp"]
    assert _names(get("/provisioning-keys")) == ["key-in"]
    # Device types are tenant-wide templates: every subtree sees them.
    assert _names(get("/device-types")) == ["press"]


def test_a_whole_tenant_binding_sees_everything(client: TestClient, plant: Plant) -> None:

    def get(path: str) -> Any:
        return client.get(f"{V1}{path}", headers=plant.whole)

    assert _names(get("/assets")) == ["acme-works", "area-1", "site-1", "site-2"]
    assert _names(get("/devices")) == ["press-in", "press-loose", "press-out", "press-site"]
    assert len(get("/signals").json()) == 4
    assert _names(get("/provisioning-keys")) == ["key-in", "key-loose", "key-out"]
    r = get("/points?signal=press-out/temp&start=-1h")
    assert r.status_code == 200, r.text
    assert r.json()["series"][0]["value"] == [1.5]


# -- single objects -----------------------------------------------------------------------------


DEVICE_CALLS: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("DELETE", "?force=true", None),
    ("GET", "/signals", None),
    ("POST", "/signals", {"name": "extra"}),
    ("GET", "/credentials", None),
    ("POST", "/credentials", {"kind": "token"}),
    ("DELETE", "/credentials", None),
    ("GET", "/gateway", None),
    ("PUT", "/gateway", {"owns": []}),
    ("PUT", "/sparkplug", {"group_id": "acme", "edge_node_id": "n1"}),
    ("GET", "/attributes/desired", None),
    ("PUT", "/attributes/desired", {"a": 1}),
    ("GET", "/attributes/reported", None),
    ("POST", "/commands", {"method": "reboot"}),
]


def test_a_device_outside_the_subtree_is_unknown(
    client: TestClient, platform: Platform, plant: Plant
) -> None:
    # One test over the matrix: the plant (users with argon2 hashes) is the slow part.
    for hidden in ("press-out", "press-loose"):
        for method, suffix, body in DEVICE_CALLS:
            path = f"{V1}/devices/{{}}{suffix}"
            r_hidden = client.request(method, path.format(hidden), json=body, headers=plant.scoped)
            r_ghost = client.request(method, path.format("ghost"), json=body, headers=plant.scoped)
            _same_as_unknown(r_hidden, r_ghost, hidden, "ghost")
        # Nothing happened to it.
        assert platform.registry.get_device(plant.tenant.info.id, hidden).name == hidden
        live = platform.credentials.list_credentials(plant.tenant.info.id, hidden)
        assert [c.revoked for c in live] == [False]


def test_devices_inside_the_subtree_work(client: TestClient, plant: Plant) -> None:
    h = plant.scoped
    assert client.get(f"{V1}/devices/press-site", headers=h).status_code == 200
    r = client.post(f"{V1}/devices/press-in/credentials", json={"kind": "token"}, headers=h)
    assert r.status_code == 201, r.text
    r = client.put(f"{V1}/devices/press-site/gateway", json={"owns": ["press-in"]}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["owns"] == ["press-in"]
    # With the MQTT endpoint off, a command to a device in scope gets past the scope: 503.
    r = client.post(f"{V1}/devices/press-in/commands", json={"method": "x"}, headers=h)
    assert r.status_code == 503, r.text


def test_a_gateway_cannot_take_a_hidden_device(client: TestClient, plant: Plant) -> None:
    h = plant.scoped
    path = f"{V1}/devices/press-site/gateway"
    r_hidden = client.put(path, json={"owns": ["press-in", "press-out"]}, headers=h)
    r_ghost = client.put(path, json={"owns": ["press-in", "ghost"]}, headers=h)
    _same_as_unknown(r_hidden, r_ghost, "press-out", "ghost")


def test_a_gateway_shows_only_the_devices_in_scope(
    client: TestClient, platform: Platform, plant: Plant
) -> None:
    platform.credentials.set_gateway(plant.tenant.info.id, "press-site", ["press-in", "press-out"])
    r = client.get(f"{V1}/devices/press-site/gateway", headers=plant.scoped)
    assert r.json() == {"device": "press-site", "owns": ["press-in"]}
    r = client.get(f"{V1}/devices/press-site/gateway", headers=plant.whole)
    assert r.json()["owns"] == ["press-in", "press-out"]


def test_assets_outside_the_subtree_are_unknown(client: TestClient, plant: Plant) -> None:
    h = plant.scoped
    for hidden in (plant.site2, plant.enterprise):
        for method in ("GET", "DELETE"):
            r_hidden = client.request(method, f"{V1}/assets/{hidden}", headers=h)
            r_ghost = client.request(method, f"{V1}/assets/{GHOST_ID}", headers=h)
            _same_as_unknown(r_hidden, r_ghost, str(hidden), str(GHOST_ID))
    assert client.get(f"{V1}/assets/{plant.line1}", headers=h).status_code == 200


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_signals_outside_the_subtree_are_unknown(
    client: TestClient, platform: Platform, plant: Plant, method: str
) -> None:
    h, body = plant.scoped, ({"unit": "K"} if method == "PATCH" else None)
    r_hidden = client.request(method, f"{V1}/signals/press-out/temp", json=body, headers=h)
    r_ghost = client.request(method, f"{V1}/signals/ghost/temp", json=body, headers=h)
    _same_as_unknown(r_hidden, r_ghost, "press-out", "ghost")
    sid = platform.registry.get_signal(plant.tenant.info.id, "press-out/temp").id
    r_hidden = client.request(method, f"{V1}/signals/{sid}", json=body, headers=h)
    r_ghost = client.request(method, f"{V1}/signals/{GHOST_ID}", json=body, headers=h)
    _same_as_unknown(r_hidden, r_ghost, str(sid), str(GHOST_ID))
    assert platform.registry.get_signal(plant.tenant.info.id, sid).unit == ""
    r = client.request(method, f"{V1}/signals/press-in/temp", json=body, headers=h)
    assert r.status_code == 200, r.text


# -- creating -----------------------------------------------------------------------------------


def test_creating_outside_the_subtree_is_refused(client: TestClient, plant: Plant) -> None:
    h = plant.scoped

    def post(path: str, body: dict[str, Any]) -> Any:
        return client.post(f"{V1}{path}", json=body, headers=h)

    # Placed outside: 404 for the asset, as for an unknown one.
    for path, body, key in [
        ("/devices", {"name": "new-dev"}, "asset_id"),
        ("/assets", {"level": "area", "name": "new-area"}, "parent_id"),
        ("/provisioning-keys", {"name": "new-key"}, "asset_id"),
    ]:
        r_hidden = post(path, {**body, key: plant.site2})
        r_ghost = post(path, {**body, key: GHOST_ID})
        _same_as_unknown(r_hidden, r_ghost, str(plant.site2), str(GHOST_ID))
        # Nowhere (unplaced, top level): only a tenant-wide binding.
        r = post(path, body if key != "parent_id" else {"level": "enterprise", "name": "e2"})
        assert r.status_code == 403, r.text
        assert "whole tenant" in r.json()["error"]["message"]
    # Tenant-wide things.
    assert post("/device-types", {"name": "t2"}).status_code == 403
    assert post("/sparkplug-groups", {"group_id": "g2"}).status_code == 403
    # Inside: fine.
    assert post("/devices", {"name": "new-dev", "asset_id": plant.line1}).status_code == 201
    assert (
        post("/assets", {"level": "area", "name": "a2", "parent_id": plant.site1}).status_code
        == 201
    )
    assert post("/provisioning-keys", {"name": "k2", "asset_id": plant.line1}).status_code == 201
    assert "new-dev" in _names(client.get(f"{V1}/devices", headers=h))


def test_a_hidden_provisioning_key_is_unknown(
    client: TestClient, platform: Platform, plant: Plant
) -> None:
    for hidden in ("key-out", "key-loose"):
        r_hidden = client.delete(f"{V1}/provisioning-keys/{hidden}", headers=plant.scoped)
        r_ghost = client.delete(f"{V1}/provisioning-keys/ghost-key", headers=plant.scoped)
        _same_as_unknown(r_hidden, r_ghost, hidden, "ghost-key")
    keys = platform.credentials.list_provisioning_keys(plant.tenant.info.id)
    assert [k.revoked_at for k in keys] == [None, None, None]
    assert client.delete(f"{V1}/provisioning-keys/key-in", headers=plant.scoped).status_code == 204


def test_tenant_settings_need_a_tenant_wide_binding(
    client: TestClient, plant: Plant, user_headers: UserHeaders
) -> None:
    admin = user_headers(Role.TENANT_ADMIN, plant.tenant.info.id, plant.site1)
    r = client.patch(f"{V1}/tenant", json={"retention_days": 30}, headers=admin)
    assert r.status_code == 403, r.text
    assert (
        client.get(f"{V1}/tenant", headers=plant.tenant.key_headers).json()["retention_days"]
        is None
    )


# -- data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/points", {}),
        ("/downsample", {"interval": "1m"}),
        ("/latest", {}),
    ],
)
def test_data_of_hidden_signals_is_unknown(
    client: TestClient, plant: Plant, path: str, query: dict[str, str]
) -> None:
    h = plant.scoped
    keys = ["press-in/temp", "press-out/temp", "nowhere/temp"]
    r_hidden = client.get(f"{V1}{path}", params={**query, "signal": keys}, headers=h)
    ghost_keys = ["press-in/temp", "ghost/temp", "nowhere/temp"]
    r_ghost = client.get(f"{V1}{path}", params={**query, "signal": ghost_keys}, headers=h)
    _same_as_unknown(r_hidden, r_ghost, "press-out", "ghost")
    assert r_ghost.json()["error"]["message"] == "unknown signals: ghost/temp, nowhere/temp"
    r = client.get(f"{V1}{path}", params={**query, "signal": "press-in/temp"}, headers=h)
    assert r.status_code == 200, r.text


def test_latest_of_a_hidden_device_is_unknown(client: TestClient, plant: Plant) -> None:
    h = plant.scoped
    r_hidden = client.get(f"{V1}/latest", params={"device": "press-out"}, headers=h)
    r_ghost = client.get(f"{V1}/latest", params={"device": "ghost"}, headers=h)
    _same_as_unknown(r_hidden, r_ghost, "press-out", "ghost")
    r = client.get(f"{V1}/latest", params={"device": "press-in"}, headers=h)
    assert [p["value"] for p in r.json()["points"]] == [1.5]


# -- the fast path ------------------------------------------------------------------------------


def test_a_whole_tenant_scope_costs_no_query(platform: Platform, acme: Tenant) -> None:
    principal = Principal(PrincipalKind.TENANT_KEY, "tenant-key", acme.info, ())
    whole = Scope(principal, Permission.REGISTRY_READ, acme.info)
    statements: list[str] = []
    engine = platform.registry.engine
    listen = lambda *a: statements.append(a[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listen)
    try:
        # Unknown names pass: the route's own registry call answers 404 for them.
        scoping.check_device(whole, platform.registry, "not-there")
        scoping.check_signal(whole, platform.registry, "not/there")
        scoping.check_signal_keys(whole, platform.registry, ["not/there"])
        scoping.check_devices(whole, platform.registry, ["not-there"])
        scoping.check_placement(whole, None, "an unplaced device")
        scoping.check_asset(whole, GHOST_ID)
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert statements == []
    # The same calls on a subtree scope do look, and refuse.
    sub = Scope(principal, Permission.REGISTRY_READ, acme.info, frozenset({1}), frozenset({1}))
    with pytest.raises(NotFound):
        scoping.check_asset(sub, GHOST_ID)
