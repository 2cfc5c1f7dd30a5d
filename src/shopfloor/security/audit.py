"""The hash-chained, append-only audit log (docs/audit.md).

Every record carries ``prev_hash``, the hash of the record before it, and ``hash`` =
sha256(prev_hash || canonical JSON of its other fields, seq included). Editing, inserting,
deleting or reordering records therefore breaks the chain at the first damaged record. Deleting
the *newest* records leaves a shorter but intact chain, so the last (seq, hash) written is also
kept outside the table, in ``<data_dir>/audit.head`` (the head witness), and ``verify`` compares
the table's tail with it.

Retention removes a prefix of the chain; the removal is itself recorded (``audit.purged``) with
the hash of the last removed record as the anchor the first remaining record must point to.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import DAY_NS, now_ns
from shopfloor.registry.models import NAME_LEN, AuditRecord, AuditSettings
from shopfloor.registry.service import Registry
from shopfloor.security.principal import Principal

log = logging.getLogger(__name__)

GENESIS: Final = "0" * 64
MIN_RETENTION_DAYS: Final = 180  # Cybersecurity Law Art. 21: logs kept at least six months
PURGED: Final = "audit.purged"
PURGE_EVERY_S: Final = 86400.0
PURGE_FIRST_AFTER_S: Final = 60.0
HEAD_FILE: Final = "audit.head"
Outcome = Literal["ok", "denied", "failed"]
OUTCOMES: Final = ("ok", "denied", "failed")

# Detail keys whose values are secrets: redacted even if a caller passes them by mistake.
_SECRET_KEYS: Final = frozenset(
    {"password", "secret", "token", "key", "api_key", "apikey", "totp", "otp", "code"}
)
_SECRET_SUFFIXES: Final = ("_password", "_secret", "_token", "_key", "_otp")
REDACTED: Final = "[redacted]"

# The fields a record's hash covers, in the order exports list them.
HASHED_FIELDS: Final = (
    "seq",
    "ts_ns",
    "actor",
    "role",
    "tenant_id",
    "action",
    "object",
    "outcome",
    "source",
    "details",
)
EXPORT_FIELDS: Final = (*HASHED_FIELDS, "prev_hash", "hash")


# -- hashing -----------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """The one serialisation hashes are taken over (sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    body = canonical_json({k: fields[k] for k in HASHED_FIELDS})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def clean_details(value: Any) -> Any:
    """Details as plain JSON (so the hash is reproducible), with secret-named keys redacted."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _is_secret_key(str(k)) else clean_details(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [clean_details(v) for v in value]
        return sorted(items, key=canonical_json) if isinstance(value, set | frozenset) else items
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    ts_ns: int
    actor: str
    role: str
    tenant_id: int | None
    action: str
    object: str
    outcome: str
    source: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def ts(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ns / 1e9, UTC)

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in EXPORT_FIELDS}


def _entry(row: AuditRecord) -> AuditEntry:
    try:
        details = json.loads(row.details)
    except ValueError:
        details = {"unparsable": row.details}  # verify reports it as a hash mismatch
    return AuditEntry(
        seq=row.seq,
        ts_ns=row.ts_ns,
        actor=row.actor,
        role=row.role,
        tenant_id=row.tenant_id,
        action=row.action,
        object=row.object,
        outcome=row.outcome,
        source=row.source,
        details=details if isinstance(details, dict) else {"value": details},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What ``records``/``export`` return; ``tenant_id`` None with ``all_tenants`` False means
    platform-level records only."""

    tenant_id: int | None = None
    all_tenants: bool = False
    since_ns: int | None = None
    until_ns: int | None = None
    actor: str | None = None
    action: str | None = None  # exact, or a prefix when it ends with "*"
    outcome: str | None = None
    after_seq: int = 0


@dataclass(frozen=True, slots=True)
class PurgeResult:
    removed: int
    up_to_seq: int | None
    anchor: str | None
    cutoff_ns: int
    retention_days: int


DamageKind = Literal[
    "hash-mismatch",  # a record's fields were edited
    "chain-break",  # a record was inserted, replaced or moved
    "seq-gap",  # records were deleted from the middle
    "head-removed",  # records were deleted from the start without a purge record
    "truncated",  # the newest records were deleted (the head witness is ahead)
    "witness-mismatch",  # the head witness names a record the table holds differently
    "witness-missing",  # records exist but the head witness file is gone
]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_seq: int | None
    last_seq: int | None
    bad_seq: int | None = None
    kind: DamageKind | None = None
    message: str = "audit chain intact"
    # Records after the head witness: left by a crash between commit and witness write, or by
    # two processes racing; not damage (removal always shows), but reported.
    unwitnessed: int = 0


class ChainChecker:
    """Walks records in seq order and reports the first damage; shared by ``verify`` (the
    table) and ``verify_export`` (an auditor's offline copy)."""

    def __init__(self, anchors: Mapping[int, str]) -> None:
        # first remaining seq -> the prev_hash a purge record says it must carry
        self.anchors = anchors
        self.prev: Mapping[str, Any] | None = None
        self.first: Mapping[str, Any] | None = None
        self.checked = 0

    def feed(self, rec: Mapping[str, Any]) -> tuple[DamageKind, str] | None:
        seq = int(rec["seq"])
        prev = self.prev
        if prev is None:
            self.first = rec
            if seq == 1:
                if rec["prev_hash"] != GENESIS:
                    return "chain-break", f"record {seq} does not start from the genesis hash"
            elif self.anchors.get(seq) != rec["prev_hash"]:
                return (
                    "head-removed",
                    f"records before {seq} are missing and no audit.purged record accounts "
                    "for their removal",
                )
        else:
            if seq != int(prev["seq"]) + 1:
                return "seq-gap", f"records {int(prev['seq']) + 1}..{seq - 1} are missing"
            if rec["prev_hash"] != prev["hash"]:
                return (
                    "chain-break",
                    f"record {seq} does not follow record {prev['seq']} (inserted or moved)",
                )
        if record_hash(str(rec["prev_hash"]), rec) != rec["hash"]:
            return "hash-mismatch", f"record {seq} was changed after it was written"
        self.prev = rec
        self.checked += 1
        return None


def purge_anchors(records: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """First-remaining-seq -> anchor hash, from audit.purged records."""
    out: dict[int, str] = {}
    for rec in records:
        d = rec["details"]
        if rec["action"] == PURGED and isinstance(d, Mapping):
            up_to, anchor = d.get("up_to_seq"), d.get("anchor")
            if isinstance(up_to, int) and isinstance(anchor, str):
                out[up_to + 1] = anchor
    return out


def _parse_export_line(fmt: str, row: Mapping[str, Any]) -> dict[str, Any]:
    if fmt == "jsonl":
        return dict(row)
    rec: dict[str, Any] = dict(row)
    rec["seq"], rec["ts_ns"] = int(row["seq"]), int(row["ts_ns"])
    rec["tenant_id"] = int(row["tenant_id"]) if row["tenant_id"] else None
    rec["details"] = json.loads(row["details"])
    return rec


def read_export(path: Path) -> Iterator[dict[str, Any]]:
    """Records from a JSONL or CSV export file (by suffix; JSONL otherwise)."""
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(fh):
                yield _parse_export_line("csv", row)
        else:
            for line in fh:
                if line.strip():
                    yield _parse_export_line("jsonl", json.loads(line))


def verify_export(records: Iterable[Mapping[str, Any]]) -> VerifyResult:
    """Check an exported, whole-platform chain offline (no head witness: the export's end is
    its head). The anchor of a purged prefix is taken from the export's purge records."""
    recs = list(records)
    checker = ChainChecker(purge_anchors(recs))
    for rec in recs:
        damage = checker.feed(rec)
        if damage:
            return VerifyResult(
                False,
                checker.checked,
                _seq(checker.first),
                int(rec["seq"]),
                int(rec["seq"]),
                damage[0],
                damage[1],
            )
    last = int(checker.prev["seq"]) if checker.prev else None
    return VerifyResult(True, checker.checked, _seq(checker.first), last)


def _seq(rec: Mapping[str, Any] | None) -> int | None:
    return int(rec["seq"]) if rec is not None else None


# -- the head witness --------------------------------------------------------------------------


def read_witness(path: Path) -> tuple[int, str] | None:
    try:
        data = json.loads(path.read_text())
        return int(data["seq"]), str(data["hash"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return (-1, "unreadable")


def write_witness(path: Path, seq: int, digest: str) -> None:
    """Atomically replace the witness and make it durable before returning."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    with tmp.open("w") as fh:
        fh.write(json.dumps({"seq": seq, "hash": digest}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# -- the service -------------------------------------------------------------------------------


class AuditLog:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        *,
        clock: Callable[[], int] = now_ns,
        head_path: Path | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock  # tests inject one to write records "days ago"
        self.head_path = head_path or settings.data_dir / HEAD_FILE
        # Appends are serialised in this process; across processes SQLite's write lock (the
        # IMMEDIATE transaction of Registry._write) serialises them, as the last record is
        # read inside the same transaction that appends the next.
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------------

    def record(
        self,
        action: str,
        obj: str,
        outcome: str,
        *,
        principal: Principal | None = None,
        actor: str | None = None,
        role: str | None = None,
        tenant_id: int | None = None,
        source: str = "-",
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one record; returns its sequence number.

        With a ``principal``, actor, role and tenant come from it (explicit arguments win) and
        its user, token and grant ids go into the details.
        """
        if outcome not in OUTCOMES:
            raise BadInput(f"outcome must be one of {', '.join(OUTCOMES)}", "outcome")
        extra: dict[str, Any] = {}
        if principal is not None:
            actor = actor or principal.name
            role = role or principal.role_names
            if tenant_id is None and principal.tenant is not None:
                tenant_id = principal.tenant.id
            for key in ("user_id", "token_id", "grant_id"):
                value = getattr(principal, key)
                if value is not None:
                    extra[key] = value
        fields: dict[str, Any] = {
            "ts_ns": self.clock(),
            "actor": (actor or "anonymous")[:NAME_LEN],
            "role": (role or "-")[:NAME_LEN],
            "tenant_id": tenant_id,
            "action": action[:NAME_LEN],
            "object": obj,
            "outcome": outcome,
            "source": (source or "-")[:NAME_LEN],
            "details": clean_details({**extra, **(details or {})}),
        }
        with self._lock:
            with self.registry._write() as s:
                seq, digest = self._append(s, fields)
            self._witness(seq, digest)
        return seq

    def _append(self, s: Session, fields: dict[str, Any]) -> tuple[int, str]:
        """Insert after the current last record, inside the caller's write transaction."""
        last = s.execute(
            select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
        ).first()
        if last is None:
            seq, prev = 1, GENESIS
        else:
            seq, prev = last.seq + 1, last.hash
        fields = {**fields, "seq": seq}
        digest = record_hash(prev, fields)
        s.add(
            AuditRecord(
                seq=seq,
                ts_ns=fields["ts_ns"],
                actor=fields["actor"],
                role=fields["role"],
                tenant_id=fields["tenant_id"],
                action=fields["action"],
                object=fields["object"],
                outcome=fields["outcome"],
                source=fields["source"],
                details=canonical_json(fields["details"]),
                prev_hash=prev,
                hash=digest,
            )
        )
        s.flush()
        return seq, digest

    def _witness(self, seq: int, digest: str) -> None:
        try:
            write_witness(self.head_path, seq, digest)
        except OSError:
            # The record is committed; verify will report it as unwitnessed, not lost.
            log.exception("could not write the audit head witness %s", self.head_path)

    # -- reading -------------------------------------------------------------------------------

    def records(self, flt: AuditFilter, limit: int | None = 100) -> list[AuditEntry]:
        with self.registry._read() as s:
            return [_entry(r) for r in s.scalars(_query(flt, limit))]

    def newest(self, flt: AuditFilter, limit: int) -> list[AuditEntry]:
        """The last ``limit`` matching records, oldest first."""
        with self.registry._read() as s:
            return [_entry(r) for r in s.scalars(_query(flt, limit, newest_first=True))][::-1]

    def iter_records(self, flt: AuditFilter, page: int = 1000) -> Iterator[AuditEntry]:
        """Every matching record in seq order, read in pages (one short read each)."""
        after = flt.after_seq
        while True:
            batch = self.records(_after(flt, after), page)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].seq

    def count(self) -> int:
        with self.registry._read() as s:
            return int(s.scalar(select(func.count()).select_from(AuditRecord)) or 0)

    # -- retention -----------------------------------------------------------------------------

    def _settings_row(self, s: Session) -> AuditSettings:
        row = s.get(AuditSettings, 1)
        if row is None:
            row = AuditSettings(id=1, retention_days=self.settings.audit_retention_days)
            s.add(row)
            s.flush()
        return row

    def retention_days(self) -> int:
        with self.registry._read() as s:
            row = s.get(AuditSettings, 1)
            return row.retention_days if row else self.settings.audit_retention_days

    def settings_info(self) -> tuple[int, datetime | None, str | None]:
        with self.registry._read() as s:
            row = s.get(AuditSettings, 1)
            if row is None:
                return self.settings.audit_retention_days, None, None
            return row.retention_days, row.updated_at, row.updated_by

    def set_retention(
        self, days: int, *, principal: Principal | None = None, source: str = "-"
    ) -> int:
        """Change the retention (>= 180 days); the change is audited with old and new value.

        The caller checks the audit.settings permission (the API route, via roles.py).
        """
        if isinstance(days, bool) or not isinstance(days, int) or days < MIN_RETENTION_DAYS:
            raise BadInput(
                f"retention must be a whole number of days, at least {MIN_RETENTION_DAYS}",
                "retention_days",
            )
        actor = principal.name if principal else "system"
        with self._lock:
            with self.registry._write() as s:
                row = self._settings_row(s)
                old = row.retention_days
                row.retention_days = days
                row.updated_at = datetime.fromtimestamp(self.clock() / 1e9, UTC)
                row.updated_by = actor
                fields = self._fields(
                    "audit.settings.changed",
                    "retention_days",
                    principal,
                    source,
                    {"old_retention_days": old, "new_retention_days": days},
                )
                seq, digest = self._append(s, fields)
            self._witness(seq, digest)
        return old

    def purge(
        self,
        *,
        principal: Principal | None = None,
        actor: str | None = None,
        source: str = "-",
    ) -> PurgeResult:
        """Remove records older than the live retention, keeping the chain verifiable.

        Only a prefix of the chain goes (up to the first record that is young enough, so a
        clock step backwards never removes a young record); the removal is recorded in the
        same transaction with the last removed hash as the anchor. The caller checks the
        audit.purge permission.
        """
        with self._lock:
            with self.registry._write() as s:
                days = self._settings_row(s).retention_days
                cutoff = self.clock() - days * DAY_NS
                first_young = s.scalar(
                    select(func.min(AuditRecord.seq)).where(AuditRecord.ts_ns >= cutoff)
                )
                q = select(AuditRecord.seq, AuditRecord.hash)
                if first_young is not None:
                    q = q.where(AuditRecord.seq < first_young)
                last = s.execute(q.order_by(AuditRecord.seq.desc()).limit(1)).first()
                if last is None:
                    return PurgeResult(0, None, None, cutoff, days)
                removed = int(
                    s.scalar(
                        select(func.count())
                        .select_from(AuditRecord)
                        .where(AuditRecord.seq <= last.seq)
                    )
                    or 0
                )
                s.execute(delete(AuditRecord).where(AuditRecord.seq <= last.seq))
                details = {
                    "removed": removed,
                    "up_to_seq": last.seq,
                    "anchor": last.hash,
                    "retention_days": days,
                    "cutoff_ns": cutoff,
                }
                fields = self._fields(PURGED, f"up_to_seq={last.seq}", principal, source, details)
                if actor:
                    fields["actor"] = actor[:NAME_LEN]
                seq, digest = self._append(s, fields)
            self._witness(seq, digest)
        log.info("audit purge removed %d records up to seq %d", removed, last.seq)
        return PurgeResult(removed, last.seq, last.hash, cutoff, days)

    def _fields(
        self,
        action: str,
        obj: str,
        principal: Principal | None,
        source: str,
        details: Mapping[str, Any],
    ) -> dict[str, Any]:
        extra = {"user_id": principal.user_id} if principal and principal.user_id else {}
        return {
            "ts_ns": self.clock(),
            "actor": principal.name if principal else "system",
            "role": principal.role_names if principal else "-",
            "tenant_id": principal.tenant.id if principal and principal.tenant else None,
            "action": action,
            "object": obj,
            "outcome": "ok",
            "source": source[:NAME_LEN],
            "details": clean_details({**extra, **details}),
        }

    async def purge_loop(
        self, every_s: float = PURGE_EVERY_S, first_after_s: float = PURGE_FIRST_AFTER_S
    ) -> None:
        """The daily retention run of a serving platform (Platform.start_background).

        The first run waits a minute, so start-up (and a test's short-lived app) is not
        competing with it for the registry's write lock.
        """
        await asyncio.sleep(first_after_s)
        while True:
            try:
                result = await asyncio.to_thread(self.purge, actor="system:retention")
                if result.removed:
                    log.info("audit retention removed %d records", result.removed)
            except Exception:
                log.exception("audit retention run failed; will retry")
            await asyncio.sleep(every_s)

    # -- verification --------------------------------------------------------------------------

    def verify(self, progress: Callable[[int, int], None] | None = None) -> VerifyResult:
        """Walk the whole chain and compare its tail with the head witness.

        ``progress(done, total)`` is called every few thousand records (the CLI's bar).
        """
        # The witness first, then one read transaction (one WAL snapshot): appends racing the
        # walk can only put the table ahead of the witness, never behind it.
        witness = read_witness(self.head_path)
        with self.registry._read() as s:
            total = int(s.scalar(select(func.count()).select_from(AuditRecord)) or 0)
            purges = s.execute(
                select(AuditRecord.action, AuditRecord.details).where(AuditRecord.action == PURGED)
            )
            anchors = purge_anchors({"action": a, "details": _loads(d)} for a, d in purges)
            checker = ChainChecker(anchors)
            after, page = 0, 5000
            while True:
                batch = [_entry(r) for r in s.scalars(_query(_everything(after), page))]
                for entry in batch:
                    damage = checker.feed(entry.as_dict())
                    if damage:
                        return VerifyResult(
                            False,
                            checker.checked,
                            _seq(checker.first),
                            entry.seq,
                            entry.seq,
                            damage[0],
                            damage[1],
                        )
                if progress:
                    progress(checker.checked, total)
                if len(batch) < page:
                    break
                after = batch[-1].seq
            named = None
            if (
                witness is not None
                and checker.prev is not None
                and witness[0] < checker.prev["seq"]
            ):
                hit = s.scalars(select(AuditRecord).where(AuditRecord.seq == witness[0])).first()
                named = _entry(hit).hash if hit else None
        first, last = _seq(checker.first), _seq(checker.prev)
        return self._check_witness(witness, named, checker.checked, first, last, checker.prev)

    def _check_witness(
        self,
        witness: tuple[int, str] | None,
        named: str | None,
        checked: int,
        first: int | None,
        last: int | None,
        tail: Mapping[str, Any] | None,
    ) -> VerifyResult:
        if witness is None:
            if tail is None:
                return VerifyResult(True, 0, None, None, message="audit log is empty")
            return VerifyResult(
                False,
                checked,
                first,
                last,
                last,
                "witness-missing",
                f"the head witness {self.head_path} is missing; records after seq {last} may "
                "have been deleted",
            )
        w_seq, w_hash = witness
        if tail is None or last is None or w_seq > last:
            have = "no records" if last is None else f"the last record is {last}"
            return VerifyResult(
                False,
                checked,
                first,
                last,
                (last or 0) + 1,
                "truncated",
                f"the newest records were deleted: the head witness names record {w_seq}, {have}",
            )
        if w_seq == last:
            if tail["hash"] != w_hash:
                return VerifyResult(
                    False,
                    checked,
                    first,
                    last,
                    last,
                    "witness-mismatch",
                    f"record {last} differs from the one the head witness names",
                )
            return VerifyResult(True, checked, first, last, message="audit chain intact")
        # The table runs ahead of the witness: the named record must still be the same one.
        if named != w_hash:
            return VerifyResult(
                False,
                checked,
                first,
                last,
                w_seq,
                "witness-mismatch",
                f"record {w_seq} differs from the one the head witness names",
            )
        return VerifyResult(
            True,
            checked,
            first,
            last,
            message=f"audit chain intact; {last - w_seq} record(s) after the head witness",
            unwitnessed=last - w_seq,
        )


def _query(flt: AuditFilter, limit: int | None, newest_first: bool = False) -> Select[AuditRecord]:
    q = select(AuditRecord).where(AuditRecord.seq > flt.after_seq)
    if not flt.all_tenants:
        q = q.where(
            AuditRecord.tenant_id.is_(None)
            if flt.tenant_id is None
            else AuditRecord.tenant_id == flt.tenant_id
        )
    if flt.since_ns is not None:
        q = q.where(AuditRecord.ts_ns >= flt.since_ns)
    if flt.until_ns is not None:
        q = q.where(AuditRecord.ts_ns < flt.until_ns)
    if flt.actor:
        q = q.where(AuditRecord.actor == flt.actor)
    if flt.action:
        if flt.action.endswith("*"):
            q = q.where(AuditRecord.action.startswith(flt.action[:-1], autoescape=True))
        else:
            q = q.where(AuditRecord.action == flt.action)
    if flt.outcome:
        q = q.where(AuditRecord.outcome == flt.outcome)
    q = q.order_by(AuditRecord.seq.desc() if newest_first else AuditRecord.seq)
    return q if limit is None else q.limit(limit)


def _everything(after: int) -> AuditFilter:
    return AuditFilter(all_tenants=True, after_seq=after)


def _after(flt: AuditFilter, after: int) -> AuditFilter:
    return AuditFilter(
        tenant_id=flt.tenant_id,
        all_tenants=flt.all_tenants,
        since_ns=flt.since_ns,
        until_ns=flt.until_ns,
        actor=flt.actor,
        action=flt.action,
        outcome=flt.outcome,
        after_seq=after,
    )


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
