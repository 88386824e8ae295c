"""metering service: platforms (API keys), accounts.platform_id, month-to-date usage counters

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "platforms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("api_key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platforms")),
        sa.UniqueConstraint("name", name=op.f("uq_platforms_name")),
        sa.UniqueConstraint("api_key_hash", name=op.f("uq_platforms_api_key_hash")),
    )
    op.add_column("accounts", sa.Column("platform_id", sa.Integer(), nullable=True))
    op.create_foreign_key(op.f("fk_accounts_platform_id_platforms"), "accounts", "platforms",
                          ["platform_id"], ["id"])
    op.create_table(
        "usage_counters",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("byok", sa.Boolean(), nullable=False),
        sa.Column("sandbox", sa.Boolean(), nullable=False),
        sa.Column("executions", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost_usd", sa.Numeric(20, 8), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_usage_counters_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", "period", "model", "byok", "sandbox", name=op.f("pk_usage_counters")),
    )
    # Executions recorded before this migration: their counters, so the live views start exact.
    op.execute(
        """
        INSERT INTO usage_counters (account_id, period, model, byok, sandbox,
                                    executions, input_tokens, output_tokens, cost_usd)
        SELECT e.account_id, to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'), e.model, e.byok, e.sandbox,
               count(*), sum(e.input_tokens), sum(e.output_tokens), coalesce(sum(e.cost_usd), 0)
        FROM executions e JOIN accounts a ON a.id = e.account_id
        GROUP BY 1, 2, 3, 4, 5
        """
    )


def downgrade() -> None:
    op.drop_table("usage_counters")
    op.drop_constraint(op.f("fk_accounts_platform_id_platforms"), "accounts", type_="foreignkey")
    op.drop_column("accounts", "platform_id")
    op.drop_table("platforms")
