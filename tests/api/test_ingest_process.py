"""POST /v1/executions recorded in a process of its own (api/ingest_process.py, what `tally api` runs):
the same answers as the in-process path, at the serving process's clock, while the serving process
keeps answering entitlement checks; a recorder that dies is replaced."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import orjson
import psycopg
import pytest

from api.app import create_app
from api.errors import DATABASE_RETRY_AFTER_SECONDS
from models.db import libpq_url
from models.settings import Settings
from tests.alerts_support import payg_with_budget
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


def kill(pool) -> None:
    """SIGKILL a process pool's processes and wait until the pool knows."""
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not pool._broken:
        assert time.monotonic() < deadline, "the pool never noticed its dead process"
        time.sleep(0.05)


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


def test_the_recorders_alerts_are_evaluated_once_by_the_serving_processes_alerts_process(papi):
    """The recording process evaluates no alert itself: its call answers the accounts it recorded and the
    serving process hands them to its AlertsProcess, where a budget the batch crossed is recorded."""
    client = payg_with_budget(papi)
    before = papi.app.state.alerts.settle()
    docs = [event("payg-1", i, NOW - timedelta(hours=2, seconds=-i)) for i in range(60)]
    assert client.post("/v1/executions", json={"executions": docs}).json()["accepted"] == 60
    assert papi.app.state.alerts.settle() - before == 1  # evaluated there, once
    assert rows(papi.database_url, "SELECT threshold FROM budget_crossings WHERE account_id = 'payg-1'") == [(50,)]


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
    kill(pool)
    c = papi.client(key)
    refused = c.post("/v1/executions", json=event("a1", 1, OCT_START))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["type"] == "unavailable"
    again = c.post("/v1/executions", json=event("a1", 1, OCT_START))
    assert again.status_code == 200 and again.json()["accepted"] == 1


def test_an_alerts_process_that_dies_is_replaced_and_the_next_batch_is_evaluated_there(papi):
    client = payg_with_budget(papi)
    alerts = papi.app.state.alerts
    alerts.settle()
    pool = alerts._pool
    kill(pool)
    docs = [event("payg-1", i, NOW - timedelta(hours=2, seconds=-i)) for i in range(60)]
    assert client.post("/v1/executions", json={"executions": docs}).json()["accepted"] == 60  # the batch never waits for it
    assert alerts._pool is not pool
    assert alerts.settle() == 1  # a new process, which evaluated the batch's account
    assert rows(papi.database_url, "SELECT threshold FROM budget_crossings WHERE account_id = 'payg-1'") == [(50,)]


def test_batches_that_wait_for_a_busy_recorder_are_recorded_as_one_and_each_gets_its_own_answer(papi):
    key = papi.platform("p1")
    papi.account("a1", "pro", platform="p1")
    papi.account("a2", "pro", platform="p1")
    c = papi.client(key)
    assert c.post("/v1/executions", json=event("a1", 0, OCT_START)).json()["accepted"] == 1
    ingest = papi.app.state.ingest
    sent_before = ingest.sent.copy()
    shared = event("a2", 50, OCT_START)
    bodies = {
        "first": [event("a1", i, OCT_START) for i in range(1, 5)],  # waits on the locked counter
        "second": [event("a2", 1, OCT_START), shared],
        "queued": [event("a1", 9, OCT_START)],  # queued for the child, goes alone
        "third": [shared, {**shared, "event_id": "a2-51"}, {**shared, "event_id": "a2-52", "model": "gpt-9"},
                  {**event("a2", 1, OCT_START), "input_tokens": 7}],
    }
    answers: dict = {}

    def post(name):
        answers[name] = papi.client(key).post("/v1/executions", json={"executions": bodies[name]})

    posters = {name: threading.Thread(target=post, args=(name,)) for name in bodies}
    with psycopg.connect(libpq_url(papi.database_url)) as blocker:
        blocker.execute("SELECT 1 FROM usage_counters WHERE account_id = 'a1' FOR UPDATE")
        posters["first"].start()
        deadline = time.monotonic() + 30
        while not rows(papi.database_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND datname = current_database()"):
            assert time.monotonic() < deadline, "the first batch never reached the locked counter"
            time.sleep(0.05)
        posters["queued"].start()
        while ingest._busy < 2:
            assert time.monotonic() < deadline, "the queued batch never arrived"
            time.sleep(0.01)
        posters["second"].start()
        while len(ingest._waiting) < 1:
            assert time.monotonic() < deadline, "the second batch never arrived"
            time.sleep(0.01)
        posters["third"].start()
        while len(ingest._waiting) < 2:
            assert time.monotonic() < deadline, "the third batch never arrived"
            time.sleep(0.01)
        blocker.rollback()
    for t in posters.values():
        t.join(timeout=60)
    assert ingest.sent - sent_before == {1: 2, 2: 1}  # the first and the queued alone, then the two that waited as one
    statuses = {name: [r["status"] for r in a.json()["results"]] for name, a in answers.items()}
    assert statuses == {"first": ["accepted"] * 4, "queued": ["accepted"], "second": ["accepted", "accepted"],
                        "third": ["duplicate", "accepted", "rejected", "rejected"]}
    third = answers["third"].json()["results"]
    assert third[2]["errors"] == [{"field": "model", "reason": "unknown model 'gpt-9'"}]
    assert third[3]["errors"] == [{"field": "event_id", "reason": "event_id reused with different content"}]
    assert rows(papi.database_url, "SELECT account_id, count(*) FROM executions GROUP BY 1 ORDER BY 1") == [
        ("a1", 6), ("a2", 3)]
    assert rows(papi.database_url, "SELECT account_id, sum(executions)::int FROM usage_counters GROUP BY 1 "
                                   "ORDER BY 1") == [("a1", 6), ("a2", 3)]


def test_a_group_whose_bodies_are_not_all_batches_answers_each_for_itself():
    """In the child: a body that is not a batch is refused alone; the others are recorded as one."""
    import api.ingest_process as ip

    calls = []

    class Recorder:
        def record_many(self, batches):
            calls.append([len(items) for _, items, _ in batches])
            return [{"results": [], "accepted": len(items), "duplicates": 0, "rejected": 0} for _, items, _ in batches]

    saved, ip._recorder = ip._recorder, Recorder()
    try:
        answers = ip._record_group([(1, b'{"executions": [{}, {}]}', NOW), (1, b"{not json", NOW),
                                    (1, b'{"executions": [{}]}', NOW)])
    finally:
        ip._recorder = saved
    assert calls == [[2, 1]]
    assert [a[0] for a in answers] == [200, 400, 200]
    assert [orjson.loads(a[1]).get("accepted") for a in answers] == [2, None, 1]

    class Failing:  # the group failed, and recorded alone one batch failed on its own
        def record_many(self, batches):
            return [psycopg.OperationalError("server closed the connection"), RuntimeError("a bug"),
                    {"results": [], "accepted": 0, "duplicates": 0, "rejected": 0}]

    saved, ip._recorder = ip._recorder, Failing()
    try:
        answers = ip._record_group([(1, b'{"executions": []}', NOW)] * 3)
    finally:
        ip._recorder = saved
    assert [(a[0], a[2]) for a in answers] == [(503, {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}), (500, None), (200, None)]
    assert orjson.loads(answers[1][1])["error"]["type"] == "internal"
