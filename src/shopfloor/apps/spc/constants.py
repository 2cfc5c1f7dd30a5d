"""Control-chart constants (d2, d3, c4, A2, A3, D3, D4, B3, B4, E2), computed rather than tabled.

The published tables (ASTM E2587, NIST/SEMATECH e-Handbook 6.3.2, Montgomery Appendix VI) are
roundings of a few integrals over the normal distribution. Computing them keeps every digit and
works for any subgroup size, not only the rows somebody typed:

- ``c4(n) = sqrt(2 / (n - 1)) * Gamma(n / 2) / Gamma((n - 1) / 2)``, the mean of the sample
  standard deviation of ``n`` standard normal values;
- ``d2(n) = E[W]`` and ``d3(n) = sd(W)`` for ``W`` the range of ``n`` standard normal values.
  ``W`` is the length of ``[min, max)``, so ``E[W] = ∫ P(min <= t < max) dt`` and
  ``E[W²] = 2 ∫∫_{s<t} P(min <= s, max > t) ds dt``, with
  ``P(min <= t < max) = 1 - Φ(t)^n - (1 - Φ(t))^n`` and
  ``P(min <= s, max > t) = 1 - (1 - Φ(s))^n - Φ(t)^n + (Φ(t) - Φ(s))^n``.

The chart factors follow from them (3-sigma limits): ``A2 = 3 / (d2 √n)``,
``A3 = 3 / (c4 √n)``, ``D3, D4 = 1 ∓ 3 d3 / d2`` (D3 clipped at 0),
``B3, B4 = 1 ∓ 3 √(1 - c4²) / c4`` (B3 clipped at 0) and ``E2 = 3 / d2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np
from scipy import integrate, special

from shopfloor.core.errors import BadInput

MIN_SUBGROUP: Final = 2
# Integration stays accurate far beyond this; the bound only catches nonsense sizes.
MAX_SUBGROUP: Final = 100
# Beyond ±12 the normal tails hold under 1e-32 of the mass: nothing left to integrate.
_BOUND: Final = 12.0
_NODES, _WEIGHTS = special.roots_legendre(256)


@dataclass(frozen=True)
class ChartConstants:
    """Every constant for one subgroup size ``n``."""

    n: int
    d2: float
    d3: float
    c4: float
    A2: float
    A3: float
    D3: float
    D4: float
    B3: float
    B4: float
    E2: float


def check_size(n: int, field: str = "subgroup_size") -> int:
    """Return ``n`` if the constants exist for it, else raise BadInput."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise BadInput(f"subgroup size must be an integer, got {n!r}", field)
    if not MIN_SUBGROUP <= n <= MAX_SUBGROUP:
        raise BadInput(
            f"subgroup size must be between {MIN_SUBGROUP} and {MAX_SUBGROUP}, got {n}", field
        )
    return n


def c4(n: int) -> float:
    """Mean of the sample standard deviation (ddof=1) of ``n`` standard normal values."""
    check_size(n)
    # gammaln keeps large n from overflowing Gamma itself.
    log_ratio = special.gammaln(n / 2) - special.gammaln((n - 1) / 2)
    return math.sqrt(2 / (n - 1)) * math.exp(float(log_ratio))


@cache
def d2(n: int) -> float:
    """Mean range of ``n`` standard normal values."""
    check_size(n)

    def covered(t: float) -> float:
        return float(1.0 - special.ndtr(t) ** n - special.ndtr(-t) ** n)

    value, _ = integrate.quad(covered, -_BOUND, _BOUND, epsabs=1e-12, epsrel=1e-12, limit=200)
    return float(value)


@cache
def d3(n: int) -> float:
    """Standard deviation of the range of ``n`` standard normal values."""
    check_size(n)
    # E[W²] = 2 ∫_{w>0} ∫_s P(min <= s, max > s + w) ds dw. The inner integrand is smooth, so
    # a fixed Gauss-Legendre rule over s, vectorised, is exact to ~1e-13 and keeps the adaptive
    # outer integral over w fast (milliseconds instead of seconds for a scalar dblquad).
    s = _NODES * _BOUND
    s_weights = _WEIGHTS * _BOUND
    cdf_s, sf_s = special.ndtr(s), special.ndtr(-s)

    def spans(w: float) -> float:
        cdf_t = special.ndtr(s + w)
        inside = 1.0 - sf_s**n - cdf_t**n + (cdf_t - cdf_s) ** n
        return float(np.dot(s_weights, inside))

    second_moment, _ = integrate.quad(
        spans, 0.0, 2.0 * _BOUND, epsabs=1e-12, epsrel=1e-12, limit=200
    )
    return math.sqrt(2.0 * second_moment - d2(n) ** 2)


@cache
def constants(n: int) -> ChartConstants:
    """All chart constants for subgroup size ``n`` (2 to 100)."""
    check_size(n)
    r_mean, r_sd, s_mean = d2(n), d3(n), c4(n)
    root_n = math.sqrt(n)
    s_spread = 3.0 * math.sqrt(1.0 - s_mean**2) / s_mean
    return ChartConstants(
        n=n,
        d2=r_mean,
        d3=r_sd,
        c4=s_mean,
        A2=3.0 / (r_mean * root_n),
        A3=3.0 / (s_mean * root_n),
        D3=max(0.0, 1.0 - 3.0 * r_sd / r_mean),
        D4=1.0 + 3.0 * r_sd / r_mean,
        B3=max(0.0, 1.0 - s_spread),
        B4=1.0 + s_spread,
        E2=3.0 / r_mean,
    )
