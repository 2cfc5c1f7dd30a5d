"""Device credential, provisioning, gateway, Sparkplug and twin routes over the real app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.registry.credentials import DeviceCredentials

API = "/api/v1"


@dataclass
class App:
    client: TestClient
    platform: Platform
    acme: dict[str, str]
    beta: dict[str, str]

    @property
    def creds(self) -> DeviceCredentials:
        creds = self.platform.credentials
        assert isinstance(creds, DeviceCredentials)
        return creds


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    # MQTT off: these routes are the registry side, and no test may hold port 1883.
    platform = Platform(Settings(data_dir=tmp_path, mqtt_mode="off"))
    _, acme = platform.registry.create_tenant("acme")
    _, beta = platform.registry.create_tenant("beta")
    with TestClient(create_app(platform=platform)) as client:
        yield App(client, platform, {"X-API-Key": acme}, {"X-API-Key": beta})
    platform.close()


def _device(app: App, name: str, auth: dict[str, str] | None = None) -> None:
    r = app.client.post(f"{API}/devices", json={"name": name}, headers=auth or app.acme)
    assert r.status_code == 201, r.text


def _error(r: Any, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == type_
    return err


def test_token_credential_lifecycle(app: App) -> None:
    _device(app, "press-1")
    url = f"{API}/devices/press-1/credentials"
    r = app.client.post(url, json={"kind": "token"}, headers=app.acme)
    assert r.status_code == 201, r.text
    body = r.json()
    token, cred_id = body["token"], body["credential"]["id"]
    assert body["credential"]["kind"] == "token"
    ident = app.creds.authenticate(token, None)
    assert ident is not None
    assert (ident.tenant, ident.device) == ("acme", "press-1")
    listed = app.client.get(url, headers=app.acme).json()
    assert [c["id"] for c in listed] == [cred_id]
    assert token not in str(listed)
    assert app.client.delete(f"{url}/{cred_id}", headers=app.acme).status_code == 204
    assert not app.creds.is_valid(ident)
    assert app.client.get(url, headers=app.acme).json()[0]["revoked_at"] is not None
    _error(app.client.delete(f"{url}/99999", headers=app.acme), 404, "NotFound")


def test_password_and_certificate_credentials(app: App) -> None:
    _device(app, "press-1")
    url = f"{API}/devices/press-1/credentials"
    r = app.client.post(
        url,
        json={"kind": "password", "username": "p1", "password": "pass-word-1"},
        headers=app.acme,
    )
    assert r.status_code == 201, r.text
    assert r.json()["credential"]["username"] == "p1"
    assert app.creds.authenticate("p1", "pass-word-1") is not None
    _error(app.client.post(url, json={"kind": "password"}, headers=app.acme), 422, "BadInput")
    r = app.client.post(url, json={"kind": "certificate"}, headers=app.acme)
    assert r.status_code == 201, r.text
    body = r.json()
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    ca = x509.load_pem_x509_certificate(body["ca_certificate_pem"].encode())
    cert.verify_directly_issued_by(ca)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert app.creds.authenticate_certificate(der) is not None
    r = app.client.delete(url, headers=app.acme)
    assert r.json() == {"revoked": 2}
    assert app.creds.authenticate_certificate(der) is None


def test_credentials_need_an_api_key_and_stay_in_the_tenant(app: App) -> None:
    _device(app, "press-1")
    url = f"{API}/devices/press-1/credentials"
    _error(app.client.post(url, json={"kind": "token"}), 401, "Unauthorized")
    _error(app.client.post(url, json={"kind": "token"}, headers=app.beta), 404, "NotFound")
    _error(app.client.get(url, headers=app.beta), 404, "NotFound")
    cred = app.client.post(url, json={"kind": "token"}, headers=app.acme).json()["credential"]
    _error(app.client.delete(url, headers=app.beta), 404, "NotFound")
    # beta has a device of the same name; acme's credential id is still not reachable from it.
    _device(app, "press-1", app.beta)
    r = app.client.delete(f"{url}/{cred['id']}", headers=app.beta)
    _error(r, 404, "NotFound")
    assert app.client.get(url, headers=app.acme).json()[0]["revoked_at"] is None


@pytest.mark.parametrize(
    "body",
    [{"name": "k", "expires_at": "2030-01-01T00:00:00"}, {"name": "k", "max_devices": 0}],
)
def test_bad_provisioning_key_bodies(app: App, body: dict[str, Any]) -> None:
    r = app.client.post(f"{API}/provisioning-keys", json=body, headers=app.acme)
    _error(r, 422, "BadInput")
    assert app.client.get(f"{API}/provisioning-keys", headers=app.acme).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "nope"},
        {"kind": "token", "username": "x"},
        {"kind": "password", "username": "u", "password": "short"},
        {"kind": "token", "extra": 1},
        {"kind": "token", "certificate_pem": "x"},
    ],
)
def test_bad_credential_bodies(app: App, body: dict[str, Any]) -> None:
    _device(app, "press-1")
    r = app.client.post(f"{API}/devices/press-1/credentials", json=body, headers=app.acme)
    _error(r, 422, "BadInput")


def test_provisioning_over_http(app: App) -> None:
    r = app.client.post(
        f"{API}/provisioning-keys", json={"name": "line-1", "max_devices": 1}, headers=app.acme
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    assert r.json()["used"] == 0
    # No API key: the provisioning key is the authority.
    r = app.client.post(f"{API}/provision", json={"key": key, "device": "press-7"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["tenant"], body["device"], body["created"]) == ("acme", "press-7", True)
    assert app.creds.authenticate(body["token"], None) is not None
    assert app.client.get(f"{API}/devices/press-7", headers=app.acme).status_code == 200
    _error(app.client.post(f"{API}/provision", json={"key": key, "device": "p8"}), 403, "Forbidden")
    _error(
        app.client.post(f"{API}/provision", json={"key": "wrong", "device": "p8"}),
        401,
        "Unauthorized",
    )
    (listed,) = app.client.get(f"{API}/provisioning-keys", headers=app.acme).json()
    assert listed["used"] == 1
    assert "key" not in listed
    assert app.client.delete(f"{API}/provisioning-keys/line-1", headers=app.acme).status_code == 204
    _error(app.client.delete(f"{API}/provisioning-keys/line-1", headers=app.beta), 404, "NotFound")


def test_provision_expired_and_certificate(app: App) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    r = app.client.post(
        f"{API}/provisioning-keys", json={"name": "old", "expires_at": past}, headers=app.acme
    )
    assert r.status_code == 201, r.text
    old = r.json()["key"]
    r = app.client.post(f"{API}/provision", json={"key": old, "device": "x"})
    assert "expired" in _error(r, 401, "Unauthorized")["message"]
    new = app.client.post(
        f"{API}/provisioning-keys", json={"name": "new"}, headers=app.acme
    ).json()["key"]
    r = app.client.post(
        f"{API}/provision", json={"key": new, "device": "x", "credential": "certificate"}
    )
    assert r.status_code == 201, r.text
    assert "PRIVATE KEY" in r.json()["private_key_pem"]
    r = app.client.post(f"{API}/provision", json={"key": new, "device": "x"})
    _error(r, 409, "Conflict")


def test_gateway_and_sparkplug_routes(app: App) -> None:
    for name in ("gw", "press-1", "area-1"):
        _device(app, name)
    _device(app, "theirs", app.beta)
    r = app.client.put(f"{API}/devices/gw/gateway", json={"owns": ["press-1"]}, headers=app.acme)
    assert r.json() == {"device": "gw", "owns": ["press-1"]}
    assert app.client.get(f"{API}/devices/gw/gateway", headers=app.acme).json()["owns"] == [
        "press-1"
    ]
    _error(app.client.get(f"{API}/devices/press-1/gateway", headers=app.acme), 404, "NotFound")
    r = app.client.put(f"{API}/devices/gw/gateway", json={"owns": ["theirs"]}, headers=app.acme)
    _error(r, 404, "NotFound")
    body = {"group_id": "acme", "edge_node_id": "area-1"}
    r = app.client.put(f"{API}/devices/area-1/sparkplug", json=body, headers=app.acme)
    assert r.status_code == 200, r.text
    _device(app, "area-1", app.beta)
    r = app.client.put(f"{API}/devices/area-1/sparkplug", json=body, headers=app.beta)
    _error(r, 409, "Conflict")
    r = app.client.post(f"{API}/sparkplug-groups", json={"group_id": "site-2"}, headers=app.beta)
    assert r.status_code == 201, r.text
    assert app.creds.tenant_of_group("site-2") == app.platform.registry.get_tenant("beta").id


def test_attribute_routes(app: App) -> None:
    _device(app, "press-1")
    base = f"{API}/devices/press-1/attributes"
    assert app.client.get(f"{base}/desired", headers=app.acme).json() == {}
    app.creds.set_reported_attributes(
        app.platform.registry.get_tenant("acme").id, "press-1", {"fw": "2.1"}
    )
    assert app.client.get(f"{base}/reported", headers=app.acme).json() == {"fw": "2.1"}
    _error(app.client.get(f"{base}/reported", headers=app.beta), 404, "NotFound")


def test_every_device_route_is_in_the_openapi(app: App) -> None:
    paths = app.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/devices/{name}/credentials",
        "/api/v1/devices/{name}/credentials/{credential_id}",
        "/api/v1/provisioning-keys",
        "/api/v1/provisioning-keys/{name}",
        "/api/v1/provision",
        "/api/v1/devices/{name}/gateway",
        "/api/v1/devices/{name}/sparkplug",
        "/api/v1/sparkplug-groups",
        "/api/v1/devices/{name}/attributes/desired",
        "/api/v1/devices/{name}/attributes/reported",
    ):
        assert path in paths, path
        for op in paths[path].values():
            assert op["summary"]
