"""The recorded Stripe call on its own (no invoice anywhere): real Postgres, the emulator over HTTP,
faults injected where Stripe would produce them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import stripe

from gateways.stripe import StripeFailed, StripeGateway, StripeRejected, StripeUnreachable
from gateways.stripe.ledger import KEY_TRUST_WINDOW, StripeLedger
from models.db import get_engine
from models.settings import EMULATOR_API_KEY
from repositories.stripe_requests import stripe_requests_for

SUBJECT = "partner:p1"


@pytest.fixture
def engine(settings):
    return get_engine(settings.database_url)


@pytest.fixture
def gw(settings):
    """No SDK retries: each fault reaches the ledger, as a Temporal activity retry would see it."""
    return StripeGateway(settings.model_copy(update={"stripe_max_network_retries": 0}))


class Lookup:
    """A look-up that answers ``found`` and remembers that it was asked."""

    def __init__(self, found: str | None = None):
        self.found = found
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.found


def records(engine, subject: str = SUBJECT) -> list:
    with engine.begin() as conn:
        return stripe_requests_for(conn, subject)


def customer_posts(emulator) -> list[dict]:
    return [r for r in emulator.requests() if r["method"] == "POST" and r["path"] == "/v1/customers"]


def create_partner(ledger: StripeLedger, gw: StripeGateway, lookup=None) -> str:
    """A step of a non-invoice subject: a Stripe customer for partner p1, found by its metadata."""
    return ledger.perform(subject=SUBJECT, step="customer", identity="p1",
                          call=lambda key: gw.customers.create("p1", None, key),
                          lookup=lookup or (lambda: gw.customers.find("p1", created_since=0)))


def test_key_is_recorded_before_the_call_is_made(engine, gw):
    seen = []

    def call(key: str) -> str:
        seen.extend((r.idempotency_key, r.state) for r in records(engine))
        return gw.customers.create("p1", None, key)

    ledger = StripeLedger(engine)
    ledger.perform(subject=SUBJECT, step="customer", identity="p1", call=call, lookup=Lookup())
    assert seen == [("tally:p1:customer:a1", "started")]
    assert [(r.state, r.attempt) for r in records(engine)] == [("succeeded", 1)]


def test_lost_response_after_commit_is_retried_under_the_same_key_and_creates_one_object(
        engine, gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="drop_after_commit")
    ledger = StripeLedger(engine)
    lookup = Lookup()
    with pytest.raises(StripeUnreachable):
        create_partner(ledger, gw, lookup)
    assert [r.state for r in records(engine)] == ["started"]

    customer_id = create_partner(ledger, gw, lookup)

    posts = customer_posts(emulator)
    assert [p["idempotency_key"] for p in posts] == ["tally:p1:customer:a1"] * 2
    assert [p["replayed"] for p in posts] == [False, True]
    assert list(emulator.state.customers) == [customer_id]
    assert lookup.calls == 0  # an unknown outcome under a fresh key needs no look-up
    assert [(r.state, r.stripe_object_id) for r in records(engine)] == [("succeeded", customer_id)]
    # Done is done: a later perform answers from the record without calling Stripe.
    assert create_partner(ledger, gw, lookup) == customer_id
    assert len(customer_posts(emulator)) == 2


def test_saved_500_is_looked_up_and_only_then_retried_under_the_next_key(engine, gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="error_500")
    ledger = StripeLedger(engine)
    with pytest.raises(StripeFailed):
        create_partner(ledger, gw)
    assert [(r.state, r.http_status) for r in records(engine)] == [("failed", 500)]

    lookup = Lookup(found=None)
    customer_id = create_partner(ledger, gw, lookup)

    assert lookup.calls == 1
    assert [p["idempotency_key"] for p in customer_posts(emulator)] == [
        "tally:p1:customer:a1", "tally:p1:customer:a2"]
    assert list(emulator.state.customers) == [customer_id]
    assert [(r.attempt, r.state) for r in records(engine)] == [(1, "failed"), (2, "succeeded")]


def test_saved_500_whose_object_the_look_up_finds_mints_no_new_key(engine, gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="error_500")
    ledger = StripeLedger(engine)
    with pytest.raises(StripeFailed):
        create_partner(ledger, gw)

    assert create_partner(ledger, gw, Lookup(found="cus_made_elsewhere")) == "cus_made_elsewhere"

    assert len(customer_posts(emulator)) == 1
    assert [(r.attempt, r.state, r.stripe_object_id) for r in records(engine)] == [
        (1, "succeeded", "cus_made_elsewhere")]


def test_a_step_found_by_look_up_keeps_the_saved_failure_and_says_it_was_found(engine, gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="error_500")
    ledger = StripeLedger(engine)
    with pytest.raises(StripeFailed):
        create_partner(ledger, gw)
    (failed,) = records(engine)

    create_partner(ledger, gw, Lookup(found="cus_made_elsewhere"))

    (rec,) = records(engine)
    assert rec.error == failed.error + " [found in Stripe by look-up]"
    assert failed.error.startswith("customers.create: Stripe error 500")


def test_key_older_than_the_trust_window_is_not_reused_blindly(engine, gw, emulator):
    """Stripe committed, the answer was lost, and a day later the key may be forgotten: the look-up
    finds the object, so nothing is sent again (not even under the old key)."""
    emulator.add_fault(method="POST", path="/v1/customers", kind="drop_after_commit")
    with pytest.raises(StripeUnreachable):
        create_partner(StripeLedger(engine), gw)
    (committed,) = emulator.state.customers

    later = StripeLedger(engine, clock=lambda: datetime.now(timezone.utc) + KEY_TRUST_WINDOW + timedelta(minutes=1))
    lookup = Lookup(found=committed)
    assert create_partner(later, gw, lookup) == committed

    assert lookup.calls == 1
    assert len(customer_posts(emulator)) == 1
    assert [(r.attempt, r.state) for r in records(engine)] == [(1, "succeeded")]


def test_key_older_than_the_trust_window_with_nothing_found_moves_to_the_next_key(engine, gw, emulator):
    with engine.begin() as conn:  # a started attempt from two days ago, never answered
        conn.exec_driver_sql(
            "INSERT INTO stripe_requests (idempotency_key, subject, step, attempt, state, started_at) "
            f"VALUES ('tally:p1:customer:a1', '{SUBJECT}', 'customer', 1, 'started', now() - interval '2 days')")
    lookup = Lookup(found=None)
    create_partner(StripeLedger(engine), gw, lookup)
    assert lookup.calls == 1
    assert [p["idempotency_key"] for p in customer_posts(emulator)] == ["tally:p1:customer:a2"]


def test_429_is_retried_in_place_under_the_same_key_after_retry_after(engine, gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="rate_limit_429", count=2, retry_after=1)
    customer_id = create_partner(StripeLedger(engine), gw)

    posts = customer_posts(emulator)
    assert [p["status"] for p in posts] == [429, 429, 200]
    assert {p["idempotency_key"] for p in posts} == {"tally:p1:customer:a1"}
    # What the emulator received: the same request each time, byte for byte the same parameters.
    assert [p["params"] for p in posts] == [{"metadata": {"tally_account_id": "p1"}, "name": "p1"}] * 3
    assert [p["executed"] for p in posts] == [False, False, True]
    assert posts[1]["time"] - posts[0]["time"] >= 0.9 and posts[2]["time"] - posts[1]["time"] >= 0.9
    assert list(emulator.state.customers) == [customer_id]
    assert [(r.attempt, r.state) for r in records(engine)] == [(1, "succeeded")]


def test_rejection_is_recorded_failed_and_raised(engine, gw):
    def transfer(key: str) -> str:
        return gw.core.post("transfers.create", "/v1/transfers", idempotency_key=key,
                            params={"amount": 2500, "currency": "usd", "destination": "acct_unknown"})["id"]

    with pytest.raises(StripeRejected) as err:
        StripeLedger(engine).perform(subject=SUBJECT, step="transfer", identity="p1:2026-10",
                                     call=transfer, lookup=Lookup())
    assert 400 <= err.value.http_status < 500
    (rec,) = records(engine)
    assert (rec.idempotency_key, rec.state, rec.http_status) == (
        "tally:p1:2026-10:transfer:a1", "failed", err.value.http_status)
    assert "acct_unknown" in rec.error or "destination" in rec.error


def test_rejection_the_caller_names_already_done_is_recorded_as_success(settings, engine, gw, emulator):
    """A meter event sent under a key that the ledger stopped trusting: the next key's request is
    refused as a duplicate identifier, which means "already reported"."""
    sdk = stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url})
    sdk.v1.billing.meters.create(params={
        "display_name": "Executions", "event_name": "executions", "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": {"event_payload_key": "value"}})

    def report(key: str) -> str:
        return gw.core.post("meter_events.create", "/v1/billing/meter_events", idempotency_key=key, params={
            "event_name": "executions", "identifier": "p1-hour-7",
            "payload": {"stripe_customer_id": "cus_p1", "value": "3"}})["identifier"]

    def duplicate(err: StripeRejected) -> str | None:
        return "p1-hour-7" if "already exists with identifier p1-hour-7" in str(err) else None

    def perform(ledger: StripeLedger) -> str:
        return ledger.perform(subject=SUBJECT, step="meter_event", identity="p1:hour-7", call=report,
                              lookup=Lookup(), already_done=duplicate)

    emulator.add_fault(method="POST", path="/v1/billing/meter_events", kind="drop_after_commit")
    with pytest.raises(StripeUnreachable):
        perform(StripeLedger(engine))
    later = StripeLedger(engine, clock=lambda: datetime.now(timezone.utc) + timedelta(days=1))
    assert perform(later) == "p1-hour-7"

    assert [(r.attempt, r.state, r.stripe_object_id) for r in records(engine)] == [
        (1, "started", None), (2, "succeeded", "p1-hour-7")]
    assert len(emulator.state.meter_events) == 1
