"""Energy per good part over a sliding window, per machine.

Every machine of ``device_type`` reports a cumulative energy meter (``energy_total``, kWh) and
a cumulative good-part counter (``good_count``). The app keeps, per machine, the readings of
the last ``window_minutes``, and on each tick writes ``energy_per_part`` = energy used / good
parts made in the window. A rule on that derived signal raises an alarm above ``limit_kwh``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from shopfloor.apps.sdk import App, AppConfig, AppManifest, AppRoute, Panel, PointBatch, Series


class Config(AppConfig):
    device_type: str = "simulated-press"
    window_minutes: int = Field(60, ge=1, le=24 * 60)
    limit_kwh: float = Field(1.0, gt=0)


class EnergyPerPart(App[Config]):
    manifest = AppManifest(
        name="energy-per-part",
        title="Energy per part",
        version="1.0.0",
        summary="Energy used per good part, per machine, over a sliding window.",
        author="Shopfloor examples",
        tick_s=60.0,
    )
    config_model = Config
    example_config: ClassVar[Mapping[str, Any]] = {
        "device_type": "simulated-press",
        "window_minutes": 15,
    }

    def __init__(self, ctx: Any, config: Config) -> None:
        super().__init__(ctx, config)
        # machine -> signal ("energy_total" / "good_count") -> [(ts, value), ...] in the window
        self.readings: dict[str, dict[str, list[list[float]]]] = {}
        self.latest: dict[str, float | None] = {}

    def _signals(self) -> dict[int, tuple[str, str]]:
        out = {}
        for d in self.ctx.devices(self.config.device_type):
            for name in ("energy_total", "good_count"):
                if name in d.signals:
                    out[d.signals[name]] = (d.name, name)
        return out

    def subscriptions(self) -> Sequence[int]:
        return list(self._signals())

    def on_points(self, batch: PointBatch) -> None:
        where = self._signals()
        for sid, series in batch.by_signal().items():
            if sid not in where:
                continue
            machine, name = where[sid]
            keep = self.readings.setdefault(machine, {}).setdefault(name, [])
            ok = ~np.isnan(series.values)
            keep.extend(
                [float(t), float(v)] for t, v in zip(series.ts[ok], series.values[ok], strict=True)
            )

    def on_tick(self, now_ns: int) -> None:
        cutoff = now_ns - self.config.window_minutes * 60 * 10**9
        for machine, signals in self.readings.items():
            for name in signals:
                signals[name] = [r for r in signals[name] if r[0] >= cutoff]
            energy, good = signals.get("energy_total", []), signals.get("good_count", [])
            value = None
            if len(energy) >= 2 and len(good) >= 2 and good[-1][1] > good[0][1]:
                value = (energy[-1][1] - energy[0][1]) / (good[-1][1] - good[0][1])
            self.latest[machine] = value
            if value is None:
                continue
            self.ctx.write(
                machine,
                "energy_per_part",
                Series(np.array([now_ns], np.int64), np.array([value])),
                unit="kWh",
            )
            self.ctx.ensure_rule(
                f"energy-per-part-{machine}",
                device=machine,
                definition={
                    "kind": "threshold",
                    "signal": "energy_per_part",
                    "limit": self.config.limit_kwh,
                },
                priority=4,
                message=f"energy per part above {self.config.limit_kwh} kWh",
            )

    def state(self) -> dict[str, Any]:
        return {"readings": self.readings, "latest": self.latest}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.readings = {m: dict(s) for m, s in state.get("readings", {}).items()}
        self.latest = dict(state.get("latest", {}))

    def status(self) -> dict[str, Any]:
        return {"machines": len(self.readings)}

    def current(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {
            "window_minutes": self.config.window_minutes,
            "machines": [
                {"machine": m, "energy_per_part_kwh": v} for m, v in sorted(self.latest.items())
            ],
        }

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        return (AppRoute("current", "Energy per part now, per machine", EnergyPerPart.current),)

    @classmethod
    def panels(cls) -> Sequence[Panel]:
        return (Panel("current", "Energy per part", "table", "current"),)
