"""Live evaluation: durable point batches go through each tenant's rules; alarm changes go out.

:class:`RulesRuntime` sits beside the ingest path. ``Ingestor`` hands every batch that is
durable to :meth:`RulesRuntime.feed`, which only enqueues it (bounded; when full the batch is
dropped and counted, ingest never waits or fails because of rules). One worker task takes
what is queued, joins the batches of one tenant, runs that tenant's :class:`RuleEngine` over
them (numpy work, in a thread), stores the resulting alarm changes through
:meth:`AlarmStore.apply` (SQL, in a thread) and publishes them to the tenant's live
subscribers (``GET /api/v1/alarms/live``, a WebSocket).

Per tenant the engine is built from the enabled rules and the devices of the registry, and
rebuilt when either changed. The check on the evaluation path is cheap: at most every
``refresh_s`` one aggregate query (:meth:`RuleStore.change_key`); loading every rule, device
and signal to compare them in full took 100-400 ms for a large tenant and held up the batch
waiting behind it (the alarm-latency benchmark's slow samples). The full comparison runs in
the background every ``FULL_CHECK_S`` and marks the engine for a rebuild when it differs. A rule that fails at
run time is disabled by the engine; the runtime stores that, with the engine's reason, through
:meth:`RuleStore.set_enabled`, so the next build leaves it out. Time-driven rules (stale) are
ticked about once a second.

A rule's actions (rules/rule_actions.py) run for its stored alarm changes that trigger them
(``activated``: annunciated; ``cleared``): each in its own task, at most ``ACTION_CONCURRENCY``
at once, so a slow webhook holds up neither evaluation nor the other actions. An action is
built per run from the rule's stored config and the dependencies ``action_deps(tenant_id,
rule)`` gives (egress check, MQTT publisher, command sender); every outcome goes to
``on_action`` (the platform audits it) and is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa

from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import now_ns, to_iso
from shopfloor.registry.service import Registry
from shopfloor.rules import model
from shopfloor.rules.actions import ActionDeps, ActionResult, build_action
from shopfloor.rules.alarms import AlarmEvent
from shopfloor.rules.engine import RuleEngine, RuleStatus, rule_signal_ids
from shopfloor.rules.rule_actions import RuleAction, triggers_of
from shopfloor.rules.store import AlarmStore, RuleStore

__all__ = ["LiveAlarm", "RulesRuntime", "Subscription"]

log = logging.getLogger(__name__)

QUEUE_BATCHES: Final = 1024  # batches waiting for the worker; more are dropped and counted
SUBSCRIBER_QUEUE: Final = 1000  # alarm changes waiting for one slow WebSocket client
TICK_S: Final = 1.0
FULL_CHECK_S: Final = 30.0  # the full engine comparison, off the evaluation path
ACTION_CONCURRENCY: Final = 16  # actions running at once (webhooks wait on the network)
ACTION_BACKLOG: Final = 1000  # actions waiting to run; beyond, in an alarm flood, dropped
# An alarm raised from old data (an edge buffer replaying an outage, a backfill) is stored and
# shown, but runs no actions: a command or a page about a condition of hours ago misleads.
ACTION_MAX_AGE_NS: Final = 10 * 60 * 1_000_000_000

# (tenant_id, rule) -> what the rule's actions may use
DepsFactory = Callable[[int, str], ActionDeps]
# (tenant_id, rule, device, action, result)
ActionListener = Callable[[int, str, str, RuleAction, ActionResult], None]


@dataclass(frozen=True, slots=True)
class Partition:
    """The devices one rules process evaluates: those whose name hashes to ``index`` of
    ``count``. A rule's state (delays, windows, the last value) is per rule and device and an
    expression reads the signals of one device, so splitting by device splits no state; every
    process keeps the whole rule set and drops the rows of other processes' devices. The hash
    is CRC-32 of the name: the same in every process and across restarts."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise BadInput(
                f"rules partition {self.index}/{self.count}: need 0 <= index < count",
                "rules_partition",
            )

    def owns(self, device: str) -> bool:
        return self.count == 1 or zlib.crc32(device.encode()) % self.count == self.index

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"i/n"``, e.g. ``"0/2"``."""
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise BadInput(
                f"rules partition {text!r}: expected INDEX/COUNT, e.g. 0/2", "rules_partition"
            )
        return cls(int(index), int(count))


@dataclass(frozen=True, slots=True)
class LiveAlarm:
    """One alarm change as it is published: the history event with names and the place."""

    rule: str
    device: str
    asset_id: int | None
    event: AlarmEvent

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "type": "alarm",
            "rule": self.rule,
            "device": self.device,
            "ts": e.ts,
            "time": to_iso(e.ts),
            "from_state": e.from_state.value,
            "to_state": e.to_state.value,
            "cause": e.cause.value,
            "value": e.value,
            "area": e.area,
            "priority": int(e.priority),
            "annunciated": e.annunciated,
        }


@dataclass(eq=False)  # hashed by identity: kept in a set
class Subscription:
    """One live subscriber of a tenant's alarm changes; ``dropped`` counts what it missed."""

    tenant_id: int
    queue: asyncio.Queue[LiveAlarm] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    dropped: int = 0


@dataclass
class _Tenant:
    engine: RuleEngine
    fingerprint: tuple[Any, ...]
    checked: float
    change_key: tuple[Any, ...]  # RuleStore.change_key when the fingerprint was taken
    rule_ids: dict[int, str]  # registry rule id -> rule name
    devices: dict[int, tuple[str, int | None]]  # registry device id -> (name, asset id)
    actions: dict[str, tuple[RuleAction, ...]] = field(default_factory=dict)  # by rule name
    signal_ids: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (rule, device)
    disabled: set[str] = field(default_factory=set)  # already stored as disabled
    stale: bool = False  # the background full check found a change the key missed


class RulesRuntime:
    """Feeds durable batches through the tenants' rules and publishes alarm changes."""

    def __init__(
        self,
        registry: Registry,
        rules: RuleStore,
        alarms: AlarmStore,
        *,
        queue_size: int = QUEUE_BATCHES,
        refresh_s: float = 1.0,
        full_check_s: float = FULL_CHECK_S,
        partition: Partition | None = None,
        action_deps: DepsFactory | None = None,
        on_action: ActionListener | None = None,
    ) -> None:
        self.registry = registry
        self.rules = rules
        self.alarms = alarms
        self.refresh_s = refresh_s
        self.full_check_s = full_check_s
        self.partition = partition or Partition()
        # Called with every alarm change published here (rules/bus.py forwards them to the
        # API processes' live subscribers when rules run in their own processes).
        self.on_published: Callable[[int, Sequence[LiveAlarm]], None] | None = None
        self.rebuilds = 0  # engines built (first builds included)
        self.action_deps = action_deps
        self.on_action = on_action
        self.actions_ok = 0
        self.actions_failed = 0
        self.actions_skipped_old = 0
        self.actions_dropped = 0
        self._action_tasks: set[asyncio.Task[None]] = set()
        self._action_slots: asyncio.Semaphore | None = None
        self._size = queue_size
        self._queue: asyncio.Queue[tuple[int, pa.Table]] = asyncio.Queue(queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tenants: dict[int, _Tenant] = {}
        self._subscribers: dict[int, set[Subscription]] = {}
        self._warned = False
        self._lock = threading.Lock()
        self.dropped = 0  # batches dropped because the queue was full
        self.batches = 0  # batches evaluated
        self.skipped = 0  # batches of tenants without rules, not queued
        self.published = 0  # alarm changes published

    # -- input ---------------------------------------------------------------------------------

    def feed(self, tenant_id: int, batch: pa.Table) -> None:
        """Hand over a durable batch; never blocks, never raises. Before :meth:`run` started
        (no platform loop) the batch is ignored."""
        loop = self._loop
        if loop is None or batch.num_rows == 0:
            return
        t = self._tenants.get(tenant_id)
        # A tenant without rules: nothing to evaluate, so no queueing, no thread hop, no
        # engine bookkeeping per batch; only until the next freshness check, so a new rule
        # is still seen within refresh_s.
        if (
            t is not None
            and not t.engine.has_rules
            and not t.stale
            and time.monotonic() - t.checked < self.refresh_s
        ):
            self.skipped += 1
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(tenant_id, batch)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._put, tenant_id, batch)

    def _put(self, tenant_id: int, batch: pa.Table) -> None:
        try:
            self._queue.put_nowait((tenant_id, batch))
        except asyncio.QueueFull:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                log.warning(
                    "rules are behind ingest: the queue of %d batches is full; batches are "
                    "dropped (not evaluated) and counted, ingest goes on",
                    self._queue.maxsize,
                )

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- subscribers ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self, tenant_id: int) -> AsyncIterator[Subscription]:
        sub = Subscription(tenant_id)
        self._subscribers.setdefault(tenant_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subscribers.get(tenant_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[tenant_id]

    def _publish(self, tenant_id: int, changes: Sequence[LiveAlarm]) -> None:
        self.deliver(tenant_id, changes)
        hook = self.on_published
        if hook is not None:
            try:
                hook(tenant_id, changes)
            except Exception:  # the live feed elsewhere is best effort; the store has them
                log.exception("tenant %d: forwarding alarm changes failed", tenant_id)

    def deliver(self, tenant_id: int, changes: Sequence[LiveAlarm]) -> None:
        """Hand alarm changes to this process's live subscribers (WebSockets) only."""
        self.published += len(changes)
        for sub in self._subscribers.get(tenant_id, ()):
            for change in changes:
                try:
                    sub.queue.put_nowait(change)
                except asyncio.QueueFull:
                    sub.dropped += 1

    # -- status --------------------------------------------------------------------------------

    def status(self, tenant_id: int) -> dict[str, RuleStatus]:
        """The engine's view of the tenant's rules (empty before its first batch)."""
        t = self._tenants.get(tenant_id)
        return {} if t is None else t.engine.status()

    def invalidate(self, tenant_id: int | None = None) -> None:
        """Rebuild the tenant's engine (every engine: None) on its next batch."""
        if tenant_id is None:
            self._tenants.clear()
        else:
            self._tenants.pop(tenant_id, None)

    # -- the worker ----------------------------------------------------------------------------

    async def run(self) -> None:
        """The worker, for the life of the platform (cancel to stop)."""
        self._queue = asyncio.Queue(self._size)  # bound to this loop
        self._loop = asyncio.get_running_loop()
        last_tick = time.monotonic()
        checker = self._loop.create_task(self._full_checks(), name="rules-full-check")
        try:
            while True:
                timeout = max(0.0, TICK_S - (time.monotonic() - last_tick))
                try:
                    first = await asyncio.wait_for(self._queue.get(), timeout)
                    todo = [first]
                    while not self._queue.empty():
                        todo.append(self._queue.get_nowait())
                except TimeoutError:
                    todo = []
                by_tenant: dict[int, list[pa.Table]] = {}
                for tenant_id, batch in todo:
                    by_tenant.setdefault(tenant_id, []).append(batch)
                tick = time.monotonic() - last_tick >= TICK_S
                if tick:
                    last_tick = time.monotonic()
                    for tenant_id in self._tenants:
                        by_tenant.setdefault(tenant_id, [])
                for tenant_id, batches in by_tenant.items():
                    try:
                        await self._evaluate(tenant_id, batches, tick)
                    except Exception:
                        log.exception("tenant %d: rule evaluation failed", tenant_id)
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
            self._loop = None

    async def _full_checks(self) -> None:
        """Every ``full_check_s``, compare each engine's rules and devices in full, in a thread
        beside evaluation; a difference the cheap key missed marks the engine stale."""
        last = time.monotonic()
        while True:
            # Short sleeps: a changed ``full_check_s`` takes effect without a long wait.
            await asyncio.sleep(min(self.full_check_s, 1.0))
            if time.monotonic() - last < self.full_check_s:
                continue
            last = time.monotonic()
            for tenant_id, t in list(self._tenants.items()):
                try:
                    _, key, _ = await asyncio.to_thread(self._fingerprint, tenant_id)
                except Exception:
                    log.exception("tenant %d: rules full check failed", tenant_id)
                    continue
                if key != t.fingerprint and self._tenants.get(tenant_id) is t:
                    t.stale = True

    async def _evaluate(self, tenant_id: int, batches: list[pa.Table], tick: bool) -> None:
        t = await asyncio.to_thread(self._engine, tenant_id)
        if t is None:
            return
        engine = t.engine
        batch = batches[0] if len(batches) == 1 else pa.concat_tables(batches) if batches else None

        def evaluate() -> list[model.Event]:
            events = [] if batch is None else engine.process(batch)
            if tick:
                events.extend(engine.tick(now_ns()))
            return events

        events = await asyncio.to_thread(evaluate)
        self.batches += len(batches)
        changes = [e for e in events if e.kind in ("activated", "cleared")]
        if changes:
            stored = await asyncio.to_thread(self.alarms.apply, tenant_id, changes)
            live = []
            for ev in stored:
                rule_id, _, device_id = ev.alarm_id.partition("/")
                rule = t.rule_ids.get(int(rule_id))
                device = t.devices.get(int(device_id))
                if rule is not None and device is not None:
                    live.append(LiveAlarm(rule, device[0], device[1], ev))
            if live:
                self._publish(tenant_id, live)
                self._start_actions(tenant_id, t, live)
        failed = {
            name: s.reason
            for name, s in engine.status().items()
            if not s.enabled and name not in t.disabled
        }
        if failed:
            await asyncio.to_thread(self._disable, tenant_id, t, failed)

    # -- actions -------------------------------------------------------------------------------

    def _start_actions(self, tenant_id: int, t: _Tenant, changes: Sequence[LiveAlarm]) -> None:
        now = now_ns()
        for change in changes:
            fired = set(triggers_of(change.event))
            actions = [a for a in t.actions.get(change.rule, ()) if fired & set(a.on)]
            if not actions:
                continue
            if now - change.event.ts > ACTION_MAX_AGE_NS:
                self.actions_skipped_old += len(actions)
                continue
            for action in actions:
                if len(self._action_tasks) >= ACTION_BACKLOG:
                    self.actions_dropped += 1
                    if self.actions_dropped == 1:
                        log.warning(
                            "%d alarm actions are waiting: further ones are dropped and counted",
                            ACTION_BACKLOG,
                        )
                    continue
                sids = t.signal_ids.get((change.rule, change.device), [])
                task = asyncio.create_task(self._run_action(tenant_id, change, action, sids))
                self._action_tasks.add(task)
                task.add_done_callback(self._action_tasks.discard)

    def announce(
        self, tenant_id: int, rule: str, device: str, asset_id: int | None, event: AlarmEvent
    ) -> None:
        """An alarm change made outside the worker (an operator's or engineer's action over
        the API or the CLI): published live, and the rule's actions run when it triggers them
        (an alarm returned to service with its condition active is annunciated again).
        Thread-safe; a no-op before :meth:`run` started."""
        loop = self._loop
        if loop is None:
            return
        change = LiveAlarm(rule, device, asset_id, event)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._announce_soon, tenant_id, change)

    def _announce_soon(self, tenant_id: int, change: LiveAlarm) -> None:
        task = asyncio.ensure_future(self._announce(tenant_id, change))
        self._action_tasks.add(task)
        task.add_done_callback(self._action_tasks.discard)

    async def _announce(self, tenant_id: int, change: LiveAlarm) -> None:
        self._publish(tenant_id, [change])
        if not triggers_of(change.event):
            return
        t = await asyncio.to_thread(self._engine, tenant_id)
        if t is not None:
            self._start_actions(tenant_id, t, [change])

    async def _run_action(
        self, tenant_id: int, change: LiveAlarm, action: RuleAction, signal_ids: list[int]
    ) -> None:
        if self._action_slots is None:
            self._action_slots = asyncio.Semaphore(ACTION_CONCURRENCY)
        async with self._action_slots:
            try:
                if self.action_deps is None:
                    raise RuntimeError("actions are not wired on this runtime")
                deps = await asyncio.to_thread(self.action_deps, tenant_id, change.rule)
                runner = build_action(action.kind, action.config, deps)
                result = await runner.run(change.event, signal_ids=signal_ids)
            except Exception as exc:  # a plugin's bug or a missing dependency: reported
                result = ActionResult(False, action.kind, f"{type(exc).__name__}: {exc}", 0)
        if result.ok:
            self.actions_ok += 1
        else:
            self.actions_failed += 1
            log.warning(
                "tenant %d: rule %r on %r: %s action failed: %s",
                tenant_id,
                change.rule,
                change.device,
                action.kind,
                result.reason,
            )
        if self.on_action is not None:
            try:
                await asyncio.to_thread(
                    self.on_action, tenant_id, change.rule, change.device, action, result
                )
            except Exception:
                log.exception("tenant %d: recording an action result failed", tenant_id)

    async def drain_actions(self) -> None:
        """Wait for the actions running now (tests; shutdown)."""
        while self._action_tasks:
            await asyncio.gather(*list(self._action_tasks), return_exceptions=True)

    def _disable(self, tenant_id: int, t: _Tenant, failed: dict[str, str | None]) -> None:
        for name, reason in failed.items():
            t.disabled.add(name)
            self._store_disabled(tenant_id, name, reason)
        # The engine already left those rules out: keep it (and its state), not rebuild it.
        t.change_key = self.rules.change_key(tenant_id)  # first: a later change is not missed
        _, t.fingerprint, _ = self._fingerprint(tenant_id)

    def _store_disabled(self, tenant_id: int, name: str, reason: str | None) -> None:
        log.warning("tenant %d: rule %r %s", tenant_id, name, reason)
        try:
            self.rules.set_enabled(tenant_id, name, False, reason)
        except Exception:  # deleted meanwhile
            log.exception("tenant %d: could not disable rule %r", tenant_id, name)

    # -- engines -------------------------------------------------------------------------------

    def _fingerprint(self, tenant_id: int) -> tuple[Any, tuple[Any, ...], list[model.Device]]:
        infos = self.rules.list_rules(tenant_id)
        devices = [d for d in self.rules.engine_devices(tenant_id) if self.partition.owns(d.id)]
        key = (
            tuple((r.id, r.name, r.enabled, r.updated_at) for r in infos),
            tuple(
                (d.id, d.type, tuple(sorted(d.signals.items())), tuple(sorted(d.data_types)))
                for d in devices
            ),
        )
        return infos, key, devices

    def _engine(self, tenant_id: int) -> _Tenant | None:
        """The tenant's engine, rebuilt when its rules or devices changed (checked at most
        every ``refresh_s``, through the cheap change key). Runs in a worker thread."""
        t = self._tenants.get(tenant_id)
        now = time.monotonic()
        if t is not None and not t.stale and now - t.checked < self.refresh_s:
            return t
        # The key is read before the full state, so a change between the two reads shows
        # as a changed key at the next check rather than being missed.
        change_key = self.rules.change_key(tenant_id)
        if t is not None and not t.stale and change_key == t.change_key:
            t.checked = now
            return t
        infos, key, devices = self._fingerprint(tenant_id)
        if t is not None and not t.stale and t.fingerprint == key:
            t.checked, t.change_key = now, change_key
            return t
        rules: list[model.Rule] = []
        bad: dict[str, str | None] = {}
        for info in infos:
            if not info.enabled:
                continue
            if info.device is not None and not self.partition.owns(info.device):
                continue  # another rules process evaluates (and checks) it
            if info.device_type is not None and not any(
                d.type == info.device_type for d in devices
            ):
                continue  # no device of its type yet: nothing to evaluate
            try:
                rule = info.to_rule()
                RuleEngine(devices, [rule])  # the save-time check, against today's devices
            except BadInput as exc:
                bad[info.name] = f"disabled: {exc}"  # its device or signal went away
                continue
            rules.append(rule)
        if bad:
            for name, reason in bad.items():
                self._store_disabled(tenant_id, name, reason)
            change_key = self.rules.change_key(tenant_id)  # the disabled ones changed
            infos, key, devices = self._fingerprint(tenant_id)
        places = {d.id: (d.name, d.asset_id) for d in self.registry.list_devices(tenant_id)}
        fresh = _Tenant(
            RuleEngine(devices, rules),
            key,
            now,
            change_key,
            {r.id: r.name for r in infos},
            places,
        )
        self.rebuilds += 1
        live = {r.id for r in rules}
        fresh.actions = {i.name: i.actions for i in infos if i.actions and i.name in live}
        for rule in rules:
            if rule.id not in fresh.actions:
                continue
            for dev in devices:
                if dev.id == rule.device or (rule.device is None and dev.type == rule.device_type):
                    fresh.signal_ids[(rule.id, dev.id)] = rule_signal_ids(rule, dev)
        self._tenants[tenant_id] = fresh
        return fresh
