"""Alembic environment: online migrations only, serialised by an advisory lock so several processes
(dev stack, tests, workers) can call ``migrate`` at once."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from models.tables import metadata

MIGRATION_LOCK_ID = 7_301_188  # arbitrary, stable


def _include_name(name, type_, _parent) -> bool:
    """Autogenerate leaves the month partitions of executions alone (repositories/partitions.py)."""
    from repositories.partitions import is_partition_name

    return not (type_ == "table" and is_partition_name(name))


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()  # the lock is the session's; Alembic begins its own transactions
        try:
            # One transaction per migration: a migration may leave it for an autocommit block
            # (CREATE INDEX CONCURRENTLY, a batched backfill).
            context.configure(connection=connection, target_metadata=metadata, compare_type=True,
                              transaction_per_migration=True, include_name=_include_name)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()


run_migrations_online()
