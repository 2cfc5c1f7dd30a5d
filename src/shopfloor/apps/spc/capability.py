"""Process capability: Cp, Cpk (within-subgroup sigma) and Pp, Ppk (overall sigma).

With ``μ`` the mean and ``σ`` a standard deviation (NIST/SEMATECH e-Handbook 6.1.6):

- ``Cp = (USL - LSL) / 6σ``, the spread the specification allows over the spread the process
  needs; ``Cpk = min(CPU, CPL)`` with ``CPU = (USL - μ) / 3σ`` and ``CPL = (μ - LSL) / 3σ``,
  which also charges for an off-centre mean.
- Cp and Cpk use the *within-subgroup* sigma, the short-term noise a control chart estimates:
  ``R̄/d2``, ``S̄/c4`` or, for individuals, ``MR̄/d2(2)``. Pp and Ppk use the same formulas
  with the *overall* sample standard deviation (ddof=1) of all values, so drift between
  subgroups lowers Pp/Ppk but not Cp/Cpk.

One-sided specifications (only USL or only LSL) have no Cp or Pp (None); Cpk and Ppk are then
the one side that exists. Indices are None too when the sigma they need is 0 (no variation at
all: the index is unbounded). The optional confidence interval for Cpk and Ppk is Bissell's
(1990) normal approximation ``k ± z sqrt(1/(9n) + k²/(2(n - 1)))`` (e-Handbook 6.1.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from shopfloor.apps.spc.charts import Numbers, Subgroups, as_subgroups, as_values
from shopfloor.apps.spc.constants import c4, check_size, d2
from shopfloor.core.errors import BadInput


@dataclass(frozen=True)
class Indices:
    """Capability indices for one sigma: ``ratio`` is Cp or Pp, ``k`` is Cpk or Ppk."""

    ratio: float | None
    k: float | None
    upper: float | None
    lower: float | None


@dataclass(frozen=True)
class Capability:
    """Capability of a process against its specification limits."""

    count: int
    mean: float
    sigma_within: float
    sigma_overall: float
    lsl: float | None
    usl: float | None
    cp: float | None
    cpk: float | None
    cpu: float | None
    cpl: float | None
    pp: float | None
    ppk: float | None
    ppu: float | None
    ppl: float | None
    confidence: float
    cpk_interval: tuple[float, float] | None
    ppk_interval: tuple[float, float] | None


def indices(
    mean: float, sigma: float, *, lsl: float | None = None, usl: float | None = None
) -> Indices:
    """Cp/Cpk (or Pp/Ppk) from a mean and a sigma; one of ``lsl``/``usl`` may be None."""
    _check_specs(lsl, usl)
    for name, value in (("mean", mean), ("sigma", sigma)):
        if not math.isfinite(value):
            raise BadInput(f"{name} must be finite, got {value!r}", name)
    if sigma < 0.0:
        raise BadInput(f"sigma must not be negative, got {sigma!r}", "sigma")
    if sigma == 0.0:
        return Indices(None, None, None, None)
    upper = None if usl is None else (usl - mean) / (3.0 * sigma)
    lower = None if lsl is None else (mean - lsl) / (3.0 * sigma)
    ratio = None if usl is None or lsl is None else (usl - lsl) / (6.0 * sigma)
    k = min(side for side in (upper, lower) if side is not None)
    return Indices(ratio, k, upper, lower)


def capability(
    values: Numbers,
    sigma_within: float,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    confidence: float = 0.95,
) -> Capability:
    """Capability of ``values`` given a within-subgroup sigma estimated elsewhere (a chart's)."""
    data = as_values(values, "values")
    if data.size < 2:
        raise BadInput(f"capability needs at least 2 values, got {data.size}", "values")
    if not 0.0 < confidence < 1.0:
        raise BadInput(f"confidence must lie between 0 and 1, got {confidence!r}", "confidence")
    mean = float(data.mean())
    overall = float(data.std(ddof=1))
    within = indices(mean, sigma_within, lsl=lsl, usl=usl)
    total = indices(mean, overall, lsl=lsl, usl=usl)
    return Capability(
        count=int(data.size),
        mean=mean,
        sigma_within=sigma_within,
        sigma_overall=overall,
        lsl=lsl,
        usl=usl,
        cp=within.ratio,
        cpk=within.k,
        cpu=within.upper,
        cpl=within.lower,
        pp=total.ratio,
        ppk=total.k,
        ppu=total.upper,
        ppl=total.lower,
        confidence=confidence,
        cpk_interval=k_interval(within.k, data.size, confidence),
        ppk_interval=k_interval(total.k, data.size, confidence),
    )


def capability_from_subgroups(
    subgroups: Subgroups,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    method: Literal["range", "stdev"] = "range",
    confidence: float = 0.95,
) -> Capability:
    """Capability from rational subgroups of equal size; within sigma R̄/d2 or S̄/c4."""
    groups = as_subgroups(subgroups)
    if not groups:
        raise BadInput("no subgroups given", "subgroups")
    n = check_size(groups[0].size, "subgroups")
    if any(group.size != n for group in groups):
        raise BadInput("subgroups must all have the same size", "subgroups")
    if method == "range":
        sigma = float(np.mean([g.max() - g.min() for g in groups])) / d2(n)
    elif method == "stdev":
        sigma = float(np.mean([g.std(ddof=1) for g in groups])) / c4(n)
    else:
        raise BadInput(f"method must be 'range' or 'stdev', got {method!r}", "method")
    return capability(np.concatenate(groups), sigma, lsl=lsl, usl=usl, confidence=confidence)


def capability_from_individuals(
    values: Numbers,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    confidence: float = 0.95,
) -> Capability:
    """Capability of individual values in time order; within sigma MR̄/d2 (span 2)."""
    data = as_values(values, "values")
    if data.size < 2:
        raise BadInput(f"capability needs at least 2 values, got {data.size}", "values")
    sigma = float(np.abs(np.diff(data)).mean()) / d2(2)
    return capability(data, sigma, lsl=lsl, usl=usl, confidence=confidence)


def k_interval(k: float | None, count: int, confidence: float) -> tuple[float, float] | None:
    """Bissell's approximate two-sided interval for Cpk or Ppk from ``count`` values."""
    if k is None or count < 2:
        return None
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    half = z * math.sqrt(1.0 / (9.0 * count) + k * k / (2.0 * (count - 1)))
    return (k - half, k + half)


def _check_specs(lsl: float | None, usl: float | None) -> None:
    if lsl is None and usl is None:
        raise BadInput("give at least one specification limit (lsl or usl)", "usl")
    for name, value in (("lsl", lsl), ("usl", usl)):
        if value is not None and not math.isfinite(value):
            raise BadInput(f"{name} must be finite, got {value!r}", name)
    if lsl is not None and usl is not None and lsl >= usl:
        raise BadInput(f"lsl ({lsl}) must be below usl ({usl})", "lsl")
