"""rating index: the account index of ``executions`` carries what rating reads (issue 15)

``ix_executions_account_occurred`` (account_id, occurred_at) becomes a covering index: INCLUDE the
columns the close's usage aggregation reads (event id, model, BYOK, sandbox, tokens, cost, ingested
at). A chunk of 100 accounts is then read by an index-only scan of its own slice of the index
instead of fetching its rows from nearly every heap page of the month (executions arrive in time
order, accounts interleaved). Postgres keeps the index exact on every way rows get in or out (COPY,
HTTP batches, staging merge, late usage, partition archive and restore): nothing else to maintain,
and the rows rated are the rows stored.

Built under a new name, then swapped for the old one, in one transaction on the partitioned table
(each partition gets its own); ingest waits for the build (docs/runbook.md, "Partitioned
executions": run it in a maintenance window on a large table).

Revision ID: rating_index_1
Revises: meter_settle_1
"""

from alembic import op

revision = "rating_index_1"
down_revision = "meter_settle_1"
branch_labels = None
depends_on = None

COVERED = "event_id, model, byok, sandbox, input_tokens, output_tokens, cost_usd, ingested_at"


def upgrade() -> None:
    op.execute(f"CREATE INDEX ix_executions_account_occurred_new ON executions (account_id, occurred_at) "
               f"INCLUDE ({COVERED})")
    op.execute("DROP INDEX ix_executions_account_occurred")
    op.execute("ALTER INDEX ix_executions_account_occurred_new RENAME TO ix_executions_account_occurred")
    op.execute("ANALYZE executions")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_executions_account_occurred_old ON executions (account_id, occurred_at)")
    op.execute("DROP INDEX ix_executions_account_occurred")
    op.execute("ALTER INDEX ix_executions_account_occurred_old RENAME TO ix_executions_account_occurred")
