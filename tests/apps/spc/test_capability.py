"""Capability indices against the e-Handbook's example and by-hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopfloor.apps.spc.capability import (
    capability,
    capability_from_individuals,
    capability_from_subgroups,
    indices,
    k_interval,
)
from shopfloor.core.errors import BadInput

from .test_charts import BASELINE


def test_nist_handbook_example() -> None:
    # e-Handbook 6.1.6: USL = 20, LSL = 8, mean 16, sigma 2.
    # Cp = (20 - 8)/(6·2) = 1.0; CPU = (20 - 16)/(3·2) = 0.667; CPL = (16 - 8)/(3·2) = 1.333;
    # Cpk = min = 0.667.
    got = indices(16.0, 2.0, lsl=8.0, usl=20.0)
    assert got.ratio == pytest.approx(1.0)
    assert got.upper == pytest.approx(2 / 3)
    assert got.lower == pytest.approx(4 / 3)
    assert got.k == pytest.approx(2 / 3)
    assert got.k is not None
    assert round(got.k, 3) == 0.667


def test_one_sided_specifications() -> None:
    # Only USL: no Cp, Cpk = CPU = 0.667. Only LSL: Cpk = CPL = 1.333.
    upper_only = indices(16.0, 2.0, usl=20.0)
    assert upper_only.ratio is None
    assert upper_only.lower is None
    assert upper_only.k == pytest.approx(2 / 3)
    lower_only = indices(16.0, 2.0, lsl=8.0)
    assert lower_only.ratio is None
    assert lower_only.upper is None
    assert lower_only.k == pytest.approx(4 / 3)


def test_mean_outside_the_specification_gives_negative_cpk() -> None:
    # Mean 22 above USL 20: CPU = (20 - 22)/6 = -0.333.
    assert indices(22.0, 2.0, lsl=8.0, usl=20.0).k == pytest.approx(-1 / 3)


def test_no_variation_leaves_indices_undefined() -> None:
    got = indices(16.0, 0.0, lsl=8.0, usl=20.0)
    assert (got.ratio, got.k, got.upper, got.lower) == (None, None, None, None)


def test_individuals_by_hand() -> None:
    # 1, 2, 3, 4, 5 with LSL 0, USL 6: mean 3; sample variance 10/4 -> s = 1.5811.
    # Pp = 6/(6·1.5811) = 0.63246 = Ppk (centred). Moving ranges all 1 -> within sigma
    # 1/d2(2) = √π/2 = 0.88623, Cp = 6/(6·0.88623) = 2/√π = 1.12838 = Cpk.
    got = capability_from_individuals([1, 2, 3, 4, 5], lsl=0.0, usl=6.0)
    assert got.count == 5
    assert got.mean == pytest.approx(3.0)
    assert got.sigma_overall == pytest.approx(math.sqrt(2.5))
    assert got.pp == pytest.approx(1 / math.sqrt(2.5))
    assert got.ppk == pytest.approx(1 / math.sqrt(2.5))
    assert got.sigma_within == pytest.approx(math.sqrt(math.pi) / 2)
    assert got.cp == pytest.approx(2 / math.sqrt(math.pi))
    assert got.cpk == pytest.approx(2 / math.sqrt(math.pi))


def test_subgroups_by_hand_range_and_stdev() -> None:
    # {1, 3} and {5, 7}: ranges 2 -> sigma R̄/d2(2) = 2/(2/√π) = √π; s = √2 each ->
    # S̄/c4(2) = √2/√(2/π) = √π too. Overall: mean 4, variance (9+1+1+9)/3 -> s = 2.58199.
    # LSL -2, USL 10: Cp = 12/(6√π) = 1.12838, Pp = 12/(6·2.58199) = 0.77460.
    for method in ("range", "stdev"):
        got = capability_from_subgroups([[1, 3], [5, 7]], lsl=-2.0, usl=10.0, method=method)
        assert got.sigma_within == pytest.approx(math.sqrt(math.pi))
        assert got.cp == pytest.approx(2 / math.sqrt(math.pi))
        assert got.sigma_overall == pytest.approx(math.sqrt(20 / 3))
        assert got.pp == pytest.approx(12 / (6 * math.sqrt(20 / 3)))
        # Drift between subgroups lowers Pp, not Cp.
        assert got.pp is not None
        assert got.cp is not None
        assert got.pp < got.cp


def test_piston_rings_capability_matches_montgomery() -> None:
    # Montgomery Example 6.1: USL 74.05, LSL 73.95, sigma = R̄/d2 = 0.0099 ->
    # Cp = 0.10/(6·0.0099) = 1.68. With the unrounded R̄ of this data (0.02276, sigma 0.00979)
    # Cp = 0.10/0.05871 = 1.70: the published figure carries the rounding of R̄.
    got = capability_from_subgroups(BASELINE, lsl=73.95, usl=74.05)
    assert got.cp == pytest.approx(1.68, abs=0.03)
    assert got.cp == pytest.approx(0.10 / (6 * got.sigma_within))
    assert got.count == 125


def test_bissell_interval_by_hand() -> None:
    # Cpk 1.0 from 50 values at 95 %: z = 1.959964;
    # √(1/(9·50) + 1²/(2·49)) = √(0.0022222 + 0.0102041) = √0.0124263 = 0.1114733
    # half width 1.959964·0.1114733 = 0.2184837 -> 0.7815163 .. 1.2184837.
    low, high = k_interval(1.0, 50, 0.95) or (0.0, 0.0)
    assert low == pytest.approx(0.7815163, abs=1e-6)
    assert high == pytest.approx(1.2184837, abs=1e-6)
    assert k_interval(None, 50, 0.95) is None


def test_interval_brackets_cpk_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(5)
    small = capability(rng.normal(10, 1, 30), 1.0, lsl=6.0, usl=14.0)
    large = capability(rng.normal(10, 1, 3000), 1.0, lsl=6.0, usl=14.0)
    for got in (small, large):
        assert got.cpk_interval is not None
        assert got.cpk is not None
        assert got.cpk_interval[0] < got.cpk < got.cpk_interval[1]
    assert small.cpk_interval is not None
    assert large.cpk_interval is not None
    width = [ci[1] - ci[0] for ci in (small.cpk_interval, large.cpk_interval)]
    assert width[1] < width[0] / 5


def test_one_sided_capability_has_no_cp_or_pp() -> None:
    got = capability_from_individuals([1, 2, 3, 4, 5], usl=6.0)
    assert got.cp is None
    assert got.pp is None
    assert got.cpl is None
    # CPU = (6 - 3)/(3·√π/2) = 2/√π.
    assert got.cpk == pytest.approx(2 / math.sqrt(math.pi))
    assert got.ppk_interval is not None


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: indices(16.0, 2.0), "usl"),
        (lambda: indices(16.0, 2.0, lsl=20.0, usl=8.0), "lsl"),
        (lambda: indices(16.0, 2.0, lsl=8.0, usl=8.0), "lsl"),
        (lambda: indices(16.0, -1.0, usl=20.0), "sigma"),
        (lambda: indices(float("nan"), 1.0, usl=20.0), "mean"),
        (lambda: indices(16.0, 1.0, usl=float("inf")), "usl"),
        (lambda: capability([1.0], 1.0, usl=2.0), "values"),
        (lambda: capability([1.0, 2.0], 1.0, usl=2.0, confidence=1.5), "confidence"),
        (lambda: capability_from_individuals([1.0], usl=2.0), "values"),
        (lambda: capability_from_subgroups([], usl=2.0), "subgroups"),
        (lambda: capability_from_subgroups([[1, 2], [1, 2, 3]], usl=9.0), "subgroups"),
        (lambda: capability_from_subgroups([[1, 2], [3]], usl=9.0), "subgroups"),
        (lambda: capability_from_subgroups([[1, 2]], usl=9.0, method="mad"), "method"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_rejected(call: object, field: str) -> None:
    with pytest.raises(BadInput) as caught:
        call()  # type: ignore[operator]
    assert caught.value.field == field
