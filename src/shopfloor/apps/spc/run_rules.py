"""Run rules (Western Electric 1956, Nelson 1984) that find non-random patterns on a chart.

Every point is placed in a zone by its distance from the center line in sigmas of the plotted
statistic, ``z = (x - center) / sigma``: zone C is ``|z| <= 1``, zone B ``1 < |z| <= 2``, zone
A ``2 < |z| <= 3``; beyond ``|z| > 3`` lies outside the control limits. A point exactly on the
center line is on neither side, so it ends a run "on one side". Trends (rising, falling,
alternating) compare raw values; an equal neighbour ends them.

A violation is reported at the point that completes the pattern, and again at every later
point that completes it anew: ten points in a row above the center line break the nine-point
rule at the 9th and the 10th point. ``find_violations`` runs over a whole series at once;
``RuleEvaluator`` takes one point at a time, keeps O(1) state, and reports the same violations
at the same indices.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from shopfloor.core.errors import BadInput

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Rule:
    """One run rule: a stable id, what it looks for, and how many points its pattern spans."""

    id: str
    description: str
    points: int


@dataclass(frozen=True, order=True)
class Violation:
    """Point ``index`` (0-based, in the evaluated series) completes the pattern of ``rule``."""

    index: int
    rule: str


RULES: Final[Mapping[str, Rule]] = {
    rule.id: rule
    for rule in (
        Rule("we_1", "One point beyond 3 sigma (outside the control limits)", 1),
        Rule("we_2", "Two of three points in a row beyond 2 sigma, on the same side", 3),
        Rule("we_3", "Four of five points in a row beyond 1 sigma, on the same side", 5),
        Rule("we_4", "Eight points in a row on the same side of the center line", 8),
        Rule("nelson_1", "One point beyond 3 sigma (outside the control limits)", 1),
        Rule("nelson_2", "Nine points in a row on the same side of the center line", 9),
        Rule("nelson_3", "Six points in a row steadily increasing or decreasing", 6),
        Rule("nelson_4", "Fourteen points in a row alternating up and down", 14),
        Rule("nelson_5", "Two of three points in a row beyond 2 sigma, on the same side", 3),
        Rule("nelson_6", "Four of five points in a row beyond 1 sigma, on the same side", 5),
        Rule("nelson_7", "Fifteen points in a row within 1 sigma of the center line", 15),
        Rule(
            "nelson_8",
            "Eight points in a row beyond 1 sigma, on both sides of the center line",
            8,
        ),
    )
}
WESTERN_ELECTRIC: Final = ("we_1", "we_2", "we_3", "we_4")
NELSON: Final = tuple(f"nelson_{i}" for i in range(1, 9))


def find_violations(
    values: Sequence[float] | npt.NDArray[Any],
    center: float | Sequence[float] | npt.NDArray[Any],
    sigma: float | Sequence[float] | npt.NDArray[Any],
    rules: Sequence[str] = NELSON,
) -> list[Violation]:
    """Every violation of ``rules`` in ``values``, ordered by index then by ``rules`` order.

    ``center`` and ``sigma`` (of the plotted statistic) are one number or one per point, as on
    a p chart whose limits vary with the sample size.
    """
    wanted = _check_rules(rules)
    x = _finite(_numbers(values, "values"), "values")
    if x.ndim != 1:
        raise BadInput("values must be a flat list of numbers", "values")
    c = _finite(_per_point(center, x.shape, "center"), "center")
    s = _finite(_per_point(sigma, x.shape, "sigma"), "sigma")
    if np.any(s <= 0.0):
        raise BadInput("sigma must be positive", "sigma")
    hits = _patterns(x, (x - c) / s)
    found = [Violation(int(i), rule) for rule in wanted for i in np.flatnonzero(hits[rule])]
    order = {rule: position for position, rule in enumerate(wanted)}
    return sorted(found, key=lambda v: (v.index, order[v.rule]))


def _patterns(x: FloatArray, z: FloatArray) -> dict[str, BoolArray]:
    above, below = z > 0.0, z < 0.0
    step = np.zeros(x.shape, dtype=np.int64)
    step[1:] = np.sign(x[1:] - x[:-1]).astype(np.int64)
    # alternation[i]: the step into point i reverses the step into point i - 1.
    alternation = np.zeros(x.shape, dtype=bool)
    alternation[1:] = step[1:] * step[:-1] < 0
    beyond_3 = np.abs(z) > 3.0
    two_of_three = _k_of_w(z > 2.0, 2, 3) | _k_of_w(z < -2.0, 2, 3)
    four_of_five = _k_of_w(z > 1.0, 4, 5) | _k_of_w(z < -1.0, 4, 5)
    eight_same_side = _run(above, 8) | _run(below, 8)
    return {
        "we_1": beyond_3,
        "we_2": two_of_three,
        "we_3": four_of_five,
        "we_4": eight_same_side,
        "nelson_1": beyond_3,
        "nelson_2": _run(above, 9) | _run(below, 9),
        # Six points hold five steps; fourteen points hold thirteen steps and twelve reversals.
        "nelson_3": _run(step > 0, 5) | _run(step < 0, 5),
        "nelson_4": _run(alternation, 12),
        "nelson_5": two_of_three,
        "nelson_6": four_of_five,
        "nelson_7": _run(np.abs(z) <= 1.0, 15),
        "nelson_8": _run(np.abs(z) > 1.0, 8)
        & (_trailing_count(z > 1.0, 8) > 0)
        & (_trailing_count(z < -1.0, 8) > 0),
    }


def _trailing_count(mask: BoolArray, window: int) -> IntArray:
    """How many of the last ``window`` points (fewer at the start) are set, at each point."""
    totals = np.cumsum(mask, dtype=np.int64)
    counts = totals.copy()
    counts[window:] -= totals[:-window]
    return counts


def _run(mask: BoolArray, length: int) -> BoolArray:
    result: BoolArray = _trailing_count(mask, length) == length
    return result


def _k_of_w(mask: BoolArray, k: int, window: int) -> BoolArray:
    # The completing point must itself be one of the k, otherwise the pattern completed earlier.
    result: BoolArray = mask & (_trailing_count(mask, window) >= k)
    return result


class RuleEvaluator:
    """Streaming run rules: feed points one at a time, get the violations each one completes.

    State is a handful of counters, so an evaluator per chart costs nothing; ``snapshot`` and
    ``from_snapshot`` let an app persist it and resume exactly where it stopped.
    """

    def __init__(self, center: float, sigma: float, rules: Sequence[str] = NELSON) -> None:
        self.rules = _check_rules(rules)
        self.center = _finite_scalar(center, "center")
        self.sigma = _positive(sigma)
        self.count = 0
        self._last: float | None = None
        self._last_step = 0
        self._above = self._below = 0  # points in a row on one side of the center line
        self._rising = self._falling = 0  # steps in a row up / down
        self._reversals = 0  # steps in a row that reverse the one before
        self._inner = self._outer = 0  # points in a row with |z| <= 1 / |z| > 1
        self._last_high = self._last_low = -1  # index of the last point with z > 1 / z < -1
        self._recent: deque[float] = deque(maxlen=5)  # z of the last five points

    def update(
        self, value: float, *, center: float | None = None, sigma: float | None = None
    ) -> list[Violation]:
        """Add one point; ``center``/``sigma`` override the evaluator's for this point only."""
        x = _finite_scalar(value, "value")
        c = self.center if center is None else _finite_scalar(center, "center")
        z = (x - c) / (self.sigma if sigma is None else _positive(sigma))
        index = self.count
        self._count_point(index, x, z)
        hits = self._patterns(index)
        return [Violation(index, rule) for rule in self.rules if hits[rule]]

    def _count_point(self, index: int, x: float, z: float) -> None:
        self._above = self._above + 1 if z > 0.0 else 0
        self._below = self._below + 1 if z < 0.0 else 0
        step = 0 if self._last is None else (x > self._last) - (x < self._last)
        self._rising = self._rising + 1 if step > 0 else 0
        self._falling = self._falling + 1 if step < 0 else 0
        self._reversals = self._reversals + 1 if step * self._last_step < 0 else 0
        self._inner = self._inner + 1 if abs(z) <= 1.0 else 0
        self._outer = self._outer + 1 if abs(z) > 1.0 else 0
        if z > 1.0:
            self._last_high = index
        if z < -1.0:
            self._last_low = index
        self._recent.append(z)
        self._last, self._last_step = x, step
        self.count = index + 1

    def _patterns(self, index: int) -> dict[str, bool]:
        recent = list(self._recent)
        z = recent[-1]
        last_three = recent[-3:]
        two_of_three = (z > 2.0 and sum(v > 2.0 for v in last_three) >= 2) or (
            z < -2.0 and sum(v < -2.0 for v in last_three) >= 2
        )
        four_of_five = (z > 1.0 and sum(v > 1.0 for v in recent) >= 4) or (
            z < -1.0 and sum(v < -1.0 for v in recent) >= 4
        )
        beyond_3 = abs(z) > 3.0
        eight_same_side = max(self._above, self._below) >= 8
        window_start = index - 7
        return {
            "we_1": beyond_3,
            "we_2": two_of_three,
            "we_3": four_of_five,
            "we_4": eight_same_side,
            "nelson_1": beyond_3,
            "nelson_2": max(self._above, self._below) >= 9,
            "nelson_3": max(self._rising, self._falling) >= 5,
            "nelson_4": self._reversals >= 12,
            "nelson_5": two_of_three,
            "nelson_6": four_of_five,
            "nelson_7": self._inner >= 15,
            "nelson_8": self._outer >= 8
            and self._last_high >= window_start
            and self._last_low >= window_start,
        }

    def snapshot(self) -> dict[str, Any]:
        """The evaluator's whole state as a JSON-ready dict."""
        return {
            "rules": list(self.rules),
            "center": self.center,
            "sigma": self.sigma,
            "count": self.count,
            "last": self._last,
            "last_step": self._last_step,
            "runs": [
                self._above,
                self._below,
                self._rising,
                self._falling,
                self._reversals,
                self._inner,
                self._outer,
            ],
            "last_high": self._last_high,
            "last_low": self._last_low,
            "recent": list(self._recent),
        }

    @classmethod
    def from_snapshot(cls, state: Mapping[str, Any]) -> RuleEvaluator:
        """Resume an evaluator from ``snapshot()``'s dict."""
        try:
            evaluator = cls(state["center"], state["sigma"], state["rules"])
            evaluator.count = int(state["count"])
            evaluator._last = None if state["last"] is None else float(state["last"])
            evaluator._last_step = int(state["last_step"])
            (
                evaluator._above,
                evaluator._below,
                evaluator._rising,
                evaluator._falling,
                evaluator._reversals,
                evaluator._inner,
                evaluator._outer,
            ) = (int(v) for v in state["runs"])
            evaluator._last_high = int(state["last_high"])
            evaluator._last_low = int(state["last_low"])
            evaluator._recent.extend(float(v) for v in state["recent"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"malformed run-rule state: {exc}", "state") from None
        return evaluator


def _check_rules(rules: Sequence[str]) -> tuple[str, ...]:
    if isinstance(rules, str):
        rules = (rules,)
    unknown = [rule for rule in rules if rule not in RULES]
    if unknown:
        raise BadInput(f"unknown run rule(s) {unknown}; known: {sorted(RULES)}", "rules")
    return tuple(dict.fromkeys(rules))


def _numbers(values: object, field: str) -> FloatArray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInput(f"{field} must be numbers", field) from None


def _per_point(values: object, shape: tuple[int, ...], field: str) -> FloatArray:
    try:
        return np.broadcast_to(_numbers(values, field), shape)
    except ValueError:
        raise BadInput(f"{field} must be one number or one per value", field) from None


def _finite(array: FloatArray, field: str) -> FloatArray:
    if not np.all(np.isfinite(array)):
        raise BadInput(f"{field} must be finite numbers", field)
    return array


def _finite_scalar(value: float, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{field} must be a number, got {value!r}", field) from None
    if not math.isfinite(number):
        raise BadInput(f"{field} must be finite, got {value!r}", field)
    return number


def _positive(sigma: float) -> float:
    number = _finite_scalar(sigma, "sigma")
    if number <= 0.0:
        raise BadInput(f"sigma must be positive, got {sigma!r}", "sigma")
    return number
