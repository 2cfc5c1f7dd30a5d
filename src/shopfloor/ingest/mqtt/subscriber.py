"""The platform's MQTT subscriber (gmqtt): a persistent session, QoS 1 acknowledged when durable.

gmqtt acknowledges a QoS 1 message when the coroutine given as ``on_message`` returns (with
``optimistic_acknowledgement=False``; see gmqtt/mqtt/handler.py ``_handle_qos_1_publish_packet``).
The handler returns only once the message's points are committed, so its PUBACK means
"durable". When it raises (the historian failed) no PUBACK is sent, and the subscriber
reconnects after a pause: the broker then redelivers every unacknowledged message of the
session (MQTT 3.1.1 4.4 / MQTT 5 4.4), which is only done on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gmqtt import Client, Message, Subscription
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes, int], Awaitable[None]]

CONNECT_TIMEOUT_S: Final = 10.0
RETRY_AFTER_FAILURE_S: Final = 1.0
SESSION_EXPIRY_S: Final = 7 * 24 * 3600


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str | None
    password: str | None
    mqtt5: bool  # MQTT 5 (external brokers, shared subscriptions) or 3.1.1 (amqtt)
    share_group: str | None = None


class Subscriber:
    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        topics: Sequence[str],
        handler: Handler,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.topics = list(topics)
        self.handler = handler
        self.failures = 0
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopping = False
        kwargs: dict[str, Any] = {}
        if endpoint.mqtt5:
            kwargs["session_expiry_interval"] = SESSION_EXPIRY_S
        will_message = Message(will[0], will[1], qos=1, retain=True) if will else None
        self.client = Client(
            client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            will_message=will_message,
            **kwargs,
        )
        if endpoint.username is not None:
            self.client.set_auth_credentials(endpoint.username, endpoint.password)
        self.client.on_message = self._on_message

    def subscription_topics(self) -> list[str]:
        group = self.endpoint.share_group
        if group and self.endpoint.mqtt5:
            return [f"$share/{group}/{t}" for t in self.topics]
        return list(self.topics)

    async def connect(self) -> None:
        ep = self.endpoint
        await asyncio.wait_for(
            self.client.connect(ep.host, ep.port, version=MQTTv50 if ep.mqtt5 else MQTTv311),
            CONNECT_TIMEOUT_S,
        )
        self.client.subscribe([Subscription(t, qos=1) for t in self.subscription_topics()])

    async def stop(self) -> None:
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), CONNECT_TIMEOUT_S)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    async def _on_message(
        self, _client: Client, topic: str, payload: bytes, qos: int, _props: Any
    ) -> int:
        try:
            await self.handler(topic, payload, qos)
        except Exception:
            self.failures += 1
            log.exception("MQTT message on %s not stored; left unacknowledged", topic)
            self._reconnect_later()
            raise  # no PUBACK: gmqtt acknowledges only when this coroutine returns
        return 0

    def _reconnect_later(self) -> None:
        if self._stopping or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        await asyncio.sleep(RETRY_AFTER_FAILURE_S)
        log.warning("reconnecting the MQTT subscriber so the broker redelivers unstored messages")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), CONNECT_TIMEOUT_S)
        try:
            await self.connect()
        except Exception:
            log.exception("MQTT subscriber reconnect failed; retrying")
            self._reconnecting = None
            self._reconnect_later()
