"""reliability: event ids unique per tenant (``execution_ids``), executions keyed by (account, event id)

Without downtime: the table is created and filled in batches of its own transactions while the old
code keeps ingesting, the new key of ``executions`` is built CONCURRENTLY and swapped in with one
short catalog change, then a last pass records the ids ingested meanwhile. Old API processes still
running after the swap fail their inserts (their ``ON CONFLICT (event_id)`` has no matching key any
more) and the platform retries them against the new ones: roll the API right after migrating
(docs/runbook.md, "Upgrading to tenant-scoped event ids").

Revision ID: reliability_1
Revises: alerts_1
"""

import sqlalchemy as sa
from alembic import op

revision = "reliability_1"
down_revision = "credits_1"
branch_labels = None
depends_on = None

BACKFILL_BATCH = 20_000

# The content digest of an execution row: the same as activities.ingest.content_hash computes for a
# parsed event (tests/faults/test_tenant_event_ids.py checks that they agree). Frozen here: a
# migration must not change when the code does.
CONTENT_HASH_SQL = """decode(md5(concat_ws(E'\\x1f',
    e.account_id, e.agent_id, coalesce(e.skill_id, ''), e.model, e.input_tokens::text, e.output_tokens::text,
    CASE WHEN e.byok THEN 't' ELSE 'f' END, CASE WHEN e.sandbox THEN 't' ELSE 'f' END,
    coalesce(e.cost_usd::text, ''), (extract(epoch FROM e.occurred_at) * 1000000)::bigint::text,
    coalesce(e.routed_model, ''), coalesce(e.routing_decision_id::text, ''), coalesce(e.requested_model, '')
)), 'hex')"""

_BACKFILL = f"""
WITH batch AS (
    SELECT e.* FROM executions e WHERE e.event_id > :after ORDER BY e.event_id LIMIT {BACKFILL_BATCH}
), ins AS (
    INSERT INTO execution_ids (platform_id, event_id, content_hash)
    SELECT coalesce(a.platform_id, 0), e.event_id, {CONTENT_HASH_SQL}
    FROM batch e LEFT JOIN accounts a ON a.id = e.account_id
    ON CONFLICT DO NOTHING
)
SELECT max(event_id) FROM batch
"""
# The ids old processes ingested while the first pass ran (BRIN index on ingested_at).
_CATCH_UP = f"""
INSERT INTO execution_ids (platform_id, event_id, content_hash)
SELECT coalesce(a.platform_id, 0), e.event_id, {CONTENT_HASH_SQL}
FROM executions e LEFT JOIN accounts a ON a.id = e.account_id
WHERE e.ingested_at >= :since
ON CONFLICT DO NOTHING
"""


def _backfill(bind) -> None:
    """Record every execution's id, a batch per transaction (autocommit), keyed on the event id."""
    after = ""
    while True:
        last = bind.execute(sa.text(_BACKFILL), {"after": after}).scalar()
        if last is None:
            return
        after = last


def upgrade() -> None:
    op.create_table(
        "execution_ids",
        sa.Column("platform_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("platform_id", "event_id", name=op.f("pk_execution_ids")),
    )
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        started = bind.execute(sa.text("SELECT clock_timestamp() - interval '1 minute'")).scalar()
        _backfill(bind)
        bind.execute(sa.text("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_executions_account_event "
                             "ON executions (account_id, event_id)"))
        bind.execute(sa.text("SET lock_timeout = '10s'"))
        bind.execute(sa.text("ALTER TABLE executions DROP CONSTRAINT pk_executions, "
                             "ADD CONSTRAINT pk_executions PRIMARY KEY USING INDEX uq_executions_account_event"))
        bind.execute(sa.text("RESET lock_timeout"))
        bind.execute(sa.text(_CATCH_UP), {"since": started})


def downgrade() -> None:
    # Only possible while no event id is used by two tenants.
    op.execute("ALTER TABLE executions DROP CONSTRAINT pk_executions, ADD CONSTRAINT pk_executions PRIMARY KEY (event_id)")
    op.drop_table("execution_ids")
