"""The Sparkplug B host application: births, aliases, seq, rebirth requests, deaths.

The MQTT service hands every ``spBv1.0/...`` message to :meth:`SparkplugHost.handle`. The
state machine (:meth:`SparkplugHost._process`) is synchronous, so messages are taken in the
order ``handle`` is called even when calls overlap; only the writes to the historian and the
rebirth requests are awaited, after the state is updated.

See docs/sparkplug-host.md for the mapping onto tenants and the hierarchy and for what is
rejected.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from shopfloor.core.errors import BadInput, Conflict, NotFound, ShopfloorError
from shopfloor.core.quality import BAD, GOOD
from shopfloor.core.sparkplug import payload as spb
from shopfloor.core.sparkplug import sparkplug_b_pb2 as pb
from shopfloor.core.timeutil import DAY_NS, now_ns
from shopfloor.core.types import MIN_TS_NS, DataType
from shopfloor.ingest.decode import Columns
from shopfloor.ingest.sparkplug.mapping import (
    BDSEQ,
    ColumnsBuilder,
    Places,
    UnsupportedMetric,
    data_type_of,
    device_name,
    is_control,
    signal_name,
)
from shopfloor.ingest.sparkplug.state import DeviceState, MetricDef, NodeState
from shopfloor.registry.service import TenantInfo
from shopfloor.security.limits import LimitExceeded, QuotaExceeded

if TYPE_CHECKING:
    from shopfloor.api.platform import Platform

__all__ = [
    "NAMESPACE",
    "REBIRTH",
    "SparkplugHost",
    "SparkplugIdentity",
    "WriteResult",
    "WriteTimeout",
]

log = logging.getLogger(__name__)

NAMESPACE: Final = "spBv1.0"
REBIRTH: Final = "Node Control/Rebirth"
_NODE_KINDS: Final = frozenset({"NBIRTH", "NDEATH", "NDATA"})
_DEVICE_KINDS: Final = frozenset({"DBIRTH", "DDEATH", "DDATA"})
_COMMANDS: Final = frozenset({"NCMD", "DCMD"})  # our own requests, echoed by the broker
_MS: Final = 1_000_000

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]


class SparkplugIdentity(Protocol):
    """What the host needs of the authenticated publisher (registry.credentials'
    DeviceIdentity has these fields)."""

    @property
    def tenant_id(self) -> int: ...

    @property
    def device(self) -> str: ...

    @property
    def sparkplug(self) -> tuple[str, str] | None: ...


class WriteTimeout(ShopfloorError):
    """The device did not answer a DCMD with the metric's value in time."""

    status_code = 504


@dataclass(frozen=True)
class WriteResult:
    """What a device answered to a DCMD: ``ok`` and the value it read back after the write
    (None when it failed), whether that equals the value asked for, and its reason if not ok."""

    device: str  # registry name
    signal: str
    metric: str
    requested: float | int | bool | str
    ok: bool
    read_back: float | int | bool | str | None
    matches: bool
    message: str | None = None


_WriteKey = tuple[str, str, str, str]  # group, edge node, device id, metric name
_Answer = tuple[bool, Any, str | None]  # ok, the value read back, the device's message


@dataclass
class _Work:
    """What a processed message leaves to do: columns to store, a rebirth to request."""

    writes: list[Columns] = field(default_factory=list)
    rebirth: bool = False


class SparkplugHost:
    def __init__(
        self,
        platform: Platform,
        publish: Publish,
        *,
        host_id: str = "shopfloor",
        rebirth_interval_s: float = 5.0,
    ) -> None:
        if not host_id or any(c in host_id for c in "/+#"):
            raise BadInput(f"host id {host_id!r} must be non-empty without / + #", "host_id")
        self.platform = platform
        self.host_id = host_id
        # A node that keeps sending what we cannot decode would otherwise get an NCMD per
        # message; one per interval is enough for it to rebirth.
        self.rebirth_interval_s = rebirth_interval_s
        self._publish = publish
        self._places = Places(platform.registry)
        self._nodes: dict[tuple[str, str], NodeState] = {}
        self._errors: Counter[str] = Counter()
        self._messages = 0
        self._state_ts: int | None = None
        # Writes waiting for their answer, with the timestamp (ms) of the command sent.
        self._writes: dict[_WriteKey, list[tuple[int, asyncio.Future[_Answer]]]] = {}
        self._last_command_ms = 0
        self.writes_sent = 0
        self.writes_answered = 0

    # -- STATE (Sparkplug 3.0) ---------------------------------------------------------------

    @property
    def state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.host_id}"

    def will(self) -> tuple[str, bytes]:
        """The offline STATE to register as MQTT Will (retained, QoS 1) before connecting.

        Sparkplug 3.0 wants the online STATE published after this connect to carry the same
        timestamp, so each call starts a new one that :meth:`online` repeats.
        """
        self._state_ts = now_ns() // _MS
        return self.state_topic, self._state(False)

    def online(self) -> tuple[str, bytes]:
        """The online STATE to publish (retained, QoS 1) once connected."""
        if self._state_ts is None:
            self._state_ts = now_ns() // _MS
        return self.state_topic, self._state(True)

    def offline(self) -> tuple[str, bytes]:
        """The offline STATE to publish before a clean disconnect (which drops the Will)."""
        return self.state_topic, self._state(False)

    def _state(self, online: bool) -> bytes:
        return orjson.dumps({"online": online, "timestamp": self._state_ts})

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "messages": self._messages,
            "nodes": {n.key: n.status() for n in self._nodes.values()},
            "errors": dict(self._errors),
            "writes": {"sent": self.writes_sent, "answered": self.writes_answered},
        }

    # -- messages ----------------------------------------------------------------------------

    async def handle(
        self, topic: str, payload: bytes, identity: SparkplugIdentity | None = None
    ) -> None:
        """Take one message; returns once its points are durable. Bad input is counted and
        logged, never raised; a historian failure (StorageError) is raised, so the caller
        does not acknowledge what was not stored."""
        self._messages += 1
        try:
            node, work = self._process(topic, payload, identity)
        except Exception as exc:  # a bug here must not stop the subscriber's loop
            self._count(None, "internal", f"{topic}: {exc!r}")
            log.exception("Sparkplug message on %s failed", topic)
            return
        if node is None or node.tenant is None:
            return
        if work.rebirth:
            await self._request_rebirth(node)
        limits = getattr(self.platform, "limits", None)
        for cols in work.writes:
            # The tenant's ingest rate and quota, as for HTTP and JSON telemetry; a refused
            # message is counted and dropped (MQTT has no "retry later").
            if limits is not None:
                try:
                    limits.admit_points(node.tenant, len(cols))
                except LimitExceeded as exc:
                    reason = "quota_exceeded" if isinstance(exc, QuotaExceeded) else "rate_limited"
                    self._count(node, reason, f"{topic}: {len(cols)} points: {exc}")
                    continue
            try:
                stored = await self.platform.ingestor.ingest(node.tenant, cols)
            except BadInput as exc:
                if limits is not None:
                    limits.release_points(node.tenant.id, len(cols))
                self._count(node, "rejected_points", f"{topic}: {len(cols)} points: {exc}")
            except BaseException:
                if limits is not None:
                    limits.release_points(node.tenant.id, len(cols))
                raise
            else:  # added after the await: `x += await ...` would lose concurrent updates
                node.points += stored

    def _process(
        self, topic: str, raw: bytes, identity: SparkplugIdentity | None
    ) -> tuple[NodeState | None, _Work]:
        work = _Work()
        parts = topic.split("/")
        if len(parts) >= 2 and parts[0] == NAMESPACE and parts[1] == "STATE":
            return None, work  # host states, ours included
        if len(parts) >= 3 and parts[0] == NAMESPACE and parts[2] in _COMMANDS:
            return None, work
        if not _valid_topic(parts):
            self._count(None, "bad_topic", f"not a Sparkplug B topic: {topic[:200]!r}")
            return None, work
        group, kind, edge = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else None
        node = self._node(group, edge, refresh=kind == "NBIRTH")
        if node.tenant is None:
            self._count(node, "no_tenant", f"group {group!r} belongs to no tenant; {kind} dropped")
            return node, work
        if not self._allowed(node, identity):
            return None, work
        node.messages += 1
        try:
            pl = spb.decode(raw)
        except ValueError as exc:
            self._count(node, "garbage_payload", f"{topic}: {exc}")
            return node, work
        try:
            if kind == "NBIRTH":
                self._nbirth(node, pl, work)
            elif kind == "NDEATH":
                self._ndeath(node, pl, work)
            elif kind == "NDATA":
                self._data(node, None, pl, work)
            elif kind == "DBIRTH":
                self._dbirth(node, str(device), pl, work)
            elif kind == "DDEATH":
                self._ddeath(node, str(device), pl, work)
            else:
                self._data(node, device, pl, work)
        except BadInput as exc:  # names the registry refuses (control characters, length)
            self._count(node, "rejected", f"{topic}: {exc}")
        return node, work

    # -- births ------------------------------------------------------------------------------

    def _nbirth(self, node: NodeState, pl: pb.Payload, work: _Work) -> None:
        seq = pl.seq if pl.HasField("seq") else 0
        if seq != 0:
            self._count(node, "birth_seq", f"{node.key}: NBIRTH has seq {seq}, expected 0")
        bd = _bd_seq(pl)
        if bd is None:
            self._count(node, "no_bdseq", f"{node.key}: NBIRTH without a bdSeq metric")
        node.bd_seq, node.seq = bd, seq
        node.online = node.born = True
        node.births += 1
        # A new birth voids every alias of the node's devices: they are born again after it.
        for dev in node.devices.values():
            dev.forget_birth()
            dev.online = False
        if node.node is None:
            node.node = DeviceState(None, device_name(node.edge_node, None))
        assert node.tenant is not None
        area = self._places.area(node.group, node.edge_node)
        self._places.attach(node.tenant, node.node.registry_name, area)
        self._birth(node, node.node, pl, work)

    def _dbirth(self, node: NodeState, device: str, pl: pb.Payload, work: _Work) -> None:
        if not node.born:
            # Most often the host started after the node's NBIRTH. The device's birth is still
            # good (names, aliases, values); the rebirth gets the node's own.
            self._count(node, "dbirth_without_nbirth", f"{node.key}: DBIRTH of {device!r} first")
            work.rebirth = True
            node.seq = pl.seq if pl.HasField("seq") else None
            node.online = True
        elif self._seq_gap(node, pl):
            work.rebirth = True
        dev = node.devices.get(device)
        if dev is None:
            dev = node.devices[device] = DeviceState(device, device_name(node.edge_node, device))
        assert node.tenant is not None
        machine = self._places.machine(node.group, node.edge_node, device)
        self._places.attach(node.tenant, dev.registry_name, machine)
        self._birth(node, dev, pl, work)

    def _birth(self, node: NodeState, dev: DeviceState, pl: pb.Payload, work: _Work) -> None:
        dev.forget_birth()
        where = f"{node.key}" + ("" if dev.sparkplug_id is None else f"/{dev.sparkplug_id}")
        taken: dict[str, str] = {}  # signal name -> metric name, to catch '/' vs '.' clashes
        for m in pl.metrics:
            if not m.name:
                self._count(node, "birth_metric_unnamed", f"{where}: a birth metric has no name")
                continue
            if m.name in dev.by_name:
                self._count(node, "duplicate_metric", f"{where}: metric {m.name!r} born twice")
                continue
            d = self._define(node, where, m, taken)
            dev.by_name[m.name] = d
            if m.HasField("alias"):
                other = dev.by_alias.get(m.alias)
                if other is not None:
                    self._count(
                        node,
                        "duplicate_alias",
                        f"{where}: alias {m.alias} of {m.name!r} is taken by {other.name!r};"
                        f" {m.name!r} is reachable by name only",
                    )
                else:
                    dev.by_alias[m.alias] = d
        dev.born = dev.online = True
        dev.births += 1
        if not self._register(node, dev, where):
            return
        builder = ColumnsBuilder(dev.registry_name)
        default_ts = self._default_ts(pl)
        newest_ok = now_ns() + DAY_NS  # as the HTTP ingest: at most a day ahead of us
        stored: set[str] = set()
        for m in pl.metrics:
            known = dev.by_name.get(m.name)
            if known is not None and known.signal is not None and m.name not in stored:
                stored.add(m.name)  # a metric born twice: its first value only
                self._point(node, where, builder, known, m, default_ts, newest_ok)
        if len(builder):
            work.writes.append(builder.columns())

    def _define(
        self, node: NodeState, where: str, m: pb.Payload.Metric, taken: dict[str, str]
    ) -> MetricDef:
        datatype = m.datatype if m.HasField("datatype") else 0
        if is_control(m.name):
            return MetricDef(m.name, datatype)
        try:
            kind = data_type_of(datatype)
            signal = signal_name(m.name)
        except UnsupportedMetric as exc:
            self._count(node, "unsupported_metric", f"{where}: metric {m.name!r}: {exc}")
            return MetricDef(m.name, datatype)  # known, so its data is skipped, not "unknown"
        if signal in taken:
            self._count(
                node,
                "name_clash",
                f"{where}: metrics {taken[signal]!r} and {m.name!r} both map to signal "
                f"{signal!r}; {m.name!r} is not stored",
            )
            return MetricDef(m.name, datatype)
        taken[signal] = m.name
        return MetricDef(m.name, datatype, signal, kind)

    def _register(self, node: NodeState, dev: DeviceState, where: str) -> bool:
        """Register the birth's signals with their types; drop those whose stored type clashes."""
        signals = dev.signals()
        if not signals:
            return True
        registry = self.platform.registry
        assert node.tenant is not None
        names = list(signals)
        try:
            ids = registry.resolve(node.tenant.id, dev.registry_name, names, list(signals.values()))
        except BadInput as exc:  # auto-registration off and new signals
            self._count(node, "birth_rejected", f"{where}: {exc}")
            return False
        stored = registry.signal_types(ids.tolist())
        for name, want, have in zip(names, signals.values(), stored, strict=True):
            if (want == DataType.STRING) != (have == DataType.STRING):
                self._count(
                    node,
                    "type_clash",
                    f"{where}: signal {dev.registry_name}/{name} holds {have} values, the "
                    f"birth says {want}; its data is not stored",
                )
                for metric, d in list(dev.by_name.items()):
                    if d.signal == name:
                        dev.by_name[metric] = MetricDef(d.name, d.datatype)
                        for alias, a in list(dev.by_alias.items()):
                            if a is d:
                                dev.by_alias[alias] = dev.by_name[metric]
        return True

    # -- data --------------------------------------------------------------------------------

    def _data(self, node: NodeState, device: str | None, pl: pb.Payload, work: _Work) -> None:
        kind = "NDATA" if device is None else "DDATA"
        dev = node.node if device is None else node.devices.get(device)
        where = node.key if device is None else f"{node.key}/{device}"
        if (device is None and not node.born) or dev is None or not dev.born:
            self._count(node, "data_before_birth", f"{where}: {kind} before its birth, dropped")
            work.rebirth = True
            return
        if node.seq is not None and self._seq_gap(node, pl):
            work.rebirth = True
        defs: list[tuple[MetricDef, pb.Payload.Metric]] = []
        unknown: list[str] = []
        for m in pl.metrics:
            d = dev.by_name.get(m.name) if m.name else None
            if d is None and m.HasField("alias"):
                d = dev.by_alias.get(m.alias)
                if d is not None and m.name:
                    self._count(
                        node,
                        "name_mismatch",
                        f"{where}: metric {m.name!r} is not in the birth; alias {m.alias} is "
                        f"{d.name!r}, used that",
                    )
            if d is None:
                unknown.append(repr(m.name) if m.name else f"alias {m.alias}")
            else:
                defs.append((d, m))
        if unknown:
            # Our alias table is not the node's (a birth was missed): the aliases we do know may
            # mean other metrics now, so nothing of the message is trusted.
            self._count(
                node,
                "unknown_metric",
                f"{where}: {kind} with metrics not in the birth ({', '.join(unknown[:5])}); "
                f"{len(pl.metrics)} metrics dropped",
            )
            work.rebirth = True
            return
        if device is not None and self._writes:
            self._answer(node, device, defs, single=len(pl.metrics) == 1)
        builder = ColumnsBuilder(dev.registry_name)
        default_ts = self._default_ts(pl)
        newest_ok = now_ns() + DAY_NS  # as the HTTP ingest: at most a day ahead of us
        for d, m in defs:
            if d.signal is not None:
                self._point(node, where, builder, d, m, default_ts, newest_ok)
        if len(builder):
            work.writes.append(builder.columns())

    def _point(
        self,
        node: NodeState,
        where: str,
        builder: ColumnsBuilder,
        d: MetricDef,
        m: pb.Payload.Metric,
        default_ts: int,
        newest_ok: int,
    ) -> None:
        assert d.signal is not None
        ts = m.timestamp * _MS if m.HasField("timestamp") else default_ts
        if not MIN_TS_NS <= ts <= newest_ok:
            self._count(node, "bad_timestamp", f"{where}: metric {d.name!r}: timestamp {ts}")
            return
        try:
            value = spb.metric_value(m, d.datatype)
        except ValueError as exc:
            self._count(node, "bad_value", f"{where}: {exc}")
            return
        if value is not None and isinstance(value, str) != (d.kind == DataType.STRING):
            self._count(
                node,
                "bad_value",
                f"{where}: metric {d.name!r} is {d.kind} by its birth, got {type(value).__name__}",
            )
            return
        builder.add(d.signal, d.kind, ts, value, _quality(m))  # no value: bad, see add()
        if not m.is_historical:
            node.newest_ns = max(node.newest_ns, ts)

    # -- deaths ------------------------------------------------------------------------------

    def _ndeath(self, node: NodeState, pl: pb.Payload, work: _Work) -> None:
        bd = _bd_seq(pl)
        if bd is not None and node.bd_seq is not None and bd != node.bd_seq:
            # The Will of an older session, delivered after the new session's NBIRTH.
            self._count(
                node,
                "stale_ndeath",
                f"{node.key}: NDEATH with bdSeq {bd}, the current birth has {node.bd_seq}: ignored",
            )
            return
        if not node.online:
            return
        ts = self._death_ts(node)
        for dev in [node.node, *node.devices.values()]:
            if dev is not None and dev.online:
                self._stale(dev, ts, work)
        for dev in [node.node, *node.devices.values()]:
            if dev is not None:  # the next session's births bring new aliases
                dev.forget_birth()
                dev.online = False
        node.online = node.born = False
        node.seq = None
        node.deaths += 1

    def _ddeath(self, node: NodeState, device: str, pl: pb.Payload, work: _Work) -> None:
        if node.seq is not None and self._seq_gap(node, pl):
            work.rebirth = True
        dev = node.devices.get(device)
        if dev is None or not dev.online:
            return
        self._stale(dev, self._death_ts(node), work)

    def _stale(self, dev: DeviceState, ts: int, work: _Work) -> None:
        """A point without value and of bad quality per signal: the latest values read stale."""
        builder = ColumnsBuilder(dev.registry_name)
        for signal, kind in dev.signals().items():
            builder.add(signal, kind, ts, None, BAD)
        if len(builder):
            work.writes.append(builder.columns())
        dev.online = False
        dev.deaths += 1
        dev.forget_birth()

    def _death_ts(self, node: NodeState) -> int:
        # The host's clock, not the payload's: an NDEATH is the Will, stamped when the session
        # began, so its timestamp is older than the data it ends. After the newest live point
        # in any case, so "latest" is the death even when the node's clock runs ahead.
        return max(now_ns(), node.newest_ns + 1)

    # -- writes (DCMD) -----------------------------------------------------------------------

    def _find(self, tenant_id: int, device: str) -> tuple[NodeState, DeviceState] | None:
        for node in self._nodes.values():
            if node.tenant is None or node.tenant.id != tenant_id:
                continue
            for dev in node.devices.values():
                if dev.registry_name == device:
                    return node, dev
        return None

    def knows(self, tenant_id: int, device: str) -> bool:
        """Whether ``device`` (registry name) is a Sparkplug device of the tenant's edge nodes."""
        return self._find(tenant_id, device) is not None

    async def write(
        self,
        tenant_id: int,
        device: str,
        signal: str,
        value: Any,
        timeout_s: float,
    ) -> WriteResult:
        """Write ``value`` to ``signal`` of ``device`` (registry names) with a DCMD and wait
        for the device's answer: the DDATA of that metric with the value read back.

        The metric goes by its alias where the birth gave one. An answer is a DDATA of the
        device that carries the metric alone (the edge gateway's reply) or with a "Message"
        property (a refused write). Raises NotFound (unknown device or signal), BadInput (a
        value the metric's datatype cannot carry), Conflict (the device is offline) and
        WriteTimeout (no answer within ``timeout_s``).
        """
        found = self._find(tenant_id, device)
        if found is None:
            raise NotFound(f"device {device!r} is not a Sparkplug device of this tenant")
        node, dev = found
        if not (node.online and dev.online):  # a death forgets the birth's metrics too
            raise Conflict(f"device {device!r} is offline (edge node {node.key})")
        metric = next((d for d in dev.by_name.values() if d.signal == signal), None)
        if metric is None or not dev.born:
            known = sorted(d.signal for d in dev.by_name.values() if d.signal is not None)
            raise NotFound(
                f"device {device!r} has no signal {signal!r} in its Sparkplug birth"
                + (f"; it has {', '.join(known[:20])}" if known else "")
            )
        coerced = _command_value(metric, value)
        alias = next((a for a, d in dev.by_alias.items() if d is metric), None)
        assert dev.sparkplug_id is not None
        key = (node.group, node.edge_node, dev.sparkplug_id, metric.name)
        fut: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        # Unique per command: an answer that echoes it is matched to this write alone.
        ts = self._last_command_ms = max(now_ns() // _MS, self._last_command_ms + 1)
        entry = (ts, fut)
        self._writes.setdefault(key, []).append(entry)
        try:
            # By alias alone where there is one (Sparkplug: aliases replace names after birth).
            cmd = spb.MetricValue(
                None if alias is not None else metric.name, alias, metric.datatype, coerced, ts
            )
            payload = spb.encode(ts, None, [cmd])
            topic = f"{NAMESPACE}/{node.group}/DCMD/{node.edge_node}/{dev.sparkplug_id}"
            await self._publish(topic, payload, 0, False)  # Sparkplug: DCMD at QoS 0
            self.writes_sent += 1
            try:
                async with asyncio.timeout(timeout_s):
                    ok, read_back, message = await fut
            except TimeoutError:
                raise WriteTimeout(
                    f"device {device!r} did not answer the write of {signal!r} within {timeout_s} s"
                ) from None
        finally:
            waiting = self._writes.get(key, [])
            if entry in waiting:
                waiting.remove(entry)
            if not waiting:
                self._writes.pop(key, None)
        self.writes_answered += 1
        return WriteResult(
            device,
            signal,
            metric.name,
            coerced,
            ok,
            read_back,
            ok and _same(coerced, read_back),
            message,
        )

    def _answer(
        self,
        node: NodeState,
        device: str,
        defs: list[tuple[MetricDef, pb.Payload.Metric]],
        *,
        single: bool,
    ) -> None:
        for d, m in defs:
            waiting = self._writes.get((node.group, node.edge_node, device, d.name))
            if not waiting:
                continue
            message = _message(m)
            echoed = spb.command_ts(m)
            if echoed is not None:
                node.echoes_commands = True
            elif node.echoes_commands:
                continue  # this node marks its answers: without the mark, a poll's DDATA
            if not (single or message is not None or echoed is not None) or m.is_historical:
                continue  # a poll's DDATA, not the answer
            try:
                value = spb.metric_value(m, d.datatype)
            except ValueError as exc:
                value, message = None, str(exc)
            ok = value is not None and _quality(m) == GOOD
            if not ok and message is None:
                message = "the device answered without a good value"
            # An echoed answer is for its own command only; an unmarked one (an edge node
            # that does not echo) for every write of the metric still waiting.
            answered = [e for e in waiting if echoed is None or e[0] == echoed]
            for entry in answered:
                if not entry[1].done():
                    entry[1].set_result((ok, value, message))
                waiting.remove(entry)

    # -- helpers -----------------------------------------------------------------------------

    def _seq_gap(self, node: NodeState, pl: pb.Payload) -> bool:
        if not pl.HasField("seq"):
            self._count(node, "no_seq", f"{node.key}: message without seq")
            return False
        got, last = pl.seq % 256, node.seq
        node.seq = got
        if last is None or got == (last + 1) % 256:
            return False
        self._count(
            node, "seq_gap", f"{node.key}: seq {got} after {last}, expected {(last + 1) % 256}"
        )
        return True

    def _default_ts(self, pl: pb.Payload) -> int:
        return pl.timestamp * _MS if pl.HasField("timestamp") else now_ns()

    def _node(self, group: str, edge: str, *, refresh: bool) -> NodeState:
        node = self._nodes.get((group, edge))
        if node is None:
            node = self._nodes[(group, edge)] = NodeState(group, edge)
        if node.tenant is None or refresh:  # a group may have been claimed since
            node.tenant = self._tenant_of(group)
        return node

    def _tenant_of(self, group: str) -> TenantInfo | None:
        credentials = getattr(self.platform, "credentials", None)
        tenant_id = None
        if credentials is not None and hasattr(credentials, "tenant_of_group"):
            tenant_id = credentials.tenant_of_group(group)
        try:
            return self.platform.registry.get_tenant(tenant_id if tenant_id is not None else group)
        except NotFound:
            return None

    def _allowed(self, node: NodeState, identity: SparkplugIdentity | None) -> bool:
        if identity is None:  # an external broker's ACLs decided already
            return True
        assert node.tenant is not None
        if identity.sparkplug is None or tuple(identity.sparkplug) != (node.group, node.edge_node):
            self._count(
                node,
                "not_authorised",
                f"device {identity.device!r} is not Sparkplug edge node {node.key}",
            )
            return False
        if identity.tenant_id != node.tenant.id:
            self._count(
                node,
                "not_authorised",
                f"device {identity.device!r} is not of the tenant of group {node.group!r}",
            )
            return False
        return True

    async def _request_rebirth(self, node: NodeState) -> None:
        now = time.monotonic()
        if node.last_rebirth is not None and now - node.last_rebirth < self.rebirth_interval_s:
            return
        node.last_rebirth = now
        node.rebirths_requested += 1
        ts = now_ns() // _MS
        cmd = spb.encode(ts, None, [spb.MetricValue(REBIRTH, None, spb.BOOLEAN, True, ts)])
        topic = f"{NAMESPACE}/{node.group}/NCMD/{node.edge_node}"
        try:
            await self._publish(topic, cmd, 0, False)  # Sparkplug: NCMD at QoS 0, not retained
        except Exception as exc:
            self._count(node, "publish_failed", f"rebirth request to {node.key}: {exc!r}")

    def _count(self, node: NodeState | None, reason: str, message: str) -> None:
        self._errors[reason] += 1
        n = self._errors[reason]
        if node is not None:
            node.errors[reason] += 1
            node.last_error = message
        # The first of each kind and then every 1000th: a flood must not flood the log too.
        if n == 1 or n % 1000 == 0:
            log.warning("Sparkplug %s (%d so far): %s", reason, n, message)
        else:
            log.debug("Sparkplug %s: %s", reason, message)


def _valid_topic(parts: list[str]) -> bool:
    if parts[0] != NAMESPACE or len(parts) not in (4, 5) or not all(parts):
        return False
    kind = parts[2]
    return (kind in _NODE_KINDS and len(parts) == 4) or (kind in _DEVICE_KINDS and len(parts) == 5)


def _bd_seq(pl: pb.Payload) -> int | None:
    for m in pl.metrics:
        if m.name == BDSEQ:
            try:
                value = spb.metric_value(m, spb.UINT64)
            except ValueError:
                return None
            return int(value) % 256 if isinstance(value, int | float) else None
    return None


_INTEGER_TYPES: Final = frozenset(
    {spb.INT8, spb.INT16, spb.INT32, spb.INT64, spb.UINT8, spb.UINT16, spb.UINT32, spb.UINT64}
)


def _command_value(metric: MetricDef, value: Any) -> float | int | bool | str:
    """``value`` as the metric's datatype can carry it; BadInput where it cannot."""
    dt = metric.datatype
    what = f"signal {metric.signal!r} ({metric.kind})"
    if dt not in _INTEGER_TYPES and dt not in (spb.FLOAT, spb.DOUBLE, spb.BOOLEAN, spb.STRING):
        raise BadInput(f"{what}: Sparkplug datatype {dt} cannot be written", "value")
    if dt == spb.BOOLEAN:
        if isinstance(value, bool):
            return value
        raise BadInput(f"{what} takes true or false, got {value!r}", "value")
    if dt == spb.STRING:
        if isinstance(value, str):
            return value
        raise BadInput(f"{what} takes a string, got {value!r}", "value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{what} takes a number, got {value!r}", "value")
    if dt in _INTEGER_TYPES:
        if isinstance(value, float) and not value.is_integer():
            raise BadInput(f"{what} takes an integer, got {value!r}", "value")
        return int(value)
    if not math.isfinite(float(value)):
        raise BadInput(f"{what} takes a finite number, got {value!r}", "value")
    return float(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        # A float32 metric reads back 0.1 as 0.10000000149...
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return False


def _message(m: pb.Payload.Metric) -> str | None:
    """The metric's "Message" property (the reason a write failed), if it has one."""
    if not m.HasField("properties"):
        return None
    for key, value in zip(m.properties.keys, m.properties.values, strict=False):
        if key == spb.MESSAGE and value.WhichOneof("value") == "string_value":
            return str(value.string_value)
    return None


def _quality(m: pb.Payload.Metric) -> int:
    """The metric's "Quality" property as an OPC UA status code; good without one."""
    if not m.HasField("properties"):
        return GOOD
    for key, value in zip(m.properties.keys, m.properties.values, strict=False):
        if key == spb.QUALITY:
            which = value.WhichOneof("value")
            if which in ("int_value", "long_value"):
                return int(getattr(value, which)) & 0xFFFFFFFF
    return GOOD
