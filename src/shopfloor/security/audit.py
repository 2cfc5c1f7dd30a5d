"""The sealed, hash-chained, append-only audit log (docs/audit.md).

Every record carries ``prev_hash``, the seal of the record before it, and ``hash`` =
HMAC-SHA256(key, prev_hash || canonical JSON of its other fields, seq included), under the key
in ``settings.audit_key_file`` (default ``<data_dir>/audit.key``). Editing, inserting, deleting or
reordering records therefore breaks the chain at the first damaged record, and without the key
nobody can rebuild a consistent chain. Deleting the *newest* records leaves a shorter but intact
chain, so the last (seq, hash) written is also kept outside the table, in ``<data_dir>/audit.head``
(the head witness, sealed with the key too), and ``verify`` compares the table's tail with it.

The key file and a seq-0 witness are made together with the first record ever: from then on a
missing witness is damage, so an emptied table plus a deleted witness reads "log removed".

Retention removes a prefix of the chain; the removal is itself recorded (``audit.purged``) with
the hash of the last removed record as the anchor the first remaining record must point to.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
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
KEY_FILE: Final = "audit.key"
KEY_BYTES: Final = 32
KEY_SETTING: Final = "audit_key_file"  # the setting named in key errors
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


def record_hash(key: bytes, prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The record's seal: HMAC-SHA256 under the audit key, so only a key holder can make one."""
    body = canonical_json({k: fields[k] for k in HASHED_FIELDS})
    return hmac.new(key, (prev_hash + body).encode("utf-8"), hashlib.sha256).hexdigest()


# -- the key -----------------------------------------------------------------------------------


def audit_key_path(settings: Settings) -> Path:
    return settings.audit_key_file or settings.data_dir / KEY_FILE


def read_key(path: Path) -> bytes | None:
    """The key in ``path`` (32 raw bytes, or 64 hex digits for a key copied as text); None when
    there is no such file. Anything else is a BadInput naming the setting."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(
            f"cannot read the audit key file {path}: {exc.strerror or exc}", KEY_SETTING
        ) from None
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise BadInput(
        f"the audit key file {path} must hold {KEY_BYTES} bytes (or {2 * KEY_BYTES} hex "
        f"digits); it holds {len(data)} bytes",
        KEY_SETTING,
    )


def create_key(path: Path) -> bytes:
    """Make a new key file (mode 0600, durable); an existing one is read, never replaced."""
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = read_key(path)
        if existing is None:  # removed again in between: not worth a retry loop
            raise BadInput(f"the audit key file {path} vanished while made", KEY_SETTING) from None
        return existing
    except OSError as exc:
        raise BadInput(
            f"cannot create the audit key file {path}: {exc.strerror or exc}", KEY_SETTING
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)
    log.info("created the audit key %s", path)
    return key


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    "log-removed",  # the key shows records were written; table and witness are gone
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

    def __init__(self, anchors: Mapping[int, str], key: bytes) -> None:
        # first remaining seq -> the prev_hash a purge record says it must carry
        self.anchors = anchors
        self.key = key
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
        if not hmac.compare_digest(
            record_hash(self.key, str(rec["prev_hash"]), rec), str(rec["hash"])
        ):
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


def verify_export(records: Iterable[Mapping[str, Any]], key: bytes) -> VerifyResult:
    """Check an exported, whole-platform chain offline with the audit key (no head witness: the
    export's end is its head). The anchor of a purged prefix is taken from the export's purge
    records."""
    recs = list(records)
    checker = ChainChecker(purge_anchors(recs), key)
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


# What read_witness answers for a witness that does not parse or is not sealed with the key.
BAD_WITNESS: Final = (-1, "unreadable")
WitnessWrite = Literal["written", "behind", "missing", "unreadable"]


def witness_mac(key: bytes, seq: int, digest: str) -> str:
    """The witness's own seal: without it, someone who deleted the newest records could point
    the witness at the record now last (its hash is readable in the table)."""
    return hmac.new(key, f"audit.head\n{seq}\n{digest}".encode(), hashlib.sha256).hexdigest()


def read_witness(path: Path, key: bytes) -> tuple[int, str] | None:
    """(seq, hash) of the witness; None when there is none; BAD_WITNESS when it does not parse
    or its seal does not match the key."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return BAD_WITNESS
    try:
        seq, digest, mac = int(data["seq"]), str(data["hash"]), str(data["mac"])
    except (KeyError, TypeError, ValueError):
        return BAD_WITNESS
    if not hmac.compare_digest(mac, witness_mac(key, seq, digest)):
        return BAD_WITNESS
    return seq, digest


def write_witness(path: Path, key: bytes, seq: int, digest: str) -> None:
    """Atomically replace the witness and make it durable before returning (no checks: the
    appenders call ``advance_witness``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    body = {"seq": seq, "hash": digest, "mac": witness_mac(key, seq, digest)}
    with tmp.open("w") as fh:
        fh.write(json.dumps(body) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def advance_witness(
    path: Path, key: bytes, seq: int, digest: str, *, create: bool = False
) -> WitnessWrite:
    """Move the witness forward to (seq, digest).

    The write happens after the record's commit, outside the database lock, so two appenders
    (the server and a CLI command are separate processes) can finish in either order. Under an
    exclusive flock on ``<witness>.lock`` the on-disk witness is read and replaced only when
    ``seq`` is higher, so the witness never moves backwards. A missing or unreadable witness is
    left alone (it is the evidence ``verify`` reports; recreating it would hide a removal),
    except with ``create``: the seq-0 witness made together with the key.
    """
    lock_path = path.with_name(path.name + ".lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            current = read_witness(path, key)
            if current is None and not create:
                return "missing"
            if current == BAD_WITNESS:
                return "unreadable"
            if current is not None and current[0] >= seq:
                return "behind"
            write_witness(path, key, seq, digest)
            return "written"
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# -- the service -------------------------------------------------------------------------------


class AuditLog:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        *,
        clock: Callable[[], int] = now_ns,
        head_path: Path | None = None,
        key_path: Path | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock  # tests inject one to write records "days ago"
        self.head_path = head_path or settings.data_dir / HEAD_FILE
        self.key_path = key_path or audit_key_path(settings)
        # Loaded once for appending: a key file replaced while serving does not fork the chain.
        self._key: bytes | None = None
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
        key = self._append_key(table_empty=last is None)
        if last is None:
            seq, prev = 1, GENESIS
        else:
            seq, prev = last.seq + 1, last.hash
        fields = {**fields, "seq": seq}
        digest = record_hash(key, prev, fields)
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

    def _append_key(self, *, table_empty: bool) -> bytes:
        """The sealing key, made (with the seq-0 witness) by the first record ever.

        Called inside the append's write transaction, so two processes cannot both make one.
        """
        if self._key is not None:
            return self._key
        key = read_key(self.key_path)
        if key is None:
            if not table_empty:
                # A new key would seal records nobody can link to the old ones: refuse.
                raise BadInput(
                    f"the audit key file {self.key_path} is missing but the audit log holds "
                    "records sealed with it; restore the key file",
                    KEY_SETTING,
                )
            key = create_key(self.key_path)
            # The "chain started" fact: from now on a missing witness is damage.
            try:
                if advance_witness(self.head_path, key, 0, GENESIS, create=True) != "written":
                    log.error("audit head witness %s already existed at genesis", self.head_path)
            except OSError:
                log.exception("could not write the audit head witness %s", self.head_path)
        self._key = key
        return key

    def _witness(self, seq: int, digest: str) -> None:
        key = self._key
        assert key is not None  # _append loaded it
        try:
            outcome = advance_witness(self.head_path, key, seq, digest)
        except OSError:
            # The record is committed; verify will report it as unwitnessed, not lost.
            log.exception("could not write the audit head witness %s", self.head_path)
            return
        if outcome in ("missing", "unreadable"):
            log.error(
                "audit head witness %s is %s; left for verify to report (record %d unwitnessed)",
                self.head_path,
                outcome,
                seq,
            )

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
        # Read from disk each time (not the appenders' cached key): a replaced key file shows.
        key = read_key(self.key_path)
        if key is None:
            if self.count() == 0 and not self.head_path.exists():
                return VerifyResult(True, 0, None, None, message="audit log is empty")
            raise BadInput(
                f"the audit key file {self.key_path} is missing; the chain cannot be verified "
                "without the key it was sealed with",
                KEY_SETTING,
            )
        # The witness first, then one read transaction (one WAL snapshot): appends racing the
        # walk can only put the table ahead of the witness, never behind it.
        witness = read_witness(self.head_path, key)
        with self.registry._read() as s:
            total = int(s.scalar(select(func.count()).select_from(AuditRecord)) or 0)
            purges = s.execute(
                select(AuditRecord.action, AuditRecord.details).where(AuditRecord.action == PURGED)
            )
            anchors = purge_anchors({"action": a, "details": _loads(d)} for a, d in purges)
            checker = ChainChecker(anchors, key)
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
            if witness is not None and witness[0] == 0:
                named = GENESIS  # the witness made with the key, before any record
            elif (
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
                return VerifyResult(
                    False,
                    0,
                    None,
                    None,
                    None,
                    "log-removed",
                    f"the audit log was removed: the key file {self.key_path} shows that records "
                    f"were written, but the table is empty and the head witness {self.head_path} "
                    "is gone",
                )
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
        if witness == BAD_WITNESS:
            return VerifyResult(
                False,
                checked,
                first,
                last,
                last,
                "witness-mismatch",
                f"the head witness {self.head_path} is unreadable or not sealed with the audit key "
                "(forged or replaced)",
            )
        w_seq, w_hash = witness
        if w_seq == 0 and tail is None:
            return VerifyResult(True, 0, None, None, message="audit log is empty")
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
