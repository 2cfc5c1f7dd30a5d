"""End to end for one machine: calendar + states + counts + ideal cycle times -> KPIs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pytest

from shopfloor.apps.oee.calendar import ShiftCalendar, parse_calendar
from shopfloor.apps.oee.rollup import current_shift_oee, machine_oee
from shopfloor.apps.oee.states import CounterSeries, ProductSeries, StateSeries
from shopfloor.core.errors import BadInput

MIN = 60 * 10**9
DAY = "2026-03-02"  # a Monday; Berlin is UTC+1


def at(hhmm: str, day: str = DAY, offset: str = "+01:00") -> int:
    return int(datetime.fromisoformat(f"{day}T{hhmm}{offset}").timestamp()) * 10**9


def calendar(**extra: Any) -> ShiftCalendar:
    return parse_calendar(
        {
            "timezone": "Europe/Berlin",
            "shifts": [
                {
                    "name": "early",
                    "start": "06:00",
                    "end": "14:00",
                    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                    "breaks": [{"start": "10:00", "end": "10:30", "name": "lunch"}],
                },
                {
                    "name": "late",
                    "start": "14:00",
                    "end": "22:00",
                    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                },
            ],
            **extra,
        }
    )


def states(*samples: tuple[str, str] | tuple[str, str, str]) -> StateSeries:
    return StateSeries(
        np.array([at(s[0]) for s in samples], dtype=np.int64),
        [s[1] for s in samples],
        [s[2] if len(s) > 2 else None for s in samples],
    )


def counter(*samples: tuple[str, float], cumulative: bool = True, day: str = DAY) -> CounterSeries:
    return CounterSeries(
        np.array([at(t, day) for t, _ in samples], dtype=np.int64),
        np.array([v for _, v in samples], dtype=np.float64),
        cumulative,
    )


# The early shift, minute by minute (480 min, lunch 10:00-10:30):
#   setup 06:00-06:30 (30) | run 06:30-08:00 (90) | down "jam" 08:00-08:20 (20)
#   run 08:20-10:00 (100)  | idle 10:00-10:30 (30, in lunch -> planned downtime)
#   run 10:30-12:00 (90)   | down "motor" 12:00-12:40 (40) | run 12:40-13:45 (65)
#   idle 13:45-14:00 (15)
# APT 345, ASUT 30, ADET 60, ADOT 15, planned downtime 30: 345+30+60+15+30 = 480.
EARLY_STATES = states(
    ("05:00", "idle"),
    ("06:00", "setup"),
    ("06:30", "running"),
    ("08:00", "down", "jam"),
    ("08:20", "running"),
    ("10:00", "idle"),
    ("10:30", "running"),
    ("12:00", "down", "motor"),
    ("12:40", "running"),
    ("13:30", "running"),  # a repeated sample changes nothing
    ("13:45", "idle"),
)
# Produced counter: 1000 before the shift, then +200, +150, +150 = 500 in the shift, +100 after.
PRODUCED = counter(
    ("05:00", 1000), ("09:00", 1200), ("12:00", 1350), ("13:59", 1500), ("14:30", 1600)
)
SCRAP = counter(("05:00", 0), ("12:00", 10), ("13:59", 20))
REWORK = counter(("11:00", 5), ("13:00", 5), cumulative=False)


def test_a_normal_shift_end_to_end() -> None:
    report = machine_oee(
        calendar(),
        at("05:00"),
        at("14:00"),
        EARLY_STATES,
        {"produced": PRODUCED, "scrap": SCRAP, "rework": REWORK},
        {"default": 36.0},
    )
    [early] = report.shifts
    t = early.inputs.times
    assert early.label == "2026-03-02 early"
    assert (t.pot_ns, t.planned_downtime_ns, t.pbt_ns) == (480 * MIN, 30 * MIN, 450 * MIN)
    assert (t.apt_ns, t.asut_ns, t.adet_ns, t.adot_ns, t.unknown_ns) == (
        345 * MIN,
        30 * MIN,
        60 * MIN,
        15 * MIN,
        0,
    )
    q = early.inputs.quantities
    # good = produced - scrap = 480 (no good counter); ideal time 500 x 36 s = 300 min.
    assert (q.produced, q.good, q.scrap, q.rework, q.ideal_time_s) == (500, 480, 20, 10, 300 * 60)
    k = early.kpis
    assert k.availability == pytest.approx(345 / 450)
    assert k.effectiveness == pytest.approx(300 / 345)
    assert k.quality_ratio == pytest.approx(0.96)
    assert k.oee == pytest.approx(300 / 450 * 0.96)  # 0.64
    assert k.first_pass_yield == pytest.approx(470 / 500)
    assert early.inputs.failures == 2
    assert k.mtbf_s == pytest.approx(345 * 60 / 2)
    assert k.mttr_s == pytest.approx(60 * 60 / 2)
    assert early.reasons == {
        ("setup", None): 30 * MIN,
        ("down", "jam"): 20 * MIN,
        ("down", "motor"): 40 * MIN,
        ("idle", None): 15 * MIN,
    }
    # The range ends at 14:00: no late shift in it; the total equals the one shift.
    assert report.total.inputs == early.inputs
    assert next(iter(report.total.reasons)) == ("down", "motor")


def test_a_state_change_at_the_shift_boundary_belongs_to_the_next_shift() -> None:
    # Running all day; down exactly at 14:00 for 10 minutes, counts +50 at 14:00 exactly.
    s = states(("05:00", "running"), ("14:00", "down"), ("14:10", "running"))
    produced = counter(("05:00", 0), ("13:00", 400), ("14:00", 450))
    report = machine_oee(
        calendar(), at("06:00"), at("22:00"), s, {"produced": produced}, {"default": 30.0}
    )
    early, late = report.shifts
    assert (early.inputs.failures, early.inputs.times.adet_ns) == (0, 0)
    # Early: running 06:00-14:00 through lunch -> APT 480, no planned downtime left.
    assert early.inputs.times.apt_ns == 480 * MIN
    assert early.inputs.quantities.produced == 400
    assert (late.inputs.failures, late.inputs.times.adet_ns, late.inputs.times.apt_ns) == (
        1,
        10 * MIN,
        470 * MIN,
    )
    assert late.inputs.quantities.produced == 50
    assert report.total.inputs.failures == 1
    assert report.total.inputs.times.pot_ns == 960 * MIN


def test_a_night_shift_across_midnight() -> None:
    cal = parse_calendar(
        {
            "timezone": "Europe/Berlin",
            "shifts": [
                {
                    "name": "night",
                    "start": "22:00",
                    "end": "06:00",
                    "breaks": [{"start": "02:00", "end": "02:30"}],
                }
            ],
        }
    )
    nxt = "2026-03-03"
    s = StateSeries(
        np.array([at("21:00"), at("01:00", nxt), at("01:10", nxt)], dtype=np.int64),
        ["running", "down", "running"],
    )
    produced = CounterSeries(
        np.array([at("21:00"), at("23:59"), at("05:59", nxt)], dtype=np.int64),
        np.array([0.0, 100.0, 300.0]),
    )
    report = machine_oee(
        cal, at("21:00"), at("12:00", nxt), s, {"produced": produced}, {"default": 60.0}
    )
    [night] = report.shifts
    t = night.inputs.times
    # 480 min POT; the break 02:00-02:30 is run through (running) -> it is APT, not downtime.
    # Down 01:00-01:10 -> ADET 10, APT 470.
    assert night.label == "2026-03-02 night"
    assert (t.pot_ns, t.planned_downtime_ns, t.apt_ns, t.adet_ns) == (
        480 * MIN,
        0,
        470 * MIN,
        10 * MIN,
    )
    assert night.inputs.quantities.produced == 300
    assert night.kpis.effectiveness == pytest.approx(300 / 470)


def test_spring_forward_night_shift_has_seven_hours_of_pot() -> None:
    cal = parse_calendar(
        {
            "timezone": "Europe/Berlin",
            "shifts": [{"name": "night", "start": "22:00", "end": "06:00"}],
        }
    )
    # Saturday 2026-03-28 22:00 CET to Sunday 06:00 CEST: 21:00-04:00 UTC.
    t0 = at("21:00", "2026-03-28", "+00:00")
    s = StateSeries(np.array([t0], dtype=np.int64), ["running"])
    produced = CounterSeries(
        np.array([t0, at("03:00", "2026-03-29", "+00:00")], dtype=np.int64), np.array([0.0, 420.0])
    )
    report = machine_oee(cal, t0, t0 + 24 * 60 * MIN, s, {"produced": produced}, {"default": 60.0})
    night = next(r for r in report.shifts if r.label == "2026-03-28 night")
    assert night.inputs.times.pot_ns == 420 * MIN
    assert night.inputs.times.apt_ns == 420 * MIN
    # 420 parts x 60 s = 420 min in 420 min of production.
    assert night.kpis.effectiveness == pytest.approx(1.0)


def test_a_holiday_has_no_shift_and_pbt_zero() -> None:
    report = machine_oee(
        calendar(holidays=[DAY]),
        at("00:00"),
        at("23:59"),
        EARLY_STATES,
        {"produced": PRODUCED},
        {"default": 36.0},
    )
    assert report.shifts == ()
    assert report.total.inputs.times.pbt_ns == 0
    assert report.total.kpis.availability == 1.0
    assert report.total.kpis.oee is None
    # Parts counted on a holiday have no planned time to relate to: left out.
    assert report.total.inputs.quantities.produced == 0


def test_a_shift_entirely_planned_down_has_pbt_zero() -> None:
    cal = calendar(
        planned_downtime=[{"date": DAY, "start": "06:00", "end": "14:00", "shifts": ["early"]}]
    )
    s = states(("05:00", "idle"))
    report = machine_oee(
        cal, at("06:00"), at("14:00"), s, {"produced": PRODUCED}, {"default": 36.0}
    )
    [early] = report.shifts
    assert early.inputs.times.pot_ns == 480 * MIN
    assert early.inputs.times.pbt_ns == 0
    assert early.kpis.availability == 1.0


def test_a_counter_reset_during_the_shift() -> None:
    # 900 before; 1000 at 07:00 (+100); reset, 30 at 08:00 (+30); 80 at 09:00 (+50): 180.
    produced = counter(("05:00", 900), ("07:00", 1000), ("08:00", 30), ("09:00", 80))
    s = states(("05:00", "running"))
    report = machine_oee(
        calendar(), at("06:00"), at("14:00"), s, {"produced": produced}, {"default": 60.0}
    )
    assert report.shifts[0].inputs.quantities.produced == 180


def test_several_products_with_their_own_cycle_times() -> None:
    # Product A from 06:00 (60 s/part), B from 10:30 (120 s/part).
    products = ProductSeries(np.array([at("06:00"), at("10:30")], dtype=np.int64), ["A", "B"])
    good = counter(("05:00", 0), ("09:00", 100), ("12:00", 150))  # +100 during A, +50 during B
    scrap = counter(("05:00", 0), ("12:00", 5))  # all 5 during B
    s = states(("05:00", "running"))
    report = machine_oee(
        calendar(),
        at("06:00"),
        at("14:00"),
        s,
        {"good": good, "scrap": scrap},
        {"A": 60.0, "B": 120.0},
        products=products,
    )
    [early] = report.shifts
    # produced = good + scrap: A 100, B 55. Ideal: 100 x 60 + 55 x 120 = 6000 + 6600 s = 210 min.
    assert early.products["A"].produced == 100
    assert (early.products["B"].produced, early.products["B"].scrap) == (55, 5)
    assert early.inputs.quantities.ideal_time_s == pytest.approx(12_600)
    # Running all shift, lunch included: APT 480.
    assert early.kpis.effectiveness == pytest.approx(210 / 480)
    assert report.total.products["B"].good == 50


def test_a_product_without_an_ideal_cycle_time_is_an_error() -> None:
    products = ProductSeries(np.array([at("06:00")], dtype=np.int64), ["X"])
    with pytest.raises(BadInput, match="no ideal cycle time for product 'X'"):
        machine_oee(
            calendar(),
            at("06:00"),
            at("14:00"),
            states(("05:00", "running")),
            {"produced": PRODUCED},
            {},
            products=products,
        )


def test_counts_need_produced_or_good() -> None:
    with pytest.raises(BadInput, match="'produced' or a 'good'"):
        machine_oee(
            calendar(), at("06:00"), at("14:00"), EARLY_STATES, {"scrap": SCRAP}, {"default": 1.0}
        )
    with pytest.raises(BadInput, match="unknown count kind"):
        machine_oee(
            calendar(), at("06:00"), at("14:00"), EARLY_STATES, {"made": PRODUCED}, {"default": 1.0}
        )


def test_live_for_the_current_shift_counts_pot_up_to_now() -> None:
    # now = 09:00: 3 h into the early shift, lunch not reached yet.
    # States: setup 06:00-06:30, running 06:30-08:00, down 08:00-08:20, running 08:20-09:00.
    # APT 90 + 40 = 130, ASUT 30, ADET 20: 180 = POT.
    now = at("09:00")
    record = current_shift_oee(
        calendar(), now, EARLY_STATES, {"produced": PRODUCED}, {"default": 36.0}
    )
    assert record is not None
    assert record.shift is not None
    assert record.shift.partial
    assert (record.start_ns, record.end_ns) == (at("06:00"), now)
    t = record.inputs.times
    assert (t.pot_ns, t.planned_downtime_ns, t.apt_ns, t.asut_ns, t.adet_ns) == (
        180 * MIN,
        0,
        130 * MIN,
        30 * MIN,
        20 * MIN,
    )
    assert record.kpis.availability == pytest.approx(130 / 180)
    # The +200 at 09:00 is dated at now, which is outside [06:00, 09:00): not yet counted.
    assert record.inputs.quantities.produced == 0


def test_live_between_shifts_and_at_a_shift_start() -> None:
    cal = calendar()
    assert (
        current_shift_oee(cal, at("23:00"), EARLY_STATES, {"produced": PRODUCED}, {"default": 1.0})
        is None
    )
    record = current_shift_oee(
        cal, at("06:00"), EARLY_STATES, {"produced": PRODUCED}, {"default": 1.0}
    )
    assert record is not None
    assert record.label == "2026-03-02 early"
    assert record.inputs.times.pot_ns == 0
