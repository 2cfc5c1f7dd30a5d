"""The egress policy: what data may leave, by which channel, to which region.

Every path by which data leaves the platform (the HTTP export, the CLI export, later
webhooks, MQTT bridges and federation) calls ONE entry point before sending anything::

    policy = EgressPolicy(platform.registry, platform.settings, platform.audit)
    decision = policy.check(
        principal, channel="webhook", destination="https://erp.example/in",
        destination_region="eu", signal_ids=[...], source=client_ip,
    )  # raises Forbidden (403) naming the blocking signals; audited either way

(``check_local(tenant_id, actor, ...)`` does the same for a local operator with no
principal, e.g. the CLI; ``decide(...)`` answers without auditing or raising, for previews.)
``destination_region`` None means this deployment's own region (``settings.region``). An
HTTP download goes to the caller, so its region is always this deployment's:
``download_region`` refuses any other (a caller-declared region cannot be trusted).

Rules, per signal, on its effective labels (security/labels.py):

1. ``core`` -> denied. No approval can lift it.
2. ``important`` with a residency other than the destination region -> denied, approval or
   not: data of that tier stays in its region.
3. ``important`` -> allowed only under a live approval covering it.
4. ``personal_data`` -> allowed only under a live approval covering it.
5. ``general`` with a residency other than the destination region -> needs a live approval.
6. otherwise allowed.

The egress is allowed when every signal is. A live approval is one a security admin
approved (``egress.approve``), not revoked, not expired, for the same tenant, channel,
destination and destination region, naming the signal or an asset above its device.

Approvals (:class:`EgressApprovals`) live in ``egress_approvals``. The table has no status
column, so the status is read from its timestamps: pending (neither ``approved_at`` nor
``revoked_at``), approved (``approved_at``; expired once ``expires_at`` passes), revoked
(both), rejected (``revoked_at`` without ``approved_at``; ``approved_by`` then names who
rejected it). The requested duration waits in ``subject`` until approval starts the clock.
A security admin bound below an asset sees and decides only requests whose every signal and
asset lies in their subtree; others answer 404, exactly as an unknown id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import select

from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput, Conflict, Forbidden, NotFound
from shopfloor.core.types import Classification
from shopfloor.registry.models import Device, EgressApproval, Signal, utcnow
from shopfloor.registry.service import Registry
from shopfloor.security.audit import AuditLog
from shopfloor.security.labels import EffectiveLabel, LabelService, check_region
from shopfloor.security.principal import Principal, Scope
from shopfloor.security.roles import Permission

Clock = Callable[[], datetime]

MAX_DURATION_S: Final = 366 * 86400
_NAMED: Final = 10  # blocking signals named in an error message
_AUDITED_REASONS: Final = 100  # per-signal reasons kept in one audit record
_CHUNK: Final = 5000  # signal ids per IN (...) query, well under SQLite's variable limit


class Verdict(StrEnum):
    ALLOWED = "allowed"
    APPROVED = "approved"  # allowed under a live approval
    NEEDS_APPROVAL = "needs_approval"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class SignalVerdict:
    signal_id: int
    key: str
    verdict: Verdict
    reason: str
    approval_id: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # True when not allowed but approvals could lift every block (nothing is denied).
    needs_approval: bool
    signals: tuple[SignalVerdict, ...]
    approval_ids: tuple[int, ...] = ()

    @property
    def approval_id(self) -> int | None:
        return self.approval_ids[0] if self.approval_ids else None

    @property
    def blocking(self) -> list[SignalVerdict]:
        return [v for v in self.signals if v.verdict in (Verdict.DENIED, Verdict.NEEDS_APPROVAL)]

    @property
    def reasons(self) -> dict[str, str]:
        return {v.key: v.reason for v in self.signals}


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"
    REJECTED = "rejected"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class ApprovalInfo:
    id: int
    tenant_id: int
    channel: str
    destination: str
    destination_region: str
    signals: tuple[str, ...]  # "device/signal" keys named by the request
    assets: tuple[int, ...]  # asset subtrees named by the request
    duration_s: int
    reason: str
    requested_by: str
    created_at: datetime
    status: ApprovalStatus
    decided_by: str | None
    approved_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


def identity(principal: Principal) -> str:
    """Who a principal is, across their sessions and tokens (separation of duties)."""
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return f"{principal.kind.value}:{principal.name}"


def check_channel(value: str) -> str:
    if not value or len(value) > 32 or not value.replace("_", "").isalnum():
        raise BadInput(
            "channel must be 1-32 letters, digits or '_' (export, webhook, mqtt_bridge)",
            "channel",
        )
    return value


def check_destination(value: str) -> str:
    if not value.strip() or len(value) > 2000:
        raise BadInput("destination must be 1-2000 characters", "destination")
    return value


def _reason_of(label: EffectiveLabel, region: str) -> tuple[Verdict, str]:
    """The rule that applies to one signal, before approvals are looked at."""
    where = f" (from {label.classification_from})" if label.classification_from else ""
    if label.classification is Classification.CORE:
        return Verdict.DENIED, f"classified core{where}: core data never leaves"
    res = label.residency
    if label.classification is Classification.IMPORTANT:
        if res is not None and res != region:
            return (
                Verdict.DENIED,
                f"important data resident in {res!r} (from {label.residency_from}) stays in "
                f"its region; destination region is {region!r}",
            )
        return Verdict.NEEDS_APPROVAL, f"classified important{where}: needs an approval"
    if label.personal_data:
        return (
            Verdict.NEEDS_APPROVAL,
            f"personal data (from {label.personal_data_from}): needs an approval",
        )
    if res is not None and res != region:
        return (
            Verdict.NEEDS_APPROVAL,
            f"resident in {res!r} (from {label.residency_from}), destination region is "
            f"{region!r}: needs an approval",
        )
    return Verdict.ALLOWED, "general data"


@dataclass(frozen=True, slots=True)
class _Live:
    id: int
    signals: frozenset[int]
    assets: frozenset[int]  # the named subtrees, expanded


class EgressPolicy:
    """Decides egress on labels and approvals; ``check`` audits and raises (see module)."""

    def __init__(
        self, registry: Registry, settings: Settings, audit: AuditLog, clock: Clock = utcnow
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self.labels = LabelService(registry)

    def region(self, destination_region: str | None) -> str:
        if destination_region is None:
            return self.settings.region
        return check_region(destination_region, "destination_region")

    def download_region(self, destination_region: str | None) -> str:
        """The destination region of an HTTP download: always this deployment's.

        The file goes to the caller, whose request reached this deployment; a region the
        caller names cannot be verified, and trusting it would let anyone declare ``cn``
        and take ``cn``-resident data out of an ``eu`` deployment without an approval.
        Naming the deployment's own region is accepted (and changes nothing)."""
        here = self.settings.region
        if destination_region is not None and destination_region != here:
            raise BadInput(
                f"a download goes to the caller, in this deployment's region {here!r}: leave "
                f"destination_region out (other regions are for webhooks and bridges)",
                "destination_region",
            )
        return here

    def decide(
        self,
        tenant_id: int,
        channel: str,
        destination: str,
        destination_region: str | None,
        signal_ids: Iterable[int],
    ) -> Decision:
        """The decision for these signals; no audit, no exception (NotFound aside)."""
        check_channel(channel)
        check_destination(destination)
        region = self.region(destination_region)
        labels = self.labels.effective(tenant_id, signal_ids)
        first = {sid: _reason_of(lab, region) for sid, lab in labels.items()}
        live: list[_Live] = []
        if any(v is Verdict.NEEDS_APPROVAL for v, _ in first.values()):
            live = self._live(tenant_id, channel, destination, region)
        verdicts: list[SignalVerdict] = []
        used: dict[int, None] = {}
        for sid, lab in labels.items():
            verdict, reason = first[sid]
            approval = None
            if verdict is Verdict.NEEDS_APPROVAL:
                approval = next(
                    (
                        a.id
                        for a in live
                        if sid in a.signals
                        or (lab.asset_id is not None and lab.asset_id in a.assets)
                    ),
                    None,
                )
                if approval is not None:
                    used[approval] = None
                    verdict, reason = Verdict.APPROVED, f"{reason}; approved by #{approval}"
            verdicts.append(SignalVerdict(sid, lab.key, verdict, reason, approval))
        denied = any(v.verdict is Verdict.DENIED for v in verdicts)
        pending = any(v.verdict is Verdict.NEEDS_APPROVAL for v in verdicts)
        return Decision(
            allowed=not denied and not pending,
            needs_approval=pending and not denied,
            signals=tuple(verdicts),
            approval_ids=tuple(sorted(used)),
        )

    def check(
        self,
        principal: Principal,
        channel: str,
        destination: str,
        destination_region: str | None,
        signal_ids: Iterable[int],
        *,
        source: str = "-",
    ) -> Decision:
        """Decide, audit the decision, and raise Forbidden unless allowed."""
        if principal.tenant is None:
            raise Forbidden("egress works inside a tenant")
        return self._checked(
            principal.tenant.id,
            channel,
            destination,
            destination_region,
            signal_ids,
            {"principal": principal, "source": source},
        )

    def check_local(
        self,
        tenant_id: int,
        actor: str,
        channel: str,
        destination: str,
        destination_region: str | None,
        signal_ids: Iterable[int],
        *,
        role: str = "local",
    ) -> Decision:
        """``check`` for a local operator with no principal (the CLI: "cli:<os user>")."""
        return self._checked(
            tenant_id,
            channel,
            destination,
            destination_region,
            signal_ids,
            {"actor": actor, "role": role, "source": "local"},
        )

    def _checked(
        self,
        tenant_id: int,
        channel: str,
        destination: str,
        destination_region: str | None,
        signal_ids: Iterable[int],
        who: dict[str, Any],
    ) -> Decision:
        ids = list(signal_ids)
        decision = self.decide(tenant_id, channel, destination, destination_region, ids)
        region = self.region(destination_region)
        shown = [v for v in decision.signals if v.verdict is not Verdict.ALLOWED]
        self.audit.record(
            "egress",
            f"{channel}:{destination}",
            "ok" if decision.allowed else "denied",
            tenant_id=tenant_id,
            details={
                "channel": channel,
                "destination": destination,
                "region": region,
                "signals": len(decision.signals),
                "decision": "allowed" if decision.allowed else "denied",
                "approvals": list(decision.approval_ids),
                "reasons": {v.key: v.reason for v in shown[:_AUDITED_REASONS]},
            },
            **who,
        )
        if not decision.allowed:
            raise Forbidden(_refusal(decision, channel, destination, region))
        return decision

    def _live(self, tenant_id: int, channel: str, destination: str, region: str) -> list[_Live]:
        now = self.clock()
        with self.registry._read() as s:
            rows = s.scalars(
                select(EgressApproval)
                .where(
                    EgressApproval.tenant_id == tenant_id,
                    EgressApproval.channel == channel,
                    EgressApproval.destination == destination,
                    EgressApproval.destination_region == region,
                    EgressApproval.approved_at.is_not(None),
                    EgressApproval.revoked_at.is_(None),
                    EgressApproval.expires_at > now,
                )
                .order_by(EgressApproval.id)
            ).all()
        out = []
        for row in rows:
            subject = _subject(row)
            roots = subject.get("assets", [])
            assets = self.registry.asset_subtree(tenant_id, roots) if roots else frozenset()
            out.append(_Live(row.id, frozenset(subject.get("signals", [])), assets))
        return out


def _refusal(decision: Decision, channel: str, destination: str, region: str) -> str:
    blocking = decision.blocking
    named = "; ".join(f"{v.key}: {v.reason}" for v in blocking[:_NAMED])
    more = f"; and {len(blocking) - _NAMED} more" if len(blocking) > _NAMED else ""
    msg = f"egress refused ({channel} to {destination!r}, region {region!r}): {named}{more}"
    if decision.needs_approval:
        msg += (
            f". File an approval request (POST /api/v1/egress/requests with channel {channel!r},"
            f" destination {destination!r}, destination_region {region!r} and these signals)"
            " for a security admin to approve"
        )
    return msg


def _subject(row: EgressApproval) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row.subject or "{}")
    return value


def _status(row: EgressApproval, now: datetime) -> ApprovalStatus:
    if row.approved_at is None:
        return ApprovalStatus.PENDING if row.revoked_at is None else ApprovalStatus.REJECTED
    if row.revoked_at is not None:
        return ApprovalStatus.REVOKED
    if row.expires_at is not None and row.expires_at <= now:
        return ApprovalStatus.EXPIRED
    return ApprovalStatus.APPROVED


def _info(row: EgressApproval, now: datetime) -> ApprovalInfo:
    subject = _subject(row)
    return ApprovalInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        channel=row.channel,
        destination=row.destination,
        destination_region=row.destination_region,
        signals=tuple(subject.get("keys", [])),
        assets=tuple(subject.get("assets", [])),
        duration_s=int(subject.get("duration_s", 0)),
        reason=row.reason,
        requested_by=row.requested_by,
        created_at=row.created_at,
        status=_status(row, now),
        decided_by=row.approved_by,
        approved_at=row.approved_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class EgressApprovals:
    """Requests for egress approval and a security admin's decisions on them (audited)."""

    def __init__(
        self, registry: Registry, settings: Settings, audit: AuditLog, clock: Clock = utcnow
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self.labels = LabelService(registry)

    def request(
        self,
        scope: Scope,
        *,
        channel: str,
        destination: str,
        destination_region: str | None,
        signals: Sequence[str] = (),
        asset_id: int | None = None,
        reason: str,
        duration_s: int,
        source: str = "-",
    ) -> ApprovalInfo:
        """File a pending request; the signals (and asset) must be in the caller's scope."""
        check_channel(channel)
        check_destination(destination)
        region = (
            self.settings.region
            if destination_region is None
            else check_region(destination_region, "destination_region")
        )
        if not signals and asset_id is None:
            raise BadInput("name the signals or an asset subtree the approval covers", "signals")
        if not reason.strip():
            raise BadInput("say why the data must leave", "reason")
        if not 60 <= duration_s <= MAX_DURATION_S:
            raise BadInput(f"must be between 60 and {MAX_DURATION_S} seconds", "duration_s")
        keys = list(dict.fromkeys(signals))
        # Signals outside the caller's subtree answer exactly as unknown ones (no probing).
        ids = self.labels.scoped_signal_ids(scope, keys) if keys else []
        if asset_id is not None:
            if asset_id not in self.registry.asset_subtree(scope.tenant_id, [asset_id]):
                raise NotFound(f"asset {asset_id} not found")
            if not scope.allows_asset(asset_id):
                raise NotFound(f"asset {asset_id} not found")
        principal = scope.principal
        subject = {
            "signals": ids,
            "keys": keys,
            "assets": [] if asset_id is None else [asset_id],
            "duration_s": duration_s,
            "requester": identity(principal),
        }
        with self.registry._write() as s:
            row = EgressApproval(
                tenant_id=scope.tenant_id,
                channel=channel,
                destination=destination,
                destination_region=region,
                subject=json.dumps(subject),
                reason=reason,
                requested_by=principal.name,
                created_at=self.clock(),
            )
            s.add(row)
            s.flush()
            info = _info(row, self.clock())
        self._audit("egress.request", info, principal, source, {"reason": reason})
        return info

    def find(self, scope: Scope, *, approver: bool) -> list[ApprovalInfo]:
        """Requests the caller may see, newest first: their own, and for an ``approver``
        every request whose subject lies inside their scope (:meth:`_within`)."""
        now = self.clock()
        with self.registry._read() as s:
            rows = s.scalars(
                select(EgressApproval)
                .where(EgressApproval.tenant_id == scope.tenant_id)
                .order_by(EgressApproval.id.desc())
            ).all()
        me = identity(scope.principal)
        inside = self._within(scope, rows) if approver else [False] * len(rows)
        return [
            _info(r, now)
            for r, ok in zip(rows, inside, strict=True)
            if ok or _subject(r).get("requester") == me
        ]

    def get(self, tenant_id: int, approval_id: int) -> ApprovalInfo:
        with self.registry._read() as s:
            return _info(_row(s, tenant_id, approval_id), self.clock())

    def approve(self, scope: Scope, approval_id: int, source: str = "-") -> ApprovalInfo:
        """A security admin approves a pending request; its duration starts now."""
        return self._decide(scope, approval_id, approve=True, source=source)

    def reject(self, scope: Scope, approval_id: int, source: str = "-") -> ApprovalInfo:
        return self._decide(scope, approval_id, approve=False, source=source)

    def _decide(
        self, scope: Scope, approval_id: int, *, approve: bool, source: str
    ) -> ApprovalInfo:
        principal = scope.principal
        now = self.clock()
        action = "egress.approve" if approve else "egress.reject"
        self._check_within(scope, approval_id)
        with self.registry._write() as s:
            row = _row(s, scope.tenant_id, approval_id)
            status = _status(row, now)
            if status is not ApprovalStatus.PENDING:
                raise Conflict(f"egress request {approval_id} is {status.value}, not pending")
            if _subject(row).get("requester") == identity(principal):
                info = _info(row, now)
                refused = True
            else:
                refused = False
                row.approved_by = principal.name
                if approve:
                    row.approved_at = now
                    row.expires_at = now + timedelta(seconds=int(_subject(row)["duration_s"]))
                else:
                    row.revoked_at = now
                s.flush()
                info = _info(row, now)
        if refused:
            self._audit(action, info, principal, source, {"why": "own request"}, "denied")
            raise Forbidden("the requester cannot decide their own egress request")
        self._audit(action, info, principal, source, {})
        return info

    def revoke(self, scope: Scope, approval_id: int, source: str = "-") -> ApprovalInfo:
        """End a pending or approved request (its requester or a security admin)."""
        principal = scope.principal
        now = self.clock()
        with self.registry._read() as s:
            row = _row(s, scope.tenant_id, approval_id)
            mine = _subject(row).get("requester") == identity(principal)
            if not mine and not principal.holds(Permission.EGRESS_APPROVE, scope.tenant_id):
                raise Forbidden("only the requester or a security admin revokes an egress request")
        if not mine:
            self._check_within(scope, approval_id)
        with self.registry._write() as s:
            row = _row(s, scope.tenant_id, approval_id)
            status = _status(row, now)
            if status not in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED):
                raise Conflict(f"egress request {approval_id} is already {status.value}")
            row.revoked_at = now
            s.flush()
            info = _info(row, now)
        self._audit("egress.revoke", info, principal, source, {"was": status.value})
        return info

    def _within(self, scope: Scope, rows: Sequence[EgressApproval]) -> list[bool]:
        """Whether each request's subject lies inside ``scope``: every named signal's device
        and every named asset in the scope's subtree. A subtree-bound security admin decides
        only on their part of the tenant; a signal deleted since (no place) is outside."""
        if scope.whole_tenant:
            return [True] * len(rows)
        subjects = [_subject(r) for r in rows]
        wanted = {int(i) for sub in subjects for i in sub.get("signals", [])}
        places = self._places(scope.tenant_id, wanted)
        return [
            all(
                int(i) in places and scope.allows_asset(places[int(i)])
                for i in sub.get("signals", [])
            )
            and all(scope.allows_asset(int(a)) for a in sub.get("assets", []))
            for sub in subjects
        ]

    def _places(self, tenant_id: int, signal_ids: set[int]) -> dict[int, int | None]:
        """The asset of each signal's device (None: unplaced), in chunks of one query each."""
        out: dict[int, int | None] = {}
        ids = sorted(signal_ids)
        with self.registry._read() as s:
            for k in range(0, len(ids), _CHUNK):
                q = (
                    select(Signal.id, Device.asset_id)
                    .join(Device, Signal.device_id == Device.id)
                    .where(Signal.tenant_id == tenant_id, Signal.id.in_(ids[k : k + _CHUNK]))
                )
                out.update({int(sid): aid for sid, aid in s.execute(q)})
        return out

    def _check_within(self, scope: Scope, approval_id: int) -> None:
        """NotFound, exactly as for an unknown id, unless the request is inside ``scope``."""
        with self.registry._read() as s:
            row = _row(s, scope.tenant_id, approval_id)
        if not self._within(scope, [row])[0]:
            raise _not_found(approval_id)

    def _audit(
        self,
        action: str,
        info: ApprovalInfo,
        principal: Principal,
        source: str,
        extra: dict[str, Any],
        outcome: str = "ok",
    ) -> None:
        self.audit.record(
            action,
            f"egress_request:{info.id}",
            outcome,
            principal=principal,
            tenant_id=info.tenant_id,
            source=source,
            details={
                "channel": info.channel,
                "destination": info.destination,
                "region": info.destination_region,
                "signals": len(info.signals),
                "assets": list(info.assets),
                "status": info.status.value,
                **extra,
            },
        )


def _not_found(approval_id: int) -> NotFound:
    return NotFound(f"egress request {approval_id} not found")


def _row(s: Any, tenant_id: int, approval_id: int) -> EgressApproval:
    row: EgressApproval | None = s.get(EgressApproval, approval_id)
    if row is None or row.tenant_id != tenant_id:
        raise _not_found(approval_id)
    return row
