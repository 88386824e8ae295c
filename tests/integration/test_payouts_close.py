"""Premium skills through the real close (time-skipping Temporal, Postgres, the emulator): the fixed-price
line on the user's invoice, earnings per invoice line hand-computed, payable only once the invoice is
paid (``invoice.paid`` webhook), and a refund after the payout carried as a negative adjustment."""

from __future__ import annotations

from decimal import Decimal

import pytest

from models.db import get_engine
from repositories import invoices as invoice_rows
from repositories import payouts as repo
from billing.catalog import default_catalog
from billing.periods import Period
from services import payouts as service
from services.errors import InvalidInput
from tests.factories import OCT_START, create_account, event, ingest
from tests.integration.test_close import run_close
from tests.payouts_support import creator, decide, deliver_event, deps, invoice_paid, pay, transfers, utc

OCT = Period.parse("2026-10")


def premium(settings, skill: str, *, share: bool = False, fixed: str | None = None) -> None:
    service.mark_premium(get_engine(settings.database_url), default_catalog(), skill, "cr1", share=share,
                         fixed_price=fixed, at=utc(2026, 10, 1))


def run(settings, account: str, n: int, skill_of) -> None:
    from datetime import timedelta

    docs = [event(account, i, OCT_START + timedelta(minutes=7 * i), "claude-haiku", skill_id=skill_of(i))
            for i in range(n)]
    assert ingest(settings.database_url, docs).rejected == 0


def invoice(settings, account: str):
    with get_engine(settings.database_url).begin() as conn:
        inv = invoice_rows.find_invoice(conn, account, OCT)
        return inv, invoice_rows.invoice_lines_of(conn, inv.id), repo.invoice_earnings_of(conn, inv.id)


def test_fixed_price_outside_the_range_is_refused_with_the_range(settings, emulator):
    creator(settings, emulator, "cr1", onboard=False)
    for price in ("0.51", "0", "0.005", "-0.05"):
        with pytest.raises(InvalidInput) as err:
            premium(settings, "sk-fixed", fixed=price)
        assert err.value.field == "fixed_price" and "between $0.01 and $0.50" in str(err.value)
    with get_engine(settings.database_url).begin() as conn:
        assert repo.premium_skills_in_force(conn) == {}


async def test_fixed_and_share_earnings_are_hand_computed_from_the_invoices(temporal_env, settings, emulator):
    creator(settings, emulator, "cr1")
    premium(settings, "sk-share", share=True)
    premium(settings, "sk-fixed", fixed="0.05")
    create_account(settings.database_url, "payg-a", "payg")
    create_account(settings.database_url, "pro-a", "pro")
    # payg-a: 120 executions at $0.01 = $1.20; 30 ran sk-share, 20 ran sk-fixed ($0.05 each, own line)
    run(settings, "payg-a", 120, lambda i: "sk-share" if i < 30 else "sk-fixed" if i < 50 else "plain")
    # pro-a: $29.00 base fee over 100 executions (all included); 25 ran sk-share
    run(settings, "pro-a", 100, lambda i: "sk-share" if i < 25 else "plain")
    await run_close(temporal_env, settings)

    inv, lines, earnings = invoice(settings, "payg-a")
    fixed = [x for x in lines if x.kind == "premium_skill"]
    assert [(x.quantity, x.unit_price, x.amount) for x in fixed] == [(Decimal("20"), Decimal("0.05"), Decimal("1.00"))]
    assert "sk-fixed" in fixed[0].description
    assert inv.total == Decimal("2.20")  # $1.20 usage + $1.00 premium skill
    # share: 30% of 30/120 of the $1.20 usage line = $0.09; fixed: 70% of the $1.00 line = $0.70
    assert {(e.source.split(":")[-1] if ":" in e.source else e.source, e.amount) for e in earnings} == {
        ("claude-haiku", Decimal("0.09")), ("sk-fixed", Decimal("0.70"))}
    inv_pro, lines_pro, earnings_pro = invoice(settings, "pro-a")
    assert inv_pro.total == Decimal("29.00") and not [x for x in lines_pro if x.kind == "premium_skill"]
    # share of the base fee, pro rata per execution: 30% x $29.00 x 25/100 = $2.175 -> $2.18
    assert [(e.source.rsplit(":", 1)[-1], e.amount) for e in earnings_pro] == [("base_fee", Decimal("2.18"))]

    # unpaid invoices accrue nothing payable
    d = deps(settings)
    assert decide(d, "2026-11").to_pay == []
    assert service.list_payouts(get_engine(settings.database_url), "2026-11") == []
    # paid in November (invoice.paid): payable, and below $25 carried visibly
    for account, total in (("payg-a", 220), ("pro-a", 2900)):
        invoice_paid(settings, invoice(settings, account)[0].stripe_invoice_id, utc(2026, 11, 10), total)
    assert invoice(settings, "pro-a")[0].status == "paid"
    decide(d, "2026-11")
    [p] = service.list_payouts(get_engine(settings.database_url), "2026-11")
    assert (p.status, p.carried_out, p.message) == ("carried", Decimal("2.97"), "$2.97 carried to 2026-12")
    statement = service.statement(get_engine(settings.database_url), "cr1", "2026-11")
    assert statement["earned"] == "2.97"
    assert {s["skill_id"]: s["executions"] for s in statement["skills"]} == {"sk-share": 55, "sk-fixed": 20}


async def test_refund_after_payout_is_carried_as_a_negative_adjustment(temporal_env, settings, emulator):
    creator(settings, emulator, "cr1")
    premium(settings, "sk-fixed", fixed="0.50")
    create_account(settings.database_url, "payg-b", "payg")
    run(settings, "payg-b", 100, lambda i: "sk-fixed")  # $1.00 usage + $50.00 premium line; cr1 earns $35.00
    await run_close(temporal_env, settings)
    inv, _, _ = invoice(settings, "payg-b")
    assert inv.total == Decimal("51.00")
    invoice_paid(settings, inv.stripe_invoice_id, utc(2026, 11, 10), 5100, charge="ch_b")
    d = deps(settings)
    paid = pay(d, "2026-11", decide(d, "2026-11").to_pay)
    assert paid.amount_paid == Decimal("35.00") and len(transfers(emulator)) == 1
    refund = {"id": "ch_b", "object": "charge", "amount": 5100, "amount_refunded": 5100, "invoice": inv.stripe_invoice_id}
    delivery = deliver_event(settings, "charge.refunded", refund, utc(2026, 12, 2), event_id="evt_refund_1")
    assert delivery.outcome == "handled"
    assert deliver_event(settings, "charge.refunded", refund, utc(2026, 12, 2), event_id="evt_refund_1").outcome == "duplicate"
    # the same cumulative refund told again (another event) takes nothing more
    deliver_event(settings, "charge.refunded", refund, utc(2026, 12, 3), event_id="evt_refund_2")
    with get_engine(settings.database_url).begin() as conn:
        adjustments = repo.adjustments_of_invoice(conn, inv.id)
    assert [a.amount for a in adjustments] == [Decimal("-35.00")]
    decide(d, "2026-12")
    dec = service.show_payout(get_engine(settings.database_url), "payout-cr1-2026-12")
    assert (dec.status, dec.carried_out, dec.message) == ("carried", Decimal("-35.00"), "-$35.00 carried to 2027-01")
    assert len(transfers(emulator)) == 1  # nothing was paid, let alone twice


def _adjustments(settings, invoice_id: int) -> list[Decimal]:
    with get_engine(settings.database_url).begin() as conn:
        return [a.amount for a in repo.adjustments_of_invoice(conn, invoice_id)]


async def test_a_won_dispute_gives_back_once_and_a_lost_one_keeps_what_was_taken(temporal_env, settings, emulator):
    creator(settings, emulator, "cr1")
    premium(settings, "sk-fixed", fixed="0.50")
    for account in ("payg-w", "payg-l", "payg-r"):
        create_account(settings.database_url, account, "payg")
        run(settings, account, 10, lambda i: "sk-fixed")  # $0.10 usage + $5.00 premium line; cr1 earns $3.50
    await run_close(temporal_env, settings)
    inv = {a: invoice(settings, a)[0] for a in ("payg-w", "payg-l", "payg-r")}
    for a, charge in (("payg-w", "ch_w"), ("payg-l", "ch_l"), ("payg-r", "ch_r")):
        invoice_paid(settings, inv[a].stripe_invoice_id, utc(2026, 11, 10), 510, charge=charge)

    def dispute(dp: str, charge: str, status: str, amount: int = 510) -> dict:
        return {"id": dp, "object": "dispute", "charge": charge, "amount": amount, "status": status}

    # won: half the charge disputed ($1.75 taken back), then won: given back once, however often told
    deliver_event(settings, "charge.dispute.created", dispute("dp_w", "ch_w", "needs_response", 255),
                  utc(2026, 12, 1), event_id="evt_dw_1")
    assert _adjustments(settings, inv["payg-w"].id) == [Decimal("-1.75")]
    for n, day in ((2, 5), (3, 6)):
        deliver_event(settings, "charge.dispute.closed", dispute("dp_w", "ch_w", "won", 255), utc(2026, 12, day),
                      event_id=f"evt_dw_{n}")
    assert sorted(_adjustments(settings, inv["payg-w"].id)) == [Decimal("-1.75"), Decimal("1.75")]
    # lost: what was taken stays taken
    deliver_event(settings, "charge.dispute.created", dispute("dp_l", "ch_l", "needs_response"), utc(2026, 12, 1))
    deliver_event(settings, "charge.dispute.closed", dispute("dp_l", "ch_l", "lost"), utc(2026, 12, 5))
    assert _adjustments(settings, inv["payg-l"].id) == [Decimal("-3.50")]
    # reordered: the won `closed` arrives before its `created`: nothing is taken, nothing given
    deliver_event(settings, "charge.dispute.closed", dispute("dp_r", "ch_r", "won"), utc(2026, 12, 5))
    deliver_event(settings, "charge.dispute.created", dispute("dp_r", "ch_r", "needs_response"), utc(2026, 12, 1))
    assert _adjustments(settings, inv["payg-r"].id) == []


def test_account_updated_follows_the_connect_account_and_ignores_an_older_event(settings, emulator):
    account = creator(settings, emulator, "cr1", enable=False)
    obj = {"id": account, "object": "account", "charges_enabled": True, "payouts_enabled": True,
           "details_submitted": True, "capabilities": {"transfers": "active"}}
    deliver_event(settings, "account.updated", obj, utc(2026, 11, 2, 12))
    older = obj | {"payouts_enabled": False, "capabilities": {"transfers": "pending"}}
    deliver_event(settings, "account.updated", older, utc(2026, 11, 2, 11))
    with get_engine(settings.database_url).begin() as conn:
        row = repo.get_creator(conn, "cr1")
    assert (row.charges_enabled, row.payouts_enabled, row.transfers_capability) == (True, True, "active")
    deliver_event(settings, "account.updated", obj | {"capabilities": {"transfers": "inactive"}}, utc(2026, 11, 3))
    with get_engine(settings.database_url).begin() as conn:
        assert repo.get_creator(conn, "cr1").transfers_capability == "inactive"
