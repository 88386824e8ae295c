"""Creator payouts on real Postgres and the Stripe emulator over HTTP: the activities run as Temporal runs
them (a retry is the next attempt number), faults injected where Stripe would produce them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError

from gateways.stripe.ledger import KEY_TRUST_WINDOW
from models.db import get_engine
from models.failures import Failure, PayoutBudget
from repositories import payouts as repo
from repositories.stripe_requests import stripe_requests_for
from services import payouts as service
from tests.payouts_support import (
    Clock,
    creator,
    decide,
    deps,
    earn,
    pay,
    retry,
    transfer_posts,
    transfers,
    utc,
)


def payout(settings, payout_id: str):
    with get_engine(settings.database_url).begin() as conn:
        return repo.get_payout(conn, payout_id)


def test_2499_carries_and_pays_next_month_when_it_crosses_25(settings, emulator):
    creator(settings, emulator, "cr1")
    earn(settings, "cr1", "24.99", utc(2026, 10, 20))
    d = deps(settings)
    page = decide(d, "2026-10")
    assert page.to_pay == [] and page.carried == 1
    oct_ = payout(settings, "payout-cr1-2026-10")
    assert (oct_.status, oct_.carried_out, oct_.message) == ("carried", Decimal("24.99"), "$24.99 carried to 2026-11")
    earn(settings, "cr1", "0.01", utc(2026, 11, 3))
    page = decide(d, "2026-11")
    assert page.to_pay == ["payout-cr1-2026-11"]
    result = pay(d, "2026-11", page.to_pay)
    assert result.paid == ["payout-cr1-2026-11"] and result.amount_paid == Decimal("25.00")
    [t] = transfers(emulator)
    assert (t.amount, t.transfer_group, t.metadata["tally_payout_id"]) == (2500, "payout-cr1-2026-11", "payout-cr1-2026-11")
    nov = payout(settings, "payout-cr1-2026-11")
    assert (nov.status, nov.carried_in, nov.amount, nov.stripe_transfer_id) == ("paid", Decimal("24.99"),
                                                                                 Decimal("25.00"), t.id)
    # December starts from zero: what was paid is never paid again
    earn(settings, "cr1", "1.00", utc(2026, 12, 2))
    decide(d, "2026-12")
    assert payout(settings, "payout-cr1-2026-12").carried_out == Decimal("1.00")


def test_a_decided_payout_is_never_re_decided(settings, emulator):
    creator(settings, emulator, "cr1")
    earn(settings, "cr1", "30.00", utc(2026, 10, 20))
    d = deps(settings)
    first = decide(d, "2026-10")
    earn(settings, "cr1", "5.00", utc(2026, 10, 21), tag="late")
    again = decide(d, "2026-10")
    assert first.to_pay == again.to_pay == ["payout-cr1-2026-10"]
    assert payout(settings, "payout-cr1-2026-10").amount == Decimal("30.00")
    # the late $5.00 (payable in October, decided already) carries into November's balance
    pay(d, "2026-10", first.to_pay)
    decide(d, "2026-11")
    assert payout(settings, "payout-cr1-2026-11").carried_in == Decimal("5.00")


def test_lost_response_after_commit_is_retried_without_a_second_transfer(settings, emulator):
    creator(settings, emulator, "cr1")
    earn(settings, "cr1", "40.00", utc(2026, 10, 20))
    d = deps(settings)
    ids = decide(d, "2026-10").to_pay
    emulator.add_fault(method="POST", path="/v1/transfers", kind="drop_after_commit")
    with pytest.raises(ApplicationError) as err:
        pay(d, "2026-10", ids, attempt=1)
    assert err.value.type == Failure.STRIPE_TRANSIENT
    assert len(transfers(emulator)) == 1  # Stripe committed it; Tally did not hear back
    assert payout(settings, ids[0]).status == "pending"
    result = pay(d, "2026-10", ids, attempt=2)
    assert result.paid == ids
    assert len(transfers(emulator)) == 1
    keys = {r["idempotency_key"] for r in transfer_posts(emulator)}
    with get_engine(settings.database_url).begin() as conn:
        recs = stripe_requests_for(conn, ids[0])
    assert [(r.state, r.attempt) for r in recs] == [("succeeded", 1)]
    assert keys == {"tally:payout-cr1-2026-10:transfer:a1"}


def test_retry_after_25_hours_finds_the_first_transfer_instead_of_paying_again(settings, emulator):
    creator(settings, emulator, "cr1")
    earn(settings, "cr1", "40.00", utc(2026, 10, 20))
    clock = Clock(datetime.now(timezone.utc))  # the ledger compares it with the records' start (database time)
    d = deps(settings, clock)
    ids = decide(d, "2026-10").to_pay
    emulator.add_fault(method="POST", path="/v1/transfers", kind="drop_after_commit")
    # the run's last attempt gets no answer: it gives up on the payout (failed, waiting for ops)
    result = pay(d, "2026-10", ids, attempt=PayoutBudget.GIVE_UP_AT)
    assert result.failed == ids
    assert payout(settings, ids[0]).failure_reason.startswith("Stripe unavailable")
    emulator.clear_faults()
    [first] = transfers(emulator)
    # a day later Stripe may have forgotten the key: the ledger lists by transfer_group before a new key
    clock.now += timedelta(hours=25)
    emulator.advance_clock(25 * 3600)
    emulator.prune_expired()
    view = retry(d, ids[0])
    assert (view.status, view.stripe_transfer_id) == ("paid", first.id)
    assert len(transfers(emulator)) == 1
    with get_engine(settings.database_url).begin() as conn:
        [rec] = stripe_requests_for(conn, ids[0])
    assert rec.state == "succeeded" and "found in Stripe by look-up" in rec.error
    assert clock.now - rec.started_at > KEY_TRUST_WINDOW


def test_balance_insufficient_fails_then_ops_retry_pays_exactly_once(settings, emulator):
    creator(settings, emulator, "cr1")
    earn(settings, "cr1", "40.00", utc(2026, 10, 20))
    d = deps(settings)
    ids = decide(d, "2026-10").to_pay
    emulator.set_platform_balance(1000)  # $10.00 available
    result = pay(d, "2026-10", ids)
    assert result.failed == ids and result.paid == []
    failed = payout(settings, ids[0])
    assert failed.status == "failed" and failed.failure_reason.startswith("balance_insufficient")
    assert transfers(emulator) == []
    assert service.list_payouts(get_engine(settings.database_url), "2026-10", "failed")[0].id == ids[0]
    emulator.set_platform_balance(100_000)
    view = retry(d, ids[0])
    assert view.status == "paid"
    again = retry(d, ids[0])  # a second retry finds it paid: nothing is sent
    assert again.stripe_transfer_id == view.stripe_transfer_id
    [t] = transfers(emulator)
    assert t.amount == 4000 and t.id == view.stripe_transfer_id


def test_payout_to_an_account_without_transfers_capability_fails_with_the_reason(settings, emulator):
    creator(settings, emulator, "cr1", enable=False)
    creator(settings, emulator, "cr2", onboard=False)
    earn(settings, "cr1", "40.00", utc(2026, 10, 20))
    earn(settings, "cr2", "40.00", utc(2026, 10, 20))
    d = deps(settings)
    result = pay(d, "2026-10", decide(d, "2026-10").to_pay)
    assert sorted(result.failed) == ["payout-cr1-2026-10", "payout-cr2-2026-10"]
    assert "transfers" in payout(settings, "payout-cr1-2026-10").failure_reason
    assert "no connected account" in payout(settings, "payout-cr2-2026-10").failure_reason
    assert transfers(emulator) == []


def test_stripe_calls_per_paid_payout_is_one(settings, emulator):
    for i in range(5):
        creator(settings, emulator, f"cr{i}")
        earn(settings, f"cr{i}", "30.00", utc(2026, 10, 20))
    d = deps(settings)
    before = len(emulator.requests())
    result = pay(d, "2026-10", decide(d, "2026-10").to_pay)
    assert len(result.paid) == 5
    assert len(emulator.requests()) - before == 5
