"""meter settle: a reconciliation row keeps what Stripe's summary does not show yet (issue 16)

Stripe's meter event summaries lag behind ingestion. ``unsettled`` is the part of Tally's report sent
within the settle time that Stripe's summary does not hold yet: not drift, checked again once settled.

Revision ID: meter_settle_1
Revises: partitions_1
"""

import sqlalchemy as sa
from alembic import op

revision = "meter_settle_1"
down_revision = "partitions_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("meter_reconciliations",
                  sa.Column("unsettled", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("meter_reconciliations", "unsettled")
