"""``shopfloor edge``: run, check and watch an edge gateway.

Imports only the gateway (``shopfloor.edge``), never the platform, so it starts fast on a small
box that has only ``pip install shopfloor[edge]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.table import Table

from shopfloor.edge.config import EdgeConfig, EdgeConfigError, load_edge_config

app = typer.Typer(
    help=(
        "Run and watch an edge gateway: connectors -> durable buffer -> platform.\n\n"
        "Example: shopfloor edge check --config edge.yaml && shopfloor edge run --config edge.yaml"
    ),
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()

Config = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="The gateway's edge.yaml (see docs/edge.md).", dir_okay=False
    ),
]
STALE_S = 5.0  # a status file older than this: the gateway is probably not running


def _fail(message: str, code: int = 2) -> NoReturn:
    # Plain text: no wrapping, so "file:line: field: message" stays on one line for grep.
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(path: Path) -> EdgeConfig:
    try:
        return load_edge_config(path)
    except EdgeConfigError as exc:
        _fail(str(exc))


@app.command()
def run(
    config: Config,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the gateway until Ctrl-C (or SIGTERM).

    Example: shopfloor edge run --config /etc/shopfloor/edge.yaml
    """
    from rich.logging import RichHandler

    from shopfloor.edge.runtime import run_gateway

    cfg = _load(config)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, rich_tracebacks=True, show_path=False)],
        force=True,
    )
    console.print(
        f"gateway [bold]{cfg.name}[/bold]: {len(cfg.connectors)} connector(s), "
        f"uplink {cfg.uplink.type}, data in {cfg.data_dir}; Ctrl-C stops",
        highlight=False,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C during shutdown
            asyncio.run(run_gateway(cfg))
    except (OSError, RuntimeError) as exc:  # metrics port taken, buffer locked, disk problem
        _fail(f"the gateway could not run: {type(exc).__name__}: {exc}", 1)


@app.command()
def check(config: Config) -> None:
    """Validate edge.yaml (and every connector section) without starting anything.

    Exits 2 and names file, line and field of every problem.
    Example: shopfloor edge check --config edge.yaml
    """
    cfg = _load(config)
    print(f"{config}: OK, gateway {cfg.name!r}")
    print(f"  uplink: {cfg.uplink.type}")
    b = cfg.buffer
    print(
        f"  buffer: {cfg.data_dir / 'buffer'}, {_size(b.max_bytes)}, "
        f"max age {_duration(b.max_age)}, when full {b.when_full}, fsync {b.fsync}"
    )
    for c in cfg.connectors:
        print(f"  connector {c.name!r}: {c.type}")


def _status_doc(config: Path | None, status_file: Path | None) -> tuple[Path, dict[str, Any]]:
    if status_file is None:
        if config is None:
            _fail("give --config edge.yaml or --status-file FILE")
        status_file = _load(config).status_file
    from shopfloor.edge.status import read_status

    try:
        return status_file, read_status(status_file)
    except FileNotFoundError:
        _fail(f"no status file {status_file}: has the gateway run yet?", 1)
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {status_file}: {exc}", 1)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


_SYNC_COLOUR = {"in_sync": "green", "pending": "yellow", "error": "red"}


def _remote_line(remote: dict[str, Any]) -> str:
    """``version 3 (platform: 4), pending`` with the error or the poll failure, if any."""
    sync = str(remote.get("sync"))
    colour = _SYNC_COLOUR.get(sync, "yellow")
    applied, seen = remote.get("applied_version"), remote.get("seen_version")
    text = f"version {applied}" + (f" (platform: {seen})" if seen != applied else "")
    text += f", [{colour}]{sync}[/{colour}]"
    if remote.get("error"):
        text += f": {remote['error']}"
    elif remote.get("last_poll_error"):
        text += f" (polling fails: {remote['last_poll_error']})"
    return text


@app.command()
def status(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="The gateway's edge.yaml.", dir_okay=False)
    ] = None,
    status_file: Annotated[
        Path | None, typer.Option("--status-file", help="Read this status file instead.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status JSON.")] = False,
) -> None:
    """Show buffer depth, oldest age, drops, uplink and per-device health.

    Reads the status file the running gateway rewrites every second.
    Example: shopfloor edge status --config edge.yaml
    """
    _, doc = _status_doc(config, status_file)
    age = time.time() - doc.get("written_at_ns", 0) / 1e9
    if as_json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    buf, up = doc.get("buffer", {}), doc.get("uplink", {})
    state = doc.get("state", "running")
    if state == "running" and age > STALE_S:
        state = f"not running? (status {age:.0f} s old)"
    t = Table(title=f"gateway {doc.get('gateway')} — {state}", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row(
        "buffer depth", f"{buf.get('depth_points', 0):,} points, {_size(buf.get('depth_bytes', 0))}"
    )
    t.add_row("oldest undelivered", _duration(buf.get("oldest_age_s")))
    t.add_row("dropped", f"{buf.get('dropped_points', 0):,} points")
    conn = "[green]connected[/green]" if up.get("connected") else "[red]not connected[/red]"
    t.add_row(
        "uplink",
        f"{up.get('type')}: {conn}" + (f" ({up['last_error']})" if up.get("last_error") else ""),
    )
    rates = doc.get("rates", {})
    t.add_row(
        "points/s",
        f"in {rates.get('points_in_per_s', 0):,.0f}, out {rates.get('points_out_per_s', 0):,.0f}",
    )
    quarantined = (up.get("details") or {}).get("quarantined_points", 0)
    if quarantined:
        t.add_row("refused by platform", f"[red]{quarantined:,} points[/red] (see quarantine/)")
    remote = doc.get("remote")
    if isinstance(remote, dict):
        t.add_row("remote config", _remote_line(remote))
    out.print(t)
    d = Table(title="devices")
    for col in ("connector", "device", "health", "failed polls", "last error"):
        d.add_column(col)
    for name, c in sorted(doc.get("connectors", {}).items()):
        devices = _devices(c)
        if not devices:
            health = "[green]running[/green]" if c.get("running") else "[red]stopped[/red]"
            d.add_row(name, "-", health, "-", str(c.get("last_error") or ""))
        for dev, st in sorted(devices.items()):
            if "connected" in st:
                health = "[green]ok[/green]" if st["connected"] else "[red]failing[/red]"
            else:  # the connector reports no per-device health: say what is known
                health = (
                    "[green]running[/green]" if c.get("running") else "[yellow]stopped[/yellow]"
                )
            fails = st.get("failed_total", st.get("failures", ""))
            d.add_row(name, dev, health, str(fails), str(st.get("last_error") or ""))
    out.print(d)


def _devices(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    st = c.get("status") or {}
    devices = st.get("devices", st) if isinstance(st, dict) else {}
    found = {str(k): v for k, v in devices.items() if isinstance(v, dict)}
    for dev in c.get("devices", []):  # seen in readings but not in status()
        found.setdefault(dev, {})
    return found


@app.command()
def estimate(
    config: Config,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Points per second; default the gateway's current rate."),
    ] = None,
) -> None:
    """How long a platform outage the buffer covers before it has to drop data.

    Example: shopfloor edge estimate --config edge.yaml --rate 5000
    """
    from shopfloor.edge.status import DEFAULT_BYTES_PER_POINT, outage_estimate_s, read_status

    cfg = _load(config)
    try:
        doc = read_status(cfg.status_file)
    except (OSError, ValueError):
        doc = {}
    buf = dict(doc.get("buffer") or {})
    buf.setdefault("max_bytes", cfg.buffer.max_bytes)
    buf.setdefault("max_age_s", cfg.buffer.max_age)
    buf.setdefault("depth_bytes", 0)
    buf.setdefault("depth_points", 0)
    if rate is None:
        if not doc:
            _fail(f"no status file {cfg.status_file}: run the gateway or give --rate", 1)
        rate = float(doc.get("rates", {}).get("points_in_per_s", 0.0))
    bpp = float(buf.get("bytes_per_point") or DEFAULT_BYTES_PER_POINT)
    seconds = outage_estimate_s(buf, rate, bpp)
    limit = "max_age" if seconds >= float(buf["max_age_s"]) - 1e-6 else "disk"
    print(
        f"at {rate:,.0f} points/s and {bpp:.1f} bytes/point the buffer covers an outage of "
        f"{_duration(seconds)} (limited by {limit}; {_size(buf['max_bytes'])}, "
        f"max age {_duration(float(buf['max_age_s']))})"
    )


@app.command()
def browse(
    url: Annotated[str, typer.Argument(help="OPC UA endpoint, e.g. opc.tcp://10.0.0.5:4840")],
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the YAML here instead of stdout.")
    ] = None,
) -> None:
    """Browse an OPC UA server and print a connector section for edge.yaml.

    Example: shopfloor edge browse opc.tcp://127.0.0.1:4840 --out opcua.yaml
    """
    try:
        from shopfloor.edge.connectors.opcua.browse import browse_to_yaml
    except ImportError as exc:
        _fail(f"the OPC UA connector is not installed ({exc}); pip install shopfloor[edge]")
    try:
        result = browse_to_yaml(url)
        text = asyncio.run(result) if asyncio.iscoroutine(result) else result
    except Exception as exc:
        _fail(f"browsing {url} failed: {type(exc).__name__}: {exc}", 1)
    if out_file is None:
        print(text)
    else:
        out_file.write_text(str(text))
        console.print(f"wrote {out_file}")
