"""Period finding and the tail estimator, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopfloor.apps.condition.likelihood import TailEstimator
from shopfloor.apps.condition.seasonality import autocorrelation, find_period


def test_autocorrelation_of_a_square_wave() -> None:
    # +1 x 6, -1 x 6, repeated 4 times (n = 48): mean 0, so lag 0 is 1; at lag 12 every
    # product is +1 (36 terms / 36 = 1, unbiased); at lag 6 every product is -1.
    x = np.tile(np.r_[np.ones(6), -np.ones(6)], 4)
    ac = autocorrelation(x)
    assert ac[0] == pytest.approx(1.0)
    assert ac[12] == pytest.approx(1.0)
    assert ac[6] == pytest.approx(-1.0)


def test_period_of_a_repeating_pattern() -> None:
    pattern = np.r_[np.zeros(5), np.arange(10.0), np.full(9, 3.0)]  # 24 samples
    x = np.tile(pattern, 12)  # 288 samples, the search goes up to lag 144
    # Lags 24, 48, ... correlate exactly (1.0); ties go to the shortest lag.
    assert find_period(x, 0.6) == 24


def test_no_period_in_noise_or_short_or_flat_input() -> None:
    assert find_period(np.random.default_rng(0).normal(size=1000), 0.6) == 0
    assert find_period(np.sin(np.arange(19.0)), 0.6) == 0  # fewer than 20 points
    assert find_period(np.full(100, 3.0), 0.6) == 0
    assert find_period(np.arange(100.0), 0.6) == 0  # a ramp: no negative lag before n / 2


def test_tail_estimator_by_hand() -> None:
    t = TailEstimator(window=2, memory=100.0, var_floor=0.04)
    # Step 1: mean 0, var 0: z = 0.2 / sqrt(0.04) = 1, upper tail of N(0,1) at 1 = 0.158655.
    assert t.step(0.2) == pytest.approx(0.158655, abs=1e-6)
    # It then learns with rate 1 / count = 1: mean 0.2, var 0.
    assert (t.mean, t.var) == (pytest.approx(0.2), 0.0)
    # Step 2: average of (0.2, 0.6) = 0.4; z = (0.4 - 0.2) / 0.2 = 1 again.
    assert t.step(0.6) == pytest.approx(0.158655, abs=1e-6)
    # Rate 1/2: mean 0.2 + 0.5 * 0.2 = 0.3; var 0.5 * (0 + 0.5 * 0.04) = 0.01.
    assert t.mean == pytest.approx(0.3)
    assert t.var == pytest.approx(0.01)
    # Step 3: window keeps (0.6, 0.6), average 0.6; z = 0.3 / sqrt(0.05); tail = Q(z).
    z = 0.3 / math.sqrt(0.05)
    assert t.step(0.6) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2.0)))


def test_tail_estimator_round_trip() -> None:
    t = TailEstimator(3, 50.0, 0.01)
    for raw in (0.1, 0.5, 0.2, 0.9):
        t.step(raw)
    u = TailEstimator.from_dict(t.to_dict())
    assert [u.step(0.4), u.step(0.0)] == [t.step(0.4), t.step(0.0)]
