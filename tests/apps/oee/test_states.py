"""State series -> intervals -> time elements per window; counter increments."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.apps.oee.states import (
    CATEGORIES,
    CounterSeries,
    ProductSeries,
    StateIntervals,
    StateSeries,
    build_intervals,
    counter_increments,
    product_at,
    window_totals,
)
from shopfloor.core.errors import BadInput

M = 60 * 10**9  # one minute in ns; the tests count in minutes from 0


def series(*samples: tuple[int, str] | tuple[int, str, str | None]) -> StateSeries:
    ts = np.array([s[0] * M for s in samples], dtype=np.int64)
    return StateSeries(ts, [s[1] for s in samples], [s[2] if len(s) > 2 else None for s in samples])


def spans(iv: StateIntervals) -> list[tuple[int, int, str]]:
    return [
        (int(s) // M, int(e) // M, CATEGORIES[c])
        for s, e, c in zip(iv.start_ns, iv.end_ns, iv.category, strict=True)
    ]


def test_the_sample_before_t0_sets_the_state_at_t0() -> None:
    # Samples at -30 (running) and -10 (down): down holds at t0 = 0; the -30 one is ignored.
    iv = build_intervals(series((-30, "running"), (-10, "down"), (20, "running")), 0, 60 * M)
    assert spans(iv) == [(0, 20, "down"), (20, 60, "running")]


def test_no_sample_before_t0_means_unknown() -> None:
    iv = build_intervals(series((15, "idle")), 0, 60 * M)
    assert spans(iv) == [(0, 15, "unknown"), (15, 60, "idle")]
    assert spans(build_intervals(series(), 0, 10 * M)) == [(0, 10, "unknown")]


def test_samples_after_t1_are_ignored_and_a_sample_at_t0_counts() -> None:
    iv = build_intervals(
        series((0, "setup"), (30, "running"), (60, "down"), (90, "idle")), 0, 60 * M
    )
    assert spans(iv) == [(0, 30, "setup"), (30, 60, "running")]


def test_duplicate_timestamps_the_later_sample_wins() -> None:
    iv = build_intervals(series((0, "idle"), (10, "down"), (10, "running")), 0, 20 * M)
    assert spans(iv) == [(0, 10, "idle"), (10, 20, "running")]
    # The superseded down sample is no failure either.
    assert len(iv.failure_ts_ns) == 0
    # idle -> (running, down at the same time) -> a failure at 10.
    iv = build_intervals(series((0, "idle"), (10, "running"), (10, "down")), 0, 20 * M)
    assert (iv.failure_ts_ns // M).tolist() == [10]


def test_state_map_translates_machine_codes() -> None:
    s = StateSeries(np.array([0, 5 * M], dtype=np.int64), np.array([3, 1]))
    iv = build_intervals(s, 0, 10 * M, state_map={1: "running", 3: "setup"})
    assert spans(iv) == [(0, 5, "setup"), (5, 10, "running")]


def test_unmapped_codes_and_bad_maps_are_rejected() -> None:
    s = StateSeries(np.array([0], dtype=np.int64), np.array([7]))
    with pytest.raises(BadInput, match="state code 7 has no category"):
        build_intervals(s, 0, M, state_map={1: "running"})
    with pytest.raises(BadInput, match="not one of"):
        build_intervals(s, 0, M, state_map={7: "broken"})


def test_unsorted_or_mismatched_series_are_rejected() -> None:
    with pytest.raises(BadInput, match="time order"):
        build_intervals(series((10, "idle"), (5, "running")), 0, 20 * M)
    with pytest.raises(BadInput, match="differ in length"):
        build_intervals(StateSeries(np.array([0, 1], dtype=np.int64), ["idle"]), 0, M)
    with pytest.raises(BadInput, match="differ in length"):
        build_intervals(StateSeries(np.array([0], dtype=np.int64), ["idle"], [None, "x"]), 0, M)


def test_failure_events_are_transitions_into_down() -> None:
    # running -> down (1) -> down with another reason (no new failure) -> running -> down (2).
    # The first sample is down but has no known predecessor: not a failure.
    s = series(
        (-5, "down"),
        (0, "running"),
        (10, "down", "jam"),
        (15, "down", "motor"),
        (20, "running"),
        (40, "down"),
    )
    iv = build_intervals(s, 0, 60 * M)
    assert (iv.failure_ts_ns // M).tolist() == [10, 40]


def test_window_totals_partition_the_window() -> None:
    # Window 0..120 with a break 60..90.
    # setup 0-10, running 10-50, down 50-55 (jam), idle 55-70, running 70-80, idle 80-120.
    s = series(
        (0, "setup"),
        (10, "running"),
        (50, "down", "jam"),
        (55, "idle"),
        (70, "running"),
        (80, "idle"),
    )
    iv = build_intervals(s, 0, 120 * M)
    t = window_totals(iv, 0, 120 * M, [(60 * M, 90 * M)])
    # Running 70-80 lies in the break and still counts as APT (working through the break).
    assert t.apt_ns == (40 + 10) * M
    assert t.asut_ns == 10 * M
    assert t.adet_ns == 5 * M
    # Idle 55-70 minus 60-70 in the break = 5; idle 80-120 minus 80-90 in the break = 30.
    assert t.adot_ns == (5 + 30) * M
    # Planned downtime = the break minus the 10 minutes run through it.
    assert t.planned_downtime_ns == 20 * M
    assert (
        t.apt_ns + t.asut_ns + t.adet_ns + t.adot_ns + t.unknown_ns + t.planned_downtime_ns
        == 120 * M
    )
    assert t.failures == 1
    assert (t.tbf_ns, t.ttr_ns) == (50 * M, 5 * M)
    assert t.reasons == {("setup", None): 10 * M, ("down", "jam"): 5 * M, ("idle", None): 35 * M}


def test_planned_stop_reported_by_the_machine_is_planned_downtime() -> None:
    s = series((0, "running"), (20, "planned_stop", "cleaning"), (50, "running"))
    t = window_totals(build_intervals(s, 0, 60 * M), 0, 60 * M)
    assert t.planned_downtime_ns == 30 * M
    assert t.apt_ns == 30 * M
    assert t.reasons == {("planned_stop", "cleaning"): 30 * M}


def test_a_change_exactly_at_a_window_boundary_belongs_to_the_next_window() -> None:
    s = series((0, "running"), (60, "down"), (70, "running"))
    iv = build_intervals(s, 0, 120 * M)
    first, second = window_totals(iv, 0, 60 * M), window_totals(iv, 60 * M, 120 * M)
    assert (first.apt_ns, first.adet_ns, first.failures) == (60 * M, 0, 0)
    assert (second.apt_ns, second.adet_ns, second.failures) == (50 * M, 10 * M, 1)


def test_repair_time_includes_a_break_but_adet_does_not() -> None:
    # down 10-40 with a break 20-30: ADET 20, TTR 30 (the repair goes on over lunch).
    s = series((0, "running"), (10, "down"), (40, "running"))
    t = window_totals(build_intervals(s, 0, 60 * M), 0, 60 * M, [(20 * M, 30 * M)])
    assert (t.adet_ns, t.ttr_ns, t.planned_downtime_ns) == (20 * M, 30 * M, 10 * M)


def test_cumulative_counter_with_reset() -> None:
    # 100 -> 130 (+30) -> 5 (reset: +5) -> 25 (+20)
    ts = np.array([0, 1, 2, 3], dtype=np.int64) * M
    t, inc = counter_increments(CounterSeries(ts, np.array([100.0, 130.0, 5.0, 25.0])))
    assert (t // M).tolist() == [1, 2, 3]
    assert inc.tolist() == [30.0, 5.0, 20.0]


def test_per_event_counts_are_increments_as_they_are() -> None:
    ts = np.array([0, 1], dtype=np.int64) * M
    t, inc = counter_increments(CounterSeries(ts, np.array([2.0, 3.0]), cumulative=False))
    assert inc.tolist() == [2.0, 3.0]
    assert t.tolist() == ts.tolist()


def test_bad_counts_are_rejected() -> None:
    ts = np.array([0, 1], dtype=np.int64)
    with pytest.raises(BadInput, match="negative"):
        counter_increments(CounterSeries(ts, np.array([1.0, -1.0])))
    with pytest.raises(BadInput, match="finite"):
        counter_increments(CounterSeries(ts, np.array([1.0, np.nan])))
    with pytest.raises(BadInput, match="time order"):
        counter_increments(CounterSeries(ts[::-1].copy(), np.array([1.0, 2.0])))


def test_product_at_each_timestamp() -> None:
    products = ProductSeries(np.array([10, 20], dtype=np.int64), ["A", "B"])
    names, idx = product_at(products, np.array([5, 10, 15, 25], dtype=np.int64), "none")
    assert [names[i] for i in idx] == ["none", "A", "A", "B"]
    names, idx = product_at(None, np.array([5], dtype=np.int64), "only")
    assert [names[i] for i in idx] == ["only"]
