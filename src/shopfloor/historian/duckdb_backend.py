"""The embedded historian: DuckDB files under one folder.

Layout:
- ``historian.duckdb`` holds ``blocks`` (one row per signal and hour: encoded points plus the
  hourly rollup) and ``segments`` (the recent segments and their state).
- ``hot-NNNNNN.duckdb`` are recent segments: plain rows in arrival order, written with one bulk
  Arrow insert per group commit. A segment is sealed when it grows past ``hot_max_points`` (or
  on ``compact()``), folded into blocks, then deleted. Keeping recent rows in their own file
  lets the file go away whole after compaction instead of leaving free pages in the main file.

Threads: one writer thread owns all inserts (group commit), one maintenance thread compacts,
queries run on any thread with their own cursor. Sealed segments are detached under a
reader-writer lock so no query loses a table mid-read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

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
    rows_to_table,
)
from shopfloor.historian.latest import LatestCache
from shopfloor.historian.wal import WalWriter, read_wal, wal_files

log = logging.getLogger(__name__)

_HOT_COLUMNS: Final = (
    "tenant_id INTEGER NOT NULL, signal_id INTEGER NOT NULL, ts BIGINT NOT NULL, "
    "value DOUBLE, text VARCHAR, quality UINTEGER NOT NULL"
)
_BLOCK_FETCH: Final = "signal_id, n, ts_blob, v_blob, vmask_blob, q_blob, text_blob"


class _RWLock:
    """Many readers or one writer; writers wait for readers to drain."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class _Rotate:
    """Ask the flusher to seal the segment being written."""

    def __init__(self) -> None:
        self.done: cf.Future[int | None] = cf.Future()


class _Flush:
    """Ask the writer to hand everything logged so far to DuckDB; done once it is there."""

    def __init__(self) -> None:
        self.done: cf.Future[None] = cf.Future()


_STOP: Final = object()


def _arrow(cur: duckdb.DuckDBPyConnection, query: str, params: Any = None) -> pa.Table:
    """Run a query and return its rows as Arrow (the relation API avoids a copy)."""
    table: pa.Table = cur.sql(query, params=params).to_arrow_table()
    return table


def _one(cur: duckdb.DuckDBPyConnection, query: str, params: Any = None) -> tuple[Any, ...]:
    """First row of a query. fetchall, not fetchone: DuckDB 2 leaves a fetchone result open
    and the cursor's next query then fails with ResourceInUseException."""
    rows = cur.execute(query, params).fetchall()
    return tuple(rows[0]) if rows else ()


Waiter = cf.Future[None] | asyncio.Future[None]


def _settle(items: list[tuple[pa.Table, Waiter]], error: Exception | None) -> None:
    """Resolve the writers of one commit: thread futures directly, loop futures in one call
    per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, fut in items:
        if isinstance(fut, asyncio.Future):
            by_loop.setdefault(fut.get_loop(), []).append(fut)
        elif error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
    for loop, futs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle_in_loop, futs, error)


def _settle_in_loop(futs: list[asyncio.Future[None]], error: Exception | None) -> None:
    for fut in futs:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def _ids(signal_ids: npt.NDArray[np.int32] | Sequence[int]) -> list[int]:
    return [int(i) for i in np.unique(np.asarray(signal_ids, dtype=np.int64))]


class DuckDBHistorian:
    """HistorianBackend on DuckDB (see historian.backend for the contract)."""

    def __init__(
        self,
        folder: Path,
        *,
        commit_interval_ms: float = 10.0,
        hot_max_points: int = 2_000_000,
        compact_interval_s: float = 300.0,
        flush_points: int = 500_000,
        flush_interval_s: float = 1.0,
        background: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "historian.duckdb"
        self._commit_interval = commit_interval_ms / 1000.0
        self._hot_max = hot_max_points
        self._compact_interval = compact_interval_s
        self._con = duckdb.connect(str(self.path))
        self._local = threading.local()
        self._rw = _RWLock()
        self._maint = threading.Lock()
        self._segments: list[int] = []  # active recent segments, oldest first; last is written
        self._hot_rows = 0
        self._flush_points = flush_points
        self._flush_interval = flush_interval_s
        # Logged and acknowledged, not yet in DuckDB: (wal seq, batch), oldest first.
        self._pending: list[tuple[int, pa.Table]] = []
        self._pending_rows = 0
        self._pending_since = 0.0
        self._pending_lock = threading.Lock()
        self._wal_seq = 0
        self._commits = 0
        self._points_written = 0
        self.latest_cache = LatestCache()
        self._setup()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._flush_queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._wal = WalWriter(self.folder, self._wal_seq + 1)
        self._writer = threading.Thread(
            target=self._write_loop, name="historian-writer", daemon=True
        )
        self._flusher = threading.Thread(
            target=self._flush_loop, name="historian-flusher", daemon=True
        )
        self._writer.start()
        self._flusher.start()
        self._stop_maint = threading.Event()
        self._wake_maint = threading.Event()
        self._maint_thread: threading.Thread | None = None
        if background:
            self._maint_thread = threading.Thread(
                target=self._maint_loop, name="historian-compactor", daemon=True
            )
            self._maint_thread.start()

    # ---- setup -------------------------------------------------------------------------------

    def _setup(self) -> None:
        cols = ", ".join(f"{n} {t}" for n, t in BLOCK_COLUMNS)
        self._con.execute(f"CREATE TABLE IF NOT EXISTS blocks ({cols})")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, state VARCHAR NOT NULL)"
        )
        # The newest log file whose points are in compacted blocks (see _compact_segment).
        self._con.execute("CREATE TABLE IF NOT EXISTS wal_state (flushed BIGINT NOT NULL)")
        rows = self._con.execute("SELECT id, state FROM segments ORDER BY id").fetchall()
        for seg_id, state in rows:
            path = self._seg_path(seg_id)
            if state == "compacted":
                self._remove_files(path)
                self._con.execute("DELETE FROM segments WHERE id = ?", [seg_id])
            elif path.exists():
                self._attach(seg_id)
                self._segments.append(seg_id)
            else:
                log.error("recent segment %s is missing; its points are lost", path)
                self._con.execute("DELETE FROM segments WHERE id = ?", [seg_id])
        known = {self._seg_path(s).name for s in self._segments}
        for stray in self.folder.glob("hot-*.duckdb"):
            if stray.name not in known:  # created but never registered: it holds nothing acked
                self._remove_files(stray)
        if not self._segments:
            self._new_segment(self._con)
        self._replay_wal()
        self._hot_rows = sum(
            _one(self._con, f"SELECT count(*) FROM {self._alias(s)}.points")[0]
            for s in self._segments
        )
        self._load_latest()

    def _seg_path(self, seg_id: int) -> Path:
        return self.folder / f"hot-{seg_id:06d}.duckdb"

    @staticmethod
    def _alias(seg_id: int) -> str:
        return f"hot_{seg_id}"

    @staticmethod
    def _remove_files(path: Path) -> None:
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)

    def _attach(self, seg_id: int) -> None:
        alias = self._alias(seg_id)
        self._con.execute(f"ATTACH '{self._seg_path(seg_id)}' AS {alias}")
        self._con.execute(f"CREATE TABLE IF NOT EXISTS {alias}.points ({_HOT_COLUMNS})")
        # Which log files this segment holds, written in the same transaction as their rows.
        self._con.execute(f"CREATE TABLE IF NOT EXISTS {alias}.flushed (seq BIGINT NOT NULL)")

    def _flushed_seq(self) -> int:
        """The newest log file whose points are in DuckDB already."""
        parts = ["SELECT coalesce(max(flushed), 0) AS s FROM wal_state"]
        parts += [
            f"SELECT coalesce(max(seq), 0) FROM {self._alias(s)}.flushed" for s in self._segments
        ]
        row = _one(self._con, f"SELECT max(s) FROM ({' UNION ALL '.join(parts)})")
        return int(row[0]) if row and row[0] is not None else 0

    def _replay_wal(self) -> None:
        """Move logged points that never reached DuckDB (a crash) into the current segment."""
        flushed = self._flushed_seq()
        self._wal_seq = flushed
        for seq, path in wal_files(self.folder):
            if seq > flushed:
                batches = list(read_wal(path))
                if batches:
                    self._insert(self._con, pa.Table.from_batches(batches, POINT_SCHEMA), seq)
                    log.info(
                        "recovered %d points from %s", sum(b.num_rows for b in batches), path.name
                    )
            self._wal_seq = max(self._wal_seq, seq)
            path.unlink()

    def _insert(self, cur: duckdb.DuckDBPyConnection, data: pa.Table, seq: int) -> None:
        """Rows of log files up to ``seq`` into the segment being written, atomically."""
        alias = self._alias(self._segments[-1])
        cur.execute("BEGIN")
        try:
            cur.register("incoming", data)
            cur.execute(f"INSERT INTO {alias}.points SELECT * FROM incoming")
            cur.execute(f"INSERT INTO {alias}.flushed VALUES (?)", [seq])
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.unregister("incoming")

    def _new_segment(self, cur: duckdb.DuckDBPyConnection) -> int:
        seg_id = (self._segments[-1] + 1) if self._segments else self._next_id(cur)
        cur.execute("INSERT INTO segments VALUES (?, 'active')", [seg_id])
        self._attach(seg_id)
        self._segments.append(seg_id)
        return seg_id

    @staticmethod
    def _next_id(cur: duckdb.DuckDBPyConnection) -> int:
        row = _one(cur, "SELECT coalesce(max(id), 0) + 1 FROM segments")
        return int(row[0]) if row else 1

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
        return cur

    def _load_latest(self) -> None:
        cur = self._cursor()
        parts = [
            _arrow(
                cur,
                "SELECT tenant_id, signal_id, t_last AS ts, last_value AS value, "
                "last_text AS text, last_quality AS quality FROM blocks "
                "QUALIFY row_number() OVER (PARTITION BY signal_id ORDER BY t_last DESC) = 1",
            )
        ]
        for s in self._segments:
            parts.append(
                _arrow(
                    cur,
                    f"SELECT * FROM {self._alias(s)}.points "
                    "QUALIFY row_number() OVER (PARTITION BY signal_id ORDER BY ts DESC, rowid DESC) = 1",
                )
            )
        self.latest_cache.clear()
        for part in parts:
            self.latest_cache.load(part.cast(POINT_SCHEMA))

    # ---- writing -----------------------------------------------------------------------------

    def submit(self, batch: pa.Table) -> cf.Future[None]:
        """Queue a batch for the next group commit; the future resolves once it is durable."""
        fut: cf.Future[None] = cf.Future()
        if self._closed:
            fut.set_exception(StorageError("historian is closed"))
            return fut
        if batch.num_rows == 0:
            fut.set_result(None)
            return fut
        self._queue.put((batch, fut))
        return fut

    def write(self, batch: pa.Table) -> None:
        self.submit(batch).result()

    async def write_async(self, batch: pa.Table) -> None:
        """Like write, for the event loop. One loop wake-up per group commit, not per write:
        chaining a thread future per request (asyncio.wrap_future) cost about half a
        millisecond of loop time per request under load."""
        if self._closed:
            raise StorageError("historian is closed")
        if batch.num_rows == 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((batch, fut))
        await fut

    def _write_loop(self) -> None:
        """Group commit: log and fsync what arrived within one commit interval, then ack."""
        last_commit = 0.0
        while True:
            try:
                item = self._queue.get(timeout=self._flush_interval)
            except queue.Empty:
                self._hand_off()
                continue
            if item is _STOP:
                self._hand_off()
                self._flush_queue.put(_STOP)
                return
            if isinstance(item, _Flush):
                self._hand_off()
                self._flush_queue.put(item)
                continue
            wait = last_commit + self._commit_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            items = [item]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP or isinstance(more, _Flush):
                    self._queue.put(more)  # handled after this commit, in order
                    break
                items.append(more)
            self._commit(items)
            last_commit = time.monotonic()
            if self._pending_rows >= self._flush_points or (
                self._pending and time.monotonic() - self._pending_since >= self._flush_interval
            ):
                self._hand_off()

    def _commit(self, items: list[tuple[pa.Table, Waiter]]) -> None:
        tables = [b for b, _ in items]
        try:
            data = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            data = data.cast(POINT_SCHEMA) if data.schema != POINT_SCHEMA else data
            self._wal.append(data)
        except Exception as exc:  # nothing of this group is acknowledged
            log.exception("historian write failed")
            err = StorageError(f"write failed, nothing of it was stored: {exc}")
            _settle(items, err)
            self._restart_wal()
            return
        self.latest_cache.update(data)
        with self._pending_lock:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((self._wal.seq, data))
            self._pending_rows += data.num_rows
        self._points_written += data.num_rows
        self._commits += 1
        _settle(items, None)

    def _restart_wal(self) -> None:
        """After a failed append the file may end in a partial record: continue in a new one."""
        with contextlib.suppress(OSError):
            self._wal.close()
        self._hand_off_seq(self._wal.seq)
        self._wal = WalWriter(self.folder, self._wal.seq + 1)

    def _hand_off(self) -> None:
        """Give the logged batches to the flusher and start a new log file (writer thread)."""
        if not self._pending:
            return
        self._wal.close()
        self._hand_off_seq(self._wal.seq)
        self._wal = WalWriter(self.folder, self._wal.seq + 1)

    def _hand_off_seq(self, seq: int) -> None:
        self._flush_queue.put(seq)

    def _flush_loop(self) -> None:
        """Insert handed-off batches into DuckDB in log order (flusher thread)."""
        cur = self._con.cursor()
        while True:
            item = self._flush_queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Rotate):
                self._rotate(cur, item)
            elif isinstance(item, _Flush):
                item.done.set_result(None)
            else:
                self._flush_upto(cur, int(item))

    def _flush_upto(self, cur: duckdb.DuckDBPyConnection, seq: int) -> None:
        with self._pending_lock:
            tables = [t for s, t in self._pending if s <= seq]
        if tables:
            data = pa.concat_tables(tables)
            while True:
                try:
                    self._insert(cur, data, seq)
                    break
                except Exception:  # the points are safe in the log; try again
                    log.exception("moving logged points into DuckDB failed; retrying in 1 s")
                    time.sleep(1.0)
            # Only now do queries stop reading these batches from memory (they read DuckDB
            # first, then memory, so they see every point at least once, never none).
            with self._pending_lock:
                self._pending = [(s, t) for s, t in self._pending if s > seq]
                self._pending_rows -= data.num_rows
            self._hot_rows += data.num_rows
        for old, path in wal_files(self.folder):
            if old <= seq:
                path.unlink(missing_ok=True)
        if self._hot_rows >= self._hot_max:
            self._rotate(cur, None)
            self._wake_maint.set()

    def flush(self) -> None:
        """Wait until everything acknowledged so far is in DuckDB (not just in the log)."""
        req = _Flush()
        self._queue.put(req)
        req.done.result()

    def _rotate(self, cur: duckdb.DuckDBPyConnection, req: _Rotate | None) -> None:
        """Seal the segment being written and start a new one (flusher thread only)."""
        sealed: int | None = None
        try:
            if self._hot_rows:
                sealed = self._segments[-1]
                self._new_segment(cur)
                self._hot_rows = 0
        except Exception as exc:
            if req:
                req.done.set_exception(exc)
            return
        if req:
            req.done.set_result(sealed)

    # ---- compaction --------------------------------------------------------------------------

    def _maint_loop(self) -> None:
        while not self._stop_maint.is_set():
            self._wake_maint.wait(self._compact_interval)
            self._wake_maint.clear()
            if self._stop_maint.is_set():
                return
            try:
                self.compact()
            except Exception:
                log.exception("compaction failed; will retry")

    def compact(self) -> int:
        """Seal the current segment and fold every sealed segment into blocks."""
        with self._maint:
            if self._closed:
                return 0
            self.flush()
            req = _Rotate()
            self._flush_queue.put(req)
            req.done.result()
            done = 0
            for seg in list(self._segments[:-1]):
                done += self._compact_segment(seg)
            return done

    def _compact_segment(self, seg: int) -> int:
        cur = self._cursor()
        alias = self._alias(seg)
        table = _arrow(
            cur,
            f"SELECT tenant_id, signal_id, ts, value, text, quality FROM {alias}.points "
            "ORDER BY signal_id, ts, rowid",
        )
        points = Points.from_table(table).newest_wins()
        tenants = np.asarray(table.column("tenant_id"), dtype=np.int32)
        tenant_of = dict(
            zip(np.asarray(table.column("signal_id")).tolist(), tenants.tolist(), strict=True)
        )
        runs = chunk_runs(points)
        keys = pa.table(
            {
                "signal_id": pa.array([r[0] for r in runs], pa.int32()),
                "chunk": pa.array([r[1] for r in runs], pa.int64()),
            }
        )
        cur.register("compact_keys", keys)
        try:
            existing = cur.execute(
                f"SELECT b.chunk, {', '.join('b.' + c for c in _BLOCK_FETCH.split(', '))} "
                "FROM blocks b JOIN compact_keys k USING (signal_id, chunk)"
            ).fetchall()
            old = {(r[1], r[0]): decode_block(*r[1:]) for r in existing}
            rows = []
            for sid, chunk, a, b in runs:
                new = points.take(np.arange(a, b))
                prev = old.get((sid, chunk))
                if prev is not None:  # late data into a stored hour: merge, newest wins
                    new = Points.concat([prev, new]).newest_wins()
                rows.append(encode_block(tenant_of[sid], sid, chunk, new))
            held = _one(cur, f"SELECT coalesce(max(seq), 0) FROM {alias}.flushed")
            cur.execute("BEGIN")
            try:
                cur.execute("INSERT INTO wal_state VALUES (?)", [int(held[0])])
                cur.execute(
                    "DELETE FROM blocks USING compact_keys k "
                    "WHERE blocks.signal_id = k.signal_id AND blocks.chunk = k.chunk"
                )
                if rows:
                    new_rows = rows_to_table(rows)
                    cur.register("new_blocks", new_rows)
                    cur.execute("INSERT INTO blocks SELECT * FROM new_blocks")
                    cur.unregister("new_blocks")
                cur.execute("UPDATE segments SET state = 'compacted' WHERE id = ?", [seg])
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.unregister("compact_keys")
        # Queries that started before the commit may still read the segment; their merge
        # drops the duplicates. Detach only once they are done.
        with self._rw.write():
            self._segments.remove(seg)
            cur.execute(f"DETACH {alias}")
        self._remove_files(self._seg_path(seg))
        cur.execute("DELETE FROM segments WHERE id = ?", [seg])
        return len(points)

    # ---- reading -----------------------------------------------------------------------------

    def _blocks_where(self) -> str:
        return (
            "FROM blocks WHERE tenant_id = $tenant AND list_contains($ids, signal_id) "
            "AND t_last >= $start AND t_first < $end"
        )

    def _hot_points(
        self,
        cur: duckdb.DuckDBPyConnection,
        segs: list[int],
        params: dict[str, Any],
        extra: str = "",
    ) -> list[Points]:
        out = []
        for s in segs:
            t = _arrow(
                cur,
                f"SELECT signal_id, ts, value, text, quality FROM {self._alias(s)}.points "
                "WHERE tenant_id = $tenant AND list_contains($ids, signal_id) "
                f"AND ts >= $start AND ts < $end {extra} ORDER BY signal_id, ts, rowid",
                params,
            )
            if t.num_rows:
                out.append(Points.from_table(t))
        # Acknowledged batches not yet in DuckDB, read after it (see _flush_upto).
        with self._pending_lock:
            pending = [t for _, t in self._pending]
        if pending:
            out.append(
                self._filter_pending(Points.from_table(pa.concat_tables(pending)), params, pending)
            )
        return out

    @staticmethod
    def _filter_pending(p: Points, params: dict[str, Any], tables: list[pa.Table]) -> Points:
        tenant = np.concatenate([np.asarray(t.column("tenant_id"), dtype=np.int32) for t in tables])
        keep = (
            (tenant == params["tenant"])
            & np.isin(p.sid, np.asarray(params["ids"], dtype=np.int32))
            & (p.ts >= params["start"])
            & (p.ts < params["end"])
        )
        if "cut_sid" in params:
            keep &= (p.sid < params["cut_sid"]) | (
                (p.sid == params["cut_sid"]) & (p.ts < params["cut_chunk"] + CHUNK_NS)
            )
        return p.take(np.flatnonzero(keep))

    def _block_points(
        self, cur: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any]
    ) -> list[Points]:
        rows = cur.execute(
            f"SELECT {_BLOCK_FETCH} {where} ORDER BY signal_id, chunk", params
        ).fetchall()
        return [decode_block(*r) for r in rows]

    def _points(
        self, tenant_id: int, ids: list[int], start: int, end: int, limit: int | None = None
    ) -> Points:
        """Merged points; with ``limit``, blocks past the first ``limit`` points are not read."""
        params: dict[str, Any] = {"tenant": tenant_id, "ids": ids, "start": start, "end": end}
        cur = self._cursor()
        where, hot_extra = self._blocks_where(), ""
        with self._rw.read():
            segs = list(self._segments)
            cut = self._limit_cut(cur, where, params, limit) if limit is not None else None
            if cut is not None:
                params.update(cut_sid=cut[0], cut_chunk=cut[1])
                where += (
                    " AND (signal_id < $cut_sid OR (signal_id = $cut_sid AND chunk <= $cut_chunk))"
                )
                hot_extra = f"AND (signal_id < $cut_sid OR (signal_id = $cut_sid AND ts < $cut_chunk + {CHUNK_NS}))"
            parts = self._block_points(cur, where, params)
            parts += self._hot_points(cur, segs, params, hot_extra)
        merged = Points.concat(parts).newest_wins()
        inside = (merged.ts >= start) & (merged.ts < end)
        merged = merged if inside.all() else merged.take(np.flatnonzero(inside))
        if cut is not None and limit is not None and len(merged) < limit:
            # Recent rows replaced some block points: the cut was too early; read it all.
            return self._points(tenant_id, ids, start, end)
        return merged

    @staticmethod
    def _limit_cut(
        cur: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any], limit: int
    ) -> tuple[int, int] | None:
        """The (signal, chunk) of the block where stored points reach ``limit``, in result order."""
        row = _one(
            cur,
            # Blocks cut by the range edges count nothing: only whole blocks are sure.
            "SELECT signal_id, chunk FROM (SELECT signal_id, chunk, "
            "sum(CASE WHEN t_first >= $start AND t_last < $end THEN n ELSE 0 END) OVER "
            "(ORDER BY signal_id, chunk ROWS UNBOUNDED PRECEDING) AS upto "
            f"{where}) WHERE upto >= $limit ORDER BY signal_id, chunk LIMIT 1",
            {**params, "limit": limit},
        )
        return (int(row[0]), int(row[1])) if row else None

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
        """Whole hours with no recent data come from the stored rollups; the rest from points."""
        params = {"tenant": tenant_id, "ids": ids, "start": start, "end": end}
        cur = self._cursor()
        with self._rw.read():
            segs = list(self._segments)
            hot = self._hot_points(cur, segs, params)
            hot_pts = Points.concat(hot)
            hot_keys = pa.table(
                {
                    "signal_id": pa.array(hot_pts.sid, pa.int32()),
                    "chunk": pa.array((hot_pts.ts // CHUNK_NS) * CHUNK_NS, pa.int64()),
                }
            )
            cur.register("hot_keys", hot_keys)
            try:
                base = self._blocks_where()
                is_whole = (
                    f"chunk >= $start AND chunk + {CHUNK_NS} <= $end "
                    "AND NOT EXISTS (SELECT 1 FROM hot_keys h "
                    "WHERE h.signal_id = blocks.signal_id AND h.chunk = blocks.chunk)"
                )
                rollup = _arrow(
                    cur,
                    "SELECT signal_id, agg_count, agg_sum, agg_min, agg_max, agg_first_ts, "
                    f"agg_first, agg_last_ts, agg_last, chunk {base} AND {is_whole} "
                    "AND agg_count > 0",
                    params,
                )
                rest = f"{base} AND NOT ({is_whole})"
                block_parts = self._block_points(cur, rest, params)
            finally:
                cur.unregister("hot_keys")
        points = Points.concat([*block_parts, *hot]).newest_wins()
        inside = (points.ts >= start) & (points.ts < end)
        raw = Partials.from_points(points.take(np.flatnonzero(inside)), interval)
        chunk = np.asarray(rollup.column("chunk"), dtype=np.int64)

        def col(name: str, dt: type[np.generic]) -> npt.NDArray[Any]:
            return np.asarray(rollup.column(name), dtype=dt)

        stored = Partials(
            col("signal_id", np.int32),
            (chunk // interval) * interval,
            col("agg_count", np.int64),
            col("agg_sum", np.float64),
            col("agg_min", np.float64),
            col("agg_max", np.float64),
            col("agg_first_ts", np.int64),
            col("agg_first", np.float64),
            col("agg_last_ts", np.int64),
            col("agg_last", np.float64),
        )
        return Partials.concat([stored, raw]) if len(stored.sid) else raw

    def latest(self, tenant_id: int, signal_ids: npt.NDArray[np.int32] | Sequence[int]) -> pa.Table:
        return self.latest_cache.get(tenant_id, np.asarray(_ids(signal_ids), dtype=np.int32))

    # ---- retention and housekeeping ----------------------------------------------------------

    def apply_retention(self, tenant_id: int, before: int) -> int:
        """Delete points older than ``before``; hours cut in two are re-encoded."""
        self.flush()  # so that no logged batch brings deleted points back afterwards
        with self._maint:
            cur = self._cursor()
            removed = 0
            with self._rw.read():
                for s in self._segments:
                    row = _one(
                        cur,
                        f"DELETE FROM {self._alias(s)}.points WHERE tenant_id = ? AND ts < ?",
                        [tenant_id, before],
                    )
                    removed += int(row[0]) if row else 0
            cut = cur.execute(
                f"SELECT tenant_id, chunk, {_BLOCK_FETCH} FROM blocks "
                "WHERE tenant_id = ? AND t_first < ? AND t_last >= ?",
                [tenant_id, before, before],
            ).fetchall()
            rows = []
            for r in cut:
                p = decode_block(*r[2:])
                keep = np.flatnonzero(p.ts >= before)
                removed += len(p) - len(keep)
                rows.append(encode_block(r[0], r[2], r[1], p.take(keep)))
            gone = _one(
                cur,
                "SELECT coalesce(sum(n), 0) FROM blocks WHERE tenant_id = ? AND t_last < ?",
                [tenant_id, before],
            )
            removed += int(gone[0]) if gone else 0
            cur.execute("BEGIN")
            cur.execute(
                "DELETE FROM blocks WHERE tenant_id = ? AND t_first < ?", [tenant_id, before]
            )
            if rows:
                cur.register("cut_blocks", rows_to_table(rows))
                cur.execute("INSERT INTO blocks SELECT * FROM cut_blocks")
                cur.unregister("cut_blocks")
            cur.execute("COMMIT")
            self._load_latest()
            return removed

    def checkpoint(self) -> None:
        cur = self._cursor()
        cur.execute("CHECKPOINT")
        for s in list(self._segments):
            cur.execute(f"CHECKPOINT {self._alias(s)}")

    def disk_bytes(self) -> int:
        """Every file the historian keeps, logs included."""
        files = [*self.folder.glob("*.duckdb*"), *self.folder.glob("wal-*.arrow")]
        return sum(p.stat().st_size for p in files if p.is_file())

    def stats(self) -> dict[str, int | float]:
        cur = self._cursor()
        row = _one(cur, "SELECT count(*), coalesce(sum(n), 0) FROM blocks")
        blocks, block_points = (int(row[0]), int(row[1])) if row else (0, 0)
        return {
            "blocks": blocks,
            "block_points": block_points,
            "recent_points": self._hot_rows + self._pending_rows,
            "logged_points": self._pending_rows,  # acknowledged, in the log, not yet in DuckDB
            "recent_segments": len(self._segments),
            "commits": self._commits,
            "points_written": self._points_written,
            "disk_bytes": self.disk_bytes(),
        }

    def close(self) -> None:
        if self._closed:
            return
        self._stop_maint.set()
        self._wake_maint.set()
        if self._maint_thread:
            self._maint_thread.join()
        self._queue.put(_STOP)  # the writer hands everything to the flusher, then stops it
        self._writer.join()
        self._flusher.join()
        self._wal.close()
        if self._wal.bytes == 0:  # everything went to DuckDB: leave no empty log behind
            self._wal.path.unlink(missing_ok=True)
        self._closed = True
        with contextlib.suppress(duckdb.Error):
            self.checkpoint()
        self._con.close()
