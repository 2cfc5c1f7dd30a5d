"""RuleStore and AlarmStore over a real registry database (SQLite in tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shopfloor.core.errors import BadInput, Conflict, NotFound
from shopfloor.core.kinds import DataType
from shopfloor.registry import Registry
from shopfloor.registry.service import SignalSpec
from shopfloor.rules.alarms import AlarmState, Cause, InvalidTransition, Priority
from shopfloor.rules.engine import RuleEngine
from shopfloor.rules.model import Event, ThresholdRule
from shopfloor.rules.store import AlarmStore, RuleStore

S = 1_000_000_000
HOT = {"signal": "temp", "limit": 80.0}


@dataclass
class World:
    reg: Registry
    rules: RuleStore
    alarms: AlarmStore
    tenant: int
    other: int


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    reg.upgrade()
    t, _ = reg.create_tenant("acme")
    o, _ = reg.create_tenant("other")
    ent = reg.create_asset(t.id, "enterprise", "works")
    site = reg.create_asset(t.id, "site", "plant", ent.id)
    area = reg.create_asset(t.id, "area", "press-shop", site.id)
    line = reg.create_asset(t.id, "line", "line-1", area.id)
    specs = [SignalSpec("temp"), SignalSpec("run", DataType.BOOL), SignalSpec("label", "string")]
    reg.create_device_type(t.id, "press", specs)
    reg.create_device(t.id, "press-01", "press", line.id)
    reg.create_device(t.id, "press-02", "press")
    reg.create_device_type(o.id, "press", specs)
    reg.create_device(o.id, "press-01", "press")
    yield World(reg, RuleStore(reg), AlarmStore(reg), t.id, o.id)
    reg.close()


def test_create_read_and_round_trip(w: World) -> None:
    info = w.rules.create(w.tenant, "hot", "threshold", HOT, device_type="press", priority=2)
    assert (info.kind, info.device_type, info.device, info.priority) == (
        "threshold",
        "press",
        None,
        Priority.HIGH,
    )
    assert info.enabled
    assert info.disabled_reason is None
    # Defaults of the dataclass are stored too, so the definition is complete.
    assert info.definition == {**HOT, "direction": "high", "deadband": 0.0} | {
        "on_delay": 0.0,
        "off_delay": 0.0,
    }
    assert w.rules.get(w.tenant, "hot") == info
    assert w.rules.list_rules(w.tenant) == [info]
    assert w.rules.list_rules(w.other) == []
    rule = info.to_rule()
    assert isinstance(rule, ThresholdRule)
    assert rule.id == "hot"
    assert rule.limit == 80.0
    with pytest.raises(Conflict):
        w.rules.create(w.tenant, "hot", "threshold", HOT, device="press-01")
    # Same name in another tenant is another rule.
    w.rules.create(w.other, "hot", "threshold", HOT, device="press-01")


def test_state_rule_conditions_round_trip(w: World) -> None:
    conds = [{"expression": "run and temp > 10", "state": "running"}]
    info = w.rules.create(w.tenant, "st", "state", {"conditions": conds}, device="press-01")
    assert info.definition["conditions"] == conds
    assert info.to_rule().conditions == (("run and temp > 10", "running"),)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "definition", "field", "match"),
    [
        ("expression", {"expression": "temp > (1"}, "definition.expression", "syntax error at"),
        ("expression", {"expression": "temp > nope"}, "definition.expression", "column 8"),
        ("expression", {"expression": "temp + 1"}, "definition.expression", "gives a number"),
        ("expression", {"expression": "label > 1"}, "definition.expression", "strings"),
        (
            "state",
            {
                "conditions": [
                    {"expression": "run", "state": "running"},
                    {"expression": "x.y", "state": "idle"},
                ]
            },
            "definition.conditions[1]",
            "column",
        ),
        ("threshold", {"signal": "nope", "limit": 1.0}, "definition.signal", "no signal 'nope'"),
        ("threshold", {"signal": "temp"}, "definition.limit", "needs limit"),
        ("threshold", {**HOT, "extra": 1}, "definition.extra", "no field 'extra'"),
        ("threshold", {**HOT, "deadband": -1.0}, "definition.deadband", "non-negative"),
        (
            "window",
            {"signal": "temp", "window": 0.0, "agg": "avg", "limit": 1.0},
            "definition.window",
            "positive",
        ),
        ("bogus", {}, "kind", "unknown rule kind"),
    ],
)
def test_a_bad_rule_is_rejected_with_its_position_and_not_stored(
    w: World, kind: str, definition: dict[str, object], field: str, match: str
) -> None:
    with pytest.raises(BadInput, match=match) as err:
        w.rules.create(w.tenant, "bad", kind, definition, device_type="press")
    assert err.value.field == field
    assert w.rules.list_rules(w.tenant) == []


def test_unknown_target_is_not_found(w: World) -> None:
    with pytest.raises(NotFound, match="device 'ghost' not found"):
        w.rules.create(w.tenant, "r", "threshold", HOT, device="ghost")
    with pytest.raises(NotFound, match="device type 'ghost' not found"):
        w.rules.create(w.tenant, "r", "threshold", HOT, device_type="ghost")
    with pytest.raises(BadInput, match="exactly one"):
        w.rules.create(w.tenant, "r", "threshold", HOT)
    # Another tenant's device is unknown here.
    w.reg.create_device(w.other, "only-other", "press")
    with pytest.raises(NotFound):
        w.rules.create(w.tenant, "r", "threshold", HOT, device="only-other")


def test_a_type_without_devices_is_checked_against_its_signals(w: World) -> None:
    w.reg.create_device_type(w.tenant, "oven", [SignalSpec("heat")])
    w.rules.create(
        w.tenant, "ok", "threshold", {"signal": "heat", "limit": 1.0}, device_type="oven"
    )
    with pytest.raises(BadInput, match="no signal 'temp'"):
        w.rules.create(w.tenant, "no", "threshold", HOT, device_type="oven")


def test_replace_enable_disable_delete(w: World) -> None:
    w.rules.create(w.tenant, "hot", "threshold", HOT, device_type="press")
    off = w.rules.set_enabled(w.tenant, "hot", False, "too noisy")
    assert (off.enabled, off.disabled_reason) == (False, "too noisy")
    assert w.rules.engine_rules(w.tenant) == []
    new = w.rules.replace(
        w.tenant, "hot", "expression", {"expression": "temp > 90"}, device="press-01"
    )
    assert (new.kind, new.device, new.enabled) == ("expression", "press-01", False)
    assert new.updated_at >= new.created_at
    with pytest.raises(BadInput, match="syntax error"):
        w.rules.replace(w.tenant, "hot", "expression", {"expression": "temp >"}, device="press-01")
    assert w.rules.get(w.tenant, "hot") == new  # unchanged
    on = w.rules.set_enabled(w.tenant, "hot", True)
    assert (on.enabled, on.disabled_reason) == (True, None)
    assert [r.id for r in w.rules.engine_rules(w.tenant)] == ["hot"]
    w.rules.delete(w.tenant, "hot")
    with pytest.raises(NotFound, match="rule 'hot' not found"):
        w.rules.get(w.tenant, "hot")
    with pytest.raises(NotFound):
        w.rules.replace(w.tenant, "hot", "threshold", HOT, device="press-01")


def _ev(kind: str, ts: int, value: float = 90.0, device: str = "press-01") -> Event:
    return Event("hot", device, kind, ts, value)  # type: ignore[arg-type]


def test_apply_ack_and_history(w: World) -> None:
    w.rules.create(
        w.tenant, "hot", "threshold", HOT, device_type="press", priority=1, message="Too hot"
    )
    stored = w.alarms.apply(w.tenant, [_ev("activated", 10 * S), _ev("activated", 11 * S, 95.0)])
    assert [e.to_state for e in stored] == [AlarmState.UNACK_ACTIVE]  # the repeat is no event
    [a] = w.alarms.list_alarms(w.tenant)
    assert (a.rule, a.device, a.alarm.state, a.alarm.value) == (
        "hot",
        "press-01",
        AlarmState.UNACK_ACTIVE,
        95.0,
    )
    assert (a.alarm.area, a.alarm.priority, a.alarm.message) == (
        "press-shop",
        Priority.URGENT,
        "Too hot",
    )
    with pytest.raises(BadInput, match="comment is required"):
        w.alarms.acknowledge(w.tenant, "hot", "press-01", "olga", " ")
    acked = w.alarms.acknowledge(w.tenant, "hot", "press-01", "olga", "checking the cooler")
    assert acked.alarm.state is AlarmState.ACK_ACTIVE
    assert acked.alarm.acknowledgements == 1
    with pytest.raises(InvalidTransition, match="already acknowledged"):
        w.alarms.acknowledge(w.tenant, "hot", "press-01", "olga", "again")
    w.alarms.apply(w.tenant, [_ev("cleared", 12 * S, 70.0)])
    assert w.alarms.get(w.tenant, "hot", "press-01").alarm.state is AlarmState.NORMAL
    hist = w.alarms.history(w.tenant)
    assert [(h.event.from_state, h.event.to_state, h.event.cause) for h in hist] == [
        (AlarmState.NORMAL, AlarmState.UNACK_ACTIVE, Cause.CONDITION_ACTIVE),
        (AlarmState.UNACK_ACTIVE, AlarmState.ACK_ACTIVE, Cause.ACKNOWLEDGE),
        (AlarmState.ACK_ACTIVE, AlarmState.NORMAL, Cause.CONDITION_CLEARED),
    ]
    assert (hist[1].event.user, hist[1].event.comment) == ("olga", "checking the cooler")
    # Paging and time range.
    assert [h.id for h in w.alarms.history(w.tenant, limit=1, offset=1)] == [hist[1].id]
    assert w.alarms.history(w.tenant, start=0, end=10 * S) == []
    assert len(w.alarms.history(w.tenant, start=10 * S, end=10 * S + 1)) == 1
    assert w.alarms.history(w.other) == []
    assert w.alarms.list_alarms(w.other) == []


def test_apply_skips_unknown_and_stamps_late_events(w: World) -> None:
    w.rules.create(w.tenant, "hot", "threshold", HOT, device_type="press")
    events = [
        _ev("activated", 5 * S),
        Event("gone", "press-01", "activated", 5 * S, 1.0),
        _ev("activated", 5 * S, device="ghost"),
        _ev("cleared", 6 * S, device="press-02"),  # no change: no event
        Event("hot", "press-01", "state", 5 * S, 0.0, "running"),  # not an alarm event
    ]
    assert len(w.alarms.apply(w.tenant, events)) == 1
    w.alarms.apply(w.tenant, [_ev("cleared", 9 * S)])
    # Late (before the last change): applied, stamped at the last change.
    [late] = w.alarms.apply(w.tenant, [_ev("activated", 7 * S)])
    assert (late.ts, late.to_state) == (9 * S, AlarmState.UNACK_ACTIVE)
    with pytest.raises(NotFound, match="no alarm of rule 'hot' on device 'press-01'"):
        w.alarms.get(w.other, "hot", "press-01")
    # Another tenant's events for the same names touch nothing here.
    assert w.alarms.apply(w.other, [_ev("activated", 20 * S)]) == []


def test_shelve_unshelve_and_expiry(w: World) -> None:
    w.rules.create(w.tenant, "hot", "threshold", HOT, device="press-01")
    w.alarms.apply(w.tenant, [_ev("activated", 1 * S)])
    far = 2**62
    shelved = w.alarms.shelve(w.tenant, "hot", "press-01", "olga", far, "maintenance")
    assert (shelved.alarm.state, shelved.alarm.shelved_until) == (AlarmState.SHELVED, far)
    w.alarms.apply(w.tenant, [_ev("cleared", 2 * S), _ev("activated", 3 * S)])
    hidden = w.alarms.get(w.tenant, "hot", "press-01").alarm
    assert hidden.state is AlarmState.SHELVED
    assert hidden.hidden_activations == 1
    back = w.alarms.unshelve(w.tenant, "hot", "press-01", "olga")
    assert back.alarm.state is AlarmState.UNACK_ACTIVE
    with pytest.raises(InvalidTransition):
        w.alarms.unshelve(w.tenant, "hot", "press-01", "olga")
    # A shelf that has run out ends on expire_shelves, stamped at its expiry.
    soon = w.alarms.shelve(w.tenant, "hot", "press-01", "olga", 2**61, "short").alarm
    assert w.alarms.expire_shelves(w.tenant, now=2**61 + 5) == 1
    assert w.alarms.get(w.tenant, "hot", "press-01").alarm.state is AlarmState.UNACK_ACTIVE
    last = w.alarms.history(w.tenant, limit=1000)[-1].event
    assert (last.cause, last.ts) == (Cause.SHELF_EXPIRED, soon.shelved_until)


def test_deleting_rule_or_device_removes_alarms_not_history(w: World) -> None:
    w.rules.create(w.tenant, "hot", "threshold", HOT, device_type="press")
    w.alarms.apply(w.tenant, [_ev("activated", S), _ev("activated", S, device="press-02")])
    w.reg.delete_device(w.tenant, "press-02", force=True)
    assert [a.device for a in w.alarms.list_alarms(w.tenant)] == ["press-01"]
    w.rules.delete(w.tenant, "hot")
    assert w.alarms.list_alarms(w.tenant) == []
    assert {h.device for h in w.alarms.history(w.tenant)} == {"press-01", "press-02"}


def test_engine_events_from_stored_rules(w: World) -> None:
    """The real engine over the stored rules and the registry's devices, into the store."""
    w.rules.create(w.tenant, "hot", "threshold", HOT, device_type="press")
    engine = RuleEngine(w.rules.engine_devices(w.tenant), w.rules.engine_rules(w.tenant))
    temp = w.reg.get_signal(w.tenant, "press-01/temp").id
    events = engine.process_arrays(
        np.array([temp] * 3), np.array([1, 2, 3]) * S, np.array([70.0, 85.0, 60.0])
    )
    assert [e.kind for e in events] == ["activated", "cleared"]
    stored = w.alarms.apply(w.tenant, events)
    assert [e.to_state for e in stored] == [AlarmState.UNACK_ACTIVE, AlarmState.UNACK_RTN]
    assert w.alarms.get(w.tenant, "hot", "press-01").alarm.value == 60.0


def test_change_key_moves_with_what_the_engine_is_built_from(w: World) -> None:
    """The rules runtime checks this one aggregate row every second instead of loading every
    rule, device and signal: each change the engine depends on must move it."""
    keys = [w.rules.change_key(w.tenant)]

    def changed(what: str) -> None:
        key = w.rules.change_key(w.tenant)
        assert key != keys[-1], f"the key did not change after {what}"
        keys.append(key)

    assert w.rules.change_key(w.tenant) == keys[0]  # stable while nothing changes
    w.rules.create(w.tenant, "hot", "threshold", HOT, device_type="press")
    changed("a rule was added")
    w.rules.set_enabled(w.tenant, "hot", False)
    changed("a rule was disabled")
    w.rules.create(w.tenant, "cold", "threshold", HOT, device="press-01")
    w.rules.delete(w.tenant, "hot")
    changed("one rule was added and another deleted")
    w.reg.create_device(w.tenant, "press-03", "press")
    changed("a device was added")
    w.reg.create_signal(w.tenant, "press-03", SignalSpec("pressure"))
    changed("a signal was added")
    w.reg.delete_device(w.tenant, "press-03", force=True)
    changed("a device and its signals were deleted")
    # Other tenants' changes leave it alone.
    w.reg.create_device(w.other, "press-09", "press")
    assert w.rules.change_key(w.tenant) == keys[-1]
