"""Rules in their own processes: durable batches and alarm changes between processes, over the
MQTT broker the platform already uses.

With ``role: all`` one process ingests, evaluates and serves, and none of this runs. Scaled
out (``shopfloor serve --role ...``, docs/scale-out.md) the work is split:

- every **ingest** worker publishes each durable batch (Arrow IPC, the historian's point
  schema) on ``sf/internal/v1/durable/<tenant id>`` at QoS 1, after the historian committed it;
- every **rules** process subscribes to all of them with a persistent session of its own
  (``shopfloor-rules-<index>-of-<count>``), so batches published while it restarts wait in the
  broker, and evaluates the devices of its :class:`~shopfloor.rules.runtime.Partition` only;
- alarm changes a rules process stores are published on ``sf/internal/v1/alarms/<tenant id>``,
  and every **api** process hands them to its live subscribers (the alarm WebSocket).

Why the broker and not PostgreSQL LISTEN/NOTIFY: a batch is up to megabytes, a NOTIFY payload at
most 8,000 bytes, and the broker already holds QoS 1 messages for a subscriber that is away.
Devices never reach these topics: the broker's ACLs give them their own topics only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa
from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTv50

from shopfloor.core.errors import Malformed
from shopfloor.rules.alarms import AlarmEvent, AlarmState, Cause, Priority
from shopfloor.rules.runtime import LiveAlarm

log = logging.getLogger(__name__)

PREFIX: Final = "sf/internal/v1/"
DURABLE_TOPIC: Final = PREFIX + "durable/{tenant_id}"
ALARMS_TOPIC: Final = PREFIX + "alarms/{tenant_id}"
CONNECT_TIMEOUT_S: Final = 10.0
SESSION_EXPIRY_S: Final = 24 * 3600  # a rules process away for longer starts afresh

BatchSink = Callable[[int, pa.Table], None]
AlarmSink = Callable[[int, list[LiveAlarm]], None]


# -- payloads ---------------------------------------------------------------------------------


def encode_batch(batch: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_table(batch)
    return bytes(sink.getvalue().to_pybytes())


def decode_batch(payload: bytes) -> pa.Table:
    try:
        with pa.ipc.open_stream(payload) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise Malformed(f"not an Arrow IPC stream: {exc}", "payload") from None


def encode_alarms(changes: Sequence[LiveAlarm]) -> bytes:
    return orjson.dumps(
        [
            {
                "rule": c.rule,
                "device": c.device,
                "asset_id": c.asset_id,
                "ts": c.event.ts,
                "alarm_id": c.event.alarm_id,
                "from": c.event.from_state.value,
                "to": c.event.to_state.value,
                "cause": c.event.cause.value,
                "user": c.event.user,
                "comment": c.event.comment,
                "value": c.event.value,
                "area": c.event.area,
                "priority": int(c.event.priority),
            }
            for c in changes
        ]
    )


def decode_alarms(payload: bytes) -> list[LiveAlarm]:
    try:
        items = orjson.loads(payload)
        return [
            LiveAlarm(
                d["rule"],
                d["device"],
                d["asset_id"],
                AlarmEvent(
                    ts=int(d["ts"]),
                    alarm_id=d["alarm_id"],
                    from_state=AlarmState(d["from"]),
                    to_state=AlarmState(d["to"]),
                    cause=Cause(d["cause"]),
                    user=d["user"],
                    comment=d["comment"],
                    value=d["value"],
                    area=d["area"],
                    priority=Priority(d["priority"]),
                ),
            )
            for d in items
        ]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise Malformed(f"not a list of alarm changes: {exc}", "payload") from None


def _tenant_of(topic: str) -> int | None:
    tail = topic.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


# -- the connection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BusEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


class ProcessBus:
    """One MQTT 5 connection of a platform process to the internal topics.

    ``on_batch`` set: subscribe to the durable batches (a rules process); ``on_alarms`` set:
    subscribe to the alarm changes (an api process). Either way the bus can publish both.
    Messages received are handed over and then acknowledged; a handler that raises leaves its
    message unacknowledged for the broker to send again after a reconnect.
    """

    def __init__(
        self,
        endpoint: BusEndpoint,
        client_id: str,
        *,
        on_batch: BatchSink | None = None,
        on_alarms: AlarmSink | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.on_batch = on_batch
        self.on_alarms = on_alarms
        self.published = 0
        self.received = 0
        self.dropped = 0  # not sent: no connection at the time
        self.rejected = 0  # malformed internal messages (a foreign publisher, a version skew)
        self._loop: asyncio.AbstractEventLoop | None = None
        # A persistent session only where messages must wait for us: the rules processes.
        persistent = on_batch is not None
        self.client = Client(
            client_id,
            clean_session=not persistent,
            optimistic_acknowledgement=False,
            **({"session_expiry_interval": SESSION_EXPIRY_S} if persistent else {}),
        )
        if endpoint.username is not None:
            self.client.set_auth_credentials(endpoint.username, endpoint.password)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect

    def topics(self) -> list[str]:
        out = []
        if self.on_batch is not None:
            out.append(DURABLE_TOPIC.format(tenant_id="+"))
        if self.on_alarms is not None:
            out.append(ALARMS_TOPIC.format(tenant_id="+"))
        return out

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ep = self.endpoint
        await asyncio.wait_for(
            self.client.connect(ep.host, ep.port, version=MQTTv50), CONNECT_TIMEOUT_S
        )

    def _on_connect(self, client: Client, _flags: Any, _rc: Any, _props: Any) -> None:
        # Also on every reconnect: gmqtt reconnects by itself, a subscription is renewed.
        topics = self.topics()
        if topics:
            client.subscribe([Subscription(t, qos=1) for t in topics])

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), CONNECT_TIMEOUT_S)
        self._loop = None

    # -- out --------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes) -> None:
        loop = self._loop
        if loop is None or not self.client.is_connected:
            # Not connected (starting, or the broker is away): counted, not queued without
            # bound; the batch itself is stored, only not evaluated (as a full rules queue).
            self.dropped += 1
            return
        self.published += 1
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.client.publish(topic, payload, qos=1)
        else:  # from a worker thread: gmqtt is not thread-safe
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self.client.publish, topic, payload, 1)

    def publish_batch(self, tenant_id: int, batch: pa.Table) -> None:
        """The Ingestor's ``on_durable`` hook in an ingest worker."""
        self._publish(DURABLE_TOPIC.format(tenant_id=tenant_id), encode_batch(batch))

    def publish_alarms(self, tenant_id: int, changes: Sequence[LiveAlarm]) -> None:
        """The RulesRuntime's ``on_published`` hook in a rules process."""
        if changes:
            self._publish(ALARMS_TOPIC.format(tenant_id=tenant_id), encode_alarms(changes))

    # -- in ---------------------------------------------------------------------------------

    async def _on_message(
        self, _client: Client, topic: str, payload: bytes, _qos: int, _props: Any
    ) -> int:
        tenant_id = _tenant_of(topic)
        try:
            if tenant_id is None:
                raise Malformed(f"no tenant id at the end of {topic!r}", "topic")
            if topic.startswith(PREFIX + "durable/") and self.on_batch is not None:
                self.on_batch(tenant_id, decode_batch(payload))
            elif topic.startswith(PREFIX + "alarms/") and self.on_alarms is not None:
                self.on_alarms(tenant_id, decode_alarms(payload))
            else:
                return 0
        except Malformed as exc:
            self.rejected += 1
            log.warning("internal message on %s dropped: %s", topic, exc)
            return 0  # acknowledged: it would be refused again forever
        self.received += 1
        return 0
