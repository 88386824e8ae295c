"""Fault family: a poisoned item in a batch (issue 14, defects 2 and 5, and the API half of 6).

One bad item is rejected with its field and reason while the rest of the batch loads, over HTTP and
from a file; an error the API did not expect never drops the keep-alive connection; the database
being down is a 503 with Retry-After; events billing will never see are refused, not stored."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from activities.ingest import ingest_lines, known_models
from api.app import create_app
from billing.catalog import load_catalog
from billing.periods import Period, oldest_billed_period
from models.db import get_engine
from models.settings import Settings, get_settings
from services.platforms import new_api_key
from tests.api.conftest import NOW
from tests.factories import OCT_START, create_account, event, to_lines
from workers.cli import cli

MODELS = known_models(load_catalog())
POISON = "9999999999.999999995"  # passed the old bound, overflowed NUMERIC(18, 8) once rounded


def count(url: str, sql: str = "SELECT count(*) FROM executions") -> int:
    with get_engine(url).begin() as conn:
        return conn.exec_driver_sql(sql).scalar()


def keep_alive_exchange(url: str, key: str, bodies: list[bytes]) -> list[tuple[int, bytes]]:
    """POST each body to /v1/executions over ONE TCP connection (HTTP/1.1 keep-alive); the answers.
    A server that closed the connection after an answer makes the next exchange fail here."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        stream = sock.makefile("rb")
        for body in bodies:
            sock.sendall(b"POST /v1/executions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key.encode()
                         + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
            status_line = stream.readline()
            assert status_line, "the server closed the keep-alive connection"
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            assert headers.get("connection", "").lower() != "close"
            answers.append((int(status_line.split()[1]), stream.read(int(headers["content-length"]))))
    return answers


def test_a_poisoned_item_is_rejected_with_its_field_while_the_rest_of_the_batch_loads(api):
    key = api.platform("p1")
    api.account("a1", "payg", platform="p1")
    items = [event("a1", i, OCT_START + timedelta(minutes=i)) for i in range(1000)]
    items[10]["cost_usd"] = POISON
    items[20]["input_tokens"] = 10**12
    items[30]["routing_decision_id"], items[30]["routed_model"] = 2**63, "gpt-4o"
    (status, body), = keep_alive_exchange(api.url, key, [json.dumps({"executions": items}).encode()])
    assert status == 200
    doc = json.loads(body)
    assert (doc["accepted"], doc["duplicates"], doc["rejected"]) == (997, 0, 3)
    assert doc["results"][10]["errors"] == [{"field": "cost_usd", "reason": "must be at most 10,000 per execution"}]
    assert doc["results"][20]["errors"] == [{"field": "input_tokens", "reason": "must be at most 1,000,000,000"}]
    assert doc["results"][30]["errors"][0]["field"] == "routing_decision_id"
    assert count(api.database_url) == 997
    assert count(api.database_url, "SELECT sum(executions) FROM usage_counters") == 997


def test_a_cost_that_rounds_past_the_bound_is_rejected_not_stored():
    from activities.ingest import LineError, parse_execution

    doc = {**event("a1", 1, OCT_START), "cost_usd": "9999.999999996"}  # rounds to 10000.00000000: fine
    assert parse_execution(doc, MODELS, NOW)[9] == 10_000
    for bad in ("10000.000000001", POISON, "1E+400000"):
        with pytest.raises(LineError, match="cost_usd: must be at most 10,000"):
            parse_execution({**doc, "cost_usd": bad}, MODELS, NOW)


def test_an_unexpected_error_answers_500_and_keeps_the_connection(api, monkeypatch):
    key = api.platform("p1")
    api.account("a1", "payg", platform="p1")
    service = api.app.state.service
    real = service.record
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(*args)

    monkeypatch.setattr(service, "record", flaky)
    body = json.dumps(event("a1", 1, OCT_START)).encode()
    (first, _), (second, answer) = keep_alive_exchange(api.url, key, [body, body])
    assert (first, second) == (500, 200)
    assert json.loads(answer)["accepted"] == 1


def test_while_the_database_is_down_the_api_answers_503_with_retry_after(tmp_path):
    dead = "postgresql://postgres@127.0.0.1:1/tally"  # nothing listens there
    app = create_app(Settings(home=tmp_path, database_url=dead, api_secret="s"))
    with TestClient(app) as client:
        resp = client.post("/v1/executions", json=event("a1", 1, OCT_START),
                           headers={"Authorization": f"Bearer {new_api_key()}"})
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "5"
    assert resp.json()["error"]["type"] == "unavailable"


def test_the_cli_reports_a_poisoned_line_and_loads_the_rest_without_a_traceback(clean_db, tmp_path, monkeypatch):
    create_account(clean_db, "a1", "payg")
    docs = [event("a1", i, OCT_START + timedelta(minutes=i)) for i in range(50)]
    docs[7]["cost_usd"] = POISON
    path = tmp_path / "usage.jsonl"
    path.write_bytes(b"\n".join(to_lines(docs)))
    for name in ("DATABASE_URL", "TALLY_DATABASE_URL", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["usage", "ingest", str(path)], prog_name="tally",
                                    env={"DATABASE_URL": clean_db, "TALLY_HOME": str(tmp_path / "home")})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "accepted 49  duplicate 0  rejected 1" in result.output
    assert "line 8: cost_usd: must be at most 10,000 per execution" in result.output
    assert count(clean_db) == 49


# ---- defect 5: events billing will never see --------------------------------------------------
def test_the_oldest_billed_period_follows_the_lookback_and_the_grace():
    assert oldest_billed_period(datetime(2026, 11, 2, tzinfo=timezone.utc), 3, 48) == Period(2026, 7)  # Oct close to come
    assert oldest_billed_period(datetime(2026, 11, 3, tzinfo=timezone.utc), 3, 48) == Period(2026, 8)
    assert oldest_billed_period(datetime(2027, 1, 15, tzinfo=timezone.utc), 3, 48) == Period(2026, 10)


@pytest.mark.parametrize("batch_lines", [100_000, 1], ids=["one-batch", "a-batch-per-line"])
def test_events_older_than_any_close_bills_or_before_the_billing_start_are_rejected(clean_db, batch_lines):
    create_account(clean_db, "a1", "payg", billing_start=datetime(2026, 9, 15, tzinfo=timezone.utc))
    create_account(clean_db, "old", "payg", billing_start=datetime(2020, 1, 1, tzinfo=timezone.utc))
    now = datetime(2026, 10, 25, tzinfo=timezone.utc)  # oldest billed period: 2026-07
    docs = [
        event("old", 1, datetime(2016, 11, 30, tzinfo=timezone.utc)),
        {**event("old", 2, OCT_START), "occurred_at": "0001-01-01T00:00:00Z"},
        event("old", 3, datetime(2026, 6, 30, 23, 59, tzinfo=timezone.utc)),
        event("old", 4, datetime(2026, 7, 1, tzinfo=timezone.utc)),       # the first instant billed: kept
        event("a1", 5, datetime(2026, 9, 14, 23, 0, tzinfo=timezone.utc)),  # before its billing start
        event("a1", 6, datetime(2026, 9, 15, tzinfo=timezone.utc)),        # kept
    ]
    report = ingest_lines(clean_db, to_lines(docs), MODELS, now=now, batch_lines=batch_lines)
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, 4)
    reasons = {r.line: r.reason for r in report.rejections}
    assert reasons[1].startswith("occurred_at: 2016-11-30T00:00:00Z is before 2026-07, the oldest period a close "
                                 "still bills")
    assert reasons[2].startswith("occurred_at: 0001-01-01T00:00:00Z is before 2026-07")
    assert reasons[3].startswith("occurred_at: 2026-06-30T23:59:00Z is before 2026-07")
    assert reasons[5] == ("occurred_at: 2026-09-14T23:00:00Z is before the account's billing start (2026-09-15); "
                          "it would never be billed")
    assert count(clean_db) == 2


def test_the_api_rejects_an_event_billing_will_never_see_with_the_reason(api):
    key = api.platform("p1")
    api.account("a1", "payg", platform="p1")
    old = event("a1", 1, datetime(2016, 11, 30, tzinfo=timezone.utc))
    body = api.client(key).post("/v1/executions", json={"executions": [old, event("a1", 2, OCT_START)]}).json()
    assert [r["status"] for r in body["results"]] == ["rejected", "accepted"]
    assert body["results"][0]["errors"][0]["field"] == "occurred_at"
    assert "never be billed" in body["results"][0]["errors"][0]["reason"]
