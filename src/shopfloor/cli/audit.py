"""``shopfloor audit``: verify the sealed chain, purge past retention, export, show records.

Works on the registry directly (like ``shopfloor device``), so it runs while the platform
serves. The audit key is read like the server reads it (setting ``audit_key_file``, default
``<data_dir>/audit.key``); ``verify --key-file`` names another copy. Purge and export are recorded in the audit log with the actor ``cli:<os user>``.
Exit codes: 0 intact / done, 1 damage found by ``verify``, 2 usage or setup errors.
Heavy modules are imported inside the commands, to keep ``shopfloor --help`` fast.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from shopfloor.security.audit import AuditFilter, AuditLog

app = typer.Typer(
    help=(
        "The sealed, hash-chained audit log: verify it, purge records past retention, export "
        "it for auditors.\n\nExample: shopfloor audit verify -d shopfloor-data"
    ),
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-d", help="Folder holding all platform data.", envvar="SHOPFLOOR_DATA_DIR"
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Platform settings YAML.", exists=True, dir_okay=False),
]
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Only this tenant's records.")
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From: RFC 3339, epoch ms or '-30d'.")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Up to (exclusive).")]
KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        "-k",
        help="The audit key (default: setting audit_key_file, else <data dir>/audit.key).",
        dir_okay=False,
    ),
]


def _fail(exc: Exception | str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(2)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextmanager
def _open(
    data_dir: Path | None, config: Path | None, key_file: Path | None = None
) -> Iterator[AuditLog]:
    from shopfloor.core.config import load_settings
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.registry.service import Registry
    from shopfloor.security.audit import AuditLog

    try:
        settings = load_settings(config, data_dir=data_dir, audit_key_file=key_file)
        registry = Registry(settings.resolved_registry_url())
    except ShopfloorError as exc:
        _fail(exc)
    try:
        registry.upgrade()
        try:
            yield AuditLog(registry, settings)
        except ShopfloorError as exc:
            _fail(exc)
    finally:
        registry.close()


def _filter(
    audit: AuditLog, tenant: str | None, since: str | None, until: str | None
) -> AuditFilter:
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.core.timeutil import parse_instant
    from shopfloor.security.audit import AuditFilter

    tenant_id = None
    if tenant is not None:
        try:
            tenant_id = audit.registry.get_tenant(tenant).id
        except ShopfloorError:
            names = ", ".join(t.name for t in audit.registry.list_tenants()) or "none yet"
            _fail(f"no tenant {tenant!r} (tenants: {names})")
    return AuditFilter(
        tenant_id=tenant_id,
        all_tenants=tenant_id is None,
        since_ns=parse_instant(since, "since") if since else None,
        until_ns=parse_instant(until, "until") if until else None,
    )


@app.command()
def verify(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    export_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Verify an export (.jsonl or .csv of the whole platform) instead of the log.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    key_file: KeyFile = None,
) -> None:
    """Check the whole sealed chain and the head witness; exit 1 on any damage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from shopfloor.security.audit import VerifyResult, read_export, verify_export

    result: VerifyResult
    if export_file is not None:
        key = _export_key(data_dir, config, key_file)
        try:
            result = verify_export(read_export(export_file), key)
        except (ValueError, KeyError, TypeError) as exc:
            _fail(f"{export_file} is not an audit export: {exc}")
    else:
        with (
            _open(data_dir, config, key_file) as audit,
            Progress(
                TextColumn("verifying"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                transient=True,
            ) as bar,
        ):
            task = bar.add_task("verify", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = audit.verify(progress)
    span = f"records {result.first_seq}..{result.last_seq}" if result.checked else "no records"
    if result.ok:
        colour = "yellow" if result.unwitnessed else "green"
        console.print(
            f"[{colour}]{escape(result.message)}[/{colour}] ({result.checked} checked, {span})"
        )
        return
    where = "" if result.bad_seq is None else f" at seq {result.bad_seq}"
    console.print(
        f"[red]audit log damaged{where}[/red] ({result.kind}): "
        f"{escape(result.message)}; {result.checked} records before it verified"
    )
    raise typer.Exit(1)


def _export_key(data_dir: Path | None, config: Path | None, key_file: Path | None) -> bytes:
    """The key an export is checked with: --key-file, else the one the settings name."""
    from shopfloor.core.config import load_settings
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.security.audit import audit_key_path, read_key

    try:
        settings = load_settings(config, data_dir=data_dir, audit_key_file=key_file)
        path = audit_key_path(settings)
        key = read_key(path)
    except ShopfloorError as exc:
        _fail(exc)
    if key is None:
        _fail(f"no audit key at {path} (setting audit_key_file): pass --key-file")
    return key


@app.command()
def purge(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Remove records older than the retention now (the server also does it daily)."""
    with _open(data_dir, config) as audit:
        result = audit.purge(actor=_actor(), source="cli")
    if result.removed:
        console.print(
            f"removed {result.removed} record(s) up to seq {result.up_to_seq} "
            f"(retention {result.retention_days} days); the chain stays verifiable"
        )
    else:
        console.print(f"nothing older than {result.retention_days} days")


@app.command()
def export(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="File to write.", dir_okay=False)],
    fmt: Annotated[
        Literal["jsonl", "csv"], typer.Option("--format", help="jsonl or csv.")
    ] = "jsonl",
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Write records with their hashes (an unfiltered export verifies with `verify --file`)."""
    import csv
    import json

    from shopfloor.security.audit import EXPORT_FIELDS, canonical_json

    with _open(data_dir, config) as audit:
        flt = _filter(audit, tenant, since, until)
        audit.record(
            "audit.export",
            f"file={out_file.name}",
            "ok",
            actor=_actor(),
            role="platform_admin",
            tenant_id=flt.tenant_id,
            source="cli",
            details={"format": fmt, "scope": "tenant" if tenant else "platform"},
        )
        count = 0
        with out_file.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n") if fmt == "csv" else None
            if writer:
                writer.writerow(EXPORT_FIELDS)
            for e in audit.iter_records(flt):
                row = e.as_dict()
                if writer:
                    row["details"] = canonical_json(row["details"])
                    row["tenant_id"] = "" if row["tenant_id"] is None else row["tenant_id"]
                    writer.writerow([row[f] for f in EXPORT_FIELDS])
                else:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    console.print(f"wrote {count} record(s) to {escape(str(out_file))}")


@app.command()
def show(
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Newest N records.")] = 20,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Print the newest records as a table."""
    from rich.table import Table

    from shopfloor.core.timeutil import to_iso

    with _open(data_dir, config) as audit:
        flt = _filter(audit, tenant, since, until)
        entries = audit.newest(flt, limit)
    table = Table("seq", "time", "actor", "role", "tenant", "action", "object", "outcome", "source")
    for e in entries:
        table.add_row(
            str(e.seq),
            to_iso(e.ts_ns),
            escape(e.actor),
            escape(e.role),
            "-" if e.tenant_id is None else str(e.tenant_id),
            escape(e.action),
            escape(e.object),
            e.outcome,
            escape(e.source),
        )
    out.print(table)
