"""The running platform: settings, registry, historian and ingest wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pyarrow as pa

from shopfloor.api.alarm_actions import action_deps, record_action
from shopfloor.apps.catalogue import Catalogue
from shopfloor.apps.context import PlatformContext
from shopfloor.apps.host import AppHost
from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import DAY_NS, now_ns
from shopfloor.historian.backend import HistorianBackend
from shopfloor.historian.duckdb_backend import DuckDBHistorian
from shopfloor.ingest.mqtt import MqttService
from shopfloor.ingest.service import Ingestor
from shopfloor.registry.credentials import DeviceCredentials, default_ca_dir
from shopfloor.registry.service import Registry
from shopfloor.rules.bus import BusEndpoint, ProcessBus
from shopfloor.rules.runtime import Partition, RulesRuntime
from shopfloor.rules.store import AlarmStore, RuleStore
from shopfloor.security.audit import AuditLog
from shopfloor.security.auth import AuthService
from shopfloor.security.limits import TenantLimiter

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0

# What each process role runs (docs/scale-out.md). "all" is the single process of `shopfloor up`.
RUNS_RULES = frozenset({"all", "rules"})  # rules runtime, app host, retention, audit purge
RUNS_SUBSCRIBER = frozenset({"all", "ingest"})  # the MQTT subscriber (and embedded broker)


def check_role(settings: Settings) -> None:
    """Refuse a role the storage cannot serve: a role other than ``all`` means several
    processes (on several machines) sharing one registry and one historian."""
    role = settings.role
    if role == "all":
        return
    historian = settings.resolved_historian_url()
    if not historian.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise BadInput(
            f"role {role!r} needs a historian several processes can share: set historian_url "
            f"to postgresql://... (a DuckDB historian is opened by one process only; "
            f"historian_url is {historian!r})",
            "historian_url",
        )
    registry = settings.resolved_registry_url()
    if registry.startswith("sqlite"):
        # SQLite would work for processes on one machine, but roles exist to spread over
        # machines, and a file on a network share corrupts under SQLite's locking.
        raise BadInput(
            f"role {role!r} needs a registry several machines can share: set registry_url "
            f"to postgresql://... (registry_url is {registry!r})",
            "registry_url",
        )
    if role == "rules" and settings.mqtt_mode != "external":
        raise BadInput(
            "role 'rules' gets the durable batches from the ingest workers over the broker "
            f"(rules/bus.py): set mqtt_mode external with mqtt_url; mqtt_mode is "
            f"{settings.mqtt_mode!r}",
            "mqtt_mode",
        )
    Partition.parse(settings.rules_partition)  # a bad one names the setting before anything opens
    if role == "ingest" and settings.mqtt_mode != "external":
        raise BadInput(
            f"role 'ingest' subscribes to an external broker (mqtt_mode external with mqtt_url); "
            f"mqtt_mode is {settings.mqtt_mode!r} (an embedded broker cannot be shared by "
            "several workers)",
            "mqtt_mode",
        )


def open_historian(settings: Settings) -> HistorianBackend:
    url = settings.resolved_historian_url()
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        from shopfloor.historian.postgres_backend import PostgresHistorian  # psycopg: only here

        return PostgresHistorian(
            url,
            commit_interval_ms=settings.commit_interval_ms,
            hot_max_points=settings.hot_max_points,
            compact_interval_s=settings.compact_interval_s,
            # An ingest worker serves no reads: it need not follow the others' latest values.
            listen=settings.role != "ingest",
        )
    if not sep or scheme != "duckdb":
        raise BadInput(
            f"unsupported historian URL {url!r}; use duckdb:///<folder> or postgresql://...",
            "historian_url",
        )
    return DuckDBHistorian(
        Path(
            rest[1:] if rest.startswith("/") else rest
        ),  # as sqlite:/// URLs: 4 slashes = absolute
        commit_interval_ms=settings.commit_interval_ms,
        hot_max_points=settings.hot_max_points,
        compact_interval_s=settings.compact_interval_s,
    )


def load_admin_key(data_dir: Path) -> str:
    """The platform admin key lives in the data folder, readable by its owner only."""
    path = data_dir / "admin.key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


class Platform:
    def __init__(self, settings: Settings) -> None:
        check_role(settings)
        self.settings = settings
        self.role = settings.role
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin_key = load_admin_key(settings.data_dir)
        self.registry = Registry(settings.resolved_registry_url())
        self.registry.upgrade()
        self.historian = open_historian(settings)
        self.ingestor = Ingestor(self.registry, self.historian)
        # Device credentials (tokens, passwords, certificates) over the registry.
        self.credentials = DeviceCredentials(self.registry, default_ca_dir(settings.data_dir))
        # Security: the audit log first, every other service records into it.
        self.audit = AuditLog(self.registry, settings)
        self.auth = AuthService(self.registry, settings, self.audit)
        # Per-tenant rate limits and quotas, cached in memory (security/limits.py).
        self.limits = TenantLimiter(self.registry, self.historian, settings)
        # Rules (checked by the engine when saved) and alarm states with their history.
        self.rules = RuleStore(self.registry)
        self.alarms = AlarmStore(self.registry)
        # Live evaluation: every durable batch goes through the tenant's rules (rules/runtime.py).
        # A rule's actions get the egress policy, MQTT and commands of this platform
        # (api/alarm_actions.py), and every outcome is audited.
        self.runtime = RulesRuntime(
            self.registry,
            self.rules,
            self.alarms,
            action_deps=lambda tenant_id, rule: action_deps(self, tenant_id, rule),
            on_action=lambda *outcome: record_action(self, *outcome),
            partition=Partition.parse(settings.rules_partition)
            if self.role == "rules"
            else Partition(),
        )
        # Apps (apps/): the catalogue of installed apps and the tenants' choices, and the host
        # that runs the enabled ones on the same durable batches as the rules.
        self.catalogue = Catalogue(self.registry)
        self.apps = AppHost(self.catalogue, self.app_context, settings.data_dir / "apps")
        # Only a process that runs the rules hands them durable batches; an api or ingest
        # process stores its batches and nothing evaluates them here (docs/scale-out.md).
        if self.role in RUNS_RULES:
            self.ingestor.on_durable = self._durable
        # Scaled out, durable batches and alarm changes cross processes over the broker.
        self.bus = self._process_bus()
        self.mqtt: MqttService | None = None
        if settings.mqtt_mode != "off" and self.role in RUNS_SUBSCRIBER:
            self.mqtt = MqttService(self)
        elif settings.mqtt_mode == "external" and self.role == "api":
            # No subscriber, but credentials issued here must still reach the broker.
            self.mqtt = MqttService(self, subscribe=False)
        self._tasks: list[asyncio.Task[None]] = []

    def _process_bus(self) -> ProcessBus | None:
        """rules/bus.py for a role other than ``all`` on an external broker: ingest and api
        processes publish their durable batches, rules processes evaluate them and publish the
        alarm changes, api processes hand those to their live subscribers."""
        settings = self.settings
        if self.role == "all" or settings.mqtt_mode != "external" or not settings.mqtt_url:
            if self.role == "api":
                log.warning(
                    "api role without an external broker: batches ingested over HTTP here "
                    "are stored but no rules process evaluates them"
                )
            return None
        from shopfloor.ingest.mqtt.service import parse_mqtt_url

        url = parse_mqtt_url(settings.mqtt_url, "mqtt_url")
        endpoint = BusEndpoint(url.host, url.port, url.username, url.password)
        if self.role == "rules":
            part = self.runtime.partition
            bus = ProcessBus(
                endpoint, f"shopfloor-rules-{part.index}-of-{part.count}", on_batch=self._durable
            )
            self.runtime.on_published = bus.publish_alarms
            return bus
        # A clean session per process: what it publishes needs no session of its own.
        name = f"shopfloor-{self.role}-{secrets.token_hex(4)}"
        bus = ProcessBus(
            endpoint, name, on_alarms=self.runtime.deliver if self.role == "api" else None
        )
        self.ingestor.on_durable = bus.publish_batch
        return bus

    async def _run_bus(self, bus: ProcessBus) -> None:
        while True:
            try:
                await bus.start()
                break
            except Exception as exc:  # the broker is not up yet: keep trying, as ingest does
                log.warning("internal MQTT connection failed (%s); retrying in 5 s", exc)
                await asyncio.sleep(5.0)
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await bus.stop()

    def _durable(self, tenant_id: int, batch: pa.Table) -> None:
        self.runtime.feed(tenant_id, batch)
        if self.runtime.partition.index == 0:  # apps see every device: in one process only
            self.apps.feed(tenant_id, batch)

    def app_context(self, tenant_id: int, app: str) -> PlatformContext:
        tenant = self.registry.get_tenant(tenant_id)
        return PlatformContext(
            tenant_id=tenant_id,
            tenant=tenant.name,
            app=app,
            registry=self.registry,
            historian=self.historian,
            ingestor=self.ingestor,
            rules=self.rules,
            data_dir=self.settings.data_dir / "apps" / str(tenant_id) / app / "files",
        )

    def apply_retention(self) -> int:
        """Apply every tenant's retention period; returns points removed."""
        removed = 0
        for tenant in self.registry.list_tenants():
            if tenant.retention_days:
                cutoff = now_ns() - tenant.retention_days * DAY_NS
                removed += self.historian.apply_retention(tenant.id, cutoff)
        return removed

    async def _retention_loop(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.apply_retention)
                if removed:
                    log.info("retention removed %d points", removed)
            except Exception:
                log.exception("retention run failed; will retry")
            await asyncio.sleep(RETENTION_EVERY_S)

    def start_background(self) -> None:
        if self.role in RUNS_RULES:
            self.spawn(self.runtime.run())  # live rules over ingested batches, alarms to WebSockets
            # Exactly one process of a deployment applies retention and runs the apps: the
            # rules process of partition 0.
            if self.runtime.partition.index == 0:
                self.spawn(self._retention_loop())
                self.spawn(self.audit.purge_loop())  # daily: audit records past their retention
                self.spawn(self.apps.run())  # the tenants' enabled apps on the same batches
        if self.bus is not None:
            self.spawn(self._run_bus(self.bus))
        if self.mqtt is not None:
            self.spawn(self.mqtt.run())  # stops the broker and subscriber when cancelled

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine for the life of the platform; a crash is logged, not swallowed."""
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)

    async def stop_background(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            # Every task is stopped, whatever one of them raised (logged by _log_crash).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    def close(self) -> None:
        self.historian.close()
        self.registry.close()
