"""Rules, alarm states and alarm history (rules/store.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alarm_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=False),
        sa.Column("to_state", sa.String(length=32), nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("area", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("alarm_events", schema=None) as batch_op:
        batch_op.create_index("ix_alarm_events_tenant_ts", ["tenant_id", "ts"], unique=False)

    op.create_table(
        "rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("definition", sa.Text(), server_default="{}", nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="3", nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('threshold', 'rate', 'expression', 'window', 'stale', 'state')",
            name=op.f("ck_rules_kind"),
        ),
        sa.CheckConstraint(
            "target_kind IN ('device_type', 'device')", name=op.f("ck_rules_target_kind")
        ),
        sa.CheckConstraint("priority BETWEEN 1 AND 4", name=op.f("ck_rules_priority")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_rules_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_rules_tenant_id_name")),
    )
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rules_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "alarm_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("last_change_ts", sa.BigInteger(), nullable=True),
        sa.Column("shelved_until", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("area", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("activations", sa.Integer(), server_default="0", nullable=False),
        sa.Column("annunciations", sa.Integer(), server_default="0", nullable=False),
        sa.Column("acknowledgements", sa.Integer(), server_default="0", nullable=False),
        sa.Column("hidden_activations", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "state IN ('normal', 'unack_active', 'ack_active', 'unack_rtn', 'shelved', 'suppressed_by_design', 'out_of_service')",
            name=op.f("ck_alarm_states_state"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_alarm_states_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["rules.id"],
            name=op.f("fk_alarm_states_rule_id_rules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_alarm_states_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_states")),
        sa.UniqueConstraint("rule_id", "device_id", name=op.f("uq_alarm_states_rule_id_device_id")),
    )
    with op.batch_alter_table("alarm_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_states_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarm_states_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alarm_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_states_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_alarm_states_device_id"))

    op.drop_table("alarm_states")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rules_tenant_id"))

    op.drop_table("rules")
    with op.batch_alter_table("alarm_events", schema=None) as batch_op:
        batch_op.drop_index("ix_alarm_events_tenant_ts")

    op.drop_table("alarm_events")
