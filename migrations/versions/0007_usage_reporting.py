"""usage reporting to Stripe Billing Meters: meters, meter_reports, meter_report_hours,
meter_report_state, meter_reconciliations, and BRIN indexes on executions' occurred_at and ingested_at

Revision ID: usage_reporting_1
Revises: routing_1
"""

import sqlalchemy as sa
from alembic import op

revision = "usage_reporting_1"
down_revision = "routing_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_executions_occurred_at_brin", "executions", ["occurred_at"], postgresql_using="brin")
    op.create_index("ix_executions_ingested_at_brin", "executions", ["ingested_at"], postgresql_using="brin")
    op.create_table(
        "meters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(96), nullable=False, unique=True),
        sa.Column("quantity", sa.String(16), nullable=False),
        sa.Column("model", sa.String(64)),
        sa.Column("event_name", sa.String(100), nullable=False, unique=True),
        sa.Column("stripe_meter_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "meter_reports",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("meter_id", sa.Integer(), sa.ForeignKey("meters.id"), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("revision", sa.Integer(), primary_key=True),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="sending"),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("state IN ('sending', 'reported', 'failed')", name="state_known"),
        sa.CheckConstraint("quantity > 0 AND revision >= 1", name="positive"),
    )
    op.create_index("ix_meter_reports_hour", "meter_reports", ["hour"])
    op.create_table(
        "meter_report_hours",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("accounts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("events", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("already", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("runs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("state IN ('running', 'reported', 'partial', 'late', 'expired')", name="state_known"),
    )
    op.create_table(
        "meter_report_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("reporting_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scanned_until", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name="single_row"),
    )
    op.create_table(
        "meter_reconciliations",
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("meter_id", sa.Integer(), sa.ForeignKey("meters.id"), primary_key=True),
        sa.Column("tally", sa.BigInteger(), nullable=False),
        sa.Column("reported", sa.BigInteger(), nullable=False),
        sa.Column("stripe", sa.BigInteger()),
        sa.Column("drift", sa.BigInteger(), nullable=False),
        sa.Column("unexplained", sa.BigInteger(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("meter_reconciliations")
    op.drop_table("meter_report_state")
    op.drop_table("meter_report_hours")
    op.drop_table("meter_reports")
    op.drop_table("meters")
    op.drop_index("ix_executions_ingested_at_brin", table_name="executions")
    op.drop_index("ix_executions_occurred_at_brin", table_name="executions")
