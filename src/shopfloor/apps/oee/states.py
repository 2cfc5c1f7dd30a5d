"""Machine-state and counter series turned into per-window durations and counts.

**States.** A state series is samples ``(ts_ns, code, reason)``; each sample's state holds from
its timestamp until the next sample (half-open), the last one until the end of the range.
Codes are mapped to the ISO 22400 categories below (``state_map``; the category names map to
themselves):

=============  =====================================  ====================
category       meaning                                ISO 22400 element
=============  =====================================  ====================
running        producing                              APT
setup          changeover, setup                      ASUT
down           malfunction, minor stop                ADET
idle           available, no order, starved/blocked   ADOT
planned_stop   planned stop reported by the machine   planned downtime
unknown        no sample yet                          (in PBT, no element)
=============  =====================================  ====================

*The state at the range start* comes from the caller: pass the series from the **last sample
at or before t0** onwards (the historian's "last value before" plus the range). Samples
before t0 are allowed; the latest of them sets the state at t0, older ones are ignored. With
no sample at or before t0, the time up to the first sample is ``unknown``.

*Failure events* (FE) are samples that enter ``down`` from another known state; the first
sample of the series has no known predecessor and never counts. An event belongs to the
window containing its timestamp (a change exactly at a shift boundary belongs to the shift
that starts there).

**Counters.** Either cumulative counters (the machine's part counter; a drop means the
counter was reset to zero, so the increment is the new value) or per-event counts (each
sample is an increment). Increments are dated by the later sample and, like states, the
caller passes the last sample at or before t0 so that the first increment in the range is
known.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from shopfloor.core.errors import BadInput

__all__ = [
    "CATEGORIES",
    "CounterSeries",
    "ProductSeries",
    "StateIntervals",
    "StateSeries",
    "StateTotals",
    "build_intervals",
    "counter_increments",
    "product_at",
    "window_totals",
]

CATEGORIES: Final = ("running", "setup", "down", "idle", "planned_stop", "unknown")
RUNNING, SETUP, DOWN, IDLE, PLANNED_STOP, UNKNOWN = range(6)
_NO_REASON: Final = -1


@dataclass(frozen=True)
class StateSeries:
    """Raw state samples; ``reasons`` (optional) gives a reason code per sample or None."""

    ts_ns: npt.NDArray[np.int64]
    codes: Sequence[Hashable] | npt.NDArray[np.generic]
    reasons: Sequence[str | None] | None = None


@dataclass(frozen=True)
class CounterSeries:
    """A count signal: cumulative counter (default) or per-event increments."""

    ts_ns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    cumulative: bool = True


@dataclass(frozen=True)
class ProductSeries:
    """Which product the machine makes from each timestamp on (order or recipe changes)."""

    ts_ns: npt.NDArray[np.int64]
    products: Sequence[str]


@dataclass(frozen=True)
class StateIntervals:
    """Contiguous half-open intervals covering [t0, t1) exactly, in time order.

    ``category`` indexes :data:`CATEGORIES`; ``reason`` indexes ``reason_names`` (-1: none).
    ``failure_ts_ns`` are the times of transitions into ``down``.
    """

    start_ns: npt.NDArray[np.int64]
    end_ns: npt.NDArray[np.int64]
    category: npt.NDArray[np.int8]
    reason: npt.NDArray[np.int32]
    reason_names: tuple[str, ...]
    failure_ts_ns: npt.NDArray[np.int64]


@dataclass(frozen=True)
class StateTotals:
    """Durations (ns) of one window split into ISO 22400 time elements.

    The elements partition the window: ``apt + asut + adet + adot + unknown +
    planned_downtime == window length``. Running time during calendar planned downtime
    (working through a break) counts as APT, not as planned downtime.
    """

    apt_ns: int = 0
    asut_ns: int = 0
    adet_ns: int = 0
    adot_ns: int = 0
    unknown_ns: int = 0
    planned_downtime_ns: int = 0
    failures: int = 0
    tbf_ns: int = 0
    ttr_ns: int = 0
    reasons: dict[tuple[str, str | None], int] = field(default_factory=dict)


def _map_codes(
    codes: npt.NDArray[np.generic], state_map: Mapping[Hashable, str] | None
) -> npt.NDArray[np.int8]:
    lookup: dict[Hashable, str] = {c: c for c in CATEGORIES}
    if state_map:
        for code, category in state_map.items():
            if category not in CATEGORIES:
                raise BadInput(
                    f"state {code!r} maps to {category!r}, not one of {list(CATEGORIES)}",
                    "state_map",
                )
            lookup[code] = category
    uniques, inverse = np.unique(codes, return_inverse=True)
    mapped = np.empty(len(uniques), dtype=np.int8)
    for i, code in enumerate(uniques.tolist()):
        if code not in lookup:
            raise BadInput(
                f"state code {code!r} has no category; add it to the state map", "states"
            )
        mapped[i] = CATEGORIES.index(lookup[code])
    result: npt.NDArray[np.int8] = mapped[inverse.reshape(-1)]
    return result


def _check_ts(ts: npt.NDArray[np.int64], n: int, field: str) -> npt.NDArray[np.int64]:
    ts = np.asarray(ts, dtype=np.int64)
    if ts.ndim != 1 or len(ts) != n:
        raise BadInput(f"timestamps and values differ in length ({len(ts)} vs {n})", field)
    if len(ts) > 1 and bool(np.any(np.diff(ts) < 0)):
        raise BadInput("timestamps must be in time order", field)
    return ts


def build_intervals(
    series: StateSeries,
    t0_ns: int,
    t1_ns: int,
    state_map: Mapping[Hashable, str] | None = None,
) -> StateIntervals:
    """State intervals covering [t0_ns, t1_ns); see the module docstring for the rules."""
    if t1_ns < t0_ns:
        raise BadInput("the range ends before it starts", "t1")
    codes = np.asarray(series.codes)
    ts = _check_ts(series.ts_ns, len(codes), "states")
    cats = _map_codes(codes, state_map) if len(codes) else np.empty(0, dtype=np.int8)
    reason_names, reason_idx = _reason_index(series.reasons, len(codes))
    # Of samples sharing a timestamp only the last one counts, for states and failures alike.
    last = np.append(ts[1:] != ts[:-1], True) if len(ts) else np.empty(0, dtype=bool)
    ts, cats, reason_idx = ts[last], cats[last], reason_idx[last]

    # Transitions into down, from a known non-down sample (sample 0 has no predecessor).
    entered = np.flatnonzero((cats[1:] == DOWN) & (cats[:-1] != DOWN)) + 1
    failures = ts[entered]
    failures = failures[(failures >= t0_ns) & (failures < t1_ns)]

    first = max(int(np.searchsorted(ts, t0_ns, side="right")) - 1, 0)
    stop = int(np.searchsorted(ts, t1_ns, side="left"))
    keep = slice(first, stop)
    starts = np.maximum(ts[keep], t0_ns)
    ends = np.append(starts[1:], t1_ns) if len(starts) else starts
    cat, rsn = cats[keep], reason_idx[keep]
    if not len(starts) or starts[0] > t0_ns:  # nothing known at t0
        lead_end = starts[0] if len(starts) else t1_ns
        starts = np.insert(starts, 0, t0_ns)
        ends = np.insert(ends, 0, lead_end)
        cat = np.insert(cat, 0, UNKNOWN)
        rsn = np.insert(rsn, 0, _NO_REASON)
    nonempty = ends > starts  # timestamps are unique now: this drops only a t0 == t1 range
    return StateIntervals(
        starts[nonempty].astype(np.int64),
        ends[nonempty].astype(np.int64),
        cat[nonempty].astype(np.int8),
        rsn[nonempty].astype(np.int32),
        reason_names,
        failures.astype(np.int64),
    )


def _reason_index(
    reasons: Sequence[str | None] | None, n: int
) -> tuple[tuple[str, ...], npt.NDArray[np.int32]]:
    if reasons is None:
        return (), np.full(n, _NO_REASON, dtype=np.int32)
    if len(reasons) != n:
        raise BadInput(f"reasons and states differ in length ({len(reasons)} vs {n})", "reasons")
    names: dict[str, int] = {}
    idx = np.fromiter(
        (
            _NO_REASON if r is None or r == "" else names.setdefault(str(r), len(names))
            for r in reasons
        ),
        dtype=np.int32,
        count=n,
    )
    return tuple(names), idx


def window_totals(
    intervals: StateIntervals,
    start_ns: int,
    end_ns: int,
    planned_downtime: Sequence[tuple[int, int]] = (),
) -> StateTotals:
    """Split [start_ns, end_ns) into time elements; ``planned_downtime``: disjoint intervals."""
    lo = int(np.searchsorted(intervals.end_ns, start_ns, side="right"))
    hi = int(np.searchsorted(intervals.start_ns, end_ns, side="left"))
    s = np.clip(intervals.start_ns[lo:hi], start_ns, end_ns)
    e = np.clip(intervals.end_ns[lo:hi], start_ns, end_ns)
    cat = intervals.category[lo:hi]
    duration = e - s
    in_pd = np.zeros(len(s), dtype=np.int64)
    for pd_start, pd_end in planned_downtime:
        in_pd += np.clip(np.minimum(e, pd_end) - np.maximum(s, pd_start), 0, None)
    # Running through a break is production; every other state in a break is planned downtime.
    counted = np.where(cat == RUNNING, duration, duration - in_pd)
    counted = np.where(cat == PLANNED_STOP, 0, counted)
    apt, asut, adet, adot, unknown = (
        int(counted[cat == c].sum()) for c in (RUNNING, SETUP, DOWN, IDLE, UNKNOWN)
    )
    known = apt + asut + adet + adot + unknown
    f = intervals.failure_ts_ns
    return StateTotals(
        apt_ns=apt,
        asut_ns=asut,
        adet_ns=adet,
        adot_ns=adot,
        unknown_ns=unknown,
        planned_downtime_ns=(end_ns - start_ns) - known,
        failures=int(np.diff(np.searchsorted(f, [start_ns, end_ns], side="left"))[0]),
        # TBF: operating time between failures; TTR: time in down, breaks included (a repair
        # does not pause for lunch). Summed over the window so that they roll up by adding.
        tbf_ns=apt,
        ttr_ns=int(duration[cat == DOWN].sum()),
        reasons=_reason_durations(intervals, cat, intervals.reason[lo:hi], counted, duration),
    )


def _reason_durations(
    intervals: StateIntervals,
    cat: npt.NDArray[np.int8],
    reason: npt.NDArray[np.int32],
    counted: npt.NDArray[np.int64],
    duration: npt.NDArray[np.int64],
) -> dict[tuple[str, str | None], int]:
    """Pareto input: time per (category, reason) for every state but running."""
    weight = np.where(cat == PLANNED_STOP, duration, counted)
    width = len(intervals.reason_names) + 1  # reason -1 (none) takes slot 0
    key = cat.astype(np.int64) * width + (reason.astype(np.int64) + 1)
    # Integer sums: float weights would round nanoseconds on long windows.
    keys, inverse = np.unique(key, return_inverse=True)
    sums = np.zeros(len(keys), dtype=np.int64)
    np.add.at(sums, inverse.reshape(-1), weight)
    out: dict[tuple[str, str | None], int] = {}
    for k, total in zip(keys.tolist(), sums.tolist(), strict=True):
        c, r = divmod(k, width)
        if c != RUNNING and total > 0:
            out[(CATEGORIES[c], None if r == 0 else intervals.reason_names[r - 1])] = total
    return out


def counter_increments(
    series: CounterSeries, field: str = "counts"
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(timestamps, increments) of a count signal; see the module docstring for the rules."""
    values = np.asarray(series.values, dtype=np.float64)
    ts = _check_ts(series.ts_ns, len(values), field)
    if not bool(np.all(np.isfinite(values))):
        raise BadInput("counts must be finite numbers", field)
    if bool(np.any(values < 0)):
        raise BadInput("counts cannot be negative", field)
    if not series.cumulative:
        return ts, values
    step = np.diff(values)
    # A counter that went down was reset to zero and has counted up to its new value since.
    step = np.where(step < 0, values[1:], step)
    return ts[1:], step


def product_at(
    series: ProductSeries | None, ts_ns: npt.NDArray[np.int64], default: str
) -> tuple[tuple[str, ...], npt.NDArray[np.intp]]:
    """(product names, index of the product active at each timestamp); before the first
    product sample, or with no product series, the ``default`` product."""
    if series is None:
        return (default,), np.zeros(len(ts_ns), dtype=np.intp)
    ts = _check_ts(series.ts_ns, len(series.products), "products")
    names = tuple(dict.fromkeys([default, *map(str, series.products)]))
    sample_idx = np.array([names.index(str(p)) for p in series.products], dtype=np.intp)
    pos = np.searchsorted(ts, ts_ns, side="right") - 1
    out = np.zeros(len(ts_ns), dtype=np.intp)
    known = pos >= 0
    out[known] = sample_idx[pos[known]]
    return names, out
