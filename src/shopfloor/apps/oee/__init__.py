"""OEE per ISO 22400-2: shift calendars, machine states, KPIs and roll-ups.

A computation library on plain numpy arrays and dataclasses, no web and no database:

- :mod:`.calendar` shift calendars in site-local time, expanded into UTC shift instances;
- :mod:`.states` state and counter series into per-shift time elements and counts;
- :mod:`.kpis` the ISO 22400-2 KPIs from time elements and quantities;
- :mod:`.rollup` sums over shifts and over machine > line > area > site, and the end-to-end
  :func:`machine_oee` / :func:`current_shift_oee`.

See docs/apps/oee.md for the formulas, the state mapping and the edge rules.
"""

from shopfloor.apps.oee.calendar import (
    Break,
    DowntimeInterval,
    ExtraDowntime,
    Holiday,
    ShiftCalendar,
    ShiftDef,
    ShiftInstance,
    expand,
    parse_calendar,
)
from shopfloor.apps.oee.kpis import (
    KpiInputs,
    Kpis,
    ProductCount,
    Quantities,
    TimeElements,
    compute_kpis,
)
from shopfloor.apps.oee.rollup import (
    COUNT_KINDS,
    MachineReport,
    PeriodRecord,
    current_shift_oee,
    machine_oee,
    merge_reasons,
    roll_up,
    roll_up_kpis,
    sum_inputs,
)
from shopfloor.apps.oee.states import (
    CATEGORIES,
    CounterSeries,
    ProductSeries,
    StateIntervals,
    StateSeries,
    StateTotals,
    build_intervals,
    counter_increments,
    product_at,
    window_totals,
)

__all__ = [
    "CATEGORIES",
    "COUNT_KINDS",
    "Break",
    "CounterSeries",
    "DowntimeInterval",
    "ExtraDowntime",
    "Holiday",
    "KpiInputs",
    "Kpis",
    "MachineReport",
    "PeriodRecord",
    "ProductCount",
    "ProductSeries",
    "Quantities",
    "ShiftCalendar",
    "ShiftDef",
    "ShiftInstance",
    "StateIntervals",
    "StateSeries",
    "StateTotals",
    "TimeElements",
    "build_intervals",
    "compute_kpis",
    "counter_increments",
    "current_shift_oee",
    "expand",
    "machine_oee",
    "merge_reasons",
    "parse_calendar",
    "product_at",
    "roll_up",
    "roll_up_kpis",
    "sum_inputs",
    "window_totals",
]
