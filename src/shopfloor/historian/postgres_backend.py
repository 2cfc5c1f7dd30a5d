"""The scale-out historian: recent points as rows in PostgreSQL, older ones in compressed blocks.

Tables (in the schema first on the connection's search_path):

- ``hist_recent``: one row per acknowledged point not yet compacted (tenant, signal, ts, value,
  text, quality, wseq), indexed on (tenant_id, signal_id, ts). ``wseq`` orders writes: each
  group commit draws one number from the sequence ``hist_batch`` and its rows get
  ``batch << 32 | row``, so of two rows with the same (signal, ts) the greater wseq won.
- ``hist_blocks``: one row per tenant, signal and hour, the same encoding and rollup columns as
  the DuckDB backend's blocks (historian.blocks / historian.codec), blobs as ``bytea``.
  Range-partitioned on ``chunk`` by calendar month (UTC), ``hist_blocks_pYYYYMM``, each
  created before the first block of its month is written (under the maintenance lock, in a
  short transaction of its own), plus ``hist_blocks_default`` for anything no month covers.
  Retention DROPs the months that hold only the tenant's rows; reads name the chunk range, so
  PostgreSQL prunes the other months. A plain ``hist_blocks`` of an older version is converted
  at open, in one transaction.

Writes: a writer thread groups what callers queued within one commit interval into one
transaction: ``nextval``, one binary ``COPY ... FROM STDIN`` built with numpy
(historian.postgres_copy), ``COMMIT``. A caller is answered only after that COMMIT returned,
and the writer's session has ``synchronous_commit`` on whatever the server's default: the
points are in the server's fsynced WAL (and a synchronous standby's, where one is configured).

Compaction (one at a time across every process on the database: a session advisory lock) runs
in one REPEATABLE READ transaction: read every recent row of its snapshot (columnar, see
historian.postgres_copy), merge them into the blocks of their hours (late points into stored hours too, newest write
wins), replace those blocks, ``DELETE`` the recent rows of the snapshot (rows committed
meanwhile are not in the snapshot and stay), COMMIT, then VACUUM the recent table and the
months touched. Its blocks' months must have partitions: when one is missing, the transaction
is rolled back before it wrote anything, the partition created and the compaction run again.

Reads run in REPEATABLE READ transactions, so blocks and recent rows come from one snapshot and
a concurrent compaction can neither hide a point nor show a stale one. Recent rows override
block points of the same (signal, ts).

Several processes on one database (docs/scale-out.md): after its commits the writer NOTIFYs
the channel ``shopfloor_latest_<schema hash>`` with each signal's newest point committed since
its last notification (numbers), or asks for a re-read (text): the first commit after a quiet
spell at once, then at most every ``notify_interval_s``, so that a busy writer pays for the
signals that changed, not for every commit. Only committed points are announced. Every other
process LISTENs on a connection of its own, in a thread, and folds them into its latest-value
cache: ``latest`` there is current within about ``notify_interval_s`` of the writer's commit. Background compaction takes the advisory lock with
``pg_try_advisory_lock``: when another process is compacting, this one skips its turn.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
from psycopg import sql

from shopfloor.core.errors import StorageError
from shopfloor.core.types import POINT_SCHEMA
from shopfloor.historian.aggregate import Partials
from shopfloor.historian.backend import RAW_SCHEMA, Aggregate, downsample_schema
from shopfloor.historian.blocks import (
    BLOCK_COLUMNS,
    CHUNK_NS,
    Points,
    chunk_runs,
    decode_block,
    encode_block,
)
from shopfloor.historian.duckdb_backend import _ids
from shopfloor.historian.group_commit import GroupCommitQueue, Waiter, settle
from shopfloor.historian.latest import LatestCache, newest_rows
from shopfloor.historian.postgres_copy import (
    READ_SELECT,
    RECENT_COLUMNS,
    decode_rows,
    encode_points,
)

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]
P = ParamSpec("P")
R = TypeVar("R")

_STOP: Final = object()
BACKPRESSURE_MAX_S: Final = 60.0
_PG_TYPES: Final = {
    "INTEGER": "int4",
    "BIGINT": "int8",
    "DOUBLE": "float8",
    "VARCHAR": "text",
    "UINTEGER": "int8",
    "BLOB": "bytea",
}
_BLOCK_NAMES: Final = [n for n, _ in BLOCK_COLUMNS]
_BLOCK_TYPES: Final = [_PG_TYPES[t] for _, t in BLOCK_COLUMNS]
_BLOCK_FETCH: Final = "signal_id, n, ts_blob, v_blob, vmask_blob, q_blob, text_blob"
_KEYS: Final = "unnest(%s::int4[], %s::int4[], %s::int8[])"

# NOTIFY payloads of the latest values: "<origin>v<base64 of records>" with one record per
# signal (its newest point of the commit), or "<origin>r<base64 of (tenant, signal) pairs>"
# for signals whose newest point is a text (read back from the tables). PostgreSQL takes
# payloads up to 8000 bytes: 200 records are 5,600 bytes, 7,468 in base64.
LATEST_RECORD: Final = np.dtype(
    [("tenant", "<i4"), ("sid", "<i4"), ("ts", "<i8"), ("value", "<f8"), ("quality", "<u4")]
)
_PAIR: Final = np.dtype([("tenant", "<i4"), ("sid", "<i4")])
NOTIFY_RECORDS: Final = 200
NOTIFY_PAIRS: Final = 700
_ORIGIN_LEN: Final = 16  # hex characters of the process's origin tag
LISTEN_POLL_S: Final = 0.5  # how often the listener thread looks at the stop flag
LISTEN_RETRY_S: Final = 1.0

_RECENT_SQL: Final = [
    "CREATE TABLE IF NOT EXISTS hist_recent ("
    "tenant_id int4 NOT NULL, signal_id int4 NOT NULL, ts int8 NOT NULL, value float8, "
    "text text, quality int4 NOT NULL, wseq int8 NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hist_recent_key ON hist_recent (tenant_id, signal_id, ts)",
    "CREATE SEQUENCE IF NOT EXISTS hist_batch",
]
# The blocks: range partitions by calendar month (UTC) on ``chunk``, created on demand
# (:meth:`PostgresHistorian._create_partitions`), and a DEFAULT partition that takes any row no
# monthly one covers, so that an insert can never fail for want of a partition. The primary key
# is declared on the parent: every partition gets it (it contains the partition key).
_BLOCKS_SQL: Final = [
    "CREATE TABLE hist_blocks ("
    + ", ".join(f"{n} {_PG_TYPES[t]}" for n, t in BLOCK_COLUMNS)
    + ", PRIMARY KEY (tenant_id, signal_id, chunk)) PARTITION BY RANGE (chunk)",
    # The blobs are zstd already: TOAST should store them out of line, not try pglz on them.
    # Set on the parent, it is copied to every partition created from it.
    *(
        f"ALTER TABLE hist_blocks ALTER COLUMN {n} SET STORAGE EXTERNAL"
        for n, t in BLOCK_COLUMNS
        if t == "BLOB"
    ),
]
_DEFAULT_PART: Final = "hist_blocks_default"
_DEFAULT_SQL: Final = f"CREATE TABLE IF NOT EXISTS {_DEFAULT_PART} PARTITION OF hist_blocks DEFAULT"
_OLD_BLOCKS: Final = "hist_blocks_unpartitioned"  # the old table while it is converted
# Each partition of hist_blocks with its bound ("FOR VALUES FROM (a) TO (b)" or "DEFAULT").
_PARTITIONS_SQL: Final = (
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('hist_blocks') "
    "ORDER BY c.relname"
)
_PARTITION_COUNT: Final = (
    "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = to_regclass('hist_blocks') "
    "AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'"
)
# A partitioned table has no storage of its own: its size is its partitions'.
_BLOCKS_BYTES: Final = (
    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::int8 "
    "FROM pg_partition_tree('hist_blocks')"
)
_BOUND: Final = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")
_PARTITION_TRIES: Final = 3


def _months(chunks: npt.NDArray[np.int64]) -> list[tuple[str, int, int]]:
    """(partition name, first ns, end ns) of each calendar month (UTC) the chunks fall in.
    A month starts on a whole hour, so an hour's chunk lies in exactly one month."""
    if not len(chunks):
        return []
    months = np.unique(np.asarray(chunks, dtype=np.int64).astype("datetime64[ns]").astype("M8[M]"))
    lo = months.astype("M8[ns]").astype(np.int64)
    hi = (months + 1).astype("M8[ns]").astype(np.int64)
    names = [f"hist_blocks_p{m.replace('-', '')}" for m in np.datetime_as_string(months)]
    return list(zip(names, lo.tolist(), hi.tolist(), strict=True))


class _NeedPartitions(Exception):
    """Blocks are about to go into months that have no partition yet: the transaction is
    rolled back, the caller creates them (:meth:`PostgresHistorian._create_partitions`, in
    short transactions of their own) and runs it again."""

    def __init__(self, months: list[tuple[str, int, int]]) -> None:
        super().__init__(", ".join(m[0] for m in months))
        self.months = months


class _Busy(Exception):
    """Another process holds the maintenance lock."""


class _ConnectionLost(StorageError):
    """A read failed on a connection that went away (e.g. the server restarted)."""


def _retry_read(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a read again, once, when its pooled connection turned out dead: after a server
    restart every idle connection fails once before the pool drops it."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _ConnectionLost:
            return fn(*args, **kwargs)

    return wrapper


class _Pool:
    """Connections for readers on any thread: take an idle one, or open one up to ``size``."""

    def __init__(self, url: str, size: int) -> None:
        self._url = url
        self._size = size
        self._idle: list[Conn] = []
        self._all: list[Conn] = []
        self._cond = threading.Condition()
        self._closed = False

    def open(self) -> Conn:
        con: Conn = psycopg.connect(self._url, autocommit=True)
        return con

    @contextlib.contextmanager
    def conn(self) -> Iterator[Conn]:
        with self._cond:
            while True:
                if self._closed:
                    raise StorageError("historian is closed")
                if self._idle:
                    con = self._idle.pop()
                    break
                if len(self._all) < self._size:
                    con = self.open()
                    self._all.append(con)
                    break
                self._cond.wait()
        try:
            yield con
        except BaseException:
            if con.closed or con.broken:
                with self._cond:
                    self._forget(con)
                raise
            with contextlib.suppress(psycopg.Error):
                con.rollback()
            self._give_back(con)
            raise
        self._give_back(con)

    def _give_back(self, con: Conn) -> None:
        with self._cond:
            if con.closed or con.broken or self._closed:
                self._forget(con)
            else:
                self._idle.append(con)
                self._cond.notify()

    def _forget(self, con: Conn) -> None:
        """Drop a dead connection (the caller holds the condition's lock)."""
        if con in self._all:
            self._all.remove(con)
        con.close()
        self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for con in self._all:
                con.close()
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()


def _newest_per_signal(table: str, columns: str, newest_first: str) -> str:
    """Per (tenant, signal) of ``table`` its newest row: a skip scan on the index that leads
    with (tenant_id, signal_id), one index probe per signal, so a start does not read every
    block ever stored (DISTINCT ON would)."""
    return f"""WITH RECURSIVE sig AS (
        (SELECT tenant_id, signal_id FROM {table} ORDER BY tenant_id, signal_id LIMIT 1)
        UNION ALL
        SELECT n.tenant_id, n.signal_id FROM sig, LATERAL (
            SELECT tenant_id, signal_id FROM {table} t
            WHERE (t.tenant_id, t.signal_id) > (sig.tenant_id, sig.signal_id)
            ORDER BY tenant_id, signal_id LIMIT 1) n
    )
    SELECT l.* FROM sig, LATERAL (
        SELECT tenant_id, signal_id, {columns} FROM {table} t
        WHERE t.tenant_id = sig.tenant_id AND t.signal_id = sig.signal_id
        ORDER BY {newest_first} LIMIT 1) l"""


def _recent_where(
    tenant_id: int, ids: list[int], start: int, end: int, cut: tuple[int, int] | None = None
) -> str:
    """A WHERE clause on hist_recent with the values inlined (all ints, checked here)."""
    id_list = ",".join(str(int(i)) for i in ids)
    where = (
        f"tenant_id = {int(tenant_id)} AND signal_id = ANY('{{{id_list}}}'::int4[]) "
        f"AND ts >= {int(start)} AND ts < {int(end)}"
    )
    if cut is not None:
        sid, chunk = int(cut[0]), int(cut[1])
        where += f" AND (signal_id < {sid} OR (signal_id = {sid} AND ts < {chunk + CHUNK_NS}))"
    return where


class PostgresHistorian(GroupCommitQueue):
    """HistorianBackend on PostgreSQL (see historian.backend for the contract)."""

    def __init__(
        self,
        url: str,
        *,
        commit_interval_ms: float = 10.0,
        hot_max_points: int = 2_000_000,
        compact_interval_s: float = 300.0,
        background: bool = True,
        pool_size: int = 8,
        notify: bool = True,
        listen: bool = True,
        notify_interval_s: float = 0.1,
    ) -> None:
        """``notify``: announce the newest points committed to other processes, at most
        every ``notify_interval_s``; ``listen``: follow theirs into :attr:`latest_cache`
        (a thread and one connection more)."""
        for prefix in ("postgresql+psycopg://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql://" + url[len(prefix) :]
        if not url.startswith("postgresql://"):
            raise StorageError(f"not a PostgreSQL URL: {url!r}")
        self.url = url
        self._commit_interval = commit_interval_ms / 1000.0
        self._hot_max = hot_max_points
        self._compact_interval = compact_interval_s
        self._pool = _Pool(url, pool_size)
        self._maint = threading.Lock()
        self._commits = 0
        self._points_written = 0
        self._since_compact = 0  # rows this process wrote since its last compaction
        self.latest_cache = LatestCache()
        self._state_lock = threading.Lock()
        self._closed = False
        self._notify = notify
        self._origin = secrets.token_hex(_ORIGIN_LEN // 2)
        self.notifications_applied = 0  # other processes' payloads folded into the cache
        self.notifications_sent = 0
        # The newest points committed and not yet announced: sent at most every
        # notify_interval_s, because PostgreSQL spends ~0.7 ms of server time per full
        # payload (200 signals); coalescing bounds that by signals changed per interval.
        self._unsent = LatestCache()
        self._unsent_any = False
        self._notify_interval = notify_interval_s
        self._last_notify = 0.0
        self._listen_con: Conn | None = None
        try:
            self._writer_con = self._open_writer()
            self._maint_con = self._pool.open()
            self._lock_key, self.timescaledb = self._setup()
            self.channel = f"shopfloor_latest_{self._lock_key & 0xFFFFFFFF:08x}"
            if listen:  # before the first load: a commit in between is then not missed
                self._listen_con = self._open_listener()
            self._load_latest()
        except (psycopg.Error, StorageError) as exc:
            for con in (
                getattr(self, "_writer_con", None),
                getattr(self, "_maint_con", None),
                self._listen_con,
            ):
                if con is not None:
                    con.close()
            self._pool.close()
            raise StorageError(f"cannot open the PostgreSQL historian: {exc}") from exc
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer = threading.Thread(
            target=self._write_loop, name="historian-pg-writer", daemon=True
        )
        self._writer.start()
        self._stop_maint = threading.Event()
        self._wake_maint = threading.Event()
        self._maint_thread: threading.Thread | None = None
        if background:
            self._maint_thread = threading.Thread(
                target=self._maint_loop, name="historian-pg-compactor", daemon=True
            )
            self._maint_thread.start()
        self._listen_thread: threading.Thread | None = None
        if listen:
            self._listen_thread = threading.Thread(
                target=self._listen_loop, name="historian-pg-listener", daemon=True
            )
            self._listen_thread.start()

    # ---- setup -------------------------------------------------------------------------------

    def _open_writer(self) -> Conn:
        con = self._pool.open()
        con.execute("SET synchronous_commit TO on")  # acknowledged = fsynced, always
        return con

    def _setup(self) -> tuple[int, bool]:
        con = self._maint_con
        row = con.execute(
            "SELECT hashtext(current_schema() || '.shopfloor_historian'), "
            "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        ).fetchone()
        assert row is not None
        key, timescale = int(row[0]), bool(row[1])
        with self._advisory(key), con.transaction():  # two processes starting at once
            for stmt in _RECENT_SQL:
                con.execute(stmt.encode())
            self._setup_blocks(con)
        if timescale:
            log.info("TimescaleDB is installed; the historian uses its own blocks, not hypertables")
        return key, timescale

    @staticmethod
    def _setup_blocks(con: Conn) -> None:
        """Create the partitioned blocks table, or convert one of the old, unpartitioned
        layout (in the caller's transaction: all of it or nothing)."""
        row = con.execute(
            "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('hist_blocks')"
        ).fetchone()
        kind = None if row is None else str(row[0])
        if kind is None:
            for stmt in _BLOCKS_SQL:
                con.execute(stmt.encode())
        elif kind == "r":
            PostgresHistorian._convert_blocks(con)
        elif kind != "p":
            raise StorageError(f"hist_blocks is not a table (relkind {kind!r})")
        con.execute(_DEFAULT_SQL.encode())

    @staticmethod
    def _convert_blocks(con: Conn) -> None:
        """The blocks table of a database made before partitioning (one plain table): rename
        it, create the partitioned one and its months, copy the rows over, drop the old one.
        One transaction under the set-up lock, so a failure leaves the old table as it was;
        it holds an exclusive lock on the table meanwhile (0.1 s for 26K blocks, 9.3M points,
        on the development machine: a block is one signal's hour)."""
        began = time.monotonic()
        have = {r[0] for r in con.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('hist_blocks') "
            "AND attnum > 0 AND NOT attisdropped"
        ).fetchall()}  # fmt: skip
        lacking = [n for n in _BLOCK_NAMES if n not in have]
        if lacking:
            raise StorageError(f"hist_blocks lacks the columns {', '.join(lacking)}: not ours?")
        con.execute(f"ALTER TABLE hist_blocks RENAME TO {_OLD_BLOCKS}".encode())
        pkey = con.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            [_OLD_BLOCKS],
        ).fetchone()
        if pkey is not None:  # its index name would push the new key's to hist_blocks_pkey1
            con.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    sql.Identifier(_OLD_BLOCKS),
                    sql.Identifier(str(pkey[0])),
                    sql.Identifier(f"{_OLD_BLOCKS}_pkey"),
                )
            )
        for stmt in _BLOCKS_SQL:
            con.execute(stmt.encode())
        con.execute(_DEFAULT_SQL.encode())
        chunks = np.asarray(
            [r[0] for r in con.execute(f"SELECT DISTINCT chunk FROM {_OLD_BLOCKS}".encode())],
            dtype=np.int64,
        )
        months = _months(chunks)
        for name, lo, hi in months:
            con.execute(
                f"CREATE TABLE {name} PARTITION OF hist_blocks FOR VALUES FROM ({lo}) TO ({hi})"
                .encode()
            )  # fmt: skip
        cols = ", ".join(_BLOCK_NAMES)
        cur = con.execute(
            f"INSERT INTO hist_blocks ({cols}) SELECT {cols} FROM {_OLD_BLOCKS}".encode()
        )
        rows = cur.rowcount
        con.execute(f"DROP TABLE {_OLD_BLOCKS}".encode())
        log.warning(
            "converted hist_blocks to monthly partitions: %d blocks into %d partitions in %.1f s",
            rows,
            len(months),
            time.monotonic() - began,
        )

    @staticmethod
    def _partitions(con: Conn) -> list[tuple[str, int, int]]:
        """The monthly partitions of hist_blocks: (name, first ns, end ns), oldest first."""
        out = []
        for name, bound in con.execute(_PARTITIONS_SQL).fetchall():
            m = _BOUND.search(str(bound))
            if m is not None:  # not the DEFAULT one
                out.append((str(name), int(m.group(1)), int(m.group(2))))
        return sorted(out, key=lambda p: p[1])

    @classmethod
    def _check_partitions(cls, con: Conn, chunks: npt.NDArray[np.int64]) -> None:
        """Raise :class:`_NeedPartitions` if a chunk has no monthly partition. Maintenance holds
        the advisory lock, and every creator and dropper of partitions does too: the list read
        here stays true until the caller's COMMIT."""
        parts = cls._partitions(con)
        lo = np.asarray([p[1] for p in parts], dtype=np.int64)
        hi = np.asarray([p[2] for p in parts], dtype=np.int64)
        chunks = np.unique(np.asarray(chunks, dtype=np.int64))
        covered = np.zeros(len(chunks), dtype=bool)
        if parts:  # the partition starting at or before each chunk, if it reaches past it
            i = np.searchsorted(lo, chunks, side="right") - 1
            covered = (i >= 0) & (chunks < hi[np.maximum(i, 0)])
        missing = _months(chunks[~covered])
        if missing:
            raise _NeedPartitions(missing)

    def _create_partitions(self, months: list[tuple[str, int, int]]) -> None:
        """Create these monthly partitions, each in a short transaction of its own (a new
        partition locks the parent exclusively until COMMIT: readers wait that long, not for a
        whole compaction). Called holding the advisory lock; ``IF NOT EXISTS`` makes it
        idempotent. Rows of the month that went to the DEFAULT partition meanwhile (the
        partition was dropped, or rows came from elsewhere) are moved into the new one:
        PostgreSQL refuses a partition whose rows sit in the default."""
        con = self._maint_con
        cols = ", ".join(_BLOCK_NAMES)
        for name, lo, hi in months:
            with con.transaction():
                row = con.execute(
                    f"SELECT count(*) FROM {_DEFAULT_PART} WHERE chunk >= {lo} AND chunk < {hi}"
                    .encode()
                ).fetchone()  # fmt: skip
                stray = int(row[0]) if row else 0
                if not stray:
                    con.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF hist_blocks "
                        f"FOR VALUES FROM ({lo}) TO ({hi})".encode()
                    )
                    continue
                con.execute(f"CREATE TABLE {name} (LIKE hist_blocks INCLUDING ALL)".encode())
                con.execute(
                    f"WITH moved AS (DELETE FROM {_DEFAULT_PART} WHERE chunk >= {lo} "
                    f"AND chunk < {hi} RETURNING {cols}) "
                    f"INSERT INTO {name} ({cols}) SELECT {cols} FROM moved".encode()
                )
                con.execute(
                    f"ALTER TABLE hist_blocks ATTACH PARTITION {name} "
                    f"FOR VALUES FROM ({lo}) TO ({hi})".encode()
                )
                log.warning("moved %d blocks from %s into %s", stray, _DEFAULT_PART, name)

    def _with_partitions(self, fn: Callable[[], R]) -> R:
        """Run the maintenance transaction ``fn``; when it found months without a partition,
        create them and run it again."""
        for _ in range(_PARTITION_TRIES):
            try:
                return fn()
            except _NeedPartitions as need:
                self._create_partitions(need.months)
        raise StorageError(
            "blocks partitions still missing after creating them; is a table of that name "
            "(hist_blocks_pYYYYMM) in the schema but not a partition of hist_blocks?"
        )

    @contextlib.contextmanager
    def _advisory(self, key: int | None = None, wait: bool = True) -> Iterator[None]:
        """Maintenance (compaction, retention, set-up) is one at a time per database schema;
        without ``wait``, raises :class:`_Busy` at once when another session holds the lock."""
        con = self._maint_con
        k = self._lock_key if key is None else key
        if wait:
            con.execute("SELECT pg_advisory_lock(%s)", [k])
        else:
            row = con.execute("SELECT pg_try_advisory_lock(%s)", [k]).fetchone()
            if not (row and row[0]):
                raise _Busy
        try:
            yield
        finally:
            if not con.broken:
                con.execute("SELECT pg_advisory_unlock(%s)", [k])

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[psycopg.Cursor[Any]]:
        """A read-only REPEATABLE READ transaction: every statement sees one snapshot."""
        try:
            with self._pool.conn() as con, con.transaction():
                con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield con.cursor(binary=True)
        except psycopg.OperationalError as exc:
            raise _ConnectionLost(f"historian query failed: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"historian query failed: {exc}") from exc

    def _load_latest(self) -> None:
        with self._snapshot() as cur:
            stored = cur.execute(
                _newest_per_signal(
                    "hist_blocks",
                    "t_last, last_value, last_text, last_quality",
                    "chunk DESC",
                ).encode()
            ).fetchall()
            recent = cur.execute(
                _newest_per_signal(
                    "hist_recent",
                    "ts, value, text, quality::int8 & 4294967295",
                    "ts DESC, wseq DESC",
                ).encode()
            ).fetchall()
        self.latest_cache.clear()
        self._load_rows(stored, recent)

    # ---- latest values across processes ------------------------------------------------------

    def _open_listener(self) -> Conn:
        con = self._pool.open()
        con.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return con

    def _latest_payloads(self) -> list[str]:
        """The NOTIFY payloads of the newest points committed since the last send (module
        docstring); empties :attr:`_unsent`."""
        tenant, sid, ts, value, quality, is_text = self._unsent.drain()
        rec = np.empty(len(sid), LATEST_RECORD)
        rec["tenant"], rec["sid"], rec["ts"] = tenant, sid, ts
        rec["value"], rec["quality"] = value, quality
        out = []
        numbers, texts = rec[~is_text], rec[is_text]
        for i in range(0, len(numbers), NOTIFY_RECORDS):
            chunk = numbers[i : i + NOTIFY_RECORDS].tobytes()
            out.append(f"{self._origin}v{base64.b64encode(chunk).decode()}")
        pairs = np.empty(len(texts), _PAIR)
        pairs["tenant"], pairs["sid"] = texts["tenant"], texts["sid"]
        for i in range(0, len(pairs), NOTIFY_PAIRS):
            chunk = pairs[i : i + NOTIFY_PAIRS].tobytes()
            out.append(f"{self._origin}r{base64.b64encode(chunk).decode()}")
        return out

    def _notify_wait(self) -> float | None:
        """Seconds until the unsent latest values are due (None: nothing is unsent)."""
        if not self._unsent_any:
            return None
        return max(0.0, self._last_notify + self._notify_interval - time.monotonic())

    def _send_latest(self) -> None:
        """NOTIFY what was committed since the last send (on the writer's connection, in
        the writer's thread). A failure is logged: the points are stored, only the other
        processes' caches miss them until those signals' next points."""
        if not self._unsent_any:
            return
        self._unsent_any = False
        self._last_notify = time.monotonic()
        payloads = self._latest_payloads()
        try:
            self._writer_con.execute(
                "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) p", [self.channel, payloads]
            )
            self.notifications_sent += len(payloads)
        except psycopg.Error:
            log.exception("latest values not announced to other processes")

    def _listen_loop(self) -> None:
        """Fold other processes' commits into the cache until :meth:`close`; after a lost
        connection, listen again and reload everything (notifications meanwhile are lost)."""
        while not self._stop_maint.is_set():
            try:
                con = self._listen_con
                if con is None or con.closed or con.broken:
                    if con is not None:
                        con.close()
                    self._listen_con = con = self._open_listener()
                    self._load_latest()
                for note in con.notifies(timeout=LISTEN_POLL_S):
                    self._on_notify(note.payload)
            except Exception:
                if self._stop_maint.is_set():
                    return
                log.exception("latest-value listener failed; listening again")
                self._stop_maint.wait(LISTEN_RETRY_S)

    def _on_notify(self, payload: str) -> None:
        origin, kind = payload[:_ORIGIN_LEN], payload[_ORIGIN_LEN : _ORIGIN_LEN + 1]
        if origin == self._origin:
            return  # this process's own commit: the writer updated the cache already
        raw = base64.b64decode(payload[_ORIGIN_LEN + 1 :])
        if kind == "v":
            rec = np.frombuffer(raw, LATEST_RECORD)
            if len(rec):
                self.latest_cache.apply_numbers(
                    np.ascontiguousarray(rec["tenant"]),
                    np.ascontiguousarray(rec["sid"]),
                    np.ascontiguousarray(rec["ts"]),
                    np.ascontiguousarray(rec["value"]),
                    np.ascontiguousarray(rec["quality"]),
                )
        elif kind == "r":
            pairs = np.frombuffer(raw, _PAIR)
            if len(pairs):
                self._reload_latest(pairs["tenant"].tolist(), pairs["sid"].tolist())
        else:
            log.warning("unknown latest-value notification %r", payload[:40])
            return
        self.notifications_applied += 1

    def _reload_latest(self, tenants: list[int], sids: list[int]) -> None:
        """Read these signals' newest points back (a text does not fit a record): one index
        probe per signal in each table, blocks first as in :meth:`_load_latest`."""
        keys = "unnest(%s::int4[], %s::int4[]) k(t, s)"
        with self._snapshot() as cur:
            stored = cur.execute(
                "SELECT l.* FROM " + keys + ", LATERAL (SELECT tenant_id, signal_id, t_last, "
                "last_value, last_text, last_quality FROM hist_blocks b WHERE b.tenant_id = k.t "
                "AND b.signal_id = k.s ORDER BY chunk DESC LIMIT 1) l",
                [tenants, sids],
            ).fetchall()
            recent = cur.execute(
                "SELECT l.* FROM " + keys + ", LATERAL (SELECT tenant_id, signal_id, ts, value, "
                "text, quality::int8 & 4294967295 FROM hist_recent r WHERE r.tenant_id = k.t "
                "AND r.signal_id = k.s ORDER BY ts DESC, wseq DESC LIMIT 1) l",
                [tenants, sids],
            ).fetchall()
        self._load_rows(stored, recent)

    def _load_rows(self, *groups: list[tuple[Any, ...]]) -> None:
        cols = ["tenant_id", "signal_id", "ts", "value", "text", "quality"]
        for rows in groups:  # recent last: on equal ts it is the newer write
            if rows:
                table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}).cast(
                    POINT_SCHEMA
                )
                self.latest_cache.load(table)

    # ---- writing -----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        last_commit = 0.0
        while True:
            due = self._notify_wait()
            try:
                item = self._queue.get() if due is None else self._queue.get(timeout=due)
            except queue.Empty:  # no commit since: announce what the last ones stored
                self._send_latest()
                continue
            if item is _STOP:
                self._send_latest()
                return
            wait = last_commit + self._commit_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            items = [item]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(more)
                    break
                items.append(more)
            try:
                self._commit(items)
            except Exception as exc:  # never let the writer die: fail this group, go on
                log.exception("historian writer failed")
                settle(items, StorageError(f"write failed, nothing of it was stored: {exc}"))
            last_commit = time.monotonic()
            if self._notify_wait() == 0.0:  # the first commit after a quiet spell: at once
                self._send_latest()
            if self._since_compact >= self._hot_max:
                self._wake_maint.set()
            waited = 0.0
            while (
                self._maint_thread is not None
                and self._since_compact >= 4 * self._hot_max
                and not self._stop_maint.is_set()
                and waited < BACKPRESSURE_MAX_S
            ):
                self._wake_maint.set()
                time.sleep(0.05)
                waited += 0.05

    def _commit(self, items: list[tuple[pa.Table, Waiter]]) -> None:
        tables = [b for b, _ in items]
        data = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        # Each signal's newest row, found once for the cache and the unsent values (a sort:
        # the costliest step of a commit of many points after the COPY itself).
        last = newest_rows(
            np.asarray(data.column("signal_id"), dtype=np.int32),
            np.asarray(data.column("ts"), dtype=np.int64),
        )
        try:
            self._copy_in(data)
        except Exception as exc:  # rolled back: nothing of this group is acknowledged
            log.exception("historian write failed")
            settle(items, StorageError(f"write failed, nothing of it was stored: {exc}"))
            return
        self.latest_cache.update(data, last)
        if self._notify:
            self._unsent.update(data, last)
            self._unsent_any = True
        self._points_written += data.num_rows
        self._since_compact += data.num_rows
        self._commits += 1
        settle(items, None)

    def _copy_in(self, data: pa.Table) -> None:
        if self._writer_con.broken or self._writer_con.closed:  # e.g. the server restarted
            self._writer_con.close()
            self._writer_con = self._open_writer()
        con = self._writer_con
        if data.num_rows >= 1 << 32:
            raise StorageError("a group commit of 2**32 points or more")
        with con.transaction():
            row = con.execute("SELECT nextval('hist_batch')").fetchone()
            assert row is not None
            payload = encode_points(data, int(row[0]) << 32)
            cols = ", ".join(RECENT_COLUMNS)
            with con.cursor().copy(
                f"COPY hist_recent ({cols}) FROM STDIN (FORMAT binary)".encode()
            ) as cp:
                cp.write(payload)
        # Leaving the block committed; with synchronous_commit on the WAL is fsynced.

    # ---- compaction --------------------------------------------------------------------------

    def _maint_loop(self) -> None:
        while not self._stop_maint.is_set():
            self._wake_maint.wait(self._compact_interval)
            self._wake_maint.clear()
            if self._stop_maint.is_set():
                return
            try:
                self._compact_unless_busy()
            except Exception:
                log.exception("compaction failed; will retry")

    def _compact_unless_busy(self) -> int:
        """A background compaction, skipped when another process is compacting: its snapshot
        takes this process's committed rows too, and two compactions would only queue up on
        the lock and re-encode the same hours' blocks one after the other."""
        with self._maint:
            if self._closed:
                return 0
            try:
                return self._maintain(self._compact_locked, wait=False)
            except _Busy:
                # Rows committed after the other's snapshot stay recent; they count again
                # from here, so the recent table stays bounded by the processes' thresholds.
                self._since_compact = 0
                return 0
            except psycopg.Error as exc:
                raise StorageError(f"compaction failed: {exc}") from exc

    def compact(self) -> int:
        """Fold every recent row into blocks; returns how many points were compacted."""
        with self._maint:
            if self._closed:
                return 0
            try:
                done = self._maintain(self._compact_locked)
            except psycopg.Error as exc:
                raise StorageError(f"compaction failed: {exc}") from exc
            return done

    def _maintain(self, fn: Callable[[], R], wait: bool = True) -> R:
        """Run ``fn`` holding the advisory lock on the maintenance connection; once more on a
        fresh connection if that one turned out dead (the server restarted since its last use;
        the transaction was rolled back and the lock went with the session)."""
        for attempt in (1, 2):
            if self._maint_con.closed or self._maint_con.broken:
                self._maint_con.close()
                self._maint_con = self._pool.open()
            try:
                with self._advisory(wait=wait):
                    return fn()
            except psycopg.OperationalError:
                if attempt == 2 or not self._maint_con.broken:
                    raise
        raise AssertionError("unreachable")

    def _compact_locked(self) -> int:
        before = self._points_written
        done, months = self._with_partitions(self._compact)
        self._since_compact = max(0, self._points_written - before)
        if done:
            # Emptied recent pages and replaced blocks (with their TOAST) become reusable now, not
            # at autovacuum's next visit; only the partitions of the months touched.
            names = ", ".join(["hist_recent", *(m[0] for m in months)])
            self._maint_con.execute(f"VACUUM {names}".encode())
        return done

    def _compact(self) -> tuple[int, list[tuple[str, int, int]]]:
        """Points compacted and the months their blocks went to."""
        con = self._maint_con
        with con.transaction():
            con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur = con.cursor(binary=True)
            points, tenants = self._read_recent(cur, "TRUE")
            if not len(points):
                return 0, []
            chunks = np.unique((points.ts // CHUNK_NS) * CHUNK_NS)
            self._check_partitions(con, chunks)  # before any write: a retry redoes only reads
            rows = self._merge_into_blocks(cur, points, tenants)
            # Exactly the rows of this snapshot: rows committed since are not visible to it.
            cur.execute("DELETE FROM hist_recent")
            self._copy_blocks(cur, rows)
        return len(points), _months(chunks)

    @staticmethod
    def _read_recent(cur: psycopg.Cursor[Any], where: str) -> tuple[Points, npt.NDArray[np.int32]]:
        """Recent rows matching ``where``, deduplicated (newest write wins), sorted by tenant,
        signal and time; with each point's tenant."""
        row = cur.execute(
            f"SELECT {READ_SELECT} FROM hist_recent WHERE {where}".encode()
        ).fetchone()
        assert row is not None
        r = decode_rows(row)
        order = np.lexsort((r.wseq, r.ts, r.sid, r.tenant))
        tenant, sid, ts = r.tenant[order], r.sid[order], r.ts[order]
        keep = order[
            np.append((tenant[1:] != tenant[:-1]) | (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1]), True)
        ] if len(order) else order  # fmt: skip
        text = pa.nulls(len(keep), pa.string())
        if r.has_text[keep].any():
            found = cur.execute(
                f"SELECT wseq, text FROM hist_recent WHERE {where} AND text IS NOT NULL".encode()
            ).fetchall()
            by_wseq = {int(w): t for w, t in found}
            text = pa.array([by_wseq.get(int(w)) for w in r.wseq[keep]], pa.string())
        points = Points(r.sid[keep], r.ts[keep], r.value[keep], r.quality[keep], text)
        return points, r.tenant[keep]

    def _merge_into_blocks(
        self, cur: psycopg.Cursor[Any], points: Points, tenants: npt.NDArray[np.int32]
    ) -> list[dict[str, Any]]:
        """Block rows for every hour the points touch, merged with the blocks stored for those
        hours (which are deleted here; the caller copies the new ones in)."""
        runs: list[tuple[int, int, int, int, int]] = []
        bounds = np.flatnonzero(np.diff(tenants)) + 1
        for a, b in zip(
            np.concatenate(([0], bounds)).tolist(),
            np.concatenate((bounds, [len(tenants)])).tolist(),
            strict=True,
        ):
            tenant = int(tenants[a])
            for sid, chunk, x, y in chunk_runs(points.slice(a, b)):
                runs.append((tenant, sid, chunk, a + x, a + y))
        keys = [[r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]]
        old = cur.execute(
            f"DELETE FROM hist_blocks WHERE (tenant_id, signal_id, chunk) IN "
            f"(SELECT * FROM {_KEYS}) RETURNING tenant_id, chunk, {_BLOCK_FETCH}",
            keys,
        ).fetchall()
        stored = {(int(r[0]), int(r[2]), int(r[1])): decode_block(*r[2:]) for r in old}
        rows = []
        for tenant, sid, chunk, a, b in runs:
            new = points.slice(a, b)
            prev = stored.get((tenant, sid, chunk))
            if prev is not None:  # late points into a stored hour: merge, newest wins
                new = Points.concat([prev, new]).newest_wins()
            rows.append(encode_block(tenant, sid, chunk, new))
        return rows

    @staticmethod
    def _copy_blocks(cur: psycopg.Cursor[Any], rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = ", ".join(_BLOCK_NAMES)
        with cur.copy(f"COPY hist_blocks ({cols}) FROM STDIN (FORMAT binary)".encode()) as cp:
            cp.set_types(_BLOCK_TYPES)
            for r in rows:
                cp.write_row([r[n] for n in _BLOCK_NAMES])

    # ---- reading -----------------------------------------------------------------------------

    @staticmethod
    def _blocks_where(params: dict[str, Any]) -> str:
        # chunk bounds as well as t_first / t_last: they let the primary key narrow the scan.
        return (
            "FROM hist_blocks WHERE tenant_id = %(tenant)s AND signal_id = ANY(%(ids)s) "
            f"AND chunk > %(start)s - {CHUNK_NS} AND chunk < %(end)s "
            "AND t_last >= %(start)s AND t_first < %(end)s"
        )

    @staticmethod
    def _block_points(cur: psycopg.Cursor[Any], where: str, params: dict[str, Any]) -> list[Points]:
        rows = cur.execute(f"SELECT {_BLOCK_FETCH} {where} ORDER BY signal_id, chunk", params)
        return [decode_block(*r) for r in rows.fetchall()]

    def _points(
        self, tenant_id: int, ids: list[int], start: int, end: int, limit: int | None = None
    ) -> Points:
        params: dict[str, Any] = {"tenant": tenant_id, "ids": ids, "start": start, "end": end}
        with self._snapshot() as cur:
            where = self._blocks_where(params)
            cut = self._limit_cut(cur, where, params, limit) if limit is not None else None
            if cut is not None:
                params.update(cut_sid=cut[0], cut_chunk=cut[1])
                where += (
                    " AND (signal_id < %(cut_sid)s OR "
                    "(signal_id = %(cut_sid)s AND chunk <= %(cut_chunk)s))"
                )
            parts = self._block_points(cur, where, params)
            recent, _ = self._read_recent(cur, _recent_where(tenant_id, ids, start, end, cut))
            parts.append(recent)
        merged = Points.concat(parts).newest_wins()
        inside = (merged.ts >= start) & (merged.ts < end)
        merged = merged if inside.all() else merged.take(np.flatnonzero(inside))
        if cut is not None and limit is not None and len(merged) < limit:
            return self._points(tenant_id, ids, start, end)  # the cut was too early
        return merged

    @staticmethod
    def _limit_cut(
        cur: psycopg.Cursor[Any], where: str, params: dict[str, Any], limit: int
    ) -> tuple[int, int] | None:
        """The (signal, chunk) of the block where stored points reach ``limit``."""
        row = cur.execute(
            "SELECT signal_id, chunk FROM (SELECT signal_id, chunk, "
            "sum(CASE WHEN t_first >= %(start)s AND t_last < %(end)s THEN n ELSE 0 END) OVER "
            "(ORDER BY signal_id, chunk ROWS UNBOUNDED PRECEDING) AS upto "
            f"{where}) s WHERE upto >= %(limit)s ORDER BY signal_id, chunk LIMIT 1",
            {**params, "limit": limit},
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    @_retry_read
    def query_raw(
        self,
        tenant_id: int,
        signal_ids: npt.NDArray[np.int32] | Sequence[int],
        start: int,
        end: int,
        limit: int | None = None,
    ) -> pa.Table:
        ids = _ids(signal_ids)
        if not ids or end <= start:
            return RAW_SCHEMA.empty_table()
        p = self._points(tenant_id, ids, start, end, limit)
        if limit is not None and len(p) > limit:
            p = p.take(np.arange(limit))
        return p.to_table()

    @_retry_read
    def query_downsample(
        self,
        tenant_id: int,
        signal_ids: npt.NDArray[np.int32] | Sequence[int],
        start: int,
        end: int,
        interval: int,
        aggs: Sequence[Aggregate],
    ) -> pa.Table:
        ids = _ids(signal_ids)
        if not ids or end <= start:
            return downsample_schema(aggs).empty_table()
        if interval % CHUNK_NS == 0:
            partials = self._partials_with_rollups(tenant_id, ids, start, end, interval)
        else:
            partials = Partials.from_points(self._points(tenant_id, ids, start, end), interval)
        return partials.combine().to_table(aggs)

    def _partials_with_rollups(
        self, tenant_id: int, ids: list[int], start: int, end: int, interval: int
    ) -> Partials:
        """Whole hours with no recent rows come from the stored rollups; the rest from points."""
        params: dict[str, Any] = {"tenant": tenant_id, "ids": ids, "start": start, "end": end}
        base = self._blocks_where(params)
        is_whole = (
            f"chunk >= %(start)s AND chunk + {CHUNK_NS} <= %(end)s AND NOT EXISTS ("
            "SELECT 1 FROM hist_recent r WHERE r.tenant_id = hist_blocks.tenant_id "
            "AND r.signal_id = hist_blocks.signal_id AND r.ts >= hist_blocks.chunk "
            f"AND r.ts < hist_blocks.chunk + {CHUNK_NS})"
        )
        with self._snapshot() as cur:
            rollup = cur.execute(
                "SELECT signal_id, agg_count, agg_sum, agg_min, agg_max, agg_first_ts, "
                f"agg_first, agg_last_ts, agg_last, chunk {base} AND {is_whole} "
                "AND agg_count > 0",
                params,
            ).fetchall()
            block_parts = self._block_points(cur, f"{base} AND NOT ({is_whole})", params)
            recent, _ = self._read_recent(cur, _recent_where(tenant_id, ids, start, end))
        points = Points.concat([*block_parts, recent]).newest_wins()
        inside = (points.ts >= start) & (points.ts < end)
        raw = Partials.from_points(points.take(np.flatnonzero(inside)), interval)
        if not rollup:
            return raw
        cols = list(zip(*rollup, strict=True))

        def col(i: int, dt: type[np.generic]) -> npt.NDArray[Any]:
            return np.asarray(cols[i], dtype=dt)

        chunk = col(9, np.int64)
        stored = Partials(
            col(0, np.int32),
            (chunk // interval) * interval,
            col(1, np.int64),
            col(2, np.float64),
            col(3, np.float64),
            col(4, np.float64),
            col(5, np.int64),
            col(6, np.float64),
            col(7, np.int64),
            col(8, np.float64),
        )
        return Partials.concat([stored, raw])

    def latest(self, tenant_id: int, signal_ids: npt.NDArray[np.int32] | Sequence[int]) -> pa.Table:
        return self.latest_cache.get(tenant_id, np.asarray(_ids(signal_ids), dtype=np.int32))

    # ---- retention and housekeeping ----------------------------------------------------------

    def apply_retention(self, tenant_id: int, before: int) -> int:
        """Delete the tenant's points older than ``before``; hours cut in two are re-encoded."""
        self.compact()  # recent rows go to blocks first, so one rule covers (nearly) everything
        with self._maint:
            if self._closed:
                raise StorageError("historian is closed")
            try:
                removed = self._maintain(lambda: self._retention_locked(tenant_id, before))
            except psycopg.Error as exc:
                raise StorageError(f"retention failed: {exc}") from exc
            self._load_latest()
            return removed

    def _retention_locked(self, tenant_id: int, before: int) -> int:
        dropped = self._drop_partitions(tenant_id, before)
        return dropped + self._with_partitions(lambda: self._retention(tenant_id, before))

    def _drop_partitions(self, tenant_id: int, before: int) -> int:
        """DROP the monthly partitions that end at or before ``before`` and hold no other
        tenant's rows (the table is shared: another tenant's rows there may be younger than
        that tenant's own cutoff); returns the points they held. The others are left to the
        DELETE of :meth:`_retention`; once every tenant has had its retention, a month past
        all the cutoffs holds only the last tenant's rows and goes whole at its turn.

        One short transaction: dropping a partition locks the parent exclusively until COMMIT."""
        con = self._maint_con
        removed = 0
        with con.transaction():
            for name, _, hi in self._partitions(con):
                if hi > before:
                    break  # oldest first
                table = sql.Identifier(name)
                # Two probes on the primary key (it leads with tenant_id), not a scan.
                row = con.execute(
                    sql.SQL(
                        "SELECT EXISTS (SELECT 1 FROM {t} WHERE tenant_id < %(t)s) "
                        "OR EXISTS (SELECT 1 FROM {t} WHERE tenant_id > %(t)s)"
                    ).format(t=table),
                    {"t": tenant_id},
                ).fetchone()
                if row is None or row[0]:
                    continue
                row = con.execute(
                    sql.SQL("SELECT coalesce(sum(n), 0) FROM {}").format(table)
                ).fetchone()
                con.execute(sql.SQL("DROP TABLE {}").format(table))
                removed += int(row[0]) if row else 0
                log.info("retention of tenant %d dropped partition %s", tenant_id, name)
        return removed

    def _retention(self, tenant_id: int, before: int) -> int:
        con = self._maint_con
        with con.transaction():
            cur = con.cursor(binary=True)
            # chunk <= t_first <= t_last < chunk + CHUNK_NS: the chunk bounds are implied, and
            # they let PostgreSQL prune the partitions that cannot hold such blocks.
            cut = cur.execute(
                f"SELECT tenant_id, chunk, {_BLOCK_FETCH} FROM hist_blocks "
                "WHERE tenant_id = %(t)s AND t_first < %(b)s AND t_last >= %(b)s "
                "AND chunk < %(b)s AND chunk > %(lo)s",
                {"t": tenant_id, "b": before, "lo": max(before - CHUNK_NS, -(2**63))},
            ).fetchall()
            if cut:  # the re-encoded blocks go back where they were; check all the same
                self._check_partitions(con, np.asarray([int(r[1]) for r in cut], np.int64))
            removed = 0
            rows = []
            for r in cut:
                p = decode_block(*r[2:])
                keep = np.flatnonzero(p.ts >= before)
                removed += len(p) - len(keep)
                rows.append(encode_block(int(r[0]), int(r[2]), int(r[1]), p.take(keep)))
            gone = cur.execute(
                "SELECT coalesce(sum(n), 0) FROM hist_blocks "
                "WHERE tenant_id = %(t)s AND t_last < %(b)s AND chunk < %(b)s",
                {"t": tenant_id, "b": before},
            ).fetchone()
            removed += int(gone[0]) if gone else 0
            cur.execute(
                "DELETE FROM hist_blocks WHERE tenant_id = %(t)s AND t_first < %(b)s "
                "AND chunk < %(b)s",
                {"t": tenant_id, "b": before},
            )
            # Rows written since the compaction above (another process, or this one).
            cur.execute(
                "DELETE FROM hist_recent WHERE tenant_id = %s AND ts < %s", [tenant_id, before]
            )
            removed += max(cur.rowcount, 0)
            self._copy_blocks(cur, rows)
        return removed

    @_retry_read
    def tenant_points(self, tenant_id: int) -> int:
        with self._snapshot() as cur:
            row = cur.execute(
                "SELECT (SELECT count(*) FROM hist_recent WHERE tenant_id = %(t)s) + "
                "(SELECT coalesce(sum(n), 0) FROM hist_blocks WHERE tenant_id = %(t)s)",
                {"t": tenant_id},
            ).fetchone()
        return int(row[0]) if row else 0

    @_retry_read
    def disk_bytes(self) -> int:
        """Tables, TOAST and indexes of both tables."""
        with self._snapshot() as cur:
            row = cur.execute(
                f"SELECT pg_total_relation_size('hist_recent') + ({_BLOCKS_BYTES})"
            ).fetchone()
        return int(row[0]) if row else 0

    @property
    def points_written(self) -> int:
        """Points this process committed (no query: a worker's health probe reads it)."""
        return self._points_written

    @_retry_read
    def stats(self) -> dict[str, int | float]:
        with self._snapshot() as cur:
            row = cur.execute(
                "SELECT (SELECT count(*) FROM hist_blocks), "
                "(SELECT coalesce(sum(n), 0) FROM hist_blocks), "
                "(SELECT count(*) FROM hist_recent), "
                f"({_BLOCKS_BYTES}), pg_total_relation_size('hist_recent'), "
                f"({_PARTITION_COUNT})"
            ).fetchone()
        assert row is not None
        return {
            "blocks": int(row[0]),
            "block_points": int(row[1]),
            "recent_points": int(row[2]),
            "commits": self._commits,
            "points_written": self._points_written,
            "blocks_bytes": int(row[3]),
            "recent_bytes": int(row[4]),
            "disk_bytes": int(row[3]) + int(row[4]),
            "timescaledb": int(self.timescaledb),
            "partitions": int(row[5]),
        }

    def close(self) -> None:
        """Stop the threads and close the connections. Recent rows stay in the database."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._stop_maint.set()
        self._wake_maint.set()
        if self._maint_thread:
            self._maint_thread.join()
        if self._listen_thread:
            self._listen_thread.join()
        if self._listen_con is not None:
            self._listen_con.close()
        self._writer.join()
        with self._maint:
            self._writer_con.close()
            self._maint_con.close()
            self._pool.close()
