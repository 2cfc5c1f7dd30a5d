"""The registry HTTP routes through FastAPI's TestClient."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

API = "/api/v1"
# The admin key the conftest gives the test platform.
ADMIN = {"Authorization": "Bearer admin-key-for-tests"}


def _tenant(client: TestClient, name: str = "acme", **extra: Any) -> dict[str, str]:
    r = client.post(f"{API}/tenants", json={"name": name, **extra}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"X-API-Key": r.json()["api_key"]}


@pytest.fixture
def auth(client: TestClient) -> dict[str, str]:
    return _tenant(client)


def _error(r: Any, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == type_
    return err


# -- tenants and auth --------------------------------------------------------------------------


def test_create_and_list_tenants_need_the_admin_key(client: TestClient) -> None:
    _error(client.post(f"{API}/tenants", json={"name": "x"}), 401, "Unauthorized")
    r = client.post(f"{API}/tenants", json={"name": "x"}, headers={"X-API-Key": "wrong"})
    _error(r, 401, "Unauthorized")  # an unknown key is not a valid credential
    auth = _tenant(client, "x", retention_days=90)
    _error(client.get(f"{API}/tenants", headers=auth), 403, "Forbidden")
    listed = client.get(f"{API}/tenants", headers=ADMIN).json()
    assert [(t["name"], t["retention_days"]) for t in listed] == [("x", 90)]
    assert "api_key" not in listed[0]


def test_duplicate_tenant_is_409(client: TestClient) -> None:
    _tenant(client, "x")
    _error(client.post(f"{API}/tenants", json={"name": "x"}, headers=ADMIN), 409, "Conflict")


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x", "auto_register_signals": "yes"},
        {"name": "x", "retention_days": "30"},
        {"name": "x", "retention_days": 0},
        {"name": "x", "unknown": 1},
    ],
)
def test_bad_tenant_body_is_422(client: TestClient, body: dict[str, Any]) -> None:
    assert client.post(f"{API}/tenants", json=body, headers=ADMIN).status_code == 422


def test_tenant_routes_need_a_valid_key(client: TestClient) -> None:
    _error(client.get(f"{API}/tenant"), 401, "Unauthorized")
    _error(client.get(f"{API}/tenant", headers={"X-API-Key": "nope"}), 401, "Unauthorized")
    _error(client.get(f"{API}/devices", headers={"X-API-Key": "nope"}), 401, "Unauthorized")


def test_own_tenant_get_and_patch(client: TestClient, auth: dict[str, str]) -> None:
    assert client.get(f"{API}/tenant", headers=auth).json()["name"] == "acme"
    r = client.patch(
        f"{API}/tenant", json={"auto_register_signals": False, "retention_days": 14}, headers=auth
    )
    assert (r.json()["auto_register_signals"], r.json()["retention_days"]) == (False, 14)
    r = client.patch(f"{API}/tenant", json={"retention_days": None}, headers=auth)
    assert r.json()["retention_days"] is None
    assert r.json()["auto_register_signals"] is False
    r = client.patch(f"{API}/tenant", json={"auto_register_signals": 0}, headers=auth)
    assert r.status_code == 422


# -- hierarchy ---------------------------------------------------------------------------------


def test_assets_and_tree(client: TestClient, auth: dict[str, str]) -> None:
    ent = client.post(f"{API}/assets", json={"level": "enterprise", "name": "acme"}, headers=auth)
    assert ent.status_code == 201
    eid = ent.json()["id"]
    site = client.post(
        f"{API}/assets", json={"level": "site", "name": "berlin", "parent_id": eid}, headers=auth
    ).json()
    r = client.post(
        f"{API}/assets", json={"level": "machine", "name": "m", "parent_id": eid}, headers=auth
    )
    assert _error(r, 422, "BadInput")["field"] == "parent_id"
    r = client.post(f"{API}/assets", json={"level": "enterprise", "name": "acme"}, headers=auth)
    _error(r, 409, "Conflict")
    r = client.post(f"{API}/assets", json={"level": "plant", "name": "p"}, headers=auth)
    assert r.status_code == 422
    client.post(f"{API}/devices", json={"name": "meter", "asset_id": site["id"]}, headers=auth)

    tree = client.get(f"{API}/tree", headers=auth).json()
    assert tree[0]["children"][0]["devices"] == ["meter"]
    assert client.get(f"{API}/assets/{site['id']}", headers=auth).json() == site
    assert len(client.get(f"{API}/assets", headers=auth).json()) == 2
    _error(client.delete(f"{API}/assets/{eid}", headers=auth), 409, "Conflict")
    _error(client.get(f"{API}/assets/999", headers=auth), 404, "NotFound")
    client.delete(f"{API}/devices/meter", headers=auth)
    assert client.delete(f"{API}/assets/{site['id']}", headers=auth).status_code == 204
    _error(client.get(f"{API}/assets/{site['id']}", headers=auth), 404, "NotFound")


# -- device types, devices, signals ------------------------------------------------------------


def test_device_types_and_devices(client: TestClient, auth: dict[str, str]) -> None:
    motor = {
        "name": "motor",
        "signals": [{"name": "temp", "unit": "degC"}, {"name": "speed", "data_type": "int"}],
    }
    assert client.post(f"{API}/device-types", json=motor, headers=auth).status_code == 201
    press = {"name": "press", "extends": "motor", "signals": [{"name": "temp", "unit": "K"}]}
    r = client.post(f"{API}/device-types", json=press, headers=auth)
    assert [(s["name"], s["unit"]) for s in r.json()["signals"]] == [
        ("temp", "K"),
        ("speed", ""),
    ]
    _error(client.post(f"{API}/device-types", json=motor, headers=auth), 409, "Conflict")
    orphan = {"name": "x", "extends": "missing"}
    _error(client.post(f"{API}/device-types", json=orphan, headers=auth), 404, "NotFound")
    assert client.get(f"{API}/device-types/press", headers=auth).json()["extends"] == "motor"
    assert len(client.get(f"{API}/device-types", headers=auth).json()) == 2
    _error(client.get(f"{API}/device-types/nope", headers=auth), 404, "NotFound")

    r = client.post(f"{API}/devices", json={"name": "p1", "device_type": "press"}, headers=auth)
    assert r.status_code == 201
    assert r.json()["device_type"] == "press"
    signals = client.get(f"{API}/devices/p1/signals", headers=auth).json()
    assert [s["key"] for s in signals] == ["p1/temp", "p1/speed"]
    _error(client.post(f"{API}/devices", json={"name": "p1"}, headers=auth), 409, "Conflict")
    assert client.get(f"{API}/devices/p1", headers=auth).json()["name"] == "p1"
    assert [d["name"] for d in client.get(f"{API}/devices", headers=auth).json()] == ["p1"]
    _error(client.delete(f"{API}/devices/p1", headers=auth), 409, "Conflict")
    assert client.delete(f"{API}/devices/p1?force=true", headers=auth).status_code == 204
    _error(client.get(f"{API}/devices/p1", headers=auth), 404, "NotFound")


def test_signals(client: TestClient, auth: dict[str, str]) -> None:
    client.post(f"{API}/devices", json={"name": "d1"}, headers=auth)
    body = {"name": "temp", "unit": "degC", "classification": "important"}
    r = client.post(f"{API}/devices/d1/signals", json=body, headers=auth)
    assert r.status_code == 201
    sig = r.json()
    assert (sig["key"], sig["data_type"], sig["classification"]) == (
        "d1/temp",
        "float",
        "important",
    )
    _error(client.post(f"{API}/devices/d1/signals", json=body, headers=auth), 409, "Conflict")
    _error(client.post(f"{API}/devices/d9/signals", json=body, headers=auth), 404, "NotFound")
    r = client.post(f"{API}/devices/d1/signals", json={"name": "a/b"}, headers=auth)
    assert r.status_code == 422
    r = client.post(f"{API}/devices/d1/signals", json={"name": "x", "data_type": 1}, headers=auth)
    assert r.status_code == 422

    assert client.get(f"{API}/signals/d1/temp", headers=auth).json() == sig
    assert client.get(f"{API}/signals/{sig['id']}", headers=auth).json() == sig
    assert [s["key"] for s in client.get(f"{API}/signals", headers=auth).json()] == ["d1/temp"]
    _error(client.get(f"{API}/signals/d1/nope", headers=auth), 404, "NotFound")
    r = client.patch(f"{API}/signals/d1/temp", json={"unit": "K"}, headers=auth)
    assert (r.json()["unit"], r.json()["classification"]) == ("K", "important")
    r = client.patch(f"{API}/signals/d1/temp", json={"classification": "secret"}, headers=auth)
    assert r.status_code == 422
    r = client.patch(f"{API}/signals/d1/temp", json={"data_type": "int"}, headers=auth)
    assert r.status_code == 422


def test_tenants_cannot_see_each_other(client: TestClient) -> None:
    a = _tenant(client, "a")
    b = _tenant(client, "b")
    client.post(f"{API}/devices", json={"name": "secret-dev"}, headers=b)
    sig = client.post(f"{API}/devices/secret-dev/signals", json={"name": "temp"}, headers=b).json()
    asset = client.post(
        f"{API}/assets", json={"level": "enterprise", "name": "b"}, headers=b
    ).json()
    _error(client.get(f"{API}/devices/secret-dev", headers=a), 404, "NotFound")
    _error(client.get(f"{API}/signals/{sig['id']}", headers=a), 404, "NotFound")
    _error(client.get(f"{API}/signals/secret-dev/temp", headers=a), 404, "NotFound")
    _error(client.get(f"{API}/assets/{asset['id']}", headers=a), 404, "NotFound")
    assert client.get(f"{API}/devices", headers=a).json() == []
    assert client.get(f"{API}/signals", headers=a).json() == []


def test_openapi_documents_every_route(app: FastAPI) -> None:
    spec = app.openapi()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method} {path} has no summary"
            codes = set(op["responses"])
            assert codes & {"401", "403"}, f"{method} {path} documents no auth error"
            if "{" in path:
                assert "404" in codes, f"{method} {path} documents no 404"
            if method in ("post", "patch"):
                assert "422" in codes, f"{method} {path} documents no 422"
