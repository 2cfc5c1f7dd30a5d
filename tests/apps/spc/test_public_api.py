"""The package's public surface is what ``__all__`` lists, and every listed name exists."""

from __future__ import annotations

import shopfloor.apps.spc as spc


def test_all_names_exist_and_are_public() -> None:
    for name in spc.__all__:
        assert hasattr(spc, name), name
        assert not name.startswith("_")
    assert sorted(spc.__all__) == sorted(set(spc.__all__))


def test_the_chart_and_rule_entry_points_are_exported() -> None:
    expected = {
        "xbar_r_limits",
        "xbar_s_limits",
        "imr_limits",
        "p_limits",
        "u_limits",
        "evaluate_subgroups",
        "evaluate_individuals",
        "evaluate_counts",
        "Limits",
        "find_violations",
        "RuleEvaluator",
        "capability_from_subgroups",
        "capability_from_individuals",
        "constants",
    }
    assert expected <= set(spc.__all__)
