"""Actions attached to rules; the app catalogue per tenant.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actions", sa.Text(), server_default="[]", nullable=False))
    op.create_table(
        "tenant_apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("config", sa.Text(), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_tenant_apps_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_apps")),
        sa.UniqueConstraint("tenant_id", "app", name=op.f("uq_tenant_apps_tenant_id_app")),
    )
    with op.batch_alter_table("tenant_apps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tenant_apps_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tenant_apps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenant_apps_tenant_id"))
    op.drop_table("tenant_apps")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_column("actions")
