"""The HTTP and CLI exports are egress paths: checked against the labels, and audited."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopfloor.api.platform import Platform
from shopfloor.cli.main import app as cli
from shopfloor.core.config import Settings
from shopfloor.core.kinds import Role
from shopfloor.core.timeutil import now_ns
from shopfloor.core.types import Classification
from shopfloor.security.audit import AuditFilter
from shopfloor.security.labels import Labels, LabelService
from tests.security.conftest import Tenant, UserHeaders


def ingest(client: TestClient, tenant: Tenant) -> int:
    """Three points each of press/temp and press/secret; returns the newest ms timestamp."""
    now_ms = now_ns() // 1_000_000
    points = [
        {"signal": s, "ts": now_ms - i * 1000, "value": 20.0 + i}
        for s in ("temp", "secret")
        for i in range(3)
    ]
    body = {"device": "press", "ts_unit": "ms", "points": points}
    r = client.post("/api/v1/ingest", json=body, headers=tenant.key_headers)
    assert r.status_code == 200, r.text
    return now_ms


@pytest.fixture
def eng(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders
) -> dict[str, str]:
    ingest(client, acme)
    LabelService(platform.registry).set_signal(
        acme.info.id, "press/secret", Labels(Classification.CORE)
    )
    return user_headers(Role.ENGINEER, acme.info.id)


def test_export_of_general_data_returns_the_points(client: TestClient, eng: dict[str, str]) -> None:
    r = client.get("/api/v1/export", params={"signal": "press/temp", "start": "-1h"}, headers=eng)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["signal"] for row in rows] == ["press/temp"] * 3
    assert sorted(float(row["value"]) for row in rows) == [20.0, 21.0, 22.0]
    r = client.get(
        "/api/v1/export",
        params={"signal": "press/temp", "start": "-1h", "format": "parquet"},
        headers=eng,
    )
    assert r.status_code == 200, r.text
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == 3


def test_export_of_core_data_is_refused_and_audited(
    client: TestClient, platform: Platform, acme: Tenant, eng: dict[str, str]
) -> None:
    r = client.get(
        "/api/v1/export",
        params=[("signal", "press/temp"), ("signal", "press/secret"), ("start", "-1h")],
        headers=eng,
    )
    assert r.status_code == 403, r.text
    message = r.json()["error"]["message"]
    assert "press/secret" in message
    assert "core" in message
    assert "press/temp" not in message  # only the blocking signal is named
    assert "20.0" not in r.text
    recs = platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="egress"))
    assert [(x.outcome, x.details["signals"]) for x in recs] == [("denied", 2)]
    assert recs[0].details["channel"] == "export"
    assert not platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="data.export"))


def test_export_of_important_data_needs_an_approval(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    eng: dict[str, str],
    user_headers: UserHeaders,
) -> None:
    LabelService(platform.registry).set_signal(
        acme.info.id, "press/temp", Labels(Classification.IMPORTANT)
    )
    params = {"signal": "press/temp", "start": "-1h", "destination": "s3://reports"}
    r = client.get("/api/v1/export", params=params, headers=eng)
    assert r.status_code == 403
    assert "egress/requests" in r.json()["error"]["message"]
    req = client.post(
        "/api/v1/egress/requests",
        json={
            "destination": "s3://reports",
            "signals": ["press/temp"],
            "reason": "supplier quality report",
            "duration_s": 600,
        },
        headers=eng,
    ).json()
    sec = user_headers(Role.SECURITY_ADMIN, acme.info.id)
    assert (
        client.post(f"/api/v1/egress/requests/{req['id']}/approve", headers=sec).status_code == 200
    )
    r = client.get("/api/v1/export", params=params, headers=eng)
    assert r.status_code == 200, r.text
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 3
    done = platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="data.export"))
    assert [(d.details["rows"], d.details["approvals"]) for d in done] == [(3, [req["id"]])]


def test_export_needs_data_export_and_known_signals(
    client: TestClient, acme: Tenant, eng: dict[str, str], user_headers: UserHeaders
) -> None:
    viewer = user_headers(Role.VIEWER, acme.info.id)
    r = client.get("/api/v1/export", params={"signal": "press/temp"}, headers=viewer)
    assert r.status_code == 403
    r = client.get("/api/v1/export", params={"signal": "press/nope"}, headers=eng)
    assert r.status_code == 404
    r = client.get(
        "/api/v1/export", params={"signal": "press/temp", "start": "now", "end": "-1h"}, headers=eng
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "end"


def test_cli_export_of_core_data_exits_1_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "cli"
    plat = Platform(Settings(data_dir=data, mqtt_mode="off"))
    try:
        from shopfloor.api.app import create_app

        info, key = plat.registry.create_tenant("acme")
        with TestClient(create_app(platform=plat)) as c:
            ingest(c, Tenant(info, {"Authorization": f"Bearer {key}"}))
        LabelService(plat.registry).set_signal(info.id, "press/secret", Labels(Classification.CORE))
    finally:
        plat.close()
    runner = CliRunner()
    out = tmp_path / "out.csv"
    args = ["export", str(out), "-t", "acme", "--start", "-1h", "--data-dir", str(data)]
    r = runner.invoke(cli, [*args, "--signal", "press/secret", "--signal", "press/temp"])
    assert r.exit_code == 1, r.output
    assert "refused" in r.output
    assert "press/secret" in r.output
    assert "core" in r.output
    assert not out.exists()
    # Without a signal named, every signal is checked: still refused.
    assert runner.invoke(cli, args).exit_code == 1
    r = runner.invoke(cli, [*args, "--signal", "press/temp"])
    assert r.exit_code == 0, r.output
    assert out.read_text().count("press/temp") == 3
    plat = Platform(Settings(data_dir=data, mqtt_mode="off"))
    try:
        recs = plat.audit.records(AuditFilter(tenant_id=info.id, action="egress"))
        assert [(x.outcome, x.role) for x in recs] == [
            ("denied", "local"),
            ("denied", "local"),
            ("ok", "local"),
        ]
        assert all(x.actor.startswith("cli:") for x in recs)
    finally:
        plat.close()
