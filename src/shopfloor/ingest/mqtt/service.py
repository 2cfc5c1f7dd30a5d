"""MqttService: the platform's MQTT endpoint (broker or external broker, subscriber, routing).

``mqtt_mode`` picks the broker: ``embedded`` starts amqtt in this event loop (plugins in
broker.py check every login and topic), ``external`` subscribes to another broker through MQTT 5
shared subscriptions (the broker enforces ACLs; for Mosquitto dynsec.py pushes them), ``off``
starts nothing. Messages on ``sf/v1/...`` go to the JSON device API, ``spBv1.0/...`` to the
Sparkplug B host when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import unquote, urlsplit

import orjson

from shopfloor.core.errors import BadInput, Malformed, NotFound, ShopfloorError
from shopfloor.ingest.mqtt import counters as c
from shopfloor.ingest.mqtt.batcher import TelemetryBatcher
from shopfloor.ingest.mqtt.broker import (
    INTERNAL_USER,
    EmbeddedBroker,
    Gate,
    ProvisioningLogin,
    TlsFiles,
    provision_topic,
)
from shopfloor.ingest.mqtt.counters import BadInputCounters, FloodGate
from shopfloor.ingest.mqtt.device_api import (
    SUBSCRIPTIONS,
    CommandWaiters,
    command_topic,
    desired_topic,
    load_object,
    parse_telemetry,
    parse_topic,
)
from shopfloor.ingest.mqtt.subscriber import Endpoint, Subscriber
from shopfloor.security.limits import LimitExceeded, QuotaExceeded

if TYPE_CHECKING:
    from shopfloor.api.platform import Platform
    from shopfloor.registry.service import TenantInfo
    from shopfloor.security.limits import TenantLimiter

log = logging.getLogger(__name__)

SPARKPLUG_PREFIX: Final = "spBv1.0/"
SPARKPLUG_SUBSCRIPTION: Final = "spBv1.0/#"
PROVISION_PREFIX: Final = "sf/v1/provision/"
PROVISION_SUBSCRIPTION: Final = "sf/v1/provision/+/request"
REVOCATION_POLL_S: Final = 1.0
START_RETRY_S: Final = 5.0
QUOTA_EXCEEDED: Final = "quota_exceeded"  # counted like counters.RATE (the tenant's quota)


class SparkplugHandler(Protocol):
    async def handle(self, topic: str, payload: bytes, identity: Any) -> None: ...
    def will(self) -> tuple[str, bytes]: ...
    def online(self) -> tuple[str, bytes]: ...


class CommandTimeout(ShopfloorError):
    status_code = 504


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    username: str | None
    password: str | None


def parse_mqtt_url(url: str, setting: str) -> BrokerUrl:
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise BadInput(
            f"expected mqtt://[user:pass@]host[:port], got scheme {parts.scheme!r}", setting
        )
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerUrl(parts.hostname, parts.port or 1883, user, password)


class MqttService:
    """The MQTT endpoint; with ``subscribe=False`` (the ``api`` role) only the link that pushes
    device credentials into an external Mosquitto, no subscriber: the ingest workers take the
    messages."""

    def __init__(self, platform: Platform, subscribe: bool = True) -> None:
        self.platform = platform
        self.subscribe = subscribe
        self.settings = platform.settings
        self.counters = BadInputCounters()
        self.flood = FloodGate(self.settings.mqtt_device_rate)
        self.commands = CommandWaiters()
        self.batcher = TelemetryBatcher(
            platform.ingestor, max_batch_points=self.settings.max_batch_points
        )
        self.broker: EmbeddedBroker | None = None
        self.gate: Gate | None = None
        self.subscriber: Subscriber | None = None
        self.sparkplug: SparkplugHandler | None = None
        self.dynsec: Any = None
        self.sparkplug_messages = 0
        self._tenants: dict[str, TenantInfo] = {}
        self._tenants_generation = -1
        self._watch: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        mode = self.settings.mqtt_mode
        if mode == "off":
            return
        if not self.subscribe:
            if mode == "external":
                await self._start_dynsec()
            return
        self.sparkplug = self._sparkplug_host()
        will = self.sparkplug.will() if self.sparkplug is not None else None
        topics = [*SUBSCRIPTIONS, SPARKPLUG_SUBSCRIPTION]
        if mode == "embedded":
            endpoint = await self._start_embedded()
            client_id = "shopfloor-platform"
            topics.append(PROVISION_SUBSCRIPTION)  # provisioning logins: embedded broker only
        else:
            if not self.settings.mqtt_url:
                raise BadInput("mqtt_mode external needs mqtt_url", "mqtt_url")
            url = parse_mqtt_url(self.settings.mqtt_url, "mqtt_url")
            endpoint = Endpoint(
                url.host, url.port, url.username, url.password, True, self.settings.mqtt_share_group
            )
            # One session per worker process; the share group splits the messages among them.
            client_id = self.client_id()
            await self._start_dynsec()
        self.subscriber = Subscriber(endpoint, client_id, topics, self.handle, will)
        await self.subscriber.connect()
        if self.sparkplug is not None:
            topic, payload = self.sparkplug.online()
            await self.publish(topic, payload, qos=1, retain=True)
        await self._republish_desired()
        self._watch = asyncio.get_running_loop().create_task(self._watch_revocations())
        self.started.set()
        log.info("MQTT endpoint up (%s broker at %s:%d)", mode, endpoint.host, endpoint.port)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.subscriber is not None:
            offline = getattr(self.sparkplug, "offline", None)
            if offline is not None and self.subscriber.client.is_connected:
                # A clean disconnect drops the Will, so say "offline" ourselves.
                topic, payload = offline()
                self.subscriber.publish(topic, payload, qos=1, retain=True)
            await self.subscriber.stop()
            self.subscriber = None
        if self.dynsec is not None:
            await self.dynsec.close()
            self.dynsec = None
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.shutdown(), 10)
            self.broker = None
        self.started.clear()

    async def run(self) -> None:
        """Start, then serve until cancelled (a background task of the platform).

        An ``ingest`` process exists for its subscription: it tries again every
        START_RETRY_S until the broker answers (its health probe says 503 meanwhile)."""
        while True:
            try:
                await self.start()
                break
            except Exception:
                # A busy port or a missing credential store must not take the HTTP API down.
                log.exception("MQTT endpoint did not start")
                await self.stop()
                if self.settings.role != "ingest":
                    return
            await asyncio.sleep(START_RETRY_S)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def client_id(self) -> str:
        """This process's session at the external broker: ``mqtt_client_id``, else one made
        once and kept in the data folder. Mosquitto keeps the messages it had sent to a
        session and not had acknowledged for that session alone (they do not move to another
        share-group member), so a worker that crashed must come back under the same id to
        have them redelivered; a new random id per start would strand them until the
        session expires."""
        if self.settings.mqtt_client_id:
            return self.settings.mqtt_client_id
        path = Path(self.settings.data_dir) / "mqtt-client-id"
        try:
            kept = path.read_text().strip()
        except FileNotFoundError:
            kept = ""
        if not kept:
            kept = f"shopfloor-{self.settings.mqtt_share_group}-{uuid.uuid4().hex[:12]}"
            path.write_text(kept + "\n")
        return kept

    async def _start_embedded(self) -> Endpoint:
        from shopfloor.ingest.mqtt.broker import start_broker
        from shopfloor.registry.credentials import topic_allowed

        credentials = getattr(self.platform, "credentials", None)
        if credentials is None:
            raise RuntimeError("the embedded MQTT broker needs the platform's device credentials")
        self.gate = Gate(credentials, topic_allowed)
        self.gate.on_refused = lambda identity, topic: self.counters.reject(
            identity.tenant, identity.device, c.FORBIDDEN_TOPIC, f"publish to {topic!r} refused"
        )
        host = self.settings.mqtt_host
        tls = self._tls_files() if self.settings.mqtt_tls_port is not None else None
        self.broker = await start_broker(self.gate, host, self.settings.mqtt_port, tls)
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return Endpoint(
            connect_host, self.settings.mqtt_port, INTERNAL_USER, self.gate.internal_password, False
        )

    def _tls_files(self) -> TlsFiles:
        from shopfloor.registry.device_ca import DeviceCA

        ca = getattr(self.platform.credentials, "ca", None)
        if not isinstance(ca, DeviceCA):
            ca = DeviceCA(Path(self.settings.data_dir) / "ca")
        port = self.settings.mqtt_tls_port
        assert port is not None
        if self.settings.tls_cert_file is not None or self.settings.tls_key_file is not None:
            # The operator's certificate (checked, else BadInput naming the setting); client
            # certificates are still verified against the device CA.
            from shopfloor.security.tls import load_provided

            provided = load_provided(self.settings)
            return TlsFiles(port, provided.cert_file, provided.key_file, ca.ca_cert_path)
        folder = Path(self.settings.data_dir) / "mqtt-tls"
        folder.mkdir(parents=True, exist_ok=True)
        hosts = sorted({"localhost", "127.0.0.1", self.settings.mqtt_host} - {"0.0.0.0", ""})
        cert_pem, key_pem = ca.server_certificate(hosts)
        cert, key = folder / "server.pem", folder / "server.key"
        key.unlink(missing_ok=True)
        key.touch(mode=0o600)  # created private: the key is never readable by others
        key.write_bytes(_as_bytes(key_pem))
        cert.write_bytes(_as_bytes(cert_pem))
        return TlsFiles(port, cert, key, ca.ca_cert_path)

    async def _start_dynsec(self) -> None:
        if not self.settings.mqtt_dynsec_url:
            return
        from shopfloor.ingest.mqtt.dynsec import DynSec

        self.dynsec = DynSec(parse_mqtt_url(self.settings.mqtt_dynsec_url, "mqtt_dynsec_url"))
        await self.dynsec.connect()
        url = parse_mqtt_url(self.settings.mqtt_url or "", "mqtt_url")
        if url.username and url.password:  # the platform's own login and topics
            await self.dynsec.ensure_platform(
                url.username, url.password, self.settings.mqtt_share_group
            )

    def _sparkplug_host(self) -> SparkplugHandler | None:
        try:
            from shopfloor.ingest.sparkplug.host import SparkplugHost
        except ImportError:
            log.info("no Sparkplug B host installed; spBv1.0 messages are counted and dropped")
            return None
        host: SparkplugHandler = SparkplugHost(self.platform, self.publish)
        return host

    async def _republish_desired(self) -> None:
        """Desired attributes again, retained: the embedded broker forgets them on restart."""
        credentials = getattr(self.platform, "credentials", None)
        if credentials is None or self.settings.mqtt_mode != "embedded":
            return

        def collect() -> list[tuple[str, str, dict[str, Any]]]:
            found = []
            for tenant in self.platform.registry.list_tenants():
                for dev in self.platform.registry.list_devices(tenant.id):
                    desired = credentials.desired_attributes(tenant.id, dev.name)
                    if desired:
                        found.append((tenant.name, dev.name, desired))
            return found

        for tenant_name, device, desired in await asyncio.to_thread(collect):
            await self.publish_desired(tenant_name, device, desired)

    async def _watch_revocations(self) -> None:
        credentials = getattr(self.platform, "credentials", None)
        if credentials is None or self.gate is None:
            return
        seen = credentials.generation
        while True:
            await asyncio.sleep(REVOCATION_POLL_S)
            if credentials.generation != seen:
                seen = credentials.generation
                dropped = self.gate.drop_revoked()
                if dropped:
                    log.info("disconnected %d MQTT clients whose credentials were revoked", dropped)

    # -- outbound ---------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if self.subscriber is None:
            raise RuntimeError("the MQTT endpoint is not running")
        self.subscriber.publish(topic, payload, qos=qos, retain=retain)

    async def command(
        self, tenant: str, device: str, body: dict[str, Any], timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send a command to a device and wait for its response."""
        command_id = secrets.token_hex(8)
        waiter = self.commands.expect(tenant, device, command_id)
        try:
            await self.publish(command_topic(tenant, device, command_id), orjson.dumps(body), qos=1)
            wait = timeout_s or self.settings.mqtt_command_timeout_s
            try:
                response = await asyncio.wait_for(waiter, wait)
            except TimeoutError:
                raise CommandTimeout(
                    f"device {device!r} did not answer command {command_id} within {wait} s"
                ) from None
        finally:
            self.commands.forget(tenant, device, command_id)
        return {"id": command_id, **response}

    async def publish_desired(self, tenant: str, device: str, attrs: dict[str, Any]) -> None:
        await self.publish(desired_topic(tenant, device), orjson.dumps(attrs), qos=1, retain=True)

    async def credential_issued(self, identity: Any, username: str, password: str) -> None:
        """Push a newly issued credential to an external Mosquitto (a no-op otherwise).

        Mosquitto takes plain secrets only at creation, so this runs when the secret is known;
        a token is pushed as username and password both.
        """
        if self.dynsec is not None:
            await self.dynsec.add_device(identity, username, password)

    async def credential_revoked(self, username: str) -> None:
        """Remove a credential from an external Mosquitto, which disconnects its client."""
        if self.dynsec is not None:
            await self.dynsec.revoke(username)

    async def credentials_revoked(self, credential_ids: set[int]) -> None:
        """Remove revoked credentials, by id, from an external Mosquitto."""
        if self.dynsec is not None and credential_ids:
            await self.dynsec.revoke_credentials(credential_ids)

    @property
    def syncs_broker(self) -> bool:
        """Whether credentials must be pushed into the broker (external Mosquitto)."""
        return self.dynsec is not None

    def stats(self, tenant: str | None = None) -> dict[str, object]:
        """The endpoint's figures; for one tenant, only its devices' (no platform-wide ones)."""
        if tenant is not None:
            return {
                "mode": self.settings.mqtt_mode,
                "running": self.started.is_set(),
                **self.counters.snapshot(tenant),
            }
        return {
            "mode": self.settings.mqtt_mode,
            "running": self.started.is_set(),
            "unstored_messages": self.subscriber.failures if self.subscriber else 0,
            "sparkplug_messages": self.sparkplug_messages,
            **self.counters.snapshot(),
        }

    # -- inbound ----------------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes, qos: int) -> None:
        """Route one message; returns once it is stored. Bad input is counted, not raised."""
        if topic.startswith(SPARKPLUG_PREFIX):
            await self._sparkplug(topic, payload)
            return
        if topic.startswith(PROVISION_PREFIX):
            await self._provision(topic, payload)
            return
        dt = parse_topic(topic)
        if dt is None:
            self.counters.reject("?", "?", c.UNKNOWN_TOPIC, f"topic {topic!r}")
            return
        if len(payload) > self.settings.mqtt_max_message_bytes:
            self.counters.reject(
                dt.tenant,
                dt.device,
                c.TOO_LARGE,
                f"{len(payload)} bytes, at most {self.settings.mqtt_max_message_bytes}",
            )
            return
        if not self.flood.allow(dt.tenant, dt.device):
            self.counters.reject(
                dt.tenant, dt.device, c.RATE, f"over {self.settings.mqtt_device_rate} msgs/s"
            )
            return
        try:
            tenant = self._tenant(dt.tenant)  # cached; a miss is one indexed read
        except NotFound as exc:
            self.counters.reject(dt.tenant, dt.device, c.UNKNOWN_TENANT, str(exc))
            return
        try:
            if dt.kind == "telemetry":
                item = parse_telemetry(payload, dt.device, self.settings.max_batch_points)
                if not self._admit(tenant, dt.device, len(item)):
                    return
                try:
                    await self.batcher.ingest(tenant, item)
                except BaseException:
                    self._limits().release_points(tenant.id, len(item))
                    raise
            elif dt.kind == "attributes":
                attrs = load_object(payload, "attributes")
                await asyncio.to_thread(
                    self.platform.credentials.set_reported_attributes, tenant.id, dt.device, attrs
                )
            else:
                response = load_object(payload, "a command response")
                if not self.commands.resolve(dt.tenant, dt.device, dt.command_id or "", response):
                    log.info(
                        "response to unknown or expired command %s of %s", dt.command_id, dt.device
                    )
        except Malformed as exc:
            self.counters.reject(dt.tenant, dt.device, c.MALFORMED, str(exc))
            return
        except ShopfloorError as exc:
            if exc.status_code >= 500:
                raise  # storage trouble: leave the message unacknowledged
            self.counters.reject(dt.tenant, dt.device, c.INVALID, str(exc))
            return
        self.counters.accept(dt.tenant)

    def _limits(self) -> TenantLimiter:
        limits: TenantLimiter = self.platform.limits
        return limits

    def _admit(self, tenant: TenantInfo, device: str, n: int) -> bool:
        """The tenant's ingest rate and quota (security/limits.py), as for HTTP ingest; a
        refused message is counted and dropped (acknowledged: MQTT has no 'retry later')."""
        try:
            self._limits().admit_points(tenant, n)
        except LimitExceeded as exc:
            reason = QUOTA_EXCEEDED if isinstance(exc, QuotaExceeded) else c.RATE
            self.counters.reject(tenant.name, device, reason, str(exc))
            return False
        return True

    async def _provision(self, topic: str, payload: bytes) -> None:
        """``sf/v1/provision/<client id>/request`` from a provisioning login: register the
        device with that login's key and answer its credential on ``.../response``."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[4] != "request" or self.gate is None:
            self.counters.reject("?", "?", c.UNKNOWN_TOPIC, f"topic {topic!r}")
            return
        client_id = parts[3]
        login = self.gate.identities.get(client_id)
        if not isinstance(login, ProvisioningLogin):
            self.counters.reject("?", client_id, c.INVALID, "not a provisioning login")
            return
        answer: dict[str, Any]
        try:
            req = load_object(payload, "a provisioning request")
            device, credential = req.get("device"), req.get("credential", "token")
            if not isinstance(device, str) or credential not in ("token", "password"):
                raise BadInput('send {"device": NAME, "credential": "token"|"password"}', "payload")
            r = await asyncio.to_thread(
                self.platform.credentials.provision, login.key, device, credential=credential
            )
            answer = {"ok": True, "tenant": r.identity.tenant, "device": r.identity.device}
            answer |= {"credential": r.credential, "created": r.created}
            answer |= {k: v for k in ("token", "username", "password") if (v := getattr(r, k))}
        except ShopfloorError as exc:
            if exc.status_code >= 500:
                raise
            self.counters.reject("?", client_id, c.INVALID, f"provisioning: {exc}")
            answer = {"ok": False, "error": str(exc)}
        await self.publish(provision_topic(client_id, "response"), orjson.dumps(answer), qos=1)

    async def _sparkplug(self, topic: str, payload: bytes) -> None:
        group = topic.split("/", 2)[1] if topic.count("/") >= 1 else "?"
        if len(payload) > self.settings.mqtt_max_message_bytes:
            self.counters.reject(group, topic, c.TOO_LARGE, f"{len(payload)} bytes")
            return
        if self.sparkplug is None:
            self.counters.reject(group, topic, c.NO_SPARKPLUG_HOST, "no Sparkplug B host")
            return
        try:
            await self.sparkplug.handle(topic, payload, None)
        except ShopfloorError as exc:
            if exc.status_code >= 500:
                raise
            self.counters.reject(group, topic, c.INVALID, str(exc))
            return
        self.sparkplug_messages += 1

    def _tenant(self, name: str) -> TenantInfo:
        registry = self.platform.registry
        if self._tenants_generation != registry.generation:
            self._tenants.clear()
            self._tenants_generation = registry.generation
        tenant = self._tenants.get(name)
        if tenant is None:
            tenant = registry.get_tenant(name)
            self._tenants[name] = tenant
        return tenant


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem
