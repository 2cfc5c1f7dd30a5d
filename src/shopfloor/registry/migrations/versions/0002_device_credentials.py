"""Device credentials, provisioning keys, gateways, Sparkplug groups and the device twin.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('token', 'password', 'certificate')"
LIVE = "revoked_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "device_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("username", sa.String(length=200), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(KINDS, name=op.f("ck_device_credentials_kind")),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_credentials_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_device_credentials_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_credentials")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_device_credentials_token_hash")),
    )
    op.create_index(op.f("ix_device_credentials_device_id"), "device_credentials", ["device_id"])
    # Uniqueness binds live credentials only; revoked rows stay for the audit trail.
    for column in ("username", "fingerprint"):
        op.create_index(
            f"uq_device_credentials_live_{column}",
            "device_credentials",
            [column],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )
    op.create_table(
        "device_auth_profiles",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("is_gateway", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("sparkplug_group", sa.String(length=200), nullable=True),
        sa.Column("sparkplug_edge_node", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_auth_profiles_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_auth_profiles")),
        sa.UniqueConstraint(
            "sparkplug_group",
            "sparkplug_edge_node",
            name=op.f("uq_device_auth_profiles_sparkplug_group_sparkplug_edge_node"),
        ),
    )
    op.create_table(
        "gateway_devices",
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_gateway_devices_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["devices.id"],
            name=op.f("fk_gateway_devices_gateway_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("gateway_id", "device_id", name=op.f("pk_gateway_devices")),
    )
    op.create_index(op.f("ix_gateway_devices_device_id"), "gateway_devices", ["device_id"])
    op.create_table(
        "sparkplug_groups",
        sa.Column("group_id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sparkplug_groups_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_sparkplug_groups")),
    )
    op.create_index(op.f("ix_sparkplug_groups_tenant_id"), "sparkplug_groups", ["tenant_id"])
    op.create_table(
        "provisioning_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("device_type_id", sa.Integer(), nullable=True),
        sa.Column("asset_id", sa.Integer(), nullable=True),
        sa.Column("gateway", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("reprovision", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_devices", sa.Integer(), nullable=True),
        sa.Column("used", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_provisioning_keys_asset_id_assets")
        ),
        sa.ForeignKeyConstraint(
            ["device_type_id"],
            ["device_types.id"],
            name=op.f("fk_provisioning_keys_device_type_id_device_types"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_provisioning_keys_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provisioning_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_provisioning_keys_key_hash")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_provisioning_keys_tenant_id_name")),
    )
    op.create_table(
        "device_attributes",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("reported", sa.Text(), server_default="{}", nullable=False),
        sa.Column("desired", sa.Text(), server_default="{}", nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("desired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_attributes_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_attributes")),
    )
    state = op.create_table(
        "device_auth_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_auth_state")),
    )
    # The one row the service bumps; seeded here so concurrent first writers never race on it.
    op.bulk_insert(state, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("device_auth_state")
    op.drop_table("device_attributes")
    op.drop_table("provisioning_keys")
    op.drop_table("sparkplug_groups")
    op.drop_table("gateway_devices")
    op.drop_table("device_auth_profiles")
    op.drop_table("device_credentials")
