"""The shared rails every capability plugs into: signed Stripe webhooks (recorded once, handled by the
capability that registered the type, rolled back when a handler fails) and usage observers (told which
accounts got new executions after each committed batch, from the API and from file ingest)."""

from __future__ import annotations

import json
import time

import pytest

import capabilities
from gateways.stripe.webhooks import sign_payload
from models.db import get_engine
from models.settings import EMULATOR_WEBHOOK_SECRET
from services.ingest import ingest_jsonl
from tests.api import rails_probe
from tests.api.conftest import NOW
from tests.factories import event


def execution(account: str, n: int) -> dict:
    return event(account, n, NOW.replace(hour=1, minute=n % 60))


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setattr(capabilities, "CAPABILITIES", (*capabilities.CAPABILITIES, rails_probe.PROBE))
    rails_probe.FAIL_ON.clear()
    rails_probe.OBSERVED.clear()
    rails_probe.OBSERVER_FAILS[0] = False
    return rails_probe


def deliver(api, event: dict, secret: str = EMULATOR_WEBHOOK_SECRET, signed_at: int | None = None):
    body = json.dumps(event).encode()
    sig = sign_payload(body, secret, signed_at if signed_at is not None else int(time.time()))
    return api.client().post("/v1/stripe/webhooks", content=body,
                             headers={"Stripe-Signature": sig, "Content-Type": "application/json"})


def probe_event(event_id: str, account: str = "acct-1", type_: str = "probe.happened") -> dict:
    return {"id": event_id, "type": type_, "created": int(time.time()), "livemode": False,
            "data": {"object": {"account": account}}}


def rows(api, sql: str):
    with get_engine(api.database_url).begin() as conn:
        return conn.exec_driver_sql(sql).all()


def test_an_event_delivered_twice_is_handled_once(api, probe):
    api.account("acct-1", "pro")
    first = deliver(api, probe_event("evt_1"))
    again = deliver(api, probe_event("evt_1"))
    assert first.status_code == 200 and first.json()["outcome"] == "handled"
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert rows(api, "SELECT count(*) FROM notifications WHERE kind = 'probe'") == [(1,)]
    assert rows(api, "SELECT id, deliveries, outcome FROM stripe_events") == [("evt_1", 2, "handled")]


def test_a_bad_signature_is_refused_with_400_and_writes_nothing(api, probe):
    api.account("acct-1", "pro")
    wrong = deliver(api, probe_event("evt_2"), secret="whsec_someone_else")
    stale = deliver(api, probe_event("evt_3"), signed_at=int(time.time()) - 301)  # outside the 300 s tolerance
    unsigned = api.client().post("/v1/stripe/webhooks", content=json.dumps(probe_event("evt_4")).encode())
    assert [r.status_code for r in (wrong, stale, unsigned)] == [400, 400, 400]
    assert wrong.json()["error"]["field"] == "Stripe-Signature"
    assert rows(api, "SELECT count(*) FROM stripe_events") == [(0,)]
    assert rows(api, "SELECT count(*) FROM notifications") == [(0,)]


def test_a_failing_handler_rolls_the_delivery_back_so_stripe_delivers_it_again(api, probe):
    api.account("acct-1", "pro")
    probe.FAIL_ON.add("evt_5")
    failed = deliver(api, probe_event("evt_5"))
    assert failed.status_code == 500
    assert rows(api, "SELECT count(*) FROM stripe_events") == [(0,)]
    probe.FAIL_ON.clear()
    retried = deliver(api, probe_event("evt_5"))
    assert retried.json()["outcome"] == "handled"
    assert rows(api, "SELECT count(*) FROM notifications WHERE kind = 'probe'") == [(1,)]


def test_an_event_type_nobody_handles_is_recorded_as_ignored(api, probe):
    response = deliver(api, probe_event("evt_6", type_="customer.created"))
    assert response.json()["outcome"] == "ignored"
    assert rows(api, "SELECT outcome FROM stripe_events") == [("ignored",)]


def test_usage_observers_hear_each_batch_with_its_new_accounts_only(api, probe):
    key = api.platform("p1")
    api.account("acct-a", "pro", platform="p1")
    api.account("acct-b", "pro", platform="p1")
    client = api.client(key)
    batch = {"executions": [execution("acct-a", 1), execution("acct-b", 2)]}
    assert client.post("/v1/executions", json=batch).json()["accepted"] == 2
    assert client.post("/v1/executions", json=batch).json()["duplicates"] == 2  # nothing new: not heard
    assert probe.OBSERVED == [("acct-a", "acct-b")]


def test_a_failing_observer_never_loses_the_batch(api, probe):
    key = api.platform("p1")
    api.account("acct-a", "pro", platform="p1")
    probe.OBSERVER_FAILS[0] = True
    response = api.client(key).post("/v1/executions", json=execution("acct-a", 1))
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert rows(api, "SELECT count(*) FROM executions") == [(1,)]


def test_file_ingest_tells_observers_after_each_committed_batch(api, probe, tmp_path):
    from billing.catalog import default_catalog

    api.account("acct-f", "pro")
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(execution("acct-f", i)) + "\n" for i in range(3)))
    report = ingest_jsonl(api.database_url, path, default_catalog())
    assert report.accepted == 3
    assert probe.OBSERVED == [("acct-f",)]
    ingest_jsonl(api.database_url, path, default_catalog())  # all duplicates: nobody is told
    assert probe.OBSERVED == [("acct-f",)]
