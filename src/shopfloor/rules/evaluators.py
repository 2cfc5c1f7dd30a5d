"""One evaluator per rule kind, each vectorised over every (rule, device) binding it holds.

An evaluator keeps the state of its bindings between batches and, from one prepared batch,
returns the events of the rules selected by ``enabled`` (a mask over its rules). State is
only written once a run has computed everything, so a run that raises leaves it untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shopfloor.rules.expr import Expression
from shopfloor.rules.model import (
    NS,
    Event,
    EventKind,
    ExpressionRule,
    RateRule,
    StaleRule,
    StateRule,
    ThresholdRule,
    WindowRule,
)
from shopfloor.rules.vector import (
    F64,
    I64,
    B,
    MachineState,
    expand,
    fill_index,
    firsts,
    lasts,
    previous,
    range_reduce,
    run_machine,
)

_KIND: tuple[EventKind, EventKind] = ("cleared", "activated")


@dataclass
class Batch:
    """A batch prepared once for every evaluator: points sorted by (dense signal, ts)."""

    sig: I64  # dense signal index per point
    ts: I64
    val: F64
    pstart: I64  # per dense signal: first point
    pcount: I64  # per dense signal: number of points
    prev_ts: I64  # the signal's previous point (this or an earlier batch); -1: none
    prev_val: F64

    def rate(self) -> F64:
        """|dv/dt| per second against the previous point of the same signal (nan: none)."""
        dt = (self.ts - self.prev_ts).astype(np.float64) / NS
        with np.errstate(all="ignore"):
            r = np.abs(self.val - self.prev_val) / dt
        r[(self.prev_ts < 0) | (dt <= 0)] = np.nan
        return r


class Evaluator:
    rule_ids: list[str]
    devices: list[str]  # device names, indexed by the device numbers bindings hold

    def run(self, batch: Batch, enabled: B) -> list[Event]:
        raise NotImplementedError

    def tick(self, now: int, enabled: B) -> list[Event]:
        return []

    def _events(self, rule: I64, dev: I64, active: B, ts: I64, value: F64) -> list[Event]:
        ids, names = self.rule_ids, self.devices
        return [
            Event(ids[r], names[d], _KIND[a], t, v)
            for r, d, a, t, v in zip(
                rule.tolist(),
                dev.tolist(),
                active.tolist(),
                ts.tolist(),
                value.tolist(),
                strict=True,
            )
        ]


class LimitGroup(Evaluator):
    """Every threshold and rate-of-change rule at once: one binding per (rule, device)."""

    def __init__(
        self,
        rules: Sequence[ThresholdRule | RateRule],
        bindings: Sequence[tuple[int, int, int]],  # (rule index, device index, dense signal)
        devices: list[str],
    ) -> None:
        self.rule_ids = [r.id for r in rules]
        self.devices = devices
        arr = np.asarray(bindings, dtype=np.int64).reshape(-1, 3)
        self.rule_of, self.dev_of, self.sig = arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()
        # high: y = x against L = limit; low: mirrored (y = -x, L = -limit), one comparison.
        sign = np.array([-1.0 if getattr(r, "direction", "high") == "low" else 1.0 for r in rules])
        limit = np.array([r.limit for r in rules], dtype=np.float64)
        self.sign = sign[self.rule_of]
        self.slimit = (sign * limit)[self.rule_of]
        self.deadband = np.array([r.deadband for r in rules])[self.rule_of]
        self.on = np.array([round(r.on_delay * NS) for r in rules], dtype=np.int64)[self.rule_of]
        self.off = np.array([round(r.off_delay * NS) for r in rules], dtype=np.int64)[self.rule_of]
        self.is_rate = np.array([isinstance(r, RateRule) for r in rules])[self.rule_of]
        self.any_rate = bool(self.is_rate.any())
        self.state = MachineState.new(len(self.sig))

    def run(self, batch: Batch, enabled: B) -> list[Event]:
        sel = np.flatnonzero(enabled[self.rule_of])
        b, p = expand(batch.pstart, batch.pcount, self.sig[sel])
        g = sel[b]
        x = batch.val[p]
        if self.any_rate:
            x = np.where(self.is_rate[g], batch.rate()[p], x)
        y = x * self.sign[g]
        lim = self.slimit[g]
        active, changed = run_machine(
            g,
            batch.ts[p],
            y > lim,
            y <= lim - self.deadband[g],
            self.on[g],
            self.off[g],
            self.state,
        )
        i = np.flatnonzero(changed)
        gi = g[i]
        return self._events(self.rule_of[gi], self.dev_of[gi], active[i], batch.ts[p[i]], x[i])


class _Aligned(Evaluator):
    """Rows of several signals of each device, each carried forward to every timestamp."""

    def __init__(self, rule_id: str, names: list[str], slots: I64, devices: list[str]) -> None:
        self.rule_ids = [rule_id]
        self.devices = devices
        self.names = names
        self.slots = slots  # (devices, names) dense signal ids
        self.last = np.full(slots.shape, np.nan)  # latest value of each slot

    def align(self, batch: Batch) -> tuple[I64, I64, dict[str, F64], F64]:
        """(device, ts, columns by name, new ``last``) with one row per (device, ts)."""
        k = self.slots.shape[1]
        bb, p = expand(batch.pstart, batch.pcount, self.slots.ravel())
        ts = batch.ts[p]
        order = np.lexsort((p, ts, bb // k))
        p, bb, ts = p[order], bb[order], ts[order]
        d, j, v = bb // k, bb % k, batch.val[p]
        first = firsts(d)
        cols = []
        for jj in range(k):
            m = j == jj
            vals = np.where(m, v, self.last[d, jj])
            cols.append(vals[fill_index(m | first)])
        keep = np.ones(len(d), np.bool_)
        if len(d) > 1:
            keep[:-1] = (d[1:] != d[:-1]) | (ts[1:] != ts[:-1])
        new_last = self.last.copy()
        end = lasts(d)
        for jj in range(k):
            new_last[d[end], jj] = cols[jj][end]
        return (
            d[keep],
            ts[keep],
            {n: c[keep] for n, c in zip(self.names, cols, strict=True)},
            new_last,
        )


class ExpressionEval(_Aligned):
    def __init__(
        self, rule: ExpressionRule, expr: Expression, slots: I64, devices: list[str]
    ) -> None:
        super().__init__(rule.id, sorted(expr.names), slots, devices)
        self.expr = expr
        self.on, self.off = round(rule.on_delay * NS), round(rule.off_delay * NS)
        self.state = MachineState.new(slots.shape[0])

    def run(self, batch: Batch, enabled: B) -> list[Event]:
        d, ts, env, new_last = self.align(batch)
        res = np.asarray(self.expr.evaluate(env, len(d)), dtype=np.bool_)
        on = np.full(len(d), self.on, np.int64)
        off = np.full(len(d), self.off, np.int64)
        active, changed = run_machine(d, ts, res, ~res, on, off, self.state)
        self.last = new_last
        i = np.flatnonzero(changed)
        zero = np.zeros(len(i), np.int64)
        return self._events(zero, d[i], active[i], ts[i], active[i].astype(np.float64))


class StateEval(_Aligned):
    """Machine state: the first condition that holds wins; one event per change of state."""

    def __init__(
        self, rule: StateRule, exprs: list[Expression], slots: I64, devices: list[str]
    ) -> None:
        names = sorted(set().union(*(e.names for e in exprs)))
        super().__init__(rule.id, names, slots, devices)
        self.exprs = exprs
        self.states = [rule.default, *(s for _, s in rule.conditions)]
        self.current = np.full(slots.shape[0], -1, np.int64)  # -1: no state yet

    def run(self, batch: Batch, enabled: B) -> list[Event]:
        d, ts, env, new_last = self.align(batch)
        n = len(d)
        conds = [np.asarray(e.evaluate(env, n), dtype=np.bool_) for e in self.exprs]
        code = np.select(conds, np.arange(1, len(conds) + 1), 0).astype(np.int64)
        first = firsts(d)
        changed = code != previous(code, first, self.current[d])
        end = lasts(d)
        self.current[d[end]] = code[end]
        self.last = new_last
        i = np.flatnonzero(changed)
        return [
            Event(self.rule_ids[0], self.devices[dv], "state", t, float(c - 1), self.states[c])
            for dv, t, c in zip(d[i].tolist(), ts[i].tolist(), code[i].tolist(), strict=True)
        ]


def _agg(kind: str, cnt: F64, mean: F64, m2: F64, mn: F64, mx: F64) -> F64:
    if kind == "avg":
        return mean
    if kind == "min":
        return mn
    if kind == "max":
        return mx
    if kind == "count":
        return cnt
    return np.sqrt(np.maximum(m2, 0.0) / np.maximum(cnt, 1.0))  # population stddev


class _WindowBase(Evaluator):
    def __init__(self, rule: WindowRule, devs: I64, sigs: I64, devices: list[str]) -> None:
        self.rule_ids = [rule.id]
        self.devices = devices
        self.dev_of, self.sig = devs, sigs
        self.agg = rule.agg
        self.width = round(rule.window * NS)
        self.sign = -1.0 if rule.direction == "low" else 1.0
        self.slimit = self.sign * rule.limit
        self.deadband = rule.deadband
        self.state = MachineState.new(len(sigs))

    def entries(self, batch: Batch) -> tuple[I64, I64, F64]:
        b, p = expand(batch.pstart, batch.pcount, self.sig)
        v = batch.val[p]
        ok = np.isfinite(v)  # a missing value is no sample of the window
        return b[ok], batch.ts[p[ok]], v[ok]

    def decide(self, b: I64, ts: I64, metric: F64) -> list[Event]:
        y = metric * self.sign
        zeros = np.zeros(len(b), np.int64)
        active, changed = run_machine(
            b, ts, y > self.slimit, y <= self.slimit - self.deadband, zeros, zeros, self.state
        )
        i = np.flatnonzero(changed)
        return self._events(
            np.zeros(len(i), np.int64), self.dev_of[b[i]], active[i], ts[i], metric[i]
        )


class TumblingEval(_WindowBase):
    """Windows aligned to multiples of the width since the epoch; a window is decided (at its
    end) when the signal's first point past its end arrives."""

    def __init__(self, rule: WindowRule, devs: I64, sigs: I64, devices: list[str]) -> None:
        super().__init__(rule, devs, sigs, devices)
        n = len(sigs)
        self.cur_w = np.full(n, -1, np.int64)  # open window per binding; -1: none
        self.cnt, self.mean, self.m2 = np.zeros(n), np.zeros(n), np.zeros(n)
        self.mn, self.mx = np.full(n, np.inf), np.full(n, -np.inf)

    def run(self, batch: Batch, enabled: B) -> list[Event]:
        b, ts, v = self.entries(batch)
        if not len(b):
            return []
        w = ts // self.width
        start = firsts(b)
        start[1:] |= w[1:] != w[:-1]
        s = np.flatnonzero(start)
        cnt = np.diff(np.append(s, len(b))).astype(np.float64)
        sb, sw = b[s], w[s]
        mean = np.add.reduceat(v, s) / cnt
        dev = v - np.repeat(mean, cnt.astype(np.int64))
        m2 = np.add.reduceat(dev * dev, s)
        mn, mx = np.minimum.reduceat(v, s), np.maximum.reduceat(v, s)
        # The open window carried from the last batch joins the first segment, or closes.
        sfirst = firsts(sb)
        fb = sb[sfirst]
        same = self.cur_w[fb] == sw[sfirst]
        fi = np.flatnonzero(sfirst)[same]
        cb = fb[same]
        na, nb = self.cnt[cb], cnt[fi]
        tot = na + nb
        delta = mean[fi] - self.mean[cb]
        m2[fi] = self.m2[cb] + m2[fi] + delta * delta * na * nb / tot
        mean[fi] = self.mean[cb] + delta * nb / tot
        cnt[fi] = tot
        mn[fi] = np.minimum(mn[fi], self.mn[cb])
        mx[fi] = np.maximum(mx[fi], self.mx[cb])
        ob = fb[~same & (self.cur_w[fb] >= 0)]  # carried windows closed by a later point
        slast = lasts(sb)
        closed = ~slast
        cl_b = np.concatenate([ob, sb[closed]])
        cl_end = np.concatenate([(self.cur_w[ob] + 1) * self.width, (sw[closed] + 1) * self.width])
        metric = np.concatenate(
            [
                _agg(self.agg, self.cnt[ob], self.mean[ob], self.m2[ob], self.mn[ob], self.mx[ob]),
                _agg(self.agg, cnt[closed], mean[closed], m2[closed], mn[closed], mx[closed]),
            ]
        )
        order = np.lexsort((cl_end, cl_b))
        events = self.decide(cl_b[order], cl_end[order], metric[order])
        lb = sb[slast]
        self.cur_w[lb], self.cnt[lb], self.mean[lb] = sw[slast], cnt[slast], mean[slast]
        self.m2[lb], self.mn[lb], self.mx[lb] = m2[slast], mn[slast], mx[slast]
        return events


class SlidingEval(_WindowBase):
    """At every point, the aggregate over the signal's points in (ts - width, ts]."""

    def __init__(self, rule: WindowRule, devs: I64, sigs: I64, devices: list[str]) -> None:
        super().__init__(rule, devs, sigs, devices)
        self.buf_b = np.zeros(0, np.int64)
        self.buf_ts = np.zeros(0, np.int64)
        self.buf_v = np.zeros(0)

    def run(self, batch: Batch, enabled: B) -> list[Event]:
        nb, nts, nv = self.entries(batch)
        if not len(nb):
            return []
        b = np.concatenate([self.buf_b, nb])
        ts = np.concatenate([self.buf_ts, nts])
        v = np.concatenate([self.buf_v, nv])
        new = np.concatenate([np.zeros(len(self.buf_b), np.bool_), np.ones(len(nb), np.bool_)])
        order = np.lexsort((ts, b))  # stable: buffered points stay before new ones
        b, ts, v, new = b[order], ts[order], v[order], new[order]
        width = self.width
        tmin = int(ts.min())
        stride = int(ts.max()) - tmin + width + 1
        if stride * (len(self.sig) + 1) < 2**62:
            key = (ts - tmin) + b * stride  # one sorted key: windows never cross bindings
            start = np.searchsorted(key, key - width, side="right")
        else:  # too wide a span for one key: per binding
            start = np.empty(len(b), np.int64)
            edges = np.flatnonzero(firsts(b))
            for lo, hi in zip(edges, [*edges[1:], len(b)], strict=True):
                start[lo:hi] = lo + np.searchsorted(ts[lo:hi], ts[lo:hi] - width, side="right")
        i = np.flatnonzero(new)
        j = start[i]
        cnt = (i - j + 1).astype(np.float64)
        base = v[fill_index(firsts(b))]  # centred per binding: sums of squares stay exact
        c = v - base
        cs = np.concatenate([[0.0], np.cumsum(c)])
        cs2 = np.concatenate([[0.0], np.cumsum(c * c)])
        s1, s2 = cs[i + 1] - cs[j], cs2[i + 1] - cs2[j]
        mean_c = s1 / cnt
        if self.agg == "min":
            metric = range_reduce(v, j, i, np.minimum)
        elif self.agg == "max":
            metric = range_reduce(v, j, i, np.maximum)
        elif self.agg == "count":
            metric = cnt
        elif self.agg == "avg":
            metric = mean_c + base[i]
        else:
            metric = np.sqrt(np.maximum(s2 / cnt - mean_c * mean_c, 0.0))
        events = self.decide(b[i], ts[i], metric)
        end_ts = ts[lasts(b)]
        gl = b[lasts(b)]
        horizon = np.zeros(len(self.sig), np.int64)
        horizon[gl] = end_ts - width
        keep = ts > horizon[b]
        self.buf_b, self.buf_ts, self.buf_v = b[keep], ts[keep], v[keep]
        return events


class StaleEval(Evaluator):
    """No point for longer than the timeout: activated at last point + timeout, cleared at the
    next point. Gaps inside a batch give both; :meth:`tick` finds signals silent until now."""

    def __init__(self, rule: StaleRule, devs: I64, sigs: I64, devices: list[str]) -> None:
        self.rule_ids = [rule.id]
        self.devices = devices
        self.dev_of, self.sig = devs, sigs
        self.timeout = round(rule.timeout * NS)
        self.last_seen = np.full(len(sigs), -1, np.int64)  # -1: not seen, not yet watched
        self.active = np.zeros(len(sigs), np.bool_)

    def run(self, batch: Batch, enabled: B) -> list[Event]:
        b, p = expand(batch.pstart, batch.pcount, self.sig)
        if not len(b):
            return []
        ts = batch.ts[p]
        first = firsts(b)
        prev = previous(ts, first, self.last_seen[b])
        gap = (prev >= 0) & (ts - prev > self.timeout)
        resume = first & self.active[b]
        fresh = gap & ~resume
        secs = (ts - prev) / NS
        zero = np.zeros(0, np.int64)
        i, k = np.flatnonzero(resume), np.flatnonzero(fresh)
        rule = np.zeros(len(i) + 2 * len(k), np.int64)
        dev = self.dev_of[np.concatenate([b[i], b[k], b[k]])]
        act = np.concatenate(
            [np.zeros(len(i), np.bool_), np.ones(len(k), np.bool_), np.zeros(len(k), np.bool_)]
        )
        when = np.concatenate([ts[i], prev[k] + self.timeout, ts[k], zero])
        val = np.concatenate([secs[i], secs[k], secs[k]])
        end = lasts(b)
        self.last_seen[b[end]] = ts[end]
        self.active[b[end]] = False
        return self._events(rule, dev, act, when, val)

    def tick(self, now: int, enabled: B) -> list[Event]:
        self.last_seen[self.last_seen < 0] = now  # watched from now on
        hit = np.flatnonzero(~self.active & (now - self.last_seen > self.timeout))
        self.active[hit] = True
        return self._events(
            np.zeros(len(hit), np.int64),
            self.dev_of[hit],
            np.ones(len(hit), np.bool_),
            self.last_seen[hit] + self.timeout,
            (now - self.last_seen[hit]) / NS,
        )


def as_i64(x: npt.ArrayLike) -> I64:
    return np.asarray(x, dtype=np.int64)
