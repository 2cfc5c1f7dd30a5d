"""Rules and alarms stored in the registry database: :class:`RuleStore` and :class:`AlarmStore`.

Services over the registry's SQL database, like ``registry/credentials.py``: every public
method opens its own session, and only plain frozen dataclasses leave this module.

- A rule is saved only after the save-time check of the engine (``engine.validate_rule``)
  against the tenant's devices: a syntax error, an unknown signal or a type mismatch is a
  :class:`BadInput` (422) naming the field (``definition.expression``) and the position, and
  nothing is stored.
- The alarm of one rule on one device is the ISA-18.2 state machine of ``rules/alarms.py``,
  stored; :meth:`AlarmStore.apply` feeds engine events (activated / cleared) through it and
  stores the new states and their history events in one transaction.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shopfloor.core.errors import BadInput, Conflict, NotFound
from shopfloor.core.kinds import DataType
from shopfloor.core.timeutil import now_ns
from shopfloor.registry import models as m
from shopfloor.registry.service import Registry, check_name
from shopfloor.rules import model
from shopfloor.rules.alarms import Alarm, AlarmEvent, AlarmState, Cause, Priority, Step
from shopfloor.rules.engine import validate_rule
from shopfloor.rules.rule_actions import RuleAction, keep_secrets, parse_actions

__all__ = [
    "KINDS",
    "AlarmInfo",
    "AlarmStore",
    "HistoryEntry",
    "RuleInfo",
    "RuleStore",
    "build_rule",
]

log = logging.getLogger(__name__)

KINDS: Final[dict[str, type[model.Rule]]] = {
    "threshold": model.ThresholdRule,
    "rate": model.RateRule,
    "expression": model.ExpressionRule,
    "window": model.WindowRule,
    "stale": model.StaleRule,
    "state": model.StateRule,
}
_ATTACH: Final = frozenset({"id", "device_type", "device"})
UNPLACED_AREA: Final = "unplaced"


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: int
    name: str
    kind: str
    definition: dict[str, Any]  # the rules.model fields other than id and the attachment
    device_type: str | None
    device: str | None
    priority: Priority
    message: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    actions: tuple[RuleAction, ...] = ()

    def to_rule(self) -> model.Rule:
        """The engine's rule (``id`` is the rule's name)."""
        return build_rule(self.name, self.kind, self.definition, self.device_type, self.device)


def _definition_fields(kind: str) -> list[str]:
    return [f.name for f in dataclasses.fields(KINDS[kind]) if f.name not in _ATTACH]


def build_rule(
    name: str,
    kind: str,
    definition: Mapping[str, Any],
    device_type: str | None = None,
    device: str | None = None,
) -> model.Rule:
    """The rules.model dataclass of ``kind`` from a JSON definition; BadInput names the field
    as ``definition.<field>`` (the attachment fields keep their own names)."""
    cls = KINDS.get(kind)
    if cls is None:
        raise BadInput(f"unknown rule kind {kind!r}, use one of {', '.join(KINDS)}", "kind")
    allowed = _definition_fields(kind)
    extra = sorted(set(definition) - set(allowed))
    if extra:
        raise BadInput(
            f"a {kind} rule has no field {extra[0]!r}; its fields: {', '.join(allowed)}",
            f"definition.{extra[0]}",
        )
    values = dict(definition)
    if kind == "state" and "conditions" in values:
        values["conditions"] = _conditions(values["conditions"])
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name in allowed
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    missing = [f for f in required if f not in values]
    if missing:
        raise BadInput(f"a {kind} rule needs {', '.join(missing)}", f"definition.{missing[0]}")
    try:
        return cls(id=name, device_type=device_type, device=device, **values)
    except BadInput as exc:
        raise _in_definition(exc) from None
    except TypeError as exc:  # a value of the wrong type that the dataclass checks trip on
        raise BadInput(f"bad {kind} rule definition: {exc}", "definition") from None


def _conditions(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list | tuple):
        raise BadInput("conditions must be a list", "definition.conditions")
    out: list[tuple[str, str]] = []
    for i, c in enumerate(raw):
        if isinstance(c, Mapping):
            pair = (c.get("expression"), c.get("state"))
        elif isinstance(c, list | tuple) and len(c) == 2:
            pair = (c[0], c[1])
        else:
            pair = (None, None)
        if not all(isinstance(v, str) for v in pair):
            raise BadInput(
                "a condition is {expression, state} with two strings",
                f"definition.conditions[{i}]",
            )
        out.append((str(pair[0]), str(pair[1])))
    return tuple(out)


def _in_definition(exc: BadInput) -> BadInput:
    field = exc.field
    if field is None or field in _ATTACH or field.startswith("definition"):
        return exc
    return BadInput(exc.message, f"definition.{field}")


def _plain(rule: model.Rule) -> dict[str, Any]:
    """The definition JSON of an engine rule (what :func:`build_rule` reads back)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(rule):
        if f.name in _ATTACH:
            continue
        v = getattr(rule, f.name)
        if f.name == "conditions":
            v = [{"expression": e, "state": s} for e, s in v]
        out[f.name] = v
    return out


def _rule_info(row: m.Rule) -> RuleInfo:
    return RuleInfo(
        id=row.id,
        name=row.name,
        kind=row.kind,
        definition=json.loads(row.definition),
        device_type=row.target if row.target_kind == "device_type" else None,
        device=row.target if row.target_kind == "device" else None,
        priority=Priority(row.priority),
        message=row.message,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        actions=tuple(
            RuleAction(a["kind"], a["config"], tuple(a["on"])) for a in json.loads(row.actions)
        ),
    )


def _actions_json(actions: tuple[RuleAction, ...]) -> str:
    return json.dumps([a.to_json() for a in actions])


def _applies(s: Session, rule: m.Rule, device: m.Device) -> bool:
    """Whether ``rule`` applies to ``device`` (its alarm can exist)."""
    if rule.target_kind == "device":
        return rule.target == device.name
    if device.device_type_id is None:
        return False
    dtype = s.get(m.DeviceType, device.device_type_id)
    return dtype is not None and dtype.name == rule.target


def rule_not_found(name: str) -> NotFound:
    return NotFound(f"rule {name!r} not found")


def _rule_row(s: Session, tenant_id: int, name: str) -> m.Rule:
    row = s.scalar(select(m.Rule).where(m.Rule.tenant_id == tenant_id, m.Rule.name == name))
    if row is None:
        raise rule_not_found(name)
    return row


class RuleStore:
    """A tenant's rules, checked by the engine before they are stored."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def engine_devices(self, tenant_id: int) -> list[model.Device]:
        """The tenant's devices as the engine sees them (signals by name, with data types)."""
        reg = self.registry
        signals: dict[str, dict[str, int]] = {}
        types: dict[str, dict[str, DataType]] = {}
        for sig in reg.list_signals(tenant_id):
            signals.setdefault(sig.device, {})[sig.name] = sig.id
            types.setdefault(sig.device, {})[sig.name] = sig.data_type
        return [
            model.Device(
                d.name, d.device_type or "", signals.get(d.name, {}), types.get(d.name, {})
            )
            for d in reg.list_devices(tenant_id)
        ]

    def check(self, tenant_id: int, rule: model.Rule) -> None:
        """The save-time check: the target exists, then ``engine.validate_rule``."""
        devices = self.engine_devices(tenant_id)
        if rule.device is not None:
            self.registry.get_device(tenant_id, rule.device)  # NotFound, the registry's words
        else:
            assert rule.device_type is not None
            dtype = self.registry.get_device_type(tenant_id, rule.device_type)
            if not any(d.type == dtype.name for d in devices):
                # No device of the type yet: check against the type's own signals.
                devices.append(
                    model.Device(
                        f"<{dtype.name}>",
                        dtype.name,
                        {s.name: -1 - i for i, s in enumerate(dtype.signals)},
                        {s.name: s.data_type for s in dtype.signals},
                    )
                )
        try:
            validate_rule(rule, devices)
        except BadInput as exc:
            raise _in_definition(exc) from None

    def create(
        self,
        tenant_id: int,
        name: str,
        kind: str,
        definition: Mapping[str, Any],
        *,
        device_type: str | None = None,
        device: str | None = None,
        priority: int | str = Priority.MEDIUM,
        message: str = "",
        enabled: bool = True,
        actions: object = None,
    ) -> RuleInfo:
        """Store a checked rule; ``actions`` as :func:`rule_actions.parse_actions` takes them."""
        check_name(name, "rule")
        rule = build_rule(name, kind, definition, device_type, device)
        prio = Priority.parse(priority)
        acts = parse_actions(actions)
        self.check(tenant_id, rule)
        with self.registry._write() as s:
            row = m.Rule(
                tenant_id=tenant_id,
                name=name,
                kind=kind,
                definition=json.dumps(_plain(rule)),
                target_kind="device" if device is not None else "device_type",
                target=device if device is not None else device_type,
                priority=int(prio),
                message=message,
                enabled=enabled,
                disabled_reason=None if enabled else "disabled when created",
                actions=_actions_json(acts),
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"rule {name!r} exists already") from None
            return _rule_info(row)

    def replace(
        self,
        tenant_id: int,
        name: str,
        kind: str,
        definition: Mapping[str, Any],
        *,
        device_type: str | None = None,
        device: str | None = None,
        priority: int | str = Priority.MEDIUM,
        message: str = "",
        actions: object = None,
    ) -> RuleInfo:
        """Replace a rule's definition, target, priority, message and actions (enabled stays).

        An action config value given as ``rule_actions.MASK`` keeps the stored secret."""
        old = self.get(tenant_id, name)  # NotFound before any check names the target
        rule = build_rule(name, kind, definition, device_type, device)
        prio = Priority.parse(priority)
        acts = parse_actions(keep_secrets(actions, old.actions))
        self.check(tenant_id, rule)
        with self.registry._write() as s:
            row = _rule_row(s, tenant_id, name)
            row.kind = kind
            row.definition = json.dumps(_plain(rule))
            row.target_kind = "device" if device is not None else "device_type"
            row.target = device if device is not None else str(device_type)
            row.priority = int(prio)
            row.message = message
            row.actions = _actions_json(acts)
            row.updated_at = m.utcnow()
            return _rule_info(row)

    def get(self, tenant_id: int, name: str) -> RuleInfo:
        with self.registry._read() as s:
            return _rule_info(_rule_row(s, tenant_id, name))

    def list_rules(self, tenant_id: int) -> list[RuleInfo]:
        with self.registry._read() as s:
            q = select(m.Rule).where(m.Rule.tenant_id == tenant_id).order_by(m.Rule.name)
            return [_rule_info(r) for r in s.scalars(q)]

    def delete(self, tenant_id: int, name: str) -> None:
        """Delete a rule; its alarms go with it (CASCADE), their history stays."""
        with self.registry._write() as s:
            s.delete(_rule_row(s, tenant_id, name))

    def set_enabled(
        self, tenant_id: int, name: str, enabled: bool, reason: str | None = None
    ) -> RuleInfo:
        with self.registry._write() as s:
            row = _rule_row(s, tenant_id, name)
            row.enabled = enabled
            row.disabled_reason = None if enabled else (reason or "disabled by a user")
            row.updated_at = m.utcnow()
            return _rule_info(row)

    def change_key(self, tenant_id: int) -> tuple[Any, ...]:
        """A cheap summary of what the tenant's engine is built from: one aggregate row each
        for rules, devices and signals. It changes when a rule is added, deleted or updated
        (``updated_at``), a device is added or deleted or changes type or place, or a signal
        is added or deleted (a signal's data type is fixed once created). The runtime checks
        it every second instead of loading every rule, device and signal; a change that keeps
        every aggregate equal is still caught by the full comparison it makes less often."""
        rule, dev, sig = m.Rule, m.Device, m.Signal
        type_id = func.coalesce(dev.device_type_id, 0)
        asset_id = func.coalesce(dev.asset_id, 0)
        with self.registry._read() as s:
            rules = s.execute(
                select(
                    func.count(), func.max(rule.updated_at), func.sum(func.length(rule.name))
                ).where(rule.tenant_id == tenant_id)
            ).one()
            devices = s.execute(
                select(
                    func.count(),
                    func.max(dev.id),
                    func.sum(type_id),
                    func.sum(type_id * dev.id),
                    func.sum(asset_id * dev.id),
                ).where(dev.tenant_id == tenant_id)
            ).one()
            signals = s.execute(
                select(func.count(), func.max(sig.id), func.sum(sig.id)).where(
                    sig.tenant_id == tenant_id
                )
            ).one()
        return (*rules, *devices, *signals)

    def engine_rules(self, tenant_id: int) -> list[model.Rule]:
        """The enabled rules of the tenant, for a RuleEngine."""
        return [r.to_rule() for r in self.list_rules(tenant_id) if r.enabled]


# ---------------------------------------------------------------------------------------------
# Alarms
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    """The alarm of ``rule`` on ``device``; ``asset_id`` (the device's place) for scoping;
    ``event``: the history event an operator's action just made (None when read)."""

    rule: str
    device: str
    asset_id: int | None
    alarm: Alarm
    event: AlarmEvent | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    rule: str
    device: str
    device_id: int
    event: AlarmEvent


def _alarm(row: m.AlarmState) -> Alarm:
    return Alarm(
        rule_id=row.rule_id,
        device_id=row.device_id,
        priority=Priority(row.priority),
        area=row.area,
        message=row.message,
        state=AlarmState(row.state),
        active=row.active,
        value=row.value,
        last_change_ts=row.last_change_ts,
        shelved_until=row.shelved_until,
        activations=row.activations,
        annunciations=row.annunciations,
        acknowledgements=row.acknowledgements,
        hidden_activations=row.hidden_activations,
    )


def _store(row: m.AlarmState, alarm: Alarm) -> None:
    row.state = alarm.state.value
    row.active = alarm.active
    row.value = alarm.value
    row.last_change_ts = alarm.last_change_ts
    row.shelved_until = alarm.shelved_until
    row.activations = alarm.activations
    row.annunciations = alarm.annunciations
    row.acknowledgements = alarm.acknowledgements
    row.hidden_activations = alarm.hidden_activations


def _event_row(tenant_id: int, rule: str, device: str, e: AlarmEvent, a: Alarm) -> m.AlarmEvent:
    return m.AlarmEvent(
        tenant_id=tenant_id,
        rule_id=a.rule_id,
        device_id=a.device_id,
        rule=rule,
        device=device,
        ts=e.ts,
        from_state=e.from_state.value,
        to_state=e.to_state.value,
        cause=e.cause.value,
        user=e.user,
        comment=e.comment,
        value=e.value,
        area=e.area,
        priority=int(e.priority),
    )


def _event(row: m.AlarmEvent) -> AlarmEvent:
    return AlarmEvent(
        ts=row.ts,
        alarm_id=f"{row.rule_id}/{row.device_id}",
        from_state=AlarmState(row.from_state),
        to_state=AlarmState(row.to_state),
        cause=Cause(row.cause),
        user=row.user,
        comment=row.comment,
        value=row.value,
        area=row.area,
        priority=Priority(row.priority),
    )


def _area_of(s: Session, asset_id: int | None) -> str:
    """The name of the ISA-95 area above (or at) the device's asset; else the asset's own."""
    if asset_id is None:
        return UNPLACED_AREA
    first: str | None = None
    current: int | None = asset_id
    while current is not None:
        asset = s.get(m.Asset, current)
        if asset is None:
            break
        first = first or asset.name
        if asset.level == m.AssetLevel.AREA.value:
            return asset.name
        current = asset.parent_id
    return first or UNPLACED_AREA


def alarm_not_found(rule: str, device: str) -> NotFound:
    return NotFound(f"no alarm of rule {rule!r} on device {device!r}")


class AlarmStore:
    """Current alarm states and their history, per tenant."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- engine events -----------------------------------------------------------------------

    def apply(self, tenant_id: int, events: Iterable[model.Event]) -> list[AlarmEvent]:
        """Run engine events (activated / cleared; state changes are not alarms) through the
        state machine; store the new states and history in one transaction. Events of an
        unknown rule or device (deleted meanwhile) are skipped and logged; one older than the
        alarm's last change is stamped at that change. Returns the history events stored, in order."""
        todo = sorted((e for e in events if e.kind in ("activated", "cleared")), key=lambda e: e.ts)
        out: list[AlarmEvent] = []
        if not todo:
            return out
        skipped = 0
        with self.registry._write() as s:
            rules = {
                r.name: r for r in s.scalars(select(m.Rule).where(m.Rule.tenant_id == tenant_id))
            }
            devices: dict[str, m.Device] = {}
            alarms: dict[tuple[str, str], tuple[m.AlarmState, Alarm]] = {}
            for ev in todo:
                key = (ev.rule_id, ev.device)
                if key not in alarms:
                    rule = rules.get(ev.rule_id)
                    if ev.device not in devices:
                        dev = s.scalar(
                            select(m.Device).where(
                                m.Device.tenant_id == tenant_id, m.Device.name == ev.device
                            )
                        )
                        if dev is not None:
                            devices[ev.device] = dev
                    device = devices.get(ev.device)
                    if rule is None or device is None:
                        skipped += 1
                        continue
                    alarms[key] = self._load_or_new(s, tenant_id, rule, device)
                row, alarm = alarms[key]
                # An event older than the alarm's last change (an operator action stamped by
                # the wall clock, data a little late) still changes the condition; it is
                # stamped at the last change so history stays in time order.
                ts = max(ev.ts, alarm.last_change_ts or ev.ts)
                value = ev.value if ev.value == ev.value else None  # NaN is no value
                step = (
                    alarm.condition_active(ts, value)
                    if ev.kind == "activated"
                    else alarm.condition_cleared(ts, value)
                )
                alarms[key] = (row, step.alarm)
                _store(row, step.alarm)
                if step.event is not None:
                    s.add(_event_row(tenant_id, ev.rule_id, ev.device, step.event, step.alarm))
                    out.append(step.event)
        if skipped:
            log.warning(
                "tenant %d: %d alarm events of unknown rules or devices skipped", tenant_id, skipped
            )
        return out

    def _load_or_new(
        self, s: Session, tenant_id: int, rule: m.Rule, device: m.Device
    ) -> tuple[m.AlarmState, Alarm]:
        row = s.scalar(
            select(m.AlarmState).where(
                m.AlarmState.rule_id == rule.id, m.AlarmState.device_id == device.id
            )
        )
        if row is None:
            row = m.AlarmState(
                tenant_id=tenant_id,
                rule_id=rule.id,
                device_id=device.id,
                state=AlarmState.NORMAL.value,
                active=False,
                priority=rule.priority,
                area=_area_of(s, device.asset_id),
                message=rule.message or rule.name,
                activations=0,
                annunciations=0,
                acknowledgements=0,
                hidden_activations=0,
            )
            s.add(row)
        return row, _alarm(row)

    # -- reading -----------------------------------------------------------------------------

    def list_alarms(
        self,
        tenant_id: int,
        *,
        state: AlarmState | None = None,
        priority: Priority | None = None,
        area: str | None = None,
        device: str | None = None,
    ) -> list[AlarmInfo]:
        """The tenant's alarms (those ever evaluated), most urgent and newest first."""
        with self.registry._read() as s:
            q = (
                select(m.AlarmState, m.Rule.name, m.Device.name, m.Device.asset_id)
                .join(m.Rule, m.Rule.id == m.AlarmState.rule_id)
                .join(m.Device, m.Device.id == m.AlarmState.device_id)
                .where(m.AlarmState.tenant_id == tenant_id)
            )
            if state is not None:
                q = q.where(m.AlarmState.state == state.value)
            if priority is not None:
                q = q.where(m.AlarmState.priority == int(priority))
            if area is not None:
                q = q.where(m.AlarmState.area == area)
            if device is not None:
                q = q.where(m.Device.name == device)
            q = q.order_by(
                m.AlarmState.priority,
                m.AlarmState.last_change_ts.desc(),
                m.Rule.name,
                m.Device.name,
            )
            return [AlarmInfo(r, d, a, _alarm(row)) for row, r, d, a in s.execute(q)]

    def get(self, tenant_id: int, rule: str, device: str) -> AlarmInfo:
        found = self.list_alarms(tenant_id, device=device)
        for info in found:
            if info.rule == rule:
                return info
        raise alarm_not_found(rule, device)

    def history(
        self,
        tenant_id: int,
        *,
        start: int | None = None,
        end: int | None = None,
        rule: str | None = None,
        device: str | None = None,
        device_ids: Collection[int] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[HistoryEntry]:
        """History events in ``[start, end)``, oldest first; ``device_ids`` narrows to those
        devices (subtree scopes)."""
        if start is not None and end is not None and end < start:
            raise BadInput(f"end {end} is before start {start}", "end")
        with self.registry._read() as s:
            q = select(m.AlarmEvent).where(m.AlarmEvent.tenant_id == tenant_id)
            if start is not None:
                q = q.where(m.AlarmEvent.ts >= start)
            if end is not None:
                q = q.where(m.AlarmEvent.ts < end)
            if rule is not None:
                q = q.where(m.AlarmEvent.rule == rule)
            if device is not None:
                q = q.where(m.AlarmEvent.device == device)
            if device_ids is not None:
                q = q.where(m.AlarmEvent.device_id.in_(list(device_ids)))
            q = q.order_by(m.AlarmEvent.ts, m.AlarmEvent.id).limit(limit).offset(offset)
            return [
                HistoryEntry(r.id, r.rule, r.device, r.device_id, _event(r)) for r in s.scalars(q)
            ]

    def events(
        self,
        tenant_id: int,
        start: int | None = None,
        end: int | None = None,
        device_ids: Collection[int] | None = None,
    ) -> list[HistoryEntry]:
        """Every history event in ``[start, end)`` (for flood figures)."""
        with self.registry._read() as s:
            q = select(m.AlarmEvent).where(m.AlarmEvent.tenant_id == tenant_id)
            if start is not None:
                q = q.where(m.AlarmEvent.ts >= start)
            if end is not None:
                q = q.where(m.AlarmEvent.ts < end)
            if device_ids is not None:
                q = q.where(m.AlarmEvent.device_id.in_(list(device_ids)))
            q = q.order_by(m.AlarmEvent.ts, m.AlarmEvent.id)
            return [
                HistoryEntry(r.id, r.rule, r.device, r.device_id, _event(r)) for r in s.scalars(q)
            ]

    def count_events(self, tenant_id: int) -> int:
        with self.registry._read() as s:
            q = select(func.count()).select_from(m.AlarmEvent)
            return int(s.scalar(q.where(m.AlarmEvent.tenant_id == tenant_id)) or 0)

    # -- operator actions --------------------------------------------------------------------

    def acknowledge(
        self, tenant_id: int, rule: str, device: str, user: str, comment: str
    ) -> AlarmInfo:
        return self._act(tenant_id, rule, device, lambda a, ts: a.acknowledge(ts, user, comment))

    def shelve(
        self, tenant_id: int, rule: str, device: str, user: str, until: int, comment: str
    ) -> AlarmInfo:
        return self._act(tenant_id, rule, device, lambda a, ts: a.shelve(ts, user, until, comment))

    def unshelve(
        self, tenant_id: int, rule: str, device: str, user: str, comment: str | None = None
    ) -> AlarmInfo:
        return self._act(tenant_id, rule, device, lambda a, ts: a.unshelve(ts, user, comment))

    def suppress(self, tenant_id: int, rule: str, device: str, user: str, reason: str) -> AlarmInfo:
        """Suppress by design (e.g. the line is down for a changeover): tracked, not shown.
        Works before the alarm ever fired."""
        return self._act(
            tenant_id,
            rule,
            device,
            lambda a, ts: a.suppress_by_design(ts, f"{reason} (by {user})"),
            create=True,
        )

    def unsuppress(
        self, tenant_id: int, rule: str, device: str, user: str, reason: str | None = None
    ) -> AlarmInfo:
        why = f"{reason} (by {user})" if reason else f"by {user}"
        return self._act(tenant_id, rule, device, lambda a, ts: a.unsuppress(ts, why))

    def remove_from_service(
        self, tenant_id: int, rule: str, device: str, user: str, comment: str
    ) -> AlarmInfo:
        """Out of service (maintenance, a broken sensor); works before the alarm ever fired."""
        return self._act(
            tenant_id,
            rule,
            device,
            lambda a, ts: a.remove_from_service(ts, user, comment),
            create=True,
        )

    def return_to_service(
        self, tenant_id: int, rule: str, device: str, user: str, comment: str | None = None
    ) -> AlarmInfo:
        return self._act(
            tenant_id, rule, device, lambda a, ts: a.return_to_service(ts, user, comment)
        )

    def expire_shelves(self, tenant_id: int, now: int | None = None) -> int:
        """Return alarms whose shelf has expired to annunciation; returns how many."""
        now = now_ns() if now is None else now
        n = 0
        with self.registry._write() as s:
            q = (
                select(m.AlarmState, m.Rule.name, m.Device.name)
                .join(m.Rule, m.Rule.id == m.AlarmState.rule_id)
                .join(m.Device, m.Device.id == m.AlarmState.device_id)
                .where(
                    m.AlarmState.tenant_id == tenant_id,
                    m.AlarmState.state == AlarmState.SHELVED.value,
                    m.AlarmState.shelved_until <= now,
                )
            )
            for row, rule, device in s.execute(q).all():
                step = _alarm(row).tick(now)
                self._keep(s, tenant_id, rule, device, row, step)
                n += step.event is not None
        return n

    def _act(
        self, tenant_id: int, rule: str, device: str, action: Any, *, create: bool = False
    ) -> AlarmInfo:
        now = now_ns()
        with self.registry._write() as s:
            rule_row = _rule_row(s, tenant_id, rule)
            dev = s.scalar(
                select(m.Device).where(m.Device.tenant_id == tenant_id, m.Device.name == device)
            )
            if dev is None:
                raise NotFound(f"device {device!r} not found")
            row = s.scalar(
                select(m.AlarmState).where(
                    m.AlarmState.rule_id == rule_row.id, m.AlarmState.device_id == dev.id
                )
            )
            if row is None and create:
                if not _applies(s, rule_row, dev):
                    raise alarm_not_found(rule, device)
                row, _ = self._load_or_new(s, tenant_id, rule_row, dev)
            if row is None:
                raise alarm_not_found(rule, device)
            alarm = _alarm(row)
            # An expired shelf ends first, so history shows it before the operator's action.
            expired = alarm.tick(now)
            self._keep(s, tenant_id, rule, device, row, expired)
            alarm = expired.alarm
            ts = max(now, alarm.last_change_ts or 0)
            step: Step = action(alarm, ts)
            self._keep(s, tenant_id, rule, device, row, step)
            return AlarmInfo(rule, device, dev.asset_id, step.alarm, step.event)

    @staticmethod
    def _keep(
        s: Session, tenant_id: int, rule: str, device: str, row: m.AlarmState, step: Step
    ) -> None:
        _store(row, step.alarm)
        if step.event is not None:
            s.add(_event_row(tenant_id, rule, device, step.event, step.alarm))


def device_ids_in(registry: Registry, tenant_id: int, names: Sequence[str]) -> list[int]:
    """Ids of the named devices of the tenant (for history scoping)."""
    wanted = set(names)
    return [d.id for d in registry.list_devices(tenant_id) if d.name in wanted]
