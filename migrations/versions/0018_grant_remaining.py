"""grant remaining: each credit grant carries what is left of it, kept by the ledger's own inserts (issue 15)

What is left of a grant was the sum of its ledger entries, read by the credits booking after every batch
(``remainders_of``) and by every entitlement check of a credit holder (the spendable credits). The
ledger has one ``consume`` entry per funded execution, so both reads grew with the month: a grant of a
busy credits-only account sums a million rows by the month's end. ``credit_grants.remaining`` holds that
sum, kept by a statement-level trigger on ``credit_ledger`` inserts (one UPDATE per statement, per grant
touched, from the rows actually inserted: an ``ON CONFLICT DO NOTHING`` that skips a replayed entry adds
nothing). The ledger stays the record (append-only, migration 0010) and every writer, present or future,
keeps the column exact because Postgres does it in the inserting statement.

The ledger's inserts wait for this migration (it locks ``credit_ledger`` against writes while it
creates the trigger and fills the column from the sums): a few seconds at most.

Revision ID: grant_remaining_1
Revises: ingested_at_btree_1
"""

from alembic import op

revision = "grant_remaining_1"
down_revision = "ingested_at_btree_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("LOCK TABLE credit_ledger IN SHARE ROW EXCLUSIVE MODE")
    op.execute("ALTER TABLE credit_grants ADD COLUMN remaining NUMERIC(18, 2) NOT NULL DEFAULT 0")
    op.execute(
        """
        CREATE FUNCTION credit_grants_remaining() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE credit_grants g SET remaining = g.remaining + s.amount
            FROM (SELECT grant_id, sum(amount) AS amount FROM added GROUP BY grant_id) s
            WHERE g.id = s.grant_id;
            RETURN NULL;
        END $$;
        CREATE TRIGGER credit_ledger_remaining AFTER INSERT ON credit_ledger
            REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION credit_grants_remaining();
        """
    )
    op.execute("UPDATE credit_grants g SET remaining = s.amount "
               "FROM (SELECT grant_id, sum(amount) AS amount FROM credit_ledger GROUP BY grant_id) s "
               "WHERE g.id = s.grant_id")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS credit_ledger_remaining ON credit_ledger; "
               "DROP FUNCTION IF EXISTS credit_grants_remaining()")
    op.execute("ALTER TABLE credit_grants DROP COLUMN remaining")
