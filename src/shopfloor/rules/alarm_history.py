"""Alarm history: store events as plain rows and query them.

The rows are JSON-safe dicts (orjson can write them as they are), so the lead can put them in
any table or file; :func:`event_from_row` reads them back and rejects a damaged row by name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Final

from shopfloor.core.errors import BadInput
from shopfloor.rules.alarms import AlarmEvent, AlarmState, Cause, Priority

__all__ = ["ROW_FIELDS", "event_from_row", "event_to_row", "query_history"]

Row = dict[str, str | int | float | None]

ROW_FIELDS: Final = (
    "ts",
    "alarm_id",
    "from_state",
    "to_state",
    "cause",
    "user",
    "comment",
    "value",
    "area",
    "priority",
)


def event_to_row(event: AlarmEvent) -> Row:
    return {
        "ts": event.ts,
        "alarm_id": event.alarm_id,
        "from_state": event.from_state.value,
        "to_state": event.to_state.value,
        "cause": event.cause.value,
        "user": event.user,
        "comment": event.comment,
        "value": event.value,
        "area": event.area,
        "priority": int(event.priority),
    }


def event_from_row(row: Mapping[str, object]) -> AlarmEvent:
    missing = [f for f in ROW_FIELDS if f not in row]
    if missing:
        raise BadInput(f"alarm event row lacks {', '.join(missing)}", missing[0])
    ts, value, priority = row["ts"], row["value"], row["priority"]
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise BadInput(f"ts must be int nanoseconds, not {ts!r}", "ts")
    if value is not None and not isinstance(value, int | float):
        raise BadInput(f"value must be a number or null, not {value!r}", "value")
    if not isinstance(priority, int | str):
        raise BadInput(f"priority must be 1-4, not {priority!r}", "priority")
    return AlarmEvent(
        ts=ts,
        alarm_id=_text(row, "alarm_id"),
        from_state=_state(row, "from_state"),
        to_state=_state(row, "to_state"),
        cause=_cause(row),
        user=_opt_text(row, "user"),
        comment=_opt_text(row, "comment"),
        value=None if value is None else float(value),
        area=_text(row, "area"),
        priority=Priority.parse(priority),
    )


def query_history(
    events: Iterable[AlarmEvent],
    *,
    alarm_id: str | None = None,
    area: str | None = None,
    start: int | None = None,
    end: int | None = None,
    causes: Collection[Cause] | None = None,
    user: str | None = None,
    annunciated_only: bool = False,
) -> list[AlarmEvent]:
    """Events matching every given filter, in time order; ``[start, end)`` is half-open."""
    if start is not None and end is not None and end < start:
        raise BadInput(f"end {end} is before start {start}", "end")
    out = [
        e
        for e in events
        if (alarm_id is None or e.alarm_id == alarm_id)
        and (area is None or e.area == area)
        and (start is None or e.ts >= start)
        and (end is None or e.ts < end)
        and (causes is None or e.cause in causes)
        and (user is None or e.user == user)
        and (not annunciated_only or e.annunciated)
    ]
    # Stable sort: events of one alarm at the same ts keep the order they happened in.
    out.sort(key=lambda e: e.ts)
    return out


def _text(row: Mapping[str, object], name: str) -> str:
    v = row[name]
    if not isinstance(v, str) or not v:
        raise BadInput(f"{name} must be a non-empty string, not {v!r}", name)
    return v


def _state(row: Mapping[str, object], name: str) -> AlarmState:
    v = _text(row, name)
    try:
        return AlarmState(v)
    except ValueError:
        known = ", ".join(s.value for s in AlarmState)
        raise BadInput(f"unknown alarm state {v!r}, known: {known}", name) from None


def _cause(row: Mapping[str, object]) -> Cause:
    v = _text(row, "cause")
    try:
        return Cause(v)
    except ValueError:
        known = ", ".join(c.value for c in Cause)
        raise BadInput(f"unknown cause {v!r}, known: {known}", "cause") from None


def _opt_text(row: Mapping[str, object], name: str) -> str | None:
    v = row[name]
    if v is None:
        return None
    if not isinstance(v, str):
        raise BadInput(f"{name} must be a string or null, not {v!r}", name)
    return v
