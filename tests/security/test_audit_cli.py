"""`shopfloor audit verify / purge / export / show` on a real data folder."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from shopfloor.api.platform import Platform
from shopfloor.cli.main import app
from shopfloor.core.config import Settings
from shopfloor.core.timeutil import DAY_NS
from shopfloor.security.audit import AuditFilter

runner = CliRunner()


def make_log(
    data_dir: Path, ages_days: tuple[int, ...] = (0, 0, 0, 0, 0), key_file: Path | None = None
) -> None:
    plat = Platform(Settings(data_dir=data_dir, mqtt_mode="off", audit_key_file=key_file))
    try:
        real = plat.audit.clock
        for i, days in enumerate(ages_days):
            plat.audit.clock = lambda d=days: real() - d * DAY_NS
            plat.audit.record("test.event", f"n={i}", "ok", actor="tester")
    finally:
        plat.close()


def sql(data_dir: Path, statement: str) -> None:
    plat = Platform(Settings(data_dir=data_dir, mqtt_mode="off"))
    try:
        with plat.registry.engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        plat.close()


def audit(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.output


def test_verify_exit_codes_and_message_naming_the_seq(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_log(data)
    code, output = audit("verify", "-d", str(data))
    assert code == 0, output
    assert "intact" in output
    assert "5 checked" in output

    sql(data, "UPDATE audit_records SET actor = 'someone' WHERE seq = 3")
    code, output = audit("verify", "-d", str(data))
    assert code == 1
    assert "seq 3" in output
    assert "hash-mismatch" in output


def test_verify_finds_deleted_newest_records(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_log(data)
    sql(data, "DELETE FROM audit_records WHERE seq = 5")
    code, output = audit("verify", "-d", str(data))
    assert code == 1
    assert "truncated" in output
    assert "seq 5" in output


def test_purge_then_verify_and_export_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_log(data, (400, 300, 10, 1))
    code, output = audit("purge", "-d", str(data))
    assert code == 0, output
    assert "removed 2 record(s) up to seq 2" in output
    code, output = audit("verify", "-d", str(data))
    assert code == 0, output

    jsonl = tmp_path / "audit.jsonl"
    code, output = audit("export", "--out", str(jsonl), "-d", str(data))
    assert code == 0, output
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [x["object"] for x in lines[:2]] == ["n=2", "n=3"]
    assert lines[2]["action"] == "audit.purged"
    assert lines[-1]["action"] == "audit.export"  # the export is itself recorded
    assert lines[-1]["actor"].startswith("cli:")
    code, output = audit("verify", "--file", str(jsonl), "-d", str(data))  # its key
    assert code == 0, output

    csv_file = tmp_path / "audit.csv"
    code, _ = audit("export", "--out", str(csv_file), "--format", "csv", "-d", str(data))
    assert code == 0
    assert audit("verify", "--file", str(csv_file), "-d", str(data))[0] == 0

    lines[1]["outcome"] = "failed"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, output = audit("verify", "--file", str(jsonl), "-d", str(data))
    assert code == 1
    assert f"seq {lines[1]['seq']}" in output


def test_show_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_log(data)
    code, output = audit("show", "-n", "2", "-d", str(data))
    assert code == 0, output
    assert "n=4" in output
    assert "n=3" in output
    assert "n=2" not in output
    code, output = audit("show", "--tenant", "nope", "-d", str(data))
    assert code == 2
    assert "no tenant 'nope'" in output


def test_wiped_log_and_witness_is_reported_removed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_log(data)
    sql(data, "DELETE FROM audit_records")
    (data / "audit.head").unlink()
    code, output = audit("verify", "-d", str(data))
    assert code == 1
    assert "log-removed" in output
    assert "seq None" not in output


def test_verify_with_the_key_kept_elsewhere(tmp_path: Path) -> None:
    data, keys = tmp_path / "data", tmp_path / "keys"
    keys.mkdir()
    key_file = keys / "audit.key"
    make_log(data, key_file=key_file)
    assert key_file.exists()
    assert not (data / "audit.key").exists()

    code, output = audit("verify", "-d", str(data))  # the default place holds no key
    assert code == 2
    assert "audit_key_file" in output
    assert "missing" in output
    code, output = audit("verify", "-d", str(data), "--key-file", str(key_file))
    assert code == 0, output
    assert "intact" in output

    config = tmp_path / "shopfloor.yaml"
    config.write_text(f"data_dir: {data}\naudit_key_file: {key_file}\n")
    jsonl = tmp_path / "audit.jsonl"
    code, output = audit("export", "--out", str(jsonl), "-c", str(config))
    assert code == 0, output
    assert audit("verify", "--file", str(jsonl), "-c", str(config))[0] == 0
    assert audit("verify", "--file", str(jsonl), "--key-file", str(key_file))[0] == 0
    code, output = audit("verify", "--file", str(jsonl), "-d", str(data))
    assert code == 2
    assert "--key-file" in output
    wrong = keys / "wrong.key"
    wrong.write_bytes(bytes(32))
    code, output = audit("verify", "--file", str(jsonl), "--key-file", str(wrong))
    assert code == 1
    assert "hash-mismatch" in output


def test_tenant_create_on_the_cli_is_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(app, ["tenant", "create", "acme", "-d", str(data)])
    assert result.exit_code == 0, result.output
    platform = Platform(Settings(data_dir=data, mqtt_mode="off"))
    try:
        flt = AuditFilter(all_tenants=True, action="tenant.create")
        (record,) = platform.audit.records(flt)
        assert record.object == "tenant:acme"
        assert record.actor.startswith("cli:")
        assert record.tenant_id == platform.registry.get_tenant("acme").id
        assert result.output.strip().splitlines()[-1] not in json.dumps(record.details)
    finally:
        platform.close()
    assert runner.invoke(app, ["audit", "verify", "-d", str(data)]).exit_code == 0


def test_tenant_rotate_key_replaces_the_bootstrap_key_and_is_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = runner.invoke(app, ["tenant", "create", "acme", "-d", str(data)])
    assert created.exit_code == 0, created.output
    old = created.output.strip().splitlines()[-1]
    rotated = runner.invoke(app, ["tenant", "rotate-key", "acme", "-d", str(data)])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.output.strip().splitlines()[-1]
    assert new != old
    platform = Platform(Settings(data_dir=data, mqtt_mode="off"))
    try:
        assert platform.registry.tenant_by_api_key(old) is None
        tenant = platform.registry.tenant_by_api_key(new)
        assert tenant is not None
        assert tenant.name == "acme"
        (record,) = platform.audit.records(
            AuditFilter(all_tenants=True, action="tenant.rotate_key")
        )
        assert record.object == "tenant:acme"
    finally:
        platform.close()
    missing = runner.invoke(app, ["tenant", "rotate-key", "nobody", "-d", str(data)])
    assert missing.exit_code != 0
    assert "no tenant 'nobody'" in missing.output
