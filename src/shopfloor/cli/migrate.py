"""``shopfloor migrate``: copy an embedded deployment (SQLite + DuckDB) into PostgreSQL.

The source is read, never written: the registry through SQLAlchemy, the historian through its
own backend (which takes DuckDB's file lock, so a platform still serving the folder is found
out). The target registry is migrated with Alembic first and must hold nothing but what the
migrations themselves insert; the target historian must hold no points.

1. Registry: every table, parents before children, rows with their ids, in one transaction;
   then every id sequence is set past the highest id the source ever gave out (SQLite's
   AUTOINCREMENT counter included, so a deleted signal's id is not given again).
2. Historian: every signal's points, page by page through ``query_raw``, written in batches
   through the PostgreSQL backend (COPY), then compacted into blocks.
3. Verification, reading both sides back: rows and a checksum per table, points and a checksum
   over (signal, timestamp, value, text, quality) per tenant. Any difference exits with 1.

Heavy modules are imported inside the command so ``shopfloor --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable

from shopfloor.core.errors import ShopfloorError

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy import Connection, Engine, Table

    from shopfloor.core.config import Settings
    from shopfloor.historian.backend import HistorianBackend

console = Console(stderr=True, soft_wrap=True)

# Points written to PostgreSQL per COPY; two batches in flight keep reading and writing busy.
WRITE_BATCH: Final = 100_000
IN_FLIGHT: Final = 2
# Points read from the source per query (one signal at a time, the next page from the last
# timestamp on), so memory stays bounded however long a signal's history is.
READ_PAGE: Final = 200_000
ROW_CHUNK: Final = 5_000  # registry rows per INSERT round
# The whole time axis the historian accepts (int64 ns; the backends add an hour to the start).
START: Final = 0
END: Final = 2**63 - 1 - 2 * 3_600_000_000_000


class MigrateError(ShopfloorError):
    """The migration cannot start or could not finish; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------

_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
# Bit patterns standing for "no value" (a string point) and for any NaN, so a NaN's payload
# (which codecs need not keep) does not count as a difference.
_NULL_BITS: Final = np.uint64(0x7FF0_DEAD_BEEF_0001)
_NAN_BITS: Final = np.uint64(0x7FF8_0000_0000_0000)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: every input bit changes about half of the output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@dataclass
class PointSum:
    """Count and order-independent checksum of points: the sum (mod 2**64) of one 64-bit hash
    per point, so it does not depend on how the points were split into pages or batches."""

    points: int = 0
    checksum: int = 0

    def add(self, table: pa.Table) -> None:
        """Fold in a RAW_SCHEMA table (signal_id, ts, value, text, quality)."""
        n = table.num_rows
        if n == 0:
            return
        sid = table.column("signal_id").to_numpy().astype(np.uint64)
        ts = table.column("ts").to_numpy().astype(np.int64).view(np.uint64)
        values = table.column("value")
        v = values.fill_null(0.0).to_numpy().astype(np.float64)
        bits = v.view(np.uint64).copy()
        bits[np.isnan(v)] = _NAN_BITS
        if values.null_count:
            bits[values.is_null().to_numpy(zero_copy_only=False)] = _NULL_BITS
        quality = table.column("quality").to_numpy().astype(np.uint64)
        text = np.zeros(n, dtype=np.uint64)
        texts = table.column("text")
        if texts.null_count < n:  # string points are few; hash them one by one
            for i, s in enumerate(texts.to_pylist()):
                if s is not None:
                    text[i] = np.uint64(zlib.crc32(s.encode()) | (1 << 32))
        with np.errstate(over="ignore"):
            h = _mix(sid + np.uint64(1))
            for part in (ts, bits, quality, text):
                h = _mix(h ^ part)
            self.checksum = (self.checksum + int(h.sum(dtype=np.uint64))) % 2**64
        self.points += n


def _canonical(value: Any) -> Any:
    """A registry value as JSON the same way from SQLite and from PostgreSQL."""
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass
class TableCheck:
    table: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sum == self.target_sum


@dataclass
class TenantCheck:
    tenant: str
    signals: int
    source: PointSum
    target: PointSum

    @property
    def ok(self) -> bool:
        return (self.source.points, self.source.checksum) == (
            self.target.points,
            self.target.checksum,
        )


@dataclass
class Report:
    tables: list[TableCheck] = field(default_factory=list)
    tenants: list[TenantCheck] = field(default_factory=list)
    skipped_tables: list[str] = field(default_factory=list)
    registry_s: float = 0.0
    historian_s: float = 0.0
    compact_s: float = 0.0
    verify_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and all(t.ok for t in self.tenants)

    @property
    def points(self) -> int:
        return sum(t.source.points for t in self.tenants)

    def summary(self) -> dict[str, Any]:
        """The figures as one JSON-able object (the command's last line)."""
        rate = self.points / self.historian_s if self.historian_s else 0.0
        return {
            "ok": self.ok,
            "tables": len(self.tables),
            "rows": sum(t.source_rows for t in self.tables),
            "tenants": len(self.tenants),
            "points": self.points,
            "registry_s": round(self.registry_s, 3),
            "historian_s": round(self.historian_s, 3),
            "compact_s": round(self.compact_s, 3),
            "verify_s": round(self.verify_s, 3),
            "points_per_s": round(rate),
            "mismatches": [t.table for t in self.tables if not t.ok]
            + [t.tenant for t in self.tenants if not t.ok],
        }


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def _registry_tables(target: Connection) -> list[Table]:
    """The target's tables after its migration, parents first. The ORM's own Table objects
    where there is one (their types turn SQLite's naive timestamps into UTC); the reflected
    table for any other a migration created."""
    from sqlalchemy import MetaData

    from shopfloor.registry.models import Base
    from shopfloor.registry.service import VERSION_TABLE

    reflected = MetaData()
    reflected.reflect(target)
    ordered = [t for t in reflected.sorted_tables if t.name != VERSION_TABLE]
    return [Base.metadata.tables.get(t.name, t) for t in ordered]


def _migration_seeds() -> dict[str, int]:
    """Rows the migrations insert by themselves (a one-row state table, say), per table: a
    freshly migrated target holds these and still counts as empty."""
    from sqlalchemy import MetaData, func, select

    from shopfloor.registry.service import VERSION_TABLE, Registry

    scratch = Registry("sqlite://")
    try:
        scratch.upgrade()
        with scratch.engine.connect() as conn:
            meta = MetaData()
            meta.reflect(conn)
            counts = {
                t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0)
                for t in meta.sorted_tables
                if t.name != VERSION_TABLE
            }
    finally:
        scratch.close()
    return {name: n for name, n in counts.items() if n}


def _revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from shopfloor.registry.service import VERSION_TABLE

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    from shopfloor.registry.service import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _rows(conn: Connection, table: Table) -> Iterator[list[dict[str, Any]]]:
    from sqlalchemy import select

    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(yield_per=ROW_CHUNK).execute(select(table).order_by(*order))
    for part in result.mappings().partitions(ROW_CHUNK):
        yield [dict(r) for r in part]


def _table_sum(conn: Connection, table: Table) -> tuple[int, str]:
    digest = hashlib.sha256()
    n = 0
    names = [c.name for c in table.columns]
    for part in _rows(conn, table):
        for row in part:
            digest.update(json.dumps([_canonical(row[c]) for c in names]).encode())
            digest.update(b"\n")
        n += len(part)
    return n, digest.hexdigest()[:16]


def _check_target_registry(target: Connection, tables: list[Table], seeds: dict[str, int]) -> None:
    from sqlalchemy import func, select

    for table in tables:
        n = int(target.scalar(select(func.count()).select_from(table)) or 0)
        if n > seeds.get(table.name, 0):
            raise MigrateError(
                f"the target registry is not empty: table {table.name!r} holds {n} rows. "
                "migrate copies into a new, empty database only; create one "
                "(CREATE DATABASE shopfloor) and pass its URL"
            )


def _sqlite_sequences(source: Connection) -> dict[str, int]:
    """SQLite's AUTOINCREMENT counters: the highest id each such table ever gave out."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    try:
        rows = source.execute(text("SELECT name, seq FROM sqlite_sequence")).all()
    except OperationalError:  # no AUTOINCREMENT table was ever written to
        return {}
    return {str(name): int(seq) for name, seq in rows}


def _reset_sequences(target: Connection, tables: list[Table], floor: dict[str, int]) -> None:
    """Set each id sequence so the next id is above every copied one (explicit ids do not move
    a PostgreSQL sequence)."""
    from sqlalchemy import func, select, text

    for table in tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1:
            continue
        seq = target.scalar(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}
        )
        if seq is None:
            continue
        top = max(int(target.scalar(select(func.max(pk[0]))) or 0), floor.get(table.name, 0))
        # setval(seq, n, true): the next id is n + 1; with false: n itself (empty table).
        target.execute(
            text("SELECT setval(:s, :n, :called)"),
            {"s": seq, "n": max(top, 1), "called": top > 0},
        )


def copy_registry(
    source_url: str, target_url: str, report: Report, on_table: Callable[[str, int], None]
) -> None:
    """Migrate the target, check it is empty, copy every row in one transaction."""
    from sqlalchemy import delete, text
    from sqlalchemy.exc import SQLAlchemyError

    from shopfloor.registry.service import Registry

    src = Registry(source_url)
    head = _head()
    try:
        have = _revision(src.engine)
        if have != head:
            raise MigrateError(
                f"the source registry is at migration {have}, this Shopfloor expects {head}: "
                "start the platform on it once with this version (it migrates the registry), "
                "stop it, then run migrate again"
            )
        dst = Registry(target_url)
        try:
            try:
                dst.upgrade()
            except SQLAlchemyError as exc:
                raise MigrateError(f"cannot migrate the target registry: {exc}") from exc
            seeds = _migration_seeds()
            started = time.perf_counter()
            with src.engine.connect() as s, dst.engine.begin() as d:
                # Naive timestamps of tables without the ORM's UTC type are UTC, as stored.
                d.execute(text("SET LOCAL TIME ZONE 'UTC'"))
                tables = _registry_tables(d)
                _check_target_registry(d, tables, seeds)
                known = set(_source_tables(s))
                report.skipped_tables = sorted(
                    known - {t.name for t in tables} - {"sqlite_sequence", _version_table()}
                )
                for table in tables:
                    if table.name in seeds:  # the migration's own rows give way to the source's
                        d.execute(delete(table))
                    if table.name not in known:
                        on_table(table.name, 0)
                        continue
                    n = 0
                    for part in _rows(s, table):
                        d.execute(table.insert(), part)
                        n += len(part)
                    on_table(table.name, n)
                _reset_sequences(d, tables, _sqlite_sequences(s))
            report.registry_s = time.perf_counter() - started
            with src.engine.connect() as s, dst.engine.connect() as d:
                for table in tables:
                    if table.name not in known:
                        continue
                    sn, ssum = _table_sum(s, table)
                    tn, tsum = _table_sum(d, table)
                    report.tables.append(TableCheck(table.name, sn, tn, ssum, tsum))
        finally:
            dst.close()
    except SQLAlchemyError as exc:
        raise MigrateError(f"copying the registry failed: {exc}") from exc
    finally:
        src.close()


def _version_table() -> str:
    from shopfloor.registry.service import VERSION_TABLE

    return VERSION_TABLE


def _source_tables(conn: Connection) -> list[str]:
    from sqlalchemy import inspect

    return list(inspect(conn).get_table_names())


# ---------------------------------------------------------------------------------------------
# Historian
# ---------------------------------------------------------------------------------------------


def _pages(h: HistorianBackend, tenant_id: int, sid: int) -> Iterator[pa.Table]:
    """All points of one signal, oldest first, ``READ_PAGE`` at a time."""
    start = START
    while True:
        page = h.query_raw(tenant_id, [sid], start, END, limit=READ_PAGE)
        if page.num_rows:
            yield page
        if page.num_rows < READ_PAGE:
            return
        start = int(page.column("ts")[-1].as_py()) + 1


def _points_of(h: HistorianBackend, tenant_id: int, sids: list[int]) -> PointSum:
    total = PointSum()
    for sid in sids:
        for page in _pages(h, tenant_id, sid):
            total.add(page)
    return total


def copy_points(
    src: HistorianBackend,
    dst: HistorianBackend,
    tenant_id: int,
    sids: list[int],
    on_points: Callable[[int], None],
) -> PointSum:
    """Copy the tenant's points; returns what was read (the source side of the check)."""
    import pyarrow as pa

    from shopfloor.core.types import POINT_SCHEMA

    read = PointSum()
    pending: list[pa.Table] = []
    pending_rows = 0
    flying: list[tuple[Future[None], int]] = []

    def flush() -> None:
        nonlocal pending, pending_rows
        batch = pa.concat_tables(pending)
        tenant = pa.array(np.full(batch.num_rows, tenant_id, dtype=np.int32))
        table = pa.table(
            [tenant, *(batch.column(c) for c in ("signal_id", "ts", "value", "text", "quality"))],
            schema=POINT_SCHEMA,
        )
        flying.append((dst.submit(table), table.num_rows))
        pending, pending_rows = [], 0
        while len(flying) > IN_FLIGHT:
            done, n = flying.pop(0)
            done.result()
            on_points(n)

    for sid in sids:
        for page in _pages(src, tenant_id, sid):
            read.add(page)
            pending.append(page)
            pending_rows += page.num_rows
            if pending_rows >= WRITE_BATCH:
                flush()
    if pending:
        flush()
    for done, n in flying:
        done.result()
        on_points(n)
    return read


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def _source(settings: Settings) -> tuple[str, Path]:
    """The embedded deployment's registry URL and historian folder, checked to exist (opening
    a missing SQLite file or DuckDB folder would create an empty one)."""
    reg = settings.resolved_registry_url()
    if not reg.startswith("sqlite:///"):
        raise MigrateError(
            f"the source registry is {reg!r}; migrate copies an embedded deployment "
            "(registry_url unset or sqlite:///...)"
        )
    hist = settings.resolved_historian_url()
    scheme, _, rest = hist.partition("://")
    if scheme != "duckdb":
        raise MigrateError(
            f"the source historian is {hist!r}; migrate copies an embedded deployment "
            "(historian_url unset or duckdb:///...)"
        )
    folder = Path(rest[1:] if rest.startswith("/") else rest)
    db = Path(reg.removeprefix("sqlite:///"))
    if not db.is_file():
        raise MigrateError(f"no registry at {db}: is --data-dir the deployment's data folder?")
    if not (folder / "historian.duckdb").is_file():
        raise MigrateError(f"no historian at {folder}: is --data-dir the deployment's data folder?")
    return reg, folder


def _target_url(url: str, what: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise MigrateError(
            f"--to-{what} must be a PostgreSQL URL (postgresql://user@host/database), not {url!r}"
        )
    return url


def _open_source_historian(folder: Path) -> HistorianBackend:
    import duckdb

    from shopfloor.historian.duckdb_backend import DuckDBHistorian

    try:
        return DuckDBHistorian(folder, background=False)
    except duckdb.IOException as exc:
        raise MigrateError(
            f"the historian at {folder} is in use by another process ({exc}); stop the "
            "platform (shopfloor up / serve) on this data folder first"
        ) from None


def _open_target_historian(url: str) -> HistorianBackend:
    from shopfloor.historian.postgres_backend import PostgresHistorian

    try:
        return PostgresHistorian(url, background=False)
    except ShopfloorError as exc:
        raise MigrateError(str(exc)) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def run_migration(settings: Settings, to_registry: str, to_historian: str) -> Report:
    """Copy the embedded deployment of ``settings`` into the two PostgreSQL URLs."""
    from sqlalchemy import select

    from shopfloor.registry.models import Signal, Tenant
    from shopfloor.registry.service import Registry

    source_reg, folder = _source(settings)
    to_registry = _target_url(to_registry, "registry")
    to_historian = _target_url(to_historian, "historian")
    report = Report()
    # The historian first: its lock tells whether the platform still runs on the folder,
    # before anything is written anywhere.
    src_hist = _open_source_historian(folder)
    try:
        dst_hist = _open_target_historian(to_historian)
        try:
            stats = dst_hist.stats()
            held = int(stats.get("block_points", 0)) + int(stats.get("recent_points", 0))
            if held:
                raise MigrateError(
                    f"the target historian is not empty: it holds {held:,} points. migrate "
                    "copies into a new, empty database only"
                )
            with _progress() as progress:
                task = progress.add_task("registry tables", total=None, rate="")
                copy_registry(
                    source_reg,
                    to_registry,
                    report,
                    lambda name, n: progress.update(task, advance=1, rate=f"{name}: {n:,} rows"),
                )
                progress.update(task, total=len(report.tables), completed=len(report.tables))
            reg = Registry(source_reg)
            try:
                with reg.engine.connect() as conn:
                    tenants = conn.execute(select(Tenant.id, Tenant.name).order_by(Tenant.id)).all()
                    sids = {
                        int(t): [
                            int(i)
                            for i in conn.scalars(
                                select(Signal.id).where(Signal.tenant_id == t).order_by(Signal.id)
                            )
                        ]
                        for t, _ in tenants
                    }
            finally:
                reg.close()
            total = sum(src_hist.tenant_points(int(t)) for t, _ in tenants)
            started = time.perf_counter()
            sources: dict[int, PointSum] = {}
            with _progress() as progress:
                task = progress.add_task("points", total=total or None, rate="")

                copied = [0]

                def advance(n: int) -> None:
                    copied[0] += n
                    rate = copied[0] / max(time.perf_counter() - started, 1e-9)
                    progress.update(task, advance=n, rate=f"{rate:,.0f} points/s")

                for t, name in tenants:
                    progress.update(task, description=f"points of {name}")
                    sources[int(t)] = copy_points(src_hist, dst_hist, int(t), sids[int(t)], advance)
                progress.update(task, total=copied[0], completed=copied[0], description="points")
            report.historian_s = time.perf_counter() - started
            started = time.perf_counter()
            dst_hist.compact()  # what the server would do within minutes, done while we wait
            report.compact_s = time.perf_counter() - started
            started = time.perf_counter()
            for t, name in tenants:
                target = _points_of(dst_hist, int(t), sids[int(t)])
                report.tenants.append(TenantCheck(name, len(sids[int(t)]), sources[int(t)], target))
            report.verify_s = time.perf_counter() - started
        finally:
            dst_hist.close()
    finally:
        src_hist.close()
    return report


def print_report(report: Report, to_registry: str, to_historian: str) -> None:
    tables = RichTable(title="registry: rows per table", title_justify="left")
    for col in ("table", "source rows", "target rows", "checksum", "ok"):
        tables.add_column(col, justify="right" if "rows" in col else "left")
    for t in report.tables:
        same = t.source_sum == t.target_sum
        tables.add_row(
            t.table,
            f"{t.source_rows:,}",
            f"{t.target_rows:,}",
            t.source_sum if same else f"{t.source_sum} != {t.target_sum}",
            "yes" if t.ok else "[red]NO[/red]",
        )
    console.print(tables)
    tenants = RichTable(title="historian: points per tenant", title_justify="left")
    for col in ("tenant", "signals", "source points", "target points", "checksum", "ok"):
        tenants.add_column(col, justify="right" if "points" in col or col == "signals" else "left")
    for c in report.tenants:
        ssum, tsum = f"{c.source.checksum:016x}", f"{c.target.checksum:016x}"
        tenants.add_row(
            escape(c.tenant),
            f"{c.signals:,}",
            f"{c.source.points:,}",
            f"{c.target.points:,}",
            ssum if ssum == tsum else f"{ssum} != {tsum}",
            "yes" if c.ok else "[red]NO[/red]",
        )
    console.print(tenants)
    for name in report.skipped_tables:
        console.print(f"[yellow]not copied:[/yellow] table {name!r} is not a registry table")
    s = report.summary()
    console.print(
        f"{s['points']:,} points in {s['historian_s']:.1f} s ({s['points_per_s']:,} points/s), "
        f"{s['rows']:,} registry rows in {s['registry_s']:.1f} s, "
        f"compaction {s['compact_s']:.1f} s, verification {s['verify_s']:.1f} s"
    )
    if report.ok:
        console.print("[green]verified:[/green] every count and checksum matches.")
        console.print(
            "Use these settings from now on (keep the data folder: it holds admin.key, "
            "audit.key and the device CA):"
        )
        print(f"registry_url: {to_registry}")
        print(f"historian_url: {to_historian}")
    else:
        console.print(
            "[red]verification failed:[/red] "
            + ", ".join(s["mismatches"])
            + " differ; do not switch to the target"
        )
    print(json.dumps(s))


def migrate(
    to_registry: Annotated[
        str,
        typer.Option(
            "--to-registry", help="PostgreSQL URL of the new registry, e.g. postgresql://u@db/sf."
        ),
    ],
    to_historian: Annotated[
        str,
        typer.Option(
            "--to-historian", help="PostgreSQL URL of the new historian (may be the same)."
        ),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            "-d",
            help="The embedded deployment's data folder.",
            envvar="SHOPFLOOR_DATA_DIR",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Its YAML settings file.", exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Copy an embedded deployment (SQLite + DuckDB) into PostgreSQL and verify the copy.

    Stop the platform first; the source is not modified. Exit status 0: verified; 1: a count
    or checksum differs; 2: refused (a target not empty, the platform still running, a bad URL).

    Example: shopfloor migrate -d /var/lib/shopfloor
    --to-registry postgresql://sf@db/sf --to-historian postgresql://sf@db/sf
    """
    from shopfloor.core.config import load_settings

    try:
        settings = load_settings(config, data_dir=data_dir)
        report = run_migration(settings, to_registry, to_historian)
    except ShopfloorError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    print_report(report, to_registry, to_historian)
    if not report.ok:
        raise typer.Exit(1)
