"""ISA-18.2 alarm state machine, history and flood figures (all pure, injected times)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import pairwise, product

import orjson
import pytest

from shopfloor.core.errors import BadInput, Conflict
from shopfloor.rules.alarm_flood import TEN_MINUTES_NS, bad_actors, flood_figures
from shopfloor.rules.alarm_history import event_from_row, event_to_row, query_history
from shopfloor.rules.alarms import (
    Alarm,
    AlarmEvent,
    AlarmState,
    Cause,
    InvalidTransition,
    Priority,
    Step,
)

S = AlarmState
T0 = 1_699_999_800 * 1_000_000_000  # 2023-11-14T22:10:00Z, on a 10-minute boundary
MIN = 60 * 1_000_000_000


def t(minutes: float) -> int:
    return T0 + int(minutes * MIN)


def new_alarm(area: str = "hall-1") -> Alarm:
    return Alarm(rule_id=7, device_id=42, priority=Priority.HIGH, area=area, message="oil hot")


# -- building an alarm in each state (condition active or not) through real transitions ----------


def in_state(key: str) -> Alarm:
    a = new_alarm()
    active = key.endswith("+active")
    base = key.removesuffix("+active")
    if base == "normal":
        return a
    if base in ("unack_active", "ack_active", "unack_rtn"):
        a = a.condition_active(t(0), 95.0).alarm
        if base == "ack_active":
            a = a.acknowledge(t(0.5), "ann", "seen").alarm
        if base == "unack_rtn":
            a = a.condition_cleared(t(0.5), 70.0).alarm
        return a
    if active:
        a = a.condition_active(t(0), 95.0).alarm.acknowledge(t(0.2), "ann", "seen").alarm
    if base == "shelved":
        a = a.shelve(t(1), "ann", t(60), "chattering sensor").alarm
    elif base == "suppressed_by_design":
        a = a.suppress_by_design(t(1), "pump stopped").alarm
    elif base == "out_of_service":
        a = a.remove_from_service(t(1), "bob", "sensor replaced").alarm
    return a


ACTIONS: dict[str, Callable[[Alarm], Step]] = {
    "condition_active": lambda a: a.condition_active(t(2), 96.0),
    "condition_cleared": lambda a: a.condition_cleared(t(2), 60.0),
    "acknowledge": lambda a: a.acknowledge(t(2), "ann", "checked the cooler"),
    "shelve": lambda a: a.shelve(t(2), "ann", t(30), "known fault"),
    "unshelve": lambda a: a.unshelve(t(2), "ann"),
    "suppress": lambda a: a.suppress_by_design(t(2), "line stopped"),
    "unsuppress": lambda a: a.unsuppress(t(2), "line running"),
    "remove": lambda a: a.remove_from_service(t(2), "bob", "maintenance"),
    "return": lambda a: a.return_to_service(t(2), "bob", "done"),
}

RAISE = "raise"
NONE = "no event"  # no transition: same state, no history event

# Every (state, action) pair: the state it lands in, RAISE, or NONE. Hand-written from the
# ISA-18.2 transition diagram.
A, C = "condition_active", "condition_cleared"
EXPECTED: dict[tuple[str, str], str] = {}


def _row(state: str, **cells: str) -> None:
    for action in ACTIONS:
        EXPECTED[state, action] = cells.get(action, RAISE)


_row(
    "normal",
    condition_active=S.UNACK_ACTIVE,
    condition_cleared=NONE,
    shelve=S.SHELVED,
    suppress=S.SUPPRESSED_BY_DESIGN,
    remove=S.OUT_OF_SERVICE,
)
_row(
    "unack_active",
    condition_active=NONE,
    condition_cleared=S.UNACK_RTN,
    acknowledge=S.ACK_ACTIVE,
    shelve=S.SHELVED,
    suppress=S.SUPPRESSED_BY_DESIGN,
    remove=S.OUT_OF_SERVICE,
)
_row(
    "ack_active",
    condition_active=NONE,
    condition_cleared=S.NORMAL,
    shelve=S.SHELVED,
    suppress=S.SUPPRESSED_BY_DESIGN,
    remove=S.OUT_OF_SERVICE,
)
_row(
    "unack_rtn",
    condition_active=S.UNACK_ACTIVE,  # re-alarm
    condition_cleared=NONE,
    acknowledge=S.NORMAL,
    shelve=S.SHELVED,
    suppress=S.SUPPRESSED_BY_DESIGN,
    remove=S.OUT_OF_SERVICE,
)
# Hidden states: condition changes are tracked (an event, same state), never annunciated;
# leaving goes where the live condition says.
_row("shelved", condition_active=S.SHELVED, condition_cleared=NONE, unshelve=S.NORMAL)
_row("shelved+active", condition_active=NONE, condition_cleared=S.SHELVED, unshelve=S.UNACK_ACTIVE)
_row(
    "suppressed_by_design",
    condition_active=S.SUPPRESSED_BY_DESIGN,
    condition_cleared=NONE,
    unsuppress=S.NORMAL,
)
_row(
    "suppressed_by_design+active",
    condition_active=NONE,
    condition_cleared=S.SUPPRESSED_BY_DESIGN,
    unsuppress=S.UNACK_ACTIVE,
)
_row(
    "out_of_service",
    condition_active=S.OUT_OF_SERVICE,
    condition_cleared=NONE,
    **{"return": S.NORMAL},
)
_row(
    "out_of_service+active",
    condition_active=NONE,
    condition_cleared=S.OUT_OF_SERVICE,
    **{"return": S.UNACK_ACTIVE},
)

STATE_KEYS = sorted({k for k, _ in EXPECTED})


def test_table_covers_every_state_and_action() -> None:
    assert {k.removesuffix("+active") for k in STATE_KEYS} == {s.value for s in AlarmState}
    assert set(EXPECTED) == set(product(STATE_KEYS, ACTIONS))
    for key in STATE_KEYS:
        assert in_state(key).state.value == key.removesuffix("+active")


@pytest.mark.parametrize(("key", "action"), sorted(EXPECTED))
def test_every_transition_from_every_state(key: str, action: str) -> None:
    alarm = in_state(key)
    expected = EXPECTED[key, action]
    if expected == RAISE:
        with pytest.raises(InvalidTransition) as err:
            ACTIONS[action](alarm)
        # The error names the state the alarm is in, and is a 409.
        assert alarm.state.value in str(err.value)
        assert err.value.state is alarm.state
        assert isinstance(err.value, Conflict)
        return
    step = ACTIONS[action](alarm)
    if expected == NONE:
        assert step.event is None
        assert step.alarm.state is alarm.state
        return
    assert step.alarm.state.value == expected
    assert step.event is not None
    ev = step.event
    assert (ev.from_state, ev.to_state, ev.ts, ev.alarm_id) == (
        alarm.state,
        step.alarm.state,
        t(2),
        "7/42",
    )
    assert step.alarm.last_change_ts == t(2)


def test_error_message_is_clear() -> None:
    with pytest.raises(InvalidTransition, match=r"cannot acknowledge alarm 7/42: it is normal"):
        new_alarm().acknowledge(t(1), "ann", "x")
    with pytest.raises(InvalidTransition, match=r"it is shelved \(unshelve it first\)"):
        in_state("shelved").remove_from_service(t(2), "bob", "x")
    with pytest.raises(InvalidTransition, match=r"already acknowledged"):
        in_state("ack_active").acknowledge(t(2), "ann", "again")


# -- inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("comment", ["", "   "])
def test_acknowledge_needs_a_comment(comment: str) -> None:
    a = in_state("unack_active")
    with pytest.raises(BadInput) as err:
        a.acknowledge(t(2), "ann", comment)
    assert err.value.field == "comment"


def test_operator_actions_need_user_and_comment() -> None:
    a = in_state("unack_active")
    with pytest.raises(BadInput) as err:
        a.acknowledge(t(2), " ", "ok")
    assert err.value.field == "user"
    calls: list[Callable[[], Step]] = [
        lambda: a.shelve(t(2), "ann", t(9), ""),
        lambda: a.suppress_by_design(t(2), ""),
        lambda: a.remove_from_service(t(2), "bob", ""),
    ]
    for call in calls:
        with pytest.raises(BadInput) as err:
            call()
        assert err.value.field == "comment"


def test_shelve_until_must_be_in_the_future() -> None:
    a = in_state("unack_active")
    with pytest.raises(BadInput) as err:
        a.shelve(t(2), "ann", t(2), "x")
    assert err.value.field == "until"


def test_time_may_not_run_backwards() -> None:
    a = in_state("unack_active")  # last change at t(0)
    with pytest.raises(BadInput, match="before the last change") as err:
        a.condition_cleared(t(-1))
    assert err.value.field == "ts"
    assert a.condition_cleared(t(0)).alarm.state is S.UNACK_RTN  # same instant is fine


def test_alarm_needs_area_and_priority() -> None:
    with pytest.raises(BadInput) as err:
        Alarm(1, 2, Priority.LOW, " ", "m")
    assert err.value.field == "area"
    a0 = new_alarm()
    cases: list[tuple[Callable[[], Alarm], str]] = [
        (lambda: replace(a0, state=S.ACK_ACTIVE), "active"),
        (lambda: replace(a0, state=S.UNACK_RTN, active=True), "active"),
        (lambda: replace(a0, state=S.SHELVED), "shelved_until"),
        (lambda: replace(a0, shelved_until=t(1)), "shelved_until"),
    ]
    for make, name in cases:
        with pytest.raises(BadInput) as err:
            make()
        assert err.value.field == name
    assert Priority.parse("urgent") is Priority.URGENT
    assert Priority.parse(4) is Priority.LOW
    assert Priority.parse("2") is Priority.HIGH
    for bad in ("severe", 0, 5):
        with pytest.raises(BadInput):
            Priority.parse(bad)


# -- shelving expiry ------------------------------------------------------------------------------


def test_shelf_expires_at_its_time_into_normal() -> None:
    a = in_state("shelved")  # shelved at t(1) until t(60), condition clear
    assert a.shelved_until == t(60)
    before = a.tick(t(59.99))
    assert before.event is None
    assert before.alarm is a
    after = a.tick(t(60))
    assert after.alarm.state is S.NORMAL
    assert after.alarm.shelved_until is None
    assert after.event is not None
    assert after.event.cause is Cause.SHELF_EXPIRED
    assert after.event.user is None
    assert not after.event.annunciated


def test_shelf_expiry_while_active_comes_back_unacknowledged() -> None:
    a = in_state("shelved")
    a = a.condition_active(t(10), 99.0).alarm  # tracked, hidden
    assert (a.state, a.active, a.annunciations) == (S.SHELVED, True, 0)
    step = a.tick(t(75))  # late tick: event stamped at the expiry itself
    assert step.alarm.state is S.UNACK_ACTIVE
    assert step.event is not None
    assert step.event.ts == t(60)
    assert step.event.annunciated
    assert step.event.value == 99.0
    assert step.alarm.annunciations == 1
    assert step.alarm.tick(t(500)).event is None  # nothing further to expire


def test_acked_active_alarm_shelved_returns_unacked() -> None:
    a = in_state("ack_active")
    a = a.shelve(t(1), "ann", t(5), "flapping").alarm
    assert a.tick(t(5)).alarm.state is S.UNACK_ACTIVE


def test_unshelve_early_clears_expiry() -> None:
    a = in_state("shelved+active").unshelve(t(3), "ann", "fixed").alarm
    assert (a.state, a.shelved_until) == (S.UNACK_ACTIVE, None)


# -- re-alarm, suppression ------------------------------------------------------------------------


def test_re_alarm_from_unack_rtn() -> None:
    a = new_alarm()
    a = a.condition_active(t(0), 91.0).alarm
    a = a.condition_cleared(t(1), 80.0).alarm
    assert a.state is S.UNACK_RTN
    step = a.condition_active(t(2), 92.0)
    assert step.alarm.state is S.UNACK_ACTIVE
    assert step.event is not None
    assert step.event.annunciated
    assert (step.alarm.activations, step.alarm.annunciations) == (2, 2)
    a = step.alarm.acknowledge(t(3), "ann", "ok").alarm.condition_cleared(t(4)).alarm
    assert a.state is S.NORMAL
    assert a.acknowledgements == 1


def test_repeated_active_only_updates_value() -> None:
    a = in_state("unack_active")
    step = a.condition_active(t(1), 97.5)
    assert step.event is None
    assert step.alarm.value == 97.5
    assert step.alarm.activations == 1


def test_suppression_hides_annunciation() -> None:
    a = new_alarm().suppress_by_design(t(0), "compressor off").alarm
    events: list[AlarmEvent] = []
    for i in range(5):  # the condition chatters while suppressed
        s1 = a.condition_active(t(1 + 2 * i), 99.0)
        s2 = s1.alarm.condition_cleared(t(2 + 2 * i), 50.0)
        a = s2.alarm
        events += [e for e in (s1.event, s2.event) if e is not None]
    assert a.state is S.SUPPRESSED_BY_DESIGN
    assert len(events) == 10  # every change recorded ...
    assert not any(e.annunciated for e in events)  # ... none annunciated
    assert (a.activations, a.hidden_activations, a.annunciations) == (5, 5, 0)
    assert flood_figures(events) == {}
    a = a.condition_active(t(20), 98.0).alarm
    back = a.unsuppress(t(21), "compressor on")
    assert back.alarm.state is S.UNACK_ACTIVE  # live condition decides
    assert back.event is not None
    assert back.event.annunciated


def test_out_of_service_tracks_and_returns_to_normal() -> None:
    a = in_state("out_of_service+active")
    a = a.condition_cleared(t(5), 20.0).alarm
    step = a.return_to_service(t(6), "bob")
    assert step.alarm.state is S.NORMAL
    assert step.event is not None
    assert (step.event.user, step.event.comment, step.event.value) == ("bob", None, 20.0)


# -- history --------------------------------------------------------------------------------------


def run_scenario() -> tuple[Alarm, list[AlarmEvent]]:
    a = new_alarm()
    events: list[AlarmEvent] = []

    def do(step: Step) -> None:
        nonlocal a
        a = step.alarm
        if step.event is not None:
            events.append(step.event)

    do(a.condition_active(t(0), 91.0))
    do(a.condition_active(t(0.5), 93.0))  # no event
    do(a.acknowledge(t(1), "ann", "cooling checked"))
    do(a.condition_cleared(t(2), 70.0))
    do(a.condition_active(t(3), 95.0))
    do(a.shelve(t(4), "ann", t(14), "known fault, ticket 12"))
    do(a.condition_cleared(t(5), 60.0))
    do(a.condition_active(t(6), 96.0))
    do(a.tick(t(10)))  # no event
    do(a.tick(t(15)))  # expires at t(14), still active
    do(a.acknowledge(t(16), "bob", "on it"))
    do(a.remove_from_service(t(17), "bob", "replace sensor"))
    do(a.condition_cleared(t(18), 20.0))
    do(a.return_to_service(t(19), "bob", "sensor new"))
    return a, events


def test_history_is_complete_and_consistent() -> None:
    a, events = run_scenario()
    got = [(e.ts, e.from_state, e.to_state, e.cause, e.user) for e in events]
    assert got == [
        (t(0), S.NORMAL, S.UNACK_ACTIVE, Cause.CONDITION_ACTIVE, None),
        (t(1), S.UNACK_ACTIVE, S.ACK_ACTIVE, Cause.ACKNOWLEDGE, "ann"),
        (t(2), S.ACK_ACTIVE, S.NORMAL, Cause.CONDITION_CLEARED, None),
        (t(3), S.NORMAL, S.UNACK_ACTIVE, Cause.CONDITION_ACTIVE, None),
        (t(4), S.UNACK_ACTIVE, S.SHELVED, Cause.SHELVE, "ann"),
        (t(5), S.SHELVED, S.SHELVED, Cause.CONDITION_CLEARED, None),
        (t(6), S.SHELVED, S.SHELVED, Cause.CONDITION_ACTIVE, None),
        (t(14), S.SHELVED, S.UNACK_ACTIVE, Cause.SHELF_EXPIRED, None),
        (t(16), S.UNACK_ACTIVE, S.ACK_ACTIVE, Cause.ACKNOWLEDGE, "bob"),
        (t(17), S.ACK_ACTIVE, S.OUT_OF_SERVICE, Cause.REMOVE_FROM_SERVICE, "bob"),
        (t(18), S.OUT_OF_SERVICE, S.OUT_OF_SERVICE, Cause.CONDITION_CLEARED, None),
        (t(19), S.OUT_OF_SERVICE, S.NORMAL, Cause.RETURN_TO_SERVICE, "bob"),
    ]
    # Events chain: each starts where the previous ended, and ends in the alarm's state.
    for prev, nxt in pairwise(events):
        assert prev.to_state is nxt.from_state
    assert events[-1].to_state is a.state
    assert events[0].from_state is S.NORMAL
    assert [e.value for e in events][:4] == [91.0, 93.0, 70.0, 95.0]  # ack keeps last value
    assert events[1].comment == "cooling checked"
    assert {e.area for e in events} == {"hall-1"}
    assert {e.priority for e in events} == {Priority.HIGH}
    assert (a.activations, a.annunciations, a.acknowledgements, a.hidden_activations) == (
        3,
        3,
        2,
        1,
    )


def test_history_rows_round_trip_through_json() -> None:
    _, events = run_scenario()
    rows = orjson.loads(orjson.dumps([event_to_row(e) for e in events]))
    assert [event_from_row(r) for r in rows] == events


def test_damaged_row_is_rejected_by_field() -> None:
    _, events = run_scenario()
    row = event_to_row(events[0])
    for field, bad in [
        ("to_state", "flapping"),
        ("cause", "magic"),
        ("ts", "noon"),
        ("priority", 9),
    ]:
        broken = {**row, field: bad}
        with pytest.raises(BadInput) as err:
            event_from_row(broken)
        assert err.value.field == field
    with pytest.raises(BadInput) as err:
        event_from_row({k: v for k, v in row.items() if k != "area"})
    assert err.value.field == "area"


def test_query_history() -> None:
    _, events = run_scenario()
    other = new_alarm("hall-2").condition_active(t(3.5), 1.0).event
    assert other is not None
    allev = [*events, other]
    assert [e.ts for e in query_history(allev, area="hall-2")] == [t(3.5)]
    assert len(query_history(allev, alarm_id="7/42")) == 13  # same ids in two areas
    assert [e.ts for e in query_history(allev, start=t(3), end=t(5))] == [t(3), t(3.5), t(4)]
    acks = query_history(allev, causes={Cause.ACKNOWLEDGE}, user="bob")
    assert [e.comment for e in acks] == ["on it"]
    ann = query_history(allev, annunciated_only=True)
    assert [e.ts for e in ann] == [t(0), t(3), t(3.5), t(14)]
    assert query_history(reversed(allev))[0].ts == t(0)  # always time-ordered
    with pytest.raises(BadInput):
        query_history(allev, start=t(5), end=t(4))


# -- flood figures --------------------------------------------------------------------------------


def ann_event(minute: float, alarm_id: str, area: str) -> AlarmEvent:
    return AlarmEvent(
        ts=t(minute),
        alarm_id=alarm_id,
        from_state=S.NORMAL,
        to_state=S.UNACK_ACTIVE,
        cause=Cause.CONDITION_ACTIVE,
        user=None,
        comment=None,
        value=1.0,
        area=area,
        priority=Priority.MEDIUM,
    )


def flood_events() -> list[AlarmEvent]:
    # hall-1: bucket 0 (min 0-10): 12 alarms -> flood; bucket 1: 3; bucket 2: 0; bucket 3: 11 -> flood
    # hall-2: bucket 1: 10 (exactly the threshold: not a flood)
    ev = [ann_event(0.5 * i, f"1/{i % 3}", "hall-1") for i in range(12)]  # 0.0 .. 5.5 min
    ev += [ann_event(10 + i, "1/0", "hall-1") for i in range(3)]  # 10, 11, 12
    ev += [ann_event(30 + 0.5 * i, "1/9", "hall-1") for i in range(11)]  # 30 .. 35
    ev += [ann_event(10 + 0.9 * i, "2/1", "hall-2") for i in range(10)]  # 10 .. 18.1
    # Not annunciations: must not count.
    ack = AlarmEvent(
        t(1),
        "1/0",
        S.UNACK_ACTIVE,
        S.ACK_ACTIVE,
        Cause.ACKNOWLEDGE,
        "a",
        "c",
        1.0,
        "hall-1",
        Priority.LOW,
    )
    hidden = AlarmEvent(
        t(2),
        "1/0",
        S.SHELVED,
        S.SHELVED,
        Cause.CONDITION_ACTIVE,
        None,
        None,
        1.0,
        "hall-1",
        Priority.LOW,
    )
    return [*ev, ack, hidden]


def test_flood_figures_by_hand() -> None:
    figs = flood_figures(flood_events())
    assert sorted(figs) == ["hall-1", "hall-2"]
    h1, h2 = figs["hall-1"], figs["hall-2"]
    # Common window: first annunciation (t0) to last (35 min) -> 4 buckets.
    assert h1.counts == (12, 3, 0, 11)
    assert h2.counts == (0, 10, 0, 0)
    assert h1.bucket_starts() == (t(0), t(10), t(20), t(30))
    assert (h1.total, h1.peak, h1.peak_bucket_ns, h1.flood_buckets) == (26, 12, t(0), 2)
    assert h1.flood_share == 0.5
    assert h1.mean == 6.5
    assert (h2.total, h2.peak, h2.peak_bucket_ns, h2.flood_buckets, h2.flood_share) == (
        10,
        10,
        t(10),
        0,
        0.0,
    )


def test_flood_window_and_options() -> None:
    ev = flood_events()
    # Window 5..25 min widens to buckets [0, 30); the ten alarms of minutes 0-4.5 fall outside
    # the bounds themselves, leaving those at 5.0 and 5.5 in bucket 0.
    figs = flood_figures(ev, start=t(5), end=t(25), areas=["hall-3"])
    assert figs["hall-1"].counts == (2, 3, 0)
    assert figs["hall-1"].first_bucket_ns == t(0)
    assert figs["hall-3"].counts == (0, 0, 0)
    assert figs["hall-3"].peak_bucket_ns is None
    # 30-minute buckets, threshold 20.
    big = flood_figures(ev, bucket_ns=3 * TEN_MINUTES_NS, threshold=20)["hall-1"]
    assert (big.counts, big.flood_buckets) == ((15, 11), 0)
    assert flood_figures([]) == {}
    with pytest.raises(BadInput):
        flood_figures(ev, bucket_ns=0)
    with pytest.raises(BadInput):
        flood_figures(ev, start=t(5), end=t(5))


def test_bad_actors() -> None:
    ev = flood_events()
    top = bad_actors(ev, 3)
    # 1/0: 4 of the first twelve + 3 = 7; 1/1, 1/2: 4 each; 1/9: 11; 2/1: 10. Total 36.
    assert [(b.alarm_id, b.count) for b in top] == [("1/9", 11), ("2/1", 10), ("1/0", 7)]
    assert top[0].share == pytest.approx(11 / 36)
    assert top[1].area == "hall-2"
    tie = bad_actors(ev, 5, area="hall-1")
    assert [(b.alarm_id, b.count) for b in tie] == [("1/9", 11), ("1/0", 7), ("1/1", 4), ("1/2", 4)]
    assert bad_actors(ev, 1, start=t(10), end=t(20))[0].alarm_id == "2/1"
    with pytest.raises(BadInput):
        bad_actors(ev, 0)
