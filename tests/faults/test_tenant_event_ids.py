"""Fault family: two tenants with the same event ids (issue 14, defect 1).

Event ids are unique per tenant (the account's platform), not globally: another tenant's ids never
make an execution a `duplicate` (usage lost and ids leaked), and within a tenant a replay is a
duplicate only when its content is the same; the same id with other content is rejected."""

from __future__ import annotations

import importlib
from datetime import timedelta

import psycopg
import pytest

from activities.ingest import REUSED_ID, content_hash, ingest_lines, known_models, parse_execution
from billing.catalog import load_catalog
from models.db import get_engine, libpq_url, migrate
from services.platforms import attach_accounts
from tests.api.conftest import NOW
from tests.conftest import scratch_database
from tests.factories import OCT_START, create_account, event, to_lines

# The migration by its file name (one Python cannot import with a plain import statement).
reliability = importlib.import_module("migrations.versions.0011_reliability")
CONTENT_HASH_SQL = reliability.CONTENT_HASH_SQL

MODELS = known_models(load_catalog())


def scalar(url: str, sql: str, *args):
    with get_engine(url).begin() as conn:
        return conn.exec_driver_sql(sql, args).scalar()


def batch(account: str, n: int, prefix: str = "evt") -> list[dict]:
    return [{**event(account, i, OCT_START + timedelta(minutes=i)), "event_id": f"{prefix}-{i}"} for i in range(n)]


def test_another_platforms_event_ids_are_accepted_and_billed_not_duplicates(api):
    key_a, key_b = api.platform("pa"), api.platform("pb")
    api.account("a1", "payg", platform="pa")
    api.account("b1", "payg", platform="pb")
    first = api.client(key_a).post("/v1/executions", json={"executions": batch("a1", 1000)}).json()
    second = api.client(key_b).post("/v1/executions", json={"executions": batch("b1", 1000)}).json()
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (1000, 0, 0)
    assert (second["accepted"], second["duplicates"], second["rejected"]) == (1000, 0, 0)
    for account in ("a1", "b1"):
        assert scalar(api.database_url, "SELECT count(*) FROM executions WHERE account_id = %s", account) == 1000
        assert scalar(api.database_url, "SELECT sum(executions) FROM usage_counters WHERE account_id = %s",
                      account) == 1000


def test_a_replay_is_a_duplicate_whatever_its_json_spelling(api):
    key = api.platform("pa")
    api.account("a1", "payg", platform="pa")
    doc = {**event("a1", 1, OCT_START), "cost_usd": "0.1"}
    same = {**doc, "cost_usd": 0.10, "occurred_at": "2026-09-30T20:00:00-04:00"}  # the same instant and amount
    c = api.client(key)
    assert c.post("/v1/executions", json=doc).json()["accepted"] == 1
    assert c.post("/v1/executions", json=same).json()["results"] == [
        {"event_id": "a1-1", "status": "duplicate", "errors": []}]


def test_an_event_id_reused_with_other_content_is_rejected_not_duplicate(api):
    key = api.platform("pa")
    api.account("a1", "payg", platform="pa")
    api.account("a2", "payg", platform="pa")
    c = api.client(key)
    assert c.post("/v1/executions", json=event("a1", 1, OCT_START)).json()["accepted"] == 1
    other_account = {**event("a2", 1, OCT_START), "event_id": "a1-1"}
    other_tokens = {**event("a1", 1, OCT_START), "input_tokens": 5}
    body = c.post("/v1/executions", json={"executions": [other_account, other_tokens]}).json()
    assert body["results"] == [
        {"event_id": "a1-1", "status": "rejected", "errors": [{"field": "event_id", "reason": REUSED_ID}]}] * 2
    # in one batch too: the first item is recorded, a later one with other content rejected
    fresh = event("a1", 2, OCT_START)
    body = c.post("/v1/executions", json={"executions": [fresh, {**fresh, "agent_id": "x"}, fresh]}).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "duplicate"]
    assert scalar(api.database_url, "SELECT count(*) FROM executions") == 2
    assert scalar(api.database_url, "SELECT sum(executions) FROM usage_counters") == 2


@pytest.mark.parametrize("batch_lines", [100_000, 1], ids=["one-batch", "a-batch-per-line"])
def test_file_ingest_scopes_event_ids_to_the_accounts_platform(clean_db, batch_lines):
    create_account(clean_db, "a1", "payg")
    create_account(clean_db, "b1", "payg")
    create_account(clean_db, "b2", "payg")
    engine = get_engine(clean_db)
    from repositories import platforms
    from services.platforms import hash_key
    with engine.begin() as conn:
        platforms.create_platform(conn, "pa", hash_key("ka"))
        platforms.create_platform(conn, "pb", hash_key("kb"))
    attach_accounts(engine, "pa", ["a1"])
    attach_accounts(engine, "pb", ["b1", "b2"])
    first = ingest_lines(clean_db, to_lines(batch("a1", 300)), MODELS, batch_lines=batch_lines)
    assert (first.accepted, first.duplicates, first.rejected) == (300, 0, 0)
    # the same ids on platform pb: new; then pb's other account reusing them: rejected
    second = ingest_lines(clean_db, to_lines(batch("b1", 300) + batch("b2", 2)), MODELS, batch_lines=batch_lines)
    assert (second.accepted, second.duplicates, second.rejected) == (300, 0, 2)
    assert {r.reason for r in second.rejections} == {REUSED_ID}
    again = ingest_lines(clean_db, to_lines(batch("a1", 300) + batch("b1", 300)), MODELS, batch_lines=batch_lines)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 600, 0)
    assert scalar(clean_db, "SELECT count(*) FROM executions") == 600
    assert scalar(clean_db, "SELECT count(*) FROM execution_ids") == 600
    assert scalar(clean_db, "SELECT sum(executions) FROM usage_counters") == 600


def test_an_account_joining_a_platform_brings_its_event_ids(clean_db):
    create_account(clean_db, "a1", "payg")
    engine = get_engine(clean_db)
    from repositories import platforms
    from services.platforms import hash_key
    with engine.begin() as conn:
        platforms.create_platform(conn, "pa", hash_key("ka"))
    assert ingest_lines(clean_db, to_lines(batch("a1", 5)), MODELS).accepted == 5  # no platform yet: tenant 0
    attach_accounts(engine, "pa", ["a1"])
    again = ingest_lines(clean_db, to_lines(batch("a1", 5)), MODELS)
    assert (again.accepted, again.duplicates) == (0, 5)


def test_the_migrations_backfill_digest_equals_the_ingest_digest(clean_db):
    create_account(clean_db, "a1", "payg")
    docs = [event("a1", 1, OCT_START),
            {**event("a1", 2, OCT_START), "cost_usd": "0", "skill_id": None, "byok": True, "sandbox": True},
            {**event("a1", 3, OCT_START), "cost_usd": "12.345678901", "occurred_at": "2026-10-03T01:02:03.456789Z"},
            {**event("a1", 4, OCT_START), "routed_model": "gpt-4o", "routing_decision_id": 42,
             "requested_model": "claude-opus"}]
    assert ingest_lines(clean_db, to_lines(docs), MODELS).accepted == 4
    with psycopg.connect(libpq_url(clean_db)) as conn:
        stored = dict(conn.execute("SELECT event_id, content_hash FROM execution_ids").fetchall())
        recomputed = dict(conn.execute(f"SELECT e.event_id, {CONTENT_HASH_SQL} FROM executions e").fetchall())
    expected = {d["event_id"]: content_hash(parse_execution(d, MODELS, NOW)) for d in docs}
    assert stored == recomputed == expected


def test_the_migration_backfills_existing_executions_and_keys_them_by_account(postgres_server_url):
    with scratch_database(postgres_server_url) as url:
        migrate(url, "alerts_1")
        create_account(url, "a1", "payg")
        with psycopg.connect(libpq_url(url)) as conn:
            for d in batch("a1", 45):
                conn.execute(
                    "INSERT INTO executions (event_id, account_id, agent_id, skill_id, model, input_tokens, "
                    "output_tokens, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (d["event_id"], d["account_id"], d["agent_id"], d["skill_id"], d["model"], d["input_tokens"],
                     d["output_tokens"], d["occurred_at"]))
        reliability.BACKFILL_BATCH, saved = 10, reliability.BACKFILL_BATCH  # several batches
        try:
            migrate(url, "reliability_1")
        finally:
            reliability.BACKFILL_BATCH = saved
        assert scalar(url, "SELECT count(*) FROM execution_ids WHERE platform_id = 0") == 45
        assert scalar(url, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_executions'") \
            == "PRIMARY KEY (account_id, event_id)"
        migrate(url)  # and on to the later ones (the month partitions of issue 15)
        replay = ingest_lines(url, to_lines(batch("a1", 46)), MODELS)
        assert (replay.accepted, replay.duplicates, replay.rejected) == (1, 45, 0)
        get_engine(url).dispose()
