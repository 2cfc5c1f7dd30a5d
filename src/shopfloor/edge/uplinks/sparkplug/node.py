"""The Sparkplug B edge node state machine: bdSeq, seq, aliases, births and data messages.

No networking here: :class:`EdgeNode` turns readings and commands into ``(topic, payload)``
messages in the order they must be published, and keeps what a Sparkplug host relies on:

- ``bdSeq`` (0-255) is the same in the NDEATH registered as MQTT Will and in the NBIRTH of
  that MQTT session; it increments for each new session.
- ``seq`` (0-255, wrapping) runs across every message of the node: NBIRTH has 0.
- Each metric gets an alias once, unique in the node, kept for the node's lifetime; births bind
  names to aliases, data messages carry aliases only.
- A device is born (DBIRTH with every metric known for it) before its first data message in a
  session, and again whenever one of its signals is new or changes datatype.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shopfloor.core.quality import BAD, GOOD
from shopfloor.core.sparkplug import payload as spb
from shopfloor.core.sparkplug.payload import MetricValue
from shopfloor.edge.model import Reading

__all__ = ["BDSEQ", "NAMESPACE", "REBIRTH", "EdgeNode", "Message", "device_id"]

NAMESPACE = "spBv1.0"
BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"

Message = tuple[str, bytes]
Value = float | int | bool | str | None


def device_id(device: str) -> str:
    """The Sparkplug device id of a gateway device: topic-level characters become '_'."""
    out = device.replace("/", "_").replace("+", "_").replace("#", "_")
    return out or "_"


@dataclass(slots=True)
class _Metric:
    alias: int
    datatype: int
    value: Value
    ts_ms: int | None
    quality: int


class EdgeNode:
    def __init__(
        self,
        group_id: str,
        edge_node_id: str,
        *,
        datatypes: Mapping[str, int] | None = None,
        max_metrics: int = 1000,
    ) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.bd_seq = 0
        self.births_sent = 0
        self._seq = 0
        self._hints = dict(datatypes or {})
        self._max = max_metrics
        self._devices: dict[str, dict[str, _Metric]] = {}
        self._by_alias: dict[str, dict[int, str]] = {}
        self._next_alias = 1
        # Devices born since the last NBIRTH; empty means the node itself is not born.
        self._born: set[str] = set()
        self._node_born = False
        # Sparkplug device id -> the gateway's device name, to route commands back.
        self.device_names: dict[str, str] = {}

    # -- topics and sequence numbers ---------------------------------------------------------

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}"
        return base if device is None else f"{base}/{device}"

    @property
    def seq(self) -> int:
        """The seq the next message will carry."""
        return self._seq

    @property
    def born(self) -> bool:
        return self._node_born

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def new_session(self) -> None:
        """An MQTT session ended: the next one has the next bdSeq and must be born again."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self.unborn()

    def unborn(self) -> None:
        """Births must be published again before data (primary host went offline, ...)."""
        self._node_born = False
        self._born.clear()

    # -- messages ----------------------------------------------------------------------------

    def death(self, now_ms: int) -> Message:
        """The NDEATH of the current session (registered as the MQTT Will)."""
        bd = MetricValue(BDSEQ, None, spb.UINT64, self.bd_seq, now_ms)
        return self.topic("NDEATH"), spb.encode(now_ms, None, [bd])

    def births(self, now_ms: int) -> list[Message]:
        """NBIRTH (seq 0) and one DBIRTH per known device."""
        self._seq = 0
        self._born.clear()
        node = [
            MetricValue(BDSEQ, None, spb.UINT64, self.bd_seq, now_ms),
            MetricValue(REBIRTH, None, spb.BOOLEAN, False, now_ms),
        ]
        out = [(self.topic("NBIRTH"), spb.encode(now_ms, self._next_seq(), node))]
        self._node_born = True
        self.births_sent += 1
        out.extend(self._device_birth(dev, now_ms) for dev in self._devices)
        return out

    def data(self, readings: Sequence[Reading], *, historical: bool, now_ms: int) -> list[Message]:
        """DBIRTHs needed for new devices or signals, then DDATA, one device at a time."""
        if not self._node_born:
            raise RuntimeError("edge node not born: publish births() first")
        grouped: dict[str, list[Reading]] = {}
        for r in readings:
            dev = device_id(r.device)
            self.device_names.setdefault(dev, r.device)
            grouped.setdefault(dev, []).append(r)
        out: list[Message] = []
        for dev, group in grouped.items():
            metrics = list(self._metrics_of(dev, group, historical))
            if dev not in self._born:
                out.append(self._device_birth(dev, now_ms))
            self._remember(dev, metrics)
            for start in range(0, len(metrics), self._max):
                chunk = metrics[start : start + self._max]
                out.append((self.topic("DDATA", dev), spb.encode(now_ms, self._next_seq(), chunk)))
        return out

    def reply(
        self,
        device: str,
        signal: str,
        value: Value,
        *,
        ok: bool,
        message: str,
        now_ms: int,
        command_ts: int | None = None,
    ) -> list[Message]:
        """The DDATA answering a DCMD: the value read back, bad quality if the write failed,
        and the command metric's timestamp (``command_ts``) in the answer's "Command"
        property, so the host does not take a poll of the same metric for the answer."""
        known = self._devices.get(device, {}).get(signal)
        if known is None:
            return []  # never born, so no host can resolve an alias for it
        if ok and value is not None:
            known.value, known.ts_ms, known.quality = _coerce(value, known.datatype), now_ms, GOOD
        metric = MetricValue(
            None,
            known.alias,
            known.datatype,
            known.value if ok else None,
            now_ms,
            GOOD if ok else BAD,
            message=None if ok else (message or "write failed"),
            command_ts=command_ts,
        )
        return [(self.topic("DDATA", device), spb.encode(now_ms, self._next_seq(), [metric]))]

    def resolve(self, device: str, name: str | None, alias: int | None) -> tuple[str, int] | None:
        """The signal name and datatype a command metric refers to (by name or alias)."""
        metrics = self._devices.get(device)
        if metrics is None:
            return None
        if not name and alias is not None:
            name = self._by_alias.get(device, {}).get(alias)
        if not name or name not in metrics:
            return None
        return name, metrics[name].datatype

    def known(self, device: str) -> dict[str, tuple[int, int]]:
        """``signal -> (alias, datatype)`` of a device (for status and tests)."""
        return {s: (m.alias, m.datatype) for s, m in self._devices.get(device, {}).items()}

    # -- internals ---------------------------------------------------------------------------

    def _device_birth(self, dev: str, now_ms: int) -> Message:
        metrics = [
            MetricValue(name, m.alias, m.datatype, m.value, m.ts_ms, m.quality)
            for name, m in self._devices.get(dev, {}).items()
        ]
        self._born.add(dev)
        return self.topic("DBIRTH", dev), spb.encode(now_ms, self._next_seq(), metrics)

    def _metrics_of(
        self, dev: str, readings: Iterable[Reading], historical: bool
    ) -> Iterable[MetricValue]:
        table = self._devices.setdefault(dev, {})
        for r in readings:
            # tolist() once per column: far cheaper than indexing numpy scalars per point.
            ts_ms = (r.ts_ns // 1_000_000).tolist()
            values = r.values.tolist()
            quality = r.quality.tolist()
            text = r.text or (None,) * len(r)
            for sig, ts, v, q, t in zip(r.signals, ts_ms, values, quality, text, strict=True):
                hint = self._hints.get(f"{r.device}/{sig}")
                dt = hint if hint is not None else (spb.STRING if t is not None else spb.DOUBLE)
                value = _coerce(t if t is not None else v, dt)
                known = table.get(sig)
                if known is None or known.datatype != dt:
                    # New signal or new datatype: the device must be born (again) first.
                    alias = self._new_alias(dev, sig) if known is None else known.alias
                    table[sig] = _Metric(alias, dt, value, ts, q)
                    self._born.discard(dev)
                    known = table[sig]
                yield MetricValue(None, known.alias, dt, value, ts, q, historical)

    def _remember(self, dev: str, metrics: list[MetricValue]) -> None:
        # The latest value of each metric is what the next DBIRTH of the device will carry.
        names = self._by_alias[dev]
        table = self._devices[dev]
        for m in metrics:
            assert m.alias is not None
            known = table[names[m.alias]]
            known.value, known.ts_ms, known.quality = m.value, m.ts_ms, m.quality

    def _new_alias(self, dev: str, sig: str) -> int:
        alias = self._next_alias
        self._next_alias += 1
        self._by_alias.setdefault(dev, {})[alias] = sig
        return alias


def _coerce(value: Value, datatype: int) -> Value:
    """A reading's value in the metric's datatype; NaN and None stay "no value"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if datatype == spb.STRING:
        return str(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if datatype == spb.BOOLEAN:
        return bool(value)
    if datatype == spb.INT64:
        return int(value) if math.isfinite(value) else None
    return float(value)
