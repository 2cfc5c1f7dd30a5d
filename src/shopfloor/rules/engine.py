"""The rule engine: rules over columnar point batches, vectorised, with state between batches.

Per batch the points are prepared once (unknown signals, bad-quality and late points dropped,
sorted by signal then time); each evaluator then handles all its (rule, device) bindings with
numpy: one evaluator for every threshold and rate-of-change rule together, one per other rule.
A rule whose evaluation raises is disabled with the reason (:meth:`RuleEngine.status`); the
other rules go on.

Late points (older than the last point already evaluated for their signal) are dropped and
counted: every rule sees each signal in time order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.core.errors import BadInput
from shopfloor.core.kinds import DataType
from shopfloor.core.quality import BAD
from shopfloor.rules.evaluators import (
    Batch,
    Evaluator,
    ExpressionEval,
    LimitGroup,
    SlidingEval,
    StaleEval,
    StateEval,
    TumblingEval,
)
from shopfloor.rules.expr import Expression, compile_expr
from shopfloor.rules.model import (
    Device,
    Event,
    ExpressionRule,
    RateRule,
    Rule,
    StaleRule,
    StateRule,
    ThresholdRule,
    WindowRule,
)
from shopfloor.rules.vector import firsts, previous

__all__ = ["RuleEngine", "RuleStatus", "rule_signal_ids", "validate_rule"]

_Call = Callable[[Evaluator, npt.NDArray[np.bool_]], list[Event]]
_KIND_NAMES = {
    ThresholdRule: "threshold",
    RateRule: "rate",
    ExpressionRule: "expression",
    WindowRule: "window",
    StaleRule: "stale",
    StateRule: "state",
}


@dataclass(frozen=True)
class RuleStatus:
    kind: str
    devices: int
    enabled: bool
    reason: str | None = None


def _targets(rule: Rule, devices: Sequence[Device]) -> list[int]:
    """Indexes of the devices a rule applies to (BadInput when there are none)."""
    if rule.device is not None:
        hit = [i for i, d in enumerate(devices) if d.id == rule.device]
        if not hit:
            raise BadInput(f"rule {rule.id!r}: unknown device {rule.device!r}", "device")
        return hit
    hit = [i for i, d in enumerate(devices) if d.type == rule.device_type]
    if not hit:
        raise BadInput(f"rule {rule.id!r}: no device of type {rule.device_type!r}", "device_type")
    return hit


def _signal(rule: Rule, dev: Device) -> int:
    name: str = getattr(rule, "signal")  # noqa: B009 - every single-signal kind has one
    if name not in dev.signals:
        raise BadInput(f"rule {rule.id!r}: device {dev.id!r} has no signal {name!r}", "signal")
    return dev.signals[name]


def _known(dev: Device) -> dict[str, DataType]:
    return {n: dev.data_types.get(n, DataType.FLOAT) for n in dev.signals}


def _expressions(rule: ExpressionRule | StateRule, dev: Device) -> list[Expression]:
    known = _known(dev)
    if isinstance(rule, ExpressionRule):
        return [compile_expr(rule.expression, known, expect="bool", field="expression")]
    return [
        compile_expr(src, known, expect="bool", field=f"conditions[{i}]")
        for i, (src, _) in enumerate(rule.conditions)
    ]


def validate_rule(rule: Rule, devices: Sequence[Device]) -> None:
    """The save-time check: raise BadInput (with position for expressions) if ``rule`` is bad."""
    for i in _targets(rule, devices):
        dev = devices[i]
        if isinstance(rule, ExpressionRule | StateRule):
            _expressions(rule, dev)
        else:
            _signal(rule, dev)


def rule_signal_ids(rule: Rule, dev: Device) -> list[int]:
    """The ids of the signals ``rule`` reads on ``dev`` (the data an alarm of it carries)."""
    if isinstance(rule, ExpressionRule | StateRule):
        names = set().union(*(e.names for e in _expressions(rule, dev)))
        return sorted(dev.signals[n] for n in names)
    return [_signal(rule, dev)]


class RuleEngine:
    """Evaluates rules over point batches; call :meth:`process` per batch, :meth:`tick` for time."""

    def __init__(self, devices: Sequence[Device], rules: Sequence[Rule]) -> None:
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise BadInput(f"rule id {dup!r} is used twice", "id")
        dev_ids = [d.id for d in devices]
        if len(set(dev_ids)) != len(dev_ids):
            raise BadInput("device ids must be unique", "devices")
        self._names = dev_ids
        self._known = np.unique(
            np.array([s for d in devices for s in d.signals.values()], dtype=np.int64)
        )
        nsig = len(self._known)
        self._last_ts = np.full(nsig, -1, np.int64)
        self._last_val = np.full(nsig, np.nan)
        self._order = {r.id: i for i, r in enumerate(rules)}
        self._status: dict[str, RuleStatus] = {}
        self._late = 0
        self._evaluators: list[Evaluator] = []

        def dense(sid: int) -> int:
            return int(np.searchsorted(self._known, sid))

        limit_rules: list[ThresholdRule | RateRule] = []
        limit_bindings: list[tuple[int, int, int]] = []
        for rule in rules:
            targets = _targets(rule, devices)
            self._status[rule.id] = RuleStatus(_KIND_NAMES[type(rule)], len(targets), True)
            if isinstance(rule, ThresholdRule | RateRule):
                for i in targets:
                    limit_bindings.append((len(limit_rules), i, dense(_signal(rule, devices[i]))))
                limit_rules.append(rule)
            elif isinstance(rule, ExpressionRule | StateRule):
                exprs = [_expressions(rule, devices[i]) for i in targets]
                names = sorted(set().union(*(e.names for e in exprs[0])))
                slots = np.array(
                    [[dense(devices[i].signals[n]) for n in names] for i in targets], np.int64
                )
                local = [dev_ids[i] for i in targets]
                if isinstance(rule, ExpressionRule):
                    self._evaluators.append(ExpressionEval(rule, exprs[0][0], slots, local))
                else:
                    self._evaluators.append(StateEval(rule, exprs[0], slots, local))
            else:
                devs = np.array(targets, dtype=np.int64)
                sigs = np.array([dense(_signal(rule, devices[i])) for i in targets], np.int64)
                if isinstance(rule, StaleRule):
                    self._evaluators.append(StaleEval(rule, devs, sigs, dev_ids))
                elif rule.mode == "tumbling":
                    self._evaluators.append(TumblingEval(rule, devs, sigs, dev_ids))
                else:
                    self._evaluators.append(SlidingEval(rule, devs, sigs, dev_ids))
        if limit_rules:
            self._evaluators.insert(0, LimitGroup(limit_rules, limit_bindings, dev_ids))

    # -- input -----------------------------------------------------------------------------

    def process(self, batch: pa.Table, now: int | None = None) -> list[Event]:
        """Evaluate a point batch (core.types.POINT_SCHEMA); with ``now`` also :meth:`tick`."""
        return self.process_arrays(
            batch.column("signal_id").to_numpy(),
            batch.column("ts").to_numpy(),
            batch.column("value").to_numpy(zero_copy_only=False),
            batch.column("quality").to_numpy(),
            now=now,
        )

    def process_arrays(
        self,
        signal_id: npt.ArrayLike,
        ts: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike | None = None,
        now: int | None = None,
    ) -> list[Event]:
        """:meth:`process` on bare columns (signal_id, ts ns, value float64, quality)."""
        prepared = self._prepare(signal_id, ts, value, quality)
        events: list[Event] = []
        if prepared is not None:

            def run(e: Evaluator, m: npt.NDArray[np.bool_]) -> list[Event]:
                return e.run(prepared, m)

            for ev in self._evaluators:
                events.extend(self._guarded(ev, run))
            end = np.flatnonzero(np.diff(np.append(prepared.sig, -1)) != 0)  # last per signal
            self._last_ts[prepared.sig[end]] = prepared.ts[end]
            self._last_val[prepared.sig[end]] = prepared.val[end]
        if now is not None:
            events.extend(self._tick(now))
        return self._sorted(events)

    @property
    def has_rules(self) -> bool:
        return bool(self._order)

    def tick(self, now: int) -> list[Event]:
        """Time-driven rules (stale) at ``now`` (ns UTC)."""
        return self._sorted(self._tick(now))

    def status(self) -> dict[str, RuleStatus]:
        return dict(self._status)

    @property
    def late_points(self) -> int:
        """Points dropped so far because their signal had a later point already."""
        return self._late

    # -- internals ---------------------------------------------------------------------------

    def _tick(self, now: int) -> list[Event]:
        def tick(e: Evaluator, m: npt.NDArray[np.bool_]) -> list[Event]:
            return e.tick(now, m)

        out: list[Event] = []
        for ev in self._evaluators:
            out.extend(self._guarded(ev, tick))
        return out

    def _sorted(self, events: list[Event]) -> list[Event]:
        order = self._order
        return sorted(events, key=lambda e: (e.ts, order[e.rule_id], e.device))

    def _guarded(self, ev: Evaluator, call: _Call) -> list[Event]:
        enabled = np.array([self._status[r].enabled for r in ev.rule_ids], dtype=np.bool_)
        if not enabled.any():
            return []
        try:
            return call(ev, enabled)
        except Exception as exc:
            if len(ev.rule_ids) == 1:
                self._disable(ev.rule_ids[0], exc)
                return []
        # A shared evaluator failed: run its rules one at a time to find the failing ones.
        out: list[Event] = []
        for k in np.flatnonzero(enabled):
            one = np.zeros(len(enabled), np.bool_)
            one[k] = True
            try:
                out.extend(call(ev, one))
            except Exception as exc:
                self._disable(ev.rule_ids[k], exc)
        return out

    def _disable(self, rule_id: str, exc: Exception) -> None:
        old = self._status[rule_id]
        reason = f"disabled at run time: {type(exc).__name__}: {exc}"
        self._status[rule_id] = RuleStatus(old.kind, old.devices, False, reason)

    def _prepare(
        self,
        signal_id: npt.ArrayLike,
        ts_in: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike | None,
    ) -> Batch | None:
        sid = np.asarray(signal_id, dtype=np.int64)
        ts = np.asarray(ts_in, dtype=np.int64)
        val = np.asarray(value, dtype=np.float64)
        if not len(ts) == len(val) == len(sid):
            raise BadInput(
                f"{len(sid)} signal ids, {len(ts)} timestamps, {len(val)} values", "batch"
            )
        known = self._known
        if not len(known) or not len(sid):
            return None
        d = np.searchsorted(known, sid)
        dc = np.minimum(d, len(known) - 1)
        keep = known[dc] == sid
        if quality is not None:
            keep &= (np.asarray(quality, dtype=np.uint32) & BAD) == 0
        late = ts < self._last_ts[dc]
        self._late += int((late & keep).sum())
        keep &= ~late
        if not keep.all():
            dc, ts, val = dc[keep], ts[keep], val[keep]
        if not len(dc):
            return None
        # Already time ordered (the usual case): a stable sort by signal keeps it so.
        if len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all()):
            order = np.argsort(dc, kind="stable")
        else:
            order = np.lexsort((ts, dc))
        sig, ts, val = dc[order], ts[order], val[order]
        pcount = np.bincount(sig, minlength=len(known)).astype(np.int64)
        pstart = np.cumsum(pcount) - pcount
        first = firsts(sig)
        prev_ts = previous(ts, first, self._last_ts[sig])
        prev_val = previous(val, first, self._last_val[sig])
        return Batch(sig, ts, val, pstart, pcount, prev_ts, prev_val)
