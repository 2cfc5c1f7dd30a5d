"""Western Electric and Nelson rules: each fires exactly where its pattern completes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shopfloor.apps.spc.run_rules import (
    NELSON,
    RULES,
    WESTERN_ELECTRIC,
    RuleEvaluator,
    Violation,
    find_violations,
)
from shopfloor.core.errors import BadInput

ALL_RULES = WESTERN_ELECTRIC + NELSON


def hits(rule: str, values: list[float], center: float = 0.0, sigma: float = 1.0) -> list[int]:
    """Indices at which ``rule`` fires, batch and streaming (they must agree)."""
    batch = [v.index for v in find_violations(values, center, sigma, [rule])]
    evaluator = RuleEvaluator(center, sigma, [rule])
    streamed = [v.index for value in values for v in evaluator.update(value)]
    assert streamed == batch
    return batch


# Each case: rule, a series that completes the pattern at a known index, and a near miss.
# Center 0 and sigma 1, so each value is its own z.
CASES = [
    # Beyond 3 sigma; exactly 3 sigma is on the limit, not beyond.
    ("nelson_1", [0.0, 0.0, -3.01], [2], [0.0, 3.0, -3.0]),
    ("we_1", [0.0, 3.5], [1], [2.99, 3.0]),
    # Nine on one side: a point below first, then nine above -> the ninth above (index 9).
    ("nelson_2", [-0.5] + [0.5] * 9, [9], [0.5] * 8 + [0.0] + [0.5] * 5),
    # Eight on one side (WE 4): nine below fire at the 8th and 9th; seven, a point on the
    # center line, seven: none.
    ("we_4", [0.5] + [-0.2] * 9, [8, 9], [-0.2] * 7 + [0.0] + [-0.2] * 7),
    ("we_4", [0.3] + [0.2] * 7, [7], [0.2] * 7 + [-0.1]),
    # Six rising = five steps up, ending at index 5; a tie at the end breaks it.
    ("nelson_3", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]),
    ("nelson_3", [-9.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0], [6], [0.5, 0.4, 0.3, 0.2, 0.5, 0.1, 0.0]),
    # Fourteen alternating = thirteen steps, each reversing the last; thirteen points: none.
    ("nelson_4", [0.5, -0.5] * 7, [13], [0.5, -0.5] * 6 + [0.5]),
    # Two of three beyond 2 sigma on one side; the completing point is itself beyond.
    ("nelson_5", [0.0, 2.5, 0.0, 2.5], [3], [2.5, 0.0, 0.0, 2.5]),
    ("nelson_5", [-2.1, -2.1], [1], [2.5, -2.5, 0.0, 2.5]),
    ("we_2", [0.0, 2.5, 2.2], [2], [2.0, 2.5, 2.0]),
    # Four of five beyond 1 sigma on one side.
    ("nelson_6", [1.5, 1.5, 0.0, 1.5, 1.5], [4], [1.5, 0.0, 1.5, 0.0, 1.5, 1.5]),
    ("we_3", [-1.2, -1.2, -1.2, 0.5, -1.2], [4], [-1.2, -1.2, 1.2, 1.2, -1.2, 1.0]),
    # Fifteen within 1 sigma (hugging the center line); one point at 1.5 breaks it.
    ("nelson_7", [0.5, -0.5] * 7 + [1.0], [14], [0.5] * 7 + [1.5] + [0.5] * 7),
    # Eight beyond 1 sigma on both sides; eight beyond 1 sigma all on one side: not this rule.
    ("nelson_8", [1.5, -1.5] * 4, [7], [1.5] * 8),
    ("nelson_8", [0.0] + [2.0] * 7 + [-2.0], [8], [1.5, -1.5] * 3 + [1.0, 1.5]),
]


@pytest.mark.parametrize(("rule", "series", "expected", "near_miss"), CASES)
def test_rule_fires_where_its_pattern_completes(
    rule: str, series: list[float], expected: list[int], near_miss: list[float]
) -> None:
    assert hits(rule, series) == expected
    assert hits(rule, near_miss) == []


def test_every_rule_has_a_case() -> None:
    assert {case[0] for case in CASES} == set(RULES)
    assert set(ALL_RULES) == set(RULES)


def test_a_longer_run_is_reported_at_every_point_that_completes_it() -> None:
    # Eleven above: windows of nine end at indices 8, 9 and 10.
    assert hits("nelson_2", [0.5] * 11) == [8, 9, 10]


def test_rules_use_the_center_and_sigma_given() -> None:
    # Center 10, sigma 2: 16.5 is 3.25 sigma above; 15.9 is 2.95 sigma above.
    assert hits("nelson_1", [10.0, 16.5, 15.9, 3.9], center=10.0, sigma=2.0) == [1, 3]


def test_per_point_sigma_as_on_a_p_chart() -> None:
    # z = 3/1 = 3 (on the limit) then 3/0.5 = 6 (beyond).
    found = find_violations([3.0, 3.0], 0.0, [1.0, 0.5], ["nelson_1"])
    assert found == [Violation(1, "nelson_1")]
    evaluator = RuleEvaluator(0.0, 1.0, ["nelson_1"])
    assert evaluator.update(3.0) == []
    assert evaluator.update(3.0, sigma=0.5) == [Violation(1, "nelson_1")]


def test_violations_are_ordered_by_index_then_rule_order() -> None:
    # Index 2 breaks nelson_5 (2.5, 2.6 beyond 2 sigma) and nelson_1 (3.5).
    found = find_violations([0.0, 2.5, 3.5], 0.0, 1.0, ["nelson_5", "nelson_1"])
    assert found == [Violation(2, "nelson_5"), Violation(2, "nelson_1")]


def test_western_electric_and_nelson_share_their_common_rules() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0.0, 1.4, 500)
    for we, nelson in [("we_1", "nelson_1"), ("we_2", "nelson_5"), ("we_3", "nelson_6")]:
        assert hits(we, values.tolist()) == hits(nelson, values.tolist())


def test_descriptions_are_there() -> None:
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id
        assert len(rule.description) > 20
        assert 1 <= rule.points <= 15


def _series(seed: int) -> np.ndarray:
    # In-control noise, then a shift, a trend and an oscillation; rounded to 0.25 so that ties
    # and points exactly on the center line and on zone edges happen.
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(0.0, 1.0, 80),
        rng.normal(1.5, 1.0, 40),
        np.linspace(-2, 2, 20) + rng.normal(0, 0.1, 20),
        np.tile([1.2, -1.2], 10),
        rng.normal(0.0, 0.3, 30),
    ]
    return np.round(np.concatenate(parts) * 4) / 4


@pytest.mark.parametrize("seed", range(20))
def test_streaming_gives_the_same_violations_as_batch(seed: int) -> None:
    values = _series(seed)
    batch = find_violations(values, 0.0, 1.0, ALL_RULES)
    evaluator = RuleEvaluator(0.0, 1.0, ALL_RULES)
    streamed = [v for value in values for v in evaluator.update(float(value))]
    assert streamed == batch


def test_the_equivalence_series_exercise_every_rule() -> None:
    fired = {v.rule for seed in range(20) for v in find_violations(_series(seed), 0, 1, ALL_RULES)}
    assert fired == set(ALL_RULES)


def test_a_resumed_evaluator_continues_exactly() -> None:
    values = _series(99).tolist()
    whole = RuleEvaluator(0.5, 1.1, ALL_RULES)
    expected = [v for value in values for v in whole.update(value)]
    first = RuleEvaluator(0.5, 1.1, ALL_RULES)
    got = [v for value in values[:77] for v in first.update(value)]
    resumed = RuleEvaluator.from_snapshot(json.loads(json.dumps(first.snapshot())))
    got += [v for value in values[77:] for v in resumed.update(value)]
    assert got == expected
    assert resumed.count == len(values)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: find_violations([1.0], 0.0, 1.0, ["nelson_9"]), "rules"),
        (lambda: find_violations([1.0], 0.0, 0.0), "sigma"),
        (lambda: find_violations([1.0, float("nan")], 0.0, 1.0), "values"),
        (lambda: find_violations([1.0, 2.0], [0.0, 1.0, 2.0], 1.0), "center"),
        (lambda: find_violations(["x"], 0.0, 1.0), "values"),  # type: ignore[list-item]
        (lambda: find_violations([[1.0]], 0.0, 1.0), "values"),  # type: ignore[list-item]
        (lambda: RuleEvaluator(0.0, -1.0), "sigma"),
        (lambda: RuleEvaluator(float("inf"), 1.0), "center"),
        (lambda: RuleEvaluator(0.0, 1.0).update(float("nan")), "value"),
        (lambda: RuleEvaluator.from_snapshot({"center": 0.0}), "state"),
    ],
)
def test_bad_input_is_rejected(call: object, field: str) -> None:
    with pytest.raises(BadInput) as caught:
        call()  # type: ignore[operator]
    assert caught.value.field == field


def test_empty_series_has_no_violations() -> None:
    assert find_violations([], 0.0, 1.0) == []
