"""complete pricing: account terms history, token/BYOK/sandbox columns, late usage, notifications

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("invoice_lines", "unit_price", type_=sa.Numeric(24, 12),
                    existing_type=sa.Numeric(18, 8), existing_nullable=False)
    for name, col in (
        ("key", sa.Column("key", sa.Text(), server_default="", nullable=False)),
        ("rate_version", sa.Column("rate_version", sa.String(64))),
        ("direction", sa.Column("direction", sa.String(8))),
        ("line_executions", sa.Column("line_executions", sa.BigInteger(), server_default="0", nullable=False)),
        ("cost", sa.Column("cost", sa.Numeric(18, 8), server_default="0", nullable=False)),
        ("source_period", sa.Column("source_period", sa.String(7))),
    ):
        op.add_column("invoice_lines", col)
    op.create_index("ix_invoice_lines_source_period", "invoice_lines", ["source_period"])
    op.add_column("invoices", sa.Column("sandbox_executions", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("invoices", sa.Column("byok_executions", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("invoices", sa.Column("platform_cost", sa.Numeric(18, 8), server_default="0", nullable=False))

    op.create_table(
        "account_terms",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("plan", sa.String(32), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("overage_opt_in", sa.Boolean(), nullable=False),
        sa.Column("pricing", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("pricing IN ('executions', 'tokens')", name=op.f("ck_account_terms_pricing_known")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_account_terms_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_terms")),
        sa.UniqueConstraint("account_id", "effective_from", name=op.f("uq_account_terms_account_id_effective_from")),
    )
    # Existing accounts: one terms row from the day their billing started.
    op.execute(
        """
        INSERT INTO account_terms (account_id, effective_from, plan, seats, overage_opt_in, pricing, reason)
        SELECT id, date_trunc('day', billing_starts_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               plan, seats, overage_opt_in, pricing, 'account created'
        FROM accounts
        """
    )
    op.create_table(
        "prior_period_adjustments",
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("source_period", sa.String(7), nullable=False),
        sa.Column("executions", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="CASCADE",
                                name=op.f("fk_prior_period_adjustments_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("invoice_id", "source_period", name=op.f("pk_prior_period_adjustments")),
    )
    op.create_index("ix_prior_period_adjustments_account_period", "prior_period_adjustments",
                    ["account_id", "source_period"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("dedupe_key", sa.String(160), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_notifications_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notifications_dedupe_key")),
    )


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_index("ix_prior_period_adjustments_account_period", table_name="prior_period_adjustments")
    op.drop_table("prior_period_adjustments")
    op.drop_table("account_terms")
    for col in ("platform_cost", "byok_executions", "sandbox_executions"):
        op.drop_column("invoices", col)
    op.drop_index("ix_invoice_lines_source_period", table_name="invoice_lines")
    for col in ("source_period", "cost", "line_executions", "direction", "rate_version", "key"):
        op.drop_column("invoice_lines", col)
    op.alter_column("invoice_lines", "unit_price", type_=sa.Numeric(18, 8),
                    existing_type=sa.Numeric(24, 12), existing_nullable=False)
