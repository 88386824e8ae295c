"""The invoice push stage by stage (``activities.push``), on invoices written straight into Postgres (no
ingest, no rating, no Temporal) and the emulator over HTTP: what each stage sends, records and saves,
and what an invoice becomes when a stage fails. Fast, so a mutation run (``make mutation-push``) can
run them for every mutant of the push."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import stripe
from sqlalchemy import insert

from activities.push import (
    CLOCK_SKEW,
    CustomerRefused,
    InvoiceBusy,
    InvoiceNotFound,
    InvoicePusher,
    InvoiceRejected,
    ensure_customer,
)
from gateways.stripe import StripeFailed, StripeUnreachable
from gateways.stripe.customers import ACCOUNT_KEY, CustomerMismatch
from models.settings import EMULATOR_API_KEY
from models.tables import catalog_versions, invoice_lines, invoices as invoices_t
from repositories import accounts, invoices, locks, stripe_requests
from tests.integration.test_stripe_ledger import engine, gw  # noqa: F401  (fixtures)

OCT = ("2026-10", datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc))


@pytest.fixture
def sdk(emulator) -> stripe.StripeClient:
    return stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url})


@pytest.fixture
def pusher(engine, gw):
    return InvoicePusher(engine, gw)


def account(engine, account_id: str, email: str | None = None, customer: str | None = None) -> None:
    with engine.begin() as conn:
        accounts.create_account(conn, account_id=account_id, plan="payg", seats=1, overage_opt_in=False,
                                email=email, billing_starts_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
        if customer:
            accounts.set_stripe_customer(conn, account_id, customer)


def invoice(engine, account_id: str, amounts: list[str] = ("1.25", "2.50"), status: str = "draft",
            stripe_invoice_id: str | None = None, period: str = "2026-10") -> int:
    """An invoice of ``period`` (its bounds October's) with a line per amount (5 at amount / 5 each)."""
    with engine.begin() as conn:
        version = conn.execute(catalog_versions.select().where(catalog_versions.c.version == "push-test")).first()
        version_id = version.id if version else conn.execute(insert(catalog_versions).values(
            version="push-test", effective_from=datetime(2026, 1, 1, tzinfo=timezone.utc), digest="x",
            document={}).returning(catalog_versions.c.id)).scalar()
        total = sum((Decimal(a) for a in amounts), Decimal(0))
        inv_id = conn.execute(insert(invoices_t).values(
            account_id=account_id, period=period, period_start=OCT[1], period_end=OCT[2], status=status,
            plan="payg", seats=1, overage_opt_in=False, catalog_version_id=version_id, subtotal=total,
            total=total, stripe_invoice_id=stripe_invoice_id).returning(invoices_t.c.id)).scalar()
        for pos, a in enumerate(amounts, start=1):
            conn.execute(insert(invoice_lines).values(
                invoice_id=inv_id, position=pos, kind="usage", description=f"{account_id} line {pos}",
                quantity=Decimal(5), unit_price=Decimal(a) / 5, amount=Decimal(a), catalog_version_id=version_id))
    return inv_id


def first_push_fails(engine, pusher, emulator, path: str, kind: str, error=StripeFailed) -> int:
    """Account ``acme`` and its draft invoice, whose first push fails with ``error`` on a ``kind`` fault
    of ``POST path``; returns the invoice id."""
    account(engine, "acme")
    inv_id = invoice(engine, "acme")
    emulator.add_fault(method="POST", path=path, kind=kind)
    with pytest.raises(error):
        pusher.push(inv_id)
    return inv_id


def row(engine, invoice_id: int):
    with engine.begin() as conn:
        return invoices.get_invoice(conn, invoice_id)


def records(engine, subject: str) -> list:
    with engine.begin() as conn:
        return stripe_requests.stripe_requests_for(conn, subject)


def saved_customer(engine, account_id: str) -> str | None:
    with engine.begin() as conn:
        return accounts.get_account(conn, account_id).stripe_customer_id


def posts(emulator, path_end: str = "", since: int = 0) -> list[dict]:
    return [r for r in emulator.requests(since) if r["method"] == "POST" and r["path"].endswith(path_end)]


# ---- a push that goes through -------------------------------------------------------------------------
def test_a_pushed_invoice_is_open_in_stripe_with_its_lines_and_saved_with_its_stripe_id(engine, pusher, emulator):
    account(engine, "acme", email="ops@acme.test")
    inv_id = invoice(engine, "acme", ["1.25", "2.50"])

    out = pusher.push(inv_id)

    sid = out.stripe_invoice_id
    assert (out.invoice_id, out.status, out.already_pushed) == (inv_id, "open", False)
    assert out.stripe_calls == 4  # customer, invoice, lines, finalize
    stripe_inv = emulator.state.invoices[sid]
    assert stripe_inv["status"] == "open"
    cid = saved_customer(engine, "acme")
    assert stripe_inv["customer"] == cid
    assert emulator.state.customers[cid]["email"] == "ops@acme.test"
    assert sorted(int(line["amount"]) for line in emulator.state.invoice_lines[sid]) == [125, 250]
    after = row(engine, inv_id)
    assert (after.status, after.stripe_invoice_id) == ("open", sid)
    assert [(r.step, r.idempotency_key, r.state) for r in records(engine, f"invoice:{inv_id}")] == [
        ("create", "tally:acme:2026-10:create:a1", "succeeded"),
        ("add_lines", "tally:acme:2026-10:add_lines:a1", "succeeded"),
        ("finalize", "tally:acme:2026-10:finalize:a1", "succeeded")]
    assert [(r.step, r.idempotency_key, r.stripe_object_id) for r in records(engine, "customer:acme")] == [
        ("customer", "tally:acme:customer:a1", cid)]


def test_stripe_lines_carry_the_invoice_period_and_our_line_ids(engine, pusher, emulator):
    account(engine, "acme")
    inv_id = invoice(engine, "acme", ["1.25"])
    out = pusher.push(inv_id)
    [post] = posts(emulator, "/add_lines")
    with engine.begin() as conn:
        [line] = invoices.invoice_lines_of(conn, inv_id)
    assert post["params"]["lines"] == [{
        "amount": "125", "description": "acme line 1",
        "period": {"start": str(int(OCT[1].timestamp())), "end": str(int(OCT[2].timestamp()))},
        "metadata": {"tally_line_id": str(line.id), "quantity": str(line.quantity),
                     "unit_price": str(line.unit_price)}}]
    assert out.stripe_invoice_id in post["path"]


def test_an_invoice_without_lines_is_created_and_finalized_without_adding_lines(engine, pusher, emulator):
    account(engine, "acme")
    inv_id = invoice(engine, "acme", [])
    out = pusher.push(inv_id)
    assert out.status == "open" and posts(emulator, "/add_lines") == []
    assert [r.step for r in records(engine, f"invoice:{inv_id}")] == ["create", "finalize"]


def test_a_chunk_makes_one_customer_per_account_and_counts_each_invoices_calls(engine, pusher, emulator):
    account(engine, "acme")
    account(engine, "globex")
    a1, g1 = invoice(engine, "acme"), invoice(engine, "globex", ["3.00"])
    a2 = invoice(engine, "acme", ["0.50"], period="2026-09")  # a second acme invoice in the same chunk

    batch = pusher.push_many([a1, g1, a2], workers=2)

    assert batch.errors == {}
    assert {i: o.status for i, o in batch.outcomes.items()} == {a1: "open", g1: "open", a2: "open"}
    assert len(posts(emulator, "/v1/customers")) == 2
    calls = {i: o.stripe_calls for i, o in batch.outcomes.items()}
    assert calls[g1] == 4 and sorted([calls[a1], calls[a2]]) == [3, 4]  # the customer is made once
    assert batch.stripe_calls == 11


def test_progress_is_reported_with_the_steps_done(engine, pusher):
    account(engine, "acme")
    seen = []
    pusher.push_many([invoice(engine, "acme")], workers=1, on_progress=seen.append)
    assert seen and seen[-1] == 1


# ---- what is not pushed -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["open", "paid", "void"])
def test_an_invoice_already_in_stripe_is_answered_as_already_pushed_without_a_call(engine, pusher, emulator, status):
    account(engine, "acme")
    inv_id = invoice(engine, "acme", status=status, stripe_invoice_id="in_before")
    out = pusher.push(inv_id)
    assert (out.status, out.stripe_invoice_id, out.already_pushed, out.stripe_calls) == (
        status, "in_before", True, 0)
    assert emulator.requests() == []


def test_an_invoice_with_nothing_to_charge_is_not_sent(engine, pusher, emulator):
    account(engine, "acme")
    inv_id = invoice(engine, "acme", [], status="no_charge")
    out = pusher.push(inv_id)
    assert (out.status, out.stripe_invoice_id, out.already_pushed) == ("no_charge", None, False)
    assert emulator.requests() == []


def test_an_unknown_invoice_is_not_found(engine, pusher):
    batch = pusher.push_many([424242])
    assert isinstance(batch.errors[424242], InvoiceNotFound) and str(batch.errors[424242]) == "no invoice 424242"
    with pytest.raises(InvoiceNotFound):
        pusher.push(424242)


def test_an_invoice_another_process_is_pushing_is_busy_and_left_alone(engine, pusher, emulator):
    account(engine, "acme")
    busy, free = invoice(engine, "acme"), invoice(engine, "acme", ["9.00"], status="push_failed", period="2026-09")
    with engine.connect() as other:
        assert locks.try_lock(other, f"tally-invoice-push:{busy}")
        batch = pusher.push_many([busy, free])
        locks.unlock(other, f"tally-invoice-push:{busy}")
    assert isinstance(batch.errors[busy], InvoiceBusy) and str(busy) in str(batch.errors[busy])
    assert row(engine, busy).status == "draft"
    assert batch.outcomes[free].status == "open"  # a push_failed invoice is pushed again
    assert pusher.push(busy).status == "open"  # the lock was let go


def test_the_push_lets_go_of_its_locks(engine, pusher):
    account(engine, "acme")
    inv_id = invoice(engine, "acme")
    pusher.push(inv_id)
    with engine.connect() as other:
        assert locks.try_lock(other, f"tally-invoice-push:{inv_id}")
        locks.unlock(other, f"tally-invoice-push:{inv_id}")


# ---- customers ----------------------------------------------------------------------------------------
def test_a_customer_saved_on_the_account_is_checked_and_used_not_created(engine, pusher, emulator, sdk):
    cid = sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "acme"}}).id
    account(engine, "acme", customer=cid)
    since = emulator.requests()[-1]["seq"]
    out = pusher.push(invoice(engine, "acme"))
    assert emulator.state.invoices[out.stripe_invoice_id]["customer"] == cid
    assert posts(emulator, "/v1/customers", since) == []
    assert [r["path"] for r in emulator.requests() if r["method"] == "GET"] == [f"/v1/customers/{cid}"]
    assert out.stripe_calls == 4  # the check, invoice, lines, finalize
    assert records(engine, "customer:acme") == []


def test_a_saved_customer_naming_another_account_fails_every_invoice_of_the_account(engine, pusher, emulator, sdk):
    cid = sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "globex"}}).id
    account(engine, "acme", customer=cid)
    account(engine, "initech")
    a1, a2, ok = invoice(engine, "acme"), invoice(engine, "acme", ["1.00"], status="pushing", period="2026-09"), invoice(engine, "initech")
    batch = pusher.push_many([a1, a2, ok])
    for i in (a1, a2):
        err = batch.errors[i]
        assert isinstance(err, CustomerRefused) and isinstance(err.__cause__, CustomerMismatch)
        assert str(err).startswith(f"invoice {i} (acme 2026-{10 if i == a1 else '09'}): Stripe customer {cid}")
        assert row(engine, i).status == "push_failed" and "names account 'globex'" in row(engine, i).last_error
    assert batch.outcomes[ok].status == "open"
    assert [r["customer"] for r in emulator.state.invoices.values()] == [saved_customer(engine, "initech")]


def test_a_customer_recorded_by_an_earlier_call_is_checked_again_before_use(engine, pusher, emulator, sdk, gw):
    account(engine, "acme")
    cid = ensure_customer(engine, gw, lambda: datetime.now(timezone.utc), "acme", None)
    with engine.begin() as conn:  # the account lost its saved id; the ledger still holds the call
        conn.exec_driver_sql("UPDATE accounts SET stripe_customer_id = NULL WHERE id = 'acme'")
    sdk.v1.customers.update(cid, params={"metadata": {ACCOUNT_KEY: "globex"}})
    inv_id = invoice(engine, "acme")
    with pytest.raises(CustomerRefused):
        pusher.push(inv_id)
    assert saved_customer(engine, "acme") is None
    assert emulator.state.invoices == {}


def test_a_customer_made_now_is_saved_on_the_account_and_not_checked_again(engine, pusher, emulator):
    account(engine, "acme")
    pusher.push(invoice(engine, "acme"))
    cid = saved_customer(engine, "acme")
    assert cid in emulator.state.customers
    assert [r for r in emulator.requests() if r["path"] == f"/v1/customers/{cid}"] == []


def test_a_customer_that_cannot_be_made_now_leaves_the_invoice_pushing_with_the_error(engine, pusher, emulator):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/customers", "drop_after_commit", error=StripeUnreachable)
    after = row(engine, inv_id)
    assert after.status == "pushing" and "customers.create: no response" in after.last_error
    assert saved_customer(engine, "acme") is None
    out = pusher.push(inv_id)  # the retry reuses the key: one customer
    assert out.status == "open" and len(emulator.state.customers) == 1


def test_ensure_customer_creates_once_saves_it_and_checks_a_recorded_one(engine, gw, emulator, sdk):
    account(engine, "acme", email="ops@acme.test")
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731
    cid = ensure_customer(engine, gw, clock, "acme", "ops@acme.test")
    assert saved_customer(engine, "acme") == cid
    assert emulator.state.customers[cid]["email"] == "ops@acme.test"
    with engine.connect() as conn:  # a Connection outside any transaction works the same
        assert ensure_customer(conn, gw, clock, "acme", None) == cid
    assert len(posts(emulator, "/v1/customers")) == 1
    assert len([r for r in emulator.requests() if r["path"] == f"/v1/customers/{cid}"]) == 1
    sdk.v1.customers.update(cid, params={"metadata": {ACCOUNT_KEY: "globex"}})
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE accounts SET stripe_customer_id = NULL WHERE id = 'acme'")
    with pytest.raises(CustomerMismatch):
        ensure_customer(engine, gw, clock, "acme", None)
    assert saved_customer(engine, "acme") is None


def test_ensure_customer_judges_its_key_by_the_callers_clock(engine, gw, emulator):
    account(engine, "acme")
    long_ago = datetime(2026, 1, 2, tzinfo=timezone.utc)
    ensure_customer(engine, gw, lambda: long_ago, "acme", None)
    [rec] = records(engine, "customer:acme")
    assert rec.state == "succeeded"
    # a record started now but judged by a clock two days on is past the trust window: look-up first
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE stripe_requests SET state = 'started' WHERE subject = 'customer:acme'")
    later = datetime.now(timezone.utc) + timedelta(days=2)
    found = ensure_customer(engine, gw, lambda: later, "acme", None)
    assert [(r.attempt, r.state, r.stripe_object_id) for r in records(engine, "customer:acme")] == [
        (1, "succeeded", found)]
    # looked up (a list), not sent again under the old key (which a clock of now would still trust)
    assert len(posts(emulator, "/v1/customers")) == 1
    assert [r["path"] for r in emulator.requests() if r["method"] == "GET"][:1] == ["/v1/customers"]


def test_the_customer_look_up_lists_from_the_first_key_less_the_clock_skew(engine, pusher, emulator):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/customers", "error_500_after_commit")
    [first] = records(engine, "customer:acme")
    out = pusher.push(inv_id)  # the saved 500 is looked up first: the committed customer is found
    assert len(emulator.state.customers) == 1 and out.status == "open"
    [look] = [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == "/v1/customers"]
    assert look["params"]["created"] == {"gte": str(int(first.started_at.timestamp()) - CLOCK_SKEW)}
    assert CLOCK_SKEW == 600


# ---- invoices, lines, finalize --------------------------------------------------------------------------
def test_an_invoice_created_before_is_found_by_its_reference_after_a_saved_failure(engine, pusher, emulator):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/invoices", "error_500_after_commit")
    assert row(engine, inv_id).status == "pushing" and row(engine, inv_id).stripe_invoice_id is None
    out = pusher.push(inv_id)
    assert len(emulator.state.invoices) == 1 and out.stripe_invoice_id in emulator.state.invoices
    assert [(r.attempt, r.state) for r in records(engine, f"invoice:{inv_id}") if r.step == "create"] == [
        (1, "succeeded")]


def test_an_invoice_whose_stripe_id_is_saved_is_not_created_again(engine, pusher, emulator, sdk):
    cid = sdk.v1.customers.create(params={"metadata": {ACCOUNT_KEY: "acme"}}).id
    account(engine, "acme", customer=cid)
    sid = sdk.v1.invoices.create(params={"customer": cid}).id
    inv_id = invoice(engine, "acme", ["1.00"], status="pushing", stripe_invoice_id=sid)
    since = emulator.requests()[-1]["seq"]
    out = pusher.push(inv_id)
    assert out.stripe_invoice_id == sid and posts(emulator, "/v1/invoices", since) == []
    assert emulator.state.invoices[sid]["status"] == "open"


def test_lines_already_all_on_the_stripe_invoice_are_not_added_twice(engine, pusher, emulator):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/invoices/*/add_lines", "error_500_after_commit")
    out = pusher.push(inv_id)
    assert len(emulator.state.invoice_lines[out.stripe_invoice_id]) == 2
    assert len(posts(emulator, "/add_lines")) == 1


def test_lines_missing_from_the_stripe_invoice_are_added_under_the_next_key(engine, pusher, emulator):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/invoices/*/add_lines", "error_500")
    out = pusher.push(inv_id)
    assert len(emulator.state.invoice_lines[out.stripe_invoice_id]) == 2
    assert [p["idempotency_key"] for p in posts(emulator, "/add_lines")] == [
        "tally:acme:2026-10:add_lines:a1", "tally:acme:2026-10:add_lines:a2"]


def test_a_stripe_invoice_holding_only_some_lines_is_refused_for_a_human(engine, pusher, emulator, sdk):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/invoices/*/add_lines", "error_500")
    sid = row(engine, inv_id).stripe_invoice_id
    with engine.begin() as conn:
        first_line = invoices.invoice_lines_of(conn, inv_id)[0].id
    sdk.raw_request("post", f"/v1/invoices/{sid}/add_lines",
                    lines=[{"amount": 125, "description": "x", "metadata": {"tally_line_id": str(first_line)}}])
    with pytest.raises(InvoiceRejected, match="holds only some of this invoice's lines; fix it by hand"):
        pusher.push(inv_id)
    assert row(engine, inv_id).status == "push_failed"


def test_an_invoice_finalized_before_a_saved_failure_is_found_open_and_not_finalized_again(engine, pusher, emulator):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/invoices/*/finalize", "error_500_after_commit")
    out = pusher.push(inv_id)
    assert out.status == "open" and len(posts(emulator, "/finalize")) == 1
    assert [(r.attempt, r.state) for r in records(engine, f"invoice:{inv_id}") if r.step == "finalize"] == [
        (1, "succeeded")]


def test_a_draft_left_by_a_saved_failure_is_finalized_under_the_next_key(engine, pusher, emulator):
    inv_id = first_push_fails(engine, pusher, emulator, "/v1/invoices/*/finalize", "error_500")
    assert row(engine, inv_id).status == "pushing"
    out = pusher.push(inv_id)
    assert emulator.state.invoices[out.stripe_invoice_id]["status"] == "open"
    assert [p["idempotency_key"] for p in posts(emulator, "/finalize")] == [
        "tally:acme:2026-10:finalize:a1", "tally:acme:2026-10:finalize:a2"]


def test_a_rejected_invoice_is_push_failed_with_stripes_reason_and_others_go_on(engine, pusher, emulator):
    account(engine, "acme", customer="cus_never_made_but_saved")
    account(engine, "globex")
    bad, good = invoice(engine, "acme"), invoice(engine, "globex")
    batch = pusher.push_many([bad, good])
    assert type(batch.errors[bad]) is CustomerRefused  # a missing customer names no account
    assert batch.outcomes[good].status == "open"
    assert row(engine, bad).status == "push_failed"


def test_an_invoice_stripe_refuses_is_push_failed_as_rejected(engine, pusher, emulator, monkeypatch, gw):
    from gateways.stripe import StripeRejected

    account(engine, "acme")
    inv_id = invoice(engine, "acme")

    def refuse(*a, **k):
        raise StripeRejected("invoices.create: No such customer", 400)

    monkeypatch.setattr(gw.invoices, "create", refuse)
    with pytest.raises(InvoiceRejected) as exc:
        pusher.push(inv_id)
    assert type(exc.value) is InvoiceRejected and isinstance(exc.value.__cause__, StripeRejected)
    assert str(exc.value) == f"invoice {inv_id} (acme 2026-10): invoices.create: No such customer"
    after = row(engine, inv_id)
    assert (after.status, after.last_error) == ("push_failed", "invoices.create: No such customer")


def test_ensure_customer_on_a_connection_looks_up_from_the_first_key_after_a_saved_failure(engine, gw, emulator):
    account(engine, "acme")
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731
    emulator.add_fault(method="POST", path="/v1/customers", kind="error_500_after_commit")
    with engine.connect() as conn:
        with pytest.raises(StripeFailed):
            ensure_customer(conn, gw, clock, "acme", None)
        [first] = records(engine, "customer:acme")
        cid = ensure_customer(conn, gw, clock, "acme", None)
    assert list(emulator.state.customers) == [cid] and saved_customer(engine, "acme") == cid
    [look] = [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == "/v1/customers"]
    assert look["params"]["created"] == {"gte": str(int(first.started_at.timestamp()) - CLOCK_SKEW)}
