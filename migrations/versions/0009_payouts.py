"""creator revenue share and payouts: creators (Connect account state), premium skills, earnings per
invoice line, invoice payments, adjustments (refunds, disputes), payouts

Revision ID: payouts_1
Revises: alerts_1
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "payouts_1"
down_revision = "alerts_1"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(14, 2)
NOW = sa.text("now()")


def _ts(name: str, nullable: bool = True, default: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=NOW if default else None, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "creators",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("stripe_account_id", sa.String(64), nullable=True),
        sa.Column("charges_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("payouts_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("details_submitted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("transfers_capability", sa.String(16), server_default="inactive", nullable=False),
        _ts("account_event_at"),
        _ts("created_at", nullable=False, default=True),
        sa.CheckConstraint("transfers_capability IN ('active', 'inactive', 'pending')",
                           name=op.f("ck_creators_transfers_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_creators")),
        sa.UniqueConstraint("stripe_account_id", name=op.f("uq_creators_stripe_account_id")),
    )
    op.create_table(
        "premium_skills",
        sa.Column("skill_id", sa.String(128), nullable=False),
        sa.Column("creator_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(8), nullable=False),
        sa.Column("fixed_price", MONEY, nullable=True),
        _ts("updated_at", nullable=False, default=True),
        sa.CheckConstraint("(model = 'share' AND fixed_price IS NULL) OR (model = 'fixed' AND fixed_price > 0)",
                           name=op.f("ck_premium_skills_model_price")),
        sa.ForeignKeyConstraint(["creator_id"], ["creators.id"], name=op.f("fk_premium_skills_creator_id_creators")),
        sa.PrimaryKeyConstraint("skill_id", name=op.f("pk_premium_skills")),
    )
    op.create_table(
        "creator_earnings",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("creator_id", sa.String(64), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("revenue", sa.Numeric(24, 12), nullable=False),
        sa.Column("executions", sa.BigInteger(), nullable=False),
        sa.Column("skills", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _ts("payable_from"),
        _ts("created_at", nullable=False, default=True),
        sa.ForeignKeyConstraint(["creator_id"], ["creators.id"], name=op.f("fk_creator_earnings_creator_id_creators")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="CASCADE",
                                name=op.f("fk_creator_earnings_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_creator_earnings")),
    )
    op.create_index("ix_creator_earnings_creator_id", "creator_earnings", ["creator_id"])
    op.create_index("ix_creator_earnings_invoice_id", "creator_earnings", ["invoice_id"])
    op.create_table(
        "invoice_payments",
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        _ts("paid_at", nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("stripe_charge_id", sa.String(64), nullable=True),
        sa.Column("amount", MONEY, nullable=False),
        _ts("recorded_at", nullable=False, default=True),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="CASCADE",
                                name=op.f("fk_invoice_payments_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_invoice_payments")),
    )
    op.create_index("ix_invoice_payments_stripe_charge_id", "invoice_payments", ["stripe_charge_id"])
    op.create_table(
        "creator_adjustments",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("creator_id", sa.String(64), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", MONEY, nullable=False),
        _ts("occurred_at", nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _ts("recorded_at", nullable=False, default=True),
        sa.ForeignKeyConstraint(["creator_id"], ["creators.id"], name=op.f("fk_creator_adjustments_creator_id_creators")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_creator_adjustments_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_creator_adjustments")),
    )
    op.create_index("ix_creator_adjustments_creator_id", "creator_adjustments", ["creator_id"])
    op.create_table(
        "payouts",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("creator_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("carried_in", MONEY, nullable=False),
        sa.Column("earnings", MONEY, nullable=False),
        sa.Column("adjustments", MONEY, nullable=False),
        sa.Column("balance", MONEY, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("carried_out", MONEY, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("destination", sa.String(64), nullable=True),
        sa.Column("stripe_transfer_id", sa.String(64), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _ts("decided_at", nullable=False),
        _ts("paid_at"),
        _ts("updated_at", nullable=False, default=True),
        sa.CheckConstraint("status IN ('carried', 'pending', 'paid', 'failed', 'cancelled')",
                           name=op.f("ck_payouts_status_known")),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_payouts_amount_non_negative")),
        sa.ForeignKeyConstraint(["creator_id"], ["creators.id"], name=op.f("fk_payouts_creator_id_creators")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("creator_id", "period", name=op.f("uq_payouts_creator_id_period")),
    )
    op.create_index("ix_payouts_period_status", "payouts", ["period", "status"])


def downgrade() -> None:
    for table in ("payouts", "creator_adjustments", "invoice_payments", "creator_earnings", "premium_skills",
                  "creators"):
        op.drop_table(table)
