"""The rule engine: every rule kind against hand-computed events, across batch boundaries."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from shopfloor.core.errors import BadInput
from shopfloor.core.kinds import DataType
from shopfloor.core.quality import BAD
from shopfloor.core.types import make_batch
from shopfloor.rules.engine import RuleEngine, validate_rule
from shopfloor.rules.evaluators import ExpressionEval, LimitGroup
from shopfloor.rules.model import (
    Device,
    Event,
    ExpressionRule,
    RateRule,
    Rule,
    StaleRule,
    StateRule,
    ThresholdRule,
    WindowRule,
)

S = 1_000_000_000
ROOT = Path(__file__).resolve().parents[2]
DEVICES = [
    Device("m1", "press", {"temp": 1, "speed": 2, "fault": 3}, {"fault": DataType.BOOL}),
    Device("m2", "press", {"temp": 11, "speed": 12, "fault": 13}, {"fault": DataType.BOOL}),
    Device("o1", "oven", {"heat": 21}),
]


def feed(
    e: RuleEngine, points: Sequence[tuple[int, float, float]], now: int | None = None
) -> list[tuple[str, str, str, float, float]]:
    """Points as (signal, seconds, value); events as (rule, device, kind, seconds, value)."""
    sid = [p[0] for p in points]
    ts = [round(p[1] * S) for p in points]
    val = [p[2] for p in points]
    return short(e.process_arrays(sid, ts, val, now=now))


def short(events: list[Event]) -> list[tuple[str, str, str, float, float]]:
    return [(x.rule_id, x.device, x.kind, x.ts / S, round(x.value, 6)) for x in events]


def engine(*rules: Rule) -> RuleEngine:
    return RuleEngine(DEVICES, list(rules))


def test_threshold_high_with_deadband() -> None:
    e = engine(ThresholdRule(id="hot", device="m1", signal="temp", limit=80, deadband=2))
    pts = [(1, 1, 79), (1, 2, 81), (1, 3, 79), (1, 4, 78.5), (1, 5, 78), (1, 6, 81)]
    assert feed(e, pts) == [
        ("hot", "m1", "activated", 2, 81),
        ("hot", "m1", "cleared", 5, 78),  # at or below limit - deadband
        ("hot", "m1", "activated", 6, 81),
    ]


def test_threshold_low_with_deadband_and_nan_holds() -> None:
    e = engine(
        ThresholdRule(id="cold", device="m1", signal="temp", limit=10, deadband=1, direction="low")
    )
    pts = [(1, 1, 11), (1, 2, 9), (1, 3, 10.5), (1, 4, float("nan")), (1, 5, 11)]
    assert feed(e, pts) == [("cold", "m1", "activated", 2, 9), ("cold", "m1", "cleared", 5, 11)]


def test_threshold_equal_to_limit_does_not_activate() -> None:
    e = engine(ThresholdRule(id="hot", device="m1", signal="temp", limit=80))
    assert feed(e, [(1, 1, 80), (1, 2, 80.5), (1, 3, 80)]) == [
        ("hot", "m1", "activated", 2, 80.5),
        ("hot", "m1", "cleared", 3, 80),
    ]


def test_on_off_delays_across_batches() -> None:
    e = engine(
        ThresholdRule(id="hot", device="m1", signal="temp", limit=80, on_delay=5, off_delay=3)
    )
    assert feed(e, [(1, 0, 85), (1, 3, 85)]) == []  # held 3 s < 5 s
    assert feed(e, [(1, 6, 85), (1, 7, 70)]) == [("hot", "m1", "activated", 6, 85)]
    # false 7..9 (2 s < 3 s), true again at 10: no clear; false from 11, held 3 s at 14
    assert feed(e, [(1, 9, 70), (1, 10, 85)]) == []
    assert feed(e, [(1, 11, 70), (1, 13, 70)]) == []
    assert feed(e, [(1, 14, 70)]) == [("hot", "m1", "cleared", 14, 70)]


def test_device_type_rule_applies_to_each_device_alone() -> None:
    e = engine(ThresholdRule(id="hot", device_type="press", signal="temp", limit=80))
    pts = [(1, 1, 90), (11, 1, 70), (11, 2, 95), (1, 3, 60), (21, 3, 500)]
    assert feed(e, pts) == [
        ("hot", "m1", "activated", 1, 90),
        ("hot", "m2", "activated", 2, 95),
        ("hot", "m1", "cleared", 3, 60),
    ]
    assert e.status()["hot"].devices == 2


def test_rate_of_change_across_batches() -> None:
    e = engine(RateRule(id="jump", device="m1", signal="temp", limit=2))
    assert feed(e, [(1, 0, 0), (1, 1, 1), (1, 2, 4)]) == [("jump", "m1", "activated", 2, 3)]
    # the first point of the next batch is compared with the last of this one
    assert feed(e, [(1, 4, 5), (1, 4.5, 3)]) == [
        ("jump", "m1", "cleared", 4, 0.5),
        ("jump", "m1", "activated", 4.5, 4),
    ]


def test_expression_aligns_signals_by_carrying_forward() -> None:
    e = engine(ExpressionRule(id="gap", device="m1", expression="temp > speed + 1"))
    pts = [
        (1, 1, 5),  # speed unknown yet: false
        (2, 2, 3),  # 5 > 4
        (1, 3, 3.5),  # with the old speed false, but speed changes at the same ts:
        (2, 3, 1),  # 3.5 > 2 still true, so nothing at 3
    ]
    assert feed(e, pts) == [("gap", "m1", "activated", 2, 1)]
    assert feed(e, [(2, 4, 3)]) == [("gap", "m1", "cleared", 4, 0)]  # temp 3.5 carried over


def test_expression_with_bool_signal_and_delay() -> None:
    e = engine(
        ExpressionRule(id="x", device_type="press", expression="fault and temp > 50", on_delay=2)
    )
    pts = [(3, 1, 1), (1, 1, 60), (13, 1, 1), (11, 1, 40), (1, 2, 61), (1, 3, 62), (11, 3, 70)]
    assert feed(e, pts) == [("x", "m1", "activated", 3, 1)]


TUMBLE_POINTS = [
    (21, 0, 4),
    (21, 5, 8),
    (21, 10, 2),
    (21, 15, 2),
    (21, 20, 9),
    (21, 25, 1),
    (21, 30, 0),
]


@pytest.mark.parametrize("split", [7, 3, 1])
def test_tumbling_window_avg(split: int) -> None:
    e = engine(WindowRule(id="w", device="o1", signal="heat", window=10, agg="avg", limit=5))
    got = []
    for i in range(0, len(TUMBLE_POINTS), split):
        got += feed(e, TUMBLE_POINTS[i : i + split])
    # [0,10): 6 at its end; [10,20): 2; [20,30): 5, not above 5, already cleared
    assert got == [("w", "o1", "activated", 10, 6), ("w", "o1", "cleared", 20, 2)]


@pytest.mark.parametrize("split", [7, 3, 1])
def test_sliding_window_avg(split: int) -> None:
    e = engine(
        WindowRule(
            id="w", device="o1", signal="heat", window=10, agg="avg", limit=5, mode="sliding"
        )
    )
    got = []
    for i in range(0, len(TUMBLE_POINTS), split):
        got += feed(e, TUMBLE_POINTS[i : i + split])
    # (t-10, t]: 4 | 6 | 5 | 2 | 5.5 | 5 | 0.5
    assert got == [
        ("w", "o1", "activated", 5, 6),
        ("w", "o1", "cleared", 10, 5),
        ("w", "o1", "activated", 20, 5.5),
        ("w", "o1", "cleared", 25, 5),
    ]


@pytest.mark.parametrize(
    ("agg", "limit", "expected"),
    [
        ("max", 4, (2, 5)),
        ("min", 2, (2, 3)),
        ("count", 1.5, (1, 2)),
        ("stddev", 0.5, (1, 1)),
        ("avg", 3.5, (2, 4)),
    ],
)
def test_sliding_aggregates(agg: str, limit: float, expected: tuple[float, float]) -> None:
    # values 1, 3, 5, 7 at 0..3 s; window (t-2, t]: [1] [1,3] [3,5] [5,7]
    e = engine(
        WindowRule(
            id="w",
            device="o1",
            signal="heat",
            window=2,
            agg=agg,  # type: ignore[arg-type]
            limit=limit,
            mode="sliding",
        )
    )
    got = feed(e, [(21, 0, 1), (21, 1, 3)]) + feed(e, [(21, 2, 5), (21, 3, 7)])
    assert got[0] == ("w", "o1", "activated", *expected)


@pytest.mark.parametrize(
    ("agg", "value"), [("stddev", 1.0), ("avg", 2.0), ("count", 2), ("min", 1), ("max", 3)]
)
def test_tumbling_window_merges_partial_windows(agg: str, value: float) -> None:
    e = engine(
        WindowRule(
            id="w",
            device="o1",
            signal="heat",
            window=2,
            agg=agg,  # type: ignore[arg-type]
            limit=0.5,
        )
    )
    assert feed(e, [(21, 0, 1)]) == []
    assert feed(e, [(21, 1, 3)]) == []
    assert feed(e, [(21, 2, 100)]) == [("w", "o1", "activated", 2, value)]


def test_stale_with_injected_now() -> None:
    e = engine(StaleRule(id="quiet", device_type="press", signal="temp", timeout=10))
    assert short(e.tick(0)) == []  # watched from 0
    assert feed(e, [(1, 8, 1)], now=9 * S) == []
    # m2 never had a point since it was first watched at 0
    assert short(e.tick(17 * S)) == [("quiet", "m2", "activated", 10, 17)]
    assert short(e.tick(20 * S)) == [("quiet", "m1", "activated", 18, 12)]
    assert short(e.tick(25 * S)) == []  # already active
    assert feed(e, [(1, 21, 1)]) == [("quiet", "m1", "cleared", 21, 13)]
    # a gap inside one batch: activated at 25 + 10, cleared at 40
    assert feed(e, [(1, 25, 1), (1, 40, 1)]) == [
        ("quiet", "m1", "activated", 35, 15),
        ("quiet", "m1", "cleared", 40, 15),
    ]


def test_machine_state_first_match_wins() -> None:
    e = engine(
        StateRule(
            id="state",
            device="m1",
            conditions=[("fault", "down"), ("speed > 10", "running"), ("speed > 0", "setup")],
            default="idle",
        )
    )
    pts = [(2, 1, 0), (3, 1, 0), (2, 2, 20), (3, 3, 1), (3, 4, 0), (2, 4, 5), (2, 5, 6)]
    got = [
        (x.ts / S, x.state)
        for x in e.process_arrays([p[0] for p in pts], [p[1] * S for p in pts], [p[2] for p in pts])
    ]
    assert got == [(1, "idle"), (2, "running"), (3, "down"), (4, "setup")]
    assert [(x.ts / S, x.state) for x in e.process_arrays([2], [6 * S], [50])] == [(6, "running")]


def test_events_in_time_order_across_rules() -> None:
    e = engine(
        ThresholdRule(id="hot", device="m1", signal="temp", limit=80),
        RateRule(id="jump", device="m1", signal="speed", limit=1),
    )
    got = feed(e, [(1, 1, 90), (2, 0, 0), (2, 0.5, 5), (1, 2, 10), (2, 3, 5)])
    assert [(r, t) for r, _, _, t, _ in got] == [("jump", 0.5), ("hot", 1), ("hot", 2), ("jump", 3)]


def test_late_and_bad_points_are_ignored() -> None:
    e = engine(ThresholdRule(id="hot", device="m1", signal="temp", limit=80))
    assert feed(e, [(1, 10, 70)]) == []
    assert feed(e, [(1, 5, 99), (999, 11, 99)]) == []  # late; unknown signal
    assert e.late_points == 1
    batch = make_batch(1, [1, 1], [11 * S, 12 * S], [99, 98], quality=[BAD, 0])
    assert short(e.process(batch)) == [("hot", "m1", "activated", 12, 98)]


def test_failing_rule_is_disabled_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    e = engine(
        ThresholdRule(id="a", device="m1", signal="temp", limit=80),
        ThresholdRule(id="b", device="m1", signal="temp", limit=85),
        ExpressionRule(id="x", device="m1", expression="temp > 1"),
    )
    group = next(ev for ev in e._evaluators if isinstance(ev, LimitGroup))
    real = LimitGroup.run

    def fail_for_a(self: LimitGroup, batch: object, enabled: np.ndarray) -> list[Event]:
        if enabled[0]:
            raise ZeroDivisionError("boom in a")
        return real(self, batch, enabled)  # type: ignore[arg-type]

    def broken(self: ExpressionEval, batch: object, enabled: np.ndarray) -> list[Event]:
        raise ValueError("bad data")

    monkeypatch.setattr(LimitGroup, "run", fail_for_a)
    monkeypatch.setattr(ExpressionEval, "run", broken)
    assert group.rule_ids == ["a", "b"]
    assert feed(e, [(1, 1, 90)]) == [("b", "m1", "activated", 1, 90)]
    status = e.status()
    assert not status["a"].enabled
    assert status["a"].reason == "disabled at run time: ZeroDivisionError: boom in a"
    assert not status["x"].enabled
    assert "ValueError: bad data" in (status["x"].reason or "")
    assert status["b"].enabled
    assert status["b"].reason is None
    assert feed(e, [(1, 2, 70)]) == [("b", "m1", "cleared", 2, 70)]


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        (ThresholdRule(id="r", device="m9", signal="temp", limit=1), "device", "unknown device"),
        (
            ThresholdRule(id="r", device_type="mill", signal="temp", limit=1),
            "device_type",
            "no device of type 'mill'",
        ),
        (
            ThresholdRule(id="r", device_type="press", signal="heat", limit=1),
            "signal",
            "device 'm1' has no signal 'heat'",
        ),
        (
            ExpressionRule(id="r", device="m1", expression="temp > heat"),
            "expression",
            "column 8: unknown signal 'heat'",
        ),
        (ExpressionRule(id="r", device="m1", expression="temp >"), "expression", "syntax error"),
        (
            ExpressionRule(id="r", device="m1", expression="fault < 1"),
            "expression",
            "column 1: type error",
        ),
        (
            ExpressionRule(id="r", device="m1", expression="temp + 1"),
            "expression",
            "gives a number",
        ),
        (
            StateRule(id="r", device="m1", conditions=[("speed > 1", "running"), ("x", "idle")]),
            "conditions[1]",
            "column 1: unknown signal 'x'",
        ),
    ],
)
def test_bad_rules_rejected_at_save_time(rule: Rule, field: str, words: str) -> None:
    with pytest.raises(BadInput) as err:
        validate_rule(rule, DEVICES)
    assert err.value.field == field
    assert words in err.value.message
    with pytest.raises(BadInput):
        RuleEngine(DEVICES, [rule])


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ThresholdRule(id="r", signal="t", limit=1), "device_type"),
        (
            lambda: ThresholdRule(id="r", device="a", device_type="b", signal="t", limit=1),
            "device_type",
        ),
        (lambda: ThresholdRule(id="r", device="a", signal="t", limit=1, deadband=-1), "deadband"),
        (lambda: ThresholdRule(id="r", device="a", signal="t", limit=1, on_delay=-1), "on_delay"),
        (
            lambda: WindowRule(id="r", device="a", signal="t", window=0, agg="avg", limit=1),
            "window",
        ),
        (lambda: StaleRule(id="r", device="a", signal="t", timeout=0), "timeout"),
        (lambda: StateRule(id="r", device="a", conditions=[("x", "busy")]), "conditions[0]"),
    ],
)
def test_bad_rule_definitions(make: object, field: str) -> None:
    with pytest.raises(BadInput) as err:
        make()  # type: ignore[operator]
    assert err.value.field == field


def test_duplicate_rule_ids_rejected() -> None:
    r = ThresholdRule(id="r", device="m1", signal="temp", limit=1)
    with pytest.raises(BadInput, match="used twice"):
        RuleEngine(DEVICES, [r, r])


def test_benchmark_quick_tiny() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.rules", "--quick", "--types", "5", "--seconds", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("points_per_s", "numpy_compare_points_per_s", "ratio"):
        assert result[key] > 0, key
    assert result["rules"] == 50
    assert result["signals"] == 500
    assert result["points"] == 10_000
