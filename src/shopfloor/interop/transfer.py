"""Bulk import and export of time-series data as CSV or Parquet files.

Import streams the file in chunks of ``chunk_rows`` rows (never the whole file in memory) and
sends every chunk down the same path as the HTTP ingest API: ``ingest.decode._columns``
validates it, ``Ingestor.to_batch`` resolves the signal names (auto-registering them when the
tenant allows it) and ``historian.write`` stores it durably. A chunk is all-or-nothing; when
one is rejected the chunks before it stay stored and the error says which rows to skip to
resume (``skip_rows``).

Two layouts are read:

- long (default): columns ``signal``, ``ts``, ``value`` and optional ``text`` and ``quality``,
  one point per row — the layout export writes;
- wide (``wide=True``): a ``ts`` column and one column per signal, as PLC and SCADA exports
  write them; an empty cell is a missing point, not a zero.

Export reads the historian signal by signal in time slices sized from the stored point counts
(``query_downsample`` counts per day), so memory stays bounded by ``slice_rows`` whatever the
density of the data, and writes ``signal, ts, value, text, quality`` rows with pyarrow's CSV or
Parquet (zstd) writers into ``<file>.part``, renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shopfloor.core.errors import BadInput, ShopfloorError
from shopfloor.core.timeutil import DAY_NS, check_range, parse_ts_column
from shopfloor.core.types import empty_batch
from shopfloor.ingest.decode import _columns, _device

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from shopfloor.api.platform import Platform
    from shopfloor.registry.service import TenantInfo

Format = Literal["csv", "parquet"]

#: Columns of the long layout; ``signal``, ``ts`` and ``value`` are required.
LONG_COLUMNS: Final = ("signal", "ts", "value", "text", "quality")
#: Names accepted for the time column (case-insensitive); the first listed is the canonical one.
TS_NAMES: Final = ("ts", "time", "timestamp")
#: Rows one export query may return; also the largest table held in memory while exporting.
SLICE_ROWS: Final = 1_000_000

EXPORT_SCHEMA: Final = pa.schema(
    [
        pa.field("signal", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ns", "UTC"), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("quality", pa.uint32(), nullable=False),
    ]
)
_CSV_SCHEMA: Final = EXPORT_SCHEMA.set(1, pa.field("ts", pa.string(), nullable=False))

_CSV_SUFFIXES: Final = {".csv": None, ".tsv": None}
_COMPRESSION: Final = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
_PARQUET_SUFFIXES: Final = (".parquet", ".pq")
_CSV_BLOCK_BYTES: Final = 4 << 20
_INDEX: Final = re.compile(r"at index (\d+)")


# ---------------------------------------------------------------------------------------------
# Reports and errors
# ---------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did. ``rows`` counts file rows read in this run (skipped rows excluded),
    ``points`` the points stored (differs from rows in the wide layout), ``signals`` the
    distinct signals written to, ``errors`` the message of the error that stopped the import
    (empty when it completed)."""

    rows: int = 0
    points: int = 0
    signals: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    skipped_rows: int = 0

    @property
    def resume_at(self) -> int:
        """The ``skip_rows`` that resumes after the last stored row."""
        return self.skipped_rows + self.rows


@dataclass
class ExportReport:
    rows: int = 0
    seconds: float = 0.0
    bytes: int = 0
    signals: int = 0


class ImportFailed(BadInput):
    """A chunk of the file was rejected; the chunks before it are stored.

    ``report`` holds what was stored; ``report.resume_at`` is the ``skip_rows`` to resume with
    once the file is fixed.
    """

    def __init__(self, message: str, report: ImportReport, first_row: int, last_row: int) -> None:
        super().__init__(message)
        self.report = report
        self.first_row = first_row
        self.last_row = last_row


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


def import_file(
    platform: Platform,
    tenant: TenantInfo,
    path: Path,
    *,
    fmt: Format | None = None,
    device: str | None = None,
    ts_unit: str = "ms",
    wide: bool = False,
    chunk_rows: int = 500_000,
    skip_rows: int = 0,
    delimiter: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a CSV or Parquet file of points into ``tenant``; returns once all is durable.

    ``fmt`` defaults to the suffix (``.csv``, ``.tsv``, ``.csv.gz``/``.zst``/``.bz2``,
    ``.parquet``, ``.pq``). ``device`` lets signal names be bare (``temp`` instead of
    ``press-01/temp``). ``ts_unit`` is the unit of epoch-number timestamps (s, ms, us, ns);
    RFC 3339 strings must carry an offset. ``skip_rows`` skips that many data rows (the header
    is not counted), to resume after an :class:`ImportFailed`. ``delimiter`` defaults to the
    one the CSV header uses among ``,`` ``;`` tab and ``|``.

    Raises BadInput for a missing file, an unknown suffix or missing columns before anything
    is stored, and :class:`ImportFailed` when a chunk is rejected (earlier chunks stay stored).
    """
    t0 = time.perf_counter()
    path = Path(path)
    kind, compression = _format_of(path, fmt)
    if not path.is_file():
        raise BadInput(f"no such file: {path}", "path")
    if chunk_rows < 1:
        raise BadInput("must be at least 1", "chunk_rows")
    if skip_rows < 0:
        raise BadInput("must not be negative", "skip_rows")
    dev = _device(device)
    if ts_unit not in ("s", "ms", "us", "ns"):
        raise BadInput(f"unknown unit {ts_unit!r}, use one of ms, ns, s, us", "ts_unit")
    if kind == "csv":
        source: _Source = _CsvSource(path, compression, delimiter, skip_rows)
    else:
        source = _ParquetSource(path, skip_rows)
    report = ImportReport(skipped_rows=skip_rows)
    with source:
        layout = _Layout.of(source.names, wide=wide, device=dev, path=path)
        task = None
        if progress is not None:
            task = progress.add_task(f"import {path.name}", total=source.total)
        _run_import(platform, tenant, path, source, layout, dev, ts_unit, chunk_rows, report,
                    progress, task)  # fmt: skip
    report.seconds = time.perf_counter() - t0
    return report


def _run_import(
    platform: Platform,
    tenant: TenantInfo,
    path: Path,
    source: _Source,
    layout: _Layout,
    device: str | None,
    ts_unit: str,
    chunk_rows: int,
    report: ImportReport,
    progress: Progress | None,
    task: TaskID | None,
) -> None:
    historian = platform.historian
    signal_ids: set[int] = set()
    pending: Any = None  # the future of the previous chunk's write: decode overlaps storing
    pending_rows = pending_points = 0
    first = report.skipped_rows  # 0-based index of the chunk's first data row in the file

    def settle() -> None:
        nonlocal pending
        if pending is not None:
            fut, pending = pending, None
            fut.result()
            report.rows += pending_rows
            report.points += pending_points

    def fail(rows: tuple[int, int], why: str) -> ImportFailed:
        report.signals = len(signal_ids)
        a, b = rows
        if report.rows:
            kept = (
                f"Rows {report.skipped_rows + 1:,}-{report.resume_at:,} are stored "
                f"({report.points:,} points)"
            )
        else:
            kept = "Nothing of this run is stored"
        if report.resume_at:
            kept += f"; fix the file and resume with --skip-rows {report.resume_at}"
        else:
            kept += "; fix the file and import it again"
        msg = f"{path}: rows {a:,}-{b:,} rejected, nothing of them stored: {why}. {kept}."
        report.errors.append(msg)
        return ImportFailed(msg, report, a, b)

    try:
        chunks = _rechunk(source.batches(), chunk_rows)
        while True:
            try:
                table = next(chunks)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as exc:
                settle()
                raise fail(
                    (first + 1, first + chunk_rows), f"cannot read the file: {exc}"
                ) from None
            n = table.num_rows
            try:
                batch = layout.batch(platform, tenant, table, device, ts_unit, first)
            except BadInput as exc:
                settle()
                raise fail((first + 1, first + n), str(exc)) from None
            settle()
            if batch.num_rows:
                sid = np.asarray(batch.column("signal_id"), dtype=np.int32)
                signal_ids.update(np.unique(sid).tolist())
                pending = historian.submit(batch)
            else:
                report.rows += n
            pending_rows, pending_points = (n, batch.num_rows) if batch.num_rows else (0, 0)
            first += n
            if progress is not None and task is not None:
                progress.update(task, completed=source.position())
        settle()
    except ShopfloorError as exc:
        if not isinstance(exc, ImportFailed):
            exc.add_note(f"{path}: {report.resume_at:,} rows up to here are stored")
        raise
    finally:
        report.signals = len(signal_ids)
    if progress is not None and task is not None:
        progress.update(task, completed=source.total)


def _format_of(path: Path, fmt: Format | None) -> tuple[Format, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    compression = _COMPRESSION.get(suffixes[-1]) if suffixes else None
    base = suffixes[-2] if compression and len(suffixes) > 1 else suffixes[-1] if suffixes else ""
    if fmt is None:
        if base in _CSV_SUFFIXES:
            return "csv", compression
        if base in _PARQUET_SUFFIXES and not compression:
            return "parquet", None
        raise BadInput(
            f"cannot tell the format of {path.name!r} from its suffix: use .csv (optionally "
            ".gz, .zst, .bz2), .tsv or .parquet, or name the format",
            "fmt",
        )
    if fmt not in ("csv", "parquet"):
        raise BadInput(f"unknown format {fmt!r}; use csv or parquet", "fmt")
    return fmt, compression if fmt == "csv" else None


def _rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup record batches of any size into tables of exactly ``rows`` rows (the last less)."""
    buf: list[pa.RecordBatch] = []
    have = 0
    for b in batches:
        if not b.num_rows:
            continue
        buf.append(b)
        have += b.num_rows
        while have >= rows:
            t = pa.Table.from_batches(buf)
            yield t.slice(0, rows)
            rest = t.slice(rows)
            buf, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(buf)


# -- sources ----------------------------------------------------------------------------------


class _Source:
    names: list[str]
    total: int  # bytes (CSV) or rows (Parquet), for progress

    def batches(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def position(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CsvSource(_Source):
    """Every column read as text: the ingest rules (not CSV type inference) decide the types."""

    def __init__(
        self, path: Path, compression: str | None, delimiter: str | None, skip_rows: int
    ) -> None:
        self.total = path.stat().st_size
        self._raw = pa.OSFile(str(path), "rb")
        self._read: list[pa.RecordBatch] = []
        try:
            stream = pa.CompressedInputStream(self._raw, compression) if compression else self._raw
            head = stream.read(1 << 16).split(b"\n", 1)[0].rstrip(b"\r")
            if not head.strip():
                raise BadInput(f"{path}: the file is empty or starts with an empty line", "path")
            delim = delimiter or _sniff_delimiter(head)
            if len(delim) != 1:
                raise BadInput("must be a single character", "delimiter")
            first = pacsv.open_csv(
                pa.BufferReader(head + b"\n"),
                read_options=pacsv.ReadOptions(block_size=1 << 16),
                parse_options=pacsv.ParseOptions(delimiter=delim),
            )
            self.names = list(first.schema.names)
        except (pa.ArrowInvalid, OSError) as exc:
            self._raw.close()
            raise BadInput(f"{path}: cannot read the CSV header: {exc}", "path") from None
        except BaseException:
            self._raw.close()
            raise
        self._raw.close()
        # Reopen from the start, every column as text (nulls for empty cells).
        self._raw = pa.OSFile(str(path), "rb")
        stream = pa.CompressedInputStream(self._raw, compression) if compression else self._raw
        self._reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                block_size=_CSV_BLOCK_BYTES, skip_rows_after_names=skip_rows
            ),
            parse_options=pacsv.ParseOptions(delimiter=delim),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in self.names},
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                null_values=[""],
            ),
        )

    def batches(self) -> Iterator[pa.RecordBatch]:
        yield from self._reader

    def position(self) -> int:
        return int(self._raw.tell())

    def close(self) -> None:
        self._reader.close()
        self._raw.close()


def _sniff_delimiter(head: bytes) -> str:
    line = head.split(b"\n", 1)[0]
    counts = {d: line.count(d.encode()) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _ParquetSource(_Source):
    def __init__(self, path: Path, skip_rows: int) -> None:
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BadInput(f"{path}: not a readable Parquet file: {exc}", "path") from None
        self.names = list(self._file.schema_arrow.names)
        self.total = self._file.metadata.num_rows
        self._skip = min(skip_rows, self.total)
        self._done = self._skip
        self.columns: list[str] | None = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        # Whole row groups before skip_rows are never read; the rest of the skip is sliced off.
        meta = self._file.metadata
        groups, before = [], 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if before + n <= self._skip:
                before += n
                continue
            groups.append(g)
        if not groups:
            return
        drop = self._skip - before
        for b in self._file.iter_batches(
            batch_size=65_536, row_groups=groups, columns=self.columns
        ):
            if drop:
                cut = min(drop, b.num_rows)
                b, drop = b.slice(cut), drop - cut
            self._done += b.num_rows
            yield b

    def position(self) -> int:
        return self._done

    def close(self) -> None:
        self._file.close()


# -- layouts ----------------------------------------------------------------------------------


@dataclass
class _Layout:
    wide: bool
    ts: str  # name of the time column in the file
    signals: list[str]  # wide: the signal columns
    has_text: bool = False
    has_quality: bool = False

    @classmethod
    def of(cls, names: list[str], *, wide: bool, device: str | None, path: Path) -> _Layout:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BadInput(f"{path}: duplicate column(s) {dupes}", "columns")
        ts_cols = [n for n in names if n.strip().lower() in TS_NAMES]
        if len(ts_cols) > 1 and "ts" in names:
            ts_cols = ["ts"]
        if len(ts_cols) != 1:
            what = "no" if not ts_cols else f"{len(ts_cols)} ({', '.join(ts_cols)})"
            raise BadInput(
                f"{path}: {what} time column; name exactly one column ts, time or timestamp "
                f"(columns: {', '.join(names)})",
                "ts",
            )
        ts = ts_cols[0]
        if wide:
            signals = [n for n in names if n != ts]
            if not signals:
                raise BadInput(
                    f"{path}: a wide file needs a column per signal besides {ts}", "columns"
                )
            bare = [n for n in signals if "/" not in n]
            if bare and device is None:
                raise BadInput(
                    f"{path}: column(s) {', '.join(bare[:5])}{' ...' if len(bare) > 5 else ''} "
                    "name no device: name columns device/signal or give a device",
                    "device",
                )
            return cls(True, ts, signals)
        missing = [c for c in ("signal", "value") if c not in names]
        if missing:
            raise BadInput(
                f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(names)}); "
                "a long file has signal, ts, value and optional text and quality columns, "
                "or import it as wide (a ts column plus one column per signal)",
                missing[0],
            )
        extra = [n for n in names if n not in LONG_COLUMNS and n != ts]
        if extra:
            raise BadInput(
                f"{path}: unknown column(s) {', '.join(extra)}; a long file has "
                f"{', '.join(LONG_COLUMNS)} (or import it as wide)",
                extra[0],
            )
        return cls(False, ts, [], "text" in names, "quality" in names)

    def batch(
        self,
        platform: Platform,
        tenant: TenantInfo,
        table: pa.Table,
        device: str | None,
        ts_unit: str,
        first: int,
    ) -> pa.Table:
        """Validate and resolve one chunk into a point batch (``first``: its first file row)."""
        if self.wide:
            return self._wide(platform, tenant, table, device, ts_unit, first)
        col = table.column
        try:
            ts = _ts_column(_chunk(col(self.ts)))
            value = _value_column(
                _chunk(col("value")), _chunk(col("text")) if self.has_text else None
            )
            quality = _quality_column(_chunk(col("quality"))) if self.has_quality else None
            cols = _columns(device, _chunk(col("signal")), ts, value, quality, ts_unit)
            return platform.ingestor.to_batch(tenant, cols)
        except BadInput as exc:
            raise _at_rows(exc, first, None, None) from None

    def _wide(
        self,
        platform: Platform,
        tenant: TenantInfo,
        table: pa.Table,
        device: str | None,
        ts_unit: str,
        first: int,
    ) -> pa.Table:
        try:
            raw_ts = _ts_column(_chunk(table.column(self.ts)))
            ts_ns = parse_ts_column(raw_ts, ts_unit, "ts")
            check_range(ts_ns, "ts")
        except BadInput as exc:
            raise _at_rows(exc, first, None, None) from None
        parts = []
        for name in self.signals:
            raw = _chunk(table.column(name))
            if raw.null_count == len(raw):
                continue
            values = _wide_values(raw)
            rows = np.flatnonzero(np.asarray(values.is_valid()))
            sig = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(rows), np.int32)), pa.array([name], pa.string())
            )
            try:
                cols = _columns(
                    device, sig, pa.array(ts_ns[rows]), values.take(pa.array(rows)), None, "ns"
                )
                parts.append(platform.ingestor.to_batch(tenant, cols))
            except BadInput as exc:
                raise _at_rows(exc, first, rows, name) from None
        if not parts:
            return empty_batch()
        return pa.concat_tables(parts)


def _chunk(c: pa.ChunkedArray) -> pa.Array:
    return c.combine_chunks() if c.num_chunks != 1 else c.chunk(0)


def _at_rows(
    exc: BadInput, first: int, rows: npt.NDArray[np.int64] | None, column: str | None
) -> BadInput:
    """Rewrite the ingest error's 'at index N' (within the chunk) into the file's row number."""

    def row(m: re.Match[str]) -> str:
        i = int(m.group(1))
        r = int(rows[i]) if rows is not None and i < len(rows) else i
        return f"in row {first + r + 1:,}"

    msg = _INDEX.sub(row, exc.message)
    where = exc.field if column is None else f"column {column!r}"
    return BadInput(msg, where)


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False)))[0])


def _is_text(a: pa.Array) -> bool:
    return bool(pa.types.is_string(a.type) or pa.types.is_large_string(a.type))


def _ts_column(a: pa.Array) -> pa.Array:
    """Text timestamps that are all epoch numbers become numbers; others stay RFC 3339 text."""
    if a.null_count:
        raise BadInput(f"timestamp missing (null) at index {_first(a.is_null())}", "ts")
    if not _is_text(a):
        return a
    numeric = _numeric(a)
    if numeric is not None:
        return numeric
    looks = pc.match_substring_regex(a, r"^\s*[+-]?\d+(\.\d*)?\s*$")
    if pc.any(looks).as_py() and not pc.all(looks).as_py():
        raise BadInput(
            f"timestamps mix epoch numbers (at index {_first(looks)}) and RFC 3339 text "
            f"(at index {_first(pc.invert(looks))}); use one form",
            "ts",
        )
    return a


def _numeric(a: pa.Array) -> pa.Array | None:
    """Text parsed as int64 or float64 (nulls kept), or None when any entry is not a number."""
    probe = a.slice(0, 64)
    for t in (pa.int64(), pa.float64()):
        try:
            # A failing cast of a whole column costs ~30x a passing one: probe the head first.
            pc.cast(probe, t)
            return pc.cast(a, t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def _boolean(a: pa.Array) -> pa.Array | None:
    low = pc.utf8_lower(pc.utf8_trim_whitespace(a))
    if pc.all(pc.is_in(low, pa.array(["true", "false"]))).as_py():
        return pc.equal(low, "true")
    return None


def _wide_values(a: pa.Array) -> pa.Array:
    """A wide column: numbers, or true/false, or else text throughout."""
    if not _is_text(a):
        return a
    parsed = _numeric(a)
    if parsed is None:
        parsed = _boolean(a)
    return a if parsed is None else parsed


def _value_column(value: pa.Array, text: pa.Array | None) -> Any:
    """The ``value`` column (plus export's ``text`` column) as the ingest decoder takes it."""
    if _is_text(value):
        parsed = _numeric(value)
        if parsed is None:
            parsed = _boolean(value)
        if parsed is None:
            parsed = _mixed(value)
    else:
        parsed = value
    if text is None or text.null_count == len(text):
        return parsed
    if not _is_text(text):
        raise BadInput(f"text must be strings, not {text.type}", "text")
    if isinstance(parsed, pa.Array):
        both = pc.and_(parsed.is_valid(), text.is_valid())
        if pc.any(both).as_py():
            raise BadInput(
                f"point at index {_first(both)} has both a value and a text; give one", "text"
            )
        if parsed.null_count == len(parsed):
            return text
        parsed = parsed.to_pylist()
    # Numbers and text in one chunk: the decoder's mixed path classifies point by point.
    return [v if v is not None else t for v, t in zip(parsed, text.to_pylist(), strict=True)]


def _mixed(a: pa.Array) -> list[Any]:
    """Text cells of a long file mixing numeric and text signals: numbers where they parse."""
    out: list[Any] = []
    for s in a.to_pylist():
        if s is None:
            out.append(None)
            continue
        try:
            out.append(float(s) if any(c in s for c in ".eEnN") else int(s))
        except ValueError:
            out.append(s)
    return out


def _quality_column(a: pa.Array) -> pa.Array:
    parsed = _numeric(a) if _is_text(a) else None
    return a if parsed is None else parsed


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def export_file(
    platform: Platform,
    tenant: TenantInfo,
    path: Path,
    *,
    signals: Sequence[str] | None = None,
    start: int,
    end: int,
    fmt: Format | None = None,
    progress: Progress | None = None,
    slice_rows: int = SLICE_ROWS,
) -> ExportReport:
    """Write the points of ``signals`` ("device/signal" keys; None = all the tenant's signals)
    in ``[start, end)`` (int ns UTC) to a CSV or Parquet file, ordered by signal then time.

    Columns: signal, ts (RFC 3339 UTC in CSV, timestamp[ns, UTC] in Parquet), value (null for
    text points), text (null for numeric points), quality (OPC UA status code). The file
    imports back unchanged with :func:`import_file`. It is written to ``<path>.part`` and
    renamed into place once complete, so a failed export leaves no partial file behind.
    """
    t0 = time.perf_counter()
    path = Path(path)
    kind, compression = _format_of(path, fmt)
    if end <= start:
        raise BadInput("end must be after start", "end")
    if slice_rows < 1:
        raise BadInput("must be at least 1", "slice_rows")
    if signals is None:
        infos = platform.registry.list_signals(tenant.id)
        keys = [s.key for s in infos]
        ids = [s.id for s in infos]
    else:
        keys = list(dict.fromkeys(signals))
        ids = platform.registry.resolve_keys(tenant.id, keys).tolist()
    if not path.parent.is_dir():
        raise BadInput(f"no such folder: {path.parent}", "path")
    report = ExportReport()
    task = None
    if progress is not None:
        task = progress.add_task(f"export {path.name}", total=len(ids))
    part = path.with_name(path.name + ".part")
    writer = _Writer(part, kind, compression, slice_rows)
    try:
        reader = _Exporter(platform, tenant.id, dict(zip(ids, keys, strict=True)), start, end,
                           slice_rows)  # fmt: skip
        for table, done in reader.tables():
            writer.write(table)
            report.rows += table.num_rows
            if progress is not None and task is not None and done:
                progress.update(task, advance=done)
        writer.close()
        os.replace(part, path)
    except BaseException:
        writer.close()
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    report.signals = reader.nonempty
    report.bytes = path.stat().st_size
    report.seconds = time.perf_counter() - t0
    return report


class _Exporter:
    """Plans the queries: signals with few points share one query, busy ones are sliced by time.

    The plan comes from per-day point counts (``query_downsample(..., "count")``, served from
    rollups). Those leave out bad-quality points, so every query carries a row limit and, when
    one fills it, the rest is read from just after its last timestamp (keyset paging).
    """

    def __init__(
        self, platform: Platform, tenant_id: int, names: dict[int, str], start: int, end: int,
        slice_rows: int,
    ) -> None:  # fmt: skip
        self.h = platform.historian
        self.tenant_id = tenant_id
        self.names = names
        self.start, self.end = start, end
        self.slice_rows = slice_rows
        self.nonempty = 0
        self._ids = np.array(sorted(names), dtype=np.int64)
        self._keys = pa.array([names[int(i)] for i in self._ids], pa.string())

    def _day_counts(
        self, ids: list[int]
    ) -> dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
        counts = self.h.query_downsample(
            self.tenant_id, ids, self.start, self.end, DAY_NS, ["count"]
        )
        sid = np.asarray(counts.column("signal_id"), dtype=np.int64)
        bucket = np.asarray(counts.column("bucket"), dtype=np.int64)
        n = np.asarray(counts.column("count"), dtype=np.int64)
        cuts = np.flatnonzero(np.diff(sid)) + 1
        out = {}
        for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(sid)].tolist(), strict=True):
            if a < b:
                out[int(sid[a])] = (bucket[a:b], n[a:b])
        return out

    def tables(self) -> Iterator[tuple[pa.Table, int]]:
        """Tables in signal order, each with the number of signals it completes."""
        ids = list(self.names)
        step = 1000  # signals planned per count query
        for k in range(0, len(ids), step):
            part = ids[k : k + step]
            yield from self._plan(part, self._day_counts(part))

    def _plan(
        self, ids: list[int], counts: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]
    ) -> Iterator[tuple[pa.Table, int]]:
        group: list[int] = []
        group_rows = 0
        for sid in ids:
            buckets, n = counts.get(sid, (np.empty(0, np.int64), np.empty(0, np.int64)))
            total = int(n.sum())
            if total <= self.slice_rows // 2:
                if group and group_rows + total > self.slice_rows // 2:
                    yield from self._group(group)
                    group, group_rows = [], 0
                group.append(sid)
                group_rows += total
                continue
            if group:
                yield from self._group(group)
                group, group_rows = [], 0
            yield from self._sliced(sid, buckets, n)
        if group:
            yield from self._group(group)

    def _group(self, ids: list[int]) -> Iterator[tuple[pa.Table, int]]:
        raw = self.h.query_raw(self.tenant_id, ids, self.start, self.end, self.slice_rows)
        if raw.num_rows >= self.slice_rows:  # more than the counts said: go signal by signal
            for one in ids:
                had = False
                for table in self._keyset(one, self.start, self.end):
                    had = True
                    yield table, 0
                self.nonempty += had
                yield _EMPTY, 1
            return
        # query_raw orders by signal id; put the rows in the order the signals were asked for.
        sid = np.asarray(raw.column("signal_id"), dtype=np.int64)
        by_id = np.array(sorted(ids), np.int64)
        rank = np.empty(len(ids), np.int64)  # rank[j]: position asked of the j-th smallest id
        rank[np.searchsorted(by_id, np.array(ids, np.int64))] = np.arange(len(ids))
        row_rank = rank[np.searchsorted(by_id, sid)]
        if len(row_rank) and np.any(np.diff(row_rank) < 0):
            raw = raw.take(pa.array(np.argsort(row_rank, kind="stable")))
        self.nonempty += len(np.unique(sid))
        yield self._rows(raw), len(ids)

    def _sliced(
        self, sid: int, buckets: npt.NDArray[np.int64], n: npt.NDArray[np.int64]
    ) -> Iterator[tuple[pa.Table, int]]:
        """Time slices of about ``slice_rows // 2`` points each, from the day counts."""
        target = max(1, self.slice_rows // 2)
        edges: list[int] = [self.start]
        acc = 0
        for day, c in zip(buckets.tolist(), n.tolist(), strict=True):
            lo, hi = max(day, self.start), min(day + DAY_NS, self.end)
            if c > target:  # one busy day: split it evenly
                if acc:
                    edges.append(lo)
                    acc = 0
                pieces = math.ceil(c / target)
                width = max(1, (hi - lo) // pieces)
                edges.extend(t for t in range(lo + width, hi, width))
                edges.append(hi)
                continue
            if acc + c > target:
                edges.append(lo)
                acc = 0
            acc += c
        edges.append(self.end)
        edges = sorted(set(e for e in edges if self.start <= e <= self.end))
        had = False
        for a, b in itertools.pairwise(edges):
            for table in self._keyset(sid, a, b):
                had = True
                yield table, 0
        self.nonempty += had
        yield _EMPTY, 1

    def _keyset(self, sid: int, start: int, end: int) -> Iterator[pa.Table]:
        t = start
        while t < end:
            raw = self.h.query_raw(self.tenant_id, [sid], t, end, self.slice_rows)
            if raw.num_rows:
                yield self._rows(raw)
            if raw.num_rows < self.slice_rows:
                return
            t = int(raw.column("ts")[-1].as_py()) + 1

    def _rows(self, raw: pa.Table) -> pa.Table:
        sid = np.asarray(raw.column("signal_id"), dtype=np.int64)
        return pa.Table.from_arrays(
            [
                self._keys.take(pa.array(np.searchsorted(self._ids, sid))),
                raw.column("ts").cast(pa.timestamp("ns", "UTC")),
                raw.column("value"),
                raw.column("text"),
                raw.column("quality"),
            ],
            schema=EXPORT_SCHEMA,
        )


_EMPTY: Final = EXPORT_SCHEMA.empty_table()


class _Writer:
    """CSV or Parquet output; small tables are gathered so Parquet row groups stay large."""

    def __init__(self, path: Path, kind: Format, compression: str | None, rows: int) -> None:
        self.kind = kind
        self.rows = rows
        self.buf: list[pa.Table] = []
        self.have = 0
        self.closed = False
        self._pq: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._sink: Any = None
        if kind == "parquet":
            self._pq = pq.ParquetWriter(path, EXPORT_SCHEMA, compression="zstd")
        else:
            raw = pa.OSFile(str(path), "wb")
            self._sink = pa.CompressedOutputStream(raw, compression) if compression else raw
            self._csv = pacsv.CSVWriter(self._sink, _CSV_SCHEMA)

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.buf.append(table)
        self.have += table.num_rows
        if self.have >= self.rows:
            self._flush()

    def _flush(self) -> None:
        if not self.buf:
            return
        table = pa.concat_tables(self.buf)
        self.buf, self.have = [], 0
        if self._pq is not None:
            self._pq.write_table(table, row_group_size=max(self.rows, table.num_rows))
        elif self._csv is not None:
            self._csv.write_table(table.set_column(1, "ts", rfc3339(table.column("ts"))))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._flush()
        finally:
            if self._pq is not None:
                self._pq.close()
            if self._csv is not None:
                self._csv.close()
                self._sink.close()


def rfc3339(ts: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Timestamps as RFC 3339 UTC text, to the coarsest of s/ms/us/ns that loses nothing.

    Arrow's own timestamp-with-zone to text cast runs ~10x slower (it looks up the zone per
    value), so this formats naive UTC and appends the 'Z'.
    """
    arr = ts.combine_chunks() if isinstance(ts, pa.ChunkedArray) else ts
    ns = np.asarray(arr.cast(pa.int64()), dtype=np.int64)
    unit = "ns"
    for u, f in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if not np.any(ns % f):
            unit = u
            break
    naive = pa.array(ns // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]).cast(
        pa.timestamp(unit)
    )
    text = pc.replace_substring(pc.cast(naive, pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "")
