"""Shift calendars: parsing, expansion into UTC instances, midnight, DST, holidays, errors."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from shopfloor.apps.oee.calendar import ShiftCalendar, expand, parse_calendar
from shopfloor.core.errors import BadInput

MIN = 60 * 10**9
HOUR = 60 * MIN


def at(text: str) -> int:
    """ISO time with offset -> ns since the epoch."""
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


def berlin(shifts: list[dict[str, Any]], **extra: Any) -> ShiftCalendar:
    return parse_calendar({"timezone": "Europe/Berlin", "shifts": shifts, **extra})


EARLY = {
    "name": "early",
    "start": "06:00",
    "end": "14:00",
    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
    "breaks": [{"start": "10:00", "end": "10:30", "name": "lunch"}],
}
NIGHT = {
    "name": "night",
    "start": "22:00",
    "end": "06:00",
    "breaks": [{"start": "04:00", "end": "04:30"}],
}


def test_a_weekday_shift_in_winter_time() -> None:
    # Monday 2026-03-02, Berlin is UTC+1: 06:00-14:00 local = 05:00-13:00 UTC.
    cal = berlin([EARLY])
    [shift] = expand(cal, at("2026-03-02T00:00+00:00"), at("2026-03-03T00:00+00:00"))
    assert shift.name == "early"
    assert shift.local_date == "2026-03-02"
    assert shift.label == "2026-03-02 early"
    assert shift.start_ns == at("2026-03-02T05:00+00:00")
    assert shift.end_ns == at("2026-03-02T13:00+00:00")
    assert shift.pot_ns == 8 * HOUR
    assert not shift.partial
    [lunch] = shift.planned_downtime
    assert (lunch.start_ns, lunch.end_ns, lunch.name) == (
        at("2026-03-02T09:00+00:00"),
        at("2026-03-02T09:30+00:00"),
        "lunch",
    )
    assert shift.planned_downtime_ns == 30 * MIN


def test_weekdays_are_respected() -> None:
    # 2026-03-07 is a Saturday and 2026-03-08 a Sunday: the Mon-Fri shift does not run.
    cal = berlin([EARLY])
    assert expand(cal, at("2026-03-07T00:00+01:00"), at("2026-03-09T00:00+01:00")) == []
    # One week Mon..Sun: five shifts.
    week = expand(cal, at("2026-03-02T00:00+01:00"), at("2026-03-09T00:00+01:00"))
    assert [s.local_date for s in week] == [f"2026-03-0{d}" for d in range(2, 7)]


def test_a_shift_crossing_midnight_belongs_to_its_start_date() -> None:
    # Monday 22:00 CET (21:00 UTC) to Tuesday 06:00 CET (05:00 UTC); the 04:00 break is Tuesday.
    cal = berlin([NIGHT])
    shifts = expand(cal, at("2026-03-02T12:00+01:00"), at("2026-03-03T12:00+01:00"))
    [night] = shifts
    assert night.local_date == "2026-03-02"
    assert night.start_ns == at("2026-03-02T21:00+00:00")
    assert night.end_ns == at("2026-03-03T05:00+00:00")
    assert [(d.start_ns, d.end_ns) for d in night.planned_downtime] == [
        (at("2026-03-03T03:00+00:00"), at("2026-03-03T03:30+00:00"))
    ]


def test_a_break_may_cross_midnight_too() -> None:
    cal = berlin([{**NIGHT, "breaks": [{"start": "23:45", "end": "00:15"}]}])
    [night] = expand(cal, at("2026-03-02T12:00+01:00"), at("2026-03-03T12:00+01:00"))
    assert night.planned_downtime_ns == 30 * MIN
    assert night.planned_downtime[0].start_ns == at("2026-03-02T23:45+01:00")


def test_spring_forward_night_shift_is_seven_hours() -> None:
    # Berlin jumps 02:00 CET -> 03:00 CEST on Sunday 2026-03-29.
    # Saturday 22:00 CET = 21:00 UTC; Sunday 06:00 CEST = 04:00 UTC: 7 h of real time.
    cal = berlin([NIGHT])
    [night] = expand(cal, at("2026-03-28T12:00+01:00"), at("2026-03-29T12:00+02:00"))
    assert night.start_ns == at("2026-03-28T21:00+00:00")
    assert night.end_ns == at("2026-03-29T04:00+00:00")
    assert night.pot_ns == 7 * HOUR
    # The 04:00-04:30 break is CEST: 02:00-02:30 UTC, still 30 minutes.
    assert night.planned_downtime[0].start_ns == at("2026-03-29T02:00+00:00")
    assert night.planned_downtime_ns == 30 * MIN


def test_fall_back_night_shift_is_nine_hours() -> None:
    # Berlin goes 03:00 CEST -> 02:00 CET on Sunday 2026-10-25.
    # Saturday 22:00 CEST = 20:00 UTC; Sunday 06:00 CET = 05:00 UTC: 9 h.
    cal = berlin([NIGHT])
    [night] = expand(cal, at("2026-10-24T12:00+02:00"), at("2026-10-25T12:00+01:00"))
    assert night.pot_ns == 9 * HOUR


def test_a_day_shift_on_a_dst_day_keeps_its_wall_clock_length() -> None:
    # 06:00-14:00 on the spring-forward Sunday lies after the jump: 8 h.
    cal = berlin([{**EARLY, "weekdays": ["sun"]}])
    [shift] = expand(cal, at("2026-03-29T00:00+01:00"), at("2026-03-30T00:00+02:00"))
    assert shift.start_ns == at("2026-03-29T04:00+00:00")
    assert shift.pot_ns == 8 * HOUR


def test_holidays_remove_shifts_starting_that_day() -> None:
    cal = berlin(
        [EARLY, NIGHT], holidays=["2026-03-02", {"date": "2026-03-03", "shifts": ["night"]}]
    )
    shifts = expand(cal, at("2026-03-02T00:00+01:00"), at("2026-03-04T00:00+01:00"))
    # Monday: nothing. Tuesday: early only. (The night starting Sunday 03-01 ends 03-02 06:00.)
    assert [s.label for s in shifts] == ["2026-03-01 night", "2026-03-03 early"]


def test_yaml_dates_are_accepted() -> None:
    # PyYAML turns unquoted 2026-03-02 into a datetime.date.
    cal = berlin([EARLY], holidays=[date(2026, 3, 2)])
    assert expand(cal, at("2026-03-02T00:00+01:00"), at("2026-03-03T00:00+01:00")) == []


def test_extra_planned_downtime_is_clipped_to_the_shift() -> None:
    # Maintenance 05:00-07:00 local on Monday overlaps the early shift's first hour.
    cal = berlin(
        [EARLY],
        planned_downtime=[{"date": "2026-03-02", "start": "05:00", "end": "07:00", "name": "pm"}],
    )
    [shift] = expand(cal, at("2026-03-02T00:00+01:00"), at("2026-03-03T00:00+01:00"))
    pm = shift.planned_downtime[0]
    assert (pm.start_ns, pm.end_ns, pm.name) == (
        at("2026-03-02T06:00+01:00"),
        at("2026-03-02T07:00+01:00"),
        "pm",
    )
    assert shift.planned_downtime_ns == 90 * MIN  # 60 maintenance + 30 lunch


def test_overlapping_planned_downtime_is_counted_once() -> None:
    cal = berlin(
        [EARLY],
        planned_downtime=[{"date": "2026-03-02", "start": "10:15", "end": "11:00"}],
    )
    [shift] = expand(cal, at("2026-03-02T00:00+01:00"), at("2026-03-03T00:00+01:00"))
    # Lunch 10:00-10:30 and downtime 10:15-11:00: union 10:00-11:00.
    assert shift.planned_downtime_ns == 60 * MIN


def test_the_range_clips_a_shift() -> None:
    cal = berlin([EARLY])
    [shift] = expand(cal, at("2026-03-02T09:00+01:00"), at("2026-03-02T10:15+01:00"))
    assert shift.partial
    assert shift.pot_ns == 75 * MIN
    assert shift.planned_start_ns == at("2026-03-02T06:00+01:00")
    assert shift.planned_downtime_ns == 15 * MIN  # the first 15 minutes of lunch
    assert expand(cal, at("2026-03-02T14:00+01:00"), at("2026-03-02T14:00+01:00")) == []


def test_from_dict_matches_parse() -> None:
    raw = {
        "timezone": "Asia/Shanghai",
        "shifts": [{"name": "day", "start": "08:00", "end": "20:00"}],
    }
    assert ShiftCalendar.from_dict(raw) == parse_calendar(raw)


def test_a_24_hour_shift() -> None:
    cal = parse_calendar(
        {"timezone": "UTC", "shifts": [{"name": "all", "start": "00:00", "end": "00:00"}]}
    )
    shifts = expand(cal, at("2026-03-02T00:00+00:00"), at("2026-03-04T00:00+00:00"))
    assert [s.pot_ns for s in shifts] == [24 * HOUR, 24 * HOUR]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"end": "25:00"}, "shifts[0].end", "hours 00-23"),
        ({"end": "24:00"}, "shifts[0].end", "midnight is '00:00'"),
        ({"start": "6:00"}, "shifts[0].start", "HH:MM"),
        ({"start": 600}, "shifts[0].start", "HH:MM"),
        ({"weekdays": ["mon", "funday"]}, "shifts[0].weekdays", "not a weekday"),
        ({"name": ""}, "shifts[0].name", "needs a name"),
        ({"shift_end": "14:00"}, "shifts[0]", "unknown key"),
        (
            {"breaks": [{"start": "09:00", "end": "10:00"}, {"start": "09:30", "end": "10:30"}]},
            "shifts[0].breaks",
            "overlap",
        ),
        ({"breaks": [{"start": "13:30", "end": "14:30"}]}, "shifts[0].breaks[0]", "inside shift"),
        ({"breaks": [{"start": "05:00", "end": "05:30"}]}, "shifts[0].breaks[0]", "inside shift"),
        (
            {"breaks": [{"start": "09:00", "end": "09:00"}]},
            "shifts[0].breaks[0]",
            "longer than zero",
        ),
    ],
)
def test_bad_shift_definitions(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(BadInput) as err:
        berlin([{**EARLY, **change}])
    assert err.value.field == field
    assert words in err.value.message


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"timezone": "Europe/Berlyn", "shifts": [EARLY]}, "timezone", "unknown time zone"),
        ({"timezone": "../etc/passwd", "shifts": [EARLY]}, "timezone", "unknown time zone"),
        ({"shifts": [EARLY]}, "timezone", "time zone"),
        ({"timezone": "UTC", "shifts": []}, "shifts", "at least one shift"),
        ({"timezone": "UTC", "shifts": "early"}, "shifts", "must be a list"),
        ({"timezone": "UTC", "shifts": [EARLY, EARLY]}, "shifts", "used twice"),
        ({"timezone": "UTC", "shifts": [EARLY], "holiday": []}, "calendar", "unknown key"),
        (
            {"timezone": "UTC", "shifts": [EARLY], "holidays": ["2026-02-30"]},
            "holidays[0]",
            "YYYY-MM-DD",
        ),
        (
            {
                "timezone": "UTC",
                "shifts": [EARLY],
                "holidays": [{"date": "2026-03-02", "shifts": ["late"]}],
            },
            "holidays[0].shifts",
            "unknown shift",
        ),
        (
            {
                "timezone": "UTC",
                "shifts": [EARLY],
                "planned_downtime": [{"date": "2026-03-02", "start": "7"}],
            },
            "planned_downtime[0].start",
            "HH:MM",
        ),
    ],
)
def test_bad_calendars(raw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_calendar(raw)
    assert err.value.field == field
    assert words in err.value.message


def test_overlapping_shifts_are_rejected() -> None:
    late = {"name": "late", "start": "13:00", "end": "22:00"}
    with pytest.raises(BadInput, match="'early' and 'late' overlap"):
        berlin([EARLY, late])


def test_sunday_night_into_monday_morning_overlap_is_found() -> None:
    # A Sunday night shift until 07:00 overlaps Monday's 06:00 early shift across the week wrap.
    sunday_night = {"name": "night", "start": "22:00", "end": "07:00", "weekdays": ["sun"]}
    with pytest.raises(BadInput, match="overlap"):
        berlin([EARLY, sunday_night])
    # Until 06:00 it only touches: fine.
    berlin([EARLY, {**sunday_night, "end": "06:00"}])


def test_a_range_ending_before_it_starts() -> None:
    with pytest.raises(BadInput):
        expand(berlin([EARLY]), 10, 5)
