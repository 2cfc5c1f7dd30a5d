"""Several signals of one machine together: a MEWMA chart with per-signal contributions.

Training on a baseline (rows = time steps aligned across signals, columns = signals):

1. **Robust standardisation**: ``z = (x - median) / (1.4826 * MAD)`` per signal, so a few
   outliers in the baseline do not set the scale (a constant signal gets scale 1).
2. **Covariance** of ``z`` over the baseline with Ledoit-Wolf shrinkage (scikit-learn), so
   that strongly correlated or few-sample baselines still give an invertible matrix.

Streaming, per time step: ``w = lam * z + (1 - lam) * w`` (the multivariate EWMA of Lowry et
al., 1992; ``lam = 1`` scores every step on its own) and the statistic
``d2 = w' S^-1 w`` with ``S = lam / (2 - lam) * C`` (the steady-state covariance of ``w``).
Under the baseline ``d2`` is about chi-square with one degree of freedom per signal, so the
**score** is ``chi2.cdf(d2, k)`` in [0, 1]: 0.99 means "as unusual as 1 % of normal steps".

**Contributions** say which signals made a step unusual: for signal ``j`` the standardised
residual of ``w_j`` given all other signals (what the correlation with the others does not
explain), ``r_j = (S^-1 w)_j / sqrt((S^-1)_jj)``; each signal's contribution is its share
``r_j**2 / sum(r**2)`` (shares sum to 1). A signal that drifts away from what its
neighbours predict gets the largest share, even while its own value is still in range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2
from sklearn.covariance import LedoitWolf

from shopfloor.core.errors import BadInput

STATE_VERSION: Final = 1
MAD_TO_SIGMA: Final = 1.4826


@dataclass(frozen=True)
class MultivariateScore:
    """One time step's result."""

    score: float  # chi-square CDF of d2, in [0, 1]
    d2: float  # the MEWMA statistic
    contributions: dict[str, float]  # per-signal share, summing to 1


class MultivariateDetector:
    """Machine-level detector over the signals ``names`` (in that column order)."""

    def __init__(self, names: Sequence[str], smoothing: float = 0.2) -> None:
        if len(names) < 1 or len(set(names)) != len(names):
            raise BadInput("give one or more distinct signal names", "names")
        if not 0.0 < smoothing <= 1.0:
            raise BadInput("smoothing (the EWMA weight) must be in (0, 1]", "smoothing")
        self.names = list(names)
        self.smoothing = smoothing
        self.center: npt.NDArray[np.float64] | None = None
        self.scale: npt.NDArray[np.float64] | None = None
        self.precision: npt.NDArray[np.float64] | None = None  # inverse of S
        self.ewma = np.zeros(len(self.names))

    @property
    def fitted(self) -> bool:
        return self.precision is not None

    def fit(self, baseline: Any) -> MultivariateDetector:
        """Train on a (time steps x signals) baseline array; returns self."""
        x = self._rows(baseline, "baseline")
        k = len(self.names)
        if x.shape[0] < k + 2:
            raise BadInput(f"a baseline of {k} signals needs at least {k + 2} rows", "baseline")
        self.center = np.median(x, axis=0)
        mad = np.median(np.abs(x - self.center), axis=0) * MAD_TO_SIGMA
        # A signal constant over most of the baseline has MAD 0: fall back to its std, then 1.
        std = x.std(axis=0)
        self.scale = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
        z = (x - self.center) / self.scale
        cov = LedoitWolf().fit(z).covariance_
        lam = self.smoothing
        self.precision = np.linalg.pinv(cov * (lam / (2.0 - lam)))
        self.ewma = np.zeros(k)
        return self

    def update(self, values: Any) -> MultivariateScore:
        """Score one time step (one value per signal, in ``names`` order)."""
        if self.center is None or self.scale is None or self.precision is None:
            raise BadInput("the detector is not trained: call fit() first", "baseline")
        x = self._rows(values, "values")
        if x.shape[0] != 1:
            raise BadInput("update takes one time step; use update_many for more", "values")
        z = (x[0] - self.center) / self.scale
        lam = self.smoothing
        self.ewma = lam * z + (1.0 - lam) * self.ewma
        return self._score(self.ewma)

    def update_many(self, rows: Any) -> list[MultivariateScore]:
        x = self._rows(rows, "rows")
        return [self.update(r) for r in x]

    def _score(self, w: npt.NDArray[np.float64]) -> MultivariateScore:
        assert self.precision is not None
        pw = self.precision @ w
        d2 = max(float(w @ pw), 0.0)
        diag = np.diag(self.precision)
        resid2 = np.where(diag > 0, pw * pw / np.where(diag > 0, diag, 1.0), 0.0)
        total = float(resid2.sum())
        shares = resid2 / total if total > 0 else np.full(len(self.names), 1.0 / len(self.names))
        score = float(chi2.cdf(d2, len(self.names)))
        return MultivariateScore(
            score if math.isfinite(score) else 1.0,
            d2,
            {n: float(s) for n, s in zip(self.names, shares, strict=True)},
        )

    def _rows(self, values: Any, field: str) -> npt.NDArray[np.float64]:
        try:
            x = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise BadInput("values must be numbers", field) from None
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise BadInput(
                f"expected {len(self.names)} values per row ({', '.join(self.names)}), "
                f"got shape {x.shape}",
                field,
            )
        if not np.isfinite(x).all():
            raise BadInput("values must be finite numbers", field)
        return x

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state; :meth:`from_dict` continues exactly from it."""
        return {
            "version": STATE_VERSION,
            "names": list(self.names),
            "smoothing": self.smoothing,
            "center": None if self.center is None else self.center.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
            "precision": None if self.precision is None else self.precision.tolist(),
            "ewma": self.ewma.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> MultivariateDetector:
        if state.get("version") != STATE_VERSION:
            raise BadInput(f"unknown detector state version {state.get('version')!r}", "version")
        try:
            det = cls(list(state["names"]), float(state["smoothing"]))
            k = len(det.names)
            if state["precision"] is not None:
                det.center = np.asarray(state["center"], dtype=np.float64).reshape(k)
                det.scale = np.asarray(state["scale"], dtype=np.float64).reshape(k)
                det.precision = np.asarray(state["precision"], dtype=np.float64).reshape(k, k)
            det.ewma = np.asarray(state["ewma"], dtype=np.float64).reshape(k)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"detector state is incomplete or malformed: {exc!r}", "state") from None
        return det
