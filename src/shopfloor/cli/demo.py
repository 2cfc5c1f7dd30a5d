"""`shopfloor demo`: the platform fed by a simulated factory, with the apps running.

The factory is registered as a tenant "demo" with the ISA-95 tree enterprise > site > area >
line > machine, one device per machine created from a device type per machine kind. The
built-in apps are enabled for it with their example configs (made for this factory).

On a fresh data folder it first simulates history, fast and without waiting: ``history``
(default a week) at one reading a minute, so that the apps have shifts to report, baselines
to learn and run-to-failure histories to train on, then ``backfill`` (default an hour) at one
reading a second. Every simulated batch goes through the ingest path's durable hook, so the
rules and the apps see the history as it happened. Then it produces live data every second.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
from rich.console import Console

from shopfloor.api.platform import Platform
from shopfloor.core.errors import NotFound
from shopfloor.core.kinds import Role
from shopfloor.core.timeutil import parse_duration
from shopfloor.core.types import make_batch
from shopfloor.edge.connectors.simulator import FactorySimulator, Frame
from shopfloor.registry.service import Registry, SignalSpec, TenantInfo

log = logging.getLogger(__name__)
console = Console(stderr=True)
TENANT: Final = "demo"
BACKFILL_BATCH_STEPS = 600  # steps per write while simulating history (10 min at 1 s)
HISTORY_PERIOD_S = 60.0  # the week of history: one reading a minute
APPS_START_S = 15.0  # how long to wait for the enabled apps to start before the history


def enable_apps(platform: Platform, tenant_id: int) -> list[str]:
    """Enable every installed app the tenant has no choice for yet, with its example config
    (a third party's app whose example does not fit the demo is skipped with a warning)."""
    enabled = []
    chosen = platform.catalogue.tenant_apps(tenant_id)
    for name, cls in platform.catalogue.apps.items():
        if name in chosen:
            if chosen[name].enabled:
                enabled.append(name)
            continue
        try:
            platform.catalogue.enable(tenant_id, name, dict(cls.example_config), actor="demo")
        except Exception as exc:
            log.warning("demo: app %r not enabled: %s", name, exc)
            continue
        enabled.append(name)
    return enabled


def ensure_tenant(platform: Platform) -> tuple[TenantInfo, str]:
    """The demo tenant and its API key, kept in the data folder so restarts reuse it."""
    key_file: Path = platform.settings.data_dir / "demo-api.key"
    key_file.touch(mode=0o600)  # the tenant's key: readable by its owner only
    try:
        tenant = platform.registry.get_tenant(TENANT)
    except NotFound:
        tenant, key = platform.registry.create_tenant(TENANT)
        key_file.write_text(key + "\n")
        return tenant, key
    if key_file.read_text().strip():
        return tenant, key_file.read_text().strip()
    key = platform.registry.rotate_api_key(tenant.id)
    key_file.write_text(key + "\n")
    return tenant, key


# Rules of the demo tenant, on every machine kind: the alarms an operator sees first.
DEMO_RULES: Final = (
    ("machine-down", {"kind": "expression", "expression": "state == 4"}, 2, "machine down"),
    (
        "high-vibration",
        {"kind": "threshold", "signal": "vib_x_rms", "limit": 4.5, "deadband": 0.3},
        2,
        "vibration above 4.5 mm/s (ISO 10816 zone C)",
    ),
    (
        "motor-hot",
        {"kind": "threshold", "signal": "motor_temp", "limit": 70.0, "deadband": 2.0},
        3,
        "motor temperature above 70 °C",
    ),
)


def ensure_rules(platform: Platform, tenant_id: int, device_types: list[str]) -> None:
    """The demo rules on each device type, made once (a user's changes are kept)."""
    existing = {r.name for r in platform.rules.list_rules(tenant_id)}
    for dtype in device_types:
        for name, definition, priority, message in DEMO_RULES:
            full = f"{name}-{dtype.removeprefix('simulated-')}"
            if full in existing:
                continue
            raw = dict(definition)
            kind = str(raw.pop("kind"))
            platform.rules.create(
                tenant_id, full, kind, raw, device_type=dtype, priority=priority, message=message
            )


DEMO_USERS: Final = (("engineer", Role.ENGINEER), ("operator", Role.OPERATOR))


def ensure_users(platform: Platform, tenant_id: int) -> dict[str, str]:
    """Console logins of the demo tenant (roles without a second factor), made once; their
    passwords are kept in the data folder (owner-only) and printed at every start."""
    path: Path = platform.settings.data_dir / "demo-users.txt"
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, password = line.partition(" ")
            if name and password:
                known[name] = password
    existing = {u.username for u in platform.auth.list_users(tenant_id)}
    for name, role in DEMO_USERS:
        if name in existing and name in known:
            continue
        if name in existing:  # a password nobody knows any more: leave the user alone
            continue
        password = "Demo-" + secrets.token_urlsafe(12)
        platform.auth.create_user(tenant_id, name, password, [(role, None)])
        known[name] = password
    path.touch(mode=0o600)
    path.write_text("".join(f"{n} {p}\n" for n, p in known.items()))
    return known


def register_factory(registry: Registry, tenant_id: int, sim: FactorySimulator) -> bool:
    """Create the asset tree, device types and devices; returns False if they already exist."""
    try:
        registry.get_device_type(tenant_id, next(iter(sim.device_types())))
        return False
    except NotFound:
        pass
    for name, signals in sim.device_types().items():
        specs = [
            SignalSpec(s.name, s.data_type, s.unit, s.description, s.classification)
            for s in signals
        ]
        registry.create_device_type(tenant_id, name, specs, description="simulated machine kind")
    ent = registry.create_asset(tenant_id, "enterprise", sim.enterprise)
    site = registry.create_asset(tenant_id, "site", sim.site, ent.id)
    area = registry.create_asset(tenant_id, "area", sim.area, site.id)
    lines: dict[str, int] = {}
    for m in sim.machines():
        if m.line not in lines:
            lines[m.line] = registry.create_asset(tenant_id, "line", m.line, area.id).id
        machine = registry.create_asset(tenant_id, "machine", m.name, lines[m.line])
        registry.create_device(tenant_id, m.name, m.device_type, machine.id)
    return True


def _duration(raw: str, what: str) -> int:
    return 0 if raw.strip() in ("", "0") else parse_duration(raw, what)


class DemoFactory:
    def __init__(
        self, seed: int = 1, backfill: str = "1h", history: str = "0", apps: bool = True
    ) -> None:
        self.seed = seed
        self.backfill_ns = _duration(backfill, "backfill")
        self.history_ns = _duration(history, "history")
        self.apps = apps

    async def run(self, platform: Platform) -> None:
        tenant, key = await asyncio.to_thread(ensure_tenant, platform)
        now = time.time_ns() // 10**9 * 10**9
        probe = FactorySimulator(seed=self.seed, start_ns=now)
        fresh = await asyncio.to_thread(register_factory, platform.registry, tenant.id, probe)
        users = await asyncio.to_thread(ensure_users, platform, tenant.id)
        await asyncio.to_thread(ensure_rules, platform, tenant.id, list(probe.device_types()))
        url = f"http://{platform.settings.http_host}:{platform.settings.http_port}"
        if platform.settings.ui:
            logins = ", ".join(f"{n} / {p}" for n, p in users.items())
            console.print(f"Console: {url}/ui/  tenant 'demo', users {logins}")
        if self.apps:
            names = await asyncio.to_thread(enable_apps, platform, tenant.id)
            await self._apps_started(platform, tenant.id, names)
            if names:
                console.print(f"Apps enabled: {', '.join(names)}")
        history = self.history_ns if fresh else 0
        start = now - self.backfill_ns if fresh else now
        # The history is simulated at one reading a minute, then the same factory goes on at
        # one a second: one simulator, so machines, faults and counters carry on unbroken.
        sim_start = (start - history) // 60_000_000_000 * 60_000_000_000 if history else start
        sim = FactorySimulator(
            seed=self.seed,
            start_ns=sim_start,
            period_s=HISTORY_PERIOD_S if history else 1.0,
        )
        ids = {
            m.name: platform.registry.resolve(
                tenant.id, m.name, [s.name for s in m.signals], [s.data_type for s in m.signals]
            )
            for m in sim.machines()
        }
        url = f"http://{platform.settings.http_host}:{platform.settings.http_port}"
        console.print(
            f"Demo factory: {len(ids)} machines, {sim.signal_count()} signals at 1 Hz, tenant "
            f"'{TENANT}', API key {key}\n  try: curl -H 'X-API-Key: {key}' "
            f"'{url}/api/v1/latest?device={sim.machines()[0].name}'"
        )
        if history:
            console.print(
                f"Simulating {history / 8.64e13:.1f} days of history, a reading a minute..."
            )
            await asyncio.to_thread(self._backfill, platform, tenant.id, sim, ids, start)
            sim.set_period(1.0)
        if start < now:
            console.print(f"Backfilling {self.backfill_ns / 3.6e12:.1f} h, a reading a second...")
            await asyncio.to_thread(self._backfill, platform, tenant.id, sim, ids, now)
            console.print("Backfill done; live data every second.")
        await self._live(platform, tenant.id, sim, ids)

    def _backfill(
        self,
        platform: Platform,
        tenant_id: int,
        sim: FactorySimulator,
        ids: dict[str, np.ndarray],
        end: int,
    ) -> None:
        pending: list[list[Frame]] = []

        def write() -> None:
            batch = to_batch(tenant_id, pending, ids)
            platform.historian.write(batch)
            platform.ingestor.durable(batch)  # the rules and the apps see it
            pending.clear()

        for frames in sim.run_until(end):
            pending.append(frames)
            if len(pending) == BACKFILL_BATCH_STEPS:
                write()
        if pending:
            write()

    async def _apps_started(self, platform: Platform, tenant_id: int, names: list[str]) -> None:
        """Wait (a little) for the app host to start the enabled apps, so that they see the
        history from its beginning."""
        deadline = time.monotonic() + APPS_START_S
        while time.monotonic() < deadline:
            if all(platform.apps.instance(tenant_id, n) is not None for n in names):
                return
            await asyncio.sleep(0.1)
        log.warning("demo: not every app started within %.0f s", APPS_START_S)

    async def _live(
        self, platform: Platform, tenant_id: int, sim: FactorySimulator, ids: dict[str, np.ndarray]
    ) -> None:
        while True:
            frames = sim.step()
            delay = (sim.now_ns - time.time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            # Through the ingest path: stored, then seen by the live rules and the apps.
            await platform.ingestor.write(to_batch(tenant_id, [frames], ids))


def to_batch(tenant_id: int, steps: list[list[Frame]], ids: dict[str, np.ndarray]) -> pa.Table:
    """Frames of several steps into one point batch (per frame, not per point)."""
    frames = [f for step in steps for f in step]
    return make_batch(
        tenant_id,
        np.concatenate([ids[f.device] for f in frames]),
        np.concatenate([np.full(len(f.values), f.ts_ns, np.int64) for f in frames]),
        np.concatenate([f.values for f in frames]),
        np.concatenate([f.quality for f in frames]),
    )
