"""Computed control-chart constants against the published tables and exact closed forms."""

from __future__ import annotations

import math

import pytest

from shopfloor.apps.spc.constants import ChartConstants, c4, constants, d2, d3
from shopfloor.core.errors import BadInput

# The table of factors for Shewhart charts as printed in the NIST/SEMATECH e-Handbook 6.3.2,
# ASTM E2587 and Montgomery's Appendix VI, 3 decimals (c4: 4 decimals).
# n: (A2, d2, D3, D4, A3, c4, B3, B4, d3)
TABLE: dict[int, tuple[float, ...]] = {
    2: (1.880, 1.128, 0.000, 3.267, 2.659, 0.7979, 0.000, 3.267, 0.853),
    3: (1.023, 1.693, 0.000, 2.574, 1.954, 0.8862, 0.000, 2.568, 0.888),
    4: (0.729, 2.059, 0.000, 2.282, 1.628, 0.9213, 0.000, 2.266, 0.880),
    5: (0.577, 2.326, 0.000, 2.114, 1.427, 0.9400, 0.000, 2.089, 0.864),
    6: (0.483, 2.534, 0.000, 2.004, 1.287, 0.9515, 0.030, 1.970, 0.848),
    7: (0.419, 2.704, 0.076, 1.924, 1.182, 0.9594, 0.118, 1.882, 0.833),
    8: (0.373, 2.847, 0.136, 1.864, 1.099, 0.9650, 0.185, 1.815, 0.820),
    9: (0.337, 2.970, 0.184, 1.816, 1.032, 0.9693, 0.239, 1.761, 0.808),
    10: (0.308, 3.078, 0.223, 1.777, 0.975, 0.9727, 0.284, 1.716, 0.797),
    11: (0.285, 3.173, 0.256, 1.744, 0.927, 0.9754, 0.321, 1.679, 0.787),
    12: (0.266, 3.258, 0.283, 1.717, 0.886, 0.9776, 0.354, 1.646, 0.778),
    13: (0.249, 3.336, 0.307, 1.693, 0.850, 0.9794, 0.382, 1.618, 0.770),
    14: (0.235, 3.407, 0.328, 1.672, 0.817, 0.9810, 0.406, 1.594, 0.763),
    15: (0.223, 3.472, 0.347, 1.653, 0.789, 0.9823, 0.428, 1.572, 0.756),
    16: (0.212, 3.532, 0.363, 1.637, 0.763, 0.9835, 0.448, 1.552, 0.750),
    17: (0.203, 3.588, 0.378, 1.622, 0.739, 0.9845, 0.466, 1.534, 0.744),
    18: (0.194, 3.640, 0.391, 1.608, 0.718, 0.9854, 0.482, 1.518, 0.739),
    19: (0.187, 3.689, 0.403, 1.597, 0.698, 0.9862, 0.497, 1.503, 0.734),
    20: (0.180, 3.735, 0.415, 1.585, 0.680, 0.9869, 0.510, 1.490, 0.729),
    21: (0.173, 3.778, 0.425, 1.575, 0.663, 0.9876, 0.523, 1.477, 0.724),
    22: (0.167, 3.819, 0.434, 1.566, 0.647, 0.9882, 0.534, 1.466, 0.720),
    23: (0.162, 3.858, 0.443, 1.557, 0.633, 0.9887, 0.545, 1.455, 0.716),
    24: (0.157, 3.895, 0.451, 1.548, 0.619, 0.9892, 0.555, 1.445, 0.712),
    25: (0.153, 3.931, 0.459, 1.541, 0.606, 0.9896, 0.565, 1.435, 0.708),
}
# E2 = 3/d2 for the individuals chart, as tabled for spans 2 to 9. The tables divide by the
# rounded d2: 3/1.128 = 2.660 where 3/1.12838 = 2.6587, so E2 gets two units of slack.
E2_TABLE = {2: 2.660, 3: 1.772, 4: 1.457, 5: 1.290, 6: 1.184, 7: 1.109, 8: 1.054, 9: 1.010}

# A table entry is a rounding, sometimes of a value computed from already rounded d2/d3
# (D4 = 2.574 for n = 3 where 1 + 3 d3/d2 = 2.5746): agree to within one unit of the last digit.
THREE_DECIMALS = 1e-3
FOUR_DECIMALS = 1e-4


@pytest.mark.parametrize("n", sorted(TABLE))
def test_constants_match_the_published_table(n: int) -> None:
    a2, d2_, d3_lo, d4, a3, c4_, b3, b4, d3_ = TABLE[n]
    got = constants(n)
    assert got.n == n
    assert pytest.approx(a2, abs=THREE_DECIMALS) == got.A2
    assert got.d2 == pytest.approx(d2_, abs=THREE_DECIMALS)
    assert pytest.approx(d3_lo, abs=THREE_DECIMALS) == got.D3
    assert pytest.approx(d4, abs=THREE_DECIMALS) == got.D4
    assert pytest.approx(a3, abs=THREE_DECIMALS) == got.A3
    assert got.c4 == pytest.approx(c4_, abs=FOUR_DECIMALS)
    assert pytest.approx(b3, abs=THREE_DECIMALS) == got.B3
    assert pytest.approx(b4, abs=THREE_DECIMALS) == got.B4
    assert got.d3 == pytest.approx(d3_, abs=THREE_DECIMALS)
    if n in E2_TABLE:
        assert pytest.approx(E2_TABLE[n], abs=2 * THREE_DECIMALS) == got.E2


def test_the_handbook_example_row_n5() -> None:
    # The brief's spot checks, e-Handbook 6.3.2: d2=2.326, A2=0.577, D4=2.114, c4=0.9400,
    # B4=2.089, A3=1.427.
    got = constants(5)
    assert round(got.d2, 3) == 2.326
    assert round(got.A2, 3) == 0.577
    assert round(got.D4, 3) == 2.114
    assert round(got.c4, 4) == 0.9400
    assert round(got.B4, 3) == 2.089
    assert round(got.A3, 3) == 1.427


def test_exact_closed_forms_for_small_n() -> None:
    # Two normals: W = |X1 - X2| ~ |N(0, 2)|, so E[W] = sqrt(2) * sqrt(2/pi) = 2/sqrt(pi) and
    # E[W²] = 2, hence d3 = sqrt(2 - 4/pi). Three normals: d2 = 3/sqrt(pi) (a known identity).
    assert d2(2) == pytest.approx(2 / math.sqrt(math.pi), abs=1e-10)
    assert d3(2) == pytest.approx(math.sqrt(2 - 4 / math.pi), abs=1e-10)
    assert d2(3) == pytest.approx(3 / math.sqrt(math.pi), abs=1e-10)
    # c4(2) = sqrt(2/1) * Gamma(1) / Gamma(1/2) = sqrt(2/pi); c4(3) = sqrt(2/2) * Gamma(3/2) /
    # Gamma(1) = sqrt(pi)/2.
    assert c4(2) == pytest.approx(math.sqrt(2 / math.pi), abs=1e-12)
    assert c4(3) == pytest.approx(math.sqrt(math.pi) / 2, abs=1e-12)


def test_factors_are_consistent_with_d2_d3_c4() -> None:
    got = constants(8)
    assert pytest.approx(3 / (got.d2 * math.sqrt(8))) == got.A2
    assert pytest.approx(got.A2 * math.sqrt(8)) == got.E2
    assert pytest.approx(2.0) == got.D3 + got.D4  # both positive from n = 7 on
    assert pytest.approx(2.0) == got.B3 + got.B4


def test_constants_beyond_the_table_behave() -> None:
    # The mean range grows and c4 tends to 1 as n grows; D3 is clipped at 0, never negative.
    assert d2(50) > d2(25) > d2(24)
    assert c4(25) < c4(100) < 1.0
    assert all(constants(n).D3 >= 0.0 and constants(n).B3 >= 0.0 for n in range(2, 7))
    assert isinstance(constants(30), ChartConstants)


@pytest.mark.parametrize("bad", [1, 0, -3, 101])
def test_sizes_without_constants_are_rejected(bad: int) -> None:
    with pytest.raises(BadInput, match="between 2 and 100") as caught:
        constants(bad)
    assert caught.value.field == "subgroup_size"


@pytest.mark.parametrize("bad", [2.5, True, "5"])
def test_non_integer_sizes_are_rejected(bad: object) -> None:
    with pytest.raises(BadInput, match="integer"):
        c4(bad)  # type: ignore[arg-type]
