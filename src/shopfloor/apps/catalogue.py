"""The app catalogue: the apps installed (entry points) and which of them each tenant enabled.

Installed apps are the classes of the ``shopfloor.apps`` entry-point group; each must be an
:class:`~shopfloor.apps.sdk.App` subclass whose manifest name equals its entry-point name.
A tenant's choice (enabled, config) is a row of ``tenant_apps`` (registry migration 0005);
the config is validated by the app's own ``config_model`` before it is stored, so the host
never starts an app with a config it would refuse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select

from shopfloor.apps.sdk import APPS_GROUP, App, AppConfig
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.registry import models as m
from shopfloor.registry.service import Registry

__all__ = ["Catalogue", "TenantAppInfo", "installed_apps", "parse_app_config"]

log = logging.getLogger(__name__)

AppClass = type[App[Any]]


def installed_apps(group: str = APPS_GROUP) -> dict[str, AppClass]:
    """Every installed app class by name. A broken entry (import error, not an App, a name
    that differs from the manifest's) is logged and left out: one bad plugin must not take
    the others down."""
    out: dict[str, AppClass] = {}
    for ep in entry_points(group=group):
        try:
            cls = ep.load()
            check_app_class(cls, ep.name)
        except Exception as exc:
            log.error("app %r (%s) is not loaded: %s", ep.name, ep.value, exc)
            continue
        if ep.name in out and out[ep.name] is not cls:
            log.error("app %r is installed twice (%s); the first is kept", ep.name, ep.value)
            continue
        out[ep.name] = cls
    return dict(sorted(out.items()))


def check_app_class(cls: object, name: str) -> None:
    """ValueError unless ``cls`` is an App subclass whose manifest is named ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise ValueError(f"{cls!r} is not a shopfloor.apps.sdk.App subclass")
    manifest = getattr(cls, "manifest", None)
    if manifest is None:
        raise ValueError(f"{cls.__qualname__} has no manifest")
    if manifest.name != name:
        raise ValueError(f"entry point {name!r} differs from the manifest's name {manifest.name!r}")
    if not (isinstance(cls.config_model, type) and issubclass(cls.config_model, AppConfig)):
        raise ValueError(f"{cls.__qualname__}.config_model is not an AppConfig subclass")


def parse_app_config(cls: AppClass, raw: object) -> AppConfig:
    """The app's config from a mapping; the first error as BadInput naming ``config.<key>``."""
    if not isinstance(raw, Mapping):
        raise BadInput(f"an app config must be an object, not {type(raw).__name__}", "config")
    try:
        # As JSON: configs come from JSON or YAML and are stored as JSON, and strict models
        # take JSON's forms (an array for a tuple, a string for an enum) only that way.
        return cls.config_model.model_validate_json(json.dumps(dict(raw)))
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, ValidationError):
            raise BadInput(f"the config is not JSON-safe: {exc}", "config") from None
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadInput(err["msg"], f"config.{where}" if where else "config") from None


@dataclass(frozen=True, slots=True)
class TenantAppInfo:
    app: str
    enabled: bool
    config: dict[str, Any]
    updated_at: datetime
    updated_by: str | None


def _info(row: m.TenantApp) -> TenantAppInfo:
    return TenantAppInfo(
        row.app, row.enabled, json.loads(row.config), row.updated_at, row.updated_by
    )


class Catalogue:
    """The installed apps and the tenants' choices of them."""

    def __init__(self, registry: Registry, apps: Mapping[str, AppClass] | None = None) -> None:
        self.registry = registry
        self.apps: dict[str, AppClass] = dict(installed_apps() if apps is None else apps)
        self.generation = 0  # bumped on every change: the host reloads

    def app_class(self, name: str) -> AppClass:
        try:
            return self.apps[name]
        except KeyError:
            raise NotFound(f"app {name!r} is not installed") from None

    def tenant_apps(self, tenant_id: int) -> dict[str, TenantAppInfo]:
        with self.registry._read() as s:
            rows = s.scalars(select(m.TenantApp).where(m.TenantApp.tenant_id == tenant_id))
            return {r.app: _info(r) for r in rows}

    def get(self, tenant_id: int, name: str) -> TenantAppInfo | None:
        self.app_class(name)
        return self.tenant_apps(tenant_id).get(name)

    def fingerprint(self) -> tuple[int, str]:
        """(rows, newest change) of every tenant's choices: cheap, and it changes with any
        enable, disable or config change, from this process or another (the CLI)."""
        with self.registry._read() as s:
            n, newest = s.execute(
                select(func.count(m.TenantApp.id), func.max(m.TenantApp.updated_at))
            ).one()
        return int(n), str(newest)

    def enabled(self) -> list[tuple[int, TenantAppInfo]]:
        """(tenant id, choice) of every enabled, installed app of every tenant."""
        with self.registry._read() as s:
            rows = s.scalars(select(m.TenantApp).where(m.TenantApp.enabled.is_(True)))
            return [(r.tenant_id, _info(r)) for r in rows if r.app in self.apps]

    def enable(
        self, tenant_id: int, name: str, config: object = None, *, actor: str
    ) -> TenantAppInfo:
        """Enable an app for the tenant; ``config`` None keeps the stored one (or the
        defaults). The config is checked by the app's model first."""
        cls = self.app_class(name)
        with self.registry._write() as s:
            row = s.scalar(
                select(m.TenantApp).where(
                    m.TenantApp.tenant_id == tenant_id, m.TenantApp.app == name
                )
            )
            raw = (json.loads(row.config) if row is not None else {}) if config is None else config
            parsed = parse_app_config(cls, raw)
            text = json.dumps(parsed.model_dump(mode="json"))
            if row is None:
                row = m.TenantApp(tenant_id=tenant_id, app=name)
                s.add(row)
            row.enabled = True
            row.config = text
            row.updated_at = m.utcnow()
            row.updated_by = actor
            s.flush()
            info = _info(row)
        self.generation += 1
        return info

    def disable(self, tenant_id: int, name: str, *, actor: str) -> TenantAppInfo:
        self.app_class(name)
        with self.registry._write() as s:
            row = s.scalar(
                select(m.TenantApp).where(
                    m.TenantApp.tenant_id == tenant_id, m.TenantApp.app == name
                )
            )
            if row is None:
                raise NotFound(f"app {name!r} is not enabled for this tenant")
            row.enabled = False
            row.updated_at = m.utcnow()
            row.updated_by = actor
            s.flush()
            info = _info(row)
        self.generation += 1
        return info
