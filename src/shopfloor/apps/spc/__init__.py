"""Statistical process control: control charts, run rules and capability indices.

Pure computation on numpy arrays and plain numbers, no I/O:

- ``constants``: d2, d3, c4, A2, A3, D3, D4, B3, B4, E2 for any subgroup size 2 to 100,
  computed from their integrals.
- ``charts``: X-bar/R, X-bar/S, I-MR, p and u charts. Limits come from a baseline (phase I),
  are frozen in a ``Limits`` (JSON round trip with ``to_dict``/``from_dict``) and new data is
  evaluated against them (phase II).
- ``run_rules``: Western Electric rules 1-4 and Nelson rules 1-8, batch (``find_violations``)
  and streaming (``RuleEvaluator``), which agree point for point.
- ``capability``: Cp, Cpk, Pp, Ppk, one-sided specifications and a Cpk interval.

See docs/apps/spc.md.
"""

from shopfloor.apps.spc.capability import (
    Capability,
    Indices,
    capability,
    capability_from_individuals,
    capability_from_subgroups,
    indices,
    k_interval,
)
from shopfloor.apps.spc.charts import (
    ChartKind,
    ChartPoints,
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
from shopfloor.apps.spc.constants import ChartConstants, c4, constants, d2, d3
from shopfloor.apps.spc.run_rules import (
    NELSON,
    RULES,
    WESTERN_ELECTRIC,
    Rule,
    RuleEvaluator,
    Violation,
    find_violations,
)

__all__ = [
    "NELSON",
    "RULES",
    "WESTERN_ELECTRIC",
    "Capability",
    "ChartConstants",
    "ChartKind",
    "ChartPoints",
    "Indices",
    "Limits",
    "Rule",
    "RuleEvaluator",
    "Violation",
    "c4",
    "capability",
    "capability_from_individuals",
    "capability_from_subgroups",
    "constants",
    "d2",
    "d3",
    "evaluate_counts",
    "evaluate_individuals",
    "evaluate_subgroups",
    "find_violations",
    "imr_limits",
    "indices",
    "k_interval",
    "p_limits",
    "u_limits",
    "xbar_r_limits",
    "xbar_s_limits",
]
