"""fleet state, alerts, webhook outbox

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "fleet_alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pump_id", sa.String(length=128), nullable=False),
        sa.Column("pump_class", sa.String(length=128), nullable=False),
        sa.Column("site", sa.String(length=128), nullable=True),
        sa.Column("horizon_hours", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.Double(), nullable=False),
        sa.Column("risk", sa.Double(), nullable=False),
        sa.Column("escalated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("assignee", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("lead_time_hours", sa.Double(), nullable=True),
        sa.Column("closed_at", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fleet_alerts_pump", "fleet_alerts", ["pump_id", "opened_at"], unique=False)
    op.create_index("ix_fleet_alerts_status", "fleet_alerts", ["status"], unique=False)
    op.create_index(
        "uq_fleet_alerts_live",
        "fleet_alerts",
        ["pump_id", "horizon_hours"],
        unique=True,
        sqlite_where=sa.text("status != 'closed'"),
        postgresql_where=sa.text("status != 'closed'"),
    )
    op.create_table(
        "fleet_devices",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("site", sa.String(length=128), nullable=True),
        sa.Column("pump_class", sa.String(length=128), nullable=True),
        sa.Column("last_upload_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "fleet_failures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pump_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("missed", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fleet_failures_pump", "fleet_failures", ["pump_id", "at"], unique=False)
    op.create_table(
        "fleet_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_fleet_outbox_due", "fleet_outbox", ["delivered_at", "next_attempt_at"], unique=False
    )
    op.create_table(
        "fleet_pumps",
        sa.Column("pump_id", sa.String(length=128), nullable=False),
        sa.Column("pump_class", sa.String(length=128), nullable=False),
        sa.Column("site", sa.String(length=128), nullable=True),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("last_reading_at", sa.Double(), nullable=True),
        sa.Column("rul_hours", sa.Double(), nullable=True),
        sa.Column("failure_probability", sa.Double(), nullable=True),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("arm", sa.String(length=32), nullable=True),
        sa.Column("health_score", sa.Double(), nullable=True),
        sa.Column("anomaly", sa.Boolean(), nullable=True),
        sa.Column("drivers", sa.JSON(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("horizon_hours", sa.Double(), nullable=True),
        sa.Column("above", sa.Integer(), server_default="0", nullable=False),
        sa.Column("below", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("pump_id"),
    )
    op.create_table(
        "fleet_scores",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pump_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("rul_hours", sa.Double(), nullable=True),
        sa.Column("failure_probability", sa.Double(), nullable=True),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("arm", sa.String(length=32), nullable=True),
        sa.Column("health_score", sa.Double(), nullable=True),
        sa.Column("anomaly", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_fleet_scores_pump_at", "fleet_scores", ["pump_id", "at"], unique=False)
    op.create_table(
        "fleet_alert_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["fleet_alerts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_fleet_alert_events_alert", "fleet_alert_events", ["alert_id", "id"], unique=False
    )


def downgrade() -> None:

    op.drop_index("ix_fleet_alert_events_alert", table_name="fleet_alert_events")
    op.drop_table("fleet_alert_events")
    op.drop_index("ix_fleet_scores_pump_at", table_name="fleet_scores")
    op.drop_table("fleet_scores")
    op.drop_table("fleet_pumps")
    op.drop_index("ix_fleet_outbox_due", table_name="fleet_outbox")
    op.drop_table("fleet_outbox")
    op.drop_index("ix_fleet_failures_pump", table_name="fleet_failures")
    op.drop_table("fleet_failures")
    op.drop_table("fleet_devices")
    op.drop_index(
        "uq_fleet_alerts_live",
        table_name="fleet_alerts",
        sqlite_where=sa.text("status != 'closed'"),
        postgresql_where=sa.text("status != 'closed'"),
    )
    op.drop_index("ix_fleet_alerts_status", table_name="fleet_alerts")
    op.drop_index("ix_fleet_alerts_pump", table_name="fleet_alerts")
    op.drop_table("fleet_alerts")
