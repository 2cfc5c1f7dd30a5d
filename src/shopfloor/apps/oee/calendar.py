"""Shift calendars: when a machine is planned to operate, and its planned downtime.

A calendar is defined in the site's local time (an IANA zone such as ``Europe/Berlin``) and
parsed from a plain dict, so it can live in YAML::

    timezone: Europe/Berlin
    shifts:
      - {name: early, start: "06:00", end: "14:00", weekdays: [mon, tue, wed, thu, fri],
         breaks: [{start: "10:00", end: "10:30", name: lunch}]}
      - {name: night, start: "22:00", end: "06:00"}      # end <= start: crosses midnight
    holidays: ["2026-12-25", {date: "2026-12-24", shifts: [night]}]
    planned_downtime:
      - {date: "2026-03-02", start: "06:00", end: "08:00", name: maintenance}

``expand`` turns it into concrete :class:`ShiftInstance` objects over a UTC range. Shift and
break lengths follow the wall clock: an 8 h night shift over the spring-forward night lasts
7 h of real time, over the fall-back night 9 h. A local time that does not exist (inside the
spring-forward gap) is read with the offset in force before the jump, so it lands one hour
later on the wall clock; an ambiguous one (fall back) means its first occurrence.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shopfloor.core.errors import BadInput

__all__ = [
    "Break",
    "DowntimeInterval",
    "ExtraDowntime",
    "Holiday",
    "ShiftCalendar",
    "ShiftDef",
    "ShiftInstance",
    "expand",
    "parse_calendar",
]

_DAY_MIN: Final = 24 * 60
_WEEK_MIN: Final = 7 * _DAY_MIN
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_HHMM: Final = re.compile(r"^(\d{2}):(\d{2})$")
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES: Final = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}


@dataclass(frozen=True)
class Break:
    """Planned downtime inside every instance of a shift (local wall-clock times)."""

    start: time
    end: time
    name: str = "break"


@dataclass(frozen=True)
class ShiftDef:
    """A recurring shift; ``weekdays`` (0 = Monday) are those of the day the shift starts."""

    name: str
    start: time
    end: time
    weekdays: frozenset[int]
    breaks: tuple[Break, ...] = ()

    @property
    def length_min(self) -> int:
        """Wall-clock length in minutes; end <= start crosses midnight (equal: 24 h)."""
        return _minutes_between(self.start, self.end)


@dataclass(frozen=True)
class Holiday:
    """No shift starts on ``day``; ``shifts`` limits that to the named ones (empty: all)."""

    day: date
    shifts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ExtraDowntime:
    """Planned downtime on one date, from ``start`` to ``end`` local (end <= start: next day)."""

    day: date
    start: time
    end: time
    name: str = "planned downtime"
    shifts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ShiftCalendar:
    timezone: str
    shifts: tuple[ShiftDef, ...]
    holidays: tuple[Holiday, ...] = ()
    planned_downtime: tuple[ExtraDowntime, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ShiftCalendar:
        return parse_calendar(raw)


@dataclass(frozen=True)
class DowntimeInterval:
    """One planned-downtime interval of a shift instance, UTC ns, half-open."""

    start_ns: int
    end_ns: int
    name: str


@dataclass(frozen=True)
class ShiftInstance:
    """One concrete shift, clipped to the range it was expanded over.

    ``start_ns``/``end_ns`` bound its planned operation time (POT) inside the range;
    ``planned_start_ns``/``planned_end_ns`` are the whole shift. ``planned_downtime`` holds
    the breaks and dated downtime inside [start_ns, end_ns), sorted, possibly overlapping.
    """

    name: str
    local_date: str
    start_ns: int
    end_ns: int
    planned_start_ns: int
    planned_end_ns: int
    planned_downtime: tuple[DowntimeInterval, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.local_date} {self.name}"

    @property
    def pot_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def partial(self) -> bool:
        """True when the range cut the shift (a live shift, or a range edge)."""
        return (self.start_ns, self.end_ns) != (self.planned_start_ns, self.planned_end_ns)

    def merged_downtime(self) -> list[tuple[int, int]]:
        """The union of the planned-downtime intervals, sorted and disjoint."""
        merged: list[tuple[int, int]] = []
        for iv in sorted(self.planned_downtime, key=lambda d: d.start_ns):
            if merged and iv.start_ns <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], iv.end_ns))
            else:
                merged.append((iv.start_ns, iv.end_ns))
        return merged

    @property
    def planned_downtime_ns(self) -> int:
        return sum(e - s for s, e in self.merged_downtime())


# --------------------------------------------------------------------------- parsing


def parse_calendar(raw: Mapping[str, Any]) -> ShiftCalendar:
    """Build a calendar from a dict; every mistake raises ``BadInput`` naming the field."""
    if not isinstance(raw, Mapping):
        raise BadInput("a shift calendar must be a mapping", "calendar")
    _no_unknown_keys(raw, {"timezone", "shifts", "holidays", "planned_downtime"}, "calendar")
    tz = raw.get("timezone")
    if not isinstance(tz, str) or not tz:
        raise BadInput("give the site's time zone, e.g. 'Europe/Berlin'", "timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin'", "timezone"
        ) from None
    shifts = tuple(_parse_shift(s, f"shifts[{i}]") for i, s in enumerate(_list(raw, "shifts")))
    if not shifts:
        raise BadInput("a calendar needs at least one shift", "shifts")
    names = [s.name for s in shifts]
    for name in names:
        if names.count(name) > 1:
            raise BadInput(f"shift name {name!r} is used twice", "shifts")
    _check_shifts_do_not_overlap(shifts)
    holidays = tuple(
        _parse_holiday(h, f"holidays[{i}]", set(names))
        for i, h in enumerate(_list(raw, "holidays", required=False))
    )
    extra = tuple(
        _parse_extra(d, f"planned_downtime[{i}]", set(names))
        for i, d in enumerate(_list(raw, "planned_downtime", required=False))
    )
    return ShiftCalendar(tz, shifts, holidays, extra)


def _list(raw: Mapping[str, Any], key: str, required: bool = True) -> Sequence[Any]:
    value = raw.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list | tuple):
        raise BadInput(f"{key} must be a list", key)
    return value


def _no_unknown_keys(raw: Mapping[str, Any], allowed: set[str], field: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise BadInput(f"unknown key(s) {unknown}; allowed: {sorted(allowed)}", field)


def _parse_time(value: Any, field: str) -> time:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        raise BadInput(f"{value!r} is not a local time 'HH:MM' (quote it in YAML)", field)
    hh, mm = int(match[1]), int(match[2])
    if hh > 23 or mm > 59:
        raise BadInput(
            f"{value!r} is not a time of day: hours 00-23, minutes 00-59 (midnight is '00:00')",
            field,
        )
    return time(hh, mm)


def _parse_date(value: Any, field: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # YAML loaders turn unquoted 2026-12-25 into a date already
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise BadInput(f"{value!r} is not a date 'YYYY-MM-DD'", field)


def _parse_weekdays(value: Any, field: str) -> frozenset[int]:
    if value is None:
        return frozenset(range(7))
    if not isinstance(value, list | tuple) or not value:
        raise BadInput("weekdays must be a non-empty list such as [mon, tue]", field)
    days: set[int] = set()
    for item in value:
        key = str(item).strip().lower()
        if key in WEEKDAYS:
            days.add(WEEKDAYS.index(key))
        elif key in _FULL_NAMES:
            days.add(_FULL_NAMES[key])
        else:
            raise BadInput(f"{item!r} is not a weekday; use {list(WEEKDAYS)}", field)
    return frozenset(days)


def _names(value: Any, known: set[str], field: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list | tuple):
        raise BadInput("shifts must be a list of shift names", field)
    unknown = sorted(str(v) for v in value if v not in known)
    if unknown:
        raise BadInput(f"unknown shift(s) {unknown}; defined: {sorted(known)}", field)
    return frozenset(str(v) for v in value)


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


def _minutes_between(start: time, end: time) -> int:
    gap = (_minutes(end) - _minutes(start)) % _DAY_MIN
    return gap or _DAY_MIN


def _parse_shift(raw: Any, field: str) -> ShiftDef:
    if not isinstance(raw, Mapping):
        raise BadInput("a shift must be a mapping with name, start and end", field)
    _no_unknown_keys(raw, {"name", "start", "end", "weekdays", "breaks"}, field)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadInput("a shift needs a name", f"{field}.name")
    start = _parse_time(raw.get("start"), f"{field}.start")
    end = _parse_time(raw.get("end"), f"{field}.end")
    weekdays = _parse_weekdays(raw.get("weekdays"), f"{field}.weekdays")
    shift = ShiftDef(name, start, end, weekdays)
    breaks = tuple(
        _parse_break(b, shift, f"{field}.breaks[{i}]")
        for i, b in enumerate(_list(raw, "breaks", required=False))
    )
    # Offsets from the shift start make the overlap test work across midnight.
    spans = sorted((_break_offsets(b, shift), i) for i, b in enumerate(breaks))
    for ((_, prev_end), i), ((start_off, _), j) in itertools.pairwise(spans):
        if start_off < prev_end:
            raise BadInput(f"breaks[{i}] and breaks[{j}] overlap", f"{field}.breaks")
    return ShiftDef(name, start, end, weekdays, breaks)


def _break_offsets(brk: Break, shift: ShiftDef) -> tuple[int, int]:
    begin = (_minutes(brk.start) - _minutes(shift.start)) % _DAY_MIN
    return begin, begin + _minutes_between(brk.start, brk.end)


def _parse_break(raw: Any, shift: ShiftDef, field: str) -> Break:
    if not isinstance(raw, Mapping):
        raise BadInput("a break must be a mapping with start and end", field)
    _no_unknown_keys(raw, {"start", "end", "name"}, field)
    brk = Break(
        _parse_time(raw.get("start"), f"{field}.start"),
        _parse_time(raw.get("end"), f"{field}.end"),
        str(raw.get("name", "break")),
    )
    if brk.start == brk.end:
        raise BadInput("a break must be longer than zero", field)
    _begin, finish = _break_offsets(brk, shift)
    if finish > shift.length_min:
        raise BadInput(
            f"break {brk.start:%H:%M}-{brk.end:%H:%M} does not lie inside shift "
            f"{shift.name!r} ({shift.start:%H:%M}-{shift.end:%H:%M})",
            field,
        )
    return brk


def _check_shifts_do_not_overlap(shifts: Sequence[ShiftDef]) -> None:
    """Two shifts on at the same wall-clock minute of the week would count POT twice."""
    spans: list[tuple[int, int, str]] = []
    for s in shifts:
        for day in s.weekdays:
            begin = day * _DAY_MIN + _minutes(s.start)
            finish = begin + s.length_min
            spans.append((begin, min(finish, _WEEK_MIN), s.name))
            if finish > _WEEK_MIN:  # Sunday night into Monday morning
                spans.append((0, finish - _WEEK_MIN, s.name))
    spans.sort()
    for (_, prev_end, a), (begin, _, b) in itertools.pairwise(spans):
        if begin < prev_end:
            raise BadInput(f"shifts {a!r} and {b!r} overlap", "shifts")


def _parse_holiday(raw: Any, field: str, known: set[str]) -> Holiday:
    if isinstance(raw, Mapping):
        _no_unknown_keys(raw, {"date", "shifts"}, field)
        return Holiday(
            _parse_date(raw.get("date"), f"{field}.date"),
            _names(raw.get("shifts"), known, f"{field}.shifts"),
        )
    return Holiday(_parse_date(raw, field))


def _parse_extra(raw: Any, field: str, known: set[str]) -> ExtraDowntime:
    if not isinstance(raw, Mapping):
        raise BadInput("planned downtime must be a mapping with date, start and end", field)
    _no_unknown_keys(raw, {"date", "start", "end", "name", "shifts"}, field)
    return ExtraDowntime(
        _parse_date(raw.get("date"), f"{field}.date"),
        _parse_time(raw.get("start", "00:00"), f"{field}.start"),
        _parse_time(raw.get("end", "00:00"), f"{field}.end"),
        str(raw.get("name", "planned downtime")),
        _names(raw.get("shifts"), known, f"{field}.shifts"),
    )


# --------------------------------------------------------------------------- expansion


def _ns(day: date, at: time, zone: ZoneInfo) -> int:
    # fold=0: first occurrence of an ambiguous time; a non-existent one keeps the old offset.
    aware = datetime.combine(day, at, tzinfo=zone)
    return (aware.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1) * 1000


def _span_ns(day: date, start: time, end: time, zone: ZoneInfo) -> tuple[int, int]:
    """[start, end) on the wall clock from ``day``; end <= start is on the next day."""
    end_day = day + timedelta(days=1) if _minutes(end) <= _minutes(start) else day
    return _ns(day, start, zone), _ns(end_day, end, zone)


def _local_date(ns: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ns // 1_000_000_000, zone).date()


def expand(calendar: ShiftCalendar, t0_ns: int, t1_ns: int) -> list[ShiftInstance]:
    """Shift instances overlapping [t0_ns, t1_ns), clipped to it, in time order."""
    if t1_ns < t0_ns:
        raise BadInput("the range ends before it starts", "t1")
    zone = calendar.zone
    first = _local_date(t0_ns, zone) - timedelta(days=2)  # a shift started earlier may reach in
    last = _local_date(t1_ns, zone)
    instances: list[ShiftInstance] = []
    day = first
    while day <= last:
        for shift in calendar.shifts:
            if day.weekday() not in shift.weekdays or _is_holiday(calendar, day, shift.name):
                continue
            start, end = _span_ns(day, shift.start, shift.end, zone)
            lo, hi = max(start, t0_ns), min(end, t1_ns)
            if lo >= hi:
                continue
            downtime = _downtime(calendar, shift, day, zone, lo, hi)
            instances.append(
                ShiftInstance(shift.name, day.isoformat(), lo, hi, start, end, downtime)
            )
        day += timedelta(days=1)
    instances.sort(key=lambda s: s.start_ns)
    return instances


def _is_holiday(calendar: ShiftCalendar, day: date, shift: str) -> bool:
    return any(h.day == day and (not h.shifts or shift in h.shifts) for h in calendar.holidays)


def _downtime(
    calendar: ShiftCalendar, shift: ShiftDef, day: date, zone: ZoneInfo, lo: int, hi: int
) -> tuple[DowntimeInterval, ...]:
    spans: list[DowntimeInterval] = []
    for brk in shift.breaks:
        # A break earlier on the clock than the shift start belongs to the next day.
        brk_day = day + timedelta(days=1) if _minutes(brk.start) < _minutes(shift.start) else day
        spans.append(DowntimeInterval(*_span_ns(brk_day, brk.start, brk.end, zone), brk.name))
    for extra in calendar.planned_downtime:
        if not extra.shifts or shift.name in extra.shifts:
            spans.append(
                DowntimeInterval(*_span_ns(extra.day, extra.start, extra.end, zone), extra.name)
            )
    clipped = [
        DowntimeInterval(max(s.start_ns, lo), min(s.end_ns, hi), s.name)
        for s in spans
        if min(s.end_ns, hi) > max(s.start_ns, lo)
    ]
    return tuple(sorted(clipped, key=lambda s: (s.start_ns, s.end_ns)))
