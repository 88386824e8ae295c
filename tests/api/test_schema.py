"""Migration 0002: creates exactly what models/tables.py declares, backfills the counters of
executions recorded before it, and downgrades cleanly."""

from __future__ import annotations

import psycopg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from models.db import alembic_config, libpq_url, migrate, sqlalchemy_url
from models.tables import metadata
from repositories.partitions import is_partition_name
from tests.conftest import scratch_database


def include_name(name, type_, _parent) -> bool:
    """The month partitions of executions are made by the migration and the schedule, not declared."""
    return not (type_ == "table" and is_partition_name(name))


def test_migration_backfills_counters_and_matches_the_tables(postgres_server_url):
    with scratch_database(postgres_server_url, "tally_mig") as url:
        migrate(url, "0001")
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("INSERT INTO accounts (id, plan) VALUES ('a1', 'pro')")
            conn.execute(
                "INSERT INTO executions (event_id, account_id, agent_id, model, occurred_at, input_tokens, byok, "
                "cost_usd) VALUES ('e1', 'a1', 'g', 'gpt-4o', '2026-10-31T23:30:00-04:00', 5, false, 0.1), "
                "('e2', 'a1', 'g', 'gpt-4o', '2026-10-02T00:00:00Z', 7, false, NULL), "
                "('e3', 'a1', 'g', 'gpt-4o', '2026-10-03T00:00:00Z', 1, false, 0.2)")
        migrate(url)
        with psycopg.connect(libpq_url(url)) as conn:
            rows = conn.execute("SELECT period, model, executions, input_tokens, cost_usd FROM usage_counters "
                                "ORDER BY period").fetchall()
        assert [(p, m, n, t, str(c)) for p, m, n, t, c in rows] == [
            ("2026-10", "gpt-4o", 2, 8, "0.20000000"), ("2026-11", "gpt-4o", 1, 5, "0.10000000")]
        engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={
                "compare_type": True, "include_name": include_name}), metadata) == []
        command.downgrade(alembic_config(url), "0001")
        migrate(url)
