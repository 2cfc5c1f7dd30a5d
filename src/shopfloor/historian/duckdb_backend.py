"""The embedded historian: a write-ahead log, recent points in memory, blocks in DuckDB.

Layout of the folder:
- ``wal-NNNNNNNNN.arrow``: the write-ahead log. A group commit appends its batch (Arrow IPC)
  and fsyncs before anyone is told the write succeeded (see historian.wal).
- in memory, the "recent" points: every acknowledged batch not yet compacted, in arrival order.
- ``historian.duckdb``: ``blocks``, one row per signal and hour with the points encoded by
  historian.codec plus the hour's rollup; ``wal_state`` records the newest log file whose points
  are in blocks, in the same transaction as those blocks.

Compaction seals the log (the writer starts a new file), encodes the sealed recent points into
blocks (merging late points into stored hours), commits, then drops them from memory and
deletes their log files. Raw rows never go through DuckDB inserts: an insert statement has a
high fixed cost and takes the GIL about ten times, which under a busy event loop cost more
than all the rest of ingest together.

Threads: the writer (group commit), the compactor, and queries on any thread with their own
cursor. A query takes its snapshot of recent points before it reads blocks, and compaction
drops points from memory only after its commit, so a query sees every point at least once;
duplicates collapse in the merge (newest write wins).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

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
from shopfloor.historian.group_commit import GroupCommitQueue, Waiter, settle
from shopfloor.historian.latest import LatestCache
from shopfloor.historian.wal import WalWriter, read_wal, wal_files

log = logging.getLogger(__name__)

_BLOCK_FETCH: Final = "signal_id, n, ts_blob, v_blob, vmask_blob, q_blob, text_blob"
_STOP: Final = object()
BACKPRESSURE_MAX_S: Final = 60.0


class _Recent:
    """Acknowledged batches not yet in blocks, with their log file number, oldest first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[tuple[int, pa.Table]] = []
        self.rows = 0

    def add(self, seq: int, table: pa.Table) -> None:
        with self.lock:
            self.batches.append((seq, table))
            self.rows += table.num_rows

    def snapshot(self, upto: int | None = None) -> list[pa.Table]:
        with self.lock:
            return [t for s, t in self.batches if upto is None or s <= upto]

    def drop(self, upto: int) -> None:
        with self.lock:
            gone = sum(t.num_rows for s, t in self.batches if s <= upto)
            self.batches = [(s, t) for s, t in self.batches if s > upto]
            self.rows -= gone


def _arrow(cur: duckdb.DuckDBPyConnection, query: str, params: Any = None) -> pa.Table:
    """Run a query and return its rows as Arrow (the relation API avoids a copy)."""
    table: pa.Table = cur.sql(query, params=params).to_arrow_table()
    return table


def _one(cur: duckdb.DuckDBPyConnection, query: str, params: Any = None) -> tuple[Any, ...]:
    """First row of a query. fetchall, not fetchone: DuckDB 2 leaves a fetchone result open
    and the cursor's next query then fails with ResourceInUseException."""
    rows = cur.execute(query, params).fetchall()
    return tuple(rows[0]) if rows else ()


def _sql(params: dict[str, Any]) -> dict[str, Any]:
    """Query parameters for DuckDB, which refuses names a statement does not use."""
    return {k: v for k, v in params.items() if k != "ids"}


def _ids(signal_ids: npt.NDArray[np.int32] | Sequence[int]) -> list[int]:
    return [int(i) for i in np.unique(np.asarray(signal_ids, dtype=np.int64))]


def _select(tables: list[pa.Table], params: dict[str, Any]) -> Points:
    """The recent points a query asks for, filtered batch by batch (no big concatenation)."""
    ids = np.asarray(params["ids"], dtype=np.int32)
    parts = []
    for t in tables:
        sid = np.asarray(t.column("signal_id"), dtype=np.int32)
        ts = np.asarray(t.column("ts"), dtype=np.int64)
        keep = (sid == ids[0]) if len(ids) == 1 else np.isin(sid, ids)
        keep &= (ts >= params["start"]) & (ts < params["end"])
        keep &= np.asarray(t.column("tenant_id"), dtype=np.int32) == params["tenant"]
        if "cut_sid" in params:
            keep &= (sid < params["cut_sid"]) | (
                (sid == params["cut_sid"]) & (ts < params["cut_chunk"] + CHUNK_NS)
            )
        if keep.any():
            parts.append(Points.from_table(t.filter(pa.array(keep))))
    return Points.concat(parts)


class DuckDBHistorian(GroupCommitQueue):
    """HistorianBackend on DuckDB (see historian.backend for the contract)."""

    def __init__(
        self,
        folder: Path,
        *,
        commit_interval_ms: float = 10.0,
        hot_max_points: int = 2_000_000,
        compact_interval_s: float = 300.0,
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
        self._maint = threading.Lock()
        self._recent = _Recent()
        self._commits = 0
        self._points_written = 0
        self.latest_cache = LatestCache()
        self._wal_lock = threading.Lock()  # the writer appends, compaction seals
        self._state_lock = threading.Lock()  # _closed against enqueuing
        self._wal = self._setup()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, name="historian-writer", daemon=True
        )
        self._writer.start()
        self._stop_maint = threading.Event()
        self._wake_maint = threading.Event()
        self._maint_thread: threading.Thread | None = None
        if background:
            self._maint_thread = threading.Thread(
                target=self._maint_loop, name="historian-compactor", daemon=True
            )
            self._maint_thread.start()

    # ---- setup -------------------------------------------------------------------------------

    def _setup(self) -> WalWriter:
        cols = ", ".join(f"{n} {t}" for n, t in BLOCK_COLUMNS)
        self._con.execute(f"CREATE TABLE IF NOT EXISTS blocks ({cols})")
        self._con.execute("CREATE TABLE IF NOT EXISTS wal_state (compacted BIGINT NOT NULL)")
        row = _one(self._con, "SELECT coalesce(max(compacted), 0) FROM wal_state")
        compacted = int(row[0])
        newest = compacted
        for seq, path in wal_files(self.folder):
            newest = max(newest, seq)
            if seq <= compacted:  # already in blocks; the crash came before the delete
                path.unlink()
                continue
            batches = list(read_wal(path))
            if batches:
                self._recent.add(seq, pa.Table.from_batches(batches, POINT_SCHEMA))
                log.info("recovered %d points from %s", sum(b.num_rows for b in batches), path.name)
        self._load_latest()
        return WalWriter(self.folder, newest + 1)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
        return cur

    def _load_latest(self) -> None:
        stored = _arrow(
            self._cursor(),
            "SELECT tenant_id, signal_id, t_last AS ts, last_value AS value, "
            "last_text AS text, last_quality AS quality FROM blocks "
            "QUALIFY row_number() OVER (PARTITION BY signal_id ORDER BY t_last DESC) = 1",
        )
        self.latest_cache.clear()
        self.latest_cache.load(stored.cast(POINT_SCHEMA))
        for table in self._recent.snapshot():
            self.latest_cache.update(table)

    # ---- writing -----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        """Group commit: log and fsync what arrived within one commit interval, then ack."""
        last_commit = 0.0
        while True:
            item = self._queue.get()
            if item is _STOP:
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
                    self._queue.put(more)  # handled after this commit, in order
                    break
                items.append(more)
            try:
                self._commit(items)
            except Exception as exc:  # never let the writer die: fail this group, go on
                log.exception("historian writer failed")
                settle(items, StorageError(f"write failed, nothing of it was stored: {exc}"))
            last_commit = time.monotonic()
            if self._recent.rows >= self._hot_max:
                self._wake_maint.set()
            # Backpressure: when compaction falls this far behind, acks wait for it (up to a
            # minute) rather than memory growing without bound.
            waited = 0.0
            while (
                self._maint_thread is not None
                and self._recent.rows >= 4 * self._hot_max
                and not self._stop_maint.is_set()
                and waited < BACKPRESSURE_MAX_S
            ):
                self._wake_maint.set()
                time.sleep(0.05)
                waited += 0.05

    def _commit(self, items: list[tuple[pa.Table, Waiter]]) -> None:
        tables = [b for b, _ in items]
        try:
            data = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            if data.num_rows < 64 * data.column(0).num_chunks:
                # Many tiny writes (one-point messages): one record to log instead of hundreds
                # (serialising a record costs the same for one row as for thousands).
                data = data.combine_chunks()
            with self._wal_lock:
                self._wal.append(data)
                self._recent.add(self._wal.seq, data)
        except Exception as exc:  # nothing of this group is acknowledged
            log.exception("historian write failed")
            settle(items, StorageError(f"write failed, nothing of it was stored: {exc}"))
            # The file may end in a partial record now: continue in a fresh one.
            with contextlib.suppress(Exception):
                self._seal()
            return
        self.latest_cache.update(data)
        self._points_written += data.num_rows
        self._commits += 1
        settle(items, None)

    def _seal(self, *, unless_untouched: bool = False) -> int:
        """Close the current log file and open the next; returns the closed file's number.

        ``unless_untouched``: a file nothing was written to is kept and the one before it counts
        as sealed (compaction retried after a failure would otherwise leave a new empty file
        behind on every attempt).
        """
        with self._wal_lock:
            if unless_untouched and not self._wal.touched:
                return self._wal.seq - 1
            sealed = self._wal.seq
            new = WalWriter(self.folder, sealed + 1)  # first: if it fails, the old file stays
            self._wal.close()
            self._wal = new
            return sealed

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
        """Fold every point acknowledged so far into blocks; returns how many."""
        with self._maint:
            if self._closed:
                return 0
            sealed = self._seal(unless_untouched=True)
            tables = self._recent.snapshot(sealed)
            done = self._compact(tables, sealed) if tables else 0
            self._recent.drop(sealed)
            for seq, path in wal_files(self.folder):
                if seq <= sealed:
                    path.unlink(missing_ok=True)
            return done

    def _compact(self, tables: list[pa.Table], sealed: int) -> int:
        cur = self._cursor()
        table = pa.concat_tables(tables)
        points = Points.from_table(table).newest_wins()
        # A signal belongs to one tenant: its first row says which.
        sids, first = np.unique(np.asarray(table.column("signal_id")), return_index=True)
        tenants = np.asarray(table.column("tenant_id"))[first]
        tenant_of = dict(zip(sids.tolist(), tenants.tolist(), strict=True))
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
                new = points.slice(a, b)
                prev = old.get((sid, chunk))
                if prev is not None:  # late data into a stored hour: merge, newest wins
                    new = Points.concat([prev, new]).newest_wins()
                rows.append(encode_block(tenant_of[sid], sid, chunk, new))
            cur.execute("BEGIN")
            try:
                cur.execute(
                    "DELETE FROM blocks USING compact_keys k "
                    "WHERE blocks.signal_id = k.signal_id AND blocks.chunk = k.chunk"
                )
                cur.register("new_blocks", rows_to_table(rows))
                cur.execute("INSERT INTO blocks SELECT * FROM new_blocks")
                cur.unregister("new_blocks")
                cur.execute("INSERT INTO wal_state VALUES (?)", [sealed])
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.unregister("compact_keys")
        return len(points)

    # ---- reading -----------------------------------------------------------------------------

    @staticmethod
    def _blocks_where(ids: list[int]) -> str:
        # The ids inline (they are ints from _ids): an IN list lets DuckDB use its zone maps,
        # list_contains on a parameter does not.
        return (
            f"FROM blocks WHERE tenant_id = $tenant AND signal_id IN ({', '.join(map(str, ids))}) "
            "AND t_last >= $start AND t_first < $end"
        )

    def _block_points(
        self, cur: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any]
    ) -> list[Points]:
        rows = cur.execute(
            f"SELECT {_BLOCK_FETCH} {where} ORDER BY signal_id, chunk", _sql(params)
        ).fetchall()
        return [decode_block(*r) for r in rows]

    def _points(
        self, tenant_id: int, ids: list[int], start: int, end: int, limit: int | None = None
    ) -> Points:
        """Merged points; with ``limit``, blocks past the first ``limit`` points are not read."""
        params: dict[str, Any] = {"tenant": tenant_id, "ids": ids, "start": start, "end": end}
        cur = self._cursor()
        recent = self._recent.snapshot()  # before the blocks: see the module docstring
        where = self._blocks_where(ids)
        cut = self._limit_cut(cur, where, params, limit) if limit is not None else None
        if cut is not None:
            params.update(cut_sid=cut[0], cut_chunk=cut[1])
            where += " AND (signal_id < $cut_sid OR (signal_id = $cut_sid AND chunk <= $cut_chunk))"
        parts = self._block_points(cur, where, params)
        parts.append(_select(recent, params))
        merged = Points.concat(parts).newest_wins()
        inside = (merged.ts >= start) & (merged.ts < end)
        merged = merged if inside.all() else merged.take(np.flatnonzero(inside))
        if cut is not None and limit is not None and len(merged) < limit:
            # Recent points replaced some block points: the cut was too early; read it all.
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
            {**_sql(params), "limit": limit},
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
        """Whole hours with no recent points come from the stored rollups; the rest from points."""
        params = {"tenant": tenant_id, "ids": ids, "start": start, "end": end}
        cur = self._cursor()
        recent = _select(self._recent.snapshot(), params)
        recent_keys = pa.table(
            {
                "signal_id": pa.array(recent.sid, pa.int32()),
                "chunk": pa.array((recent.ts // CHUNK_NS) * CHUNK_NS, pa.int64()),
            }
        )
        cur.register("recent_keys", recent_keys)
        try:
            base = self._blocks_where(ids)
            is_whole = (
                f"chunk >= $start AND chunk + {CHUNK_NS} <= $end "
                "AND NOT EXISTS (SELECT 1 FROM recent_keys h "
                "WHERE h.signal_id = blocks.signal_id AND h.chunk = blocks.chunk)"
            )
            rollup = _arrow(
                cur,
                "SELECT signal_id, agg_count, agg_sum, agg_min, agg_max, agg_first_ts, "
                f"agg_first, agg_last_ts, agg_last, chunk {base} AND {is_whole} "
                "AND agg_count > 0",
                _sql(params),
            )
            block_parts = self._block_points(cur, f"{base} AND NOT ({is_whole})", params)
        finally:
            cur.unregister("recent_keys")
        points = Points.concat([*block_parts, recent]).newest_wins()
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
        self.compact()  # recent points go to blocks first, so one rule covers everything
        with self._maint:
            if self._closed:
                raise StorageError("historian is closed")
            cur = self._cursor()
            cut = cur.execute(
                f"SELECT tenant_id, chunk, {_BLOCK_FETCH} FROM blocks "
                "WHERE tenant_id = ? AND t_first < ? AND t_last >= ?",
                [tenant_id, before, before],
            ).fetchall()
            removed = 0
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
            removed += int(gone[0])
            cur.execute("BEGIN")
            try:
                cur.execute(
                    "DELETE FROM blocks WHERE tenant_id = ? AND t_first < ?", [tenant_id, before]
                )
                if rows:
                    cur.register("cut_blocks", rows_to_table(rows))
                    cur.execute("INSERT INTO blocks SELECT * FROM cut_blocks")
                    cur.unregister("cut_blocks")
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
            self._load_latest()
            return removed

    def checkpoint(self) -> None:
        self._cursor().execute("CHECKPOINT")

    def disk_bytes(self) -> int:
        """Every file the historian keeps, logs included."""
        files = [*self.folder.glob("*.duckdb*"), *self.folder.glob("wal-*.arrow")]
        return sum(p.stat().st_size for p in files if p.is_file())

    def tenant_points(self, tenant_id: int) -> int:
        # Recent points first: a compaction in between then counts some twice (the safe side)
        # rather than not at all.
        recent = self._recent.snapshot()
        in_recent = sum(
            int(pc.sum(pc.equal(t.column("tenant_id"), tenant_id)).as_py() or 0) for t in recent
        )
        row = _one(
            self._cursor(),
            "SELECT coalesce(sum(n), 0) FROM blocks WHERE tenant_id = ?",
            [tenant_id],
        )
        return in_recent + int(row[0])

    def stats(self) -> dict[str, int | float]:
        row = _one(self._cursor(), "SELECT count(*), coalesce(sum(n), 0) FROM blocks")
        return {
            "blocks": int(row[0]),
            "block_points": int(row[1]),
            "recent_points": self._recent.rows,
            "commits": self._commits,
            "points_written": self._points_written,
            "disk_bytes": self.disk_bytes(),
        }

    def close(self) -> None:
        """Stop the threads and checkpoint. Recent points stay in the log for the next start."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True  # no write is queued after this
            self._queue.put(_STOP)
        self._stop_maint.set()
        self._wake_maint.set()
        if self._maint_thread:
            self._maint_thread.join()
        self._writer.join()
        # Maintenance still running in another thread (retention) finishes first.
        with self._maint, self._wal_lock:
            self._wal.close()
            if self._wal.bytes == 0:
                self._wal.path.unlink(missing_ok=True)
            with contextlib.suppress(duckdb.Error):
                self.checkpoint()
            self._con.close()
