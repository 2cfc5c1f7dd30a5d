"""The ISA-18.2 alarm state machine (ANSI/ISA-18.2-2016 §11, alarm state transition diagram).

One :class:`Alarm` exists per (rule, device). It is immutable: every transition returns a
:class:`Step` holding the new alarm and the history event it produced (``None`` when nothing
changed state, e.g. a repeated "still active" report). Nothing here touches a database or a
clock; callers pass timestamps (int64 ns UTC, like the point schema) so tests and replays are
deterministic.

States A-D of the standard (normal, unacknowledged active, acknowledged active, unacknowledged
return to normal) are the *annunciation-enabled* states. Shelved, suppressed by design and out
of service can be entered from any of them; while in one of those the live condition is still
tracked (and every change recorded in history) but never annunciated. Leaving them puts the
alarm in the state the live condition implies: unacknowledged active if the condition is
active, normal otherwise.

Latching alarms and the designed-suppression logic itself (which alarms a plant state
suppresses) are outside this module: the caller decides *when* to suppress.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum
from typing import Final

from shopfloor.core.errors import BadInput, Conflict

__all__ = [
    "ANNUNCIATING",
    "Alarm",
    "AlarmEvent",
    "AlarmState",
    "Cause",
    "InvalidTransition",
    "Priority",
    "Step",
]


class AlarmState(StrEnum):
    NORMAL = "normal"
    UNACK_ACTIVE = "unack_active"
    ACK_ACTIVE = "ack_active"
    UNACK_RTN = "unack_rtn"
    SHELVED = "shelved"
    SUPPRESSED_BY_DESIGN = "suppressed_by_design"
    OUT_OF_SERVICE = "out_of_service"


# ISA-18.2 states A-D: the alarm is presented to the operator when its condition demands.
ANNUNCIATING: Final = frozenset(
    {AlarmState.NORMAL, AlarmState.UNACK_ACTIVE, AlarmState.ACK_ACTIVE, AlarmState.UNACK_RTN}
)
_HIDDEN: Final = frozenset(
    {AlarmState.SHELVED, AlarmState.SUPPRESSED_BY_DESIGN, AlarmState.OUT_OF_SERVICE}
)


class Priority(IntEnum):
    """Alarm priority; 1 is the most urgent (ISA-18.2 recommends three or four levels)."""

    URGENT = 1
    HIGH = 2
    MEDIUM = 3
    LOW = 4

    @classmethod
    def parse(cls, raw: int | str) -> Priority:
        """Accept 1-4 or a name ('urgent', 'high', 'medium', 'low')."""
        if isinstance(raw, str) and not raw.strip().isdigit():
            try:
                return cls[raw.strip().upper()]
            except KeyError:
                names = ", ".join(p.name.lower() for p in cls)
                raise BadInput(
                    f"unknown priority {raw!r}, use 1-4 or {names}", "priority"
                ) from None
        try:
            return cls(int(raw))
        except ValueError:
            raise BadInput(
                f"priority {raw!r} out of range, use 1 (urgent) to 4 (low)", "priority"
            ) from None


class Cause(StrEnum):
    """What made a transition happen (stored with every history event)."""

    CONDITION_ACTIVE = "condition_active"
    CONDITION_CLEARED = "condition_cleared"
    ACKNOWLEDGE = "acknowledge"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    SHELF_EXPIRED = "shelf_expired"
    SUPPRESS = "suppress_by_design"
    UNSUPPRESS = "unsuppress"
    REMOVE_FROM_SERVICE = "remove_from_service"
    RETURN_TO_SERVICE = "return_to_service"


class InvalidTransition(Conflict):
    """An operator or caller asked for a transition the current state does not allow."""

    def __init__(self, alarm_id: str, action: str, state: AlarmState, why: str) -> None:
        super().__init__(f"cannot {action} alarm {alarm_id}: it is {state.value} ({why})")
        self.alarm_id = alarm_id
        self.action = action
        self.state = state


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One history entry. Area and priority are copied in so flood figures need only events."""

    ts: int
    alarm_id: str
    from_state: AlarmState
    to_state: AlarmState
    cause: Cause
    user: str | None
    comment: str | None
    value: float | None
    area: str
    priority: Priority

    @property
    def annunciated(self) -> bool:
        """True when this event presented the alarm to the operator (entered unack active)."""
        return self.to_state is AlarmState.UNACK_ACTIVE and self.from_state is not self.to_state


@dataclass(frozen=True, slots=True)
class Step:
    alarm: Alarm
    event: AlarmEvent | None


@dataclass(frozen=True, slots=True)
class Alarm:
    """The alarm of one rule on one device, with its state and counters."""

    rule_id: int
    device_id: int
    priority: Priority
    area: str
    message: str
    state: AlarmState = AlarmState.NORMAL
    # The live condition, tracked in every state (also while shelved or out of service).
    active: bool = False
    value: float | None = None
    last_change_ts: int | None = None
    shelved_until: int | None = None
    # Counters (reset only by making a new Alarm).
    activations: int = 0  # condition became active, annunciated or not
    annunciations: int = 0  # entries into unack active
    acknowledgements: int = 0
    hidden_activations: int = 0  # activations while shelved / suppressed / out of service

    def __post_init__(self) -> None:
        if not self.area.strip():
            raise BadInput("an alarm needs an area (plant area, line or unit)", "area")
        if not isinstance(self.priority, Priority):
            raise BadInput(f"priority must be a Priority, not {self.priority!r}", "priority")
        # An alarm loaded from storage must be one the transitions could have produced.
        if self.state in (AlarmState.UNACK_ACTIVE, AlarmState.ACK_ACTIVE) and not self.active:
            raise BadInput(f"a {self.state.value} alarm must have its condition active", "active")
        if self.state in (AlarmState.NORMAL, AlarmState.UNACK_RTN) and self.active:
            raise BadInput(f"a {self.state.value} alarm cannot have its condition active", "active")
        if (self.state is AlarmState.SHELVED) != (self.shelved_until is not None):
            raise BadInput(
                "shelved_until is set exactly when the alarm is shelved", "shelved_until"
            )

    @property
    def id(self) -> str:
        return f"{self.rule_id}/{self.device_id}"

    @property
    def implied_state(self) -> AlarmState:
        """Where the alarm goes when it returns to annunciation: decided by the live condition."""
        return AlarmState.UNACK_ACTIVE if self.active else AlarmState.NORMAL

    # -- condition changes (from rule evaluation) ----------------------------------------------

    def condition_active(self, ts: int, value: float | None = None) -> Step:
        self._check_ts(ts)
        if self.active:
            # Still active: only the value moves, no transition, no event.
            return Step(replace(self, value=value), None)
        s = self.state
        hidden = s in _HIDDEN
        # Hidden: tracked, not annunciated. Otherwise the alarm is NORMAL or UNACK_RTN (an
        # active state implies self.active, checked on creation); from UNACK_RTN it re-alarms.
        to = s if hidden else AlarmState.UNACK_ACTIVE
        return self._go(
            ts,
            to,
            Cause.CONDITION_ACTIVE,
            value=value,
            active=True,
            activations=self.activations + 1,
            hidden_activations=self.hidden_activations + (1 if hidden else 0),
        )

    def condition_cleared(self, ts: int, value: float | None = None) -> Step:
        self._check_ts(ts)
        if not self.active:
            return Step(replace(self, value=value), None)
        to = {
            AlarmState.UNACK_ACTIVE: AlarmState.UNACK_RTN,
            AlarmState.ACK_ACTIVE: AlarmState.NORMAL,
        }.get(self.state, self.state)
        return self._go(ts, to, Cause.CONDITION_CLEARED, value=value, active=False)

    # -- operator actions ------------------------------------------------------------------------

    def acknowledge(self, ts: int, user: str, comment: str) -> Step:
        self._check_ts(ts)
        user, comment = _who(user), _why(comment, "acknowledge")
        if self.state is AlarmState.UNACK_ACTIVE:
            to = AlarmState.ACK_ACTIVE
        elif self.state is AlarmState.UNACK_RTN:
            to = AlarmState.NORMAL
        else:
            why = (
                "already acknowledged"
                if self.state is AlarmState.ACK_ACTIVE
                else "only unacknowledged alarms can be acknowledged"
            )
            raise InvalidTransition(self.id, "acknowledge", self.state, why)
        return self._go(
            ts,
            to,
            Cause.ACKNOWLEDGE,
            user=user,
            comment=comment,
            acknowledgements=self.acknowledgements + 1,
        )

    def shelve(self, ts: int, user: str, until: int, comment: str) -> Step:
        self._check_ts(ts)
        user, comment = _who(user), _why(comment, "shelve")
        self._require_annunciating("shelve")
        if until <= ts:
            raise BadInput(f"shelve until {until} is not after the shelving time {ts}", "until")
        return self._go(
            ts, AlarmState.SHELVED, Cause.SHELVE, user=user, comment=comment, shelved_until=until
        )

    def unshelve(self, ts: int, user: str, comment: str | None = None) -> Step:
        self._check_ts(ts)
        self._require(AlarmState.SHELVED, "unshelve")
        return self._back(ts, Cause.UNSHELVE, _who(user), comment)

    def tick(self, now: int) -> Step:
        """Let time pass: a shelf whose expiry has come returns the alarm to annunciation."""
        if (
            self.state is AlarmState.SHELVED
            and self.shelved_until is not None
            and now >= self.shelved_until
        ):
            # Stamped at the expiry, not at the (possibly late) tick, so history shows when
            # the shelf really ended.
            return self._back(
                max(self.shelved_until, self.last_change_ts or 0), Cause.SHELF_EXPIRED
            )
        return Step(self, None)

    def suppress_by_design(self, ts: int, reason: str) -> Step:
        self._check_ts(ts)
        reason = _why(reason, "suppress")
        self._require_annunciating("suppress")
        return self._go(ts, AlarmState.SUPPRESSED_BY_DESIGN, Cause.SUPPRESS, comment=reason)

    def unsuppress(self, ts: int, reason: str | None = None) -> Step:
        self._check_ts(ts)
        self._require(AlarmState.SUPPRESSED_BY_DESIGN, "unsuppress")
        return self._back(ts, Cause.UNSUPPRESS, None, reason)

    def remove_from_service(self, ts: int, user: str, comment: str) -> Step:
        self._check_ts(ts)
        user, comment = _who(user), _why(comment, "remove from service")
        self._require_annunciating("remove from service")
        return self._go(
            ts, AlarmState.OUT_OF_SERVICE, Cause.REMOVE_FROM_SERVICE, user=user, comment=comment
        )

    def return_to_service(self, ts: int, user: str, comment: str | None = None) -> Step:
        self._check_ts(ts)
        self._require(AlarmState.OUT_OF_SERVICE, "return to service")
        return self._back(ts, Cause.RETURN_TO_SERVICE, _who(user), comment)

    # -- helpers ---------------------------------------------------------------------------------

    def _back(
        self, ts: int, cause: Cause, user: str | None = None, comment: str | None = None
    ) -> Step:
        return self._go(
            ts, self.implied_state, cause, user=user, comment=comment or None, shelved_until=None
        )

    def _go(
        self,
        ts: int,
        to: AlarmState,
        cause: Cause,
        *,
        user: str | None = None,
        comment: str | None = None,
        value: float | None = None,
        active: bool | None = None,
        shelved_until: int | None = None,
        activations: int | None = None,
        hidden_activations: int | None = None,
        acknowledgements: int | None = None,
    ) -> Step:
        # Operator actions carry no value; keep the last one seen so the alarm still shows it.
        new_value = (
            self.value if cause not in (Cause.CONDITION_ACTIVE, Cause.CONDITION_CLEARED) else value
        )
        entered = to is AlarmState.UNACK_ACTIVE and self.state is not to
        alarm = replace(
            self,
            state=to,
            active=self.active if active is None else active,
            value=new_value,
            last_change_ts=ts,
            # Condition changes while shelved keep the expiry; leaving the shelf drops it.
            shelved_until=(
                (self.shelved_until if shelved_until is None else shelved_until)
                if to is AlarmState.SHELVED
                else None
            ),
            activations=self.activations if activations is None else activations,
            hidden_activations=(
                self.hidden_activations if hidden_activations is None else hidden_activations
            ),
            acknowledgements=self.acknowledgements
            if acknowledgements is None
            else acknowledgements,
            annunciations=self.annunciations + (1 if entered else 0),
        )
        event = AlarmEvent(
            ts=ts,
            alarm_id=self.id,
            from_state=self.state,
            to_state=to,
            cause=cause,
            user=user,
            comment=comment,
            value=new_value,
            area=self.area,
            priority=self.priority,
        )
        return Step(alarm, event)

    def _check_ts(self, ts: int) -> None:
        # History must stay in time order; an older report would rewrite the past.
        if self.last_change_ts is not None and ts < self.last_change_ts:
            raise BadInput(
                f"time {ts} is before the last change of alarm {self.id} ({self.last_change_ts})",
                "ts",
            )

    def _require(self, state: AlarmState, action: str) -> None:
        if self.state is not state:
            raise InvalidTransition(self.id, action, self.state, f"it must be {state.value}")

    def _require_annunciating(self, action: str) -> None:
        if self.state not in ANNUNCIATING:
            back = {
                AlarmState.SHELVED: "unshelve it first",
                AlarmState.SUPPRESSED_BY_DESIGN: "unsuppress it first",
                AlarmState.OUT_OF_SERVICE: "return it to service first",
            }[self.state]
            raise InvalidTransition(self.id, action, self.state, back)


def _who(user: str) -> str:
    if not user or not user.strip():
        raise BadInput("an operator action needs the user who took it", "user")
    return user.strip()


def _why(comment: str, action: str) -> str:
    if not comment or not comment.strip():
        raise BadInput(f"a comment is required to {action} an alarm", "comment")
    return comment.strip()
