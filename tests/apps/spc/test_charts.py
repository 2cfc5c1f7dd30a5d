"""Control charts against Montgomery's worked examples and limits computed by hand."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from shopfloor.apps.spc.charts import (
    ChartKind,
    Limits,
    evaluate_counts,
    evaluate_individuals,
    evaluate_subgroups,
    imr_limits,
    p_limits,
    u_limits,
    xbar_r_limits,
    xbar_s_limits,
)
from shopfloor.apps.spc.run_rules import NELSON, WESTERN_ELECTRIC, RuleEvaluator, find_violations
from shopfloor.core.errors import BadInput

# Inside diameters (mm) of automobile engine piston rings, 40 samples of 5: Montgomery,
# "Introduction to Statistical Quality Control", Tables 6.3 and 6.4, as shipped in R's qcc
# package (data set `pistonrings`). Samples 1-25 are the phase I baseline.
PISTON_RINGS = np.array(
    [
        [74.030, 74.002, 74.019, 73.992, 74.008],
        [73.995, 73.992, 74.001, 74.011, 74.004],
        [73.988, 74.024, 74.021, 74.005, 74.002],
        [74.002, 73.996, 73.993, 74.015, 74.009],
        [73.992, 74.007, 74.015, 73.989, 74.014],
        [74.009, 73.994, 73.997, 73.985, 73.993],
        [73.995, 74.006, 73.994, 74.000, 74.005],
        [73.985, 74.003, 73.993, 74.015, 73.988],
        [74.008, 73.995, 74.009, 74.005, 74.004],
        [73.998, 74.000, 73.990, 74.007, 73.995],
        [73.994, 73.998, 73.994, 73.995, 73.990],
        [74.004, 74.000, 74.007, 74.000, 73.996],
        [73.983, 74.002, 73.998, 73.997, 74.012],
        [74.006, 73.967, 73.994, 74.000, 73.984],
        [74.012, 74.014, 73.998, 73.999, 74.007],
        [74.000, 73.984, 74.005, 73.998, 73.996],
        [73.994, 74.012, 73.986, 74.005, 74.007],
        [74.006, 74.010, 74.018, 74.003, 74.000],
        [73.984, 74.002, 74.003, 74.005, 73.997],
        [74.000, 74.010, 74.013, 74.020, 74.003],
        [73.988, 74.001, 74.009, 74.005, 73.996],
        [74.004, 73.999, 73.990, 74.006, 74.009],
        [74.010, 73.989, 73.990, 74.009, 74.014],
        [74.015, 74.008, 73.993, 74.000, 74.010],
        [73.982, 73.984, 73.995, 74.017, 74.013],
        [74.012, 74.015, 74.030, 73.986, 74.000],
        [73.995, 74.010, 73.990, 74.015, 74.001],
        [73.987, 73.999, 73.985, 74.000, 73.990],
        [74.008, 74.010, 74.003, 73.991, 74.006],
        [74.003, 74.000, 74.001, 73.986, 73.997],
        [73.994, 74.003, 74.015, 74.020, 74.004],
        [74.008, 74.002, 74.018, 73.995, 74.005],
        [74.001, 74.004, 73.990, 73.996, 73.998],
        [74.015, 74.000, 74.016, 74.025, 74.000],
        [74.030, 74.005, 74.000, 74.016, 74.012],
        [74.001, 73.990, 73.995, 74.010, 74.024],
        [74.015, 74.020, 74.024, 74.005, 74.019],
        [74.035, 74.010, 74.012, 74.015, 74.026],
        [74.017, 74.013, 74.036, 74.025, 74.026],
        [74.010, 74.005, 74.029, 74.000, 74.020],
    ]
)
BASELINE, NEW = PISTON_RINGS[:25], PISTON_RINGS[25:]

# Orange-juice cans, 30 samples of 50 cans, nonconforming cans per sample: Montgomery,
# Example 7.1 (Table 7.1). 347 nonconforming of 1500 cans.
JUICE = [12, 15, 8, 10, 4, 7, 16, 9, 14, 10, 5, 6, 17, 12, 22, 8, 10, 5, 13, 11, 20, 18, 24, 15]
JUICE += [9, 12, 7, 13, 9, 6]

# Nonconformities found on personal computers, 20 samples of 5 computers: Montgomery,
# Example 7.8 (u chart), 193 nonconformities in 100 computers.
COMPUTERS = [10, 12, 8, 14, 10, 16, 11, 7, 10, 15, 9, 5, 7, 11, 12, 6, 8, 10, 7, 5]

SQRT_PI = math.sqrt(math.pi)


# ---------------------------------------------------------------- X-bar/R and X-bar/S


def test_xbar_r_piston_rings_matches_montgomery_example() -> None:
    # Montgomery Example 6.1: x̿ = 74.001, R̄ = 0.023, X-bar limits 74.001 ± A2·R̄ =
    # 74.001 ± 0.577·0.023 = 73.988 .. 74.014; R chart D3·R̄ = 0 .. D4·R̄ = 2.114·0.023 = 0.049.
    # The published figures are 3-decimal roundings of rounded intermediates: 1e-3 slack.
    limits = xbar_r_limits(BASELINE)
    assert limits.kind is ChartKind.XBAR_R
    assert limits.center == pytest.approx(74.001, abs=1e-3)
    assert limits.dispersion_center == pytest.approx(0.023, abs=5e-4)
    assert limits.lcl == pytest.approx(73.988, abs=1e-3)
    assert limits.ucl == pytest.approx(74.014, abs=1e-3)
    assert limits.dispersion_lcl == 0.0
    assert limits.dispersion_ucl == pytest.approx(0.049, abs=1e-3)
    assert limits.subgroup_size == 5
    assert limits.baseline_count == 25
    # Montgomery: sigma = R̄/d2 = 0.023/2.326 = 0.0099, from the rounded R̄; unrounded, the
    # ranges of this copy of the data sum to 0.569 (R̄ = 0.02276, sigma = 0.00979).
    assert limits.sigma == pytest.approx(0.0099, abs=2e-4)
    ranges = [max(row) - min(row) for row in BASELINE.tolist()]
    assert limits.dispersion_center == pytest.approx(sum(ranges) / 25)
    assert limits.sigma == pytest.approx(sum(ranges) / 25 / 2.32593, rel=1e-5)


def test_xbar_r_phase_two_flags_samples_37_to_39() -> None:
    # The means of samples 37, 38, 39 are 370.083/5 = 74.0166, 370.098/5 = 74.0196 and
    # 370.117/5 = 74.0234, above the UCL of about 74.0145; sample 40 (370.064/5 = 74.0128)
    # and sample 35 (370.063/5 = 74.0126) are just inside. Montgomery reads the same from
    # his Figure 6.5: the process has shifted near sample 37.
    points = evaluate_subgroups(xbar_r_limits(BASELINE), NEW)
    assert np.flatnonzero(points.beyond).tolist() == [11, 12, 13]  # samples 37-39
    assert points.values[11] == pytest.approx(74.0166)
    assert points.values[13] == pytest.approx(74.0234)
    assert points.dispersion is not None
    assert points.dispersion[0] == pytest.approx(74.030 - 73.986)  # range of sample 26
    assert points.dispersion_beyond is not None
    assert not points.dispersion_beyond.any()


def test_xbar_s_piston_rings_matches_montgomery_example() -> None:
    # Montgomery Example 6.3: s̄ = 0.0094, X-bar limits 74.001 ± A3·s̄ = 74.001 ± 1.427·0.0094
    # = 73.988 .. 74.014, S chart 0 .. B4·s̄ = 2.089·0.0094 = 0.0196.
    limits = xbar_s_limits(BASELINE)
    assert limits.kind is ChartKind.XBAR_S
    assert limits.center == pytest.approx(74.001, abs=1e-3)
    assert limits.dispersion_center == pytest.approx(0.0094, abs=2e-4)
    assert limits.lcl == pytest.approx(73.988, abs=1e-3)
    assert limits.ucl == pytest.approx(74.014, abs=1e-3)
    assert limits.dispersion_lcl == 0.0
    assert limits.dispersion_ucl == pytest.approx(0.0196, abs=5e-4)
    # s̄ from the definition, subgroup by subgroup.
    s_bar = sum(statistics.stdev(row) for row in BASELINE.tolist()) / 25
    assert limits.dispersion_center == pytest.approx(s_bar)


def test_xbar_r_by_hand() -> None:
    # Subgroups {1,2,3}, {2,3,4}, {3,4,5}: means 2, 3, 4 -> x̿ = 3; every range 2 -> R̄ = 2.
    # d2(3) = 3/√π, so sigma = 2√π/3 and the X-bar limits are 3 ± 3·sigma/√3 = 3 ± 2√π/√3.
    # R chart: center R̄ = 2, UCL = (d2 + 3·d3)·sigma; LCL clipped to 0 (D3 = 0 for n = 3).
    limits = xbar_r_limits([[1, 2, 3], [2, 3, 4], [3, 4, 5]])
    half_width = 2 * SQRT_PI / math.sqrt(3)  # = 2·A2 = 2·1.02333
    assert limits.center == pytest.approx(3.0)
    assert limits.sigma == pytest.approx(2 * SQRT_PI / 3)
    assert limits.ucl == pytest.approx(3.0 + half_width)
    assert limits.lcl == pytest.approx(3.0 - half_width)
    assert limits.dispersion_center == pytest.approx(2.0)
    assert limits.dispersion_ucl == pytest.approx(2.0 * 2.5746, abs=1e-3)  # D4(3)·R̄
    assert limits.dispersion_lcl == 0.0


def test_xbar_s_by_hand() -> None:
    # Subgroups {1,3} and {3,5}: means 2, 4 -> x̿ = 3; each s = √2 -> s̄ = √2; c4(2) = √(2/π)
    # so sigma = √2/√(2/π) = √π and the limits are 3 ± 3·√π/√2.
    limits = xbar_s_limits(np.array([[1.0, 3.0], [3.0, 5.0]]))
    assert limits.sigma == pytest.approx(SQRT_PI)
    assert limits.ucl == pytest.approx(3.0 + 3.0 * SQRT_PI / math.sqrt(2))
    assert limits.dispersion_center == pytest.approx(math.sqrt(2))


def test_phase_two_subgroup_of_another_size_gets_its_own_limits() -> None:
    # Limits from n = 3 (sigma = 2√π/3) applied to a pair: 3 ± 3·sigma/√2.
    limits = xbar_r_limits([[1, 2, 3], [2, 3, 4], [3, 4, 5]])
    points = evaluate_subgroups(limits, [[3.0, 3.0], [2.0, 3.0, 4.0]])
    sigma = 2 * SQRT_PI / 3
    assert points.ucl[0] == pytest.approx(3.0 + 3.0 * sigma / math.sqrt(2))
    assert points.ucl[1] == pytest.approx(limits.ucl)
    assert points.sigma[1] == pytest.approx(sigma / math.sqrt(3))
    # A pair's mean range is d2(2)·sigma = (2/√π)·(2√π/3) = 4/3.
    assert points.dispersion_center is not None
    assert points.dispersion_center[0] == pytest.approx(4 / 3)


# ---------------------------------------------------------------- I-MR


def test_imr_by_hand() -> None:
    # Values 2,4,6,4,2,4,6,4: mean 32/8 = 4; all seven moving ranges are 2 -> MR̄ = 2;
    # sigma = MR̄/d2(2) = 2/(2/√π) = √π = 1.7725; limits 4 ± 3√π = -1.317 .. 9.317.
    # MR chart: UCL = D4(2)·MR̄ = (1 + 3·d3/d2)·2, d3/d2 = √(2 - 4/π)/(2/√π) = 0.75551.
    limits = imr_limits([2, 4, 6, 4, 2, 4, 6, 4])
    assert limits.kind is ChartKind.IMR
    assert limits.center == pytest.approx(4.0)
    assert limits.sigma == pytest.approx(SQRT_PI)
    assert limits.ucl == pytest.approx(4.0 + 3.0 * SQRT_PI)
    assert limits.lcl == pytest.approx(4.0 - 3.0 * SQRT_PI)
    assert limits.dispersion_center == pytest.approx(2.0)
    assert limits.dispersion_ucl == pytest.approx(2.0 * (1 + 3 * 0.755509), abs=1e-5)
    assert limits.dispersion_lcl == 0.0
    assert limits.subgroup_size is None


def test_imr_phase_two_uses_the_previous_value_for_the_first_moving_range() -> None:
    limits = imr_limits([2, 4, 6, 4, 2, 4, 6, 4])
    # previous 4 -> moving ranges |4-4| = 0 and |14-4| = 10; 14 > 9.317 and 10 > 6.533.
    points = evaluate_individuals(limits, [4.0, 14.0], previous=4.0)
    assert points.beyond.tolist() == [False, True]
    assert points.dispersion is not None
    assert points.dispersion.tolist() == [0.0, 10.0]
    assert points.dispersion_beyond is not None
    assert points.dispersion_beyond.tolist() == [False, True]
    assert points.sigma.tolist() == pytest.approx([SQRT_PI, SQRT_PI])
    # Without a previous value the first moving range does not exist.
    alone = evaluate_individuals(limits, [4.0, 5.0])
    assert alone.dispersion is not None
    assert math.isnan(alone.dispersion[0])
    assert alone.dispersion[1] == 1.0
    assert alone.dispersion_beyond is not None
    assert not alone.dispersion_beyond[0]


def test_point_on_a_limit_is_not_beyond() -> None:
    limits = imr_limits([2, 4, 6, 4, 2, 4, 6, 4])
    points = evaluate_individuals(limits, [limits.ucl, limits.lcl, np.nextafter(limits.ucl, 99)])
    assert points.beyond.tolist() == [False, False, True]


# ---------------------------------------------------------------- p and u


def test_p_chart_orange_juice_matches_montgomery_example() -> None:
    # Montgomery Example 7.1: p̄ = 347/1500 = 0.2313; limits 0.2313 ± 3·√(0.2313·0.7687/50)
    # = 0.2313 ± 3·0.0596 = 0.0524 .. 0.4102; samples 15 (22/50 = 0.44) and 23 (24/50 = 0.48)
    # plot above the UCL.
    assert sum(JUICE) == 347
    limits = p_limits(JUICE, [50] * 30)
    assert limits.kind is ChartKind.P
    assert limits.center == pytest.approx(347 / 1500)
    assert limits.ucl == pytest.approx(0.4102, abs=1e-4)
    assert limits.lcl == pytest.approx(0.0524, abs=1e-4)
    assert limits.mean_sample_size == 50.0
    points = evaluate_counts(limits, JUICE, [50] * 30)
    assert (np.flatnonzero(points.beyond) + 1).tolist() == [15, 23]
    assert points.values[14] == pytest.approx(0.44)


def test_p_chart_variable_sample_sizes_by_hand() -> None:
    # 5 of 50 and 10 of 150: p̄ = 15/200 = 0.075, p̄(1-p̄) = 0.069375.
    # n = 50: sigma = √(0.069375/50) = 0.0372492 -> UCL 0.075 + 0.1117475 = 0.1867475,
    #         LCL 0.075 - 0.1117475 < 0 -> clipped to 0.
    # n = 150: sigma = √(0.069375/150) = 0.0215058, 3·sigma = 0.0645174 -> 0.0104826 .. 0.1395174.
    limits = p_limits([5, 10], [50, 150])
    assert limits.center == pytest.approx(0.075)
    points = evaluate_counts(limits, [5, 10], [50, 150])
    assert points.ucl.tolist() == pytest.approx([0.1867475, 0.1395174], abs=1e-7)
    assert points.lcl.tolist() == pytest.approx([0.0, 0.0104826], abs=1e-7)
    assert points.sigma.tolist() == pytest.approx([0.0372492, 0.0215058], abs=1e-7)
    assert points.values.tolist() == pytest.approx([0.1, 10 / 150])


def test_p_chart_ucl_is_clipped_at_one() -> None:
    # p̄ = 7/10 = 0.7; one item: 0.7 + 3·√0.21 = 2.07 -> 1.
    limits = p_limits([4, 3], [5, 5])
    assert evaluate_counts(limits, [1], [1]).ucl.tolist() == [1.0]


def test_u_chart_computers_matches_montgomery_example() -> None:
    # Montgomery Example 7.8: ū = 193/100 = 1.93; limits 1.93 ± 3·√(1.93/5) = 1.93 ± 1.864
    # = 0.07 .. 3.79; no sample is beyond (the largest is 16/5 = 3.2).
    assert sum(COMPUTERS) == 193
    limits = u_limits(COMPUTERS, [5] * 20)
    assert limits.kind is ChartKind.U
    assert limits.center == pytest.approx(1.93)
    assert limits.ucl == pytest.approx(3.79, abs=5e-3)
    assert limits.lcl == pytest.approx(0.07, abs=5e-3)
    assert not evaluate_counts(limits, COMPUTERS, [5] * 20).beyond.any()


def test_u_chart_variable_units_by_hand() -> None:
    # 3 defects on 2 units and 9 on 4: ū = 12/6 = 2.
    # 1 unit:  sigma √2 = 1.41421 -> 2 - 4.24264 < 0 -> 0 .. 6.24264
    # 8 units: sigma √(2/8) = 0.5 -> 0.5 .. 3.5; 30 defects on 8 units = 3.75 > 3.5.
    limits = u_limits([3, 9], [2, 4])
    assert limits.center == pytest.approx(2.0)
    points = evaluate_counts(limits, [3, 30], [1, 8])
    assert points.ucl.tolist() == pytest.approx([2 + 3 * math.sqrt(2), 3.5])
    assert points.lcl.tolist() == pytest.approx([0.0, 0.5])
    assert points.beyond.tolist() == [False, True]
    # Fractional units (defects per square metre of 2.5 m² panels) are fine for a u chart.
    assert u_limits([1, 2], [2.5, 2.5]).center == pytest.approx(3 / 5)


# ---------------------------------------------------------------- freezing limits


@pytest.mark.parametrize(
    "limits",
    [
        xbar_r_limits(BASELINE),
        xbar_s_limits(BASELINE),
        imr_limits([2, 4, 6, 4, 2, 4, 6, 4]),
        p_limits(JUICE, [50] * 30),
        u_limits(COMPUTERS, [5] * 20),
    ],
    ids=lambda limits: limits.kind.value,
)
def test_limits_survive_a_json_round_trip(limits: Limits) -> None:
    stored = json.dumps(limits.to_dict())
    loaded = Limits.from_dict(json.loads(stored))
    assert loaded == limits
    assert json.loads(stored)["kind"] == limits.kind.value


def test_frozen_limits_do_not_move_with_new_data() -> None:
    limits = xbar_r_limits(BASELINE)
    loaded = Limits.from_dict(limits.to_dict())
    shifted = NEW + 1.0  # a gross shift: every point is beyond, the limits stay put
    points = evaluate_subgroups(loaded, shifted)
    assert points.beyond.all()
    assert points.ucl.tolist() == pytest.approx([limits.ucl] * len(NEW))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "cusum"}, "kind"),
        ({"center": "74"}, "center"),
        ({"center": float("nan")}, "center"),
        ({"sigma": None}, "sigma"),
        ({"subgroup_size": 1}, "subgroup_size"),
        ({"baseline_count": 0}, "baseline_count"),
        ({"lcl": 75.0}, "lcl"),
        ({"version": 99}, "version"),
    ],
)
def test_malformed_stored_limits_are_rejected(change: dict[str, object], field: str) -> None:
    data = {**xbar_r_limits(BASELINE).to_dict(), **change}
    with pytest.raises(BadInput) as caught:
        Limits.from_dict(data)
    assert caught.value.field == field


def test_missing_keys_are_rejected() -> None:
    data = xbar_r_limits(BASELINE).to_dict()
    del data["ucl"]
    with pytest.raises(BadInput, match="ucl"):
        Limits.from_dict(data)


# ---------------------------------------------------------------- bad input


def test_subgroup_of_one_is_rejected_for_xbar_charts() -> None:
    with pytest.raises(BadInput, match="subgroup 1 has 1 value") as caught:
        xbar_r_limits([[1.0, 2.0], [3.0], [4.0, 5.0]])
    assert caught.value.field == "subgroups"
    with pytest.raises(BadInput, match="I-MR"):
        evaluate_subgroups(xbar_r_limits(BASELINE), [[74.0]])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: xbar_r_limits([[1.0, 2.0, 3.0]]), "at least 2 subgroups"),
        (lambda: xbar_s_limits([[1.0, 2.0], [1.0, 2.0, 3.0]]), "equal sizes"),
        (lambda: xbar_r_limits([[1.0, float("nan")], [1.0, 2.0]]), "not a finite number"),
        (lambda: xbar_r_limits([[1.0, 1.0], [2.0, 2.0]]), "no variation"),
        (lambda: xbar_r_limits(np.zeros(4)), "2-D"),
        (lambda: xbar_r_limits([["a", "b"], ["c", "d"]]), "numbers"),  # type: ignore[list-item]
        (lambda: imr_limits([5.0]), "at least 2 values"),
        (lambda: imr_limits([5.0, 5.0, 5.0]), "no variation"),
        (lambda: p_limits([1], [10]), "at least 2 samples"),
        (lambda: p_limits([1, -1], [10, 10]), r"nonconforming\[1\] is negative"),
        (lambda: p_limits([11, 1], [10, 10]), "exceeds its sample size"),
        (lambda: p_limits([1.5, 1], [10, 10]), "whole count"),
        (lambda: p_limits([1, 1], [10, 10.5]), "whole number of items"),
        (lambda: p_limits([0, 0], [10, 10]), "zero width"),
        (lambda: p_limits([1, 2, 3], [10, 10]), "differ in length"),
        (lambda: u_limits([1, 2], [1, 0]), r"units\[1\] must be positive"),
        (lambda: u_limits([1, -2], [1, 1]), "negative"),
        (lambda: u_limits([0, 0], [1, 1]), "no defects"),
    ],
)
def test_bad_baselines_are_rejected(make: object, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        make()  # type: ignore[operator]


def test_evaluating_with_the_wrong_chart_is_rejected() -> None:
    with pytest.raises(BadInput, match="I-MR limits"):
        evaluate_individuals(xbar_r_limits(BASELINE), [1.0])
    with pytest.raises(BadInput, match="X-bar limits"):
        evaluate_subgroups(p_limits(JUICE, [50] * 30), BASELINE)
    with pytest.raises(BadInput, match="p or u limits"):
        evaluate_counts(imr_limits([1, 2, 3]), [1], [1])
    with pytest.raises(BadInput, match="previous"):
        evaluate_individuals(imr_limits([1, 2, 3]), [1.0], previous=float("inf"))
    with pytest.raises(BadInput, match="units"):
        evaluate_counts(u_limits(COMPUTERS, [5] * 20), [1], [0])


def test_empty_phase_two_data_gives_empty_points() -> None:
    assert evaluate_subgroups(xbar_r_limits(BASELINE), []).values.size == 0
    assert evaluate_individuals(imr_limits([1, 2, 3]), []).values.size == 0
    assert evaluate_counts(p_limits(JUICE, [50] * 30), [], []).values.size == 0


def test_run_rules_on_the_piston_ring_phase_two_chart() -> None:
    # Sigma of a mean of 5: (0.569/25)/d2(5)/√5 = 0.0097853/2.23607 = 0.0043761; center
    # 74.001176. z of samples 26..40 (index 0..14), from their means (sum of five / 5):
    #  26: 74.0086 1.70 | 27: 74.0022 0.23 | 28: 73.9922 -2.05 | 29: 74.0036 0.55
    #  30: 73.9974 -0.86 | 31: 74.0072 1.37 | 32: 74.0056 1.01 | 33: 73.9978 -0.77
    #  34: 74.0112 2.29 | 35: 74.0126 2.61 | 36: 74.0040 0.64 | 37: 74.0166 3.52
    #  38: 74.0196 4.21 | 39: 74.0234 5.08 | 40: 74.0128 2.66
    # we_1 (beyond 3): 37, 38, 39. we_2 (2 of 3 beyond 2, same side): 35 (34, 35), 37 (35, 37),
    # 38, 39, 40. we_3 (4 of 5 beyond 1): 35 (31, 32, 34, 35), 38 (34, 35, 37, 38), 39, 40;
    # not 37 (33..37 holds three). we_4: 34..40 is only seven above in a row.
    points = evaluate_subgroups(xbar_r_limits(BASELINE), NEW)
    found = find_violations(points.values, points.center, points.sigma, WESTERN_ELECTRIC)
    by_sample = sorted((v.index + 26, v.rule) for v in found)
    assert by_sample == [
        (35, "we_2"),
        (35, "we_3"),
        (37, "we_1"),
        (37, "we_2"),
        (38, "we_1"),
        (38, "we_2"),
        (38, "we_3"),
        (39, "we_1"),
        (39, "we_2"),
        (39, "we_3"),
        (40, "we_2"),
        (40, "we_3"),
    ]


def test_run_rules_on_a_p_chart_with_varying_sizes_stream_like_batch() -> None:
    rng = np.random.default_rng(11)
    sizes = rng.integers(20, 200, 300)
    counts = rng.binomial(sizes, 0.1)
    counts[150:] = rng.binomial(sizes[150:], 0.14)  # a shift the run rules should catch
    limits = p_limits(counts[:100], sizes[:100])
    points = evaluate_counts(limits, counts, sizes)
    batch = find_violations(points.values, points.center, points.sigma, NELSON)
    evaluator = RuleEvaluator(limits.center, 1.0, NELSON)
    streamed = [
        v
        for value, sigma in zip(points.values, points.sigma, strict=True)
        for v in evaluator.update(float(value), sigma=float(sigma))
    ]
    assert streamed == batch
    assert any(v.index >= 150 and v.rule in ("nelson_2", "nelson_6") for v in batch)
