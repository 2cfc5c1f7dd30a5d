"""The HTTP and CLI exports are egress paths: checked against the labels, and audited."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

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
from shopfloor.registry import SignalSpec
from shopfloor.security.audit import AuditFilter
from shopfloor.security.labels import Labels, LabelService
from tests.security.conftest import PASSWORD, Tenant, UserHeaders


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


# -- a CSV download from /points is an egress too (H2) -----------------------------------------


def test_points_csv_is_an_egress_checked_like_export(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    eng: dict[str, str],
    user_headers: UserHeaders,
) -> None:
    csv_of = {"signal": "press/secret", "start": "-1h", "format": "csv"}
    # Core data: /export refuses it, and so does the CSV download of /points.
    assert client.get("/api/v1/export", params=csv_of, headers=eng).status_code == 403
    r = client.get("/api/v1/points", params=csv_of, headers=eng)
    assert r.status_code == 403, r.text
    assert "press/secret" in r.json()["error"]["message"]
    assert "20.0" not in r.text
    # A file download needs data.export: a viewer gets the JSON read, not the file.
    viewer = user_headers(Role.VIEWER, acme.info.id)
    general = {"signal": "press/temp", "start": "-1h", "format": "csv"}
    r = client.get("/api/v1/points", params=general, headers=viewer)
    assert r.status_code == 403, r.text
    assert "data.export" in r.json()["error"]["message"]
    # General data downloads, audited exactly as /export's downloads are.
    r = client.get("/api/v1/points", params=general, headers=eng)
    assert r.status_code == 200, r.text
    assert [row["signal"] for row in csv.DictReader(io.StringIO(r.text))] == ["press/temp"] * 3
    egress = platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="egress"))
    assert [(x.outcome, x.object, x.details["region"]) for x in egress] == [
        ("denied", "export:download", "default"),
        ("denied", "export:download", "default"),
        ("ok", "export:download", "default"),
    ]
    (done,) = platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="data.export"))
    assert (done.object, done.details["rows"], done.details["format"]) == (
        "export:download",
        3,
        "csv",
    )
    assert done.details["bytes"] == len(r.content)


def test_json_reads_stay_inside_the_platform(
    client: TestClient, platform: Platform, acme: Tenant, user_headers: UserHeaders, eng: Any
) -> None:
    # Interactive reads deliver data to an authenticated user of the tenant: not egress
    # (docs/data-classification.md), so core data reads and no egress is recorded.
    viewer = user_headers(Role.VIEWER, acme.info.id)
    r = client.get("/api/v1/points", params={"signal": "press/secret"}, headers=viewer)
    assert r.status_code == 200, r.text
    assert len(r.json()["series"][0]["value"]) == 3
    r = client.get("/api/v1/latest", params={"signal": "press/secret"}, headers=viewer)
    assert r.status_code == 200, r.text
    assert not platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="egress"))


# -- the region of a download is the deployment's (H3) -----------------------------------------


def headers_on(plat: Platform, role: Role, tenant_id: int) -> dict[str, str]:
    """A user of ``role`` on a platform of the test's own settings, and their token."""
    user = plat.auth.create_user(tenant_id, role.value, PASSWORD, [(role, None)])
    return {"Authorization": f"Bearer {plat.auth.issue_token(user.id, 'tests')[1]}"}


def test_a_download_cannot_declare_another_region(tmp_path: Path) -> None:
    plat = Platform(Settings(data_dir=tmp_path / "eu", mqtt_mode="off", region="eu"))
    try:
        from shopfloor.api.app import create_app

        info, key = plat.registry.create_tenant("acme")
        with TestClient(create_app(platform=plat)) as c:
            ingest(c, Tenant(info, {"Authorization": f"Bearer {key}"}))
            labels = LabelService(plat.registry)
            labels.set_signal(info.id, "press/temp", Labels(residency="cn"))
            eng = headers_on(plat, Role.ENGINEER, info.id)
            sec = headers_on(plat, Role.SECURITY_ADMIN, info.id)
            params = {"signal": "press/temp", "start": "-1h"}
            # cn-resident data leaving an eu deployment needs an approval...
            assert c.get("/api/v1/export", params=params, headers=eng).status_code == 403
            # ...and declaring the destination to be in cn does not lift that.
            for path, extra in (("/api/v1/export", {}), ("/api/v1/points", {"format": "csv"})):
                r = c.get(path, params={**params, **extra, "destination_region": "cn"}, headers=eng)
                if path == "/api/v1/points":  # no such parameter: still checked for eu
                    assert r.status_code == 403, r.text
                    continue
                assert r.status_code == 422, r.text
                err = r.json()["error"]
                assert err["field"] == "destination_region"
                assert "deployment's region 'eu'" in err["message"]
            # Naming the deployment's own region is the same as leaving it out.
            r = c.get("/api/v1/export", params={**params, "destination_region": "eu"}, headers=eng)
            assert r.status_code == 403
            # An approval pins the region it was granted for: one for cn does not cover
            # a download, whose region is eu.
            for region in ("cn", "eu"):
                req = c.post(
                    "/api/v1/egress/requests",
                    json={
                        "destination": "download",
                        "destination_region": region,
                        "signals": ["press/temp"],
                        "reason": "supplier report",
                        "duration_s": 600,
                    },
                    headers=eng,
                ).json()
                assert req["destination_region"] == region
                ok = c.post(f"/api/v1/egress/requests/{req['id']}/approve", headers=sec)
                assert ok.status_code == 200, ok.text
                r = c.get("/api/v1/export", params=params, headers=eng)
                assert r.status_code == (403 if region == "cn" else 200), (region, r.text)
    finally:
        plat.close()


# -- hidden signals answer as unknown ones (L1) ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra"), [("/api/v1/export", {}), ("/api/v1/points", {"format": "csv"})]
)
def test_a_hidden_signal_is_unknown_to_a_subtree_exporter(
    client: TestClient,
    platform: Platform,
    acme: Tenant,
    user_headers: UserHeaders,
    path: str,
    extra: dict[str, str],
) -> None:
    reg, tid = platform.registry, acme.info.id
    ent = reg.create_asset(tid, "enterprise", "acme")
    site1 = reg.create_asset(tid, "site", "site-1", ent.id)
    site2 = reg.create_asset(tid, "site", "site-2", ent.id)
    reg.create_device(tid, "inside", asset_id=site1.id)
    reg.create_device(tid, "outside", asset_id=site2.id)
    for device in ("inside", "outside"):
        reg.create_signal(tid, device, SignalSpec("temp"))
    scoped = user_headers(Role.ENGINEER, tid, site1.id)

    def get(*keys: str) -> Any:
        return client.get(path, params={**extra, "signal": list(keys)}, headers=scoped)

    hidden = get("inside/temp", "outside/temp", "nowhere/temp")
    ghost = get("inside/temp", "ghost/temp", "nowhere/temp")
    assert hidden.status_code == ghost.status_code == 404, (hidden.text, ghost.text)
    assert ghost.json()["error"]["message"] == "unknown signals: ghost/temp, nowhere/temp"
    assert hidden.json()["error"]["message"] == "unknown signals: outside/temp, nowhere/temp"
    assert get("inside/temp").status_code == 200


# -- the CLI exports exactly what it checked (L6) ----------------------------------------------


def _cli_plant(data: Path, **settings: Any) -> Any:
    plat = Platform(Settings(data_dir=data, mqtt_mode="off", **settings))
    try:
        from shopfloor.api.app import create_app

        info, key = plat.registry.create_tenant("acme")
        with TestClient(create_app(platform=plat)) as c:
            ingest(c, Tenant(info, {"Authorization": f"Bearer {key}"}))
        return info
    finally:
        plat.close()


def test_cli_export_writes_only_the_signals_it_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "cli"
    _cli_plant(data)
    import shopfloor.cli.main as cli_main
    from shopfloor.interop.transfer import import_file
    from shopfloor.security.egress import EgressPolicy

    opened: list[Platform] = []
    real_platform, real_check = cli_main._platform, EgressPolicy.check_local

    def platform_of(settings: Settings) -> Platform:
        opened.append(real_platform(settings))
        return opened[-1]

    def check_then_race(self: EgressPolicy, tenant_id: int, *args: Any, **kw: Any) -> Any:
        decision = real_check(self, tenant_id, *args, **kw)
        # Between the check and the export a core signal with data appears (an ingest
        # running beside the CLI): it was never checked, so it must not be written.
        plat = opened[-1]
        src = tmp_path / "late.csv"
        src.write_text("signal,ts,value\npress/late,2020-01-01T00:00:00Z,1.0\n")
        tenant = plat.registry.get_tenant("acme")
        import_file(plat, tenant, src)
        LabelService(plat.registry).set_signal(tenant_id, "press/late", Labels(Classification.CORE))
        return decision

    monkeypatch.setattr(cli_main, "_platform", platform_of)
    monkeypatch.setattr(EgressPolicy, "check_local", check_then_race)
    out = tmp_path / "out.csv"
    args = ["export", str(out), "-t", "acme", "--start", "2019-01-01T00:00:00Z"]
    r = CliRunner().invoke(cli, [*args, "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {row["signal"] for row in rows} == {"press/temp", "press/secret"}
    assert len(rows) == 6


def test_cli_export_reads_the_region_from_config(tmp_path: Path) -> None:
    data = tmp_path / "cli"
    info = _cli_plant(data)
    plat = Platform(Settings(data_dir=data, mqtt_mode="off"))
    try:
        LabelService(plat.registry).set_signal(info.id, "press/temp", Labels(residency="cn"))
    finally:
        plat.close()
    config = tmp_path / "cn.yaml"
    config.write_text("region: cn\n")
    out = tmp_path / "out.csv"
    args = ["export", str(out), "-t", "acme", "--start", "-1h", "--signal", "press/temp"]
    args += ["--data-dir", str(data)]
    # This deployment's region is cn (from --config): cn-resident data may be written here.
    r = CliRunner().invoke(cli, [*args, "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert out.read_text().count("press/temp") == 3
    # Without the config the region is "default": the same export needs an approval.
    out.unlink()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    assert "resident in 'cn'" in r.output
    assert not out.exists()
