"""prepaid credits: credit accounts, purchases (Stripe Checkout Sessions), grants, the append-only
ledger (a trigger refuses UPDATE and DELETE) and the consumption's bookings

Revision ID: credits_1
Revises: alerts_1
"""

import sqlalchemy as sa
from alembic import op

revision = "credits_1"
down_revision = "payouts_1"
branch_labels = None
depends_on = None

AMOUNT = sa.Numeric(18, 2)
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("credits_only", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("booked_through", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_credit_accounts_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_credit_accounts")),
    )
    op.create_table(
        "credit_purchases",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("package", sa.String(64), nullable=False),
        sa.Column("catalog_version", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("stripe_session_id", sa.String(128), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'paid', 'failed', 'expired')",
                           name=op.f("ck_credit_purchases_status_known")),
        sa.CheckConstraint("unit IN ('credits', 'usd')", name=op.f("ck_credit_purchases_unit_known")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_credit_purchases_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_purchases")),
        sa.UniqueConstraint("stripe_session_id", name=op.f("uq_credit_purchases_stripe_session_id")),
    )
    op.create_index("ix_credit_purchases_pending", "credit_purchases", ["created_at"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(96), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("package", sa.String(64), nullable=True),
        sa.Column("purchase_id", sa.String(64), nullable=True),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("granted_by", sa.Text(), nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("unit IN ('credits', 'usd')", name=op.f("ck_credit_grants_unit_known")),
        sa.CheckConstraint("amount > 0 AND price >= 0 AND expires_at > granted_at",
                           name=op.f("ck_credit_grants_valid")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_credit_grants_account_id_accounts")),
        sa.ForeignKeyConstraint(["purchase_id"], ["credit_purchases.id"],
                                name=op.f("fk_credit_grants_purchase_id_credit_purchases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
        sa.UniqueConstraint("purchase_id", name=op.f("uq_credit_grants_purchase_id")),
    )
    op.create_index("ix_credit_grants_account_expires", "credit_grants", ["account_id", "expires_at"])
    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.String(320), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("grant_id", sa.String(96), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference", sa.Text(), server_default="", nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('grant', 'consume', 'expire', 'adjust', 'invoice_application')",
                           name=op.f("ck_credit_ledger_kind_known")),
        sa.CheckConstraint("(kind = 'grant') = (amount > 0) AND amount <> 0", name=op.f("ck_credit_ledger_sign")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_credit_ledger_account_id_accounts")),
        sa.ForeignKeyConstraint(["grant_id"], ["credit_grants.id"], name=op.f("fk_credit_ledger_grant_id_credit_grants")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_credit_ledger_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger")),
    )
    op.create_index("ix_credit_ledger_grant", "credit_ledger", ["grant_id"])
    op.create_index("ix_credit_ledger_account_occurred", "credit_ledger", ["account_id", "occurred_at"])
    op.create_index("ix_credit_ledger_consumed_event", "credit_ledger", ["account_id", "reference"],
                    postgresql_where=sa.text("kind = 'consume'"))
    op.execute(
        """
        CREATE FUNCTION credit_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'credit_ledger is append-only: % refused', TG_OP;
        END $$;
        CREATE TRIGGER credit_ledger_append_only BEFORE UPDATE OR DELETE ON credit_ledger
            FOR EACH ROW EXECUTE FUNCTION credit_ledger_append_only();
        """
    )
    op.create_table(
        "credit_bookings",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("funded", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "event_id", name=op.f("pk_credit_bookings")),
    )


def downgrade() -> None:
    op.drop_table("credit_bookings")
    op.execute("DROP TRIGGER IF EXISTS credit_ledger_append_only ON credit_ledger; "
               "DROP FUNCTION IF EXISTS credit_ledger_append_only()")
    op.drop_table("credit_ledger")
    op.drop_table("credit_grants")
    op.drop_table("credit_purchases")
    op.drop_table("credit_accounts")
