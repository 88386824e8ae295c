"""ingested_at B-tree: "what arrived since T" reads only those rows (issue 15)

The BRIN on ``executions.ingested_at`` (migration 0007) reads every block range VACUUM has not
summarized yet, and an insert-only month is summarized only when autovacuum next gets to it (after a
fifth of the partition has been inserted): the credits booking after every batch, which asks for the
rows ingested in the last few seconds, read the whole unsummarized tail each time (a 292,000-row
partition: 267,000 rows rechecked to return 16,000). A B-tree on ``ingested_at`` takes its place:
its key only grows, so each insert appends to its rightmost pages, and the plain COPY floor of the
benches (``LIKE executions INCLUDING ALL``) pays for it too. The meters' and the late-usage reads of
"ingested since" use it as well.

Built on the partitioned table (each partition gets its own) in one transaction: ingest waits for
the build (docs/runbook.md, "Partitioned executions": run it in a maintenance window on a large table).

Revision ID: ingested_at_btree_1
Revises: archived_months_1
"""

from alembic import op

revision = "ingested_at_btree_1"
down_revision = "archived_months_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_executions_ingested_at ON executions (ingested_at)")
    op.execute("DROP INDEX ix_executions_ingested_at_brin")
    op.execute("ANALYZE executions")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_executions_ingested_at_brin ON executions USING brin (ingested_at)")
    op.execute("DROP INDEX ix_executions_ingested_at")
