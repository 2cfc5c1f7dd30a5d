"""The embedded MQTT broker: amqtt in the platform's event loop, gated by device credentials.

Two plugins connect amqtt to the registry's device credentials through one :class:`Gate`:

- authentication: every CONNECT is checked with ``credentials.authenticate`` (token or
  username/password) or, on the TLS listener, ``authenticate_certificate`` with the client
  certificate (required there, issued by the device CA);
- topic check: every PUBLISH, SUBSCRIBE and delivery is checked with ``topic_allowed`` and
  ``is_valid``, so a revoked credential stops working on its next message.

The platform's own subscriber logs in with an internal credential made at start and kept in
memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerConfig
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)

INTERNAL_USER: Final = "shopfloor-internal"


class Credentials(Protocol):
    """What the broker needs of registry.credentials.DeviceCredentials."""

    @property
    def generation(self) -> int: ...
    def authenticate(self, username: str, password: str | None) -> Any: ...
    def authenticate_certificate(self, cert_der: bytes) -> Any: ...
    def is_valid(self, identity: Any) -> bool: ...
    def provisioning_key_usable(self, key: str) -> bool: ...


TopicAllowed = Callable[[Any, str, Any], bool]


class _Internal:
    """The identity of the platform's own subscriber: may use every topic."""

    def __repr__(self) -> str:
        return "<platform>"


INTERNAL: Final = _Internal()


# Zero-touch provisioning over MQTT: a device logs in with this username and a provisioning
# key as password, publishes to sf/v1/provision/<its client id>/request and gets its own
# credential on .../response (the only two topics such a login may use).
PROVISION_USER: Final = "provision"


def provision_topic(client_id: str, what: str) -> str:
    return f"sf/v1/provision/{client_id}/{what}"


@dataclass(frozen=True)
class ProvisioningLogin:
    key: str


class Gate:
    """Who is logged in on which client id, and whether each of their topics is allowed."""

    def __init__(self, credentials: Credentials, topic_allowed: TopicAllowed) -> None:
        self.credentials = credentials
        self.topic_allowed = topic_allowed
        self.internal_password = secrets.token_urlsafe(32)
        self.identities: dict[str, Any] = {}
        self.broker: EmbeddedBroker | None = None
        # Told of every PUBLISH refused: MQTT 3.1.1 has no negative PUBACK, so the sender
        # never learns of it, and the platform's counters are where it shows.
        self.on_refused: Callable[[Any, str], None] | None = None

    async def login(self, session: Session) -> bool:
        client_id = session.client_id or ""
        username, password = session.username, session.password
        if username == PROVISION_USER and session.ssl_object is None:
            key = password or ""
            usable = await asyncio.to_thread(self.credentials.provisioning_key_usable, key)
            if usable:
                self.identities[client_id] = ProvisioningLogin(key)
            else:
                log.info("MQTT provisioning login refused for client id %r", client_id)
            return bool(usable)
        if username == INTERNAL_USER:
            ok = password is not None and hmac.compare_digest(
                password.encode(), self.internal_password.encode()
            )
            if ok:
                self.identities[client_id] = INTERNAL
            return ok
        try:
            if session.ssl_object is not None:
                der = session.ssl_object.getpeercert(binary_form=True)
                if der is None:  # the TLS listener takes device certificates only
                    return False
                identity = await asyncio.to_thread(self.credentials.authenticate_certificate, der)
            elif username:
                identity = await asyncio.to_thread(
                    self.credentials.authenticate, username, password
                )
            else:
                identity = None
        except Exception:  # a broken credential store must refuse, not crash the broker
            log.exception("MQTT login check failed for client id %r", client_id)
            return False
        if identity is None:
            log.info("MQTT login refused for client id %r", client_id)
            self.identities.pop(client_id, None)
            return False
        self.identities[client_id] = identity
        return True

    def allowed(self, client_id: str, topic: str, action: str) -> bool:
        identity = self.identities.get(client_id)
        if identity is None:
            return False
        if identity is INTERNAL:
            return True
        if isinstance(identity, ProvisioningLogin):  # its own request and response topic only
            return topic == provision_topic(
                client_id, "request" if action == "publish" else "response"
            )
        if not self.credentials.is_valid(identity):
            self.identities.pop(client_id, None)
            if self.broker is not None:
                self.broker.disconnect_soon(client_id)
            return False
        # Delivery to a subscriber is checked like its subscription: a client id taken over
        # by another device does not inherit the first one's subscriptions.
        ok = self.topic_allowed(identity, topic, "publish" if action == "publish" else "subscribe")
        if not ok and action == "publish" and self.on_refused is not None:
            self.on_refused(identity, topic)
        return ok

    def drop_revoked(self) -> int:
        """Disconnect every client whose credential is no longer valid; returns how many."""
        dropped = 0
        for client_id, identity in list(self.identities.items()):
            if isinstance(identity, ProvisioningLogin):
                continue  # checked again when it asks for its credential
            if identity is not INTERNAL and not self.credentials.is_valid(identity):
                self.identities.pop(client_id, None)
                if self.broker is not None:
                    self.broker.disconnect_soon(client_id)
                dropped += 1
        return dropped


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    @dataclass
    class Config:
        gate: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        gate: Gate = self.context.config.gate
        return await gate.login(session)


class DeviceTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    @dataclass
    class Config:
        gate: Any = None

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        if session is None or topic is None or action is None:
            return False
        gate: Gate = self.context.config.gate
        return gate.allowed(session.client_id or "", topic, str(action))


class EmbeddedBroker(Broker):  # type: ignore[misc]
    """amqtt with client certificates required (not optional) on its TLS listener, and every
    client connection closed at shutdown (amqtt leaves those of cleanly disconnected clients
    open)."""

    _tasks: set[asyncio.Task[None]]
    _writers: set[asyncio.StreamWriter]

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        if not hasattr(self, "_writers"):
            self._writers = set()
        self._writers.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            if not writer.is_closing():
                writer.close()
            self._writers.discard(writer)

    async def shutdown(self) -> None:
        await super().shutdown()
        for writer in list(getattr(self, "_writers", ())):
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    @staticmethod
    def _create_ssl_context(listener: ListenerConfig) -> ssl.SSLContext:
        ctx: ssl.SSLContext = Broker._create_ssl_context(listener)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def disconnect_soon(self, client_id: str) -> None:
        entry = self._sessions.get(client_id)
        if entry is None:
            return
        task = asyncio.get_running_loop().create_task(entry[1].stop())
        if not hasattr(self, "_tasks"):
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass(frozen=True)
class TlsFiles:
    port: int
    certfile: Path
    keyfile: Path
    cafile: Path


def broker_config(gate: Gate, host: str, port: int, tls: TlsFiles | None) -> dict[str, Any]:
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{host}:{port}"}}
    if tls is not None:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{host}:{tls.port}",
            "ssl": True,
            "certfile": str(tls.certfile),
            "keyfile": str(tls.keyfile),
            "cafile": str(tls.cafile),
        }
    here = __name__
    return {
        "listeners": listeners,
        "plugins": {
            f"{here}.DeviceAuthPlugin": {"gate": gate},
            f"{here}.DeviceTopicPlugin": {"gate": gate},
        },
    }


async def start_broker(gate: Gate, host: str, port: int, tls: TlsFiles | None) -> EmbeddedBroker:
    broker = EmbeddedBroker(broker_config(gate, host, port, tls))
    gate.broker = broker
    await broker.start()
    return broker
