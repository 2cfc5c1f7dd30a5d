"""The Sparkplug B uplink: the gateway as an edge node on an MQTT broker (paho-mqtt 2.x).

Threads: paho runs its network loop in its own thread (``loop_start``); every paho callback
only hands its arguments to the event loop with ``loop.call_soon_threadsafe``, so all state
(:class:`EdgeNode`, pending acknowledgements) is touched by the event loop alone. Publishing
from the event loop is safe: paho guards its queues with locks.

One paho client per MQTT session: its Will (the NDEATH) carries that session's bdSeq, and a
lost session's unacknowledged messages die with its client instead of being resent, with old
seq numbers, ahead of the next session's births.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shopfloor.core.sparkplug import payload as spb
from shopfloor.edge.model import Reading, WriteRequest, WriteResult
from shopfloor.edge.uplink import Uplink, UplinkError
from shopfloor.edge.uplinks.sparkplug.config import SparkplugUplinkConfig
from shopfloor.edge.uplinks.sparkplug.node import NAMESPACE, REBIRTH, EdgeNode, Message

__all__ = ["SparkplugUplink"]

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Session:
    """One MQTT connection: one paho client, one Will, one bdSeq."""

    def __init__(self, client: mqtt.Client, bd_seq: int) -> None:
        self.client = client
        self.bd_seq = bd_seq
        self.accepted = False
        self.connack = asyncio.Event()
        self.closed = asyncio.Event()
        self.pending: dict[int, asyncio.Future[None]] = {}

    @property
    def up(self) -> bool:
        return self.accepted and not self.closed.is_set()

    def fail_pending(self, why: str) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(UplinkError(why))
        self.pending.clear()


class SparkplugUplink(Uplink):
    """Sends readings as Sparkplug B DDATA and answers DCMD / NCMD from the platform."""

    def __init__(self, config: SparkplugUplinkConfig) -> None:
        super().__init__()
        self.config = config
        self.node = EdgeNode(
            config.group_id,
            config.edge_node_id,
            datatypes={k: spb.DATATYPES[v] for k, v in config.datatypes.items()},
            max_metrics=config.max_metrics_per_message,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: _Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._commands: set[asyncio.Task[None]] = set()
        self._host_online = False
        self._last_error: str | None = None
        self._sessions = 0
        self._published = 0
        self._commands_handled = 0
        self._stopping = False

    # -- Uplink ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        name = f"sparkplug-{self.config.group_id}-{self.config.edge_node_id}"
        self._task = asyncio.create_task(self._supervise(), name=name)

    async def stop(self) -> None:
        self._stopping = True
        session = self._session
        if session is not None and session.up:
            # A clean DISCONNECT discards the Will, so the host learns of the death from us.
            with contextlib.suppress(UplinkError):
                futs = self._publish(session, [self.node.death(_now_ms())], track=True)
                await self._acks(futs, wait_s=2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._commands):
            task.cancel()
        if self._commands:
            await asyncio.wait(self._commands, timeout=2.0)

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.up

    def status(self) -> dict[str, Any]:
        return {
            "broker": f"{self.config.host}:{self.config.port}",
            "connected": self.connected,
            "born": self.connected and self.node.born,
            "bd_seq": self.node.bd_seq,
            "seq": self.node.seq,
            "births_sent": self.node.births_sent,
            "sessions": self._sessions,
            "messages_published": self._published,
            "commands_handled": self._commands_handled,
            "primary_host_id": self.config.primary_host_id,
            "primary_host_online": self._host_online if self.config.primary_host_id else None,
            "last_error": self._last_error,
        }

    async def send(self, readings: Sequence[Reading], *, historical: bool) -> None:
        if not readings:
            return
        session = self._ready_session()
        messages = self.node.data(readings, historical=historical, now_ms=_now_ms())
        futs = self._publish(session, messages, track=True)
        timeout = self.config.publish_timeout_s
        errors, not_done = await self._acks(futs, wait_s=timeout)
        if errors:
            self._last_error = str(errors[0])
            raise UplinkError(f"{len(errors)} of {len(futs)} messages failed: {errors[0]}")
        if not_done:
            self._last_error = f"no acknowledgement within {timeout} s"
            raise UplinkError(
                f"{not_done} of {len(futs)} messages not acknowledged by "
                f"{self.config.host}:{self.config.port} within {timeout} s"
            )

    @staticmethod
    async def _acks(
        futs: list[asyncio.Future[None]], *, wait_s: float
    ) -> tuple[list[BaseException], int]:
        """Wait for acknowledgements: the errors, and how many did not come in time."""
        if not futs:
            return [], 0
        done, not_done = await asyncio.wait(futs, timeout=wait_s)
        for fut in not_done:
            fut.cancel()
        errors = [exc for f in done if not f.cancelled() and (exc := f.exception()) is not None]
        return errors, len(not_done)

    # -- the connection ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.config.reconnect_min_s
        while not self._stopping:
            session = self._new_session()
            self._session = session
            try:
                await self._connect(session)
                await session.closed.wait()
            except (OSError, UplinkError) as exc:
                self._last_error = f"connect to {self.config.host}:{self.config.port}: {exc}"
                log.warning("sparkplug: %s", self._last_error)
            finally:
                await self._close(session)
            if session.accepted:
                self.node.new_session()
                delay = self.config.reconnect_min_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max_s)

    def _new_session(self) -> _Session:
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.effective_client_id,
            # Sparkplug requires a clean session: nothing survives from an earlier one.
            clean_session=None if v5 else True,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        client.connect_timeout = cfg.connect_timeout_s
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password else None
            client.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            tls = cfg.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
            )
        death_topic, death = self.node.death(_now_ms())
        client.will_set(death_topic, death, qos=1, retain=False)
        session = _Session(client, self.node.bd_seq)
        self._wire(session)
        return session

    def _wire(self, session: _Session) -> None:
        """Paho callbacks: each hands over to the event loop and returns at once."""
        client = session.client
        cfg = self.config

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
            if not rc.is_failure:
                # Subscribed before the births, as Sparkplug requires: no command is missed.
                node_cmd = self.node.topic("NCMD")
                topics = [(node_cmd, 1), (self.node.topic("DCMD") + "/+", 1)]
                if cfg.primary_host_id:
                    topics.append((f"{NAMESPACE}/STATE/{cfg.primary_host_id}", 1))
                c.subscribe(topics)
            self._soon(self._on_connack, session, rc)

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
            self._soon(self._on_closed, session, str(rc))

        def on_publish(_c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
            self._soon(self._on_ack, session, mid, rc)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            self._soon(self._on_message, session, msg.topic, msg.payload)

        def on_socket_open(_c: mqtt.Client, _u: Any, sock: Any) -> None:
            # A batch is several messages: Nagle's algorithm would hold each small write until
            # the previous one is ACKed. (The broker's PUBACKs suffer the same: with Mosquitto's
            # default set_tcp_nodelay false a 10-message batch took ~47 ms here, ~4 ms with true.)
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        client.on_connect = on_connect
        client.on_socket_open = on_socket_open
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message

    async def _connect(self, session: _Session) -> None:
        cfg = self.config
        kwargs: dict[str, Any] = {}
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            kwargs = {"clean_start": True, "properties": props}
        # connect() blocks on the TCP (and TLS) handshake: run it off the event loop.
        await asyncio.to_thread(
            session.client.connect, cfg.host, cfg.port, cfg.keepalive_s, **kwargs
        )
        session.client.loop_start()
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                await session.connack.wait()
        except TimeoutError:
            raise UplinkError(f"no CONNACK within {cfg.connect_timeout_s} s") from None
        if not session.accepted:
            raise UplinkError(self._last_error or "connection refused")

    async def _close(self, session: _Session) -> None:
        session.closed.set()
        session.fail_pending("connection to the MQTT broker lost before PUBACK")
        session.client.disconnect()
        # loop_stop joins paho's thread: off the event loop, bounded by paho's 1 s select.
        await asyncio.to_thread(session.client.loop_stop)
        # paho closes its wake-up socket pair only in __del__, which the garbage collector may
        # run after the sockets' own finalisers (ResourceWarning): close them now.
        session.client._reset_sockets()

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing left to tell
            loop.call_soon_threadsafe(fn, *args)

    # -- callbacks, on the event loop --------------------------------------------------------

    def _on_connack(self, session: _Session, rc: ReasonCode) -> None:
        if rc.is_failure:
            self._last_error = f"broker refused the connection: {rc}"
        else:
            session.accepted = True
            self._sessions += 1
            self._host_online = False
            log.info("sparkplug: connected, bdSeq %d", session.bd_seq)
            if not self.config.primary_host_id:
                self._birth(session)
        session.connack.set()

    def _on_closed(self, session: _Session, why: str) -> None:
        if session.up:
            self._last_error = f"connection lost: {why}"
            log.warning("sparkplug: %s", self._last_error)
        session.closed.set()
        session.connack.set()
        session.fail_pending(f"connection to the MQTT broker lost before PUBACK: {why}")

    def _on_ack(self, session: _Session, mid: int, rc: ReasonCode) -> None:
        fut = session.pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if rc.is_failure:
            fut.set_exception(UplinkError(f"broker refused the message: {rc}"))
        else:
            fut.set_result(None)

    def _on_message(self, session: _Session, topic: str, raw: bytes) -> None:
        if not session.up:
            return
        parts = topic.split("/")
        try:
            if len(parts) == 3 and parts[1] == "STATE":
                self._on_state(session, raw)
            elif len(parts) == 4 and parts[2] == "NCMD":
                self._on_ncmd(session, raw)
            elif len(parts) == 5 and parts[2] == "DCMD":
                self._on_dcmd(parts[4], raw)
        except ValueError as exc:
            self._last_error = f"bad message on {topic}: {exc}"
            log.warning("sparkplug: %s", self._last_error)

    def _on_state(self, session: _Session, raw: bytes) -> None:
        try:
            online = bool(json.loads(raw).get("online"))
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"STATE payload is not Sparkplug 3.0 JSON: {raw[:80]!r}") from exc
        self._host_online = online
        if online and not self.node.born:
            self._birth(session)
        elif not online:
            # Hold data back; births go out again when the host is back.
            self.node.unborn()

    def _on_ncmd(self, session: _Session, raw: bytes) -> None:
        for metric in spb.decode(raw).metrics:
            if metric.name == REBIRTH and spb.metric_value(metric, spb.BOOLEAN) is True:
                if self.config.primary_host_id and not self._host_online:
                    continue
                self._birth(session)

    def _on_dcmd(self, device: str, raw: bytes) -> None:
        payload = spb.decode(raw)
        for metric in payload.metrics:
            alias = metric.alias if metric.HasField("alias") else None
            found = self.node.resolve(device, metric.name or None, alias)
            if found is None:
                self._last_error = f"DCMD for unknown metric {metric.name or alias} of {device}"
                log.warning("sparkplug: %s", self._last_error)
                continue
            signal, datatype = found
            value = spb.metric_value(metric, datatype)
            # Echoed in the answer (the metric's own timestamp, else the payload's).
            stamp = metric.timestamp if metric.HasField("timestamp") else payload.timestamp
            task = asyncio.create_task(self._command(device, signal, value, stamp or None))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _command(
        self, device: str, signal: str, value: Any, command_ts: int | None = None
    ) -> None:
        self._commands_handled += 1
        name = self.node.device_names.get(device, device)
        request = WriteRequest(
            id=f"{self.config.group_id}/{self.config.edge_node_id}/{device}/{self._commands_handled}",
            device=name,
            signal=signal,
            value=value,
        )
        handler = self.on_command
        if handler is None:
            result = WriteResult(request.id, False, "this gateway has no command handler")
        else:
            try:
                async with asyncio.timeout(request.timeout_s + 5.0):
                    result = await handler(request)
            except Exception as exc:  # a failing handler is reported back, never raised here
                result = WriteResult(request.id, False, f"{type(exc).__name__}: {exc}")
        session = self._session
        if session is None or not session.up or not self.node.born:
            return
        reply = self.node.reply(
            device,
            signal,
            result.read_back,
            ok=result.ok,
            message=result.message,
            now_ms=_now_ms(),
            command_ts=command_ts,
        )
        with contextlib.suppress(UplinkError):
            self._publish(session, reply, track=False)

    # -- publishing --------------------------------------------------------------------------

    def _ready_session(self) -> _Session:
        session = self._session
        where = f"{self.config.host}:{self.config.port}"
        if session is None or not session.up:
            detail = f" ({self._last_error})" if self._last_error else ""
            raise UplinkError(f"not connected to the MQTT broker {where}{detail}")
        if not self.node.born:
            if self.config.primary_host_id and not self._host_online:
                raise UplinkError(
                    f"primary host {self.config.primary_host_id} is not online: data held back"
                )
            raise UplinkError("edge node not born yet")
        return session

    def _birth(self, session: _Session) -> None:
        try:
            self._publish(session, self.node.births(_now_ms()), track=False)
        except UplinkError as exc:
            self._last_error = f"births not published: {exc}"
            self.node.unborn()

    def _publish(
        self, session: _Session, messages: list[Message], *, track: bool
    ) -> list[asyncio.Future[None]]:
        assert self._loop is not None
        futs: list[asyncio.Future[None]] = []
        for topic, payload in messages:
            info = session.client.publish(topic, payload, qos=self.config.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                for pending in futs:
                    pending.cancel()
                raise UplinkError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            self._published += 1
            if track:
                fut: asyncio.Future[None] = self._loop.create_future()
                session.pending[info.mid] = fut
                futs.append(fut)
        return futs
