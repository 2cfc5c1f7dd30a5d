"""``shopfloor app``: the app catalogue, a tenant's apps, a new app's scaffold, conformance.

Works on the registry directly (like ``shopfloor user``), so a running platform picks the
change up within a second; every change is audited with the actor ``cli:<os user>``.
"""

from __future__ import annotations

import getpass
import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from shopfloor.apps.catalogue import Catalogue
    from shopfloor.security.audit import AuditLog

app = typer.Typer(
    help=(
        "Apps: the catalogue of installed apps, enabling them for a tenant with a config, a "
        "scaffold for a new app, and the conformance check.\n\nExample: shopfloor app enable "
        "oee --tenant demo --config oee.yaml -d shopfloor-data"
    ),
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-d", help="The platform's data folder.", envvar="SHOPFLOOR_DATA_DIR"
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--settings", help="The platform's YAML settings file.", exists=True),
]
Tenant = Annotated[str, typer.Option("--tenant", "-t", help="The tenant's name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _fail(message: object) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(message))}")
    raise typer.Exit(1)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextmanager
def _open(
    data_dir: Path | None, settings_file: Path | None, tenant: str | None
) -> Iterator[tuple[Catalogue, AuditLog, int | None]]:
    from shopfloor.apps.catalogue import Catalogue
    from shopfloor.core.config import load_settings
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.registry.service import Registry
    from shopfloor.security.audit import AuditLog

    try:
        settings = load_settings(settings_file, data_dir=data_dir)
        registry = Registry(settings.resolved_registry_url())
        registry.upgrade()
    except ShopfloorError as exc:
        _fail(exc)
    try:
        tenant_id = None
        if tenant is not None:
            try:
                tenant_id = registry.get_tenant(tenant).id
            except ShopfloorError:
                names = ", ".join(t.name for t in registry.list_tenants()) or "none yet"
                _fail(f"no tenant {tenant!r} (tenants: {names})")
        yield Catalogue(registry), AuditLog(registry, settings), tenant_id
    except ShopfloorError as exc:
        _fail(exc)
    finally:
        registry.close()


def _read_config(raw: str | None) -> dict[str, Any] | None:
    """``--config``: a JSON object, or a path to a YAML / JSON file."""
    if raw is None:
        return None
    text = raw
    if not raw.lstrip().startswith("{"):
        path = Path(raw)
        if not path.is_file():
            _fail(f"--config: {raw!r} is neither a JSON object nor a file")
        text = path.read_text()
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        _fail(f"--config: not YAML or JSON: {exc}")
    if not isinstance(value, dict):
        _fail("--config must hold an object (a mapping of settings)")
    return value


@app.command("list")
def list_apps(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Show its choices.")] = None,
    data_dir: DataDir = None,
    settings: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """The installed apps (and, with --tenant, which the tenant enabled).

    Example: shopfloor app list --tenant demo -d shopfloor-data
    """
    with _open(data_dir, settings, tenant) as (cat, _audit, tenant_id):
        choices = cat.tenant_apps(tenant_id) if tenant_id is not None else {}
        rows = [
            {
                "name": name,
                "version": cls.manifest.version,
                "title": cls.manifest.title,
                "summary": cls.manifest.summary,
                "enabled": choices[name].enabled if name in choices else False,
            }
            for name, cls in cat.apps.items()
        ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("app", "version", "enabled" if tenant else "", "summary")
    for r in rows:
        table.add_row(
            str(r["name"]),
            str(r["version"]),
            ("yes" if r["enabled"] else "no") if tenant else "",
            str(r["summary"]),
        )
    out.print(table)
    if not rows:
        console.print("no apps installed (pip install one, or see: shopfloor app new --help)")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The app.")],
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Show its config.")] = None,
    data_dir: DataDir = None,
    settings: ConfigFile = None,
) -> None:
    """An app's manifest, config schema, example config and (with --tenant) its config.

    Example: shopfloor app show spc --tenant demo
    """
    with _open(data_dir, settings, tenant) as (cat, _audit, tenant_id):
        cls = cat.app_class(name)
        choice = cat.get(tenant_id, name) if tenant_id is not None else None
        doc = {
            **cls.manifest.model_dump(),
            "routes": [f"/api/v1/apps/{name}/{r.path}" for r in cls.routes()],
            "example_config": dict(cls.example_config),
            "config_schema": cls.config_model.model_json_schema(),
        }
        if choice is not None:
            doc["enabled"] = choice.enabled
            doc["config"] = choice.config
    out.print_json(json.dumps(doc))


@app.command("enable")
def enable(
    name: Annotated[str, typer.Argument(help="The app.")],
    tenant: Tenant,
    config: Annotated[
        str | None,
        typer.Option(help="A JSON object or a YAML/JSON file; omitted keeps the stored one."),
    ] = None,
    example: Annotated[bool, typer.Option(help="Use the app's example config.")] = False,
    data_dir: DataDir = None,
    settings: ConfigFile = None,
) -> None:
    """Enable an app for a tenant (its config is checked by the app first).

    Example: shopfloor app enable spc --tenant demo --config spc.yaml
    """
    with _open(data_dir, settings, tenant) as (cat, audit, tenant_id):
        assert tenant_id is not None
        cls = cat.app_class(name)
        raw = dict(cls.example_config) if example else _read_config(config)
        info = cat.enable(tenant_id, name, raw, actor=_actor())
        audit.record(
            "app.enable", f"app:{name}", "ok", actor=_actor(), role="local",
            tenant_id=tenant_id, source="cli", details={"config": info.config},
        )  # fmt: skip
    console.print(f"app {name!r} enabled for tenant {tenant!r}")
    out.print_json(json.dumps(info.config))


@app.command("disable")
def disable(
    name: Annotated[str, typer.Argument(help="The app.")],
    tenant: Tenant,
    data_dir: DataDir = None,
    settings: ConfigFile = None,
) -> None:
    """Disable an app for a tenant (its state and config are kept for a later enable).

    Example: shopfloor app disable spc --tenant demo
    """
    with _open(data_dir, settings, tenant) as (cat, audit, tenant_id):
        assert tenant_id is not None
        cat.disable(tenant_id, name, actor=_actor())
        audit.record(
            "app.disable", f"app:{name}", "ok", actor=_actor(), role="local",
            tenant_id=tenant_id, source="cli",
        )  # fmt: skip
    console.print(f"app {name!r} disabled for tenant {tenant!r}")


@app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="An installed app.")],
    minutes: Annotated[int, typer.Option(help="Simulated minutes to feed it.")] = 30,
    config: Annotated[str | None, typer.Option(help="Config to check with (JSON or file).")] = None,
) -> None:
    """Run the conformance suite (shopfloor.testing.check_app) on an installed app.

    It builds a throwaway platform with the demo factory and feeds the app simulated data.
    Example: shopfloor app check oee --minutes 60
    """
    from shopfloor.apps.catalogue import installed_apps
    from shopfloor.testing import check_app

    apps = installed_apps()
    if name not in apps:
        _fail(f"app {name!r} is not installed (installed: {', '.join(apps) or 'none'})")
    with tempfile.TemporaryDirectory() as tmp:
        report = check_app(apps[name], Path(tmp), config=_read_config(config), minutes=minutes)
    console.print(str(report))
    console.print(
        f"fed {report.points_fed:,} points in {report.ticks} ticks; wrote "
        f"{sum(report.signals_written.values()):,} points to {len(report.signals_written)} signals"
    )
    raise typer.Exit(0 if report.ok else 1)


_NEW_NAME = re.compile(r"^[a-z][a-z0-9-]{1,31}$")


@app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="The app's name: a-z, 0-9 and '-', e.g. hot-press.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to create it (default ./NAME).")
    ] = None,
) -> None:
    """Scaffold a new app package: manifest, class, test with check_app, README.

    Example: shopfloor app new hot-press && pip install -e hot-press && shopfloor app check hot-press
    """
    if not _NEW_NAME.match(name):
        _fail("the name must be 2-32 of a-z, 0-9 and '-', starting with a letter")
    target = directory or Path(name)
    if target.exists() and any(target.iterdir()):
        _fail(f"{target} exists and is not empty")
    package = "shopfloor_" + name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-")) + "App"
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"src/{package}/__init__.py": '"""The {name} Shopfloor app."""\n',
        f"src/{package}/app.py": _APP,
        "tests/test_app.py": _TEST,
    }
    for rel, template in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(name=name, package=package, cls=cls))
    console.print(
        f"created {target}/ (app {name!r}, class {package}.app:{cls})\n"
        f"next: pip install -e {target} && shopfloor app check {name}"
    )


_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "{package}"
version = "0.1.0"
description = "The {name} Shopfloor app."
requires-python = ">=3.11"
dependencies = ["shopfloor[platform]"]

[project.optional-dependencies]
dev = ["pytest>=8"]

# How Shopfloor finds the app: the entry-point name is the manifest's name.
[project.entry-points."shopfloor.apps"]
{name} = "{package}.app:{cls}"

[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]
"""

_README = """\
# {name}

A Shopfloor app (see Shopfloor's docs/apps/sdk.md).

    pip install -e .
    shopfloor app check {name}             # the conformance suite on simulated data
    shopfloor app enable {name} --tenant demo --example
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/v1/apps/{name}/current
"""

_APP = '''\
"""The {name} app: replace this with what it does and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from shopfloor.apps.sdk import (
    App,
    AppConfig,
    AppContext,
    AppManifest,
    AppRoute,
    Panel,
    PointBatch,
)


class Config(AppConfig):
    device_type: str | None = None  # None: every device with the signal
    signal: str = "motor_temp"
    limit: float = Field(80.0, description="Counted when a point is above it.")


class {cls}(App[Config]):
    manifest = AppManifest(
        name="{name}",
        title="{name}",
        version="0.1.0",
        summary="Counts points above a limit, per device.",
        tick_s=60.0,
    )
    config_model = Config
    example_config: ClassVar[Mapping[str, Any]] = {{"signal": "motor_temp", "limit": 25.0}}

    def __init__(self, ctx: AppContext, config: Config) -> None:
        super().__init__(ctx, config)
        self.above: dict[str, int] = {{}}

    def subscriptions(self) -> Sequence[int]:
        return self.ctx.signal_ids(self.config.device_type, self.config.signal)

    def on_points(self, batch: PointBatch) -> None:
        names = {{
            d.signals[self.config.signal]: d.name
            for d in self.ctx.devices(self.config.device_type)
            if self.config.signal in d.signals
        }}
        for sid, series in batch.by_signal().items():
            device = names.get(sid)
            if device is not None:
                hits = int(np.count_nonzero(series.values > self.config.limit))
                self.above[device] = self.above.get(device, 0) + hits

    def state(self) -> dict[str, Any]:
        return {{"above": self.above}}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.above = {{k: int(v) for k, v in state.get("above", {{}}).items()}}

    def status(self) -> dict[str, Any]:
        return {{"devices": len(self.above)}}

    def current(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {{"limit": self.config.limit, "above": self.above}}

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        return (AppRoute("current", "Points above the limit, per device", {cls}.current),)

    @classmethod
    def panels(cls) -> Sequence[Panel]:
        return (Panel("current", "Above the limit", "table", "current"),)
'''

_TEST = '''\
"""The app passes Shopfloor's conformance suite and counts what it should."""

from __future__ import annotations

from pathlib import Path

from shopfloor.testing import check_app
from {package}.app import {cls}


def test_conforms(tmp_path: Path) -> None:
    report = check_app({cls}, tmp_path, minutes=10)
    assert report.ok, str(report)
    assert report.points_fed > 0
    assert sum(report.routes["current"]["above"].values()) > 0
'''
