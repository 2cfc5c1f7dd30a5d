"""Roll-ups: shifts into a range total, machines into line > area > site, and end to end.

Every roll-up **sums the KPI inputs** (time elements, quantities, failure counts) and then
recomputes the ratios; it never averages ratios. An average of ratios weighs a machine that
was planned for one hour like one planned for eight, and ignores that OEE is a product of
ratios with different denominators (PBT, APT, PQ): the mean of machine OEEs is in general
not the OEE of the line. Summing keeps every KPI of a group equal to what the same formula
gives on the group's totals.

:func:`machine_oee` is the whole computation for one machine and one range: calendar, state
series, count series and ideal cycle times in; a record per shift and a range total out.
:func:`current_shift_oee` is the live view: the same with the range [shift start, now).
Counts made outside every shift have no planned operation time to relate to and are left
out of the records.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from shopfloor.apps.oee.calendar import ShiftCalendar, ShiftInstance, expand
from shopfloor.apps.oee.kpis import (
    KpiInputs,
    Kpis,
    ProductCount,
    Quantities,
    TimeElements,
    compute_kpis,
)
from shopfloor.apps.oee.states import (
    CounterSeries,
    ProductSeries,
    StateSeries,
    StateTotals,
    build_intervals,
    counter_increments,
    product_at,
    window_totals,
)
from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import DAY_NS

__all__ = [
    "COUNT_KINDS",
    "MachineReport",
    "PeriodRecord",
    "current_shift_oee",
    "machine_oee",
    "merge_reasons",
    "roll_up",
    "roll_up_kpis",
    "sum_inputs",
]

COUNT_KINDS: Final = ("produced", "good", "scrap", "rework")
Reasons = dict[tuple[str, str | None], int]


@dataclass(frozen=True)
class PeriodRecord:
    """KPIs of one period: a shift (``shift`` set) or a range total (``shift`` None)."""

    label: str
    start_ns: int
    end_ns: int
    inputs: KpiInputs
    kpis: Kpis
    reasons: Reasons = field(default_factory=dict)
    products: dict[str, Quantities] = field(default_factory=dict)
    shift: ShiftInstance | None = None


@dataclass(frozen=True)
class MachineReport:
    shifts: tuple[PeriodRecord, ...]
    total: PeriodRecord


# --------------------------------------------------------------------------- summing


def sum_inputs(items: Iterable[KpiInputs]) -> KpiInputs:
    total = KpiInputs()
    for item in items:
        total = total + item
    return total


def merge_reasons(items: Iterable[Mapping[tuple[str, str | None], int]]) -> Reasons:
    """Sum reason durations; the result is sorted longest first (a Pareto)."""
    out: Reasons = {}
    for reasons in items:
        for key, ns in reasons.items():
            out[key] = out.get(key, 0) + ns
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def roll_up(leaves: Mapping[str, KpiInputs], parent_of: Mapping[str, str]) -> dict[str, KpiInputs]:
    """Summed inputs of every node: the leaves (machines) and all their ancestors.

    ``parent_of`` maps a node to its parent (machine -> line -> area -> site); a node with
    no entry is a root. Any depth works; a cycle raises ``BadInput``.
    """
    out: dict[str, KpiInputs] = {}
    for leaf, inputs in leaves.items():
        node: str | None = leaf
        seen: set[str] = set()
        while node is not None:
            if node in seen:
                raise BadInput(f"the hierarchy has a cycle through {node!r}", "parent_of")
            seen.add(node)
            out[node] = out.get(node, KpiInputs()) + inputs
            node = parent_of.get(node)
    return out


def roll_up_kpis(leaves: Mapping[str, KpiInputs], parent_of: Mapping[str, str]) -> dict[str, Kpis]:
    return {node: compute_kpis(inputs) for node, inputs in roll_up(leaves, parent_of).items()}


# --------------------------------------------------------------------------- end to end


@dataclass(frozen=True)
class _Increments:
    ts_ns: npt.NDArray[np.int64]
    amount: npt.NDArray[np.float64]
    product: npt.NDArray[np.intp]


def _increments(
    counts: Mapping[str, CounterSeries], products: ProductSeries | None, default_product: str
) -> tuple[tuple[str, ...], dict[str, _Increments]]:
    unknown = sorted(set(counts) - set(COUNT_KINDS))
    if unknown:
        raise BadInput(f"unknown count kind(s) {unknown}; use {list(COUNT_KINDS)}", "counts")
    if "produced" not in counts and "good" not in counts:
        raise BadInput("give a 'produced' or a 'good' count (or both)", "counts")
    names: tuple[str, ...] = (default_product,)
    out: dict[str, _Increments] = {}
    for kind, series in counts.items():
        ts, amount = counter_increments(series, f"counts.{kind}")
        names, product = product_at(products, ts, default_product)
        out[kind] = _Increments(ts, amount, product)
    return names, out


def _window_counts(
    names: tuple[str, ...],
    incs: Mapping[str, _Increments],
    start_ns: int,
    end_ns: int,
) -> dict[str, dict[str, float]]:
    """Per product, per kind: increments dated in [start_ns, end_ns)."""
    per_kind: dict[str, npt.NDArray[np.float64]] = {}
    for kind, inc in incs.items():
        # Sorted timestamps: a slice, not a mask over the whole series, for each shift.
        lo, hi = np.searchsorted(inc.ts_ns, [start_ns, end_ns], side="left")
        per_kind[kind] = np.bincount(
            inc.product[lo:hi], weights=inc.amount[lo:hi], minlength=len(names)
        ).astype(np.float64)
    zeros = np.zeros(len(names))
    scrap = per_kind.get("scrap", zeros)
    produced = per_kind.get("produced")
    good = per_kind.get("good")
    # A machine often counts only two of the three: derive the missing one.
    if produced is None:
        good = per_kind["good"]  # _increments made sure one of the two is there
        produced = good + scrap
    elif good is None:
        good = np.maximum(produced - scrap, 0.0)
    rework = per_kind.get("rework", zeros)
    return {
        name: {
            "produced": float(produced[i]),
            "good": float(good[i]),
            "scrap": float(scrap[i]),
            "rework": float(rework[i]),
        }
        for i, name in enumerate(names)
        if produced[i] or good[i] or scrap[i] or rework[i]
    }


def _quantities(
    counts: Mapping[str, Mapping[str, float]], ideal_cycle_s: Mapping[str, float]
) -> dict[str, Quantities]:
    out: dict[str, Quantities] = {}
    for product, c in counts.items():
        if product not in ideal_cycle_s:
            raise BadInput(f"no ideal cycle time for product {product!r}", "ideal_cycle_s")
        out[product] = Quantities.from_products(
            [ProductCount(product, ideal_cycle_s[product], **c)]
        )
    return out


def _inputs(totals: StateTotals, pot_ns: int, quantities: Quantities) -> KpiInputs:
    times = TimeElements(
        pot_ns=pot_ns,
        planned_downtime_ns=totals.planned_downtime_ns,
        apt_ns=totals.apt_ns,
        asut_ns=totals.asut_ns,
        adet_ns=totals.adet_ns,
        adot_ns=totals.adot_ns,
        unknown_ns=totals.unknown_ns,
    )
    return KpiInputs(times, quantities, totals.failures, totals.tbf_ns, totals.ttr_ns)


def machine_oee(
    calendar: ShiftCalendar,
    t0_ns: int,
    t1_ns: int,
    states: StateSeries,
    counts: Mapping[str, CounterSeries],
    ideal_cycle_s: Mapping[str, float],
    *,
    products: ProductSeries | None = None,
    state_map: Mapping[Hashable, str] | None = None,
    default_product: str = "default",
) -> MachineReport:
    """Per-shift KPI records and their total over [t0_ns, t1_ns) for one machine.

    ``states`` and every series in ``counts`` (keys: produced, good, scrap, rework) start at
    the last sample at or before ``t0_ns`` (see states.py). ``ideal_cycle_s`` gives PRU in
    seconds per unit for every product that produced something; counts are attributed to the
    product active at their timestamp (``products``; before it or without it:
    ``default_product``).
    """
    shifts = expand(calendar, t0_ns, t1_ns)
    intervals = build_intervals(states, t0_ns, t1_ns, state_map)
    names, incs = _increments(counts, products, default_product)
    records: list[PeriodRecord] = []
    for shift in shifts:
        totals = window_totals(intervals, shift.start_ns, shift.end_ns, shift.merged_downtime())
        per_product = _quantities(
            _window_counts(names, incs, shift.start_ns, shift.end_ns), ideal_cycle_s
        )
        inputs = _inputs(totals, shift.pot_ns, sum(per_product.values(), Quantities()))
        records.append(
            PeriodRecord(
                shift.label,
                shift.start_ns,
                shift.end_ns,
                inputs,
                compute_kpis(inputs),
                totals.reasons,
                per_product,
                shift,
            )
        )
    total_inputs = sum_inputs(r.inputs for r in records)
    products_total: dict[str, Quantities] = {}
    for r in records:
        for name, q in r.products.items():
            products_total[name] = products_total.get(name, Quantities()) + q
    total = PeriodRecord(
        "total",
        t0_ns,
        t1_ns,
        total_inputs,
        compute_kpis(total_inputs),
        merge_reasons(r.reasons for r in records),
        products_total,
    )
    return MachineReport(tuple(records), total)


def current_shift_oee(
    calendar: ShiftCalendar,
    now_ns: int,
    states: StateSeries,
    counts: Mapping[str, CounterSeries],
    ideal_cycle_s: Mapping[str, float],
    *,
    products: ProductSeries | None = None,
    state_map: Mapping[Hashable, str] | None = None,
    default_product: str = "default",
) -> PeriodRecord | None:
    """The shift running at ``now_ns`` so far (POT up to now), or None between shifts.

    The series must start at the last sample at or before that shift's start.
    """
    # Two days back reaches the start of any shift (at most 24 h, 25 h on a DST day).
    running = [
        s
        for s in expand(calendar, now_ns - 2 * DAY_NS, now_ns + 1)
        if s.planned_start_ns <= now_ns < s.planned_end_ns
    ]
    if not running:
        return None
    start = running[0].planned_start_ns
    report = machine_oee(
        calendar,
        start,
        now_ns,
        states,
        counts,
        ideal_cycle_s,
        products=products,
        state_map=state_map,
        default_product=default_product,
    )
    if report.shifts:
        return report.shifts[0]
    # now == shift start: the shift exists but has no time yet.
    empty = KpiInputs()
    return PeriodRecord(
        running[0].label, start, start, empty, compute_kpis(empty), shift=running[0]
    )
