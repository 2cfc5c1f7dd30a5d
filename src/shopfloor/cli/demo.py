"""`shopfloor demo`: the platform fed by a simulated factory.

The factory is registered as a tenant "demo" with the ISA-95 tree enterprise > site > area >
line > machine, one device per machine created from a device type per machine kind. It first
backfills some history (fast, without waiting), then produces live data every second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console

from shopfloor.api.platform import Platform
from shopfloor.core.errors import NotFound
from shopfloor.core.timeutil import parse_duration
from shopfloor.core.types import make_batch
from shopfloor.edge.connectors.simulator import FactorySimulator, Frame
from shopfloor.registry.service import Registry, SignalSpec, TenantInfo

log = logging.getLogger(__name__)
console = Console(stderr=True)
TENANT = "demo"
BACKFILL_BATCH_STEPS = 600  # ten simulated minutes per write while backfilling


def ensure_tenant(platform: Platform) -> tuple[TenantInfo, str]:
    """The demo tenant and its API key, kept in the data folder so restarts reuse it."""
    key_file: Path = platform.settings.data_dir / "demo-api.key"
    try:
        tenant = platform.registry.get_tenant(TENANT)
    except NotFound:
        tenant, key = platform.registry.create_tenant(TENANT)
        key_file.write_text(key + "\n")
        return tenant, key
    if key_file.exists():
        return tenant, key_file.read_text().strip()
    key = platform.registry.rotate_api_key(tenant.id)
    key_file.write_text(key + "\n")
    return tenant, key


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


class DemoFactory:
    def __init__(self, seed: int = 1, backfill: str = "1h") -> None:
        self.seed = seed
        self.backfill_ns = (
            0 if backfill.strip() in ("", "0") else parse_duration(backfill, "backfill")
        )

    async def run(self, platform: Platform) -> None:
        tenant, key = await asyncio.to_thread(ensure_tenant, platform)
        now = time.time_ns() // 10**9 * 10**9
        probe = FactorySimulator(seed=self.seed, start_ns=now)
        fresh = await asyncio.to_thread(register_factory, platform.registry, tenant.id, probe)
        start = now - self.backfill_ns if fresh else now
        sim = FactorySimulator(seed=self.seed, start_ns=start)
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
        if start < now:
            console.print(f"Backfilling {self.backfill_ns / 3.6e12:.1f} h of history...")
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
        for frames in sim.run_until(end):
            pending.append(frames)
            if len(pending) == BACKFILL_BATCH_STEPS:
                platform.historian.write(to_batch(tenant_id, pending, ids))
                pending.clear()
        if pending:
            platform.historian.write(to_batch(tenant_id, pending, ids))

    async def _live(
        self, platform: Platform, tenant_id: int, sim: FactorySimulator, ids: dict[str, np.ndarray]
    ) -> None:
        while True:
            frames = sim.step()
            delay = (sim.now_ns - time.time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            await platform.historian.write_async(to_batch(tenant_id, [frames], ids))


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
