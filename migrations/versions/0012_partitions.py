"""partitions: executions partitioned by UTC month of occurred_at (issue 15)

The existing table is renamed aside, a partitioned ``executions`` of the same columns is created with
one partition per month found in the data, this month and the next three, and a default partition;
the rows are copied in, the indexes built on the partitioned table (each partition gets its own) and
the old table dropped. One transaction: ingest waits for it (on a large table, run it in a maintenance
window; docs/runbook.md "Partitioned executions"). The key becomes (account_id, event_id,
occurred_at): a unique key of a partitioned table must hold the partition column; event ids stay
unique per tenant through ``execution_ids``.

Partition names and bounds are frozen here (repositories/partitions.py creates later ones the same way).

Revision ID: partitions_1
Revises: reliability_1
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "partitions_1"
down_revision = "reliability_1"
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3
_INDEXES = (
    "CREATE INDEX ix_executions_account_occurred ON executions (account_id, occurred_at)",
    "CREATE INDEX ix_executions_skill_occurred ON executions (skill_id, occurred_at)",
    "CREATE INDEX ix_executions_occurred_at_brin ON executions USING brin (occurred_at)",
    "CREATE INDEX ix_executions_ingested_at_brin ON executions USING brin (ingested_at)",
    "CREATE INDEX ix_executions_account_agent_occurred ON executions (account_id, agent_id, occurred_at)",
    "CREATE INDEX ix_executions_fallback_candidates ON executions (account_id, ingested_at) "
    "WHERE requested_model IS NOT NULL AND requested_model <> model",
)
_INDEX_NAMES = [sql.split()[2] for sql in _INDEXES]


def _month(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=timezone.utc)


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def upgrade() -> None:
    bind = op.get_bind()
    for name in _INDEX_NAMES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute("ALTER TABLE executions RENAME TO executions_unpartitioned")
    op.execute("ALTER TABLE executions_unpartitioned RENAME CONSTRAINT pk_executions TO pk_executions_unpartitioned")
    op.execute("CREATE TABLE executions (LIKE executions_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
               "PARTITION BY RANGE (occurred_at)")
    months = {(int(y), int(m)) for y, m in bind.execute(sa.text(
        "SELECT DISTINCT extract(year FROM occurred_at AT TIME ZONE 'UTC'), "
        "extract(month FROM occurred_at AT TIME ZONE 'UTC') FROM executions_unpartitioned")).all()}
    now = bind.execute(sa.text("SELECT now()")).scalar().astimezone(timezone.utc)
    ym = (now.year, now.month)
    for _ in range(MONTHS_AHEAD + 1):
        months.add(ym)
        ym = _next(*ym)
    for year, month in sorted(months):
        op.execute(f"CREATE TABLE executions_{year:04d}_{month:02d} PARTITION OF executions FOR VALUES "
                   f"FROM ('{_month(year, month).isoformat()}') TO ('{_month(*_next(year, month)).isoformat()}')")
    op.execute("CREATE TABLE executions_default PARTITION OF executions DEFAULT")
    op.execute("INSERT INTO executions SELECT * FROM executions_unpartitioned")
    op.execute("ALTER TABLE executions ADD CONSTRAINT pk_executions PRIMARY KEY (account_id, event_id, occurred_at)")
    for sql in _INDEXES:
        op.execute(sql)
    op.execute("DROP TABLE executions_unpartitioned")
    op.execute("ANALYZE executions")


def downgrade() -> None:
    op.execute("CREATE TABLE executions_flat (LIKE executions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    op.execute("INSERT INTO executions_flat SELECT * FROM executions")
    op.execute("DROP TABLE executions")  # and its partitions
    op.execute("ALTER TABLE executions_flat RENAME TO executions")
    op.execute("ALTER TABLE executions ADD CONSTRAINT pk_executions PRIMARY KEY (account_id, event_id)")
    for sql in _INDEXES:
        op.execute(sql)
