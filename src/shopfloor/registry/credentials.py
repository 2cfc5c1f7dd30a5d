"""Device credentials, zero-touch provisioning, gateways, Sparkplug binding and the device twin.

The design is docs/adr/0004-mqtt-device-endpoint.md; the guide for engineers docs/devices.md.

Secrets are never stored: access tokens and provisioning keys as sha256 (random 256-bit
values need no slow hash), passwords as argon2id. The brokers call ``authenticate`` on CONNECT
and ``is_valid`` on every message: ``generation`` changes on every credential, ownership or
revocation change (in this process at once, from other processes within
``GENERATION_POLL_S``), and ``is_valid`` re-reads an identity only when it has changed.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shopfloor.core.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from shopfloor.registry.device_ca import DeviceCA, fingerprint, load_certificate
from shopfloor.registry.models import (
    NAME_LEN,
    CredentialKind,
    Device,
    DeviceAttributes,
    DeviceAuthProfile,
    DeviceAuthState,
    DeviceCredential,
    DeviceType,
    GatewayDevice,
    ProvisioningKey,
    SparkplugGroup,
    Tenant,
)
from shopfloor.registry.service import (
    Registry,
    _asset_row,
    _device_row,
    _effective_specs,
    _signal_row,
    _tenant_row,
    _type_row,
    check_name,
    hash_api_key,
)
from shopfloor.registry.topics import DeviceIdentity, topic_allowed

__all__ = [
    "CredentialInfo",
    "DeviceCredentials",
    "DeviceIdentity",
    "ProvisionResult",
    "ProvisioningKeyInfo",
    "default_ca_dir",
    "topic_allowed",
]

# How stale another process's revocation may be here; reading the counter costs one SELECT.
GENERATION_POLL_S: Final = 1.0
MAX_ATTRIBUTES_BYTES: Final = 64 * 1024  # of one device's attributes, as compact JSON
PASSWORD_LEN: Final = (8, 1024)
TOKEN_PREFIX: Final = "sfd_"  # recognisable in a leaked config or a secret scanner
PROVISIONING_PREFIX: Final = "sfp_"

_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPARKPLUG_ID_BAD: Final = re.compile(r"[/+#\x00-\x1f\x7f]")

Credential = Literal["token", "password", "certificate"]


def default_ca_dir(data_dir: Path) -> Path:
    """Where the platform keeps its device CA: ``<data_dir>/device-ca``."""
    return data_dir / "device-ca"


# ---------------------------------------------------------------------------------------------
# Plain data handed to callers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A credential without its secret."""

    id: int
    device: str
    kind: CredentialKind
    username: str | None
    fingerprint: str | None
    subject: str | None
    not_after: datetime | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class ProvisioningKeyInfo:
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


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """What a provisioned device gets, once: its identity and the secret of its credential."""

    identity: DeviceIdentity
    credential: Credential
    created: bool  # False when an existing device was re-provisioned
    token: str | None = None
    username: str | None = None
    password: str | None = None
    certificate_pem: bytes | None = None
    private_key_pem: bytes | None = None


# ---------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


class DeviceCredentials:
    """Credentials and what they allow, stored in the registry's database."""

    def __init__(
        self,
        registry: Registry,
        ca_dir: Path,
        *,
        clock: Callable[[], datetime] = _now,
        password_hasher: PasswordHasher | None = None,
    ) -> None:
        self.registry = registry
        self.ca = DeviceCA(ca_dir)
        self._clock = clock
        self._hasher = password_hasher or PasswordHasher()
        # Verified against when a username is unknown, so that answer takes as long as a
        # wrong password and does not tell which usernames exist. Made on first need: one
        # argon2 hash costs ~0.2 s here.
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()
        self._db_generation = 0
        self._next_poll = 0.0
        # (generation, credential id -> identity or None); replaced whole, read without a lock
        self._identities: tuple[int, dict[int, DeviceIdentity | None]] = (-1, {})
        self._groups: tuple[int, dict[str, int | None]] = (-1, {})

    @property
    def ca_cert_path(self) -> Path:
        return self.ca.ca_cert_path

    # -- generation --------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Changes whenever an identity may have changed; cheap enough for every message."""
        if time.monotonic() >= self._next_poll:
            self._poll_generation()
        # Registry.generation covers devices deleted through the registry (their credentials
        # go with them, by ON DELETE CASCADE).
        return self._db_generation + self.registry.generation

    def _poll_generation(self) -> None:
        with self.registry._read() as s:
            gen = s.scalar(select(DeviceAuthState.generation).where(DeviceAuthState.id == 1))
        with self._lock:
            self._db_generation = max(self._db_generation, gen or 0)
            self._next_poll = time.monotonic() + GENERATION_POLL_S

    @contextmanager
    def _change(self) -> Iterator[Session]:
        """A write transaction that bumps the shared generation when it commits."""
        with self.registry._write() as s:
            yield s
            s.flush()
            s.execute(
                update(DeviceAuthState)
                .where(DeviceAuthState.id == 1)
                .values(generation=DeviceAuthState.generation + 1)
            )
            gen = s.scalar(select(DeviceAuthState.generation).where(DeviceAuthState.id == 1))
            if gen is None:  # a schema built without the migration's seed row
                s.add(DeviceAuthState(id=1, generation=1))
                gen = 1
        with self._lock:
            self._db_generation = max(self._db_generation, gen)

    # -- issuing credentials -----------------------------------------------------------------

    def issue_token(self, tenant_id: int, device: str) -> str:
        """A new access token (MQTT username = token, no password); returned this once only."""
        with self._change() as s:
            dev = _device_row(s, tenant_id, device)
            return _add_token(s, dev)[0]

    def set_password(self, tenant_id: int, device: str, username: str, password: str) -> None:
        """Give the device a username/password; the same username again changes its password."""
        _check_username(username)
        digest = self._hash_password(password)
        with self._change() as s:
            dev = _device_row(s, tenant_id, device)
            live = s.scalar(
                select(DeviceCredential).where(
                    DeviceCredential.username == username, DeviceCredential.revoked_at.is_(None)
                )
            )
            if live is not None and live.device_id != dev.id:
                raise Conflict(f"username {username!r} is taken by another device")
            if live is not None:
                live.password_hash = digest
                return
            _add_password(s, dev, username, digest)

    def issue_certificate(self, tenant_id: int, device: str) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) signed by the device CA, CN ``<tenant>/<device>``."""
        with self._change() as s:
            dev = _device_row(s, tenant_id, device)
            tenant = _tenant_row(s, tenant_id).name
            cert_pem, key_pem = self.ca.issue_device_certificate(f"{tenant}/{device}")
            _add_certificate(s, dev, cert_pem)
        return cert_pem, key_pem

    def register_certificate(self, tenant_id: int, device: str, cert_pem: bytes) -> str:
        """Accept a certificate made elsewhere (its key never leaves the device); its sha256.

        The broker's TLS port still checks the chain: a certificate not signed by a CA the
        broker trusts (the device CA by default) fails the handshake before this matters.
        """
        with self._change() as s:
            dev = _device_row(s, tenant_id, device)
            cert = load_certificate(cert_pem)
            if cert.not_valid_after_utc <= self._clock():
                raise BadInput(
                    f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}", "certificate"
                )
            fp = _add_certificate(s, dev, cert_pem).fingerprint
            assert fp is not None
            return fp

    def _hash_password(self, password: str) -> str:
        low, high = PASSWORD_LEN
        if not isinstance(password, str) or not low <= len(password) <= high:
            raise BadInput(f"password must be {low}-{high} characters", "password")
        return self._hasher.hash(password)

    # -- listing and revoking ----------------------------------------------------------------

    def list_credentials(self, tenant_id: int, device: str) -> list[CredentialInfo]:
        """The device's credentials, revoked ones included, never their secrets."""
        with self.registry._read() as s:
            dev = _device_row(s, tenant_id, device)
            q = select(DeviceCredential).where(DeviceCredential.device_id == dev.id)
            return [_cred_info(c, dev.name) for c in s.scalars(q.order_by(DeviceCredential.id))]

    def revoke(self, tenant_id: int, credential_id: int) -> None:
        """Revoke one credential; the brokers refuse it from their next message on."""
        with self._change() as s:
            row = s.get(DeviceCredential, credential_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"credential {credential_id} not found")
            if row.revoked_at is None:
                row.revoked_at = self._clock()

    def revoke_device(self, tenant_id: int, device: str) -> int:
        """Revoke every live credential of a device; returns how many."""
        with self._change() as s:
            dev = _device_row(s, tenant_id, device)
            return _revoke_all(s, dev.id, self._clock())

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, username: str | None, password: str | None) -> DeviceIdentity | None:
        """The identity of an MQTT CONNECT's credentials, or None (unknown, revoked, wrong).

        A token comes as the username with an empty password; anything else is a
        username/password pair.
        """
        if not username:
            return None
        with self.registry._read() as s:
            if not password:
                row = s.scalar(
                    _live().where(
                        DeviceCredential.kind == CredentialKind.TOKEN,
                        DeviceCredential.token_hash == hash_api_key(username),
                    )
                )
                return None if row is None else _identity(s, row)
            row = s.scalar(
                _live().where(
                    DeviceCredential.kind == CredentialKind.PASSWORD,
                    DeviceCredential.username == username,
                )
            )
            if not self._password_ok(None if row is None else row.password_hash, password):
                return None
            assert row is not None
            return _identity(s, row)

    def _password_ok(self, digest: str | None, password: str) -> bool:
        if digest is None and self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        try:
            self._hasher.verify(digest or self._dummy_hash or "", password)
        except (VerificationError, InvalidHashError):
            return False
        return digest is not None

    def authenticate_certificate(self, cert_der: bytes) -> DeviceIdentity | None:
        """The identity of a TLS client certificate (DER), by its sha256; None if unknown."""
        with self.registry._read() as s:
            row = s.scalar(
                _live().where(
                    DeviceCredential.kind == CredentialKind.CERTIFICATE,
                    DeviceCredential.fingerprint == fingerprint(cert_der),
                )
            )
            if row is None or (row.not_after is not None and row.not_after <= self._clock()):
                return None
            return _identity(s, row)

    def current_identity(self, credential_id: int) -> DeviceIdentity | None:
        """What a credential allows now (None once revoked); re-read once per generation."""
        gen = self.generation
        cached_gen, cache = self._identities
        if cached_gen != gen:
            cache = {}
            self._identities = (gen, cache)
        if credential_id in cache:
            return cache[credential_id]
        with self.registry._read() as s:
            row = s.scalar(_live().where(DeviceCredential.id == credential_id))
            identity = None if row is None else _identity(s, row)
        cache[credential_id] = identity
        return identity

    def is_valid(self, identity: DeviceIdentity) -> bool:
        """False once the credential is revoked or what it may act for has changed.

        A broker disconnects the client then (or takes ``current_identity`` instead).
        """
        return self.current_identity(identity.credential_id) == identity

    # -- gateways and Sparkplug --------------------------------------------------------------

    def set_gateway(self, tenant_id: int, device: str, owns: Sequence[str]) -> None:
        """Make ``device`` a gateway acting for exactly the devices ``owns`` (same tenant)."""
        with self._change() as s:
            gw = _device_row(s, tenant_id, device)
            names = sorted(set(owns) - {device})
            q = select(Device.name, Device.id).where(
                Device.tenant_id == tenant_id, Device.name.in_(names)
            )
            found: dict[str, int] = {name: id_ for name, id_ in s.execute(q)}
            missing = [n for n in names if n not in found]
            if missing:
                raise NotFound(f"devices not found: {', '.join(map(repr, missing))}")
            _profile(s, gw.id).is_gateway = True
            s.execute(delete(GatewayDevice).where(GatewayDevice.gateway_id == gw.id))
            s.add_all(GatewayDevice(gateway_id=gw.id, device_id=found[n]) for n in names)

    def gateway_devices(self, tenant_id: int, device: str) -> list[str] | None:
        """The devices a gateway acts for, or None when ``device`` is no gateway."""
        with self.registry._read() as s:
            dev = _device_row(s, tenant_id, device)
            prof = s.get(DeviceAuthProfile, dev.id)
            if prof is None or not prof.is_gateway:
                return None
            return sorted(_owned(s, dev.id))

    def set_sparkplug_node(
        self, tenant_id: int, device: str, group_id: str, edge_node_id: str
    ) -> None:
        """Bind the device's credentials to one Sparkplug edge node of a group of its tenant.

        An unclaimed group id other than another tenant's name is claimed for the tenant.
        """
        _check_sparkplug_id(group_id, "group_id")
        _check_sparkplug_id(edge_node_id, "edge_node_id")
        with self._change() as s:
            dev = _device_row(s, tenant_id, device)
            _claim(s, tenant_id, group_id)
            prof = _profile(s, dev.id)
            prof.sparkplug_group, prof.sparkplug_edge_node = group_id, edge_node_id
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(
                    f"Sparkplug edge node {group_id}/{edge_node_id} is bound to another device"
                ) from None

    def claim_sparkplug_group(self, tenant_id: int, group_id: str) -> None:
        """Let the tenant use Sparkplug group ``group_id`` besides its own name."""
        _check_sparkplug_id(group_id, "group_id")
        with self._change() as s:
            _tenant_row(s, tenant_id)
            _claim(s, tenant_id, group_id)

    def tenant_of_group(self, group_id: str) -> int | None:
        """The tenant a Sparkplug group belongs to (claimed, else the tenant of that name)."""
        gen = self.generation
        cached_gen, cache = self._groups
        if cached_gen != gen:
            cache = {}
            self._groups = (gen, cache)
        if group_id not in cache:
            with self.registry._read() as s:
                cache[group_id] = _group_tenant(s, group_id)
        return cache[group_id]

    # -- provisioning ------------------------------------------------------------------------

    def create_provisioning_key(
        self,
        tenant_id: int,
        name: str,
        *,
        device_type: str | None = None,
        asset_id: int | None = None,
        gateway: bool = False,
        expires_at: datetime | None = None,
        max_devices: int | None = None,
        reprovision: bool = False,
    ) -> str:
        """A key devices present to register themselves; returned this once only.

        ``reprovision`` lets the key take over an existing device of the same name (its old
        credentials are revoked): for replacing hardware; off by default, because anyone
        holding the key could then cut off a working device.
        """
        check_name(name, "provisioning key")
        if expires_at is not None and expires_at.tzinfo is None:
            raise BadInput("expires_at needs a timezone (UTC offset)", "expires_at")
        if max_devices is not None and (isinstance(max_devices, bool) or max_devices < 1):
            raise BadInput(f"max_devices must be at least 1: {max_devices!r}", "max_devices")
        key = PROVISIONING_PREFIX + secrets.token_urlsafe(32)
        with self.registry._write() as s:
            _tenant_row(s, tenant_id)
            type_id = None if device_type is None else _type_row(s, tenant_id, device_type).id
            if asset_id is not None:
                _asset_row(s, tenant_id, asset_id)
            s.add(
                ProvisioningKey(
                    tenant_id=tenant_id,
                    name=name,
                    key_hash=hash_api_key(key),
                    device_type_id=type_id,
                    asset_id=asset_id,
                    gateway=gateway,
                    reprovision=reprovision,
                    expires_at=expires_at,
                    max_devices=max_devices,
                )
            )
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"provisioning key {name!r} exists already") from None
        return key

    def list_provisioning_keys(self, tenant_id: int) -> list[ProvisioningKeyInfo]:
        with self.registry._read() as s:
            q = select(ProvisioningKey).where(ProvisioningKey.tenant_id == tenant_id)
            return [_key_info(s, k) for k in s.scalars(q.order_by(ProvisioningKey.name))]

    def revoke_provisioning_key(self, tenant_id: int, name: str) -> None:
        """Devices can no longer register with it; those it registered keep their credentials."""
        with self.registry._write() as s:
            row = s.scalar(
                select(ProvisioningKey).where(
                    ProvisioningKey.tenant_id == tenant_id, ProvisioningKey.name == name
                )
            )
            if row is None:
                raise NotFound(f"provisioning key {name!r} not found")
            if row.revoked_at is None:
                row.revoked_at = self._clock()

    def provision(
        self,
        key: str,
        device: str,
        *,
        credential: Credential = "token",
        username: str | None = None,
        password: str | None = None,
    ) -> ProvisionResult:
        """Register ``device`` with a provisioning key and issue its credential, in one step.

        The device goes into the key's device type and asset. A device of that name that
        exists already is a Conflict unless the key allows re-provisioning. For a password
        credential the username defaults to ``<tenant>/<device>`` and a missing password is
        generated (and returned).
        """
        check_name(device, "device")
        if credential not in ("token", "password", "certificate"):
            raise BadInput(f"credential must be token|password|certificate: {credential!r}")
        if credential == "password":
            if username is not None:
                _check_username(username)
            if password is None:
                password = secrets.token_urlsafe(18)
            digest = self._hash_password(password)
        elif username is not None or password is not None:
            raise BadInput("username and password go with credential 'password' only")
        now = self._clock()
        result: dict[str, Any] = {}
        with self._change() as s:
            pk = self._usable_key(s, key, now)
            tenant = _tenant_row(s, pk.tenant_id)
            dev = s.scalar(
                select(Device).where(Device.tenant_id == tenant.id, Device.name == device)
            )
            created = dev is None
            if dev is None:
                dev = _create_device(s, pk, device)
            elif not pk.reprovision:
                raise Conflict(
                    f"device {device!r} exists already and provisioning key {pk.name!r}"
                    " does not allow re-provisioning"
                )
            else:
                _revoke_all(s, dev.id, now)
            pk.used += 1
            if pk.gateway:
                _profile(s, dev.id).is_gateway = True
            if credential == "token":
                result["token"], row = _add_token(s, dev)
            elif credential == "password":
                result["username"] = username = username or f"{tenant.name}/{device}"
                result["password"] = password
                row = _add_password(s, dev, username, digest)
            else:
                cert_pem, key_pem = self.ca.issue_device_certificate(f"{tenant.name}/{device}")
                row = _add_certificate(s, dev, cert_pem)
                result |= {"certificate_pem": cert_pem, "private_key_pem": key_pem}
            s.flush()
            identity = _identity(s, row)
        return ProvisionResult(identity, credential, created, **result)

    def provisioning_key_usable(self, key: str) -> bool:
        """Whether ``key`` would provision a device now (known, not revoked, expired or used up);
        the embedded broker lets such a login do nothing but ask for its credentials."""
        with self.registry._read() as s:
            try:
                self._usable_key(s, key, self._clock())
            except (Unauthorized, Forbidden):
                return False
        return True

    def _usable_key(self, s: Session, key: str, now: datetime) -> ProvisioningKey:
        pk = s.scalar(select(ProvisioningKey).where(ProvisioningKey.key_hash == hash_api_key(key)))
        if pk is None or pk.revoked_at is not None:
            raise Unauthorized("unknown or revoked provisioning key")
        if pk.expires_at is not None and pk.expires_at <= now:
            raise Unauthorized(f"provisioning key {pk.name!r} expired at {pk.expires_at:%c} UTC")
        if pk.max_devices is not None and pk.used >= pk.max_devices:
            raise Forbidden(f"provisioning key {pk.name!r} is used up ({pk.max_devices} devices)")
        return pk

    # -- device twin -------------------------------------------------------------------------

    def reported_attributes(self, tenant_id: int, device: str) -> dict[str, Any]:
        """The attributes the device reported about itself (firmware, serial number, ...)."""
        return self._attributes(tenant_id, device, "reported")

    def desired_attributes(self, tenant_id: int, device: str) -> dict[str, Any]:
        """The attributes the platform wants the device to take on (set points, intervals)."""
        return self._attributes(tenant_id, device, "desired")

    def set_reported_attributes(
        self, tenant_id: int, device: str, attrs: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge into the reported attributes (null removes one); returns them all."""
        return self._merge(tenant_id, device, "reported", attrs)

    def set_desired_attributes(
        self, tenant_id: int, device: str, attrs: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge into the desired attributes (null removes one); returns them all."""
        return self._merge(tenant_id, device, "desired", attrs)

    def _attributes(self, tenant_id: int, device: str, side: str) -> dict[str, Any]:
        with self.registry._read() as s:
            dev = _device_row(s, tenant_id, device)
            row = s.get(DeviceAttributes, dev.id)
            return {} if row is None else dict(json.loads(getattr(row, side)))

    def _merge(
        self, tenant_id: int, device: str, side: str, attrs: dict[str, Any]
    ) -> dict[str, Any]:
        _check_attributes(attrs)
        with self.registry._write() as s:
            dev = _device_row(s, tenant_id, device)
            row = s.get(DeviceAttributes, dev.id, with_for_update=True)
            if row is None:
                row = DeviceAttributes(device_id=dev.id, reported="{}", desired="{}")
                s.add(row)
            merged = dict(json.loads(getattr(row, side)))
            for name, value in attrs.items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value
            text = _dumps(merged)
            if len(text.encode()) > MAX_ATTRIBUTES_BYTES:
                raise PayloadTooLarge(
                    f"{side} attributes of {device!r} would take {len(text.encode())} bytes"
                    f" as JSON; at most {MAX_ATTRIBUTES_BYTES} are kept",
                    "attributes",
                )
            setattr(row, side, text)
            setattr(row, f"{side}_at", self._clock())
        return merged


# ---------------------------------------------------------------------------------------------
# Row helpers (inside a session)
# ---------------------------------------------------------------------------------------------


def _live() -> Any:
    return select(DeviceCredential).where(DeviceCredential.revoked_at.is_(None))


def _check_username(username: object) -> None:
    if not isinstance(username, str) or not 1 <= len(username) <= NAME_LEN:
        raise BadInput(f"username must be 1-{NAME_LEN} characters", "username")
    if _CONTROL_CHARS.search(username):
        raise BadInput("username must not contain control characters", "username")
    if username.startswith((TOKEN_PREFIX, PROVISIONING_PREFIX)):
        raise BadInput(
            f"username must not start with {TOKEN_PREFIX!r} or {PROVISIONING_PREFIX!r}", "username"
        )


def _check_sparkplug_id(value: object, what: str) -> None:
    # Sparkplug B 3.0: group and edge node ids are UTF-8 without '/', '+' or '#'.
    if not isinstance(value, str) or not 1 <= len(value) <= NAME_LEN:
        raise BadInput(f"{what} must be 1-{NAME_LEN} characters", what)
    if _SPARKPLUG_ID_BAD.search(value):
        raise BadInput(f"{what} must not contain '/', '+', '#' or control characters", what)
    if value == "STATE":  # spBv1.0/STATE/... is the host applications' namespace
        raise BadInput(f"{what} must not be 'STATE'", what)


def _add_token(s: Session, dev: Device) -> tuple[str, DeviceCredential]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = DeviceCredential(
        tenant_id=dev.tenant_id,
        device_id=dev.id,
        kind=CredentialKind.TOKEN,
        token_hash=hash_api_key(token),
    )
    s.add(row)
    s.flush()
    return token, row


def _add_password(s: Session, dev: Device, username: str, digest: str) -> DeviceCredential:
    row = DeviceCredential(
        tenant_id=dev.tenant_id,
        device_id=dev.id,
        kind=CredentialKind.PASSWORD,
        username=username,
        password_hash=digest,
    )
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(f"username {username!r} is taken by another device") from None
    return row


def _add_certificate(s: Session, dev: Device, cert_pem: bytes) -> DeviceCredential:
    cert = load_certificate(cert_pem)
    fp = fingerprint(cert.public_bytes(Encoding.DER))
    row = DeviceCredential(
        tenant_id=dev.tenant_id,
        device_id=dev.id,
        kind=CredentialKind.CERTIFICATE,
        fingerprint=fp,
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
    )
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(f"certificate {fp[:16]}... is registered already") from None
    return row


def _revoke_all(s: Session, device_id: int, now: datetime) -> int:
    res = s.execute(
        update(DeviceCredential)
        .where(DeviceCredential.device_id == device_id, DeviceCredential.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(res, "rowcount", 0) or 0)


def _profile(s: Session, device_id: int) -> DeviceAuthProfile:
    prof = s.get(DeviceAuthProfile, device_id)
    if prof is None:
        prof = DeviceAuthProfile(device_id=device_id, is_gateway=False)
        s.add(prof)
    return prof


def _owned(s: Session, gateway_id: int) -> set[str]:
    q = (
        select(Device.name)
        .join(GatewayDevice, GatewayDevice.device_id == Device.id)
        .where(GatewayDevice.gateway_id == gateway_id)
    )
    return set(s.scalars(q))


def _identity(s: Session, cred: DeviceCredential) -> DeviceIdentity:
    dev = s.get(Device, cred.device_id)
    tenant = s.get(Tenant, cred.tenant_id)
    assert dev is not None
    assert tenant is not None
    prof = s.get(DeviceAuthProfile, dev.id)
    gateway = prof is not None and prof.is_gateway
    owns = {dev.name} | (_owned(s, dev.id) if gateway else set())
    node = None
    if prof is not None and prof.sparkplug_group and prof.sparkplug_edge_node:
        node = (prof.sparkplug_group, prof.sparkplug_edge_node)
    return DeviceIdentity(
        tenant.id, tenant.name, dev.id, dev.name, gateway, frozenset(owns), node, cred.id
    )


def _group_tenant(s: Session, group_id: str) -> int | None:
    claimed = s.scalar(select(SparkplugGroup.tenant_id).where(SparkplugGroup.group_id == group_id))
    if claimed is not None:
        return claimed
    return s.scalar(select(Tenant.id).where(Tenant.name == group_id))


def _claim(s: Session, tenant_id: int, group_id: str) -> None:
    owner = _group_tenant(s, group_id)
    if owner == tenant_id:
        return
    if owner is not None:
        raise Conflict(f"Sparkplug group {group_id!r} belongs to another tenant")
    s.add(SparkplugGroup(group_id=group_id, tenant_id=tenant_id))


def _create_device(s: Session, pk: ProvisioningKey, name: str) -> Device:
    """As Registry.create_device, inside the provisioning transaction."""
    dev = Device(
        tenant_id=pk.tenant_id, name=name, device_type_id=pk.device_type_id, asset_id=pk.asset_id
    )
    s.add(dev)
    s.flush()
    if pk.device_type_id is not None:
        dtype = s.get(DeviceType, pk.device_type_id)
        assert dtype is not None  # foreign key
        s.add_all(_signal_row(pk.tenant_id, dev.id, spec) for spec in _effective_specs(s, dtype))
    return dev


def _check_attributes(attrs: object) -> None:
    if not isinstance(attrs, dict):
        raise BadInput("attributes must be a JSON object", "attributes")
    for name, value in attrs.items():
        if not isinstance(name, str) or not 1 <= len(name) <= NAME_LEN:
            raise BadInput(f"attribute names must be 1-{NAME_LEN} characters: {name!r}")
        try:
            _dumps(value)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"attribute {name!r} is not JSON: {exc}", "attributes") from None


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _cred_info(c: DeviceCredential, device: str) -> CredentialInfo:
    return CredentialInfo(
        c.id,
        device,
        CredentialKind(c.kind),
        c.username,
        c.fingerprint,
        c.subject,
        c.not_after,
        c.created_at,
        c.revoked_at,
    )


def _key_info(s: Session, k: ProvisioningKey) -> ProvisioningKeyInfo:
    type_name = None
    if k.device_type_id is not None:
        type_name = s.scalar(select(DeviceType.name).where(DeviceType.id == k.device_type_id))
    return ProvisioningKeyInfo(
        k.id,
        k.name,
        type_name,
        k.asset_id,
        k.gateway,
        k.reprovision,
        k.expires_at,
        k.max_devices,
        k.used,
        k.created_at,
        k.revoked_at,
    )
