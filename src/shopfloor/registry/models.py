"""ORM models of the registry. They never leave the service: callers get frozen dataclasses.

Every schema change needs a migration in ``migrations/versions``; ``tests/registry/
test_migrations.py`` fails when these models and the migrated schema drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shopfloor.core.kinds import Role
from shopfloor.core.types import Classification, DataType


class AssetLevel(StrEnum):
    """The ISA-95 equipment levels the registry models, top down."""

    ENTERPRISE = "enterprise"
    SITE = "site"
    AREA = "area"
    LINE = "line"
    MACHINE = "machine"


LEVELS: Final = tuple(AssetLevel)

NAME_LEN: Final = 200
UNIT_LEN: Final = 50
LABEL_LEN: Final = 32

# Explicit constraint names: PostgreSQL and Alembic need stable names to alter or drop them.
NAMING: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[StrEnum, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    # sha256 hex of the API key; the key itself is shown once and never stored.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    auto_register_signals: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true()
    )
    retention_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Data-residency region of the tenant's data unless a node says otherwise (0003).
    residency: Mapped[str | None] = mapped_column(String(LABEL_LEN))


class Asset(Base):
    __tablename__ = "assets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "parent_id", "name"),
        # NULLs are distinct in unique constraints, so top-level names need their own index.
        Index(
            "uq_assets_root_name",
            "tenant_id",
            "name",
            unique=True,
            sqlite_where=text("parent_id IS NULL"),
            postgresql_where=text("parent_id IS NULL"),
        ),
        CheckConstraint(_in("level", LEVELS), name="level"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    level: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"), index=True)
    # Labels (0003); None inherits from above (security/labels.py).
    classification: Mapped[str | None] = mapped_column(String(16))
    personal_data: Mapped[bool | None] = mapped_column(Boolean)
    residency: Mapped[str | None] = mapped_column(String(LABEL_LEN))


class DeviceType(Base):
    __tablename__ = "device_types"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    extends_id: Mapped[int | None] = mapped_column(ForeignKey("device_types.id"))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")


class DeviceTypeSignal(Base):
    __tablename__ = "device_type_signals"
    __table_args__ = (
        CheckConstraint(_in("data_type", tuple(DataType)), name="data_type"),
        CheckConstraint(_in("classification", tuple(Classification)), name="classification"),
    )

    type_id: Mapped[int] = mapped_column(ForeignKey("device_types.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    # Declaration order, so a device's signals list the way the type author wrote them.
    position: Mapped[int] = mapped_column(Integer)
    unit: Mapped[str] = mapped_column(String(UNIT_LEN), default="", server_default="")
    data_type: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    classification: Mapped[str] = mapped_column(
        String(16), default="general", server_default="general"
    )


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    device_type_id: Mapped[int | None] = mapped_column(ForeignKey("device_types.id"))
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    classification: Mapped[str | None] = mapped_column(String(16))
    personal_data: Mapped[bool | None] = mapped_column(Boolean)
    residency: Mapped[str | None] = mapped_column(String(LABEL_LEN))


class Signal(Base):
    __tablename__ = "signals"
    __table_args__ = (
        UniqueConstraint("device_id", "name"),
        CheckConstraint(_in("data_type", tuple(DataType)), name="data_type"),
        CheckConstraint(_in("classification", tuple(Classification)), name="classification"),
        # AUTOINCREMENT: SQLite would otherwise reuse the id of a deleted signal, and the
        # historian would show the old signal's data under the new one.
        {"sqlite_autoincrement": True},
    )

    # The historian stores this id as int32.
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    unit: Mapped[str] = mapped_column(String(UNIT_LEN), default="", server_default="")
    data_type: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    classification: Mapped[str] = mapped_column(
        String(16), default="general", server_default="general"
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    personal_data: Mapped[bool | None] = mapped_column(Boolean)
    residency: Mapped[str | None] = mapped_column(String(LABEL_LEN))


# ---------------------------------------------------------------------------------------------
# Device credentials, provisioning, gateways, Sparkplug binding and the device twin
# (migration 0002; the service is registry/credentials.py, the design docs/adr/0004).
# ---------------------------------------------------------------------------------------------


class CredentialKind(StrEnum):
    TOKEN = "token"
    PASSWORD = "password"
    CERTIFICATE = "certificate"


# A revoked row stays for the audit trail, so uniqueness only binds the live ones: a username
# or certificate can be given again after its credential was revoked.
_LIVE = "revoked_at IS NULL"


class DeviceCredential(Base):
    __tablename__ = "device_credentials"
    __table_args__ = (
        CheckConstraint(_in("kind", tuple(CredentialKind)), name="kind"),
        Index(
            "uq_device_credentials_live_username",
            "username",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
        Index(
            "uq_device_credentials_live_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    # CASCADE: Registry.delete_device removes the device row alone; its credentials go with it.
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # sha256 hex of an access token; the token itself is shown once and never stored.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    username: Mapped[str | None] = mapped_column(String(NAME_LEN))
    password_hash: Mapped[str | None] = mapped_column(Text)  # argon2id, with its parameters
    fingerprint: Mapped[str | None] = mapped_column(String(64))  # sha256 hex of the DER
    subject: Mapped[str | None] = mapped_column(Text)
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DeviceAuthProfile(Base):
    """What a device's credentials may act for beyond itself: gateway flag, Sparkplug node."""

    __tablename__ = "device_auth_profiles"
    __table_args__ = (UniqueConstraint("sparkplug_group", "sparkplug_edge_node"),)

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    is_gateway: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    sparkplug_group: Mapped[str | None] = mapped_column(String(NAME_LEN))
    sparkplug_edge_node: Mapped[str | None] = mapped_column(String(NAME_LEN))


class GatewayDevice(Base):
    """A device a gateway may act for (publish its telemetry, receive its commands)."""

    __tablename__ = "gateway_devices"

    gateway_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class SparkplugGroup(Base):
    """A Sparkplug group id claimed by a tenant (unclaimed: the group id is the tenant name)."""

    __tablename__ = "sparkplug_groups"

    group_id: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)


class ProvisioningKey(Base):
    __tablename__ = "provisioning_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    device_type_id: Mapped[int | None] = mapped_column(ForeignKey("device_types.id"))
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    gateway: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reprovision: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    max_devices: Mapped[int | None] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DeviceAttributes(Base):
    """The device twin: attributes the device reported and those the platform desires."""

    __tablename__ = "device_attributes"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    reported: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    desired: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    desired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DeviceAuthState(Base):
    """One row: the generation of device credentials, bumped by every change in any process."""

    __tablename__ = "device_auth_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# ---------------------------------------------------------------------------------------------
# Users, roles, tokens, sessions, access grants, audit log, egress approvals and tenant limits
# (migration 0003; the services are in security/, the design in docs/security.md).
# ---------------------------------------------------------------------------------------------

_PLATFORM = "tenant_id IS NULL"


class User(Base):
    """A person who logs in. ``tenant_id`` None: a platform-level user (platform admin)."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("tenant_id", "username"),
        Index(
            "uq_users_platform_username",
            "username",
            unique=True,
            sqlite_where=text(_PLATFORM),
            postgresql_where=text(_PLATFORM),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN))
    display_name: Mapped[str] = mapped_column(String(NAME_LEN), default="", server_default="")
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id, with its parameters
    # JSON list of earlier argon2 hashes, newest first, so a password cannot be reused.
    password_history: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    totp_secret: Mapped[str | None] = mapped_column(String(64))  # base32; None: not enrolled
    totp_confirmed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # no code is used twice
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RoleBinding(Base):
    """A role a user holds in a tenant (None: platform-wide), optionally below one asset."""

    __tablename__ = "role_bindings"
    __table_args__ = (CheckConstraint(_in("role", tuple(Role)), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiToken(Base):
    """A user's API token: scoped to permissions, expiring and revocable."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    scopes: Mapped[str | None] = mapped_column(Text)  # JSON list of permissions; None: all
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UserSession(Base):
    """A login: ends on logout, after the idle timeout or at its absolute expiry."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(NAME_LEN), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AccessGrant(Base):
    """A tenant's time-limited leave for a platform admin to read its data (audited)."""

    __tablename__ = "access_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    grantee_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    granted_by: Mapped[str] = mapped_column(String(NAME_LEN))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditRecord(Base):
    """One audit record; ``hash`` = sha256(prev_hash + canonical record) (security/audit.py).

    No foreign keys: records outlive the users, tenants and objects they name.
    """

    __tablename__ = "audit_records"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts_ns: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(NAME_LEN))
    role: Mapped[str] = mapped_column(String(NAME_LEN))
    tenant_id: Mapped[int | None] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(NAME_LEN))
    object: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(NAME_LEN))
    details: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditSettings(Base):
    """One row: audit settings a security admin changes (each change is itself audited)."""

    __tablename__ = "audit_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    retention_days: Mapped[int] = mapped_column(Integer, default=180, server_default="180")
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(NAME_LEN))


class EgressApproval(Base):
    """A security admin's approval for important or personal data to leave by one channel."""

    __tablename__ = "egress_approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))  # export, webhook, mqtt_bridge, ...
    destination: Mapped[str] = mapped_column(Text)
    destination_region: Mapped[str] = mapped_column(String(LABEL_LEN))
    subject: Mapped[str] = mapped_column(Text)  # JSON: what may leave (signal keys, assets)
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    requested_by: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    approved_by: Mapped[str | None] = mapped_column(String(NAME_LEN))
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class TenantLimits(Base):
    """A tenant's own rate limits and quotas; None takes the platform default (settings)."""

    __tablename__ = "tenant_limits"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    ingest_points_per_s: Mapped[float | None] = mapped_column()
    api_requests_per_s: Mapped[float | None] = mapped_column()
    stored_points_max: Mapped[int | None] = mapped_column(BigInteger)


# ---------------------------------------------------------------------------------------------
# Rules, alarm states and alarm history (migration 0004; the services are rules/store.py, the
# state machine rules/alarms.py, the design docs/rules.md and docs/alarms.md).
# ---------------------------------------------------------------------------------------------

RULE_KINDS: Final = ("threshold", "rate", "expression", "window", "stale", "state")
RULE_TARGETS: Final = ("device_type", "device")
ALARM_STATES: Final = (
    "normal",
    "unack_active",
    "ack_active",
    "unack_rtn",
    "shelved",
    "suppressed_by_design",
    "out_of_service",
)


def _in_text(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Rule(Base):
    """A rule of a tenant: its kind, definition (JSON of the rules.model fields) and target."""

    __tablename__ = "rules"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint(_in_text("kind", RULE_KINDS), name="kind"),
        CheckConstraint(_in_text("target_kind", RULE_TARGETS), name="target_kind"),
        CheckConstraint("priority BETWEEN 1 AND 4", name="priority"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    kind: Mapped[str] = mapped_column(String(16))
    definition: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(NAME_LEN))  # device type name or device name
    priority: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # JSON list of {"kind", "config", "on"} (rules/rule_actions.py), checked when saved.
    actions: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")


class AlarmState(Base):
    """The current alarm of one rule on one device (rules.alarms.Alarm, stored)."""

    __tablename__ = "alarm_states"
    __table_args__ = (
        UniqueConstraint("rule_id", "device_id"),
        CheckConstraint(_in_text("state", ALARM_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # CASCADE: deleting the rule or the device removes its alarms; history stays.
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    value: Mapped[float | None] = mapped_column()
    last_change_ts: Mapped[int | None] = mapped_column(BigInteger)
    shelved_until: Mapped[int | None] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer)
    area: Mapped[str] = mapped_column(String(NAME_LEN))
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    activations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    annunciations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    acknowledgements: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    hidden_activations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AlarmEvent(Base):
    """One alarm history entry (rules.alarms.AlarmEvent). Names are copied in, no foreign
    keys: the history outlives the rule and the device it tells of."""

    __tablename__ = "alarm_events"
    __table_args__ = (
        Index("ix_alarm_events_tenant_ts", "tenant_id", "ts"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer)
    rule_id: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(NAME_LEN))
    device: Mapped[str] = mapped_column(String(NAME_LEN))
    ts: Mapped[int] = mapped_column(BigInteger)
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    cause: Mapped[str] = mapped_column(String(32))
    user: Mapped[str | None] = mapped_column(String(NAME_LEN))
    comment: Mapped[str | None] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column()
    area: Mapped[str] = mapped_column(String(NAME_LEN))
    priority: Mapped[int] = mapped_column(Integer)


# ---------------------------------------------------------------------------------------------
# The app catalogue per tenant (migration 0005; the service is apps/catalogue.py).
# ---------------------------------------------------------------------------------------------


class TenantApp(Base):
    """An app a tenant enabled (or disabled again), with its tenant-specific config (JSON)."""

    __tablename__ = "tenant_apps"
    __table_args__ = (UniqueConstraint("tenant_id", "app"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    app: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    config: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(NAME_LEN))


# ---------------------------------------------------------------------------------------------
# Console dashboards (migration 0006; the routes are api/dashboard_routes.py).
# ---------------------------------------------------------------------------------------------

DASHBOARD_SCOPES: Final = ("user", "tenant")


class Dashboard(Base):
    """A dashboard of the console: a grid of widgets (JSON), private to its owner (scope
    "user") or read by every user of the tenant (scope "tenant")."""

    __tablename__ = "dashboards"
    __table_args__ = (
        CheckConstraint(_in_text("scope", DASHBOARD_SCOPES), name="scope"),
        Index("ix_dashboards_tenant_owner", "tenant_id", "owner"),
        {"sqlite_autoincrement": True},  # a deleted dashboard's id is never given again
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    # Who owns a user dashboard: "user:<id>", or the kind of a credential without a user.
    owner: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    widgets: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    created_by: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(NAME_LEN))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# Tables defined beside the registry (they import Base from here): in Base.metadata for Alembic.
from shopfloor.registry import gateway_config as _gateway_config  # noqa: E402, F401
