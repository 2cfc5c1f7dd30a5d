"""Subtree scoping: the one place a route asks whether an object is inside the caller's scope.

The tenant half of isolation is decided in ``api/deps.need`` (every registry and historian call
takes ``scope.tenant_id``). A role may also bind below an asset (a site, a line): the scope then
carries that subtree's asset ids (``Scope.assets``) and every route narrows what it touches with
the functions here, never with its own checks (docs/tenant-isolation.md):

- an object outside the subtree answers exactly like one that does not exist (same 404, same
  message), so a scoped user learns nothing about the rest of the tenant;
- lists and the tree show only what is inside;
- an object without a place (an unplaced device, a top-level asset) and tenant-wide settings
  (device types, Sparkplug groups, tenant settings) need the permission tenant-wide (403).

Whole-tenant scopes (``scope.assets is None``, the usual case) return at once, with no query.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import Depends, Request

from shopfloor.api.deps import get_platform, need
from shopfloor.api.platform import Platform
from shopfloor.core.errors import Forbidden, NotFound
from shopfloor.registry.service import DeviceInfo, Registry, SignalInfo

# Data queries: every device/signal key in scope, hidden ones reported as unknown. Defined
# with the label service so that the egress and label services apply the same rule.
from shopfloor.security.labels import check_signal_keys as check_signal_keys
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

T = TypeVar("T")


@functools.cache
def scope_of(perm: Permission) -> Callable[..., Scope]:
    """``need(perm)``, one callable per permission: FastAPI then runs it once per request
    however many dependencies of a route ask for it."""
    return need(perm)


# -- raising -----------------------------------------------------------------------------------


def device_not_found(name: str) -> NotFound:
    return NotFound(f"device {name!r} not found")  # the registry's own wording


def asset_not_found(asset_id: int) -> NotFound:
    return NotFound(f"asset {asset_id} not found")


def require_whole_tenant(scope: Scope, what: str) -> None:
    """``what`` is tenant-wide (no place in the hierarchy): refused to a subtree binding."""
    if scope.assets is not None:
        raise Forbidden(
            f"{what} needs the {scope.permission.value} permission for the whole tenant; "
            "your role binds below an asset"
        )


def check_asset(scope: Scope, asset_id: int) -> None:
    """An existing asset id as the path or body names it: outside the subtree is unknown."""
    if scope.assets is not None and asset_id not in scope.assets:
        raise asset_not_found(asset_id)


def check_placement(scope: Scope, asset_id: int | None, unplaced: str) -> None:
    """Where a new object goes (``parent_id``, ``asset_id``): inside the subtree, or 404 for
    the asset like an unknown one; nowhere (None, ``unplaced`` names that case) only with a
    tenant-wide binding."""
    if scope.assets is None:
        return
    if asset_id is None:
        require_whole_tenant(scope, unplaced)
    else:
        check_asset(scope, asset_id)


def check_device(scope: Scope, registry: Registry, name: str) -> None:
    """The named device is in scope; else NotFound as for an unknown device."""
    if scope.assets is None:
        return
    device = registry.get_device(scope.tenant_id, name)  # NotFound when unknown, same text
    if not scope.allows_asset(device.asset_id):
        raise device_not_found(name)


def check_devices(scope: Scope, registry: Registry, names: Iterable[str]) -> None:
    """Every named device is in scope; else NotFound naming the hidden ones the way
    ``DeviceCredentials.set_gateway`` names unknown ones."""
    if scope.assets is None:
        return
    places = registry.device_assets(scope.tenant_id)
    missing = [
        n for n in sorted(set(names)) if n not in places or not scope.allows_asset(places[n])
    ]
    if missing:
        raise NotFound(f"devices not found: {', '.join(map(repr, missing))}")


def check_signal(scope: Scope, registry: Registry, key_or_id: str) -> None:
    """The signal (key or numeric id) belongs to a device in scope; else NotFound as unknown."""
    if scope.assets is None:
        return
    signal = registry.get_signal(scope.tenant_id, key_or_id)
    places = registry.device_assets(scope.tenant_id)
    if not scope.allows_asset(places.get(signal.device)):
        raise NotFound(f"signal {key_or_id!r} not found")


# -- filtering ---------------------------------------------------------------------------------


def visible(scope: Scope, items: Iterable[T], asset_of: Callable[[T], int | None]) -> list[T]:
    """The items whose asset (``asset_of``) is in scope, in their order."""
    if scope.assets is None:
        return list(items)
    return [i for i in items if scope.allows_asset(asset_of(i))]


def visible_devices(scope: Scope, devices: Iterable[DeviceInfo]) -> list[DeviceInfo]:
    return visible(scope, devices, lambda d: d.asset_id)


def visible_signals(
    scope: Scope, registry: Registry, signals: Iterable[SignalInfo]
) -> list[SignalInfo]:
    if scope.assets is None:
        return list(signals)
    places = registry.device_assets(scope.tenant_id)
    return [s for s in signals if scope.allows_asset(places.get(s.device))]


def visible_device_names(scope: Scope, registry: Registry, names: Iterable[str]) -> list[str]:
    if scope.assets is None:
        return list(names)
    places = registry.device_assets(scope.tenant_id)
    return [n for n in names if n in places and scope.allows_asset(places[n])]


def visible_tree(scope: Scope, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hierarchy cut to the subtree: its roots become the top-level nodes."""
    if scope.assets is None:
        return nodes
    out: list[dict[str, Any]] = []
    for node in nodes:
        if node["id"] in scope.assets:
            out.append(node)  # a subtree is closed downward: everything below is in scope
        else:
            out.extend(visible_tree(scope, node["children"]))
    return out


# -- dependencies: the path's object checked before the route runs ----------------------------


def _path_scope(
    perm: Permission, param: str, kind: str, check: Callable[[Scope, Registry, Any], None]
) -> Callable[..., Scope]:
    """``need(perm)`` plus ``check(scope, registry, <path parameter param>)``."""
    needs = scope_of(perm)

    def dependency(
        request: Request,
        scope: Scope = Depends(needs),
        platform: Platform = Depends(get_platform),
    ) -> Scope:
        check(scope, platform.registry, request.path_params[param])
        return scope

    dependency.__name__ = f"{kind}_scope_{perm.name.lower()}"
    return dependency


@functools.cache
def device_scope(perm: Permission, param: str = "name") -> Callable[..., Scope]:
    """``need(perm)`` plus: the device named by path parameter ``param`` is in scope."""
    return _path_scope(perm, param, "device", check_device)


@functools.cache
def signal_scope(perm: Permission, param: str = "key") -> Callable[..., Scope]:
    """``need(perm)`` plus: the signal named by path parameter ``param`` is in scope."""
    return _path_scope(perm, param, "signal", check_signal)


def _check_asset_param(scope: Scope, _registry: Registry, raw: object) -> None:
    # FastAPI validates the int itself afterwards; a non-number is its 422, not ours.
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isascii() and raw.isdigit()):
        check_asset(scope, int(raw))


@functools.cache
def asset_scope(perm: Permission, param: str = "asset_id") -> Callable[..., Scope]:
    """``need(perm)`` plus: the asset of path parameter ``param`` is in scope."""
    return _path_scope(perm, param, "asset", _check_asset_param)
