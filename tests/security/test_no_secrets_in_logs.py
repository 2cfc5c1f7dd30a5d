"""Secrets never reach the logs: a session of logins, tokens, device credentials and ingest,
logged at DEBUG on every logger, holds none of the passwords, tokens or keys it used."""

from __future__ import annotations

import logging

import orjson
import pytest
from fastapi.testclient import TestClient

from shopfloor.api.platform import Platform
from shopfloor.security.roles import Role
from tests.security.conftest import PASSWORD, Tenant

WRONG = "Wrong-password-4711"
DEVICE_PASSWORD = "device-pass-0815-x"


def test_no_secret_reaches_the_logs(
    client: TestClient, platform: Platform, acme: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    platform.auth.create_user(acme.info.id, "olga", PASSWORD, [Role.ENGINEER])
    secrets: list[str] = [PASSWORD, WRONG, DEVICE_PASSWORD, platform.admin_key]
    secrets.append(acme.key_headers["Authorization"].removeprefix("Bearer "))

    body = {"tenant": "acme", "username": "olga", "password": WRONG}
    assert client.post("/api/v1/auth/login", json=body).status_code == 401
    r = client.post("/api/v1/auth/login", json={**body, "password": PASSWORD})
    assert r.status_code == 200, r.text
    session = r.json()["token"]
    secrets.append(session)
    me = {"Authorization": f"Bearer {session}"}
    r = client.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=me)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    secrets.append(token)
    auth = {"Authorization": f"Bearer {token}"}

    assert (
        client.post("/api/v1/devices", json={"name": "press-01"}, headers=auth).status_code == 201
    )
    r = client.post(
        "/api/v1/devices/press-01/credentials",
        json={"kind": "password", "username": "press-01", "password": DEVICE_PASSWORD},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/devices/press-01/credentials", json={"kind": "token"}, headers=auth)
    assert r.status_code == 201, r.text
    secrets.append(r.json()["token"])
    doc = orjson.dumps({"device": "press-01", "ts": [1767225600000], "values": {"t": [1.5]}})
    assert client.post("/api/v1/ingest", content=doc, headers=auth).status_code == 200
    # Failures log too: a wrong token, a revoked one, a forbidden call.
    assert client.get("/api/v1/tenant", headers={"X-API-Key": token + "x"}).status_code == 401
    token_id = client.get("/api/v1/auth/tokens", headers=me).json()[0]["id"]
    assert client.delete(f"/api/v1/auth/tokens/{token_id}", headers=me).status_code == 204
    assert client.get("/api/v1/tenant", headers=auth).status_code == 401
    assert client.get("/api/v1/tenants", headers=me).status_code == 403

    assert caplog.records, "nothing was logged: the test would prove nothing"
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    leaked = [s[:6] + "..." for s in secrets if s in text]
    assert not leaked, f"secrets in the logs: {leaked}"
