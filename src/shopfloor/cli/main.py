"""The `shopfloor` command."""

from __future__ import annotations

import getpass
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from shopfloor.cli.apps import app as apps_app
from shopfloor.cli.audit import app as audit_app
from shopfloor.cli.device import app as device_app
from shopfloor.cli.edge import app as edge_app
from shopfloor.cli.migrate import migrate
from shopfloor.cli.rules import alarms_app, rules_app
from shopfloor.cli.user import app as user_app
from shopfloor.core.config import Settings, load_settings
from shopfloor.core.errors import ShopfloorError

app = typer.Typer(
    help="Shopfloor: connect, collect, store, process and deliver factory data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tenant_app = typer.Typer(
    help="Create and list tenants (companies sharing this deployment).", no_args_is_help=True
)
app.add_typer(tenant_app, name="tenant")
app.add_typer(edge_app, name="edge")
app.add_typer(device_app, name="device")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(rules_app, name="rules")
app.add_typer(alarms_app, name="alarms")
app.add_typer(apps_app, name="app")
app.command()(migrate)
console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-d", help="Folder holding all platform data.", envvar="SHOPFLOOR_DATA_DIR"
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML settings file (see docs/configuration.md).",
        exists=True,
        dir_okay=False,
    ),
]


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ShopfloorError as exc:
        _fail(exc)


def _fail(exc: Exception) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(exc))}")  # messages may hold [brackets]
    raise typer.Exit(2)


# What `pip install 'shopfloor[platform]'` brings; the edge gateway runs without any of it.
PLATFORM_MODULES = ("pyarrow", "duckdb", "sqlalchemy", "alembic", "fastapi", "uvicorn")


def _need_platform() -> None:
    missing = [m for m in PLATFORM_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        _fail(
            RuntimeError(
                f"this command runs the platform, which needs {', '.join(missing)}: "
                "install it with  pip install 'shopfloor[platform]'  "
                "(an edge gateway needs only 'shopfloor[edge]' and the 'shopfloor edge' commands)"
            )
        )


def _platform(settings: Settings):  # type: ignore[no-untyped-def]
    _need_platform()
    from shopfloor.api.platform import Platform

    try:
        return Platform(settings)
    except ShopfloorError as exc:
        _fail(exc)


def _tenant(platform, name: str):  # type: ignore[no-untyped-def]
    try:
        return platform.registry.get_tenant(name)
    except ShopfloorError:
        names = ", ".join(t.name for t in platform.registry.list_tenants()) or "none yet"
        _fail(
            ValueError(
                f"no tenant {name!r} (tenants: {names}); create one with 'shopfloor tenant create'"
            )
        )


def _serve(settings: Settings, on_start: tuple = ()) -> None:  # type: ignore[type-arg]
    _need_platform()
    from shopfloor.api.server import run_server

    url = f"{'https' if settings.https else 'http'}://{settings.http_host}:{settings.http_port}"
    if settings.role in ("ingest", "rules"):
        console.print(f"Shopfloor {settings.role} worker; health probe on {url}/api/v1/health")
    else:
        role = "" if settings.role == "all" else f" ({settings.role} role)"
        console.print(f"Shopfloor{role} on [bold]{url}[/bold]  (API docs: {url}/docs)")
    console.print(
        f"Data folder: {settings.data_dir.resolve()}  admin key: {settings.data_dir / 'admin.key'}"
    )
    try:
        run_server(settings, on_start)
    except ShopfloorError as exc:  # a bad certificate file, say: name the setting, no trace
        _fail(exc)


@app.command()
def up(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Address to bind; 0.0.0.0 for all.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
    config: ConfigFile = None,
    https: Annotated[
        bool | None,
        typer.Option(
            "--https/--no-https",
            help="Serve HTTPS: tls_cert_file/tls_key_file, or a self-signed certificate "
            "made on first start in <data-dir>/tls.",
        ),
    ] = None,
) -> None:
    """Run the platform on embedded defaults: SQLite registry, DuckDB historian, one folder."""
    _serve(_settings(config, data_dir=data_dir, http_host=host, http_port=port, https=https))


ROLES = ("all", "api", "ingest", "rules")


@app.command()
def serve(
    role: Annotated[
        str | None,
        typer.Option(
            help="What this process runs: all (as 'up'), api (HTTP API and console), ingest "
            "(MQTT subscriber of an external broker), rules (rules, apps, retention); default "
            "the 'role' setting. Roles other than all need PostgreSQL: see docs/scale-out.md."
        ),
    ] = None,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="HTTP port (ingest/rules: the health probe).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind; 0.0.0.0 for all.")] = None,
) -> None:
    """Run one process of a scaled-out deployment in the given role (`up` with a role)."""
    if role is not None and role not in ROLES:
        _fail(ValueError(f"--role must be one of {', '.join(ROLES)}, not {role!r}"))
    _serve(_settings(config, data_dir=data_dir, http_host=host, http_port=http_port, role=role))


@app.command()
def demo(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", "-d", help="Folder for the demo's data.")
    ] = Path("shopfloor-demo"),
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    backfill: Annotated[
        str, typer.Option(help="Recent history at 1 Hz to simulate before going live (2h, 0).")
    ] = "1h",
    history: Annotated[
        str,
        typer.Option(
            help="Older history at one reading a minute, before the backfill (7d, 0): shifts "
            "for OEE, baselines and run-to-failure histories for the apps."
        ),
    ] = "7d",
    apps: Annotated[bool, typer.Option(help="Enable the installed apps for the demo.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated factory.")] = 1,
) -> None:
    """Run the platform with a simulated factory (3 lines, 20 machines, ~500 signals at 1 Hz)
    and the apps: OEE, SPC, condition monitoring, predictive maintenance."""
    _need_platform()
    from shopfloor.cli.demo import DemoFactory

    settings = _settings(None, data_dir=data_dir, http_port=port)
    factory = DemoFactory(seed=seed, backfill=backfill, history=history, apps=apps)
    _serve(settings, on_start=(factory.run,))


@tenant_app.command("create")
def tenant_create(
    name: str,
    data_dir: DataDir = None,
    auto_register: Annotated[
        bool,
        typer.Option(
            "--auto-register/--no-auto-register", help="Register unknown signals on first sight."
        ),
    ] = True,
    retention_days: Annotated[
        int | None, typer.Option(help="Delete points older than this.")
    ] = None,
) -> None:
    """Create a tenant and print its API key (shown once)."""
    platform = _platform(_settings(None, data_dir=data_dir))
    try:
        info, key = platform.registry.create_tenant(
            name, auto_register_signals=auto_register, retention_days=retention_days
        )
        platform.audit.record(
            "tenant.create",
            f"tenant:{info.name}",
            "ok",
            actor=f"cli:{getpass.getuser()}",
            role="local",
            tenant_id=info.id,
            source="local",
            details={"retention_days": retention_days, "auto_register": auto_register},
        )
    except ShopfloorError as exc:
        _fail(exc)
    finally:
        platform.close()
    console.print(f"Tenant [bold]{info.name}[/bold] (id {info.id}). API key, shown once:")
    print(key)


@tenant_app.command("rotate-key")
def tenant_rotate_key(name: str, data_dir: DataDir = None) -> None:
    """Replace a tenant's bootstrap API key (it acts as the tenant's admin): the old key stops
    working at once here and within a minute in a running server; the new one is shown once."""
    platform = _platform(_settings(None, data_dir=data_dir))
    try:
        info = _tenant(platform, name)
        key = platform.registry.rotate_api_key(info.id)
        platform.audit.record(
            "tenant.rotate_key",
            f"tenant:{info.name}",
            "ok",
            actor=f"cli:{getpass.getuser()}",
            role="local",
            tenant_id=info.id,
            source="local",
        )
    except ShopfloorError as exc:
        _fail(exc)
    finally:
        platform.close()
    console.print(f"New API key of tenant [bold]{info.name}[/bold], shown once:")
    print(key)


@tenant_app.command("list")
def tenant_list(data_dir: DataDir = None) -> None:
    """List tenants."""
    platform = _platform(_settings(None, data_dir=data_dir))
    try:
        for t in platform.registry.list_tenants():
            retention = f"{t.retention_days} d" if t.retention_days else "forever"
            print(
                f"{t.id}\t{t.name}\tauto-register={'on' if t.auto_register_signals else 'off'}\tretention={retention}"
            )
    finally:
        platform.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command("import")
def import_(
    files: Annotated[
        list[Path], typer.Argument(help="CSV or Parquet files.", exists=True, dir_okay=False)
    ],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant name.")],
    data_dir: DataDir = None,
    device: Annotated[str | None, typer.Option(help="Device for bare signal names.")] = None,
    wide: Annotated[bool, typer.Option(help="One column per signal beside a 'ts' column.")] = False,
    ts_unit: Annotated[str, typer.Option(help="Unit of numeric timestamps: s, ms, us, ns.")] = "ms",
    skip_rows: Annotated[int, typer.Option(help="Rows to skip (resume after an error).")] = 0,
    format: Annotated[
        str,
        typer.Option(
            help="'table' (CSV / Parquet points) or 'cmapss' (NASA C-MAPSS run-to-failure "
            "text files: one device per unit, see docs/apps/predictive-maintenance.md)."
        ),
    ] = "table",
    start: Annotated[
        str, typer.Option(help="cmapss: when the first cycle is stored (RFC 3339, -30d).")
    ] = "-30d",
    cycle: Annotated[str, typer.Option(help="cmapss: the time one cycle takes, e.g. 1h.")] = "1h",
) -> None:
    """Import historical points (backfill) from CSV or Parquet files, with progress.

    Example: shopfloor import train_FD001.txt --format cmapss --tenant acme --cycle 1h
    """
    from shopfloor.interop.transfer import import_file

    if format not in ("table", "cmapss"):
        _fail(ValueError(f"--format must be table or cmapss, not {format!r}"))
    platform = _platform(_settings(None, data_dir=data_dir))
    try:
        info = _tenant(platform, tenant)
        if format == "cmapss":
            _import_cmapss(platform, info.id, files, start, cycle)
            return
        with _progress() as progress:
            for f in files:
                report = import_file(
                    platform, info, f, device=device, wide=wide, ts_unit=ts_unit,
                    skip_rows=skip_rows, progress=progress,
                )  # fmt: skip
                console.print(
                    f"{f}: {report.points:,} points of {report.signals:,} signals in {report.seconds:.1f} s"
                )
    except ShopfloorError as exc:
        _fail(exc)
    finally:
        platform.close()


def _import_cmapss(platform, tenant_id: int, files: list[Path], start: str, cycle: str) -> None:  # type: ignore[no-untyped-def]
    from shopfloor.core.timeutil import now_ns, parse_duration, parse_instant
    from shopfloor.interop.cmapss_import import import_cmapss

    t0 = parse_instant(start, "start", now_ns())
    step = parse_duration(cycle, "cycle")
    with _progress() as progress:
        for f in files:
            report = import_cmapss(
                platform, tenant_id, f, start_ns=t0, cycle_ns=step, progress=progress
            )
            console.print(
                f"{f}: {report.units} units ({report.failed_units} run to failure), "
                f"{report.points:,} points in {report.seconds:.1f} s"
            )


@app.command()
def export(
    file: Annotated[Path, typer.Argument(help="Output .csv or .parquet file.", dir_okay=False)],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant name.")],
    start: Annotated[str, typer.Option(help="RFC 3339, epoch ms, or '-7d' relative to now.")],
    end: Annotated[str, typer.Option(help="RFC 3339, epoch ms, 'now'.")] = "now",
    signal: Annotated[
        list[str] | None, typer.Option(help="device/signal, repeatable; default all.")
    ] = None,
    data_dir: DataDir = None,
    destination: Annotated[
        str | None, typer.Option(help="Where the file goes (egress check); default file:<path>.")
    ] = None,
    destination_region: Annotated[
        str | None, typer.Option(help="Region of the destination; default this deployment's.")
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Export points to CSV or Parquet, with progress, after the egress policy check."""

    from shopfloor.core.errors import Forbidden
    from shopfloor.core.timeutil import parse_instant
    from shopfloor.interop.transfer import export_file
    from shopfloor.security.egress import EgressPolicy

    # --config: the deployment's region (the default destination region) is a setting.
    platform = _platform(_settings(config, data_dir=data_dir))
    try:
        info = _tenant(platform, tenant)
        t0, t1 = parse_instant(start, "start"), parse_instant(end, "end")
        # An export is an egress: the labels decide before anything is written (audited).
        # The keys are fixed here, and exactly these are exported: a signal created between
        # the check and the export must not slip out unchecked.
        if signal:
            keys = list(dict.fromkeys(signal))
        else:
            keys = [s.key for s in platform.registry.list_signals(info.id)]
        ids = platform.registry.resolve_keys(info.id, keys).tolist() if keys else []
        actor = f"cli:{getpass.getuser()}"
        try:
            EgressPolicy(platform.registry, platform.settings, platform.audit).check_local(
                info.id, actor, "export", destination or f"file:{file.resolve()}",
                destination_region, ids,
            )  # fmt: skip
        except Forbidden as exc:
            console.print(f"[red]refused:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None
        with _progress() as progress:
            report = export_file(
                platform, info, file, signals=keys, start=t0, end=t1, progress=progress
            )
        platform.audit.record(
            "data.export", f"export:{file.resolve()}", "ok", actor=actor, role="local",
            tenant_id=info.id, source="local", details={"signals": len(ids), "rows": report.rows},
        )  # fmt: skip
        console.print(f"{file}: {report.rows:,} rows in {report.seconds:.1f} s")
    except ShopfloorError as exc:
        _fail(exc)
    finally:
        platform.close()


@app.command()
def compact(data_dir: DataDir = None) -> None:
    """Fold recent points into compressed blocks now (the server also does it by itself)."""
    platform = _platform(_settings(None, data_dir=data_dir))
    try:
        n = platform.historian.compact()
        console.print(f"compacted {n:,} points; {json.dumps(platform.historian.stats())}")
    finally:
        platform.close()


BENCHMARKS = (
    "historian",
    "ingest-http",
    "edge-opcua",
    "edge-modbus",
    "buffer",
    "ingest-mqtt",
    "rules",
    "alarm-latency",
    "anomaly",
    "rul",
    "historian-postgres",
    "scale-out",
)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bench(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(BENCHMARKS)}.")],
    quick: Annotated[bool, typer.Option(help="Small run, under a minute.")] = False,
) -> None:
    """Run a benchmark; its last output line is one JSON object.

    Options after NAME go to the benchmark itself, e.g. `shopfloor bench rul --data DIR`;
    `python -m benchmarks.NAME --help` lists them.
    """
    if name not in BENCHMARKS:
        _fail(ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}"))
    root = Path(__file__).resolve().parents[3]
    if (root / "benchmarks").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(f"benchmarks.{name.replace('-', '_')}")
    except ModuleNotFoundError:
        _fail(ValueError("benchmarks/ not found: run from a source checkout of Shopfloor"))
    module.main((["--quick"] if quick else []) + list(ctx.args))


if __name__ == "__main__":
    app()
