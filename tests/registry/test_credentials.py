"""Device credentials, provisioning, gateways, Sparkplug binding, twin and topic rules."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shopfloor.core.errors import BadInput, Conflict, Forbidden, NotFound, Unauthorized
from shopfloor.registry import Registry, SignalSpec, TenantInfo
from shopfloor.registry.credentials import (
    MAX_ATTRIBUTES_BYTES,
    DeviceCredentials,
    DeviceIdentity,
    topic_allowed,
)
from shopfloor.registry.device_ca import DeviceCA, fingerprint
from shopfloor.registry.models import CredentialKind

# Real argon2id, with small parameters so each hash takes milliseconds, not 0.2 s.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def creds(registry: Registry, tmp_path: Path, clock: Clock) -> DeviceCredentials:
    return DeviceCredentials(
        registry, tmp_path / "device-ca", clock=clock, password_hasher=FAST_HASHER
    )


@pytest.fixture
def other(registry: Registry) -> TenantInfo:
    return registry.create_tenant("beta")[0]


@pytest.fixture
def press(registry: Registry, tenant: TenantInfo) -> str:
    registry.create_device(tenant.id, "press-1")
    return "press-1"


def _der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


# -- tokens, passwords, revocation ---------------------------------------------------------------


def test_token_authenticates_to_its_device(
    creds: DeviceCredentials, tenant: TenantInfo, press: str
) -> None:
    token = creds.issue_token(tenant.id, press)
    ident = creds.authenticate(token, None)
    assert ident is not None
    assert (ident.tenant, ident.device, ident.owns, ident.is_gateway) == (
        "acme",
        press,
        frozenset({press}),
        False,
    )
    assert ident.sparkplug is None
    assert creds.authenticate(token, "") == ident
    assert creds.authenticate(token + "x", None) is None
    assert creds.authenticate(None, None) is None
    # A token is not a username: with a password it is looked up as a username and fails.
    assert creds.authenticate(token, "something") is None


def test_token_is_stored_as_sha256_only(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, press: str
) -> None:
    token = creds.issue_token(tenant.id, press)
    with registry.engine.connect() as conn:
        dump = "\n".join(str(r) for r in conn.exec_driver_sql("SELECT * FROM device_credentials"))
    assert token not in dump
    assert len(creds.list_credentials(tenant.id, press)) == 1


def test_password_right_wrong_and_unknown(
    creds: DeviceCredentials, tenant: TenantInfo, press: str
) -> None:
    creds.set_password(tenant.id, press, "press-1-user", "correct horse")
    ident = creds.authenticate("press-1-user", "correct horse")
    assert ident is not None
    assert ident.device == press
    assert creds.authenticate("press-1-user", "wrong horse") is None
    assert creds.authenticate("nobody", "correct horse") is None
    # The same username again changes the password; the old one stops working.
    creds.set_password(tenant.id, press, "press-1-user", "battery staple")
    assert creds.authenticate("press-1-user", "correct horse") is None
    assert creds.authenticate("press-1-user", "battery staple") is not None
    assert len(creds.list_credentials(tenant.id, press)) == 1


def test_default_argon2_parameters_work(
    registry: Registry, tenant: TenantInfo, press: str, tmp_path: Path
) -> None:
    creds = DeviceCredentials(registry, tmp_path / "ca")
    creds.set_password(tenant.id, press, "u1", "a long password")
    assert creds.authenticate("u1", "a long password") is not None
    assert creds.authenticate("u1", "a long passwore") is None
    assert creds.authenticate("u2", "a long password") is None


def test_usernames_are_unique_platform_wide(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, other: TenantInfo, press: str
) -> None:
    registry.create_device(other.id, "press-1")
    creds.set_password(tenant.id, press, "shared-name", "password-1")
    with pytest.raises(Conflict, match="shared-name"):
        creds.set_password(other.id, "press-1", "shared-name", "password-2")
    # Once revoked, the name is free again.
    creds.revoke_device(tenant.id, press)
    creds.set_password(other.id, "press-1", "shared-name", "password-2")
    ident = creds.authenticate("shared-name", "password-2")
    assert ident is not None
    assert ident.tenant == "beta"


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("", "password-1", "username"),
        ("u", "short", "password"),
        ("sfd_x", "password-1", "username"),
    ],
)
def test_bad_username_or_password(
    creds: DeviceCredentials,
    tenant: TenantInfo,
    press: str,
    username: str,
    password: str,
    field: str,
) -> None:
    with pytest.raises(BadInput) as err:
        creds.set_password(tenant.id, press, username, password)
    assert err.value.field == field


def test_revoke_shows_in_generation_and_is_valid(
    creds: DeviceCredentials, tenant: TenantInfo, press: str
) -> None:
    token = creds.issue_token(tenant.id, press)
    ident = creds.authenticate(token, None)
    assert ident is not None
    assert creds.is_valid(ident)
    before = creds.generation
    creds.revoke(tenant.id, ident.credential_id)
    assert creds.generation > before
    assert not creds.is_valid(ident)
    assert creds.authenticate(token, None) is None
    (info,) = creds.list_credentials(tenant.id, press)
    assert info.revoked
    assert info.kind is CredentialKind.TOKEN


def test_revoke_device_revokes_every_credential(
    creds: DeviceCredentials, tenant: TenantInfo, press: str
) -> None:
    t1, t2 = creds.issue_token(tenant.id, press), creds.issue_token(tenant.id, press)
    creds.set_password(tenant.id, press, "user", "password-1")
    idents = [creds.authenticate(t1, None), creds.authenticate(t2, None)]
    assert creds.revoke_device(tenant.id, press) == 3
    assert creds.revoke_device(tenant.id, press) == 0
    assert all(i is not None and not creds.is_valid(i) for i in idents)
    assert creds.authenticate("user", "password-1") is None


def test_revocation_in_another_process_reaches_this_one(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, press: str, tmp_path: Path
) -> None:
    token = creds.issue_token(tenant.id, press)
    ident = creds.authenticate(token, None)
    assert ident is not None
    assert creds.is_valid(ident)
    # A second service on its own engine stands for the CLI revoking while the broker runs.
    other_registry = Registry(registry.url)
    try:
        DeviceCredentials(other_registry, tmp_path / "device-ca").revoke(
            tenant.id, ident.credential_id
        )
    finally:
        other_registry.close()
    creds._next_poll = 0.0  # what GENERATION_POLL_S seconds of waiting would do
    assert not creds.is_valid(ident)


def test_is_valid_false_when_ownership_changed(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, press: str
) -> None:
    registry.create_device(tenant.id, "gw")
    ident = creds.authenticate(creds.issue_token(tenant.id, "gw"), None)
    assert ident is not None
    creds.set_gateway(tenant.id, "gw", [press])
    assert not creds.is_valid(ident)
    now = creds.current_identity(ident.credential_id)
    assert now is not None
    assert now.owns == {"gw", press}
    assert creds.is_valid(now)


def test_deleting_a_device_removes_its_credentials(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, press: str
) -> None:
    token = creds.issue_token(tenant.id, press)
    ident = creds.authenticate(token, None)
    assert ident is not None
    creds.set_desired_attributes(tenant.id, press, {"interval": 5})
    registry.delete_device(tenant.id, press)
    assert not creds.is_valid(ident)
    assert creds.authenticate(token, None) is None


def test_cross_tenant_calls_find_nothing(
    creds: DeviceCredentials, tenant: TenantInfo, other: TenantInfo, press: str
) -> None:
    token = creds.issue_token(tenant.id, press)
    ident = creds.authenticate(token, None)
    assert ident is not None
    with pytest.raises(NotFound):
        creds.issue_token(other.id, press)
    with pytest.raises(NotFound):
        creds.list_credentials(other.id, press)
    with pytest.raises(NotFound):
        creds.revoke(other.id, ident.credential_id)
    with pytest.raises(NotFound):
        creds.revoke_device(other.id, press)
    with pytest.raises(NotFound):
        creds.set_desired_attributes(other.id, press, {"a": 1})
    assert creds.is_valid(ident)


# -- certificates --------------------------------------------------------------------------------


def test_issue_and_authenticate_certificate_then_revoke(
    creds: DeviceCredentials, tenant: TenantInfo, press: str
) -> None:
    cert_pem, key_pem = creds.issue_certificate(tenant.id, press)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "acme/press-1"
    cert.verify_directly_issued_by(creds.ca.certificate)
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    ident = creds.authenticate_certificate(_der(cert_pem))
    assert ident is not None
    assert ident.device == press
    (info,) = creds.list_credentials(tenant.id, press)
    assert info.fingerprint == fingerprint(_der(cert_pem))
    creds.revoke(tenant.id, info.id)
    assert creds.authenticate_certificate(_der(cert_pem)) is None
    assert not creds.is_valid(ident)


def test_register_foreign_certificate(
    creds: DeviceCredentials, tenant: TenantInfo, press: str, tmp_path: Path, clock: Clock
) -> None:
    cert_pem, _ = DeviceCA(tmp_path / "elsewhere").issue_device_certificate("my-device")
    fp = creds.register_certificate(tenant.id, press, cert_pem)
    assert fp == fingerprint(_der(cert_pem))
    ident = creds.authenticate_certificate(_der(cert_pem))
    assert ident is not None
    assert ident.device == press
    with pytest.raises(Conflict, match="registered already"):
        creds.register_certificate(tenant.id, press, cert_pem)
    with pytest.raises(BadInput, match=r"not an X\.509 certificate"):
        creds.register_certificate(tenant.id, press, b"-----BEGIN CERTIFICATE-----\nnope\n")
    clock.now += timedelta(days=900)  # past the certificate's 825 days
    assert creds.authenticate_certificate(_der(cert_pem)) is None
    with pytest.raises(BadInput, match="expired"):
        creds.register_certificate(
            tenant.id, press, DeviceCA(tmp_path / "e2").issue_device_certificate("x")[0]
        )


def test_device_ca_files_and_server_certificate(tmp_path: Path) -> None:
    ca = DeviceCA(tmp_path / "ca")
    path = ca.ca_cert_path
    assert path.exists()
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    cert_pem, _ = ca.server_certificate(["broker.local", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.local"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # A second instance loads the same CA instead of making a new one.
    again = DeviceCA(tmp_path / "ca")
    assert again.certificate == ca.certificate
    assert again.signed_by_me(cert)
    foreign = DeviceCA(tmp_path / "other").issue_device_certificate("x")[0]
    assert not ca.signed_by_me(x509.load_pem_x509_certificate(foreign))


def test_certificate_common_name_too_long(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo
) -> None:
    registry.create_device(tenant.id, "d" * 70)
    with pytest.raises(BadInput, match="common name"):
        creds.issue_certificate(tenant.id, "d" * 70)


# -- gateways and Sparkplug ----------------------------------------------------------------------


def test_gateway_owns_its_devices(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, other: TenantInfo, press: str
) -> None:
    registry.create_device(tenant.id, "gw")
    registry.create_device(tenant.id, "press-2")
    registry.create_device(other.id, "foreign")
    creds.set_gateway(tenant.id, "gw", [press, "press-2"])
    ident = creds.authenticate(creds.issue_token(tenant.id, "gw"), None)
    assert ident is not None
    assert ident.is_gateway
    assert ident.owns == {"gw", press, "press-2"}
    assert creds.gateway_devices(tenant.id, "gw") == [press, "press-2"]
    assert creds.gateway_devices(tenant.id, press) is None
    with pytest.raises(NotFound, match="foreign"):
        creds.set_gateway(tenant.id, "gw", ["foreign"])
    creds.set_gateway(tenant.id, "gw", ["press-2"])
    assert creds.gateway_devices(tenant.id, "gw") == ["press-2"]


def test_sparkplug_groups_belong_to_one_tenant(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, other: TenantInfo
) -> None:
    assert creds.tenant_of_group("acme") == tenant.id  # the default: the tenant's name
    assert creds.tenant_of_group("plant-7") is None
    creds.claim_sparkplug_group(tenant.id, "plant-7")
    assert creds.tenant_of_group("plant-7") == tenant.id
    creds.claim_sparkplug_group(tenant.id, "plant-7")  # again: no-op
    with pytest.raises(Conflict):
        creds.claim_sparkplug_group(other.id, "plant-7")
    with pytest.raises(Conflict):
        creds.claim_sparkplug_group(other.id, "acme")
    with pytest.raises(BadInput):
        creds.claim_sparkplug_group(tenant.id, "a/b")
    with pytest.raises(BadInput):
        creds.claim_sparkplug_group(tenant.id, "STATE")


def test_sparkplug_node_binding(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, other: TenantInfo
) -> None:
    registry.create_device(tenant.id, "area-1")
    registry.create_device(tenant.id, "area-2")
    registry.create_device(other.id, "area-1")
    creds.set_sparkplug_node(tenant.id, "area-1", "acme", "area-1")
    ident = creds.authenticate(creds.issue_token(tenant.id, "area-1"), None)
    assert ident is not None
    assert ident.sparkplug == ("acme", "area-1")
    with pytest.raises(Conflict, match="bound to another device"):
        creds.set_sparkplug_node(tenant.id, "area-2", "acme", "area-1")
    with pytest.raises(Conflict, match="another tenant"):
        creds.set_sparkplug_node(other.id, "area-1", "acme", "area-1")
    # An unclaimed group is claimed on binding.
    creds.set_sparkplug_node(other.id, "area-1", "beta-site-2", "area-1")
    assert creds.tenant_of_group("beta-site-2") == other.id


# -- provisioning --------------------------------------------------------------------------------


def test_provision_with_token_into_type_and_asset(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo
) -> None:
    registry.create_device_type(tenant.id, "press", [SignalSpec("temp"), SignalSpec("rpm")])
    site = registry.create_asset(tenant.id, "enterprise", "acme-corp")
    key = creds.create_provisioning_key(
        tenant.id, "line-1", device_type="press", asset_id=site.id, max_devices=2
    )
    result = creds.provision(key, "press-9")
    assert result.created
    assert result.token is not None
    assert creds.authenticate(result.token, None) == result.identity
    dev = registry.get_device(tenant.id, "press-9")
    assert (dev.device_type, dev.asset_id) == ("press", site.id)
    assert [s.name for s in registry.list_signals(tenant.id, "press-9")] == ["temp", "rpm"]
    (info,) = creds.list_provisioning_keys(tenant.id)
    assert (info.name, info.used, info.max_devices) == ("line-1", 1, 2)


def test_provision_password_and_certificate(creds: DeviceCredentials, tenant: TenantInfo) -> None:
    key = creds.create_provisioning_key(tenant.id, "k", gateway=True)
    pw = creds.provision(key, "gw-1", credential="password")
    assert pw.username == "acme/gw-1"
    assert pw.password is not None
    assert pw.identity.is_gateway
    assert creds.authenticate(pw.username, pw.password) == pw.identity
    own = creds.provision(key, "gw-2", credential="password", username="u-2", password="pass-word")
    assert creds.authenticate("u-2", "pass-word") == own.identity
    cert = creds.provision(key, "gw-3", credential="certificate")
    assert cert.certificate_pem is not None
    assert cert.private_key_pem is not None
    assert creds.authenticate_certificate(_der(cert.certificate_pem)) == cert.identity
    with pytest.raises(BadInput):
        creds.provision(key, "gw-4", credential="token", password="x")


def test_provision_errors(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, clock: Clock, press: str
) -> None:
    with pytest.raises(Unauthorized, match="unknown"):
        creds.provision("sfp_not-a-key", "x")
    once = creds.create_provisioning_key(tenant.id, "once", max_devices=1)
    creds.provision(once, "d1")
    with pytest.raises(Forbidden, match="used up"):
        creds.provision(once, "d2")
    soon = creds.create_provisioning_key(
        tenant.id, "soon", expires_at=clock.now + timedelta(hours=1)
    )
    clock.now += timedelta(hours=2)
    with pytest.raises(Unauthorized, match="expired"):
        creds.provision(soon, "d3")
    open_key = creds.create_provisioning_key(tenant.id, "open")
    with pytest.raises(Conflict, match="does not allow re-provisioning"):
        creds.provision(open_key, press)
    creds.revoke_provisioning_key(tenant.id, "open")
    with pytest.raises(Unauthorized, match="revoked"):
        creds.provision(open_key, "d4")
    # Nothing of the refused attempts was registered.
    assert {d.name for d in registry.list_devices(tenant.id)} == {press, "d1"}
    with pytest.raises(Conflict):
        creds.create_provisioning_key(tenant.id, "once")
    with pytest.raises(BadInput):
        creds.create_provisioning_key(tenant.id, "naive", expires_at=datetime(2030, 1, 1))
    with pytest.raises(BadInput):
        creds.create_provisioning_key(tenant.id, "zero", max_devices=0)
    with pytest.raises(NotFound):
        creds.create_provisioning_key(tenant.id, "t", device_type="missing")


def test_reprovision_replaces_the_credentials(creds: DeviceCredentials, tenant: TenantInfo) -> None:
    key = creds.create_provisioning_key(tenant.id, "replace", reprovision=True)
    first = creds.provision(key, "press-5")
    second = creds.provision(key, "press-5")
    assert not second.created
    assert not creds.is_valid(first.identity)
    assert first.token is not None
    assert creds.authenticate(first.token, None) is None
    assert second.token is not None
    assert creds.authenticate(second.token, None) == second.identity


def test_provisioning_key_of_one_tenant_cannot_touch_another(
    creds: DeviceCredentials, registry: Registry, tenant: TenantInfo, other: TenantInfo
) -> None:
    registry.create_device(other.id, "their-press")
    their_token = creds.issue_token(other.id, "their-press")
    key = creds.create_provisioning_key(tenant.id, "k", reprovision=True)
    result = creds.provision(key, "their-press")
    # A new device of the key's own tenant; beta's device and its token are untouched.
    assert result.created
    assert result.identity.tenant == "acme"
    ident = creds.authenticate(their_token, None)
    assert ident is not None
    assert ident.tenant == "beta"
    with pytest.raises(NotFound):
        creds.revoke_provisioning_key(other.id, "k")
    with pytest.raises(NotFound):
        creds.create_provisioning_key(
            other.id, "k2", asset_id=registry.create_asset(tenant.id, "enterprise", "acme-corp").id
        )


# -- device twin ---------------------------------------------------------------------------------


def test_attributes_merge_and_delete(
    creds: DeviceCredentials, tenant: TenantInfo, press: str
) -> None:
    assert creds.reported_attributes(tenant.id, press) == {}
    assert creds.set_reported_attributes(tenant.id, press, {"fw": "1.2", "serial": "A1"}) == {
        "fw": "1.2",
        "serial": "A1",
    }
    assert creds.set_reported_attributes(tenant.id, press, {"fw": "1.3", "serial": None}) == {
        "fw": "1.3"
    }
    creds.set_desired_attributes(tenant.id, press, {"interval_s": 5, "limits": {"max": 80}})
    assert creds.desired_attributes(tenant.id, press) == {"interval_s": 5, "limits": {"max": 80}}
    assert creds.reported_attributes(tenant.id, press) == {"fw": "1.3"}


@pytest.mark.parametrize("attrs", [{"t": float("nan")}, {"t": {1, 2}}, {"": 1}, {"t": b"bytes"}])
def test_attributes_must_be_json(
    creds: DeviceCredentials, tenant: TenantInfo, press: str, attrs: dict[str, object]
) -> None:
    with pytest.raises(BadInput):
        creds.set_reported_attributes(tenant.id, press, attrs)
    assert creds.reported_attributes(tenant.id, press) == {}


def test_attributes_size_limit(creds: DeviceCredentials, tenant: TenantInfo, press: str) -> None:
    big = "x" * (MAX_ATTRIBUTES_BYTES // 2)
    creds.set_desired_attributes(tenant.id, press, {"a": big})
    with pytest.raises(BadInput, match=f"at most {MAX_ATTRIBUTES_BYTES}") as err:
        creds.set_desired_attributes(tenant.id, press, {"b": big, "c": big})
    assert err.value.status_code == 413
    assert creds.desired_attributes(tenant.id, press) == {"a": big}


# -- topic rules ---------------------------------------------------------------------------------

DEVICE = DeviceIdentity(1, "acme", 10, "press-1", False, frozenset({"press-1"}), None, 100)
GATEWAY = DeviceIdentity(
    1, "acme", 11, "gw", True, frozenset({"gw", "press-1", "press-2"}), None, 101
)
NODE = DeviceIdentity(
    1, "acme", 12, "area-1", False, frozenset({"area-1"}), ("acme", "area-1"), 102
)

ALLOWED: list[tuple[DeviceIdentity, str, str]] = [
    (DEVICE, "sf/v1/acme/press-1/telemetry", "publish"),
    (DEVICE, "sf/v1/acme/press-1/attributes", "publish"),
    (DEVICE, "sf/v1/acme/press-1/commands/42/response", "publish"),
    (DEVICE, "sf/v1/acme/press-1/attributes/desired", "subscribe"),
    (DEVICE, "sf/v1/acme/press-1/commands/+", "subscribe"),
    (DEVICE, "sf/v1/acme/press-1/commands/#", "subscribe"),
    (DEVICE, "sf/v1/acme/press-1/commands/42", "subscribe"),
    (GATEWAY, "sf/v1/acme/press-2/telemetry", "publish"),
    (GATEWAY, "sf/v1/acme/press-1/commands/+", "subscribe"),
    (GATEWAY, "sf/v1/acme/gw/attributes", "publish"),
    (NODE, "spBv1.0/acme/NBIRTH/area-1", "publish"),
    (NODE, "spBv1.0/acme/NDEATH/area-1", "publish"),
    (NODE, "spBv1.0/acme/NDATA/area-1", "publish"),
    (NODE, "spBv1.0/acme/DBIRTH/area-1/press-1", "publish"),
    (NODE, "spBv1.0/acme/DDATA/area-1/press-1", "publish"),
    (NODE, "spBv1.0/acme/DDEATH/area-1/press-1", "publish"),
    (NODE, "spBv1.0/acme/NCMD/area-1", "subscribe"),
    (NODE, "spBv1.0/acme/NCMD/area-1/#", "subscribe"),
    (NODE, "spBv1.0/acme/DCMD/area-1/+", "subscribe"),
    (NODE, "spBv1.0/acme/DCMD/area-1/#", "subscribe"),
    (NODE, "spBv1.0/acme/DCMD/area-1/press-1", "subscribe"),
    (NODE, "spBv1.0/STATE/#", "subscribe"),
    (NODE, "spBv1.0/STATE/shopfloor", "subscribe"),
    (DEVICE, "spBv1.0/STATE/+", "subscribe"),
    # the tenant's alarm feed (MQTT alarm actions), read only
    (DEVICE, "alarms/acme/#", "subscribe"),
    (NODE, "alarms/acme/line-1/andon", "subscribe"),
]

DENIED: list[tuple[DeviceIdentity, str, str]] = [
    # another device, another tenant
    (DEVICE, "sf/v1/acme/press-2/telemetry", "publish"),
    (DEVICE, "sf/v1/beta/press-1/telemetry", "publish"),
    (DEVICE, "sf/v1/acme/press-2/commands/+", "subscribe"),
    (GATEWAY, "sf/v1/acme/press-3/telemetry", "publish"),
    (GATEWAY, "sf/v1/beta/press-1/telemetry", "publish"),
    # wrong direction
    (DEVICE, "sf/v1/acme/press-1/telemetry", "subscribe"),
    (DEVICE, "sf/v1/acme/press-1/attributes/desired", "publish"),
    (DEVICE, "sf/v1/acme/press-1/commands/42", "publish"),
    (DEVICE, "sf/v1/acme/press-1/commands/42/response", "subscribe"),
    # wildcards reaching beyond the device
    (DEVICE, "sf/v1/#", "subscribe"),
    (DEVICE, "#", "subscribe"),
    (DEVICE, "sf/v1/acme/#", "subscribe"),
    (DEVICE, "sf/v1/acme/+/commands/#", "subscribe"),
    (DEVICE, "sf/v1/+/press-1/commands/#", "subscribe"),
    (DEVICE, "sf/v1/acme/press-1/#", "subscribe"),
    (DEVICE, "sf/v1/acme/press-1/+/desired", "subscribe"),
    (DEVICE, "sf/v1/acme/press-1/commands/+/response", "publish"),
    (DEVICE, "sf/v1/acme/press-1/commands/4#", "subscribe"),
    (DEVICE, "$share/g/sf/v1/acme/press-1/commands/+", "subscribe"),
    # another tenant's alarm feed; publishing into one's own
    (DEVICE, "alarms/beta/#", "subscribe"),
    (DEVICE, "alarms/+/andon", "subscribe"),
    (DEVICE, "alarms/#", "subscribe"),
    (DEVICE, "alarms/acme/andon", "publish"),
    # malformed and unknown
    (DEVICE, "", "publish"),
    (DEVICE, "sf/v1/acme/press-1/telemetry/extra", "publish"),
    (DEVICE, "sf/v1/acme/press-1/", "publish"),
    (DEVICE, "sf/v2/acme/press-1/telemetry", "publish"),
    (DEVICE, "other/topic", "publish"),
    (DEVICE, "sf/v1/acme/press-1/telemetry", "delete"),
    # Sparkplug: not a node, another node, another group, the host's STATE
    (DEVICE, "spBv1.0/acme/NBIRTH/press-1", "publish"),
    (NODE, "spBv1.0/acme/NBIRTH/area-2", "publish"),
    (NODE, "spBv1.0/beta/NBIRTH/area-1", "publish"),
    (NODE, "spBv1.0/acme/DDATA/area-2/press-1", "publish"),
    (NODE, "spBv1.0/acme/NCMD/area-2", "subscribe"),
    (NODE, "spBv1.0/acme/NCMD/+", "subscribe"),
    (NODE, "spBv1.0/acme/DCMD/+/press-1", "subscribe"),
    (NODE, "spBv1.0/acme/#", "subscribe"),
    (NODE, "spBv1.0/#", "subscribe"),
    (NODE, "spBv1.0/+/NCMD/area-1", "subscribe"),
    (NODE, "spBv1.0/STATE/shopfloor", "publish"),
    (NODE, "spBv1.0/acme/NCMD/area-1", "publish"),
    (NODE, "spBv1.0/acme/NDATA/area-1", "subscribe"),
    (NODE, "spBv1.0/acme/NDATA/area-1/extra", "publish"),
    (NODE, "spBv1.0/acme/DDATA/area-1", "publish"),
    (NODE, "spBv1.0/acme/DDATA/area-1/+", "publish"),
    (NODE, "spBv1.0/acme/NCMD/area-1/+", "subscribe"),
]


@pytest.mark.parametrize(("identity", "topic", "action"), ALLOWED)
def test_topic_allowed(identity: DeviceIdentity, topic: str, action: str) -> None:
    assert topic_allowed(identity, topic, action)  # type: ignore[arg-type]


@pytest.mark.parametrize(("identity", "topic", "action"), DENIED)
def test_topic_denied(identity: DeviceIdentity, topic: str, action: str) -> None:
    assert not topic_allowed(identity, topic, action)  # type: ignore[arg-type]


def test_wildcard_named_device_cannot_widen_a_filter() -> None:
    def odd(name: str) -> DeviceIdentity:
        return replace(DEVICE, owns=frozenset({name}))

    assert not topic_allowed(odd("+"), "sf/v1/acme/+/commands/#", "subscribe")
    assert not topic_allowed(odd("#"), "sf/v1/acme/#", "subscribe")


def test_ec_keys_are_p256(creds: DeviceCredentials, tenant: TenantInfo, press: str) -> None:
    _, key_pem = creds.issue_certificate(tenant.id, press)
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


# -- the `shopfloor device` CLI ------------------------------------------------------------------


def test_cli_token_cert_list_revoke(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shopfloor.cli.main import app

    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}")  # the data folder's registry
    reg.upgrade()
    tenant = reg.create_tenant("acme")[0]
    reg.create_device(tenant.id, "press-1")
    run = CliRunner().invoke
    common = ["--tenant", "acme", "-d", str(tmp_path)]
    try:
        r = run(app, ["device", "token", "press-1", *common])
        assert r.exit_code == 0, r.output
        token = r.stdout.strip().splitlines()[-1]
        creds = DeviceCredentials(reg, tmp_path / "device-ca", password_hasher=FAST_HASHER)
        ident = creds.authenticate(token, None)
        assert ident is not None
        r = run(app, ["device", "cert", "press-1", *common, "--out", str(tmp_path / "out")])
        assert r.exit_code == 0, r.output
        key_file = tmp_path / "out" / "press-1.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        cert_pem = (tmp_path / "out" / "press-1.crt").read_bytes()
        assert creds.authenticate_certificate(_der(cert_pem)) is not None
        r = run(app, ["device", "list-credentials", "press-1", *common])
        assert [line.split("\t")[1] for line in r.stdout.splitlines()] == ["token", "certificate"]
        assert token not in r.stdout
        r = run(app, ["device", "revoke", "press-1", *common, "--id", str(ident.credential_id)])
        assert r.exit_code == 0, r.output
        creds._next_poll = 0.0
        assert not creds.is_valid(ident)
        r = run(app, ["device", "provisioning-key", "k", *common, "--max-devices", "1"])
        assert r.exit_code == 0, r.output
        assert creds.provision(r.stdout.strip().splitlines()[-1], "new-1").created
        r = run(app, ["device", "token", "press-1", "--tenant", "nobody", "-d", str(tmp_path)])
        assert r.exit_code == 2
        assert "no tenant 'nobody'" in r.output
    finally:
        reg.close()
