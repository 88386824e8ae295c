"""archived months: the months whose executions ``tally usage archive`` moved to a file (issue 15)

A month's partition is dropped when it is archived, which leaves nothing in the database to tell an
archived month from a month without usage. ``invoices verify`` re-rates a closed month from its
executions, so over an archived month it would list every invoice as differing. Archive now records
the month here in the transaction that drops its partition, restore removes it in the transaction that
loads it back, and verify refuses an archived month by name. Months archived before this revision are
not known here (restore and archive them again to record them).

Revision ID: archived_months_1
Revises: counter_uncosted_1
"""

import sqlalchemy as sa
from alembic import op

revision = "archived_months_1"
down_revision = "counter_uncosted_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archived_months",
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("period", name=op.f("pk_archived_months")),
    )


def downgrade() -> None:
    op.drop_table("archived_months")
