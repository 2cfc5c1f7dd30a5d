"""The cross-tenant walk: every API route, called as a user of tenant A against tenant B.

Two tenants, "alpha" (A) and "bravo" (B), each with an asset, a device type, a device with a
signal and stored points, a credential, a provisioning key, a gateway, a Sparkplug binding,
desired and reported attributes and an egress request. ``ROUTES`` says, for EVERY route the
app registers, how A reaches for B's objects:

- ``Probe``: the call names one of B's objects (path, query or body). It must be denied (403 or
  404, never 2xx) and answer exactly as for a NONEXISTENT object: same status, same error type
  and field, same message once B's identifier is swapped for the made-up one;
- ``Listing``: no object id (lists, the caller's own tenant): 2xx with none of B's objects;
- ``Platform``: platform-wide work: 403 for a tenant user;
- ``Global``: a name in a platform-wide namespace (Sparkplug groups, MQTT usernames): taken
  is taken whoever holds it, so the answer may differ, but must not name B or change it;
- ``Public``: needs no credential; the reason says why that is safe.

A route missing from the table fails ``test_every_route_is_in_the_walk``. After the walk, B's
objects, credentials, keys and points are exactly as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, WebSocketRoute

from shopfloor.api.platform import Platform
from shopfloor.apps.catalogue import installed_apps
from shopfloor.core.timeutil import now_ns
from shopfloor.registry.service import SignalSpec
from shopfloor.security.roles import Role
from tests.security.conftest import PASSWORD, UserHeaders

B_MARK = "bravo"  # every name of tenant B contains it; no name of A does
AN_APP = next(iter(installed_apps()), "no-such-app")  # an installed app (the walk's example)


# -- the two tenants ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Objects:
    """One tenant's objects, or (``ghost``) made-up ones that exist nowhere."""

    tenant: str
    asset: int
    device_type: str
    device: str
    gateway: str
    signal: str  # "<device>/<signal>"
    credential: int
    provisioning_key: str
    username: str  # of a password credential
    group: str  # Sparkplug group claimed
    egress_request: int
    user: str  # a user of the tenant
    token: int  # that user's API token id
    grant: int  # an access grant to the platform user OPS
    tenant_id: int = 0  # not an identifier A sends; left out of the swaps

    def swaps(self, ghost: Objects) -> list[tuple[str, str]]:
        """(B's identifier, the ghost's) pairs, longest first so keys swap before names."""
        pairs = [
            (str(getattr(self, f)), str(getattr(ghost, f)))
            for f in self.__dataclass_fields__
            if f not in ("tenant", "tenant_id")
        ]
        return sorted(pairs, key=lambda p: -len(p[0]))


# One number for every made-up id: B's ids are small numbers that may coincide (asset 2,
# request 2), and a message naming "2" must map to one made-up id whichever field it is.
GHOST = Objects(
    tenant="nobody",
    asset=987_654,
    device_type="ghost-type",
    device="ghost-press",
    gateway="ghost-gw",
    signal="ghost-press/temp",
    credential=987_654,
    provisioning_key="ghost-pkey",
    username="ghost-login",
    group="ghost-group",
    egress_request=987_654,
    user="ghost-user",
    token=987_654,
    grant=987_654,
)
OPS = "ops-admin"  # a platform user both tenants grant access to


def populate(
    platform: Platform, client: TestClient, name: str, headers: UserHeaders
) -> tuple[Objects, str]:
    reg, creds = platform.registry, platform.credentials
    # Auto-registration off: ingest naming an unknown device is refused, not a new device.
    tenant, key = reg.create_tenant(name, auto_register_signals=False)
    asset = reg.create_asset(tenant.id, "enterprise", f"{name}-works")
    reg.create_device_type(tenant.id, f"{name}-type", [SignalSpec("temp")])
    device = reg.create_device(tenant.id, f"{name}-press", f"{name}-type", asset.id)
    reg.create_device(tenant.id, f"{name}-gw", None, asset.id)
    creds.set_gateway(tenant.id, f"{name}-gw", [device.name])
    creds.issue_token(tenant.id, device.name)
    creds.set_password(tenant.id, device.name, f"{name}-login", "password-of-" + name)
    credential = creds.list_credentials(tenant.id, device.name)[0].id
    creds.create_provisioning_key(tenant.id, f"{name}-pkey", asset_id=asset.id)
    group = "line-7" if name == B_MARK else "line-1"  # B's group must not name B itself
    creds.set_sparkplug_node(tenant.id, device.name, group, "node-1")
    creds.set_desired_attributes(tenant.id, device.name, {"setpoint": 7})
    creds.set_reported_attributes(tenant.id, device.name, {"firmware": "1.2"})
    now_ms = now_ns() // 1_000_000
    admin = headers(Role.TENANT_ADMIN, tenant.id)
    body = {
        "device": device.name,
        "ts_unit": "ms",
        "points": [
            {"signal": "temp", "ts": now_ms - i * 1000, "value": 20.0 + i} for i in range(3)
        ],
    }
    r = client.post("/api/v1/ingest", json=body, headers=admin)
    assert r.status_code == 200, r.text
    user = platform.auth.create_user(tenant.id, f"{name}-user", PASSWORD, [Role.VIEWER])
    token, _ = platform.auth.issue_token(user.id, "walk")
    grant = platform.auth.create_grant(tenant.id, OPS, 3600.0, "support")
    # Every installed app enabled for B (its instances run while A walks the app routes).
    if name == B_MARK:
        for app_name, cls in platform.catalogue.apps.items():
            platform.catalogue.enable(tenant.id, app_name, dict(cls.example_config), actor="walk")
    # A rule named like the device (so the swaps cover it) and its active alarm.
    from shopfloor.rules.model import Event

    platform.rules.create(tenant.id, device.name, "threshold", RULE_DEF, device=device.name)
    platform.alarms.apply(
        tenant.id, [Event(device.name, device.name, "activated", now_ms * 1_000_000, 90.0)]
    )
    r = client.post(
        "/api/v1/egress/requests",
        json={
            "destination": "https://example.org/in",
            "signals": [f"{device.name}/temp"],
            "reason": "quarterly report",
            "duration_s": 3600,
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    objects = Objects(
        tenant=name,
        asset=asset.id,
        device_type=f"{name}-type",
        device=device.name,
        gateway=f"{name}-gw",
        signal=f"{device.name}/temp",
        credential=credential,
        provisioning_key=f"{name}-pkey",
        username=f"{name}-login",
        group=group,
        egress_request=r.json()["id"],
        user=user.username,
        token=token.id,
        grant=grant.id,
        tenant_id=tenant.id,
    )
    return objects, key


@dataclass
class World:
    client: TestClient
    platform: Platform
    a: Objects
    b: Objects
    headers: Callable[[Role], dict[str, str]]  # a user of A holding the role
    a_key: str  # A's bootstrap tenant key
    a_tenant_id: int


@pytest.fixture
def world(platform: Platform, client: TestClient, user_headers: UserHeaders) -> World:
    platform.auth.create_user(None, OPS, PASSWORD, [Role.PLATFORM_ADMIN])
    a, a_key = populate(platform, client, "alpha", user_headers)
    b, _ = populate(platform, client, B_MARK, user_headers)
    tenant_a = platform.registry.get_tenant("alpha").id
    cache: dict[Role, dict[str, str]] = {}

    def headers(role: Role) -> dict[str, str]:
        if role not in cache:
            cache[role] = user_headers(role, tenant_a)
        return cache[role]

    return World(client, platform, a, b, headers, a_key, tenant_a)


def fingerprint(platform: Platform, tenant: str) -> dict[str, Any]:
    """Everything of a tenant the walk might touch, for a before/after comparison."""
    reg, creds = platform.registry, platform.credentials
    t = reg.get_tenant(tenant)
    devices = reg.list_devices(t.id)
    signals = reg.list_signals(t.id)
    points = platform.historian.query_raw(t.id, [s.id for s in signals], 0, 2**62)
    return {
        "tenant": t,
        "assets": reg.list_assets(t.id),
        "types": reg.list_device_types(t.id),
        "devices": devices,
        "signals": signals,
        "points": points.to_pylist(),
        "credentials": [creds.list_credentials(t.id, d.name) for d in devices],
        "gateways": [creds.gateway_devices(t.id, d.name) for d in devices],
        "desired": [creds.desired_attributes(t.id, d.name) for d in devices],
        "reported": [creds.reported_attributes(t.id, d.name) for d in devices],
        "keys": creds.list_provisioning_keys(t.id),
    }


# -- the table ----------------------------------------------------------------------------------

Build = Callable[[Objects, Objects], Any]  # (A's objects, the target's: B's or the ghost's)


@dataclass(frozen=True)
class Probe:
    path: Build
    body: Build | None = None
    query: Build | None = None
    role: Role = Role.TENANT_ADMIN
    # The denial expected; 422 only where the answer for an unknown name is a validation
    # error (ingest into a tenant without auto-registration).
    denied: frozenset[int] = frozenset({403, 404})


@dataclass(frozen=True)
class Listing:
    path: str
    body: Build | None = None
    query: Build | None = None
    role: Role = Role.TENANT_ADMIN
    ok: frozenset[int] = frozenset({200, 201})
    # What "none of B's objects" means; default: no B name anywhere in the answer.
    check: Callable[[Any, Objects], None] | None = None
    # Call with a login session of the role instead of an API token (tokens cannot make tokens).
    session: bool = False


def no_b_records(r: Any, b: Objects) -> None:
    """Audit answers: A's own trail may name B's objects (A's denied probes), but no record
    is B's."""
    if r.headers["content-type"].startswith("application/json"):
        records = r.json()["records"]
    else:
        records = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert records, "the audit trail of A is empty: the check would prove nothing"
    assert {rec["tenant_id"] for rec in records} - {None} <= {records[0]["tenant_id"]}
    assert b.tenant_id not in {rec["tenant_id"] for rec in records}


@dataclass(frozen=True)
class PlatformOnly:
    path: str
    body: Any = None
    role: Role = Role.TENANT_ADMIN


@dataclass(frozen=True)
class Global:
    probe: Probe
    reason: str


@dataclass(frozen=True)
class Public:
    reason: str


Entry = Probe | Listing | PlatformOnly | Global | Public | tuple[Probe | Listing, ...]
V1 = "/api/v1"
SEC = Role.SECURITY_ADMIN


def dev_path(suffix: str = "") -> Build:
    return lambda _a, x: f"{V1}/devices/{x.device}{suffix}"


def user_path(suffix: str = "") -> Build:
    return lambda _a, x: f"{V1}/users/{x.user}{suffix}"


def creds(x: Objects) -> dict[str, Any]:
    """A login of the target's user with a wrong password."""
    return {"tenant": x.tenant, "username": x.user, "password": "not-the-password-1"}


UNAUTH = frozenset({401})
# A role bound to an asset the tenant lacks is a bad value in the body (auth_routes): 422.
BAD_BINDING = frozenset({404, 422})


def egress(action: str) -> Build:
    return lambda _a, x: f"{V1}/egress/requests/{x.egress_request}{action}"


RULE_DEF = {"signal": "temp", "limit": 80.0}


def rule_body(name: str | None = "alpha-rule", **target: str) -> dict[str, Any]:
    body = {**target, "definition": {"kind": "threshold", **RULE_DEF}}
    return body if name is None else {"name": name, **body}


def rule_path(suffix: str = "") -> Build:
    return lambda _a, x: f"{V1}/rules/{x.device}{suffix}"  # rules are named like the devices


def alarm_probes(action: str, body: Any) -> tuple[Probe, ...]:
    return (
        Probe(lambda _a, x: f"{V1}/alarms/{x.device}/{x.device}{action}", body=lambda _a, _x: body),
        # A's own rule, B's device
        Probe(lambda a, x: f"{V1}/alarms/{a.device}/{x.device}{action}", body=lambda _a, _x: body),
    )


EGRESS_BODY = {"destination": "https://example.org/in", "reason": "r", "duration_s": 3600}
LABELS = {"classification": "important"}

ROUTES: dict[tuple[str, str], Entry] = {
    # -- public ---------------------------------------------------------------------------------
    ("GET", "/health"): Public("liveness and storage totals; no tenant's objects"),
    ("GET", "/openapi.json"): Public("the API's description, the same for everyone"),
    ("GET", "/docs"): Public("Swagger UI page, static"),
    ("GET", "/docs/oauth2-redirect"): Public("Swagger UI helper page, static"),
    ("GET", "/redoc"): Public("ReDoc page, static"),
    ("WS", f"{V1}/alarms/live"): Public("authenticates in its own handshake"),
    ("POST", f"{V1}/provision"): Public(
        "authenticated by the provisioning key in the body: the key alone decides the tenant"
    ),
    # -- platform -------------------------------------------------------------------------------
    ("GET", f"{V1}/tenants"): PlatformOnly(f"{V1}/tenants"),
    ("POST", f"{V1}/tenants"): PlatformOnly(f"{V1}/tenants", {"name": "alpha-new"}),
    # -- data -----------------------------------------------------------------------------------
    ("POST", f"{V1}/ingest"): Probe(
        lambda _a, _x: f"{V1}/ingest",
        body=lambda _a, x: {
            "device": x.device,
            "points": [{"signal": "temp", "ts": 1, "value": 1}],
        },
        denied=frozenset({422}),
    ),
    ("GET", f"{V1}/points"): Probe(
        lambda _a, _x: f"{V1}/points", query=lambda a, x: {"signal": [a.signal, x.signal]}
    ),
    ("GET", f"{V1}/downsample"): Probe(
        lambda _a, _x: f"{V1}/downsample",
        query=lambda _a, x: {"signal": x.signal, "interval": "1m"},
    ),
    ("GET", f"{V1}/latest"): (
        Probe(lambda _a, _x: f"{V1}/latest", query=lambda _a, x: {"signal": x.signal}),
        Probe(lambda _a, _x: f"{V1}/latest", query=lambda _a, x: {"device": x.device}),
    ),
    # -- tenant and hierarchy -------------------------------------------------------------------
    ("GET", f"{V1}/tenant"): Listing(f"{V1}/tenant"),
    ("PATCH", f"{V1}/tenant"): Listing(
        f"{V1}/tenant", body=lambda _a, _x: {"auto_register_signals": False}
    ),
    ("POST", f"{V1}/assets"): Probe(
        lambda _a, _x: f"{V1}/assets",
        body=lambda _a, x: {"level": "site", "name": "alpha-site", "parent_id": x.asset},
    ),
    ("GET", f"{V1}/assets"): Listing(f"{V1}/assets"),
    ("GET", f"{V1}/assets/{{asset_id}}"): Probe(lambda _a, x: f"{V1}/assets/{x.asset}"),
    ("DELETE", f"{V1}/assets/{{asset_id}}"): Probe(lambda _a, x: f"{V1}/assets/{x.asset}"),
    ("GET", f"{V1}/tree"): Listing(f"{V1}/tree"),
    # -- device types, devices, signals ---------------------------------------------------------
    ("POST", f"{V1}/device-types"): Probe(
        lambda _a, _x: f"{V1}/device-types",
        body=lambda _a, x: {"name": "alpha-sub", "extends": x.device_type},
    ),
    ("GET", f"{V1}/device-types"): Listing(f"{V1}/device-types"),
    ("GET", f"{V1}/device-types/{{name}}"): Probe(
        lambda _a, x: f"{V1}/device-types/{x.device_type}"
    ),
    ("POST", f"{V1}/devices"): (
        Probe(
            lambda _a, _x: f"{V1}/devices",
            body=lambda _a, x: {"name": "alpha-new", "asset_id": x.asset},
        ),
        Probe(
            lambda _a, _x: f"{V1}/devices",
            body=lambda _a, x: {"name": "alpha-new", "device_type": x.device_type},
        ),
    ),
    ("GET", f"{V1}/devices"): Listing(f"{V1}/devices"),
    ("GET", f"{V1}/devices/{{name}}"): Probe(dev_path()),
    ("DELETE", f"{V1}/devices/{{name}}"): Probe(dev_path(), query=lambda _a, _x: {"force": True}),
    ("POST", f"{V1}/devices/{{name}}/signals"): Probe(
        dev_path("/signals"), body=lambda _a, _x: {"name": "extra"}
    ),
    ("GET", f"{V1}/devices/{{name}}/signals"): Probe(dev_path("/signals")),
    ("GET", f"{V1}/signals"): Listing(f"{V1}/signals"),
    ("GET", f"{V1}/signals/{{key:path}}"): Probe(lambda _a, x: f"{V1}/signals/{x.signal}"),
    ("PATCH", f"{V1}/signals/{{key:path}}"): Probe(
        lambda _a, x: f"{V1}/signals/{x.signal}", body=lambda _a, _x: {"unit": "K"}
    ),
    # -- device credentials, provisioning, gateways, Sparkplug ----------------------------------
    ("POST", f"{V1}/devices/{{name}}/credentials"): Probe(
        dev_path("/credentials"), body=lambda _a, _x: {"kind": "token"}
    ),
    ("GET", f"{V1}/devices/{{name}}/credentials"): Probe(dev_path("/credentials")),
    ("DELETE", f"{V1}/devices/{{name}}/credentials"): Probe(dev_path("/credentials")),
    ("DELETE", f"{V1}/devices/{{name}}/credentials/{{credential_id}}"): (
        Probe(lambda _a, x: f"{V1}/devices/{x.device}/credentials/{x.credential}"),
        # A's own device, B's credential id
        Probe(lambda a, x: f"{V1}/devices/{a.device}/credentials/{x.credential}"),
    ),
    ("POST", f"{V1}/provisioning-keys"): (
        Probe(
            lambda _a, _x: f"{V1}/provisioning-keys",
            body=lambda _a, x: {"name": "alpha-k2", "asset_id": x.asset},
        ),
        Probe(
            lambda _a, _x: f"{V1}/provisioning-keys",
            body=lambda _a, x: {"name": "alpha-k3", "device_type": x.device_type},
        ),
    ),
    ("GET", f"{V1}/provisioning-keys"): Listing(f"{V1}/provisioning-keys"),
    ("DELETE", f"{V1}/provisioning-keys/{{name}}"): Probe(
        lambda _a, x: f"{V1}/provisioning-keys/{x.provisioning_key}"
    ),
    ("PUT", f"{V1}/devices/{{name}}/gateway"): (
        Probe(dev_path("/gateway"), body=lambda _a, _x: {"owns": []}),
        # A's own gateway told to act for B's device
        Probe(
            lambda a, _x: f"{V1}/devices/{a.gateway}/gateway",
            body=lambda _a, x: {"owns": [x.device]},
        ),
    ),
    ("GET", f"{V1}/devices/{{name}}/gateway"): Probe(
        lambda _a, x: f"{V1}/devices/{x.gateway}/gateway"
    ),
    ("PUT", f"{V1}/devices/{{name}}/sparkplug"): (
        Probe(
            dev_path("/sparkplug"), body=lambda _a, _x: {"group_id": "line-1", "edge_node_id": "n"}
        ),
    ),
    ("POST", f"{V1}/sparkplug-groups"): Global(
        Probe(lambda _a, _x: f"{V1}/sparkplug-groups", body=lambda _a, x: {"group_id": x.group}),
        "Sparkplug group ids are one namespace across the broker (spBv1.0/<group>/...): a "
        "group another tenant claimed is refused as taken, without naming that tenant",
    ),
    # -- device twin and commands ---------------------------------------------------------------
    ("GET", f"{V1}/devices/{{name}}/attributes/desired"): Probe(dev_path("/attributes/desired")),
    ("PUT", f"{V1}/devices/{{name}}/attributes/desired"): Probe(
        dev_path("/attributes/desired"), body=lambda _a, _x: {"setpoint": 1}
    ),
    ("GET", f"{V1}/devices/{{name}}/attributes/reported"): Probe(dev_path("/attributes/reported")),
    ("POST", f"{V1}/devices/{{name}}/commands"): Probe(
        dev_path("/commands"), body=lambda _a, _x: {"method": "reboot"}
    ),
    ("GET", f"{V1}/mqtt/stats"): Listing(f"{V1}/mqtt/stats"),
    # -- labels and egress ----------------------------------------------------------------------
    ("GET", f"{V1}/labels/effective"): Probe(
        lambda _a, _x: f"{V1}/labels/effective", query=lambda _a, x: {"signal": x.signal}
    ),
    ("PUT", f"{V1}/labels/assets/{{asset_id}}"): Probe(
        lambda _a, x: f"{V1}/labels/assets/{x.asset}", body=lambda _a, _x: LABELS, role=SEC
    ),
    ("PUT", f"{V1}/labels/devices/{{name}}"): Probe(
        lambda _a, x: f"{V1}/labels/devices/{x.device}", body=lambda _a, _x: LABELS, role=SEC
    ),
    ("PUT", f"{V1}/labels/signals/{{key:path}}"): Probe(
        lambda _a, x: f"{V1}/labels/signals/{x.signal}", body=lambda _a, _x: LABELS, role=SEC
    ),
    ("PUT", f"{V1}/labels/tenant"): Listing(
        f"{V1}/labels/tenant", body=lambda _a, _x: {"residency": None}, role=SEC
    ),
    ("POST", f"{V1}/egress/requests"): (
        Probe(
            lambda _a, _x: f"{V1}/egress/requests",
            body=lambda _a, x: {**EGRESS_BODY, "signals": [x.signal]},
        ),
        Probe(
            lambda _a, _x: f"{V1}/egress/requests",
            body=lambda _a, x: {**EGRESS_BODY, "asset_id": x.asset},
        ),
    ),
    ("GET", f"{V1}/egress/requests"): (
        Listing(f"{V1}/egress/requests"),
        Listing(f"{V1}/egress/requests", role=SEC),
    ),
    ("POST", f"{V1}/egress/requests/{{request_id}}/approve"): Probe(egress("/approve"), role=SEC),
    ("POST", f"{V1}/egress/requests/{{request_id}}/reject"): Probe(egress("/reject"), role=SEC),
    ("DELETE", f"{V1}/egress/requests/{{request_id}}"): (
        Probe(egress(""), role=SEC),
        Probe(egress("")),
    ),
    ("GET", f"{V1}/export"): Probe(
        lambda _a, _x: f"{V1}/export", query=lambda _a, x: {"signal": x.signal}
    ),
    # -- login and the caller's own account: credentials in the body, one answer for all ------
    ("POST", f"{V1}/auth/login"): Probe(
        lambda _a, _x: f"{V1}/auth/login", body=lambda _a, x: creds(x), denied=UNAUTH
    ),
    ("POST", f"{V1}/auth/password"): Probe(
        lambda _a, _x: f"{V1}/auth/password",
        body=lambda _a, x: {**creds(x), "new_password": PASSWORD + "-new"},
        denied=UNAUTH,
    ),
    ("POST", f"{V1}/auth/totp/enroll"): Probe(
        lambda _a, _x: f"{V1}/auth/totp/enroll", body=lambda _a, x: creds(x), denied=UNAUTH
    ),
    ("POST", f"{V1}/auth/totp/confirm"): Probe(
        lambda _a, _x: f"{V1}/auth/totp/confirm",
        body=lambda _a, x: {**creds(x), "code": "123456"},
        denied=UNAUTH,
    ),
    # Ends the caller's own session, no object named; an API token is told to revoke itself.
    ("POST", f"{V1}/auth/logout"): Listing(
        f"{V1}/auth/logout", role=Role.VIEWER, ok=frozenset({204, 422})
    ),
    ("GET", f"{V1}/auth/me"): Listing(f"{V1}/auth/me"),
    ("GET", f"{V1}/auth/tokens"): Listing(f"{V1}/auth/tokens"),
    ("POST", f"{V1}/auth/tokens"): Listing(
        f"{V1}/auth/tokens",
        body=lambda _a, _x: {"name": "alpha-token"},
        role=Role.ENGINEER,
        session=True,
    ),
    ("DELETE", f"{V1}/auth/tokens/{{token_id}}"): Probe(
        lambda _a, x: f"{V1}/auth/tokens/{x.token}"
    ),
    # -- users and access grants ----------------------------------------------------------------
    ("POST", f"{V1}/users"): Probe(
        lambda _a, _x: f"{V1}/users",
        body=lambda _a, x: {
            "username": "alpha-new-user",
            "password": PASSWORD,
            "roles": [{"role": "viewer", "asset_id": x.asset}],
        },
        denied=BAD_BINDING,
    ),
    ("GET", f"{V1}/users"): Listing(f"{V1}/users"),
    ("GET", f"{V1}/users/{{username}}"): Probe(user_path()),
    ("PATCH", f"{V1}/users/{{username}}"): Probe(
        user_path(), body=lambda _a, _x: {"display_name": "x"}
    ),
    ("DELETE", f"{V1}/users/{{username}}"): Probe(user_path()),
    ("PUT", f"{V1}/users/{{username}}/roles"): (
        Probe(user_path("/roles"), body=lambda _a, _x: {"roles": []}),
        # A's own user bound to B's asset
        Probe(
            lambda a, _x: f"{V1}/users/{a.user}/roles",
            body=lambda _a, x: {"roles": [{"role": "viewer", "asset_id": x.asset}]},
            denied=BAD_BINDING,
        ),
    ),
    ("POST", f"{V1}/users/{{username}}/unlock"): Probe(user_path("/unlock")),
    ("POST", f"{V1}/users/{{username}}/password-reset"): Probe(user_path("/password-reset")),
    ("POST", f"{V1}/access-grants"): Listing(
        f"{V1}/access-grants",
        body=lambda _a, _x: {"grantee": OPS, "duration_hours": 1, "reason": "support"},
    ),
    ("GET", f"{V1}/access-grants"): Listing(f"{V1}/access-grants"),
    ("DELETE", f"{V1}/access-grants/{{grant_id}}"): Probe(
        lambda _a, x: f"{V1}/access-grants/{x.grant}"
    ),
    # -- audit ----------------------------------------------------------------------------------
    ("GET", f"{V1}/audit/records"): Listing(
        f"{V1}/audit/records", role=Role.AUDITOR, check=no_b_records
    ),
    ("GET", f"{V1}/audit/export"): Listing(
        f"{V1}/audit/export", role=Role.AUDITOR, check=no_b_records
    ),
    ("GET", f"{V1}/platform/audit/records"): PlatformOnly(
        f"{V1}/platform/audit/records", role=Role.AUDITOR
    ),
    ("GET", f"{V1}/platform/audit/export"): PlatformOnly(
        f"{V1}/platform/audit/export", role=Role.AUDITOR
    ),
    ("GET", f"{V1}/audit/settings"): PlatformOnly(f"{V1}/audit/settings", role=SEC),
    ("PUT", f"{V1}/audit/settings"): PlatformOnly(
        f"{V1}/audit/settings", {"retention_days": 400}, role=SEC
    ),
    ("POST", f"{V1}/platform/audit/purge"): PlatformOnly(f"{V1}/platform/audit/purge"),
    # -- limits ---------------------------------------------------------------------------------
    ("GET", f"{V1}/tenant/limits"): Listing(f"{V1}/tenant/limits"),
    ("PUT", f"{V1}/tenants/{{name}}/limits"): PlatformOnly(
        f"{V1}/tenants/{B_MARK}/limits", {"api_requests_per_s": 1000.0}
    ),
    # -- rules and alarms (each tenant has a rule named like its device, with an alarm) ---------
    ("POST", f"{V1}/rules"): (
        Probe(lambda _a, _x: f"{V1}/rules", body=lambda _a, x: rule_body(device=x.device)),
        Probe(
            lambda _a, _x: f"{V1}/rules", body=lambda _a, x: rule_body(device_type=x.device_type)
        ),
        # A's rule on A's device with a command action aimed at B's device
        Probe(
            lambda _a, _x: f"{V1}/rules",
            body=lambda a, x: {
                **rule_body(device=a.device, name="alpha-cmd"),
                "actions": [
                    {"kind": "command", "config": {"device": x.device, "signal": "s", "value": 1}}
                ],
            },
        ),
    ),
    ("GET", f"{V1}/rules"): Listing(f"{V1}/rules"),
    ("GET", f"{V1}/rules/{{name}}"): Probe(rule_path()),
    ("PUT", f"{V1}/rules/{{name}}"): (
        Probe(rule_path(), body=lambda a, _x: rule_body(device=a.device, name=None)),
        # A's own rule moved onto B's device
        Probe(
            lambda a, _x: f"{V1}/rules/{a.device}",
            body=lambda _a, x: rule_body(device=x.device, name=None),
        ),
    ),
    ("DELETE", f"{V1}/rules/{{name}}"): Probe(rule_path()),
    ("POST", f"{V1}/rules/{{name}}/enable"): Probe(rule_path("/enable")),
    ("POST", f"{V1}/rules/{{name}}/disable"): Probe(rule_path("/disable")),
    ("GET", f"{V1}/alarms"): (
        Listing(f"{V1}/alarms"),
        Probe(lambda _a, _x: f"{V1}/alarms", query=lambda _a, x: {"device": x.device}),
    ),
    ("GET", f"{V1}/alarms/history"): (
        Listing(f"{V1}/alarms/history"),
        Listing(f"{V1}/alarms/history", query=lambda _a, b: {"device": b.device}),
    ),
    ("GET", f"{V1}/alarms/flood"): Listing(f"{V1}/alarms/flood"),
    ("POST", f"{V1}/alarms/{{rule}}/{{device}}/ack"): alarm_probes("/ack", {"comment": "c"}),
    ("POST", f"{V1}/alarms/{{rule}}/{{device}}/shelve"): alarm_probes(
        "/shelve", {"duration": "1h", "comment": "c"}
    ),
    ("POST", f"{V1}/alarms/{{rule}}/{{device}}/unshelve"): alarm_probes("/unshelve", None),
    ("POST", f"{V1}/alarms/{{rule}}/{{device}}/suppress"): alarm_probes(
        "/suppress", {"reason": "r"}
    ),
    ("POST", f"{V1}/alarms/{{rule}}/{{device}}/unsuppress"): alarm_probes("/unsuppress", None),
    ("POST", f"{V1}/alarms/{{rule}}/{{device}}/out-of-service"): alarm_probes(
        "/out-of-service", {"comment": "c"}
    ),
    ("POST", f"{V1}/alarms/{{rule}}/{{device}}/return-to-service"): alarm_probes(
        "/return-to-service", None
    ),
    # -- dashboards: a widget naming B's signal or device is the 422 of an unknown one. B holds
    # no dashboard in this world, so the per-id routes only show a made-up id's 404 without B;
    # tests/api/test_dashboard_routes.py probes another tenant's real dashboards by id. --------
    ("GET", f"{V1}/dashboards"): Listing(f"{V1}/dashboards"),
    ("POST", f"{V1}/dashboards"): (
        Probe(
            lambda _a, _x: f"{V1}/dashboards",
            body=lambda _a, x: {
                "name": "alpha-board",
                "widgets": [{"kind": "value_card", "signals": [x.signal]}],
            },
            denied=frozenset({422}),
        ),
        Probe(
            lambda _a, _x: f"{V1}/dashboards",
            body=lambda _a, x: {
                "name": "alpha-board",
                "widgets": [{"kind": "state_timeline", "device": x.device}],
            },
            denied=frozenset({422}),
        ),
    ),
    ("POST", f"{V1}/dashboards/import"): Probe(
        lambda _a, _x: f"{V1}/dashboards/import",
        body=lambda _a, x: {
            "format": "shopfloor.dashboard",
            "version": 1,
            "dashboard": {
                "name": "alpha-board",
                "widgets": [{"kind": "line_chart", "signals": [x.signal]}],
            },
        },
        denied=frozenset({422}),
    ),
    ("GET", f"{V1}/dashboards/{{dashboard_id}}"): Listing(
        f"{V1}/dashboards/987654", ok=frozenset({404})
    ),
    ("PUT", f"{V1}/dashboards/{{dashboard_id}}"): Listing(
        f"{V1}/dashboards/987654", body=lambda _a, _b: {"name": "alpha-board"}, ok=frozenset({404})
    ),
    ("DELETE", f"{V1}/dashboards/{{dashboard_id}}"): Listing(
        f"{V1}/dashboards/987654", ok=frozenset({404})
    ),
    ("GET", f"{V1}/dashboards/{{dashboard_id}}/export"): Listing(
        f"{V1}/dashboards/987654/export", ok=frozenset({404})
    ),
    # -- remote gateway configuration: B's gateway answers as a device that does not exist -----
    ("GET", f"{V1}/gateways"): Listing(f"{V1}/gateways"),
    ("GET", f"{V1}/gateways/{{name}}/config"): (
        Probe(lambda _a, x: f"{V1}/gateways/{x.gateway}/config"),
        Probe(
            lambda _a, x: f"{V1}/gateways/{x.gateway}/config",
            query=lambda _a, _x: {"wait_s": 0, "after_version": 0, "secrets": "reveal"},
        ),
    ),
    ("PUT", f"{V1}/gateways/{{name}}/config"): Probe(
        lambda _a, x: f"{V1}/gateways/{x.gateway}/config",
        body=lambda _a, _x: {"connectors": [], "expected_version": 0},
    ),
    ("POST", f"{V1}/gateways/{{name}}/config/status"): Probe(
        lambda _a, x: f"{V1}/gateways/{x.gateway}/config/status",
        body=lambda _a, _x: {"applied_version": 1, "error": "alpha says so"},
    ),
    ("POST", f"{V1}/gateways/{{name}}/browse"): Probe(
        lambda _a, x: f"{V1}/gateways/{x.gateway}/browse",
        body=lambda _a, _x: {"endpoint": "opc.tcp://127.0.0.1:4840", "max_depth": 1},
    ),
    # Browse ids are made per request and short-lived (B has none to name): A's own gateway
    # with a made-up id is the 404 of an unknown request; B's gateway in the path is the
    # same device check as the config routes' probes above and the result route's below.
    ("GET", f"{V1}/gateways/{{name}}/browse/{{browse_id}}"): Listing(
        f"{V1}/gateways/alpha-gw/browse/some-request", ok=frozenset({404})
    ),
    ("POST", f"{V1}/gateways/{{name}}/browse/{{browse_id}}/result"): Probe(
        lambda _a, x: f"{V1}/gateways/{x.gateway}/browse/some-request/result",
        body=lambda _a, _x: {"error": "alpha says so"},
    ),
    # -- apps (tenant-wide; B enabled every installed app, A none unless it enables one) --------
    ("GET", f"{V1}/apps"): Listing(f"{V1}/apps"),
    ("GET", f"{V1}/apps/{{name}}"): Listing(f"{V1}/apps/{AN_APP}", ok=frozenset({200, 404})),
    ("PUT", f"{V1}/apps/{{name}}"): Listing(
        f"{V1}/apps/{AN_APP}", body=lambda _a, _b: {"enabled": False}, ok=frozenset({200, 404})
    ),
    ("GET", f"{V1}/apps/{{name}}/events"): Listing(
        f"{V1}/apps/{AN_APP}/events",
        ok=frozenset({404}),  # A did not enable it
    ),
    # Each installed app's own routes: A has not enabled the app, B has: 404, nothing of B's.
    **{
        ("GET", f"{V1}/apps/{app_name}/{route.path}"): Listing(
            f"{V1}/apps/{app_name}/{route.path}", ok=frozenset({404})
        )
        for app_name, cls in installed_apps().items()
        for route in cls.routes()
    },
}


# -- the routes the app registers ---------------------------------------------------------------


def registered_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, included routers walked; HEAD rides along with GET."""

    def walk(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
        for r in routes:
            inner = getattr(r, "original_router", None)  # FastAPI's _IncludedRouter
            if inner is not None:
                yield from walk(inner.routes)
            else:
                yield r

    for route in walk(app.routes):
        path = getattr(route, "path", None)
        if isinstance(route, WebSocketRoute):  # no HTTP methods: listed as "WS"
            yield "WS", route.path
            continue
        methods = getattr(route, "methods", None)
        assert path is not None, f"a route without a path: {route!r}"
        assert methods, f"a route without methods: {route!r}"
        for m in sorted(methods - {"HEAD"}):
            yield m, path


def test_every_route_is_in_the_walk(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    routes = set(registered_routes(app))
    missing = sorted(routes - ROUTES.keys())
    assert not missing, "\n".join(
        f"new route {m} {p} is not covered by the tenant-isolation walk: add it to ROUTES in "
        "tests/security/test_isolation.py (how a tenant-A user reaches for tenant B's object)"
        for m, p in missing
    )
    stale = sorted(ROUTES.keys() - routes)
    assert not stale, f"ROUTES lists routes the app no longer has: {stale}"


# -- the walk -----------------------------------------------------------------------------------


def _session_of(world: World) -> Callable[[Role], dict[str, str]]:
    """Headers of a login session of a new user of A holding the role (no second factor:
    use a role outside MFA_ROLES)."""

    def headers(role: Role) -> dict[str, str]:
        name = f"walk-session-{role.value}"
        world.platform.auth.create_user(world.a_tenant_id, name, PASSWORD, [role])
        _, secret, _ = world.platform.auth.login("alpha", name, PASSWORD)
        return {"Authorization": f"Bearer {secret}"}

    return headers


def _call(world: World, method: str, path: str, role: Role, body: Any, query: Any) -> Any:
    return world.client.request(method, path, json=body, params=query, headers=world.headers(role))


def _probe(world: World, method: str, p: Probe) -> tuple[Any, Any]:
    def call(x: Objects) -> Any:
        return _call(
            world,
            method,
            p.path(world.a, x),
            p.role,
            None if p.body is None else p.body(world.a, x),
            None if p.query is None else p.query(world.a, x),
        )

    return call(world.b), call(GHOST)


def _same_answer(world: World, what: str, rb: Any, rg: Any, denied: frozenset[int]) -> None:
    assert rb.status_code in denied, f"{what}: B's object answered {rb.status_code} {rb.text}"
    assert rb.status_code == rg.status_code, (
        f"{what}: B's object {rb.status_code}, a nonexistent one {rg.status_code}: "
        "the status tells B's object exists"
    )
    eb, eg = rb.json()["error"], rg.json()["error"]
    message = eb["message"]
    for real, ghost in world.b.swaps(GHOST):
        message = re.sub(rf"(?<![\w-]){re.escape(real)}(?![\w-])", ghost, message)
    assert (eb["type"], eb.get("field"), message) == (eg["type"], eg.get("field"), eg["message"]), (
        f"{what}: B's object and a nonexistent one answer differently: {eb} vs {eg}"
    )
    echoed = rb.text
    for real, _ in world.b.swaps(GHOST):  # the names A itself sent may come back; nothing else
        echoed = echoed.replace(real, "")
    assert B_MARK not in echoed, f"{what} tells more about tenant B than A asked: {rb.text}"


def test_tenant_a_cannot_reach_tenant_b(world: World) -> None:
    before = fingerprint(world.platform, B_MARK)
    checked = 0
    for (method, path), entry in ROUTES.items():
        what = f"{method} {path}"
        entries = entry if isinstance(entry, tuple) else (entry,)
        for e in entries:
            if isinstance(e, Probe):
                _same_answer(world, what, *_probe(world, method, e), e.denied)
            elif isinstance(e, Listing):
                r = _call(
                    world if not e.session else replace(world, headers=_session_of(world)),
                    method,
                    e.path,
                    e.role,
                    None if e.body is None else e.body(world.a, world.b),
                    None if e.query is None else e.query(world.a, world.b),
                )
                assert r.status_code in e.ok, f"{what}: {r.status_code} {r.text}"
                if e.check is not None:
                    e.check(r, world.b)
                else:
                    assert B_MARK not in r.text, f"{what} shows tenant B's objects: {r.text}"
            elif isinstance(e, PlatformOnly):
                r = _call(world, method, e.path, e.role, e.body, None)
                assert r.status_code == 403, f"{what}: {r.status_code} {r.text}"
            elif isinstance(e, Global):
                rb, _ = _probe(world, method, e.probe)
                assert B_MARK not in rb.text, f"{what} names tenant B: {rb.text}"
                assert rb.status_code in (403, 404, 409), f"{what}: {rb.status_code} {rb.text}"
            else:
                assert isinstance(e, Public)
                assert e.reason
                continue
            checked += 1
    assert checked == sum(
        1
        for e in ROUTES.values()
        for x in (e if isinstance(e, tuple) else (e,))
        if not isinstance(x, Public)
    )
    assert fingerprint(world.platform, B_MARK) == before, "the walk changed tenant B"


def test_tenant_key_cannot_reach_tenant_b(world: World) -> None:
    """The same walk with A's bootstrap tenant key (it acts as A's tenant admin): its probes
    that need no other role."""
    key_world = replace(world, headers=lambda _role: {"Authorization": f"Bearer {world.a_key}"})
    before = fingerprint(world.platform, B_MARK)
    for (method, path), entry in ROUTES.items():
        for e in entry if isinstance(entry, tuple) else (entry,):
            if isinstance(e, Probe) and e.role is Role.TENANT_ADMIN:
                rb, rg = _probe(key_world, method, e)
                _same_answer(key_world, f"{method} {path} (tenant key)", rb, rg, e.denied)
    assert fingerprint(world.platform, B_MARK) == before


def test_the_probes_can_succeed(world: World) -> None:
    """Guard against a walk that passes because every call is malformed: the same probes,
    aimed at A's own objects, get past validation (not 422) on the read routes."""
    for (method, path), entry in ROUTES.items():
        if method != "GET":
            continue
        for e in entry if isinstance(entry, tuple) else (entry,):
            if isinstance(e, Probe):
                r = _call(
                    world,
                    method,
                    e.path(world.a, world.a),
                    e.role,
                    None,
                    None if e.query is None else e.query(world.a, world.a),
                )
                assert r.status_code == 200, f"{method} {path} on A's own object: {r.text}"
