"""Remote gateway configuration over HTTP: versions, lost updates, validation with positions,
device registration with a device type, masked secrets, the gateway's report and sync state,
the long-poll, browse requests and the audit trail. Real app, real registry."""

from __future__ import annotations

import threading
import time
from typing import Any

from shopfloor.api.gateway_routes import MASK
from shopfloor.registry.service import SignalSpec
from shopfloor.security.audit import AuditFilter
from tests.api.conftest import Api

V1 = "/api/v1"


def modbus(name: str = "line1", port: int = 5020, device: str = "press-7", **dev: Any) -> dict:
    return {
        "type": "modbus",
        "name": name,
        "connections": [
            {
                "name": "plc",
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": port,
                "devices": [
                    {
                        "name": device,
                        "unit_id": 1,
                        "points": [{"name": "temp", "table": "holding", "address": 1}],
                        **dev,
                    }
                ],
            }
        ],
    }


def opcua(password: str) -> dict:
    return {
        "type": "opcua",
        "name": "ua",
        "endpoint": "opc.tcp://127.0.0.1:4840/x",
        "username": "edge",
        "password": password,
        "devices": [{"name": "oven-1", "nodes": [{"node_id": "ns=2;s=t", "signal": "t"}]}],
    }


def gw(api: Api, name: str = "gw-1") -> str:
    api.platform.registry.create_device(api.tenant_id, name)
    return name


def put(api: Api, name: str, connectors: list[dict], expected: int) -> Any:
    body = {"connectors": connectors, "expected_version": expected}
    return api.client.put(f"{V1}/gateways/{name}/config", json=body, headers=api.headers)


def get(api: Api, name: str, **params: Any) -> Any:
    return api.client.get(f"{V1}/gateways/{name}/config", params=params, headers=api.headers)


def test_versions_and_lost_updates(api: Api) -> None:
    name = gw(api)
    first = get(api, name)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert (doc["version"], doc["connectors"], doc["sync"]) == (0, [], "never_seen")
    assert doc["browse_requests"] == []
    assert doc["applied_version"] is None

    r = put(api, name, [modbus()], 0)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert r.json()["connectors"] == [modbus()]
    assert r.json()["updated_by"]  # who changed it

    stale = put(api, name, [modbus(port=5021)], 0)  # someone else's edit came first
    assert stale.status_code == 409, stale.text
    assert "version 1, not 0" in stale.json()["error"]["message"]
    assert get(api, name).json()["connectors"][0]["connections"][0]["port"] == 5020

    assert put(api, name, [modbus(port=5021)], 1).json()["version"] == 2
    listed = api.client.get(f"{V1}/gateways", headers=api.headers).json()
    assert [(g["name"], g["desired_version"], g["sync"]) for g in listed] == [
        (name, 2, "never_seen")
    ]
    assert listed[0]["devices"] == 1  # press-7, registered under the gateway

    unknown = get(api, "no-such-gw")
    assert unknown.status_code == 404
    assert put(api, "no-such-gw", [], 0).status_code == 404


def test_invalid_sections_are_422_naming_the_field(api: Api) -> None:
    name = gw(api)
    cases = [
        (modbus(port=70000), "connectors.0.connections.0.port"),
        ({**modbus(), "type": "no-such-connector"}, "connectors.0.type"),
        (modbus(device_type="no-such-type"), "connectors.0.connections.0.devices.0.device_type"),
        ({"type": "modbus"}, "connectors.0.name"),
    ]
    for section, field in cases:
        r = put(api, name, [section], 0)
        assert r.status_code == 422, (field, r.text)
        err = r.json()["error"]
        assert err["field"] == field, err
        assert err["message"]
    two = put(api, name, [modbus(), modbus(device="press-8")], 0)
    assert two.status_code == 422
    assert "used twice" in two.json()["error"]["message"]
    assert get(api, name).json()["version"] == 0  # nothing was stored
    assert api.client.get(f"{V1}/devices/press-7", headers=api.headers).status_code == 404


def test_named_devices_are_registered_with_their_type(api: Api) -> None:
    reg = api.platform.registry
    reg.create_device_type(api.tenant_id, "press-type", [SignalSpec("temp", unit="degC")])
    asset = reg.create_asset(api.tenant_id, "enterprise", "works")
    reg.create_device(api.tenant_id, "gw-1", None, asset.id)
    r = put(api, "gw-1", [modbus(device_type="press-type")], 0)
    assert r.status_code == 200, r.text
    dev = reg.get_device(api.tenant_id, "press-7")
    assert (dev.device_type, dev.asset_id) == ("press-type", asset.id)
    signals = {s.key: s.unit for s in reg.list_signals(api.tenant_id)}
    assert signals["press-7/temp"] == "degC"  # the type's signals came with it
    assert api.platform.credentials.gateway_devices(api.tenant_id, "gw-1") == ["press-7"]
    # the device type stays in the stored section (the gateway strips it)
    dev_entry = r.json()["connectors"][0]["connections"][0]["devices"][0]
    assert dev_entry["device_type"] == "press-type"


def test_secrets_are_masked_and_kept(api: Api) -> None:
    name = gw(api)
    assert put(api, name, [opcua("s3cret-pass")], 0).status_code == 200
    shown = get(api, name).json()["connectors"][0]
    assert shown["password"] == MASK
    assert "s3cret" not in get(api, name).text
    # the console sends the masked form back with another change: the secret is kept
    shown["publishing_interval_ms"] = 250.0
    assert put(api, name, [shown], 1).status_code == 200
    revealed = get(api, name, secrets="reveal").json()["connectors"][0]
    assert revealed["password"] == "s3cret-pass"
    assert revealed["publishing_interval_ms"] == 250.0
    # a mask where nothing was stored is refused, naming the field
    other = {**opcua(MASK), "name": "ua2"}
    r = put(api, name, [revealed, other], 2)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "connectors.1.password"
    # the audit trail names the change, never the secret
    records = api.platform.audit.records(
        AuditFilter(tenant_id=api.tenant_id, action="gateway.config")
    )
    assert [rec.details["version"] for rec in records] == [1, 2] or [
        rec.details["version"] for rec in records
    ] == [2, 1]
    assert all(rec.object == f"device:{name}" and rec.outcome == "ok" for rec in records)
    assert "s3cret" not in repr([rec.details for rec in records])


def test_report_sets_sync_and_last_seen(api: Api) -> None:
    name = gw(api)
    put(api, name, [modbus()], 0)
    url = f"{V1}/gateways/{name}/config/status"
    r = api.client.post(url, json={"applied_version": 0, "error": None}, headers=api.headers)
    assert r.status_code == 200, r.text
    assert r.json()["sync"] == "pending"
    assert r.json()["last_seen"] is not None
    api.client.post(url, json={"applied_version": 1, "error": None}, headers=api.headers)
    assert get(api, name).json()["sync"] == "in_sync"
    put(api, name, [modbus(port=5099)], 1)
    bad = {"applied_version": 1, "error": "connectors[0].x: broken"}
    api.client.post(url, json=bad, headers=api.headers)
    doc = get(api, name).json()
    assert (doc["sync"], doc["error"], doc["applied_version"]) == ("error", bad["error"], 1)
    put(api, name, [modbus(port=5098)], 2)  # a fix: pending again until the gateway tries it
    assert get(api, name).json()["sync"] == "pending"
    assert (
        api.client.post(url, json={"applied_version": "1"}, headers=api.headers).status_code == 422
    )


def test_long_poll_waits_and_wakes_on_a_change(api: Api) -> None:
    name = gw(api)
    t0 = time.monotonic()
    r = get(api, name, wait_s=0.6, after_version=0)
    waited = time.monotonic() - t0
    assert r.status_code == 200
    assert r.json()["version"] == 0
    assert waited >= 0.55, waited
    assert time.monotonic() - t0 < 5

    def later() -> None:
        time.sleep(0.4)
        put(api, name, [modbus()], 0)

    thread = threading.Thread(target=later)
    t0 = time.monotonic()
    thread.start()
    r = get(api, name, wait_s=20, after_version=0)
    thread.join()
    assert r.json()["version"] == 1
    assert time.monotonic() - t0 < 5  # woken by the change, not by the 20 s limit
    assert get(api, name, wait_s=31).status_code == 422  # above the 30 s limit


def test_browse_request_round_trip(api: Api) -> None:
    name = gw(api)
    base = f"{V1}/gateways/{name}/browse"
    bad = api.client.post(base, json={"endpoint": "http://x"}, headers=api.headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "endpoint"
    r = api.client.post(
        base, json={"endpoint": "opc.tcp://127.0.0.1:4840", "max_depth": 2}, headers=api.headers
    )
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert r.json()["state"] == "pending"
    # the gateway's poll answers at once although the version did not change
    t0 = time.monotonic()
    poll = get(api, name, wait_s=10, after_version=0).json()
    assert time.monotonic() - t0 < 3
    assert poll["browse_requests"] == [
        {"id": rid, "endpoint": "opc.tcp://127.0.0.1:4840", "root": None, "max_depth": 2}
    ]
    # handed out once: the next poll waits instead of spinning on it
    assert get(api, name, wait_s=0.3, after_version=0).json()["browse_requests"] == []
    assert api.client.get(f"{base}/{rid}", headers=api.headers).json()["state"] == "pending"
    node = {
        "node_id": "ns=2;s=a",
        "browse_path": "Plant/a",
        "name": "a",
        "data_type": "Double",
        "writable": False,
    }
    done = api.client.post(f"{base}/{rid}/result", json={"nodes": [node]}, headers=api.headers)
    assert done.status_code == 200, done.text
    got = api.client.get(f"{base}/{rid}", headers=api.headers).json()
    assert (got["state"], got["nodes"], got["error"]) == ("done", [node], None)
    again = api.client.post(f"{base}/{rid}/result", json={"error": "x"}, headers=api.headers)
    assert again.status_code == 409
    assert api.client.get(f"{base}/nope", headers=api.headers).status_code == 404
    # another gateway of the tenant does not see this one's request
    other = gw(api, "gw-2")
    assert (
        api.client.get(f"{V1}/gateways/{other}/browse/{rid}", headers=api.headers).status_code
        == 404
    )
