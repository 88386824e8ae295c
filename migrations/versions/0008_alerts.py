"""alerts and anomalies: executions.requested_model, budgets, budget crossings, kills, anomalies, the
fallback scan's cursors, and the e-mail delivery columns of the notifications outbox

Revision ID: alerts_1
Revises: usage_reporting_1
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "alerts_1"
down_revision = "usage_reporting_1"
branch_labels = None
depends_on = None

FALLBACK = "requested_model IS NOT NULL AND requested_model <> model"
PENDING = "sent_at IS NULL AND failed_at IS NULL"


def upgrade() -> None:
    op.add_column("executions", sa.Column("requested_model", sa.String(64), nullable=True))
    op.create_index("ix_executions_account_agent_occurred", "executions", ["account_id", "agent_id", "occurred_at"])
    op.create_index("ix_executions_fallback_candidates", "executions", ["account_id", "ingested_at"],
                    postgresql_where=sa.text(FALLBACK))

    op.create_table(
        "account_budgets",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_account_budgets_amount_positive")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_account_budgets_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_budgets")),
    )
    op.create_table(
        "budget_crossings",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Numeric(14, 2), nullable=False),
        sa.Column("charges", sa.Numeric(14, 2), nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.Column("crossed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_budget_crossings_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", "period", "threshold", name=op.f("pk_budget_crossings")),
    )
    op.create_table(
        "execution_kills",
        sa.Column("execution_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("cost", sa.Numeric(18, 8), nullable=False),
        sa.Column("baseline", sa.Numeric(18, 8), nullable=False),
        sa.Column("threshold", sa.Numeric(24, 12), nullable=False),
        sa.Column("multiplier", sa.Numeric(8, 4), nullable=False),
        sa.Column("history_size", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("killed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_execution_kills_account_id_accounts")),
        sa.PrimaryKeyConstraint("execution_id", name=op.f("pk_execution_kills")),
    )
    op.create_index("ix_execution_kills_account_killed", "execution_kills", ["account_id", "killed_at"])
    op.create_table(
        "anomalies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(200), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), server_default="open", nullable=False),
        sa.Column("evidence", postgresql.JSONB(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("review_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("state IN ('open', 'confirmed', 'resumed')", name=op.f("ck_anomalies_state_known")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_anomalies_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomalies")),
        sa.UniqueConstraint("workflow_id", name=op.f("uq_anomalies_workflow_id")),
    )
    op.create_index("uq_anomalies_account_unresolved", "anomalies", ["account_id"], unique=True,
                    postgresql_where=sa.text("state IN ('open', 'confirmed')"))
    op.create_table(
        "alert_cursors",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("fallbacks_from", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_alert_cursors_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_alert_cursors")),
    )

    op.add_column("notifications", sa.Column("audience", sa.String(16), server_default="account", nullable=False))
    op.add_column("notifications", sa.Column("html", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("message_id", sa.String(255), nullable=True))
    op.add_column("notifications", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("notifications", sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("notifications", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("delivered_to", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_notifications_pending", "notifications", ["id"], postgresql_where=sa.text(PENDING))


def downgrade() -> None:
    op.drop_index("ix_notifications_pending", table_name="notifications")
    for column in ("failed_at", "delivered_to", "last_error", "claimed_until", "attempts", "message_id", "html",
                   "audience"):
        op.drop_column("notifications", column)
    op.drop_table("alert_cursors")
    op.drop_index("uq_anomalies_account_unresolved", table_name="anomalies")
    op.drop_table("anomalies")
    op.drop_index("ix_execution_kills_account_killed", table_name="execution_kills")
    op.drop_table("execution_kills")
    op.drop_table("budget_crossings")
    op.drop_table("account_budgets")
    op.drop_index("ix_executions_fallback_candidates", table_name="executions")
    op.drop_index("ix_executions_account_agent_occurred", table_name="executions")
    op.drop_column("executions", "requested_model")
