"""`shopfloor app`: scaffold, catalogue, enable / disable with checked configs, audit."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.apps.catalogue import Catalogue
from shopfloor.cli import apps as apps_cli
from shopfloor.cli.main import app
from shopfloor.core.config import Settings
from shopfloor.registry.service import Registry
from shopfloor.security.audit import AuditFilter, AuditLog
from shopfloor.testing import check_app
from tests.apps.test_host import APPS

runner = CliRunner()


def test_app_new_scaffolds_a_package_that_passes_check_app(tmp_path: Path) -> None:
    r = runner.invoke(app, ["app", "new", "hot-press", "--dir", str(tmp_path / "hp")])
    assert r.exit_code == 0, r.output
    root = tmp_path / "hp"
    pyproject = (root / "pyproject.toml").read_text()
    assert 'hot-press = "shopfloor_hot_press.app:HotPressApp"' in pyproject
    sys.path.insert(0, str(root / "src"))
    try:
        module = importlib.import_module("shopfloor_hot_press.app")
        report = check_app(module.HotPressApp, tmp_path / "check", minutes=5)
    finally:
        sys.path.remove(str(root / "src"))
    assert report.ok, str(report)
    assert sum(report.routes["current"]["above"].values()) > 0
    # Refusals: a bad name, an existing non-empty folder.
    assert runner.invoke(app, ["app", "new", "Bad_Name"]).exit_code == 1
    r = runner.invoke(app, ["app", "new", "hot-press", "--dir", str(root)])
    assert r.exit_code == 1
    assert "not empty" in r.output


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    reg = Registry(Settings(data_dir=d).resolved_registry_url())
    reg.upgrade()
    reg.create_tenant("acme")
    reg.close()
    # The catalogue sees this test's apps instead of the installed ones.
    real = Catalogue.__init__

    def with_test_apps(self: Catalogue, registry: Registry, apps: object = None) -> None:
        real(self, registry, APPS)

    monkeypatch.setattr(Catalogue, "__init__", with_test_apps)
    return d


def test_enable_show_list_disable_and_audit(data: Path) -> None:
    d = ["-d", str(data)]
    r = runner.invoke(
        app, ["app", "enable", "counter", "-t", "acme", "--config", '{"factor": "x"}', *d]
    )
    assert r.exit_code == 1
    assert "config.factor" in r.output
    r = runner.invoke(app, ["app", "enable", "counter", "-t", "nobody", "--example", *d])
    assert r.exit_code == 1
    assert "no tenant 'nobody'" in r.output
    cfg = data.parent / "counter.yaml"
    cfg.write_text("factor: 4.5\n")
    r = runner.invoke(app, ["app", "enable", "counter", "-t", "acme", "--config", str(cfg), *d])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["app", "list", "-t", "acme", "--json", *d])
    rows = {row["name"]: row["enabled"] for row in json.loads(r.stdout)}
    assert rows == {**dict.fromkeys(APPS, False), "counter": True}
    r = runner.invoke(app, ["app", "show", "counter", "-t", "acme", *d])
    shown = json.loads(r.stdout)
    assert shown["config"] == {"signal": "temp", "factor": 4.5}
    assert shown["routes"] == ["/api/v1/apps/counter/summary"]
    assert runner.invoke(app, ["app", "disable", "counter", "-t", "acme", *d]).exit_code == 0
    r = runner.invoke(app, ["app", "disable", "broken", "-t", "acme", *d])
    assert r.exit_code == 1  # never enabled
    assert "not enabled" in r.output
    reg = Registry(Settings(data_dir=data).resolved_registry_url())
    try:
        records = AuditLog(reg, Settings(data_dir=data)).records(
            AuditFilter(all_tenants=True), None
        )
        actions = [(x.action, x.outcome) for x in records if x.action.startswith("app.")]
        assert actions == [("app.enable", "ok"), ("app.disable", "ok")]
        assert all(x.actor.startswith("cli:") for x in records if x.action.startswith("app."))
    finally:
        reg.close()
    assert apps_cli.app.info.help is not None
