"""The app SDK: what an app is, what it gets, and what it gives back.

An app is a package with a manifest and one class, found through the ``shopfloor.apps``
entry-point group (built-ins register there exactly as third parties do)::

    # my_package/app.py
    from shopfloor.apps.sdk import App, AppConfig, AppManifest, PointBatch

    class Config(AppConfig):
        device_type: str = "press"
        limit: float = 80.0

    class HotPress(App[Config]):
        manifest = AppManifest(name="hot-press", title="Hot presses", version="1.0.0",
                               summary="Counts minutes above a limit.")
        config_model = Config

        def subscriptions(self) -> list[int]:
            return self.ctx.signal_ids(self.config.device_type, "temp")

        def on_points(self, batch: PointBatch) -> None:
            ...

    # its pyproject.toml
    [project.entry-points."shopfloor.apps"]
    hot-press = "my_package.app:HotPress"

One instance runs per tenant that enabled the app (``shopfloor app enable`` or
``PUT /api/v1/apps/{name}``), built with that tenant's :class:`AppContext` and validated
config. The host (apps/host.py) calls it from one worker at a time, never concurrently:

- :meth:`App.subscriptions` says which signals it wants (ids, from ``ctx``); asked again when
  the tenant's devices change.
- :meth:`App.on_points` gets every durable batch of those signals (the same batches the rules
  see), as numpy columns, in a worker thread: numpy work there does not hold up the platform.
- :meth:`App.on_tick` runs every ``manifest.tick_s`` seconds with the time.
- :meth:`App.state` / :meth:`App.restore`: JSON-safe state, saved by the host every minute and
  at shutdown and given back at the next start, so a restart continues where it stopped.
- :meth:`App.status` is shown in the catalogue; :meth:`App.routes` adds read-only API routes
  under ``/api/v1/apps/<name>/`` (plain functions: the API layer wraps them with the tenant's
  authentication and scoping, so an app never handles either), and :meth:`App.panels`
  describes UI panels over them.

What an app writes goes through ``ctx``: derived signals (:meth:`AppContext.write`) are
ingested like any point, so the historian stores them and rules alarm on them; alarms come
from rules the app keeps (:meth:`AppContext.ensure_rule`), so they have the whole ISA-18.2
life cycle; events (:meth:`AppContext.event`) are kept for the app's event list.

``shopfloor.testing.check_app`` checks any app against this contract.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Generic, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "APPS_GROUP",
    "App",
    "AppConfig",
    "AppContext",
    "AppEvent",
    "AppManifest",
    "AppRoute",
    "DeviceView",
    "Panel",
    "PointBatch",
    "Series",
]

APPS_GROUP: Final = "shopfloor.apps"
NAME_RE: Final = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
VERSION_RE: Final = re.compile(r"^\d+\.\d+\.\d+([.+-][0-9A-Za-z.+-]+)?$")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]


class AppManifest(BaseModel):
    """Who the app is; checked when the app is loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="1-32 of a-z, 0-9 and '-', starting with a letter.")
    title: str = Field(min_length=1, max_length=80)
    version: str = Field(description="Semantic version, e.g. 1.2.0.")
    summary: str = Field(min_length=1, max_length=200)
    description: str = ""
    author: str = ""
    tick_s: float = Field(10.0, ge=0.1, le=86400, description="How often on_tick runs.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("name must be 2-32 of a-z, 0-9 and '-', starting with a letter")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not VERSION_RE.match(v):
            raise ValueError("version must be a semantic version such as 1.0.0")
        return v


class AppConfig(BaseModel):
    """Base of every app's config: strict types, unknown keys refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Series:
    """One signal's points in time order: ``ts`` (ns since the epoch) and ``values``."""

    ts: I64
    values: F64

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, slots=True)
class PointBatch:
    """Points of the subscribed signals, as columns (``signal_id``, ``ts``, ``value``)."""

    signal_id: I32
    ts: I64
    value: F64

    def __len__(self) -> int:
        return len(self.signal_id)

    def by_signal(self) -> dict[int, Series]:
        """The points grouped per signal, each in time order."""
        if len(self.signal_id) == 0:
            return {}
        order = np.lexsort((self.ts, self.signal_id))
        sid, ts, val = self.signal_id[order], self.ts[order], self.value[order]
        cuts = np.flatnonzero(np.diff(sid)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [len(sid)]))
        return {
            int(sid[a]): Series(ts[a:b], val[a:b])
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
        }


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A device as an app sees it: its place in the ISA-95 tree and its signals."""

    name: str
    device_type: str | None
    asset_path: tuple[str, ...]  # enterprise .. machine names; () when unplaced
    signals: Mapping[str, int]  # name -> id

    @property
    def line(self) -> str | None:
        """The name of the asset above the device's machine (its line), if placed so deep."""
        return self.asset_path[-2] if len(self.asset_path) >= 2 else None


@dataclass(frozen=True, slots=True)
class AppEvent:
    ts: int
    kind: str
    message: str
    device: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "kind": self.kind,
            "message": self.message,
            "device": self.device,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class Panel:
    """A UI panel over one of the app's GET routes (the web console draws it)."""

    id: str
    title: str
    kind: Literal["table", "line-chart", "control-chart", "bar-chart", "kpi"]
    path: str  # relative to /api/v1/apps/<name>/, e.g. "current"
    description: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "title": self.title,
            "kind": self.kind,
            "path": self.path,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class AppRoute:
    """A read-only route ``GET /api/v1/apps/<app>/<path>`` of the app.

    ``handler(app, params)`` gets the tenant's app instance and the query parameters (strings,
    only those named in ``params``) and returns JSON-safe data; a
    ``shopfloor.core.errors.BadInput`` / ``NotFound`` becomes a 422 / 404 as everywhere."""

    path: str  # one or more segments of a-z, 0-9 and '-', no leading '/'
    summary: str
    handler: Callable[[Any, Mapping[str, str]], Any]
    params: Mapping[str, str] = field(default_factory=dict)  # name -> description


class AppContext(Protocol):
    """What an app may see and do within its tenant (apps/context.py implements it)."""

    @property
    def tenant_id(self) -> int: ...

    @property
    def tenant(self) -> str: ...

    @property
    def app(self) -> str: ...

    def now_ns(self) -> int: ...

    def devices(self, device_type: str | None = None) -> list[DeviceView]:
        """The tenant's devices (of one type), with their places and signals."""
        ...

    def signal_ids(self, device_type: str | None, signal: str) -> list[int]:
        """Ids of ``signal`` on every device (of one type) that has it."""
        ...

    def read(self, signal_id: int, start: int, end: int) -> Series:
        """Stored points of a signal in ``[start, end)``."""
        ...

    def read_before(self, signal_id: int, ts: int, lookback_ns: int) -> tuple[int, float] | None:
        """The last stored point before ``ts`` (within ``lookback_ns``), or None."""
        ...

    def write(self, device: str, signal: str, series: Series, unit: str = "") -> None:
        """Store a derived signal of a device (registered on first write); durable on
        return; rules and other apps see it like any ingested point."""
        ...

    def ensure_rule(
        self,
        name: str,
        *,
        device: str,
        definition: Mapping[str, Any],
        priority: int = 3,
        message: str = "",
    ) -> None:
        """Keep a rule (created once, replaced when its definition changes) so that the
        alarm system raises alarms on what the app writes."""
        ...

    def event(
        self,
        kind: str,
        message: str,
        *,
        device: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an app event (kept for ``GET /api/v1/apps/<name>/events``)."""
        ...

    @property
    def data_dir(self) -> Any:
        """A folder of the app's own for this tenant (models, files); a ``pathlib.Path``."""
        ...


C = TypeVar("C", bound=AppConfig)


class App(ABC, Generic[C]):
    """Base of every app; subclasses set ``manifest`` and ``config_model``."""

    manifest: ClassVar[AppManifest]
    config_model: ClassVar[type[AppConfig]] = AppConfig
    # A config that works on the demo factory (used by the catalogue's example and check_app).
    example_config: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, ctx: AppContext, config: C) -> None:
        self.ctx = ctx
        self.config = config

    @abstractmethod
    def subscriptions(self) -> Sequence[int]:
        """Signal ids whose points :meth:`on_points` receives."""

    def on_points(self, batch: PointBatch) -> None:
        """Durable points of the subscribed signals (in a worker thread)."""

    def on_tick(self, now_ns: int) -> None:
        """Periodic work, every ``manifest.tick_s`` seconds."""

    def state(self) -> dict[str, Any]:
        """JSON-safe state to keep across restarts."""
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`state` returned before a restart."""

    def status(self) -> dict[str, Any]:
        """Figures for the catalogue (JSON-safe)."""
        return {}

    def close(self) -> None:
        """The app is being disabled or the platform stops."""

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        """Read-only routes under ``/api/v1/apps/<name>/``."""
        return ()

    @classmethod
    def panels(cls) -> Sequence[Panel]:
        return ()
