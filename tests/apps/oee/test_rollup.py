"""Roll-up machine > line > area > site: sums of inputs, ratios recomputed."""

from __future__ import annotations

import pytest

from shopfloor.apps.oee.kpis import KpiInputs, Quantities, TimeElements, compute_kpis
from shopfloor.apps.oee.rollup import merge_reasons, roll_up, roll_up_kpis, sum_inputs
from shopfloor.core.errors import BadInput

H = 3600 * 10**9

# M1: PBT 8 h, APT 4 h, ideal 4 h, 100 made, 100 good -> A 0.5, E 1, Q 1, OEE 0.5.
M1 = KpiInputs(
    TimeElements(pot_ns=8 * H, apt_ns=4 * H, adot_ns=4 * H), Quantities(100, 100, 0, 0, 4 * 3600)
)
# M2: PBT 2 h, APT 2 h, ideal 1 h, 10 made, 5 good -> A 1, E 0.5, Q 0.5, OEE 0.25.
M2 = KpiInputs(TimeElements(pot_ns=2 * H, apt_ns=2 * H), Quantities(10, 5, 5, 0, 1 * 3600))
PARENTS = {
    "m1": "line1",
    "m2": "line1",
    "m3": "line2",
    "line1": "area",
    "line2": "area",
    "area": "site",
}


def test_machine_oees_are_as_worked_out() -> None:
    assert compute_kpis(M1).oee == pytest.approx(0.5)
    assert compute_kpis(M2).oee == pytest.approx(0.25)


def test_line_oee_is_not_the_mean_of_machine_oees() -> None:
    line = roll_up_kpis({"m1": M1, "m2": M2}, PARENTS)["line1"]
    # Sums: PBT 10 h, APT 6 h, ideal 5 h, PQ 110, GQ 105.
    # A = 6/10, E = 5/6, Q = 105/110 -> OEE = 0.5 x 105/110 = 0.47727...
    assert line.availability == pytest.approx(0.6)
    assert line.effectiveness == pytest.approx(5 / 6)
    assert line.quality_ratio == pytest.approx(105 / 110)
    assert line.oee == pytest.approx(0.5 * 105 / 110)
    mean_of_machines = (0.5 + 0.25) / 2
    assert line.oee != pytest.approx(mean_of_machines)


def test_every_level_sums_all_machines_below_it() -> None:
    m3 = KpiInputs(TimeElements(pot_ns=1 * H, adet_ns=1 * H), failures=3, ttr_ns=1 * H)
    nodes = roll_up({"m1": M1, "m2": M2, "m3": m3}, PARENTS)
    assert set(nodes) == {"m1", "m2", "m3", "line1", "line2", "area", "site"}
    assert nodes["line2"] == m3
    assert nodes["area"] == nodes["site"] == M1 + M2 + m3
    assert nodes["site"].times.pbt_ns == 11 * H
    assert nodes["site"].failures == 3
    assert compute_kpis(nodes["site"]).availability == pytest.approx(6 / 11)


def test_a_machine_without_a_parent_is_its_own_root() -> None:
    assert roll_up({"lonely": M1}, {}) == {"lonely": M1}


def test_a_cycle_is_rejected() -> None:
    with pytest.raises(BadInput, match="cycle"):
        roll_up({"m1": M1}, {"m1": "line", "line": "m1"})


def test_sum_inputs_and_reasons() -> None:
    assert sum_inputs([]) == KpiInputs()
    assert sum_inputs([M1, M2]) == M1 + M2
    merged = merge_reasons(
        [{("down", "jam"): 5, ("idle", None): 1}, {("down", "jam"): 2, ("down", "motor"): 9}]
    )
    assert merged == {("down", "motor"): 9, ("down", "jam"): 7, ("idle", None): 1}
    assert list(merged) == [("down", "motor"), ("down", "jam"), ("idle", None)]  # longest first
