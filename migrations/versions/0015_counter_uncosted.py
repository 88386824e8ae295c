"""counted uncosted tokens: usage_counters also sum the tokens of executions without a recorded cost (issue 15)

The close rates an account that did not pass a positive quota from its month's counters instead of
its executions (``repositories.usage.usage_rows``). What it needs of a counter row beyond what the
row holds is the tokens that came without a cost (priced at the rate card's cost): two nullable
columns. Rows written before this revision keep NULL there (no backfill over a month of executions
in the migration): NULL plus anything stays NULL in the upsert, and an account with a NULL counter
for the month is rated from its executions, as before. Every row written from now on carries them.

Revision ID: counter_uncosted_1
Revises: rating_index_1
"""

import sqlalchemy as sa
from alembic import op

revision = "counter_uncosted_1"
down_revision = "rating_index_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_counters", sa.Column("uncosted_input_tokens", sa.BigInteger(), nullable=True))
    op.add_column("usage_counters", sa.Column("uncosted_output_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_counters", "uncosted_output_tokens")
    op.drop_column("usage_counters", "uncosted_input_tokens")
