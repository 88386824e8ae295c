"""Buying credits end to end over HTTP: the API creates a Stripe Checkout Session (emulator), the emulator
sends signed webhook events back to the API (duplicated, reordered, held), and the purchase is granted
exactly once; the poll grants what no webhook reported; the entitlement refuses a credits-only account
at zero; the billing page shows the credits."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import uvicorn

from api.app import create_app
from billing.catalog import load_catalog
from gateways.stripe import StripeGateway
from gateways.stripe.webhooks import sign_payload
from models.db import get_engine
from models.settings import EMULATOR_WEBHOOK_SECRET, Settings
from services import credits as service
from tests.api.conftest import NOW, Clock, LiveApi, free_port

CATALOG = load_catalog()


class RecordingTemporal:
    """A Temporal client that records the workflows started through it (or refuses, ``down``)."""

    def __init__(self):
        self.started: list[str] = []
        self.down = False

    async def __call__(self):
        if self.down:
            raise RuntimeError("Temporal unreachable (test)")
        return self

    async def start_workflow(self, *args, id: str, **kwargs):
        self.started.append(id)


TEMPORAL = RecordingTemporal()


@pytest.fixture(scope="module")
def credits_server(database_url, emulator_server, tmp_path_factory):
    clock = Clock()
    settings = Settings(home=tmp_path_factory.mktemp("tally-credits-api"), database_url=database_url,
                        api_secret="test-secret-for-billing-links", stripe_api_base=emulator_server.url,
                        stripe_max_network_retries=2, stripe_timeout_seconds=5)
    app = create_app(settings, clock=clock, temporal=TEMPORAL)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.02)
    yield LiveApi(f"http://127.0.0.1:{port}", app, clock, settings, database_url)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def live(credits_server, clean_db, emulator):
    credits_server.clock.now = NOW
    TEMPORAL.started.clear()
    TEMPORAL.down = False
    emulator.configure_webhooks(f"{credits_server.url}/v1/stripe/webhooks", EMULATOR_WEBHOOK_SECRET)
    yield credits_server
    for c in credits_server.clients:
        c.close()
    credits_server.clients.clear()


def rows(api, sql: str, *params):
    with get_engine(api.database_url).begin() as conn:
        return conn.exec_driver_sql(sql, params or None).all()


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def buy(live, key: str, account: str = "buyer-1", package: str = "growth", **headers):
    return live.client(key).post(f"/v1/accounts/{account}/credits/purchases", json={"package": package},
                                 headers=headers)


def setup_buyer(live) -> str:
    key = live.platform("plat-credits")
    live.account("buyer-1", "pro", platform="plat-credits")
    return key


def test_a_purchase_is_pending_until_paid_and_a_webhook_delivered_twice_and_out_of_order_grants_once(live, emulator):
    key = setup_buyer(live)
    emulator.configure_webhooks(f"{live.url}/v1/stripe/webhooks", EMULATOR_WEBHOOK_SECRET, duplicate=2, reorder=True)
    resp = buy(live, key)
    assert resp.status_code == 201, resp.text
    p = resp.json()
    assert (p["status"], p["amount"], p["price"], p["unit"]) == ("pending", "6000", "50.00", "credits")
    assert p["checkout_url"].startswith("https://checkout.stripe.test/")
    assert rows(live, "SELECT count(*) FROM credit_grants") == [(0,)]
    # the buyer pays with a delayed method: completed (unpaid) then async_payment_succeeded, sent newest first, twice
    emulator.settle_checkout(p["checkout_session_id"], "async_pending")
    emulator.settle_checkout(p["checkout_session_id"], "async_succeeded")
    sent = emulator.flush_webhooks()
    assert [d["status"] for d in sent] == [200, 200, 200, 200]
    types = emulator.webhook_deliveries()
    assert types[0]["type"] == "checkout.session.async_payment_succeeded"  # the later event arrived first
    assert rows(live, "SELECT id, amount, price FROM credit_grants") == [
        (f"grant-{p['purchase_id']}", Decimal("6000.00"), Decimal("50.00"))]
    assert rows(live, "SELECT kind, amount FROM credit_ledger") == [("grant", Decimal("6000.00"))]
    assert rows(live, "SELECT status FROM credit_purchases") == [("paid",)]
    assert rows(live, "SELECT count(*), sum(deliveries) FROM stripe_events") == [(2, 4)]
    view = live.client(key).get("/v1/accounts/buyer-1/credits").json()
    assert view["balances"]["credits"] == {"balance": "6000", "spendable": "6000"}
    assert view["grants"][0]["expires_at"].startswith("2027-")
    # its expiry workflow was started as the grant committed, once (not at the next poll)
    assert TEMPORAL.started == [f"credit-grant-grant-{p['purchase_id']}"]


def test_a_grant_is_kept_when_its_expiry_workflow_cannot_be_started_now(live, emulator):
    key = setup_buyer(live)
    TEMPORAL.down = True
    p = buy(live, key).json()
    emulator.settle_checkout(p["checkout_session_id"], "paid")
    wait_for(lambda: emulator.webhook_deliveries(), "the delivery")
    assert [d["status"] for d in emulator.webhook_deliveries()] == [200]  # Stripe is not asked to redeliver
    assert rows(live, "SELECT id FROM credit_grants") == [(f"grant-{p['purchase_id']}",)]
    assert TEMPORAL.started == []  # the daily sweep starts it (grants_needing_workflows)


def test_a_webhook_with_a_bad_signature_is_refused_and_grants_nothing(live, emulator):
    key = setup_buyer(live)
    emulator.configure_webhooks(f"{live.url}/v1/stripe/webhooks", "whsec_not_ours")
    p = buy(live, key).json()
    emulator.settle_checkout(p["checkout_session_id"], "paid")
    wait_for(lambda: emulator.webhook_deliveries(), "the delivery")
    assert [d["status"] for d in emulator.webhook_deliveries()] == [400]
    assert rows(live, "SELECT count(*) FROM stripe_events") == [(0,)]
    assert rows(live, "SELECT count(*) FROM credit_grants") == [(0,)]
    assert rows(live, "SELECT status FROM credit_purchases") == [("pending",)]


def test_a_failed_payment_or_an_expired_session_grants_nothing(live, emulator):
    key = setup_buyer(live)
    failed = buy(live, key).json()
    expired = buy(live, key, package="starter").json()
    emulator.settle_checkout(failed["checkout_session_id"], "async_pending")
    emulator.settle_checkout(failed["checkout_session_id"], "async_failed")
    emulator.settle_checkout(expired["checkout_session_id"], "expired")
    wait_for(lambda: len(rows(live, "SELECT 1 FROM credit_purchases WHERE status <> 'pending'")) == 2, "settled")
    assert dict(rows(live, "SELECT id, status FROM credit_purchases")) == {
        failed["purchase_id"]: "failed", expired["purchase_id"]: "expired"}
    assert rows(live, "SELECT count(*) FROM credit_grants") == [(0,)]
    assert rows(live, "SELECT count(*) FROM credit_ledger") == [(0,)]


def test_the_poll_grants_a_purchase_whose_webhook_never_came(live, emulator):
    key = setup_buyer(live)
    emulator.configure_webhooks(f"{live.url}/v1/stripe/webhooks", EMULATOR_WEBHOOK_SECRET, hold=True)  # endpoint down
    p = buy(live, key).json()
    emulator.settle_checkout(p["checkout_session_id"], "paid")
    engine = get_engine(live.database_url)
    gateway = StripeGateway(live.settings)
    early = service.poll_pending(engine, CATALOG, gateway, NOW + timedelta(minutes=5), pending_minutes=10)
    assert (early.checked, early.granted) == (0, [])  # too recent: the webhook may still come
    res = service.poll_pending(engine, CATALOG, gateway, NOW + timedelta(minutes=11), pending_minutes=10)
    assert res.granted == [f"grant-{p['purchase_id']}"]
    assert service.poll_pending(engine, CATALOG, gateway, NOW + timedelta(minutes=30), 10).granted == []
    emulator.flush_webhooks()  # the webhook finally arrives: nothing more is granted
    assert rows(live, "SELECT count(*), sum(amount) FROM credit_ledger") == [(1, Decimal("6000.00"))]
    assert rows(live, "SELECT outcome FROM stripe_events") == [("handled",)]


def test_a_lost_response_on_checkout_creation_makes_one_session(live, emulator):
    key = setup_buyer(live)
    emulator.add_fault(method="POST", path="/v1/checkout/sessions", kind="drop_after_commit", count=1)
    resp = buy(live, key, **{"Idempotency-Key": "order-77"})
    assert resp.status_code == 201, resp.text
    again = buy(live, key, **{"Idempotency-Key": "order-77"})  # the platform retries too: the same purchase
    assert again.json()["purchase_id"] == resp.json()["purchase_id"]
    assert again.json()["checkout_session_id"] == resp.json()["checkout_session_id"]
    with emulator.state.lock:
        assert len(emulator.state.checkout_sessions) == 1
    assert rows(live, "SELECT count(*) FROM credit_purchases") == [(1,)]
    assert rows(live, "SELECT idempotency_key FROM stripe_requests") == [
        (f"tally:{resp.json()['purchase_id']}:checkout:a1",)]


def test_bad_input_is_refused_naming_the_field_and_writes_nothing(live, emulator):
    key = setup_buyer(live)
    resp = buy(live, key, package="platinum")
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "package"
    assert rows(live, "SELECT count(*) FROM credit_purchases") == [(0,)]
    assert buy(live, key, account="nobody").status_code == 404


def test_a_credits_only_account_is_refused_at_zero_and_runs_on_its_credits(live, emulator):
    key = live.platform("plat-only")
    live.account("only-1", "free", platform="plat-only")
    engine = get_engine(live.database_url)
    service.set_credits_only(engine, "only-1", True)
    c = live.client(key)
    refused = c.get("/v1/accounts/only-1/entitlement", params={"model": "claude-haiku"}).json()
    assert (refused["allowed"], refused["reason"]) == (False, "no_credits")
    service.ops_grant(engine, CATALOG, account_id="only-1", credits="6", usd=None, reason="trial", granted_by="ana",
                      now=NOW - timedelta(days=1))
    ok = c.get("/v1/accounts/only-1/entitlement", params={"model": "claude-sonnet"}).json()
    assert (ok["allowed"], ok["reason"]) == (True, "ok")
    at = NOW - timedelta(hours=1)
    batch = {"executions": [{"event_id": "only-e1", "account_id": "only-1", "agent_id": "a", "model": "claude-sonnet",
                             "occurred_at": at.isoformat().replace("+00:00", "Z")}]}
    assert c.post("/v1/executions", json=batch).json()["accepted"] == 1  # the observer books 5 credits
    heavy = c.get("/v1/accounts/only-1/entitlement", params={"model": "claude-sonnet"}).json()
    fast = c.get("/v1/accounts/only-1/entitlement", params={"model": "claude-haiku"}).json()
    assert (heavy["allowed"], heavy["reason"]) == (False, "no_credits")  # 1 left cannot pay 5
    assert (fast["allowed"], fast["reason"]) == (True, "ok")
    page = c.get("/accounts/only-1/billing")
    assert page.status_code == 200 and 'id="credit-grants"' in page.text and "runs on credits only" in page.text


def test_an_account_without_credits_gets_the_plans_answer(live, emulator):
    key = live.platform("plat-plain")
    live.account("plain-1", "free", platform="plat-plain")
    answer = live.client(key).get("/v1/accounts/plain-1/entitlement", params={"model": "claude-haiku"}).json()
    assert (answer["allowed"], answer["reason"]) == (True, "ok")


def test_ops_grant_requires_a_reason_and_records_who_gave_it(live, emulator):
    live.account("ops-1", "pro")
    engine = get_engine(live.database_url)
    with pytest.raises(service.InvalidInput) as err:
        service.ops_grant(engine, CATALOG, account_id="ops-1", credits="100", usd=None, reason=" ", granted_by="ana",
                          now=NOW)
    assert err.value.field == "reason"
    with pytest.raises(service.InvalidInput) as both:
        service.ops_grant(engine, CATALOG, account_id="ops-1", credits="100", usd="5", reason="x", granted_by="ana",
                          now=NOW)
    assert both.value.field == "amount"
    g = service.ops_grant(engine, CATALOG, account_id="ops-1", credits=None, usd="12.50", reason="outage refund",
                          granted_by="ana", now=NOW, expires=datetime(2027, 1, 1, tzinfo=timezone.utc).date())
    assert (g["unit"], g["amount"], g["granted_by"], g["reference"]) == ("usd", "12.50", "ana", "outage refund")
    assert rows(live, "SELECT actor, kind FROM credit_ledger") == [("ana", "grant")]
    done = service.expire_now(engine, g["grant_id"], by="bo", reason="customer left", now=NOW + timedelta(hours=1))
    assert done["expired"] == "12.50"
    with pytest.raises(service.Conflict):
        service.expire_now(engine, g["grant_id"], by="bo", reason="again", now=NOW + timedelta(hours=2))
    assert rows(live, "SELECT kind, amount, actor FROM credit_ledger ORDER BY recorded_at") == [
        ("grant", Decimal("12.50"), "ana"), ("expire", Decimal("-12.50"), "bo")]


def test_the_ledger_is_append_only(live, emulator):
    live.account("ops-2", "pro")
    engine = get_engine(live.database_url)
    service.ops_grant(engine, CATALOG, account_id="ops-2", credits="5", usd=None, reason="x", granted_by="ana", now=NOW)
    with pytest.raises(Exception, match="append-only"):
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE credit_ledger SET amount = 500")
    with pytest.raises(Exception, match="append-only"):
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM credit_ledger")


def test_a_signed_event_for_an_unknown_purchase_changes_nothing(live, emulator):
    body = json.dumps({"id": "evt_x", "type": "checkout.session.completed", "created": int(time.time()),
                       "data": {"object": {"id": "cs_x", "payment_status": "paid",
                                           "metadata": {"tally_purchase_id": "cp_unknown"}}}}).encode()
    resp = live.client().post("/v1/stripe/webhooks", content=body, headers={
        "Stripe-Signature": sign_payload(body, EMULATOR_WEBHOOK_SECRET, int(time.time())),
        "Content-Type": "application/json"})
    assert resp.status_code == 200 and resp.json()["outcome"] == "handled"
    assert rows(live, "SELECT count(*) FROM credit_grants") == [(0,)]
