"""KPI formulas of ISO 22400-2, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from shopfloor.apps.oee.kpis import (
    FLAG_EFFECTIVENESS_ABOVE_1,
    FLAG_GOOD_AND_SCRAP_EXCEED_PRODUCED,
    FLAG_NO_STATE_DATA,
    FLAG_REWORK_EXCEEDS_GOOD,
    KpiInputs,
    ProductCount,
    Quantities,
    TimeElements,
    compute_kpis,
)
from shopfloor.core.errors import BadInput

MIN = 60 * 10**9

# One 8 h shift: POT 480 min, 30 min break -> PBT 450.
# APT 345, ASUT 30, ADET 60, ADOT 15 (345 + 30 + 60 + 15 = 450).
SHIFT = TimeElements(
    pot_ns=480 * MIN,
    planned_downtime_ns=30 * MIN,
    apt_ns=345 * MIN,
    asut_ns=30 * MIN,
    adet_ns=60 * MIN,
    adot_ns=15 * MIN,
)
# 500 produced at an ideal 36 s each = 18,000 s = 300 min; 20 scrap, 480 good, 10 reworked.
QTY = Quantities.from_products(
    [ProductCount("A", 36.0, produced=500, good=480, scrap=20, rework=10)]
)


def test_derived_time_elements() -> None:
    assert SHIFT.pbt_ns == 450 * MIN
    assert SHIFT.aupt_ns == 375 * MIN  # APT + ASUT
    assert SHIFT.aubt_ns == 435 * MIN  # AUPT + ADET


def test_a_normal_shift() -> None:
    k = compute_kpis(KpiInputs(SHIFT, QTY, failures=2, tbf_ns=345 * MIN, ttr_ns=60 * MIN))
    assert k.availability == pytest.approx(345 / 450)
    assert k.effectiveness == pytest.approx(300 / 345)
    assert k.quality_ratio == pytest.approx(480 / 500)
    # A x E = 345/450 x 300/345 = 300/450; x 0.96 = 0.64
    assert k.oee == pytest.approx(0.64)
    assert k.nee == pytest.approx(375 / 450 * 300 / 345 * 0.96)
    assert k.technical_efficiency == pytest.approx(345 / 405)
    assert k.utilisation_efficiency == pytest.approx(345 / 435)
    assert k.allocation_efficiency == pytest.approx(435 / 450)
    assert k.setup_rate == pytest.approx(30 / 375)
    assert k.scrap_ratio == pytest.approx(0.04)
    assert k.rework_ratio == pytest.approx(0.02)
    assert k.first_pass_yield == pytest.approx((480 - 10) / 500)
    assert k.mtbf_s == pytest.approx(345 * 60 / 2)
    assert k.mttr_s == pytest.approx(60 * 60 / 2)
    assert k.flags == ()


def test_several_products_sum_their_ideal_times() -> None:
    # A: 100 x 60 s = 6,000 s; B: 50 x 120 s = 6,000 s; sum 12,000 s = 200 min.
    q = Quantities.from_products(
        [
            ProductCount("A", 60.0, produced=100, good=98, scrap=2),
            ProductCount("B", 120.0, produced=50, good=50),
        ]
    )
    assert (q.produced, q.good, q.scrap, q.ideal_time_s) == (150, 148, 2, 12_000)
    k = compute_kpis(KpiInputs(TimeElements(pot_ns=480 * MIN, apt_ns=400 * MIN), q))
    assert k.effectiveness == pytest.approx(200 / 400)
    # Not what one PRU would give: the mean cycle 90 s x 150 = 225 min.
    assert k.effectiveness != pytest.approx(225 / 400)


def test_planned_busy_time_zero_gives_availability_one() -> None:
    # A holiday: everything zero. Availability 1 by the reference's rule; the rest undefined.
    k = compute_kpis(KpiInputs())
    assert k.availability == 1.0
    for name in (
        "effectiveness",
        "quality_ratio",
        "oee",
        "nee",
        "technical_efficiency",
        "utilisation_efficiency",
        "allocation_efficiency",
        "setup_rate",
        "scrap_ratio",
        "rework_ratio",
        "first_pass_yield",
        "mtbf_s",
        "mttr_s",
    ):
        assert getattr(k, name) is None, name


def test_whole_shift_planned_down_is_pbt_zero() -> None:
    k = compute_kpis(KpiInputs(TimeElements(pot_ns=480 * MIN, planned_downtime_ns=480 * MIN)))
    assert k.availability == 1.0
    assert k.allocation_efficiency is None


def test_no_failures_gives_no_mtbf() -> None:
    k = compute_kpis(KpiInputs(SHIFT, QTY, failures=0, tbf_ns=345 * MIN))
    assert k.mtbf_s is None
    assert k.mttr_s is None


def test_running_but_nothing_counted() -> None:
    k = compute_kpis(KpiInputs(SHIFT))
    assert k.effectiveness == 0.0
    assert k.quality_ratio is None  # PQ = 0
    assert k.oee is None


def test_effectiveness_above_one_is_reported_and_flagged() -> None:
    # 1,000 x 36 s = 600 min of ideal time in 345 min of production: the PRU is wrong.
    q = Quantities.from_products([ProductCount("A", 36.0, produced=1000, good=1000)])
    k = compute_kpis(KpiInputs(SHIFT, q))
    assert k.effectiveness == pytest.approx(600 / 345)
    assert k.oee == pytest.approx(345 / 450 * 600 / 345)  # > availability: not clamped
    assert FLAG_EFFECTIVENESS_ABOVE_1 in k.flags


def test_inconsistent_counts_are_flagged() -> None:
    k = compute_kpis(
        KpiInputs(SHIFT, Quantities(produced=10, good=9, scrap=2, rework=12, ideal_time_s=1))
    )
    assert FLAG_GOOD_AND_SCRAP_EXCEED_PRODUCED in k.flags
    assert FLAG_REWORK_EXCEEDS_GOOD in k.flags
    assert k.first_pass_yield == 0.0  # never negative


def test_time_without_state_data_is_flagged() -> None:
    t = TimeElements(pot_ns=60 * MIN, apt_ns=30 * MIN, unknown_ns=30 * MIN)
    k = compute_kpis(KpiInputs(t))
    assert k.availability == 0.5
    assert FLAG_NO_STATE_DATA in k.flags


def test_inputs_add_up() -> None:
    a = KpiInputs(SHIFT, QTY, 2, 345 * MIN, 60 * MIN)
    total = a + a
    assert total.times.pbt_ns == 900 * MIN
    assert total.quantities.ideal_time_s == 36_000
    assert (total.failures, total.tbf_ns, total.ttr_ns) == (4, 690 * MIN, 120 * MIN)
    # The same ratios: doubling every input changes no KPI.
    assert compute_kpis(total).oee == pytest.approx(0.64)


def test_as_dict_is_plain() -> None:
    d = compute_kpis(KpiInputs(SHIFT, QTY)).as_dict()
    assert d["oee"] == pytest.approx(0.64)
    assert d["flags"] == []


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: TimeElements(pot_ns=-1), "pot_ns"),
        (lambda: TimeElements(pot_ns=10, planned_downtime_ns=11), "planned_downtime_ns"),
        (lambda: Quantities(produced=-1), "produced"),
        (lambda: Quantities(good=float("nan")), "good"),
        (lambda: KpiInputs(failures=-1), "failures"),
        (lambda: Quantities.from_products([ProductCount("A", 0.0, produced=1)]), "ideal_cycle_s"),
    ],
)
def test_bad_inputs(build: object, field: str) -> None:
    assert callable(build)
    with pytest.raises(BadInput) as err:
        build()
    assert err.value.field == field
