"""POST /v1/executions recorded in a process of its own (api/ingest_process.py, what `tally api` runs):
the same answers as the in-process path, at the serving process's clock, while the serving process
keeps answering entitlement checks; a recorder that dies is replaced."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from api.app import create_app
from models.db import libpq_url
from models.settings import Settings
from tests.api.conftest import NOW, Clock, LiveApi, serving
from tests.factories import OCT_START, event


@pytest.fixture(scope="module")
def proc_server(database_url, tmp_path_factory):
    clock = Clock()
    settings = Settings(home=tmp_path_factory.mktemp("tally-api-proc-home"), database_url=database_url,
                        api_secret="test-secret-for-billing-links")
    app = create_app(settings, clock=clock, ingest_processes=1)
    assert app.state.ingest.ready()
    with serving(app) as url:
        yield LiveApi(url, app, clock, settings, database_url)
    app.state.ingest.close()


@pytest.fixture
def papi(proc_server, clean_db):
    proc_server.clock.now = NOW
    yield proc_server
    for c in proc_server.clients:
        c.close()
    proc_server.clients.clear()


def rows(url: str, sql: str):
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(sql).fetchall()


def test_a_batch_recorded_in_its_own_process_gets_every_per_item_answer(papi):
    key = papi.platform("p1")
    papi.account("a1", "pro", platform="p1")
    good = [event("a1", i, OCT_START + timedelta(minutes=i)) for i in range(3)]
    bad = {**event("a1", 10, OCT_START), "model": "gpt-9", "input_tokens": -5}
    stranger = event("zz", 11, OCT_START)
    batch = [good[0], bad, good[1], stranger, good[2], good[0]]
    body = papi.client(key).post("/v1/executions", json={"executions": batch}).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted", "rejected", "accepted",
                                                      "duplicate"]
    assert body["results"][1]["errors"] == [{"field": "model", "reason": "unknown model 'gpt-9'"},
                                            {"field": "input_tokens", "reason": "must not be negative"}]
    assert body["results"][3]["errors"] == [{"field": "account_id", "reason": "unknown account 'zz'"}]
    again = papi.client(key).post("/v1/executions", json={"executions": good}).json()
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 3
    assert rows(papi.database_url, "SELECT count(*) FROM executions") == [(3,)]
    assert rows(papi.database_url, "SELECT sum(executions) FROM usage_counters") == [(3,)]
    entitlement = papi.client(key).get("/v1/accounts/a1/entitlement", params={"model": "claude-haiku"}).json()
    assert entitlement["used"] == 3


def test_bad_bodies_are_refused_by_the_recording_process_with_field_and_reason(papi):
    key = papi.platform("p1")
    c = papi.client(key)
    resp = c.post("/v1/executions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "body"
    resp = c.post("/v1/executions", json={"executions": 5})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "executions"


def test_the_recording_process_uses_the_serving_processes_clock(papi):
    """The API's clock says 2026-10-25 12:00: an event an hour later is in the future there, whatever
    the machine's clock says."""
    key = papi.platform("p1")
    papi.account("a1", "pro", platform="p1")
    late = event("a1", 1, NOW + timedelta(hours=1))
    result = papi.client(key).post("/v1/executions", json=late).json()["results"][0]
    assert result["status"] == "rejected" and "future" in result["errors"][0]["reason"]


def test_entitlements_answer_while_a_batch_waits_in_its_recording_process(papi):
    key = papi.platform("p1")
    papi.account("a1", "pro", platform="p1")
    c = papi.client(key)
    assert c.post("/v1/executions", json=event("a1", 0, OCT_START)).json()["accepted"] == 1
    answers: list = []
    with psycopg.connect(libpq_url(papi.database_url)) as blocker:
        blocker.execute("SELECT 1 FROM usage_counters WHERE account_id = 'a1' FOR UPDATE")  # the batch waits on it
        poster = threading.Thread(target=lambda: answers.append(papi.client(key).post(
            "/v1/executions", json={"executions": [event("a1", i, OCT_START) for i in range(1, 5)]})))
        poster.start()
        deadline = time.monotonic() + 30
        while not rows(papi.database_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND datname = current_database()"):
            assert time.monotonic() < deadline, "the batch never reached the locked counter"
            time.sleep(0.05)
        for _ in range(20):
            resp = c.get("/v1/accounts/a1/entitlement", params={"model": "claude-haiku"})
            assert resp.status_code == 200 and resp.json()["used"] == 1
        assert not answers  # still waiting
        blocker.rollback()
    poster.join(timeout=30)
    assert answers[0].status_code == 200 and answers[0].json()["accepted"] == 4


def test_a_recording_process_that_dies_answers_503_and_is_replaced(papi):
    key = papi.platform("p1")
    papi.account("a1", "pro", platform="p1")
    pool = papi.app.state.ingest._pool
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not pool._broken:
        assert time.monotonic() < deadline, "the pool never noticed its dead process"
        time.sleep(0.05)
    c = papi.client(key)
    refused = c.post("/v1/executions", json=event("a1", 1, OCT_START))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["type"] == "unavailable"
    again = c.post("/v1/executions", json=event("a1", 1, OCT_START))
    assert again.status_code == 200 and again.json()["accepted"] == 1
