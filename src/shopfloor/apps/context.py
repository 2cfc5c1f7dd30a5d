"""The platform side of an app's :class:`~shopfloor.apps.sdk.AppContext`.

One :class:`PlatformContext` per (tenant, app). It is called from the app host's worker
thread, so everything here is synchronous: historian reads and writes block until done (a
write returns once durable), registry calls are short SQL transactions.

- Derived signals are written to the historian and then handed to the ingest path's durable
  hook, so the live rules and the other apps see them exactly like ingested points.
- Rules an app keeps are named ``<app>:<name>`` so that they never collide with the tenant's
  own rules, and are replaced only when their definition changed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from shopfloor.apps.sdk import AppEvent, DeviceView, Series
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.types import make_batch
from shopfloor.historian.backend import HistorianBackend
from shopfloor.ingest.service import Ingestor
from shopfloor.registry.models import AssetLevel
from shopfloor.registry.service import Registry, SignalSpec, check_name
from shopfloor.rules.store import RuleStore

__all__ = ["MAX_EVENTS", "PlatformContext", "app_rule_name"]

MAX_EVENTS: Final = 1000  # kept per app and tenant, newest last
DEVICES_TTL_S: Final = 5.0


def app_rule_name(app: str, name: str) -> str:
    return f"{app}:{name}"


class PlatformContext:
    def __init__(
        self,
        *,
        tenant_id: int,
        tenant: str,
        app: str,
        registry: Registry,
        historian: HistorianBackend,
        ingestor: Ingestor,
        rules: RuleStore,
        data_dir: Path,
    ) -> None:
        self._tenant_id = tenant_id
        self._tenant = tenant
        self._app = app
        self.registry = registry
        self.historian = historian
        self.ingestor = ingestor
        self.rules = rules
        self._data_dir = data_dir
        self.events: deque[AppEvent] = deque(maxlen=MAX_EVENTS)
        self._lock = threading.Lock()
        self._devices: tuple[float, int, list[DeviceView]] | None = None
        self.points_written = 0

    # -- who -------------------------------------------------------------------------------

    @property
    def tenant_id(self) -> int:
        return self._tenant_id

    @property
    def tenant(self) -> str:
        return self._tenant

    @property
    def app(self) -> str:
        return self._app

    @property
    def data_dir(self) -> Path:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        return self._data_dir

    def now_ns(self) -> int:
        return time.time_ns()

    # -- the registry ----------------------------------------------------------------------

    def devices(self, device_type: str | None = None) -> list[DeviceView]:
        views = self._all_devices()
        if device_type is None:
            return list(views)
        return [d for d in views if d.device_type == device_type]

    def _all_devices(self) -> list[DeviceView]:
        # Apps ask often (per tick); the registry's generation says when anything changed.
        gen = self.registry.generation
        cached = self._devices
        if cached is not None and cached[1] == gen and time.monotonic() - cached[0] < DEVICES_TTL_S:
            return cached[2]
        assets = {a.id: a for a in self.registry.list_assets(self._tenant_id)}

        def path(asset_id: int | None) -> tuple[str, ...]:
            out: list[str] = []
            while asset_id is not None and asset_id in assets and len(out) < 16:
                a = assets[asset_id]
                out.append(a.name)
                asset_id = a.parent_id
            return tuple(reversed(out))

        signals: dict[str, dict[str, int]] = {}
        for sig in self.registry.list_signals(self._tenant_id):
            signals.setdefault(sig.device, {})[sig.name] = sig.id
        views = [
            DeviceView(d.name, d.device_type, path(d.asset_id), signals.get(d.name, {}))
            for d in self.registry.list_devices(self._tenant_id)
        ]
        self._devices = (time.monotonic(), gen, views)
        return views

    def asset_levels(self) -> dict[str, AssetLevel]:
        """Asset name -> ISA-95 level (for roll-ups)."""
        return {a.name: a.level for a in self.registry.list_assets(self._tenant_id)}

    def signal_ids(self, device_type: str | None, signal: str) -> list[int]:
        return [d.signals[signal] for d in self.devices(device_type) if signal in d.signals]

    # -- the historian ---------------------------------------------------------------------

    def read(self, signal_id: int, start: int, end: int) -> Series:
        table = self.historian.query_raw(self._tenant_id, [signal_id], start, end)
        ts = table.column("ts").to_numpy().astype(np.int64, copy=False)
        values = table.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        return Series(ts, values)

    def read_before(self, signal_id: int, ts: int, lookback_ns: int) -> tuple[int, float] | None:
        s = self.read(signal_id, ts - lookback_ns, ts)
        if len(s) == 0:
            return None
        return int(s.ts[-1]), float(s.values[-1])

    def write(self, device: str, signal: str, series: Series, unit: str = "") -> None:
        if len(series.ts) != len(series.values):
            raise BadInput(f"{len(series.ts)} timestamps for {len(series.values)} values", "values")
        if len(series) == 0:
            return
        sid = self._signal_id(device, signal, unit)
        batch = make_batch(
            self._tenant_id, np.full(len(series), sid, np.int32), series.ts, series.values
        )
        self.historian.write(batch)  # durable on return
        self.ingestor.durable(batch)  # the live rules (and apps) see it
        self.points_written += len(series)

    def _signal_id(self, device: str, signal: str, unit: str) -> int:
        view = next((d for d in self._all_devices() if d.name == device), None)
        if view is None:
            raise NotFound(f"device {device!r} not found")
        if signal in view.signals:
            return view.signals[signal]
        check_name(signal, "signal")
        with self._lock:
            try:
                info = self.registry.create_signal(
                    self._tenant_id,
                    device,
                    SignalSpec(signal, unit=unit, description=f"derived by the {self._app} app"),
                )
            except Exception:  # made meanwhile by another writer: look it up
                info = next(
                    s
                    for s in self.registry.list_signals(self._tenant_id, device)
                    if s.name == signal
                )
            self._devices = None
        return info.id

    # -- rules and events ------------------------------------------------------------------

    def ensure_rule(
        self,
        name: str,
        *,
        device: str,
        definition: Mapping[str, Any],
        priority: int = 3,
        message: str = "",
    ) -> None:
        full = app_rule_name(self._app, name)
        raw = dict(definition)
        kind = raw.pop("kind", None)
        if not isinstance(kind, str):
            raise BadInput("a rule definition needs its kind", "definition.kind")
        try:
            current = self.rules.get(self._tenant_id, full)
        except NotFound:
            self.rules.create(
                self._tenant_id,
                full,
                kind,
                raw,
                device=device,
                priority=priority,
                message=message,
            )
            return
        same = (
            current.kind == kind
            and current.device == device
            and int(current.priority) == priority
            and current.message == message
            and all(current.definition.get(k) == v for k, v in raw.items())
        )
        if not same:
            self.rules.replace(
                self._tenant_id,
                full,
                kind,
                raw,
                device=device,
                priority=priority,
                message=message,
                actions=[a.to_json() for a in current.actions],  # the tenant's additions stay
            )

    def event(
        self,
        kind: str,
        message: str,
        *,
        device: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.events.append(AppEvent(self.now_ns(), kind, message, device, dict(details or {})))
