"""Initial registry schema: tenants, assets, device types, devices, signals.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATA_TYPES = "data_type IN ('float', 'int', 'bool', 'string')"
CLASSES = "classification IN ('general', 'important', 'core')"
LEVELS = "level IN ('enterprise', 'site', 'area', 'line', 'machine')"


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("api_key_hash", sa.String(length=64), nullable=False),
        sa.Column("auto_register_signals", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("api_key_hash", name=op.f("uq_tenants_api_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(LEVELS, name=op.f("ck_assets_level")),
        sa.ForeignKeyConstraint(["parent_id"], ["assets.id"], name=op.f("fk_assets_parent_id_assets")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_assets_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
        sa.UniqueConstraint("tenant_id", "parent_id", "name", name=op.f("uq_assets_tenant_id_parent_id_name")),
    )
    op.create_index(op.f("ix_assets_parent_id"), "assets", ["parent_id"])
    op.create_index(op.f("ix_assets_tenant_id"), "assets", ["tenant_id"])
    op.create_index(
        "uq_assets_root_name",
        "assets",
        ["tenant_id", "name"],
        unique=True,
        sqlite_where=sa.text("parent_id IS NULL"),
        postgresql_where=sa.text("parent_id IS NULL"),
    )
    op.create_table(
        "device_types",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("extends_id", sa.Integer(), nullable=True),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["extends_id"], ["device_types.id"], name=op.f("fk_device_types_extends_id_device_types")
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_device_types_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_types")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_device_types_tenant_id_name")),
    )
    op.create_table(
        "device_type_signals",
        sa.Column("type_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=50), server_default="", nullable=False),
        sa.Column("data_type", sa.String(length=8), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("classification", sa.String(length=16), server_default="general", nullable=False),
        sa.CheckConstraint(CLASSES, name=op.f("ck_device_type_signals_classification")),
        sa.CheckConstraint(DATA_TYPES, name=op.f("ck_device_type_signals_data_type")),
        sa.ForeignKeyConstraint(
            ["type_id"], ["device_types.id"], name=op.f("fk_device_type_signals_type_id_device_types")
        ),
        sa.PrimaryKeyConstraint("type_id", "name", name=op.f("pk_device_type_signals")),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("device_type_id", sa.Integer(), nullable=True),
        sa.Column("asset_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], name=op.f("fk_devices_asset_id_assets")),
        sa.ForeignKeyConstraint(
            ["device_type_id"], ["device_types.id"], name=op.f("fk_devices_device_type_id_device_types")
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_devices_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_devices_tenant_id_name")),
    )
    op.create_index(op.f("ix_devices_asset_id"), "devices", ["asset_id"])
    op.create_table(
        "signals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("unit", sa.String(length=50), server_default="", nullable=False),
        sa.Column("data_type", sa.String(length=8), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("classification", sa.String(length=16), server_default="general", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(CLASSES, name=op.f("ck_signals_classification")),
        sa.CheckConstraint(DATA_TYPES, name=op.f("ck_signals_data_type")),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_signals_device_id_devices")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_signals_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
        sa.UniqueConstraint("device_id", "name", name=op.f("uq_signals_device_id_name")),
        # Never reuse the id of a deleted signal: the historian keys its data by this id.
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_signals_tenant_id"), "signals", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("signals")
    op.drop_table("devices")
    op.drop_table("device_type_signals")
    op.drop_table("device_types")
    op.drop_table("assets")
    op.drop_table("tenants")
