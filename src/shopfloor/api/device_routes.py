"""Device credentials, provisioning, gateways, Sparkplug binding and the device twin over HTTP.

Every route is scoped to the tenant of the caller's API key, except ``POST /api/v1/provision``:
a device calls it with a provisioning key in the body and no API key. Secrets (tokens,
generated passwords, private keys, provisioning keys) appear in the one response that creates
them and never again. See docs/devices.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api import scoping
from shopfloor.api.deps import get_platform
from shopfloor.api.registry_routes import (
    AUTH,
    E400,
    E404,
    E409,
    E422,
    ErrorBody,
    Name,
    Responses,
)
from shopfloor.api.scoping import device_scope, scope_of
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.registry.credentials import (
    CredentialInfo,
    DeviceCredentials,
    ProvisioningKeyInfo,
    default_ca_dir,
)
from shopfloor.registry.models import CredentialKind
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1")

Kind = Literal["token", "password", "certificate"]


def get_credentials(
    request: Request, platform: Annotated[Any, Depends(get_platform)]
) -> DeviceCredentials:
    """The platform's DeviceCredentials; made here (once per app) if the platform has none."""
    own = getattr(platform, "credentials", None)
    if isinstance(own, DeviceCredentials):
        return own
    made: DeviceCredentials | None = getattr(request.app.state, "device_credentials", None)
    if made is None or made.registry is not platform.registry:
        made = DeviceCredentials(platform.registry, default_ca_dir(platform.settings.data_dir))
        request.app.state.device_credentials = made
    return made


Creds = Annotated[DeviceCredentials, Depends(get_credentials)]


# --- keeping an external broker in step ---------------------------------------------------------
# With an external Mosquitto the broker itself checks logins and topics (its dynamic-security
# plugin), so a credential is pushed there when its secret is known, at creation, and deleted
# when it is revoked. These routes are plain functions (FastAPI runs them in a worker thread);
# the MQTT service lives on the event loop, reached through anyio.from_thread.


def _broker(request: Request) -> Any:
    platform = getattr(request.app.state, "platform", None)
    mqtt = getattr(platform, "mqtt", None)
    return mqtt if mqtt is not None and getattr(mqtt, "syncs_broker", False) else None


def _push(request: Request, creds: DeviceCredentials, username: str, password: str | None) -> None:
    mqtt = _broker(request)
    if mqtt is None:
        return
    identity = creds.authenticate(username, password)
    if identity is not None:  # a token logs in to Mosquitto as username and password both
        anyio.from_thread.run(mqtt.credential_issued, identity, username, password or username)


def _pull(request: Request, credential_ids: set[int]) -> None:
    mqtt = _broker(request)
    if mqtt is not None and credential_ids:
        anyio.from_thread.run(mqtt.credentials_revoked, credential_ids)


# Managing credentials, provisioning keys, gateways and Sparkplug bindings needs
# devices.credentials; reading a device's twin or gateway needs registry.read. The Device*
# forms also check that the device the path names is in the caller's subtree (api/scoping.py).
Me = Annotated[Scope, Depends(scope_of(Permission.DEVICE_CREDENTIALS))]
DeviceMe = Annotated[Scope, Depends(device_scope(Permission.DEVICE_CREDENTIALS))]
DeviceRead = Annotated[Scope, Depends(device_scope(Permission.REGISTRY_READ))]


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


PROVISION_ERRORS: Responses = {
    401: _err("Unknown, revoked or expired provisioning key"),
    403: _err("Provisioning key used up"),
    409: _err("Device exists and the key does not allow re-provisioning, or username taken"),
    **E404,
    **E422,
}

# ---------------------------------------------------------------------------------------------
# Bodies (strict, as in registry_routes)
# ---------------------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CredentialIn(_In):
    kind: Kind = Field(description="token, password, or certificate (mutual TLS).")
    username: Name | None = Field(None, description="For kind password; unique platform-wide.")
    password: str | None = Field(None, min_length=8, max_length=1024)
    certificate_pem: str | None = Field(
        None,
        description="For kind certificate: register this certificate instead of issuing one"
        " (its private key stays on the device).",
    )


class CredentialOut(_Out):
    id: int
    device: str
    kind: CredentialKind
    username: str | None
    fingerprint: str | None = Field(description="sha256 of the certificate's DER, hex.")
    subject: str | None
    not_after: datetime | None
    created_at: datetime
    revoked_at: datetime | None


class CredentialCreated(BaseModel):
    credential: CredentialOut
    token: str | None = Field(None, description="MQTT username; shown only in this response.")
    certificate_pem: str | None = None
    private_key_pem: str | None = Field(None, description="Shown only in this response.")
    ca_certificate_pem: str | None = Field(None, description="The device CA, to trust.")


class Revoked(BaseModel):
    revoked: int


class ProvisioningKeyIn(_In):
    name: Name
    device_type: Name | None = Field(None, description="Devices register with this type.")
    asset_id: int | None = Field(None, description="Devices register under this asset.")
    gateway: bool = Field(False, description="Devices register as gateways.")
    # Lax: strict datetimes accept only datetime objects, never the JSON string.
    expires_at: Annotated[datetime, Field(strict=False)] | None = Field(
        None, description="RFC 3339 with a UTC offset."
    )
    max_devices: int | None = Field(None, ge=1)
    reprovision: bool = Field(
        False, description="Allow taking over an existing device of the same name."
    )


class ProvisioningKeyOut(_Out):
    id: int
    name: str
    device_type: str | None
    asset_id: int | None
    gateway: bool
    reprovision: bool
    expires_at: datetime | None
    max_devices: int | None
    used: int
    created_at: datetime
    revoked_at: datetime | None


class ProvisioningKeyCreated(ProvisioningKeyOut):
    key: str = Field(description="Shown only in this response; put it on the devices.")


class ProvisionIn(_In):
    key: str = Field(min_length=1, max_length=200, description="A provisioning key.")
    device: Name
    credential: Kind = "token"
    username: Name | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


class ProvisionOut(BaseModel):
    tenant: str
    device: str
    created: bool = Field(description="False when an existing device was re-provisioned.")
    credential: Kind
    token: str | None = None
    username: str | None = None
    password: str | None = None
    certificate_pem: str | None = None
    private_key_pem: str | None = None
    ca_certificate_pem: str | None = None


class GatewayIn(_In):
    owns: list[Name] = Field(description="Devices of the tenant the gateway acts for.")


class GatewayOut(BaseModel):
    device: str
    owns: list[str]


class SparkplugNodeIn(_In):
    group_id: Name
    edge_node_id: Name


class SparkplugNodeOut(SparkplugNodeIn):
    device: str


class SparkplugGroupIn(_In):
    group_id: Name


# ---------------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------------


@router.post(
    "/devices/{name}/credentials",
    status_code=status.HTTP_201_CREATED,
    summary="Give a device a token, username/password or client certificate",
    description="The secret (token, private key) is in this response only.",
    responses={**E400, **AUTH, **E404, **E409, **E422},
    tags=["device credentials"],
)
def create_credential(
    name: str, body: CredentialIn, me: DeviceMe, creds: Creds, request: Request
) -> CredentialCreated:
    if body.kind == "password" and (body.username is None or body.password is None):
        raise BadInput("kind password needs username and password", "username")
    if body.kind != "password" and (body.username or body.password) is not None:
        raise BadInput("username and password go with kind password only", "username")
    if body.kind != "certificate" and body.certificate_pem is not None:
        raise BadInput("certificate_pem goes with kind certificate only", "certificate_pem")
    out: dict[str, Any] = {}
    if body.kind == "token":
        out["token"] = creds.issue_token(me.tenant_id, name)
        _push(request, creds, out["token"], None)
    elif body.kind == "password":
        assert body.username is not None
        assert body.password is not None
        creds.set_password(me.tenant_id, name, body.username, body.password)
        _push(request, creds, body.username, body.password)
    elif body.certificate_pem is not None:
        creds.register_certificate(me.tenant_id, name, body.certificate_pem.encode())
    else:
        cert, key = creds.issue_certificate(me.tenant_id, name)
        out |= {
            "certificate_pem": cert.decode(),
            "private_key_pem": key.decode(),
            "ca_certificate_pem": creds.ca_cert_path.read_text(),
        }
    live = [
        c
        for c in creds.list_credentials(me.tenant_id, name)
        if c.kind == body.kind and not c.revoked
    ]
    if body.kind == "password":  # a known username keeps its credential, with a new password
        live = [c for c in live if c.username == body.username]
    return CredentialCreated(credential=_cred(max(live, key=lambda c: c.id)), **out)


@router.get(
    "/devices/{name}/credentials",
    summary="A device's credentials, revoked ones included, without secrets",
    responses={**AUTH, **E404},
    tags=["device credentials"],
)
def list_credentials(name: str, me: DeviceMe, creds: Creds) -> list[CredentialOut]:
    return [_cred(c) for c in creds.list_credentials(me.tenant_id, name)]


@router.delete(
    "/devices/{name}/credentials/{credential_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke one credential; brokers refuse it from the next message on",
    responses={**AUTH, **E404},
    tags=["device credentials"],
)
def revoke_credential(
    name: str, credential_id: int, me: DeviceMe, creds: Creds, request: Request
) -> Response:
    if credential_id not in {c.id for c in creds.list_credentials(me.tenant_id, name)}:
        raise NotFound(f"credential {credential_id} of device {name!r} not found")
    creds.revoke(me.tenant_id, credential_id)
    _pull(request, {credential_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/devices/{name}/credentials",
    summary="Revoke every credential of a device",
    responses={**AUTH, **E404},
    tags=["device credentials"],
)
def revoke_device(name: str, me: DeviceMe, creds: Creds, request: Request) -> Revoked:
    live = {c.id for c in creds.list_credentials(me.tenant_id, name) if not c.revoked}
    revoked = creds.revoke_device(me.tenant_id, name)
    _pull(request, live)
    return Revoked(revoked=revoked)


def _cred(c: CredentialInfo) -> CredentialOut:
    return CredentialOut.model_validate(c)


# ---------------------------------------------------------------------------------------------
# Provisioning
# ---------------------------------------------------------------------------------------------


@router.post(
    "/provisioning-keys",
    status_code=status.HTTP_201_CREATED,
    summary="Create a provisioning key devices use to register themselves",
    responses={**E400, **AUTH, **E404, **E409, **E422},
    tags=["provisioning"],
)
def create_provisioning_key(
    body: ProvisioningKeyIn, me: Me, creds: Creds
) -> ProvisioningKeyCreated:
    scoping.check_placement(me, body.asset_id, "a provisioning key for unplaced devices")
    key = creds.create_provisioning_key(
        me.tenant_id,
        body.name,
        device_type=body.device_type,
        asset_id=body.asset_id,
        gateway=body.gateway,
        expires_at=body.expires_at,
        max_devices=body.max_devices,
        reprovision=body.reprovision,
    )
    (info,) = [k for k in creds.list_provisioning_keys(me.tenant_id) if k.name == body.name]
    return ProvisioningKeyCreated(**_pkey(info).model_dump(), key=key)


@router.get(
    "/provisioning-keys",
    summary="List provisioning keys (without the keys)",
    responses=AUTH,
    tags=["provisioning"],
)
def list_provisioning_keys(me: Me, creds: Creds) -> list[ProvisioningKeyOut]:
    keys = creds.list_provisioning_keys(me.tenant_id)
    return [_pkey(k) for k in scoping.visible(me, keys, _key_asset)]


@router.delete(
    "/provisioning-keys/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a provisioning key; devices it registered keep their credentials",
    responses={**AUTH, **E404},
    tags=["provisioning"],
)
def revoke_provisioning_key(name: str, me: Me, creds: Creds) -> Response:
    if not me.whole_tenant:
        keys = scoping.visible(me, creds.list_provisioning_keys(me.tenant_id), _key_asset)
        if name not in {k.name for k in keys}:
            raise NotFound(f"provisioning key {name!r} not found")  # as for an unknown key
    creds.revoke_provisioning_key(me.tenant_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/provision",
    status_code=status.HTTP_201_CREATED,
    summary="A device registers itself with a provisioning key (no API key)",
    description="Returns the device's new credential; its secret is in this response only.",
    responses={**E400, **PROVISION_ERRORS},
    tags=["provisioning"],
)
def provision(body: ProvisionIn, creds: Creds, request: Request) -> ProvisionOut:
    r = creds.provision(
        body.key,
        body.device,
        credential=body.credential,
        username=body.username,
        password=body.password,
    )
    if r.token is not None:
        _push(request, creds, r.token, None)
    elif r.username is not None and r.password is not None:
        _push(request, creds, r.username, r.password)
    pem = (
        {}
        if r.certificate_pem is None
        else {
            "certificate_pem": r.certificate_pem.decode(),
            "private_key_pem": (r.private_key_pem or b"").decode(),
            "ca_certificate_pem": creds.ca_cert_path.read_text(),
        }
    )
    return ProvisionOut(
        tenant=r.identity.tenant,
        device=r.identity.device,
        created=r.created,
        credential=r.credential,
        token=r.token,
        username=r.username,
        password=r.password,
        **pem,
    )


def _pkey(k: ProvisioningKeyInfo) -> ProvisioningKeyOut:
    return ProvisioningKeyOut.model_validate(k)


def _key_asset(k: ProvisioningKeyInfo) -> int | None:
    return k.asset_id


# ---------------------------------------------------------------------------------------------
# Gateways and Sparkplug
# ---------------------------------------------------------------------------------------------


@router.put(
    "/devices/{name}/gateway",
    summary="Make a device a gateway acting for exactly these devices",
    responses={**E400, **AUTH, **E404, **E422},
    tags=["device credentials"],
)
def set_gateway(name: str, body: GatewayIn, me: DeviceMe, creds: Creds) -> GatewayOut:
    scoping.check_devices(me, creds.registry, set(body.owns) - {name})
    creds.set_gateway(me.tenant_id, name, body.owns)
    return GatewayOut(device=name, owns=creds.gateway_devices(me.tenant_id, name) or [])


@router.get(
    "/devices/{name}/gateway",
    summary="The devices a gateway acts for",
    responses={**AUTH, 404: _err("No such device, or it is no gateway")},
    tags=["device credentials"],
)
def get_gateway(name: str, me: DeviceRead, creds: Creds) -> GatewayOut:
    owns = creds.gateway_devices(me.tenant_id, name)
    if owns is None:
        raise NotFound(f"device {name!r} is no gateway")
    return GatewayOut(device=name, owns=scoping.visible_device_names(me, creds.registry, owns))


@router.put(
    "/devices/{name}/sparkplug",
    summary="Bind a device's credentials to one Sparkplug edge node",
    description="The group must be the tenant's: its name, or a group it claimed (an"
    " unclaimed group is claimed here).",
    responses={**E400, **AUTH, **E404, **E409, **E422},
    tags=["device credentials"],
)
def set_sparkplug_node(
    name: str, body: SparkplugNodeIn, me: DeviceMe, creds: Creds
) -> SparkplugNodeOut:
    creds.set_sparkplug_node(me.tenant_id, name, body.group_id, body.edge_node_id)
    return SparkplugNodeOut(device=name, group_id=body.group_id, edge_node_id=body.edge_node_id)


@router.post(
    "/sparkplug-groups",
    status_code=status.HTTP_201_CREATED,
    summary="Claim a Sparkplug group id for the tenant (besides its own name)",
    responses={**E400, **AUTH, **E409, **E422},
    tags=["device credentials"],
)
def claim_sparkplug_group(body: SparkplugGroupIn, me: Me, creds: Creds) -> SparkplugGroupIn:
    scoping.require_whole_tenant(me, "claiming a Sparkplug group")  # tenant-wide
    creds.claim_sparkplug_group(me.tenant_id, body.group_id)
    return body


# ---------------------------------------------------------------------------------------------
# Device twin. PUT /devices/{device}/attributes/desired is in mqtt_routes: it also publishes the
# desired attributes, retained, to the device.
# ---------------------------------------------------------------------------------------------


@router.get(
    "/devices/{name}/attributes/desired",
    summary="The attributes the platform wants the device to take on",
    responses={**AUTH, **E404},
    tags=["device twin"],
)
def get_desired(name: str, me: DeviceRead, creds: Creds) -> dict[str, Any]:
    return creds.desired_attributes(me.tenant_id, name)


@router.get(
    "/devices/{name}/attributes/reported",
    summary="The attributes the device reported about itself",
    responses={**AUTH, **E404},
    tags=["device twin"],
)
def get_reported(name: str, me: DeviceRead, creds: Creds) -> dict[str, Any]:
    return creds.reported_attributes(me.tenant_id, name)
