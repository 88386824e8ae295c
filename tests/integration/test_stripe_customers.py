"""Tally bills a Stripe customer only if its metadata names the account (issue 14 defect 3: an emulator
that handed out one id twice put one account's invoice on another account's customer). Real Postgres,
the emulator over HTTP."""

from __future__ import annotations

import pytest
import stripe

from activities.close import CloseActivities
from activities.deps import Deps
from activities.push import CustomerRefused, InvoicePusher, ensure_customer
from gateways.stripe import StripeFailed, StripeGateway
from gateways.stripe.customers import CustomerMismatch
from models.db import get_engine
from models.failures import Failure
from models.schemas import AccountRange, CloseChunkInput
from models.settings import EMULATOR_API_KEY
from repositories import accounts, invoices
from billing.periods import Period
from tests.factories import create_account, events, ingest


def sdk(emulator) -> stripe.StripeClient:
    return stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url})


@pytest.fixture
def acts(settings):
    create_account(settings.database_url, "acme", "payg")
    create_account(settings.database_url, "globex", "payg")
    report = ingest(settings.database_url, [*events("acme", 30), *events("globex", 20)])
    assert report.rejected == 0
    acts = CloseActivities(Deps(settings.model_copy(update={"stripe_max_network_retries": 0})))
    acts.rate_accounts(CloseChunkInput(period="2026-10", index=0,
                                       accounts=AccountRange(after=None, upto="zzz", count=2)))
    return acts


def invoice_of(acts, account_id: str):
    with acts.engine.begin() as conn:
        return next(i for i in invoices.list_invoices(conn, Period.parse("2026-10")) if i.account_id == account_id)


def stripe_invoices_of(emulator, customer_id: str) -> list:
    return list(sdk(emulator).v1.invoices.list(params={"customer": customer_id, "limit": 100}).auto_paging_iter())


def test_saved_customer_that_names_another_account_is_refused_and_the_invoice_is_push_failed(acts, emulator):
    globex_customer = sdk(emulator).v1.customers.create(params={"metadata": {"tally_account_id": "globex"}}).id
    with acts.engine.begin() as conn:
        accounts.set_stripe_customer(conn, "acme", globex_customer)  # what a repeated id left behind
    inv = invoice_of(acts, "acme")

    with pytest.raises(CustomerRefused, match="names account 'globex'"):
        InvoicePusher(acts.engine, acts.gateway).push(inv.id)

    after = invoice_of(acts, "acme")
    assert after.status == "push_failed" and "not 'acme'" in after.last_error
    assert stripe_invoices_of(emulator, globex_customer) == []  # nothing billed to globex's customer


def test_close_reports_a_customer_mismatch_by_its_failure_type(acts, emulator):
    globex_customer = sdk(emulator).v1.customers.create(params={"metadata": {"tally_account_id": "globex"}}).id
    with acts.engine.begin() as conn:
        accounts.set_stripe_customer(conn, "acme", globex_customer)

    result = acts.push_invoices(CloseChunkInput(period="2026-10", index=0,
                                                accounts=AccountRange(after=None, upto="zzz", count=2)))

    assert result.pushed == 1  # globex: its own, new customer
    assert [(f.account_id, f.kind) for f in result.failed] == [("acme", Failure.CUSTOMER_MISMATCH)]
    assert stripe_invoices_of(emulator, globex_customer) == []


def test_saved_customer_that_was_deleted_in_stripe_is_refused(acts, emulator):
    client = sdk(emulator)
    gone = client.v1.customers.create(params={"metadata": {"tally_account_id": "acme"}}).id
    client.v1.customers.delete(gone)
    with acts.engine.begin() as conn:
        accounts.set_stripe_customer(conn, "acme", gone)

    with pytest.raises(CustomerRefused, match="names account None"):
        InvoicePusher(acts.engine, acts.gateway).push(invoice_of(acts, "acme").id)


def test_saved_customer_that_names_the_account_is_reused(acts, emulator):
    own = sdk(emulator).v1.customers.create(params={"metadata": {"tally_account_id": "acme"}}).id
    with acts.engine.begin() as conn:
        accounts.set_stripe_customer(conn, "acme", own)

    outcome = InvoicePusher(acts.engine, acts.gateway).push(invoice_of(acts, "acme").id)

    assert outcome.status == "open"
    assert [i.id for i in stripe_invoices_of(emulator, own)] == [outcome.stripe_invoice_id]


def test_customer_recorded_by_an_earlier_call_is_checked_again_before_reuse(settings, emulator):
    engine = get_engine(settings.database_url)
    create_account(settings.database_url, "acme", "payg")
    gw = StripeGateway(settings)
    cid = ensure_customer(engine, gw, gw_clock(), "acme", None)
    # Someone (or a repeated id) changed Stripe's customer after Tally recorded it.
    sdk(emulator).v1.customers.update(cid, params={"metadata": {"tally_account_id": "initech"}})
    with engine.begin() as conn:
        accounts.set_stripe_customer(conn, "acme", None)

    with pytest.raises(CustomerMismatch, match="names account 'initech'"):
        ensure_customer(engine, gw, gw_clock(), "acme", None)
    with engine.begin() as conn:
        assert accounts.get_account(conn, "acme").stripe_customer_id is None  # nothing saved


def test_created_customer_whose_answer_names_another_account_is_refused(settings, emulator, monkeypatch):
    """The create's own answer is checked: a replay under our key of someone else's customer is refused."""
    engine = get_engine(settings.database_url)
    create_account(settings.database_url, "acme", "payg")
    gw = StripeGateway(settings)
    real_post = gw.core.post

    def post(op, path, *, params, idempotency_key):
        obj = real_post(op, path, params=params, idempotency_key=idempotency_key)
        return {**obj, "metadata": {"tally_account_id": "globex"}} if op == "customers.create" else obj

    monkeypatch.setattr(gw.core, "post", post)
    with pytest.raises(CustomerMismatch, match="names account 'globex'"):
        ensure_customer(engine, gw, gw_clock(), "acme", None)
    with engine.begin() as conn:
        assert accounts.get_account(conn, "acme").stripe_customer_id is None


def gw_clock():
    from datetime import datetime, timezone

    return lambda: datetime.now(timezone.utc)


def test_customer_committed_under_a_saved_500_is_found_although_search_lags(settings, emulator):
    """Stripe committed the customer and answered a 500 saved under the key. The next try must look the
    customer up before minting a key; Stripe's search (the emulator lags like Stripe) would miss it and
    a second customer would be created."""
    assert emulator.state.search_lag_seconds > 0  # on by default in tests (tests/conftest.py)
    engine = get_engine(settings.database_url)
    create_account(settings.database_url, "acme", "payg")
    gw = StripeGateway(settings)
    emulator.add_fault(method="POST", path="/v1/customers", kind="error_500_after_commit")
    with pytest.raises(StripeFailed):
        ensure_customer(engine, gw, gw_clock(), "acme", None)
    (committed,) = emulator.state.customers

    assert ensure_customer(engine, gw, gw_clock(), "acme", None) == committed

    assert list(emulator.state.customers) == [committed]
    posts = [r for r in emulator.requests() if r["method"] == "POST" and r["path"] == "/v1/customers"]
    assert [(p["idempotency_key"], p["status"]) for p in posts] == [("tally:acme:customer:a1", 500)]
    looked = [r for r in emulator.requests() if r["method"] == "GET" and r["template"] == "/v1/customers"]
    assert looked and "gte" in looked[0]["params"]["created"]  # a narrow, strongly consistent list


def test_batched_push_checks_a_customer_only_recorded_by_an_earlier_call(acts, emulator):
    """The push's customer stage: a customer recorded by an earlier call (the account row cleared, so the
    recorded call is replayed from the ledger, not asked of Stripe) is checked before the invoice lands
    on it; a mismatch stops that account's invoice as push_failed, reported as CUSTOMER_MISMATCH."""
    cid = ensure_customer(acts.engine, acts.gateway, gw_clock(), "acme", None)
    sdk(emulator).v1.customers.update(cid, params={"metadata": {"tally_account_id": "initech"}})
    with acts.engine.begin() as conn:
        accounts.set_stripe_customer(conn, "acme", None)

    result = acts.push_invoices(CloseChunkInput(period="2026-10", index=0,
                                                accounts=AccountRange(after=None, upto="zzz", count=2)))

    assert result.pushed == 1  # globex
    assert [(f.account_id, f.kind) for f in result.failed] == [("acme", Failure.CUSTOMER_MISMATCH)]
    assert "names account 'initech'" in invoice_of(acts, "acme").last_error
    assert invoice_of(acts, "acme").status == "push_failed"
    assert stripe_invoices_of(emulator, cid) == []
    with acts.engine.begin() as conn:
        assert accounts.get_account(conn, "acme").stripe_customer_id is None  # nothing saved


def test_batched_push_finds_a_customer_committed_under_a_saved_500_although_search_lags(acts, emulator):
    """The customer stage's look-up (on perform_batch's worker threads) lists customers created since
    the first key: the retry bills the customer Stripe committed, never a second one."""
    assert emulator.state.search_lag_seconds > 0
    emulator.add_fault(method="POST", path="/v1/customers", kind="error_500_after_commit", count=2)
    ids = [invoice_of(acts, "acme").id, invoice_of(acts, "globex").id]
    pusher = InvoicePusher(acts.engine, acts.gateway)
    first = pusher.push_many(ids, workers=4)
    assert set(first.errors) == set(ids) and all(isinstance(e, StripeFailed) for e in first.errors.values())
    assert len(emulator.state.customers) == 2

    again = pusher.push_many(ids, workers=4)

    assert set(again.outcomes) == set(ids) and again.errors == {}
    assert len(emulator.state.customers) == 2  # no second customer for either account
    for account_id in ("acme", "globex"):
        with acts.engine.begin() as conn:
            cid = accounts.get_account(conn, account_id).stripe_customer_id
        assert [i.id for i in stripe_invoices_of(emulator, cid)] == [invoice_of(acts, account_id).stripe_invoice_id]
    looked = [r for r in emulator.requests() if r["method"] == "GET" and r["template"] == "/v1/customers"]
    assert looked and all("gte" in r["params"]["created"] for r in looked)
    assert looked[0]["params"]["limit"] == "100"  # as few pages as Stripe allows


def test_a_failing_look_up_names_the_list_it_could_not_read(settings, emulator):
    gw = StripeGateway(settings.model_copy(update={"stripe_max_network_retries": 0}))
    emulator.add_fault(method="GET", path="/v1/customers", kind="error_500")
    with pytest.raises(StripeFailed, match="^customers.list: Stripe error 500"):
        gw.customers.find("acme", created_since=0)


def test_stripe_lines_carry_our_description_quantity_and_unit_price(acts, emulator):
    """What Stripe received for each line: the amount in cents, the description the invoice shows and,
    in metadata, the line's id, quantity and unit price (as Decimal text)."""
    inv = invoice_of(acts, "acme")
    outcome = InvoicePusher(acts.engine, acts.gateway).push(inv.id)
    with acts.engine.begin() as conn:
        ours = invoices.invoice_lines_of(conn, inv.id)
    theirs = list(sdk(emulator).v1.invoices.line_items.list(outcome.stripe_invoice_id, params={"limit": 100}))
    assert [(t.amount, t.description, t.metadata.to_dict()) for t in theirs] == [
        (int(o.amount * 100), o.description, {"tally_line_id": str(o.id), "quantity": str(o.quantity),
                                               "unit_price": str(o.unit_price)}) for o in ours]
    assert {(t.period.start, t.period.end) for t in theirs} == {(1790812800, 1793491200)}  # October 2026
