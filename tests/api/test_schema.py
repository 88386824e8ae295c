"""Migration 0002: creates exactly what models/tables.py declares, backfills the counters of
executions recorded before it, and downgrades cleanly; migration 0018 fills each credit grant's
`remaining` from its ledger and keeps it by trigger."""

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


def test_migration_0018_fills_each_grant_with_its_ledger_sum_and_later_entries_keep_it(postgres_server_url):
    with scratch_database(postgres_server_url, "tally_mig18") as url:
        migrate(url, "ingested_at_btree_1")
        grant = ("INSERT INTO credit_grants (id, account_id, unit, amount, price, reference, granted_at, expires_at) "
                 "VALUES (%s, 'a1', 'credits', %s, 0, 'ops', '2026-10-01Z', '2027-10-01Z')")
        entry = ("INSERT INTO credit_ledger (id, account_id, grant_id, kind, unit, amount, occurred_at) "
                 "VALUES (%s, 'a1', %s, %s, 'credits', %s, '2026-10-02Z') ON CONFLICT (id) DO NOTHING")
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("INSERT INTO accounts (id, plan) VALUES ('a1', 'pro')")
            for g, amount in (("g1", 100), ("g2", 50), ("g3", 10)):
                conn.execute(grant, (g, amount))
            for e in (("l1", "g1", "grant", 100), ("l2", "g1", "consume", -30), ("l3", "g1", "consume", -5),
                      ("l4", "g2", "grant", 50)):  # g3: a grant without entries keeps 0
                conn.execute(entry, e)
        migrate(url)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            remaining = lambda: dict(conn.execute("SELECT id, remaining FROM credit_grants").fetchall())  # noqa: E731
            assert remaining() == {"g1": 65, "g2": 50, "g3": 0}
            conn.execute(entry, ("l5", "g2", "consume", -20))
            conn.execute(entry, ("l5", "g2", "consume", -20))  # a replay inserts nothing and takes nothing
            conn.execute(entry, ("l6", "g3", "grant", 10))
            assert remaining() == {"g1": 65, "g2": 30, "g3": 10}
        command.downgrade(alembic_config(url), "ingested_at_btree_1")
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute(entry, ("l7", "g1", "consume", -1))  # no trigger left behind
        migrate(url)
        with psycopg.connect(libpq_url(url)) as conn:
            assert dict(conn.execute("SELECT id, remaining FROM credit_grants").fetchall()) == {
                "g1": 64, "g2": 30, "g3": 10}
