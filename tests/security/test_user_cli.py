"""`shopfloor user`: the CLI makes users that then log in on the real API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.cli.main import app
from shopfloor.core.config import Settings
from tests.security.conftest import PASSWORD

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def plat(data_dir: Path) -> Iterator[Platform]:
    p = Platform(Settings(data_dir=data_dir, mqtt_mode="off"))
    p.registry.create_tenant("acme")
    yield p
    p.close()


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    r = runner.invoke(app, ["user", *args, "-d", str(data_dir)], input=stdin)
    return r.exit_code, r.stdout, r.stderr


def test_create_then_login_round_trip(plat: Platform, data_dir: Path) -> None:
    code, _, err = cli(
        data_dir,
        "create",
        "olga",
        "--tenant",
        "acme",
        "--role",
        "operator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    assert "olga" in err
    assert "operator" in err
    with TestClient(create_app(platform=plat)) as client:
        body = {"tenant": "acme", "username": "olga", "password": PASSWORD}
        r = client.post("/api/v1/auth/login", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["user"]["roles"] == [{"role": "operator", "asset_id": None}]
        # A token made on the CLI works on the API; after revoke on the CLI it does not.
        code, out, err = cli(
            data_dir,
            "token",
            "create",
            "olga",
            "--tenant",
            "acme",
            "--name",
            "ci",
            "--scope",
            "registry.read",
        )
        assert code == 0, err
        token = out.strip()
        assert token.startswith("sft_")
        assert token not in err
        h = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/assets", headers=h).status_code == 200
        code, out, _ = cli(data_dir, "token", "list", "olga", "--tenant", "acme")
        assert "ci\tregistry.read" in out
        assert token not in out
        token_id = out.split("\t")[0]
        assert cli(data_dir, "token", "revoke", "olga", token_id, "--tenant", "acme")[0] == 0
        plat.auth._changed()  # the API process would see it within CACHE_TTL_S
        assert client.get("/api/v1/assets", headers=h).status_code == 401


def test_prompted_password_must_match(plat: Platform, data_dir: Path) -> None:
    code, _, err = cli(
        data_dir, "create", "olga", "--tenant", "acme", stdin=f"{PASSWORD}\n{PASSWORD}x\n"
    )
    assert code == 2
    assert "differ" in err
    code, _, err = cli(
        data_dir, "create", "olga", "--tenant", "acme", stdin=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert code == 0, err


def test_platform_admin_and_clear_errors(plat: Platform, data_dir: Path) -> None:
    code, _, err = cli(
        data_dir,
        "create",
        "root",
        "--platform",
        "--role",
        "platform_admin",
        "--role",
        "auditor",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 2
    assert "separate duties" in err
    code, _, err = cli(
        data_dir,
        "create",
        "root",
        "--platform",
        "--role",
        "platform_admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    code, _, err = cli(
        data_dir, "create", "x", "--tenant", "nope", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 2
    assert "no tenant 'nope'" in err
    assert "acme" in err
    code, _, err = cli(data_dir, "create", "x", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 2
    assert "--tenant NAME or --platform" in err
    code, _, err = cli(
        data_dir, "create", "x", "--tenant", "acme", "--password-stdin", stdin="weak\n"
    )
    assert code == 2
    assert "password" in err
    code, out, _ = cli(data_dir, "list", "--platform")
    assert out.startswith("root\tplatform_admin\tactive\tno-totp")


def test_disable_unlock_reset_password(plat: Platform, data_dir: Path) -> None:
    cli(
        data_dir,
        "create",
        "olga",
        "--tenant",
        "acme",
        "--role",
        "viewer",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    acme = plat.registry.get_tenant("acme").id
    assert cli(data_dir, "disable", "olga", "--tenant", "acme")[0] == 0
    assert plat.auth.get_user(acme, "olga").disabled
    assert cli(data_dir, "enable", "olga", "--tenant", "acme")[0] == 0
    assert not plat.auth.get_user(acme, "olga").disabled
    code, out, _ = cli(data_dir, "roles", "olga", "--tenant", "acme", "--role", "engineer")
    assert code == 0
    assert out.strip() == "engineer"
    code, out, _ = cli(data_dir, "reset-password", "olga", "--tenant", "acme")
    one_time = out.strip()
    assert code == 0
    assert len(one_time) >= 20
    from shopfloor.security.auth import PasswordExpired

    with pytest.raises(PasswordExpired):
        plat.auth.login("acme", "olga", one_time)
    assert cli(data_dir, "unlock", "olga", "--tenant", "acme")[0] == 0
    assert cli(data_dir, "totp-reset", "olga", "--tenant", "acme")[0] == 0
    code, _, err = cli(data_dir, "disable", "nobody", "--tenant", "acme")
    assert code == 2
    assert "not found" in err


def test_help_texts() -> None:
    r = runner.invoke(app, ["user", "--help"])
    assert r.exit_code == 0
    assert "reset-password" in r.stdout
    assert "token" in r.stdout
    r = runner.invoke(app, ["user", "create", "--help"])
    assert "ROLE@ASSET_ID" in r.stdout


def test_cli_manages_oversight_roles_the_api_refuses(plat: Platform, data_dir: Path) -> None:
    """Security admins and auditors are the platform operator's: the CLI makes, re-roles and
    disables them, while the tenant admin's API answers 403 for the same changes."""
    code, _, err = cli(
        data_dir,
        "create",
        "sec",
        "--tenant",
        "acme",
        "--role",
        "security_admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    acme = plat.registry.get_tenant("acme")
    with TestClient(create_app(platform=plat)) as client:
        # The acme tenant admin (a user of acme, holding users.manage).
        admin = plat.auth.create_user(acme.id, "ada", PASSWORD, ["tenant_admin"])
        _, secret = plat.auth.issue_token(admin.id, "ops")
        h = {"Authorization": f"Bearer {secret}"}
        r = client.patch("/api/v1/users/sec", headers=h, json={"disabled": True})
        assert r.status_code == 403, r.text
        assert "shopfloor user" in r.json()["error"]["message"]
        assert not plat.auth.get_user(acme.id, "sec").disabled
    code, out, err = cli(data_dir, "roles", "sec", "--tenant", "acme", "--role", "auditor")
    assert code == 0, err
    assert out.strip() == "auditor"
    assert "sessions were ended" in err
    assert cli(data_dir, "disable", "sec", "--tenant", "acme")[0] == 0
    assert plat.auth.get_user(acme.id, "sec").disabled
