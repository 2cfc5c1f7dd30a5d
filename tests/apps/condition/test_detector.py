"""The univariate streaming detector: what it flags, its rest period, its state, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shopfloor.apps.condition.detector import DetectorConfig, StreamingDetector
from shopfloor.core.errors import BadInput

ALARM = DetectorConfig().alarm_score


def noise(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, n)


def run(values: np.ndarray, baseline: int, config: DetectorConfig | None = None) -> np.ndarray:
    det = StreamingDetector(config).fit(np.arange(baseline), values[:baseline])
    return det.update_many(np.arange(baseline, values.size), values[baseline:])


def test_a_spike_is_the_highest_score_and_alone() -> None:
    x = noise(2000)
    x[1200] += 12.0  # a 12-sigma spike
    scores = run(x, 500)
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    assert 500 + int(np.argmax(scores)) == 1200
    assert scores.max() >= ALARM
    alarms = np.flatnonzero(scores >= ALARM) + 500
    assert alarms.tolist() == [1200]  # and nothing in the noise around it


def test_rest_period_after_an_alarm() -> None:
    # Baseline 500 points, rest_fraction 0.2: the 100 points after an alarm score 0, even
    # while the anomaly goes on.
    x = noise(1500)
    x[900:1400] += 8.0
    det = StreamingDetector().fit(np.arange(500), x[:500])
    scores, alarms = [], []
    for i in range(500, 1500):
        scores.append(det.update(i, x[i]))
        assert det.last is not None
        if det.last.alarm:
            alarms.append(i)
    first = alarms[0]
    assert 900 <= first <= 905
    assert np.all(np.asarray(scores[first - 500 + 1 : first - 500 + 101]) == 0.0)
    assert all(a > first + 100 for a in alarms[1:])


def test_rest_fraction_zero_never_suppresses() -> None:
    x = noise(1500)
    x[900:1400] += 8.0
    scores = run(x, 500, DetectorConfig(rest_fraction=0.0))
    # Index 900 is scores[400]; the 10-point smoothing needs two points to cross the alarm.
    assert (scores[402:420] >= ALARM).all()  # the shift stays visible point after point


def test_a_lasting_shift_becomes_the_new_normal() -> None:
    x = noise(12000, seed=2)
    x[1000:] += 6.0
    scores = run(x, 500)
    alarms = np.flatnonzero(scores >= ALARM) + 500
    assert 1000 <= alarms[0] <= 1005
    assert scores[-3000:].max() < ALARM  # adapted: the new level is no longer news


def test_a_missing_cycle_is_caught_by_the_seasonal_test() -> None:
    # A sine with a period of 50 samples; at 2000 it goes flat at its mean. The flat part is
    # well inside the usual range, so only the comparison with one period ago can see it.
    t = np.arange(3000)
    y = np.sin(2 * np.pi * t / 50) + np.random.default_rng(3).normal(0.0, 0.05, t.size)
    y[2000:2100] = 0.0
    det = StreamingDetector().fit(t[:500], y[:500])
    assert det.period % 50 == 0  # the best-correlated multiple of the period
    scores = det.update_many(t[500:], y[500:])
    alarms = np.flatnonzero(scores >= ALARM) + 500
    assert alarms.size > 0
    assert 2000 <= alarms[0] < 2050
    assert det.last is not None
    assert det.last.seasonal_tail is not None


def test_noise_has_no_period_and_no_seasonal_test() -> None:
    det = StreamingDetector().fit(np.arange(500), noise(500))
    assert det.period == 0
    det.update(500, 0.0)
    assert det.last is not None
    assert det.last.seasonal_tail is None


def test_flat_baseline_then_a_step() -> None:
    x = np.full(800, 20.0)
    x[600:] = 21.0
    scores = run(x, 300)
    # A flat signal staying flat is not news: level surprise 0, tail 0.5, so the score is
    # -log10(0.5) / 8 = 0.037629.
    assert scores[:300] == pytest.approx(np.full(300, 0.037629), abs=1e-6)
    assert scores[300] == 1.0  # a flat signal that moves is


def test_automatic_baseline_equals_fit() -> None:
    x = noise(1500, seed=4)
    x[1000] += 10.0
    fitted = run(x, 400)
    auto = StreamingDetector(DetectorConfig(baseline_points=400))
    scores = auto.update_many(np.arange(1500), x)
    assert np.all(scores[:400] == 0.0)
    assert auto.fitted
    np.testing.assert_array_equal(scores[400:], fitted)


@pytest.mark.parametrize("cut", [150, 700])  # while collecting the baseline, and after
def test_state_round_trip_continues_exactly(cut: int) -> None:
    t = np.arange(2000)
    x = np.sin(2 * np.pi * t / 40) + noise(2000, seed=5) * 0.1
    x[1500] += 5.0
    a = StreamingDetector(DetectorConfig(baseline_points=300))
    a.update_many(t[:cut], x[:cut])
    b = StreamingDetector.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.period == a.period
    assert b.last_ts == a.last_ts == cut - 1
    np.testing.assert_array_equal(a.update_many(t[cut:], x[cut:]), b.update_many(t[cut:], x[cut:]))


def test_timestamps_may_repeat_or_arrive_late() -> None:
    det = StreamingDetector().fit([0, 1, 1, 2, 3], [1.0, 2.0, 1.0, 2.0, 1.0])
    det.update(10, 1.5)
    det.update(5, 1.5)  # late: scored in arrival order, the latest time stamp is kept
    assert det.last_ts == 10


def test_bad_input() -> None:
    with pytest.raises(BadInput, match="not trained"):
        StreamingDetector().update(0, 1.0)
    det = StreamingDetector().fit(np.arange(10), noise(10))
    with pytest.raises(BadInput, match="finite"):
        det.update(11, math.nan)
    with pytest.raises(BadInput, match="at least 3"):
        StreamingDetector().fit([0, 1], [1.0, 2.0])
    with pytest.raises(BadInput, match="timestamps for"):
        StreamingDetector().fit([0, 1, 2], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(BadInput, match="finite"):
        StreamingDetector().fit([0, 1, 2], [1.0, math.inf, 3.0])
    with pytest.raises(BadInput, match="numbers"):
        StreamingDetector().fit([0, 1, 2], ["a", "b", "c"])
    with pytest.raises(BadInput, match="timestamps for"):
        det.update_many([20, 21], [1.0])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("baseline_points", 2),
        ("baseline_points", -1),
        ("level_rate", 0.0),
        ("level_rate", 1.0),
        ("smoothing", 0),
        ("var_floor", 0.0),
        ("tail_decades", -1.0),
        ("alarm_score", 0.0),
        ("rest_fraction", -0.1),
    ],
)
def test_bad_config(field: str, value: float) -> None:
    with pytest.raises(BadInput) as err:
        DetectorConfig(**{field: value})
    assert err.value.field == field


def test_bad_state() -> None:
    state = StreamingDetector().fit(np.arange(50), noise(50)).to_dict()
    with pytest.raises(BadInput, match="version"):
        StreamingDetector.from_dict({**state, "version": 99})
    broken = {**state, "trained": {"level": [0.0, 1.0]}}
    with pytest.raises(BadInput, match="malformed"):
        StreamingDetector.from_dict(broken)


def test_public_api() -> None:
    import shopfloor.apps.condition as condition

    assert sorted(condition.__all__) == sorted(
        [
            "PROFILES",
            "DetectorConfig",
            "MultivariateDetector",
            "MultivariateScore",
            "Profile",
            "ProfileResult",
            "ScoreDetail",
            "ScoredFile",
            "StreamingDetector",
            "score_corpus",
        ]
    )
    for name in condition.__all__:
        assert getattr(condition, name) is not None
