"""Executions partitioned by month (issue 15): the migration on a table with rows, partitions created
ahead with strays moved out of the default partition, a month's rollup reading one partition, and
archive / restore of old months as a round trip with deduplication still exact."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from alembic import command

from activities.ingest import ingest_lines, known_models
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import alembic_config, get_engine, libpq_url, migrate
from repositories import partitions as repo
from services import partitions
from services.errors import InvalidInput
from tests.conftest import scratch_database
from tests.factories import create_account, event, to_lines

MODELS = known_models(load_catalog())
NOW = datetime(2026, 10, 25, 12, 0, tzinfo=timezone.utc)
COLUMNS = ("event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens, byok, sandbox, "
           "cost_usd, occurred_at, routed_model, routing_decision_id, requested_model")


def all_rows(url: str) -> list[tuple]:
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM executions ORDER BY account_id, event_id").fetchall()


def scalar(url: str, sql: str, *args):
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(sql, args).fetchone()[0]


def month_docs(account: str, period: Period, n: int, prefix: str) -> list[dict]:
    return [{**event(account, i, period.start + timedelta(hours=i)), "event_id": f"{prefix}-{i}"} for i in range(n)]


def ingest_before_uncosted_counters(url: str, docs: list[dict]):
    """Today's ingest into a schema older than migration 0015: it writes the counters' uncosted tokens,
    which that schema lacks, so the two columns are lent for the load and dropped again (the counters
    then hold what the older Tally wrote; 0015 adds the columns back as NULL)."""
    columns = ("uncosted_input_tokens", "uncosted_output_tokens")
    with psycopg.connect(libpq_url(url)) as conn:
        for c in columns:
            conn.execute(f"ALTER TABLE usage_counters ADD COLUMN {c} bigint")
    report = ingest_lines(url, to_lines(docs), MODELS, now=NOW)
    get_engine(url).dispose()
    with psycopg.connect(libpq_url(url)) as conn:
        for c in columns:
            conn.execute(f"ALTER TABLE usage_counters DROP COLUMN {c}")
    return report


def scanned_tables(url: str, period: Period) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT account_id, model, count(*) FROM executions "
            "WHERE occurred_at >= %s AND occurred_at < %s GROUP BY 1, 2", (period.start, period.end)).fetchone()[0]
    found: set[str] = set()

    def walk(node):
        if "Relation Name" in node:
            found.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_the_migration_partitions_a_table_with_rows_by_month_and_keeps_every_row(postgres_server_url):
    with scratch_database(postgres_server_url, "tally_part") as url:
        migrate(url, "reliability_1")
        create_account(url, "a1", "payg")
        docs = [d for p in ("2026-08", "2026-09", "2026-10") for d in month_docs("a1", Period.parse(p), 30, p)]
        assert ingest_before_uncosted_counters(url, docs).accepted == 90
        before = all_rows(url)
        migrate(url)
        assert all_rows(url) == before
        # counted before the uncosted tokens were: NULL, never a made-up 0 (rating reads executions then)
        assert scalar(url, "SELECT count(*) FROM usage_counters WHERE uncosted_input_tokens IS NULL "
                           "AND uncosted_output_tokens IS NULL") == scalar(url, "SELECT count(*) FROM usage_counters") == 3
        with psycopg.connect(libpq_url(url)) as conn:
            months = [str(p) for p in repo.month_partitions(conn)]
        assert {"2026-08", "2026-09", "2026-10"} <= set(months)
        for p in ("2026-08", "2026-09", "2026-10"):
            assert scalar(url, f"SELECT count(*) FROM executions_{p.replace('-', '_')}") == 30
        assert scalar(url, "SELECT count(*) FROM executions_default") == 0
        assert scanned_tables(url, Period.parse("2026-09")) == {"executions_2026_09"}
        replay = ingest_lines(url, to_lines(docs), MODELS, now=NOW)  # deduplicated across partitions
        assert (replay.accepted, replay.duplicates) == (0, 90)
        get_engine(url).dispose()
        command.downgrade(alembic_config(url), "reliability_1")
        assert all_rows(url) == before
        assert scalar(url, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_executions'") \
            == "PRIMARY KEY (account_id, event_id)"
        migrate(url)
        assert all_rows(url) == before


def test_partitions_are_created_ahead_and_a_month_in_the_default_partition_gets_its_own(clean_db):
    create_account(clean_db, "a1", "payg")
    with psycopg.connect(libpq_url(clean_db)) as conn:  # a month nobody created a partition for
        conn.execute("DROP TABLE IF EXISTS executions_2031_01")
        conn.execute(f"INSERT INTO executions ({COLUMNS}) VALUES ('x1', 'a1', 'g', NULL, 'gpt-4o', 1, 2, false, "
                     "false, NULL, '2031-01-10T00:00:00Z', NULL, NULL, NULL)")
    assert scalar(clean_db, "SELECT count(*) FROM executions_default") == 1
    done = partitions.ensure(clean_db, datetime(2030, 11, 5, tzinfo=timezone.utc), months_ahead=3)
    assert done.created == ["2030-11", "2030-12", "2031-01", "2031-02"]
    assert done.from_default == ["2031-01"]
    assert scalar(clean_db, "SELECT count(*) FROM executions_default") == 0
    assert scalar(clean_db, "SELECT count(*) FROM executions_2031_01") == 1
    again = partitions.ensure(clean_db, datetime(2030, 11, 6, tzinfo=timezone.utc), months_ahead=3)
    assert again.created == [] and again.from_default == []


def test_archived_months_are_dropped_from_executions_and_restored_exactly(clean_db, tmp_path):
    create_account(clean_db, "a1", "payg")
    docs = [d for p in ("2026-07", "2026-08") for d in month_docs("a1", Period.parse(p), 40, p)]
    assert ingest_lines(clean_db, to_lines(docs), MODELS, now=NOW).accepted == 80
    before = all_rows(clean_db)
    counters = scalar(clean_db, "SELECT sum(executions) FROM usage_counters")
    later = datetime(2027, 1, 15, tzinfo=timezone.utc)

    archived = partitions.archive(clean_db, Period.parse("2026-08"), tmp_path, later)
    july = next(m for m in archived if m.period == "2026-07")
    assert july.rows == 40 and july.path == tmp_path / "executions-2026-07.copy.gz"
    assert not any(m.period == "2026-08" for m in archived)
    assert scalar(clean_db, "SELECT to_regclass('executions_2026_07') IS NULL")
    assert scalar(clean_db, "SELECT count(*) FROM executions WHERE occurred_at < '2026-08-01'") == 0
    assert scalar(clean_db, "SELECT count(*) FROM executions") == 40
    assert scalar(clean_db, "SELECT sum(executions) FROM usage_counters") == counters  # counters stay
    replay = ingest_lines(clean_db, to_lines(docs[:40]), MODELS, now=NOW)
    assert (replay.accepted, replay.duplicates) == (0, 40)  # the archived ids are still known
    months = [Period.parse(p) for p in ("2026-06", "2026-07", "2026-08")]
    with psycopg.connect(libpq_url(clean_db)) as conn:  # recorded, so invoices verify can refuse the month
        assert repo.archived_months(conn, months) == [("2026-07", 40, str(july.path))]

    restored = partitions.restore(clean_db, july.path)
    assert restored.rows == 40
    assert all_rows(clean_db) == before
    with psycopg.connect(libpq_url(clean_db)) as conn:
        assert repo.archived_months(conn, months) == []
    with pytest.raises(FileExistsError, match="has executions already"):
        partitions.restore(clean_db, july.path)
    assert all_rows(clean_db) == before


def test_months_a_close_still_reads_are_not_archived(clean_db, tmp_path):
    with pytest.raises(InvalidInput, match="too recent"):
        partitions.archive(clean_db, Period.parse("2026-08"), tmp_path, NOW)  # late usage reaches 2026-07
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_archive_restores_nothing(clean_db, tmp_path):
    create_account(clean_db, "a1", "payg")
    assert ingest_lines(clean_db, to_lines(month_docs("a1", Period.parse("2026-07"), 5, "j")), MODELS,
                        now=NOW).accepted == 5
    [july] = [m for m in partitions.archive(clean_db, Period.parse("2026-08"), tmp_path,
                                            datetime(2027, 1, 15, tzinfo=timezone.utc)) if m.period == "2026-07"]
    with gzip.open(july.path, "rb") as fh:
        data = fh.read()
    bad = tmp_path / "cut.copy.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(data.replace(b"2026-07 5", b"2026-07 6"))  # the header no longer matches the rows
    with pytest.raises(ValueError, match="nothing restored"):
        partitions.restore(clean_db, bad)
    assert scalar(clean_db, "SELECT count(*) FROM executions") == 0


def test_the_schedules_activity_creates_the_months_ahead_of_its_clock(clean_db, tmp_path):
    from activities.deps import Deps
    from activities.partitions import PartitionActivities
    from models.schemas import PartitionsInput
    from models.settings import Settings

    deps = Deps(Settings(home=tmp_path, database_url=clean_db), clock=lambda: datetime(2032, 5, 3, tzinfo=timezone.utc))
    result = PartitionActivities(deps).ensure_execution_partitions(PartitionsInput(months_ahead=2))
    assert result.created == ["2032-05", "2032-06", "2032-07"]
    assert PartitionActivities(deps).ensure_execution_partitions(PartitionsInput(months_ahead=2)).created == []


def test_the_cli_archives_and_restores_a_month_and_refuses_recent_ones(clean_db, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from models.settings import get_settings
    from workers.cli import cli

    create_account(clean_db, "a1", "payg")
    now = datetime.now(timezone.utc)
    old = Period.of(now).previous().previous().previous().previous().previous()  # 5 months back: archivable
    with psycopg.connect(libpq_url(clean_db)) as conn:  # older than ingest accepts: written directly
        conn.execute(f"INSERT INTO executions ({COLUMNS}) VALUES ('o1', 'a1', 'g', NULL, 'gpt-4o', 1, 2, false, "
                     "false, NULL, %s, NULL, NULL, NULL)", (old.start + timedelta(days=2),))
    for name in ("DATABASE_URL", "TALLY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    env = {"DATABASE_URL": clean_db, "TALLY_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    get_settings.cache_clear()
    try:
        recent = runner.invoke(cli, ["usage", "archive", "--before", str(Period.of(now))], env=env)
        assert recent.exit_code != 0 and "too recent" in recent.output
        monkeypatch.chdir(tmp_path)
        done = runner.invoke(cli, ["usage", "archive", "--before", str(old.next()), "--dir", "a"], env=env)
        assert done.exit_code == 0, done.output
        assert f"{old}: 1 executions" in done.output
        assert scalar(clean_db, "SELECT count(*) FROM executions") == 0
        path = tmp_path / "a" / f"executions-{old}.copy.gz"
        listed = runner.invoke(cli, ["usage", "partitions"], env=env)  # the file by its absolute path
        assert listed.exit_code == 0 and f"archived {old}: 1 executions in {path}\n" in listed.output, listed.output
        back = runner.invoke(cli, ["usage", "restore", str(path)], env=env)
        assert back.exit_code == 0 and f"{old}: 1 executions restored" in back.output
        assert scalar(clean_db, "SELECT event_id FROM executions") == "o1"
        assert "archived" not in runner.invoke(cli, ["usage", "partitions"], env=env).output
    finally:
        get_settings.cache_clear()
