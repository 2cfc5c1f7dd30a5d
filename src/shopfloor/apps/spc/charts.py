"""Shewhart control charts: X-bar/R, X-bar/S, I-MR, p and u.

A chart is used in two phases. In phase I the limits are computed from a baseline period in
which the process was believed to be in control (``xbar_r_limits`` and friends). The resulting
``Limits`` are then frozen, stored (``Limits.to_dict`` / ``Limits.from_dict``) and applied, in
phase II, to new data (``evaluate_subgroups``, ``evaluate_individuals``, ``evaluate_counts``);
new data never moves the limits, otherwise a slow drift would drag them along with it.

Variables charts keep their process sigma estimate (``R̄/d2``, ``S̄/c4`` or ``MR̄/d2``): limits
for the plotted statistic are derived from it, so a phase II subgroup may have another size
than the baseline's (a missed sample) and still gets the right limits. At the baseline size
they equal the textbook ``x̿ ± A2 R̄``, ``D3 R̄ .. D4 R̄`` and so on exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from shopfloor.apps.spc.constants import c4, check_size, d2, d3
from shopfloor.core.errors import BadInput

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# Inputs: lists or numpy arrays of any numeric dtype (counts arrive as integers).
Numbers = Sequence[float] | npt.NDArray[Any]
Subgroups = Sequence[Sequence[float]] | npt.NDArray[Any]

SIGMA_MULTIPLIER: Final = 3.0
LIMITS_VERSION: Final = 1
MIN_BASELINE: Final = 2


class ChartKind(StrEnum):
    XBAR_R = "xbar_r"
    XBAR_S = "xbar_s"
    IMR = "imr"
    P = "p"
    U = "u"


VARIABLES_CHARTS: Final = frozenset({ChartKind.XBAR_R, ChartKind.XBAR_S})
ATTRIBUTES_CHARTS: Final = frozenset({ChartKind.P, ChartKind.U})


@dataclass(frozen=True)
class Limits:
    """Frozen control limits of one chart, computed from a baseline.

    ``center``/``lcl``/``ucl`` are the limits of the plotted statistic (subgroup mean,
    individual value, fraction nonconforming, defects per unit). ``dispersion_*`` are the R, S
    or moving-range chart's limits (None for p and u charts). ``sigma`` is the process sigma
    estimate of a variables chart (None for p and u). For p and u charts the limits depend on
    each sample's size: ``lcl``/``ucl`` here are those at ``mean_sample_size``, for display;
    evaluation computes each point's own.
    """

    kind: ChartKind
    center: float
    lcl: float
    ucl: float
    sigma: float | None
    subgroup_size: int | None
    mean_sample_size: float | None
    dispersion_center: float | None
    dispersion_lcl: float | None
    dispersion_ucl: float | None
    baseline_count: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``Limits.from_dict`` reads it back unchanged."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["version"] = LIMITS_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        """Read limits stored by ``to_dict``; raise BadInput when something is off."""
        if not isinstance(data, Mapping):
            raise BadInput("limits must be an object", "limits")
        if data.get("version", LIMITS_VERSION) != LIMITS_VERSION:
            raise BadInput(f"unsupported limits version {data.get('version')!r}", "version")
        try:
            kind = ChartKind(data["kind"])
        except (KeyError, ValueError):
            raise BadInput(f"unknown chart kind {data.get('kind')!r}", "kind") from None
        limits = cls(
            kind=kind,
            center=_number(data, "center"),
            lcl=_number(data, "lcl"),
            ucl=_number(data, "ucl"),
            sigma=_number(data, "sigma", optional=True),
            subgroup_size=_integer(data, "subgroup_size", optional=True),
            mean_sample_size=_number(data, "mean_sample_size", optional=True),
            dispersion_center=_number(data, "dispersion_center", optional=True),
            dispersion_lcl=_number(data, "dispersion_lcl", optional=True),
            dispersion_ucl=_number(data, "dispersion_ucl", optional=True),
            baseline_count=_integer(data, "baseline_count"),
        )
        _check_consistent(limits)
        return limits


@dataclass(frozen=True)
class ChartPoints:
    """New data evaluated against frozen limits; arrays hold one entry per point.

    ``sigma`` is the standard deviation of the plotted statistic at each point, which is what
    the run rules need (``run_rules.evaluate(points.values, points.center, points.sigma)``).
    ``beyond`` marks points outside ``lcl``/``ucl``; ``dispersion_beyond`` those outside the R,
    S or MR chart's limits. A moving range that cannot be formed (first point without a
    ``previous`` value) is NaN and never beyond.
    """

    kind: ChartKind
    values: FloatArray
    center: FloatArray
    lcl: FloatArray
    ucl: FloatArray
    sigma: FloatArray
    beyond: BoolArray
    dispersion: FloatArray | None = None
    dispersion_center: FloatArray | None = None
    dispersion_lcl: FloatArray | None = None
    dispersion_ucl: FloatArray | None = None
    dispersion_beyond: BoolArray | None = None


# ---------------------------------------------------------------- phase I: limits from baseline


def xbar_r_limits(subgroups: Subgroups) -> Limits:
    """X-bar and R chart limits from baseline subgroups of equal size (2 or more values each)."""
    groups = _baseline_subgroups(subgroups)
    n = groups.shape[1]
    ranges = groups.max(axis=1) - groups.min(axis=1)
    sigma = _nonzero_spread(float(ranges.mean()) / d2(n))
    return _variables_limits(ChartKind.XBAR_R, float(groups.mean()), sigma, n, len(groups))


def xbar_s_limits(subgroups: Subgroups) -> Limits:
    """X-bar and S chart limits from baseline subgroups of equal size (2 or more values each)."""
    groups = _baseline_subgroups(subgroups)
    n = groups.shape[1]
    deviations = groups.std(axis=1, ddof=1)
    sigma = _nonzero_spread(float(deviations.mean()) / c4(n))
    return _variables_limits(ChartKind.XBAR_S, float(groups.mean()), sigma, n, len(groups))


def imr_limits(values: Numbers) -> Limits:
    """Individuals and moving-range (span 2) chart limits from baseline values in time order."""
    data = as_values(values, "values")
    if data.size < MIN_BASELINE:
        raise BadInput(
            f"an I-MR baseline needs at least {MIN_BASELINE} values, got {data.size}", "values"
        )
    moving_ranges = np.abs(np.diff(data))
    sigma = _nonzero_spread(float(moving_ranges.mean()) / d2(2))
    return _variables_limits(ChartKind.IMR, float(data.mean()), sigma, 2, data.size)


def p_limits(nonconforming: Numbers, sample_sizes: Numbers) -> Limits:
    """p chart (fraction nonconforming) limits; sample sizes may differ from sample to sample."""
    counts, sizes = _counts_and_sizes(ChartKind.P, nonconforming, sample_sizes, baseline=True)
    p_bar = float(counts.sum() / sizes.sum())
    if p_bar in (0.0, 1.0):
        raise BadInput(
            f"baseline fraction nonconforming is {p_bar:g}: p chart limits would have zero width",
            "nonconforming",
        )
    return _attributes_limits(ChartKind.P, p_bar, sizes)


def u_limits(defects: Numbers, units: Numbers) -> Limits:
    """u chart (defects per unit) limits; the number of units may differ from sample to sample."""
    counts, sizes = _counts_and_sizes(ChartKind.U, defects, units, baseline=True)
    u_bar = float(counts.sum() / sizes.sum())
    if u_bar == 0.0:
        raise BadInput("baseline has no defects: u chart limits would have zero width", "defects")
    return _attributes_limits(ChartKind.U, u_bar, sizes)


# ---------------------------------------------------------------- phase II: evaluate new data


def evaluate_subgroups(limits: Limits, subgroups: Subgroups) -> ChartPoints:
    """Subgroup means and ranges (X-bar/R) or standard deviations (X-bar/S) against limits."""
    if limits.kind not in VARIABLES_CHARTS:
        raise BadInput(f"evaluate_subgroups needs X-bar limits, got {limits.kind}", "limits")
    sigma = _required(limits.sigma, "sigma")
    groups = as_subgroups(subgroups)
    sizes = [check_size(len(g), "subgroups") for g in groups]
    means = np.array([g.mean() for g in groups], dtype=np.float64)
    if limits.kind is ChartKind.XBAR_R:
        spread = np.array([g.max() - g.min() for g in groups], dtype=np.float64)
        mean_factor = np.array([d2(n) for n in sizes], dtype=np.float64)
        sd_factor = np.array([d3(n) for n in sizes], dtype=np.float64)
    else:
        spread = np.array([g.std(ddof=1) for g in groups], dtype=np.float64)
        mean_factor = np.array([c4(n) for n in sizes], dtype=np.float64)
        sd_factor = np.sqrt(1.0 - mean_factor**2)
    point_sigma = sigma / np.sqrt(np.array(sizes, dtype=np.float64))
    dispersion_center = mean_factor * sigma
    # Clipped at 0: a range or standard deviation cannot be negative (D3 = B3 = 0 for n <= 5).
    dispersion_lcl = np.maximum(0.0, dispersion_center - SIGMA_MULTIPLIER * sd_factor * sigma)
    dispersion_ucl = dispersion_center + SIGMA_MULTIPLIER * sd_factor * sigma
    return _points(
        limits.kind,
        means,
        np.full(means.shape, limits.center),
        point_sigma,
        lower_clip=None,
        upper_clip=None,
        dispersion=(spread, dispersion_center, dispersion_lcl, dispersion_ucl),
    )


def evaluate_individuals(
    limits: Limits, values: Numbers, previous: float | None = None
) -> ChartPoints:
    """Individual values and their moving ranges against I-MR limits.

    ``previous`` is the value just before ``values`` (the last one seen); without it the first
    point has no moving range.
    """
    if limits.kind is not ChartKind.IMR:
        raise BadInput(f"evaluate_individuals needs I-MR limits, got {limits.kind}", "limits")
    sigma = _required(limits.sigma, "sigma")
    data = as_values(values, "values")
    if previous is not None and not math.isfinite(previous):
        raise BadInput(f"previous value must be finite, got {previous!r}", "previous")
    before = np.array([np.nan if previous is None else previous], dtype=np.float64)
    moving = np.abs(np.diff(np.concatenate([before, data])))
    mr_center = d2(2) * sigma
    mr_ucl = mr_center + SIGMA_MULTIPLIER * d3(2) * sigma
    shape = data.shape
    return _points(
        ChartKind.IMR,
        data,
        np.full(shape, limits.center),
        np.full(shape, sigma),
        lower_clip=None,
        upper_clip=None,
        # 1 - 3 d3/d2 < 0 for a span of 2: the moving-range chart's LCL is 0.
        dispersion=(moving, np.full(shape, mr_center), np.zeros(shape), np.full(shape, mr_ucl)),
    )


def evaluate_counts(
    limits: Limits,
    counts: Numbers,
    sizes: Numbers,
) -> ChartPoints:
    """Nonconforming counts (p chart) or defect counts (u chart) with each sample's size."""
    if limits.kind not in ATTRIBUTES_CHARTS:
        raise BadInput(f"evaluate_counts needs p or u limits, got {limits.kind}", "limits")
    counts_arr, sizes_arr = _counts_and_sizes(limits.kind, counts, sizes, baseline=False)
    center = np.full(counts_arr.shape, limits.center)
    point_sigma = _attribute_sigma(limits.kind, limits.center, sizes_arr)
    return _points(
        limits.kind,
        counts_arr / sizes_arr,
        center,
        point_sigma,
        lower_clip=0.0,
        upper_clip=1.0 if limits.kind is ChartKind.P else None,
    )


# ---------------------------------------------------------------- helpers


def _variables_limits(kind: ChartKind, center: float, sigma: float, n: int, count: int) -> Limits:
    if kind is ChartKind.XBAR_S:
        mean_factor = c4(n)
        sd_factor = math.sqrt(1.0 - mean_factor**2)
    else:
        mean_factor, sd_factor = d2(n), d3(n)
    # An individuals chart plots single values: its sigma is the process sigma itself.
    point_sigma = sigma if kind is ChartKind.IMR else sigma / math.sqrt(n)
    dispersion_center = mean_factor * sigma
    return Limits(
        kind=kind,
        center=center,
        lcl=center - SIGMA_MULTIPLIER * point_sigma,
        ucl=center + SIGMA_MULTIPLIER * point_sigma,
        sigma=sigma,
        subgroup_size=None if kind is ChartKind.IMR else n,
        mean_sample_size=None,
        dispersion_center=dispersion_center,
        dispersion_lcl=max(0.0, dispersion_center - SIGMA_MULTIPLIER * sd_factor * sigma),
        dispersion_ucl=dispersion_center + SIGMA_MULTIPLIER * sd_factor * sigma,
        baseline_count=count,
    )


def _attributes_limits(kind: ChartKind, center: float, sizes: FloatArray) -> Limits:
    mean_size = float(sizes.mean())
    sigma = float(_attribute_sigma(kind, center, np.array([mean_size]))[0])
    ucl = center + SIGMA_MULTIPLIER * sigma
    return Limits(
        kind=kind,
        center=center,
        lcl=max(0.0, center - SIGMA_MULTIPLIER * sigma),
        ucl=min(1.0, ucl) if kind is ChartKind.P else ucl,
        sigma=None,
        subgroup_size=None,
        mean_sample_size=mean_size,
        dispersion_center=None,
        dispersion_lcl=None,
        dispersion_ucl=None,
        baseline_count=int(sizes.size),
    )


def _attribute_sigma(kind: ChartKind, center: float, sizes: FloatArray) -> FloatArray:
    # Binomial for p (fraction of n items), Poisson for u (count over n units).
    variance = center * (1.0 - center) if kind is ChartKind.P else center
    result: FloatArray = np.sqrt(variance / sizes)
    return result


def _points(
    kind: ChartKind,
    values: FloatArray,
    center: FloatArray,
    point_sigma: FloatArray,
    *,
    lower_clip: float | None,
    upper_clip: float | None,
    dispersion: tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None = None,
) -> ChartPoints:
    lcl = center - SIGMA_MULTIPLIER * point_sigma
    ucl = center + SIGMA_MULTIPLIER * point_sigma
    if lower_clip is not None:
        lcl = np.maximum(lower_clip, lcl)
    if upper_clip is not None:
        ucl = np.minimum(upper_clip, ucl)
    beyond = (values < lcl) | (values > ucl)
    if dispersion is None:
        return ChartPoints(kind, values, center, lcl, ucl, point_sigma, beyond)
    spread, d_center, d_lcl, d_ucl = dispersion
    # NaN (no moving range for the first point) compares False both ways: never beyond.
    d_beyond = (spread < d_lcl) | (spread > d_ucl)
    return ChartPoints(
        kind,
        values,
        center,
        lcl,
        ucl,
        point_sigma,
        beyond,
        spread,
        d_center,
        d_lcl,
        d_ucl,
        d_beyond,
    )


def as_values(values: Iterable[float] | npt.NDArray[Any], field: str) -> FloatArray:
    try:
        data = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInput(f"{field} must be numbers", field) from None
    if data.ndim != 1:
        raise BadInput(f"{field} must be a flat list of numbers, got {data.ndim} dimensions", field)
    if not np.all(np.isfinite(data)):
        bad = int(np.flatnonzero(~np.isfinite(data))[0])
        raise BadInput(f"{field}[{bad}] is not a finite number", field)
    return data


def as_subgroups(subgroups: Subgroups) -> list[FloatArray]:
    if isinstance(subgroups, np.ndarray):
        if subgroups.ndim != 2:
            raise BadInput("subgroups must be a 2-D array (one row per subgroup)", "subgroups")
        rows: Iterable[Any] = list(subgroups)
    else:
        rows = subgroups
    try:
        groups = [as_values(row, "subgroups") for row in rows]
    except TypeError:
        raise BadInput("subgroups must be a list of lists of numbers", "subgroups") from None
    for index, group in enumerate(groups):
        if group.size < 2:
            raise BadInput(
                f"subgroup {index} has {group.size} value(s); X-bar charts need at least 2 "
                "(use an I-MR chart for single values)",
                "subgroups",
            )
    return groups


def _baseline_subgroups(subgroups: Subgroups) -> FloatArray:
    groups = as_subgroups(subgroups)
    if len(groups) < MIN_BASELINE:
        raise BadInput(
            f"a baseline needs at least {MIN_BASELINE} subgroups, got {len(groups)}", "subgroups"
        )
    n = check_size(groups[0].size, "subgroups")
    for index, group in enumerate(groups):
        if group.size != n:
            raise BadInput(
                f"baseline subgroups must have equal sizes: subgroup 0 has {n} values, "
                f"subgroup {index} has {group.size}",
                "subgroups",
            )
    return np.vstack(groups)


def _counts_and_sizes(
    kind: ChartKind,
    counts: Numbers,
    sizes: Numbers,
    *,
    baseline: bool,
) -> tuple[FloatArray, FloatArray]:
    count_field, size_field = (
        ("nonconforming", "sample_sizes")
        if kind is ChartKind.P
        else (
            "defects",
            "units",
        )
    )
    counts_arr = as_values(counts, count_field)
    sizes_arr = as_values(sizes, size_field)
    if counts_arr.shape != sizes_arr.shape:
        raise BadInput(
            f"{count_field} and {size_field} differ in length "
            f"({counts_arr.size} and {sizes_arr.size})",
            size_field,
        )
    if baseline and counts_arr.size < MIN_BASELINE:
        raise BadInput(
            f"a baseline needs at least {MIN_BASELINE} samples, got {counts_arr.size}", count_field
        )
    _first_bad(counts_arr < 0, count_field, "is negative")
    _first_bad(counts_arr != np.round(counts_arr), count_field, "is not a whole count")
    _first_bad(sizes_arr <= 0, size_field, "must be positive (no defects without units)")
    if kind is ChartKind.P:
        _first_bad(sizes_arr != np.round(sizes_arr), size_field, "is not a whole number of items")
        _first_bad(counts_arr > sizes_arr, count_field, "exceeds its sample size")
    return counts_arr, sizes_arr


def _first_bad(mask: BoolArray, field: str, what: str) -> None:
    if mask.any():
        index = int(np.flatnonzero(mask)[0])
        raise BadInput(f"{field}[{index}] {what}", field)


def _nonzero_spread(sigma: float) -> float:
    if sigma <= 0.0:
        raise BadInput(
            "the baseline shows no variation at all: control limits would have zero width",
            "values",
        )
    return sigma


def _required(value: float | None, field: str) -> float:
    if value is None:
        raise BadInput(f"limits lack {field}", field)
    return value


def _number(data: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{key} must be a finite number, got {value!r}", key)
    return float(value)


def _integer(data: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{key} must be a positive integer, got {value!r}", key)
    return value


def _check_consistent(limits: Limits) -> None:
    if not limits.lcl <= limits.center <= limits.ucl:
        raise BadInput("limits must satisfy lcl <= center <= ucl", "lcl")
    if limits.kind in ATTRIBUTES_CHARTS:
        if limits.center <= 0.0 or (limits.kind is ChartKind.P and limits.center >= 1.0):
            raise BadInput(
                f"center {limits.center} is impossible for a {limits.kind} chart", "center"
            )
        return
    if limits.sigma is None or limits.sigma <= 0.0:
        raise BadInput("variables chart limits need a positive sigma", "sigma")
    if limits.kind in VARIABLES_CHARTS:
        check_size(_required_int(limits.subgroup_size), "subgroup_size")
    if limits.dispersion_center is None or limits.dispersion_ucl is None:
        raise BadInput("variables chart limits need dispersion limits", "dispersion_center")


def _required_int(value: int | None) -> int:
    if value is None:
        raise BadInput("X-bar limits need subgroup_size", "subgroup_size")
    return value
