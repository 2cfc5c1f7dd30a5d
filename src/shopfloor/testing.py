"""Conformance checks for plugins: ``check_app`` runs an app against the SDK's contract.

Every app, built-in or third-party, should pass::

    from shopfloor.testing import check_app

    def test_my_app_conforms(tmp_path):
        report = check_app(MyApp, tmp_path)
        assert report.ok, report.problems

``check_app`` builds a real platform in ``tmp_path`` (SQLite registry, DuckDB historian, no
network) with the demo factory registered, starts the app with its ``example_config`` (or the
config given), and feeds it ``minutes`` of simulated factory data the way the host does. It
checks, and lists as problems what fails:

1. the class: an App subclass with a valid manifest and an AppConfig ``config_model`` that
   refuses unknown keys and has a JSON schema; the example config is accepted;
2. subscriptions: signal ids of the tenant only;
3. running: ``on_points`` and ``on_tick`` over the data raise nothing; derived signals it
   writes are stored;
4. state: ``state()`` is JSON-safe, survives ``json`` and ``restore`` into a new instance
   gives the same ``state()`` back;
5. routes and panels: paths are well formed and unique, every handler answers JSON-safe data
   with no parameters, every panel points at a route; ``status()`` is JSON-safe;
6. ``close()`` works, twice.

It also returns what it saw (points fed, signals written, events) so an app's own tests can
assert on its behaviour.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopfloor.apps.catalogue import check_app_class, parse_app_config
from shopfloor.apps.sdk import App, PointBatch
from shopfloor.core.errors import BadInput

__all__ = ["AppReport", "check_app"]

_PATH = re.compile(r"^[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)*$")


@dataclass
class AppReport:
    app: str
    problems: list[str] = field(default_factory=list)
    points_fed: int = 0
    ticks: int = 0
    signals_written: dict[str, int] = field(default_factory=dict)  # device/signal -> points
    events: list[dict[str, Any]] = field(default_factory=list)
    routes: dict[str, Any] = field(default_factory=dict)  # path -> answer
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"app {self.app!r}: " + ("conforms" if self.ok else "does not conform")
        return "\n  - ".join([head, *self.problems])


def _json_safe(what: str, value: object, report: AppReport) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        report.problems.append(f"{what} is not JSON-safe: {exc}")
        return False
    return True


def check_app(
    cls: type[App[Any]],
    tmp_path: Path,
    *,
    config: Mapping[str, Any] | None = None,
    minutes: int = 30,
    seed: int = 3,
) -> AppReport:
    """Check ``cls`` against the app contract (see the module docstring)."""
    name = getattr(getattr(cls, "manifest", None), "name", getattr(cls, "__name__", "?"))
    report = AppReport(str(name))
    try:
        check_app_class(cls, str(name))
    except Exception as exc:
        report.problems.append(f"class: {exc}")
        return report
    _check_config(cls, report)
    try:
        cfg = parse_app_config(cls, dict(cls.example_config if config is None else config))
    except BadInput as exc:
        report.problems.append(f"the example config is refused: {exc.field}: {exc.message}")
        return report
    _check_routes_declared(cls, report)

    from shopfloor.api.platform import Platform  # the platform is heavy; only here
    from shopfloor.cli.demo import register_factory
    from shopfloor.core.config import Settings
    from shopfloor.edge.connectors.simulator import FactorySimulator

    platform = Platform(Settings(data_dir=tmp_path / "check-app", mqtt_mode="off"))
    try:
        tenant, _ = platform.registry.create_tenant("check-app")
        start = time.time_ns() // 10**9 * 10**9 - minutes * 60 * 10**9
        sim = FactorySimulator(seed=seed, start_ns=start)
        register_factory(platform.registry, tenant.id, sim)
        ids = {
            m.name: platform.registry.resolve(
                tenant.id, m.name, [s.name for s in m.signals], [s.data_type for s in m.signals]
            )
            for m in sim.machines()
        }
        own = {s.id for s in platform.registry.list_signals(tenant.id)}
        ctx = platform.app_context(tenant.id, report.app)
        try:
            app = cls(ctx, cfg)
        except Exception as exc:
            report.problems.append(f"the constructor raised {type(exc).__name__}: {exc}")
            return report
        try:
            subs = np.unique(np.asarray(list(app.subscriptions()), dtype=np.int64))
        except Exception as exc:
            report.problems.append(f"subscriptions() raised {type(exc).__name__}: {exc}")
            return report
        foreign = sorted(set(subs.tolist()) - own)
        if foreign:
            report.problems.append(f"subscriptions() names signals outside the tenant: {foreign}")
        _run(app, platform, tenant.id, sim, ids, subs, start, minutes, report)
        _check_state(cls, app, platform, tenant.id, cfg, report)
        _check_routes(cls, app, report)
        for sig in platform.registry.list_signals(tenant.id):
            if sig.id not in ids.get(sig.device, ()):
                n = platform.historian.query_raw(tenant.id, [sig.id], 0, 2**62).num_rows
                report.signals_written[sig.key] = n
        report.events = [e.to_json() for e in ctx.events]
        for attempt in (1, 2):
            try:
                app.close()
            except Exception as exc:
                report.problems.append(f"close() #{attempt} raised {type(exc).__name__}: {exc}")
    finally:
        platform.close()
    return report


def _check_config(cls: type[App[Any]], report: AppReport) -> None:
    model = cls.config_model
    try:
        model.model_json_schema()
    except Exception as exc:
        report.problems.append(f"config_model has no JSON schema: {exc}")
    try:
        parse_app_config(cls, {**cls.example_config, "no_such_key_for_the_check": 1})
        report.problems.append("config_model accepts unknown keys (use AppConfig as the base)")
    except BadInput:
        pass


def _check_routes_declared(cls: type[App[Any]], report: AppReport) -> None:
    paths = [r.path for r in cls.routes()]
    for p in paths:
        if not _PATH.match(p) or p == "events":
            report.problems.append(f"route path {p!r} is not of a-z, 0-9, '-' segments")
    if len(set(paths)) != len(paths):
        report.problems.append(f"route paths repeat: {paths}")
    for panel in cls.panels():
        if panel.path.split("?")[0] not in paths:
            report.problems.append(f"panel {panel.id!r} points at no route: {panel.path!r}")


def _run(
    app: App[Any],
    platform: Any,
    tenant_id: int,
    sim: Any,
    ids: Mapping[str, Any],
    subs: np.ndarray[Any, Any],
    start: int,
    minutes: int,
    report: AppReport,
) -> None:
    """Feed the simulated minutes as the host would: stored first, then the subscribed
    points of each one-minute batch to on_points, a tick after each."""
    from shopfloor.cli.demo import to_batch

    end = start + minutes * 60 * 10**9
    pending = []
    for frames in sim.run_until(end):
        pending.append(frames)
        if len(pending) < 60:
            continue
        batch = to_batch(tenant_id, pending, dict(ids))
        pending = []
        platform.historian.write(batch)
        sid = batch.column("signal_id").to_numpy()
        rows = np.flatnonzero(np.isin(sid, subs))
        if len(rows):
            part = PointBatch(
                sid[rows].astype(np.int32),
                batch.column("ts").to_numpy()[rows].astype(np.int64),
                batch.column("value").to_numpy(zero_copy_only=False)[rows].astype(np.float64),
            )
            try:
                app.on_points(part)
            except Exception as exc:
                report.problems.append(f"on_points raised {type(exc).__name__}: {exc}")
                return
            report.points_fed += len(part)
        try:
            app.on_tick(int(batch.column("ts").to_numpy().max()))
        except Exception as exc:
            report.problems.append(f"on_tick raised {type(exc).__name__}: {exc}")
            return
        report.ticks += 1
    if report.points_fed == 0 and len(subs):
        report.problems.append("no subscribed point arrived (do the subscriptions match?)")


def _check_state(
    cls: type[App[Any]], app: App[Any], platform: Any, tenant_id: int, cfg: Any, report: AppReport
) -> None:
    try:
        state = app.state()
    except Exception as exc:
        report.problems.append(f"state() raised {type(exc).__name__}: {exc}")
        return
    if not _json_safe("state()", state, report):
        return
    again = cls(platform.app_context(tenant_id, report.app), cfg)
    try:
        again.restore(json.loads(json.dumps(state)))
        back = again.state()
    except Exception as exc:
        report.problems.append(f"restore(state()) raised {type(exc).__name__}: {exc}")
        return
    if json.loads(json.dumps(back)) != json.loads(json.dumps(state)):
        report.problems.append("restore(state()) then state() differs from the saved state")
    try:
        status = app.status()
    except Exception as exc:
        report.problems.append(f"status() raised {type(exc).__name__}: {exc}")
        return
    if _json_safe("status()", status, report):
        report.status = status


def _check_routes(cls: type[App[Any]], app: App[Any], report: AppReport) -> None:
    for route in cls.routes():
        try:
            answer = route.handler(app, {})
        except Exception as exc:
            report.problems.append(f"route {route.path!r} raised {type(exc).__name__}: {exc}")
            continue
        if _json_safe(f"route {route.path!r}'s answer", answer, report):
            report.routes[route.path] = answer
