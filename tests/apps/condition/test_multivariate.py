"""The machine-level (multivariate) detector: statistics by hand, a drifting signal, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shopfloor.apps.condition.multivariate import MultivariateDetector
from shopfloor.core.errors import BadInput


def with_state(precision: list[list[float]], smoothing: float = 1.0) -> MultivariateDetector:
    """A detector whose trained state is set by hand: centre 0, scale 1."""
    k = len(precision)
    return MultivariateDetector.from_dict(
        {
            "version": 1,
            "names": [f"s{i}" for i in range(k)],
            "smoothing": smoothing,
            "center": [0.0] * k,
            "scale": [1.0] * k,
            "precision": precision,
            "ewma": [0.0] * k,
        }
    )


def test_independent_signals_by_hand() -> None:
    # Precision I, lam = 1: w = z = (3, 4); d2 = 9 + 16 = 25; chi-square with 2 degrees of
    # freedom has CDF 1 - exp(-x / 2), so the score is 1 - exp(-12.5). Residuals given the
    # other signal are z itself (no correlation): shares 9/25 and 16/25.
    r = with_state([[1.0, 0.0], [0.0, 1.0]]).update([3.0, 4.0])
    assert r.d2 == pytest.approx(25.0)
    assert r.score == pytest.approx(1.0 - math.exp(-12.5))
    assert r.contributions == pytest.approx({"s0": 0.36, "s1": 0.64})


def test_correlated_signals_by_hand() -> None:
    # Covariance [[1, .5], [.5, 1]] -> precision M = [[4/3, -2/3], [-2/3, 4/3]]. w = (1, 0):
    # M w = (4/3, -2/3); d2 = 4/3; residuals^2: (16/9) / (4/3) = 4/3 and (4/9) / (4/3) = 1/3,
    # shares 0.8 and 0.2; score = 1 - exp(-2/3) = 0.486583.
    r = with_state([[4 / 3, -2 / 3], [-2 / 3, 4 / 3]]).update([1.0, 0.0])
    assert r.d2 == pytest.approx(4 / 3)
    assert r.score == pytest.approx(0.486583, abs=1e-6)
    assert r.contributions == pytest.approx({"s0": 0.8, "s1": 0.2})


def test_ewma_smoothing_by_hand() -> None:
    # lam = 0.5, precision I: z = (2, 0) -> w = (1, 0), d2 = 1; then z = 0 -> w = (0.5, 0),
    # d2 = 0.25.
    det = with_state([[1.0, 0.0], [0.0, 1.0]], smoothing=0.5)
    assert det.update([2.0, 0.0]).d2 == pytest.approx(1.0)
    assert det.update([0.0, 0.0]).d2 == pytest.approx(0.25)


def test_robust_standardisation() -> None:
    # Column 0: median 3, |x - 3| = 2, 1, 0, 1, 97 -> MAD 1 -> scale 1.4826 (the outlier 100
    # does not inflate it). Column 1 is constant: MAD 0 and std 0 -> scale 1.
    base = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0], [100.0, 5.0]])
    det = MultivariateDetector(["a", "b"]).fit(base)
    assert det.center is not None
    assert det.scale is not None
    assert det.center.tolist() == [3.0, 5.0]
    assert det.scale.tolist() == pytest.approx([1.4826, 1.0])


def drifting(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Three signals of one machine; 'b' follows 'a' through a common factor; 'c' is apart.
    From row 1000 'b' drifts upward by 3 of its units over 500 rows."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=n)
    x = np.c_[
        f + 0.3 * rng.normal(size=n),
        2 * f + 0.5 * rng.normal(size=n) + 10.0,
        rng.normal(size=n) * 3 + 50.0,
    ]
    x[1000:, 1] += np.linspace(0.0, 3.0, 500)
    return x


def test_drifting_signal_raises_the_score_and_gets_the_largest_share() -> None:
    x = drifting()
    det = MultivariateDetector(["a", "b", "c"]).fit(x[:500])
    results = det.update_many(x[500:])
    scores = np.array([r.score for r in results])
    # Rows 500..999 are like the baseline: the score is about uniform, so its median is
    # near 0.5 and few steps reach 0.99.
    assert 0.3 < float(np.median(scores[:500])) < 0.7
    assert float(np.mean(scores[:500] > 0.99)) < 0.03
    # The last 100 rows: 'b' is 2.4 to 3 units (about 1 to 1.3 of its own sd, but 5-6 sd of
    # what 'a' predicts for it) away.
    assert scores[-100:].min() > 0.999
    for r in results[-100:]:
        assert max(r.contributions, key=r.contributions.__getitem__) == "b"
        assert sum(r.contributions.values()) == pytest.approx(1.0)
        assert r.contributions["c"] < 0.1  # unrelated to the drift: a small share


def test_an_independent_signal_drifting_takes_nearly_all_the_share() -> None:
    x = drifting()
    x[1000:, 1] -= np.linspace(0.0, 3.0, 500)  # undo b's drift
    x[1000:, 2] += np.linspace(0.0, 15.0, 500)  # 'c' drifts by 5 of its sd
    det = MultivariateDetector(["a", "b", "c"]).fit(x[:500])
    last = det.update_many(x[500:])[-1]
    assert last.contributions["c"] > 0.9


def test_state_round_trip() -> None:
    x = drifting()
    a = MultivariateDetector(["a", "b", "c"], smoothing=0.3).fit(x[:500])
    a.update_many(x[500:700])
    b = MultivariateDetector.from_dict(json.loads(json.dumps(a.to_dict())))
    ra, rb = a.update_many(x[700:720]), b.update_many(x[700:720])
    assert [r.score for r in ra] == [r.score for r in rb]
    assert ra[-1].contributions == rb[-1].contributions


def test_bad_input() -> None:
    with pytest.raises(BadInput, match="distinct"):
        MultivariateDetector(["a", "a"])
    with pytest.raises(BadInput, match="distinct"):
        MultivariateDetector([])
    with pytest.raises(BadInput, match="smoothing"):
        MultivariateDetector(["a"], smoothing=0.0)
    det = MultivariateDetector(["a", "b"])
    with pytest.raises(BadInput, match="not trained"):
        det.update([1.0, 2.0])
    with pytest.raises(BadInput, match="at least 4 rows"):
        det.fit(np.ones((3, 2)))
    with pytest.raises(BadInput, match="2 values per row"):
        det.fit(np.ones((10, 3)))
    det.fit(np.random.default_rng(0).normal(size=(50, 2)))
    with pytest.raises(BadInput, match="finite"):
        det.update([1.0, math.nan])
    with pytest.raises(BadInput, match="one time step"):
        det.update([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(BadInput, match="numbers"):
        det.update(["x", "y"])
    with pytest.raises(BadInput, match="version"):
        MultivariateDetector.from_dict({**det.to_dict(), "version": 2})
    with pytest.raises(BadInput, match="malformed"):
        MultivariateDetector.from_dict({**det.to_dict(), "precision": [[1.0]]})
