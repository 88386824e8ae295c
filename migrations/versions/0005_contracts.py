"""enterprise committed-use contracts: contracts, their amendments, monthly reconciliations, summaries

Revision ID: contracts_1
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "contracts_1"
down_revision = "0004"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(14, 2)


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "contracts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, primary_key=True),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("commitment", sa.BigInteger(), nullable=False),
        _ts("starts_at"),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("catalog_version", sa.String(64), nullable=False),
        _ts("ends_at"),
        _created(),
        sa.UniqueConstraint("account_id", "starts_at", name="uq_contracts_account_id_starts_at"),
        sa.CheckConstraint("commitment > 0 AND months > 0 AND ends_at > starts_at",
                           name="ck_contracts_positive_term"),
    )
    op.create_table(
        "contract_amendments",
        sa.Column("contract_id", sa.BigInteger(), sa.ForeignKey("contracts.id"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        _ts("requested_at"),
        _ts("effective"),
        sa.Column("commitment", sa.BigInteger()),
        sa.Column("extra_months", sa.Integer()),
        _created(),
        sa.UniqueConstraint("request_id", name="uq_contract_amendments_request_id"),
        sa.CheckConstraint("kind IN ('raise_commitment', 'extend_term', 'terminate')",
                           name="ck_contract_amendments_kind_known"),
    )
    op.create_table(
        "contract_months",
        sa.Column("contract_id", sa.BigInteger(), sa.ForeignKey("contracts.id"), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("invoice_id", sa.BigInteger(), sa.ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        _ts("starts_at"),
        _ts("ends_at"),
        *[sa.Column(n, sa.BigInteger(), nullable=False) for n in ("committed", "used", "overage", "shortfall")],
        sa.Column("utilisation", sa.Numeric(12, 4), nullable=False),
        *[sa.Column(n, MONEY, nullable=False)
          for n in ("committed_charge", "overage_charge", "termination_fee", "total")],
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        _ts("reconciled_at", nullable=True),
    )
    op.create_index("ix_contract_months_invoice_id", "contract_months", ["invoice_id"])
    op.create_table(
        "contract_summaries",
        sa.Column("contract_id", sa.BigInteger(), sa.ForeignKey("contracts.id"), primary_key=True),
        _ts("starts_at"),
        _ts("ends_at"),
        sa.Column("terminated_early", sa.Boolean(), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        *[sa.Column(n, sa.BigInteger(), nullable=False) for n in ("committed", "used", "overage", "shortfall")],
        *[sa.Column(n, MONEY, nullable=False)
          for n in ("committed_charges", "overage_charges", "termination_fee", "total_charges")],
        sa.Column("average_utilisation", sa.Numeric(12, 4), nullable=False),
        sa.Column("months_under_commitment", sa.Integer(), nullable=False),
        _created(),
    )


def downgrade() -> None:
    for table in ("contract_summaries", "contract_months", "contract_amendments", "contracts"):
        op.drop_table(table)
