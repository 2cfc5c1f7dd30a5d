"""Vectorised building blocks of the rule engine: grouped forward fill and the on/off machine.

Arrays here are "entries" sorted by (group, ts): a group is one rule binding (a rule on one
device's signal). ``first`` marks the first entry of each group; the state carried from the
previous batch enters at those positions, so nothing leaks from one group into the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
_A = TypeVar("_A", bound=np.ndarray[Any, Any])


def firsts(g: I64) -> B:
    out = np.ones(len(g), dtype=np.bool_)
    if len(g) > 1:
        np.not_equal(g[1:], g[:-1], out=out[1:])
    return out


def lasts(g: I64) -> B:
    out = np.ones(len(g), dtype=np.bool_)
    if len(g) > 1:
        np.not_equal(g[1:], g[:-1], out=out[:-1])
    return out


def fill_index(mark: B) -> I64:
    """Index of the latest marked entry at or before each entry (the first entry must be marked)."""
    idx = np.where(mark, np.arange(len(mark), dtype=np.int64), 0)
    np.maximum.accumulate(idx, out=idx)
    return idx


def previous(x: _A, first: B, carried: _A) -> _A:
    """Each entry's predecessor in its group; ``carried`` (per entry) at group starts."""
    out: _A = x.copy()
    out[1:] = x[:-1]
    out[first] = carried[first]
    return out


@dataclass
class MachineState:
    """Per-group state of the on/off machine (arrays indexed by group)."""

    raw: B  # the hysteresis condition after the last point
    active: B  # the reported state (after on/off delays)
    since: I64  # ts at which ``raw`` took its current value

    @classmethod
    def new(cls, n: int) -> MachineState:
        return cls(np.zeros(n, np.bool_), np.zeros(n, np.bool_), np.zeros(n, np.int64))


def run_machine(
    g: I64,
    ts: I64,
    set_: B,
    clear: B,
    on_ns: I64,
    off_ns: I64,
    state: MachineState,
) -> tuple[B, B]:
    """Hysteresis plus on/off delays over entries sorted by (g, ts).

    ``set_``/``clear`` (never both): the condition starts / ends at that entry; neither keeps
    the previous condition (the deadband). The reported state turns on at the first entry at
    which the condition has held for ``on_ns`` since it started (off likewise with ``off_ns``),
    so a delay spans batch boundaries through ``state.since``. ``on_ns``/``off_ns`` are per
    entry. Returns (active per entry, changed per entry) and updates ``state`` in place.
    """
    n = len(g)
    if n == 0:
        return np.zeros(0, np.bool_), np.zeros(0, np.bool_)
    first = firsts(g)
    code = set_.astype(np.int8) - clear.astype(np.int8)
    at0 = first & (code == 0)
    code[at0] = np.where(state.raw[g[at0]], 1, -1)
    raw = code[fill_index(code != 0)] > 0
    raw_prev = previous(raw, first, state.raw[g])
    change = raw != raw_prev
    since_mark = change | first
    since_val = np.where(change, ts, state.since[g])
    since = since_val[fill_index(since_mark)]
    held = ts - since
    acode = (raw & (held >= on_ns)).astype(np.int8) - (~raw & (held >= off_ns)).astype(np.int8)
    at0 = first & (acode == 0)
    acode[at0] = np.where(state.active[g[at0]], 1, -1)
    active = acode[fill_index(acode != 0)] > 0
    changed = active != previous(active, first, state.active[g])
    last = lasts(g)
    gl = g[last]
    state.raw[gl] = raw[last]
    state.active[gl] = active[last]
    state.since[gl] = since[last]
    return active, changed


def expand(pstart: I64, pcount: I64, bind_sig: I64) -> tuple[I64, I64]:
    """Entries (binding, point) for every point of every binding's signal, ordered by binding.

    Points are sorted by (signal, ts) with signal ``s`` at ``pstart[s]:pstart[s]+pcount[s]``,
    so the entries come out sorted by (binding, ts) without a sort.
    """
    sizes = pcount[bind_sig]
    total = int(sizes.sum())
    b = np.repeat(np.arange(len(bind_sig), dtype=np.int64), sizes)
    offsets = np.cumsum(sizes) - sizes
    p = np.arange(total, dtype=np.int64) - np.repeat(offsets - pstart[bind_sig], sizes)
    return b, p


def range_reduce(values: F64, start: I64, end: I64, op: np.ufunc) -> F64:
    """``op.reduce(values[start[i]:end[i]+1])`` for every i (sparse table, O(n log n))."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    levels = [values]
    span = 1
    while span * 2 <= n:
        prev = levels[-1]
        levels.append(op(prev[:-span], prev[span:]))
        span *= 2
    length = end - start + 1
    k = np.floor(np.log2(np.maximum(length, 1))).astype(np.int64)
    out = np.empty(len(start))
    for lv in np.unique(k):
        sel = k == lv
        table = levels[int(lv)]
        s, e = start[sel], end[sel] - (1 << int(lv)) + 1
        out[sel] = op(table[s], table[e])
    return out
