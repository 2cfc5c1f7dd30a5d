"""Rules and alarms over HTTP: rule CRUD with the save-time check, alarm states, operator
actions (acknowledge, shelve, unshelve), history and flood figures.

Rules need ``rules.write`` to change and ``registry.read`` to read; operator actions need
``alarms.ack``. A role bound below an asset sees the rules on devices inside its subtree and
the alarms of those devices; rules on a device type are tenant-wide (403 for such a role).
Every change is audited by the security middleware. Store calls are blocking SQL, so the
routes are plain ``def``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response, WebSocket, WebSocketDisconnect, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopfloor.api import scoping
from shopfloor.api.deps import SESSION_COOKIE, TENANT_HEADER, get_platform, resolve_secret
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E400, E404, E409, E422, Responses, _err
from shopfloor.api.scoping import device_scope, scope_of
from shopfloor.core.errors import BadInput, Forbidden
from shopfloor.core.timeutil import now_ns, parse_duration, parse_instant, to_iso
from shopfloor.registry.models import NAME_LEN
from shopfloor.rules.alarm_flood import FLOOD_THRESHOLD, bad_actors, flood_figures
from shopfloor.rules.alarms import AlarmState, Priority
from shopfloor.rules.model import MACHINE_STATES
from shopfloor.rules.rule_actions import masked
from shopfloor.rules.store import AlarmInfo, HistoryEntry, RuleInfo, rule_not_found
from shopfloor.security.principal import Scope, scope_roots
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1", tags=["rules"])

Name = Annotated[str, Field(min_length=1, max_length=NAME_LEN, pattern=r"^[^/\x00-\x1f\x7f]+$")]
MAX_SECONDS = 10 * 365 * 86400.0  # delays, windows and timeouts: at most ten years
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
Number = Annotated[float, Field(ge=-1e300, le=1e300, allow_inf_nan=False)]
Deadband = Annotated[float, Field(ge=0, le=1e300, allow_inf_nan=False)]
Expression = Annotated[str, Field(min_length=1, max_length=2000)]
Comment = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]
MAX_BUCKETS = 10_000
MAX_HISTORY = 1000

Read = Annotated[Scope, Depends(scope_of(Permission.REGISTRY_READ))]
Write = Annotated[Scope, Depends(scope_of(Permission.RULES_WRITE))]
Ack = Annotated[Scope, Depends(device_scope(Permission.ALARMS_ACK, "device"))]
Plat = Annotated[Platform, Depends(get_platform)]

E403: Responses = {403: _err("The caller lacks the permission")}
E409_ALARM: Responses = {409: _err("The alarm's state does not allow the action")}


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# -- rule definitions: the rules.model fields per kind -----------------------------------------


class _Delays(_In):
    on_delay: Seconds = 0.0
    off_delay: Seconds = 0.0


class ThresholdDef(_Delays):
    kind: Literal["threshold"]
    signal: Name
    limit: Number
    direction: Literal["high", "low"] = "high"
    deadband: Deadband = 0.0


class RateDef(_Delays):
    kind: Literal["rate"]
    signal: Name
    limit: Deadband = Field(description="Rate per second (|dv/dt|), non-negative.")
    deadband: Deadband = 0.0


class ExpressionDef(_Delays):
    kind: Literal["expression"]
    expression: Expression


class WindowDef(_In):
    kind: Literal["window"]
    signal: Name
    window: PositiveSeconds
    agg: Literal["avg", "min", "max", "count", "stddev"]
    limit: Number
    mode: Literal["tumbling", "sliding"] = "tumbling"
    direction: Literal["high", "low"] = "high"
    deadband: Deadband = 0.0


class StaleDef(_In):
    kind: Literal["stale"]
    signal: Name
    timeout: PositiveSeconds


class ConditionIn(_In):
    expression: Expression
    state: Literal["running", "idle", "down", "setup"]


class StateDef(_In):
    kind: Literal["state"]
    conditions: list[ConditionIn] = Field(min_length=1, max_length=50)
    default: Literal["running", "idle", "down", "setup", "unknown"] = "unknown"


Definition = Annotated[
    ThresholdDef | RateDef | ExpressionDef | WindowDef | StaleDef | StateDef,
    Field(discriminator="kind"),
]
assert set(MACHINE_STATES) == {"running", "idle", "down", "setup"}


Trigger = Literal["activated", "cleared"]


def _default_triggers() -> list[Trigger]:
    return ["activated"]


class ActionIn(_In):
    kind: Annotated[str, Field(min_length=1, max_length=32)] = Field(
        description="An installed action kind: webhook, email, mqtt, command or a plugin's."
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="The action's settings (docs/actions.md); secret fields read back as "
        "'********', and '********' written back keeps the stored secret.",
    )
    on: list[Trigger] = Field(
        default_factory=_default_triggers,
        min_length=1,
        max_length=2,
        description="activated: the alarm was annunciated; cleared: its condition returned "
        "to normal.",
    )


class RuleBody(_In):
    device_type: Name | None = Field(None, description="All devices of this type; or device.")
    device: Name | None = Field(None, description="This one device; or device_type.")
    priority: int = Field(3, ge=1, le=4, description="1 urgent, 2 high, 3 medium, 4 low.")
    message: str = Field("", max_length=2000, description="Shown with the alarm.")
    definition: Definition
    actions: list[ActionIn] = Field(
        default_factory=list, max_length=10, description="Run for the rule's alarm events."
    )

    @model_validator(mode="after")
    def _one_target(self) -> RuleBody:
        if (self.device_type is None) == (self.device is None):
            raise ValueError("give exactly one of device_type or device")
        return self

    def fields(self) -> tuple[str, dict[str, Any]]:
        raw = self.definition.model_dump()
        return raw.pop("kind"), raw

    def action_list(self) -> list[dict[str, Any]]:
        return [a.model_dump() for a in self.actions]


class RuleIn(RuleBody):
    name: Name
    enabled: bool = True


class DisableIn(_In):
    reason: str | None = Field(None, max_length=2000)


class RuleOut(BaseModel):
    name: str
    kind: str
    definition: dict[str, Any]
    device_type: str | None
    device: str | None
    priority: int
    message: str
    enabled: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str
    actions: list[dict[str, Any]] = Field(description="Secret config fields as '********'.")


class RuleList(BaseModel):
    rules: list[RuleOut]


def rule_out(r: RuleInfo) -> RuleOut:
    """A rule as the API answers it; ``shopfloor rules`` prints the same JSON."""
    return RuleOut(
        name=r.name,
        kind=r.kind,
        definition=r.definition,
        device_type=r.device_type,
        device=r.device,
        priority=int(r.priority),
        message=r.message,
        enabled=r.enabled,
        disabled_reason=r.disabled_reason,
        created_at=r.created_at.isoformat(),
        updated_at=r.updated_at.isoformat(),
        actions=[masked(a) for a in r.actions],
    )


# -- scoping of rules --------------------------------------------------------------------------


def _check_target(scope: Scope, platform: Platform, body: RuleBody) -> None:
    """Where a new or changed rule attaches: a device in scope; a type needs the whole tenant.

    A command action sends commands in the caller's name later: it needs ``commands.send``
    and a target device the caller may reach, checked now."""
    if body.device is not None:
        scoping.check_device(scope, platform.registry, body.device)
    else:
        scoping.require_whole_tenant(scope, "a rule on a device type")
    for action in body.actions:
        if action.kind != "command":
            continue
        if not scope.principal.holds(Permission.COMMANDS_SEND, scope.tenant_id):
            raise Forbidden("a command action needs the commands.send permission")
        device = action.config.get("device")
        if isinstance(device, str):  # not found (404) like an unknown target device
            platform.registry.get_device(scope.tenant_id, device)
            scoping.check_device(scope, platform.registry, device)


def _visible_rule(scope: Scope, platform: Platform, rule: RuleInfo) -> bool:
    if scope.assets is None:
        return True
    if rule.device is None:
        return False
    places = platform.registry.device_assets(scope.tenant_id)
    return rule.device in places and scope.allows_asset(places[rule.device])


def _rule_in_scope(scope: Scope, platform: Platform, name: str) -> RuleInfo:
    rule = platform.rules.get(scope.tenant_id, name)  # NotFound when unknown
    if scope.assets is not None:
        if rule.device is None:
            scoping.require_whole_tenant(scope, "a rule on a device type")
        elif not _visible_rule(scope, platform, rule):
            raise rule_not_found(name)
    return rule


# -- rule routes -------------------------------------------------------------------------------

RULE_ERRORS: Responses = {**E400, **AUTH, **E404, **E422}


@router.post(
    "/rules",
    status_code=status.HTTP_201_CREATED,
    summary="Create a rule (checked against the tenant's devices before it is stored)",
    description="A syntax error, an unknown signal or a type mismatch answers 422 with the "
    "field (e.g. definition.expression) and the position; nothing is stored.",
    responses={**RULE_ERRORS, **E409},
)
def create_rule(body: RuleIn, scope: Write, platform: Plat) -> RuleOut:
    _check_target(scope, platform, body)
    kind, definition = body.fields()
    info = platform.rules.create(
        scope.tenant_id,
        body.name,
        kind,
        definition,
        device_type=body.device_type,
        device=body.device,
        priority=body.priority,
        message=body.message,
        enabled=body.enabled,
        actions=body.action_list(),
    )
    return rule_out(info)


@router.get("/rules", summary="The tenant's rules", responses=AUTH)
def list_rules(scope: Read, platform: Plat) -> RuleList:
    rules = platform.rules.list_rules(scope.tenant_id)
    return RuleList(rules=[rule_out(r) for r in rules if _visible_rule(scope, platform, r)])


@router.get("/rules/{name}", summary="One rule", responses={**AUTH, **E404})
def get_rule(name: str, scope: Read, platform: Plat) -> RuleOut:
    return rule_out(_rule_in_scope(scope, platform, name))


@router.put(
    "/rules/{name}",
    summary="Replace a rule's definition, target, priority, message and actions",
    description="Checked like a new rule; enabled and disabled_reason stay as they are.",
    responses=RULE_ERRORS,
)
def replace_rule(name: str, body: RuleBody, scope: Write, platform: Plat) -> RuleOut:
    _rule_in_scope(scope, platform, name)
    _check_target(scope, platform, body)
    kind, definition = body.fields()
    info = platform.rules.replace(
        scope.tenant_id,
        name,
        kind,
        definition,
        device_type=body.device_type,
        device=body.device,
        priority=body.priority,
        message=body.message,
        actions=body.action_list(),
    )
    return rule_out(info)


@router.delete(
    "/rules/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a rule and its alarms (their history stays)",
    responses={**AUTH, **E404},
)
def delete_rule(name: str, scope: Write, platform: Plat) -> Response:
    _rule_in_scope(scope, platform, name)
    platform.rules.delete(scope.tenant_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/rules/{name}/enable", summary="Enable a rule", responses={**AUTH, **E404})
def enable_rule(name: str, scope: Write, platform: Plat) -> RuleOut:
    _rule_in_scope(scope, platform, name)
    return rule_out(platform.rules.set_enabled(scope.tenant_id, name, True))


@router.post(
    "/rules/{name}/disable",
    summary="Disable a rule, with an optional reason",
    responses={**E400, **AUTH, **E404, **E422},
)
def disable_rule(name: str, scope: Write, platform: Plat, body: DisableIn | None = None) -> RuleOut:
    _rule_in_scope(scope, platform, name)
    reason = None if body is None else body.reason
    return rule_out(platform.rules.set_enabled(scope.tenant_id, name, False, reason))


# -- alarms ------------------------------------------------------------------------------------


class AlarmOut(BaseModel):
    rule: str
    device: str
    state: AlarmState
    active: bool = Field(description="The live condition, tracked in every state.")
    value: float | None
    priority: int
    area: str
    message: str
    last_change_ts: int | None = Field(description="ns since the epoch, UTC")
    last_change: str | None = Field(description="RFC 3339")
    shelved_until: int | None = Field(description="ns since the epoch, UTC; while shelved")
    activations: int
    annunciations: int
    acknowledgements: int
    hidden_activations: int


class AlarmList(BaseModel):
    alarms: list[AlarmOut]


def alarm_out(info: AlarmInfo) -> AlarmOut:
    a = info.alarm
    return AlarmOut(
        rule=info.rule,
        device=info.device,
        state=a.state,
        active=a.active,
        value=a.value,
        priority=int(a.priority),
        area=a.area,
        message=a.message,
        last_change_ts=a.last_change_ts,
        last_change=None if a.last_change_ts is None else to_iso(a.last_change_ts),
        shelved_until=a.shelved_until,
        activations=a.activations,
        annunciations=a.annunciations,
        acknowledgements=a.acknowledgements,
        hidden_activations=a.hidden_activations,
    )


class HistoryOut(BaseModel):
    id: int
    ts: int = Field(description="ns since the epoch, UTC")
    time: str = Field(description="RFC 3339")
    rule: str
    device: str
    from_state: AlarmState
    to_state: AlarmState
    cause: str
    user: str | None
    comment: str | None
    value: float | None
    area: str
    priority: int
    annunciated: bool


class HistoryPage(BaseModel):
    events: list[HistoryOut]
    next_offset: int | None = Field(description="Offset of the next page; null: no more.")


def history_out(h: HistoryEntry) -> HistoryOut:
    e = h.event
    return HistoryOut(
        id=h.id,
        ts=e.ts,
        time=to_iso(e.ts),
        rule=h.rule,
        device=h.device,
        from_state=e.from_state,
        to_state=e.to_state,
        cause=e.cause.value,
        user=e.user,
        comment=e.comment,
        value=e.value,
        area=e.area,
        priority=int(e.priority),
        annunciated=e.annunciated,
    )


def _scoped_device_ids(scope: Scope, platform: Platform) -> list[int] | None:
    if scope.assets is None:
        return None
    devices = scoping.visible_devices(scope, platform.registry.list_devices(scope.tenant_id))
    return [d.id for d in devices]


def _check_filter_device(scope: Scope, platform: Platform, device: str | None) -> None:
    if device is not None:
        platform.registry.get_device(scope.tenant_id, device)  # 404 like any unknown device
        scoping.check_device(scope, platform.registry, device)


Instant = Annotated[str, Query(max_length=64, description="RFC 3339, epoch ms, 'now', '-1h'")]


@router.get(
    "/alarms",
    summary="Current alarm states (most urgent, newest first)",
    description="Expired shelves end first. A role bound below an asset sees the alarms of "
    "the devices in its subtree.",
    responses={**AUTH, **E404, **E422},
)
def list_alarms(
    scope: Read,
    platform: Plat,
    state: Annotated[AlarmState | None, Query()] = None,
    priority: Annotated[int | None, Query(ge=1, le=4)] = None,
    area: Annotated[str | None, Query(max_length=NAME_LEN)] = None,
    device: Annotated[str | None, Query(max_length=NAME_LEN)] = None,
) -> AlarmList:
    _check_filter_device(scope, platform, device)
    platform.alarms.expire_shelves(scope.tenant_id)
    found = platform.alarms.list_alarms(
        scope.tenant_id,
        state=state,
        priority=None if priority is None else Priority(priority),
        area=area,
        device=device,
    )
    found = scoping.visible(scope, found, lambda a: a.asset_id)
    return AlarmList(alarms=[alarm_out(a) for a in found])


@router.get(
    "/alarms/history",
    summary="Alarm history: every state change, oldest first, in pages",
    responses={**AUTH, **E422},
)
def alarm_history(
    scope: Read,
    platform: Plat,
    start: Instant = "-24h",
    end: Instant = "now",
    rule: Annotated[str | None, Query(max_length=NAME_LEN)] = None,
    device: Annotated[str | None, Query(max_length=NAME_LEN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> HistoryPage:
    now = now_ns()
    lo, hi = parse_instant(start, "start", now), parse_instant(end, "end", now)
    entries = platform.alarms.history(
        scope.tenant_id,
        start=lo,
        end=hi,
        rule=rule,
        device=device,
        device_ids=_scoped_device_ids(scope, platform),
        limit=limit + 1,
        offset=offset,
    )
    more = len(entries) > limit
    return HistoryPage(
        events=[history_out(h) for h in entries[:limit]],
        next_offset=offset + limit if more else None,
    )


class AreaFloodOut(BaseModel):
    area: str
    first_bucket_ns: int
    bucket_ns: int
    counts: list[int] = Field(description="Annunciations per bucket, quiet buckets included.")
    total: int
    peak: int
    peak_bucket_ns: int | None
    mean: float
    flood_buckets: int = Field(description="Buckets with more annunciations than threshold.")
    flood_share: float


class BadActorOut(BaseModel):
    rule: str
    device: str
    area: str
    count: int
    share: float


class FloodOut(BaseModel):
    start_ns: int
    end_ns: int
    bucket_ns: int
    threshold: int
    areas: list[AreaFloodOut]
    bad_actors: list[BadActorOut]


@router.get(
    "/alarms/flood",
    summary="Alarm load (ISA-18.2 / EEMUA 191): annunciations per bucket, floods, bad actors",
    responses={**AUTH, **E422},
)
def alarm_flood(
    scope: Read,
    platform: Plat,
    start: Instant = "-24h",
    end: Instant = "now",
    bucket: Annotated[str, Query(max_length=32, description="bucket length: 10m, 1h")] = "10m",
    threshold: Annotated[int, Query(ge=0, le=1_000_000)] = FLOOD_THRESHOLD,
    top: Annotated[int, Query(ge=1, le=100, description="bad actors listed")] = 10,
) -> FloodOut:
    now = now_ns()
    lo, hi = parse_instant(start, "start", now), parse_instant(end, "end", now)
    bucket_ns = parse_duration(bucket, "bucket")
    if hi <= lo:
        raise BadInput(f"end {end!r} is not after start {start!r}", "end")
    if -(-(hi - (lo // bucket_ns) * bucket_ns) // bucket_ns) > MAX_BUCKETS:
        raise BadInput(f"more than {MAX_BUCKETS} buckets: widen the bucket", "bucket")
    entries = platform.alarms.events(scope.tenant_id, lo, hi, _scoped_device_ids(scope, platform))
    events = [h.event for h in entries]
    names = {h.event.alarm_id: (h.rule, h.device) for h in entries}
    figures = flood_figures(events, start=lo, end=hi, bucket_ns=bucket_ns, threshold=threshold)
    actors = bad_actors(events, top, start=lo, end=hi)
    return FloodOut(
        start_ns=lo,
        end_ns=hi,
        bucket_ns=bucket_ns,
        threshold=threshold,
        areas=[
            AreaFloodOut(
                area=f.area,
                first_bucket_ns=f.first_bucket_ns,
                bucket_ns=f.bucket_ns,
                counts=list(f.counts),
                total=f.total,
                peak=f.peak,
                peak_bucket_ns=f.peak_bucket_ns,
                mean=f.mean,
                flood_buckets=f.flood_buckets,
                flood_share=f.flood_share,
            )
            for f in figures.values()
        ],
        bad_actors=[
            BadActorOut(
                rule=names[b.alarm_id][0],
                device=names[b.alarm_id][1],
                area=b.area,
                count=b.count,
                share=b.share,
            )
            for b in actors
        ],
    )


class AckIn(_In):
    comment: Comment


class ShelveIn(_In):
    until: str | None = Field(
        None, max_length=64, description="RFC 3339 or epoch ms; or give duration"
    )
    duration: str | None = Field(None, max_length=32, description="e.g. 30m, 8h; or until")
    comment: Comment


class UnshelveIn(_In):
    comment: Annotated[str, Field(max_length=2000)] | None = None


ACTION: Responses = {**E400, **AUTH, **E404, **E409_ALARM, **E422}


def _announced(platform: Platform, scope: Scope, info: AlarmInfo) -> AlarmOut:
    """The answer of an operator's action; the change goes live (WebSocket, rule actions)."""
    if info.event is not None:
        platform.runtime.announce(
            scope.tenant_id, info.rule, info.device, info.asset_id, info.event
        )
    return alarm_out(info)


def _check_rule(scope: Scope, platform: Platform, rule: str) -> None:
    platform.rules.get(scope.tenant_id, rule)  # NotFound first: the same for every tenant


@router.post(
    "/alarms/{rule}/{device}/ack",
    summary="Acknowledge an alarm (comment required)",
    responses=ACTION,
)
def acknowledge(rule: str, device: str, body: AckIn, scope: Ack, platform: Plat) -> AlarmOut:
    _check_rule(scope, platform, rule)
    info = platform.alarms.acknowledge(
        scope.tenant_id, rule, device, scope.principal.name, body.comment
    )
    return _announced(platform, scope, info)


@router.post(
    "/alarms/{rule}/{device}/shelve",
    summary="Shelve an alarm until a time (comment required)",
    responses=ACTION,
)
def shelve(rule: str, device: str, body: ShelveIn, scope: Ack, platform: Plat) -> AlarmOut:
    if (body.until is None) == (body.duration is None):
        raise BadInput("give exactly one of until or duration", "until")
    _check_rule(scope, platform, rule)
    now = now_ns()
    until = (
        parse_instant(body.until, "until", now)
        if body.until is not None
        else now + parse_duration(str(body.duration), "duration")
    )
    info = platform.alarms.shelve(
        scope.tenant_id, rule, device, scope.principal.name, until, body.comment
    )
    return _announced(platform, scope, info)


@router.post(
    "/alarms/{rule}/{device}/unshelve",
    summary="Return a shelved alarm to annunciation",
    responses=ACTION,
)
def unshelve(
    rule: str, device: str, scope: Ack, platform: Plat, body: UnshelveIn | None = None
) -> AlarmOut:
    _check_rule(scope, platform, rule)
    comment = None if body is None else body.comment
    info = platform.alarms.unshelve(scope.tenant_id, rule, device, scope.principal.name, comment)
    return _announced(platform, scope, info)


class ReasonIn(_In):
    reason: Comment


class OptionalReasonIn(_In):
    reason: Annotated[str, Field(max_length=2000)] | None = None


SUPPRESS: Responses = {**E400, **AUTH, **E403, **E404, **E409_ALARM, **E422}


def _whole_alarm_scope(scope: Scope, platform: Platform, rule: str, device: str) -> None:
    """Suppression and out-of-service take an alarm away from operators: engineers decide it
    (rules.write), on a rule and device within their scope."""
    _rule_in_scope(scope, platform, rule)
    scoping.check_device(scope, platform.registry, device)


@router.post(
    "/alarms/{rule}/{device}/suppress",
    summary="Suppress an alarm by design (tracked, not annunciated; reason required)",
    description="For a plant state that makes the alarm meaningless (a line stopped for a "
    "changeover). Works before the alarm ever fired. Needs rules.write.",
    responses=SUPPRESS,
)
def suppress(rule: str, device: str, body: ReasonIn, scope: Write, platform: Plat) -> AlarmOut:
    _whole_alarm_scope(scope, platform, rule, device)
    info = platform.alarms.suppress(
        scope.tenant_id, rule, device, scope.principal.name, body.reason
    )
    return _announced(platform, scope, info)


@router.post(
    "/alarms/{rule}/{device}/unsuppress",
    summary="End a suppression by design",
    responses=SUPPRESS,
)
def unsuppress(
    rule: str, device: str, scope: Write, platform: Plat, body: OptionalReasonIn | None = None
) -> AlarmOut:
    _whole_alarm_scope(scope, platform, rule, device)
    reason = None if body is None else body.reason
    info = platform.alarms.unsuppress(scope.tenant_id, rule, device, scope.principal.name, reason)
    return _announced(platform, scope, info)


@router.post(
    "/alarms/{rule}/{device}/out-of-service",
    summary="Take an alarm out of service (maintenance; comment required)",
    description="Works before the alarm ever fired. Needs rules.write.",
    responses=SUPPRESS,
)
def remove_from_service(
    rule: str, device: str, body: AckIn, scope: Write, platform: Plat
) -> AlarmOut:
    _whole_alarm_scope(scope, platform, rule, device)
    info = platform.alarms.remove_from_service(
        scope.tenant_id, rule, device, scope.principal.name, body.comment
    )
    return _announced(platform, scope, info)


@router.post(
    "/alarms/{rule}/{device}/return-to-service",
    summary="Return an out-of-service alarm to service",
    responses=SUPPRESS,
)
def return_to_service(
    rule: str, device: str, scope: Write, platform: Plat, body: UnshelveIn | None = None
) -> AlarmOut:
    _whole_alarm_scope(scope, platform, rule, device)
    comment = None if body is None else body.comment
    info = platform.alarms.return_to_service(
        scope.tenant_id, rule, device, scope.principal.name, comment
    )
    return _announced(platform, scope, info)


# -- live alarm changes ------------------------------------------------------------------------

WS_UNAUTHORIZED = 4401  # no, or an unknown, credential
WS_FORBIDDEN = 4403  # neither data.read nor registry.read in the caller's tenant
LIVE_PERMISSIONS = (Permission.DATA_READ, Permission.REGISTRY_READ)


def _live_scope(websocket: WebSocket, platform: Platform) -> Scope | int:
    """The caller's scope for the live alarms, or the close code. Blocking SQL: in a thread."""
    secret = websocket.headers.get("x-api-key")
    auth = websocket.headers.get("authorization")
    if not secret and auth and auth.lower().startswith("bearer "):
        secret = auth[7:].strip()
    secret = secret or websocket.cookies.get(SESSION_COOKIE)
    source = websocket.client.host if websocket.client else "-"
    principal = resolve_secret(platform, secret, source) if secret else None
    if principal is None:
        return WS_UNAUTHORIZED
    try:
        if principal.tenant is None:
            name = websocket.headers.get(TENANT_HEADER)
            if not name:
                return WS_FORBIDDEN
            principal = platform.auth.enter_tenant(principal, name, source)
        assert principal.tenant is not None
        tenant = principal.tenant
        for perm in LIVE_PERMISSIONS:
            try:
                roots = scope_roots(principal, perm, tenant.id)
            except Forbidden:
                continue
            assets = None if roots is None else platform.registry.asset_subtree(tenant.id, roots)
            return Scope(principal, perm, tenant, roots, assets)
    except Forbidden:
        pass
    return WS_FORBIDDEN


@router.websocket("/alarms/live")
async def live_alarms(websocket: WebSocket) -> None:
    """Alarm changes of the caller's tenant as they happen, one JSON object per message
    (``type: "alarm"``, rule, device, ts, from_state, to_state, cause, value, area, priority,
    annunciated). Authenticates in the handshake with the same credentials as the API
    (Authorization header, X-API-Key or the sf_session cookie) and needs data.read or
    registry.read; closes with 4401 (no valid credential) or 4403 (no permission). A role bound
    below an asset sees the alarms of the devices in its subtree."""
    platform: Platform = websocket.app.state.platform
    found = await asyncio.to_thread(_live_scope, websocket, platform)
    if isinstance(found, int):
        await websocket.accept()  # accepted first, so that the client sees the code
        await websocket.close(code=found)
        return
    scope = found
    async with platform.runtime.subscribe(scope.tenant_id) as sub:  # before the client can act
        await websocket.accept()
        receiving = asyncio.ensure_future(websocket.receive())  # notices the client leaving
        try:
            while True:
                getting = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait(
                    {getting, receiving}, return_when=asyncio.FIRST_COMPLETED
                )
                if getting in done:
                    change = getting.result()
                    if scope.allows_asset(change.asset_id):
                        await websocket.send_json(change.to_json())
                else:
                    getting.cancel()
                if receiving in done:
                    if receiving.result()["type"] == "websocket.disconnect":
                        return
                    receiving = asyncio.ensure_future(websocket.receive())
        except WebSocketDisconnect:
            return
        finally:
            receiving.cancel()
