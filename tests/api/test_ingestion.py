"""POST /v1/executions: per-item results, the bulk path's validation, idempotency by event id."""

from __future__ import annotations

import json
from datetime import timedelta

from activities.ingest import LineError, known_models, parse_line
from billing.catalog import load_catalog
from models.db import get_engine
from tests.api.conftest import NOW
from tests.factories import OCT_START, event

MODELS = known_models(load_catalog())


def count(url: str, sql: str = "SELECT count(*) FROM executions") -> int:
    with get_engine(url).begin() as conn:
        return conn.exec_driver_sql(sql).scalar()


def test_one_execution_is_accepted_and_its_replay_answers_duplicate(api):
    key = api.platform("p1")
    api.account("a1", "pro", platform="p1")
    c = api.client(key)
    doc = event("a1", 1, OCT_START)
    first = c.post("/v1/executions", json=doc)
    assert first.status_code == 200
    assert first.json() == {"results": [{"event_id": "a1-1", "status": "accepted", "errors": []}],
                            "accepted": 1, "duplicates": 0, "rejected": 0}
    again = c.post("/v1/executions", json=doc)
    assert again.status_code == 200
    assert again.json()["results"] == [{"event_id": "a1-1", "status": "duplicate", "errors": []}]
    assert count(api.database_url) == 1


def test_a_batch_rejects_only_its_bad_items_naming_field_and_reason(api):
    key = api.platform("p1")
    api.account("a1", "pro", platform="p1")
    good = [event("a1", i, OCT_START + timedelta(minutes=i)) for i in range(3)]
    bad_model = {**event("a1", 10, OCT_START), "model": "gpt-9", "input_tokens": -5}
    missing = {k: v for k, v in event("a1", 11, OCT_START).items() if k != "agent_id"}
    naive = {**event("a1", 12, OCT_START), "occurred_at": "2026-10-02T10:00:00"}
    future = {**event("a1", 13, OCT_START), "occurred_at": (NOW + timedelta(hours=1)).isoformat()}
    batch = [good[0], bad_model, good[1], missing, naive, future, "not an object", good[2], good[0]]
    resp = api.client(key).post("/v1/executions", json={"executions": batch})
    assert resp.status_code == 200  # well-formed: 200 even with rejected items
    body = resp.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["accepted", "rejected", "accepted", "rejected", "rejected", "rejected", "rejected",
                        "accepted", "duplicate"]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 1, 5)
    results = body["results"]
    assert results[1] == {"event_id": "a1-10", "status": "rejected", "errors": [
        {"field": "model", "reason": "unknown model 'gpt-9'"},
        {"field": "input_tokens", "reason": "must not be negative"},
    ]}
    assert results[3]["errors"] == [{"field": "agent_id", "reason": "required"}]
    assert results[4]["errors"][0]["field"] == "occurred_at" and "time zone" in results[4]["errors"][0]["reason"]
    assert "future" in results[5]["errors"][0]["reason"]
    assert results[6] == {"event_id": None, "status": "rejected",
                          "errors": [{"field": None, "reason": "not a JSON object"}]}
    assert count(api.database_url) == 3


def test_items_are_checked_by_the_bulk_paths_own_validation(api):
    """Each single-fault item gets the very message `tally usage ingest` gives for the same line."""
    key = api.platform("p1")
    api.account("a1", "pro", platform="p1")
    base = event("a1", 1, OCT_START)
    faults = [
        {**base, "event_id": ""}, {**base, "byok": "yes"}, {**base, "cost_usd": "abc"},
        {**base, "skill_id": 7}, {**base, "output_tokens": 1.5}, {**base, "occurred_at": "yesterday"},
        {**base, "event_id": "x" * 129}, {**base, "agent_id": "a\x00b"}, {**base, "input_tokens": 10**13},
        {**base, "cost_usd": "1e12"}, {**base, "occurred_at": "0001-01-01T00:00:00+05:00"},
    ]
    resp = api.client(key).post("/v1/executions", json={"executions": faults})
    assert resp.json()["rejected"] == len(faults)
    for doc, result in zip(faults, resp.json()["results"]):
        try:
            parse_line(json.dumps(doc).encode(), MODELS, NOW)
            raise AssertionError(f"the bulk path accepted {doc}")
        except LineError as err:
            assert result["errors"] == [{"field": err.field, "reason": err.reason}]
            assert str(err) == f"{err.field}: {err.reason}"


def test_accounts_of_another_platform_or_of_none_are_unknown(api):
    key1 = api.platform("p1")
    api.platform("p2")
    api.account("mine", "pro", platform="p1")
    api.account("theirs", "pro", platform="p2")
    api.account("orphan", "pro")
    docs = [event("mine", 1, OCT_START), event("theirs", 1, OCT_START), event("orphan", 1, OCT_START),
            event("ghost", 1, OCT_START)]
    body = api.client(key1).post("/v1/executions", json={"executions": docs}).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "rejected", "rejected"]
    assert body["results"][1]["errors"] == [{"field": "account_id", "reason": "unknown account 'theirs'"}]
    assert body["results"][3]["errors"] == [{"field": "account_id", "reason": "unknown account 'ghost'"}]
    assert count(api.database_url) == 1


def test_a_batch_of_1000_is_recorded_and_1001_is_refused_with_413(api):
    key = api.platform("p1")
    api.account("a1", "payg", platform="p1")
    docs = [event("a1", i, OCT_START + timedelta(seconds=i)) for i in range(1001)]
    c = api.client(key)
    too_many = c.post("/v1/executions", json={"executions": docs})
    assert too_many.status_code == 413
    assert too_many.json()["error"] == {"type": "too_large", "field": "executions",
                                        "message": "executions: at most 1,000 per request, got 1,001; split the batch"}
    ok = c.post("/v1/executions", json={"executions": docs[:1000]})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1000
    assert count(api.database_url) == 1000


def test_malformed_bodies_are_4xx_with_the_error_shape(api):
    key = api.platform("p1")
    c = api.client(key)
    cases = [
        (b"{not json", 400, "invalid_json", "body"),
        (b"[1, 2]", 422, "invalid_request", "body"),
        (b'{"executions": 5}', 422, "invalid_request", "executions"),
        (b'"text"', 422, "invalid_request", "body"),
    ]
    for raw, status, kind, field in cases:
        resp = c.post("/v1/executions", content=raw, headers={"Content-Type": "application/json"})
        assert resp.status_code == status, raw
        error = resp.json()["error"]
        assert (error["type"], error["field"]) == (kind, field)
        assert error["message"].startswith(f"{field}: ")


def test_counters_follow_inserted_rows_only(api):
    key = api.platform("p1")
    api.account("a1", "payg", platform="p1")
    c = api.client(key)
    docs = [event("a1", i, OCT_START + timedelta(hours=i), byok=i % 2 == 0, cost_usd="0.00125")
            for i in range(10)]
    c.post("/v1/executions", json={"executions": docs})
    c.post("/v1/executions", json={"executions": docs[:5]})  # replays change nothing
    with get_engine(api.database_url).begin() as conn:
        rows = conn.exec_driver_sql(
            "SELECT model, byok, sandbox, executions, input_tokens, cost_usd FROM usage_counters "
            "WHERE account_id = 'a1' AND period = '2026-10' ORDER BY model, byok").all()
        truth = conn.exec_driver_sql(
            "SELECT model, byok, sandbox, count(*), sum(input_tokens), sum(cost_usd) FROM executions "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2").all()
    assert [tuple(r) for r in rows] == [tuple(r) for r in truth]
    assert sum(r[3] for r in rows) == 10
