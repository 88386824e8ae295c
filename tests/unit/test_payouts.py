"""Hand-computed creator earnings and payouts (billing/payouts.py)."""

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from billing.catalog import load_catalog
from billing.errors import BillingError
from billing.payouts import (
    ChargeLine,
    CreditFundedExecution,
    DiscountLine,
    Earning,
    PayoutError,
    PayoutStatus,
    PriorPayout,
    check_fixed_price,
    credit_funded_earnings,
    decide_payout,
    fixed_earnings,
    fixed_price_line,
    payable_at,
    premium_skill,
    refund_adjustments,
    share_earnings,
)
from billing.periods import Period

D = Decimal
UTC = timezone.utc
TERMS = load_catalog().latest.creators
NOV, DEC, JAN = Period(2026, 11), Period(2026, 12), Period(2027, 1)


def ts(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


SKILLS = {
    "review": premium_skill("review", "alice", TERMS, share=True),
    "summary": premium_skill("summary", "alice", TERMS, share=True),
    "translate": premium_skill("translate", "bob", TERMS, fixed_price="0.05"),
}


def earning(amount, invoice_id=None, creator="alice", payable_from=None, n=[0]):
    n[0] += 1
    return Earning(id=f"e{n[0]}", creator_id=creator, source="test", amount=D(amount), revenue=D(amount),
                   executions=1, skills=(), invoice_id=invoice_id, payable_from=payable_from)


def decide(period, earnings=(), paid=None, adjustments=(), payouts=(), creator="alice"):
    return decide_payout(creator, period, earnings=earnings, invoice_paid_at=paid or {}, adjustments=adjustments,
                         payouts=payouts, terms=TERMS)


def paid_out(decision, status=PayoutStatus.paid):
    return PriorPayout(decision.payout_id, decision.creator_id, decision.period, decision.amount, status)


# ---- terms and premium skills -----------------------------------------------------------------------
def test_catalog_holds_the_brief_share_terms():
    assert (TERMS.share_percent, TERMS.fixed_percent, TERMS.fixed_price_min, TERMS.fixed_price_max,
            TERMS.minimum_payout) == (D(30), D(70), D("0.01"), D("0.50"), D("25.00"))


@pytest.mark.parametrize("price", ["0.60", "0.00", "0.009", "-0.05", "0.015"])
def test_fixed_price_outside_the_range_is_refused_with_the_range(price):
    with pytest.raises(PayoutError) as e:
        check_fixed_price(price, TERMS)
    assert e.value.field == "fixed_price"
    assert "between $0.01 and $0.50" in str(e.value)


def test_fixed_price_bounds_are_inclusive_and_floats_refused():
    assert check_fixed_price("0.01", TERMS) == D("0.01")
    assert check_fixed_price(D("0.50"), TERMS) == D("0.50")
    with pytest.raises(BillingError) as e:
        check_fixed_price(0.05, TERMS)
    assert e.value.field == "fixed_price"
    with pytest.raises(PayoutError) as e:
        premium_skill("x", "alice", TERMS, share=True, fixed_price="0.05")
    assert e.value.field == "model"


# ---- earnings from a hand-built invoice ------------------------------------------------------------
def test_share_and_fixed_earnings_from_a_pro_invoice():
    # Pro, October: 6,000 executions (5,000 included, 1,000 overage at $0.005, all claude-haiku).
    # alice's `review` (share) ran 600 of them, 100 of those past the quota. bob's `translate` (fixed
    # $0.05) ran 400.
    charges = [
        ChargeLine("fee", D("29.00"), 6000, {"review": 600, "translate": 400}),
        ChargeLine("overage-haiku", D("5.00"), 1000, {"review": 100}),
    ]
    got = share_earnings("inv-1", charges, [], SKILLS, TERMS)
    # fee: 29.00 x 600/6,000 = 2.90 -> 30% = 0.87; overage: 5.00 x 100/1,000 = 0.50 -> 30% = 0.15
    assert [(e.id, e.creator_id, e.revenue, e.amount, e.executions) for e in got] == [
        ("invoice:inv-1:fee:alice", "alice", D("2.90"), D("0.87"), 600),
        ("invoice:inv-1:overage-haiku:alice", "alice", D("0.50"), D("0.15"), 100),
    ]
    line = fixed_price_line(SKILLS["translate"], 400)
    assert (line.line_id, line.quantity, line.unit_price, line.amount) == ("fixed:translate", 400, D("0.05"), D("20.00"))
    assert "400 executions × $0.05" in line.description
    fixed = fixed_earnings("inv-1", line, TERMS)
    assert (fixed.creator_id, fixed.amount, fixed.invoice_id) == ("bob", D("14.00"), "inv-1")  # 70% of 20.00


def test_a_discount_reduces_the_lines_it_applies_to_before_the_share():
    # PAYG: 7,000 executions x $0.01 = $70.00, capped at $50.00 (-$20.00). review ran 700 of them.
    charges = [ChargeLine("usage", D("70.00"), 7000, {"review": 700})]
    cap = [DiscountLine("cap", D("-20.00"), ("usage",))]
    [e] = share_earnings("inv-2", charges, cap, SKILLS, TERMS)
    # 70.00 x 50/70 = 50.00 net; 700/7,000 of it = 5.00; 30% = 1.50
    assert (e.revenue, e.amount) == (D("5.00"), D("1.50"))


def test_two_skills_of_one_creator_on_a_line_are_rounded_once():
    # fee 29.00 over 6,000 executions: review 3 -> 0.0145, summary 2 -> 0.00966..., together 0.024166...
    # 30% of the sum = 0.00725 -> $0.01. Rounding per skill would give 0.00 + 0.00.
    [e] = share_earnings("inv-3", [ChargeLine("fee", D("29.00"), 6000, {"review": 3, "summary": 2})], [], SKILLS, TERMS)
    assert e.amount == D("0.01") and [s.skill_id for s in e.skills] == ["review", "summary"]


def test_bad_invoice_descriptions_are_refused_naming_the_field():
    with pytest.raises(PayoutError) as e:
        share_earnings("i", [ChargeLine("fee", D("1.00"), 1, {"review": 2})], [], SKILLS, TERMS)
    assert e.value.field == "skill_executions"
    with pytest.raises(PayoutError) as e:
        share_earnings("i", [ChargeLine("fee", D("1.00"), 1, {})], [DiscountLine("cap", D("-2.00"), ("fee",))],
                       SKILLS, TERMS)
    assert e.value.field == "amount"
    with pytest.raises(PayoutError) as e:
        share_earnings("i", [ChargeLine("fee", D("1.00"), 1, {})], [DiscountLine("cap", D("-0.50"), ("nope",))],
                       SKILLS, TERMS)
    assert e.value.field == "applies_to"


def test_credit_funded_executions_earn_at_the_credits_purchase_price_payable_at_once():
    # 100 standard executions of `review` paid with Growth credits: 5 x $50/6,000 each = 0.041666...
    value = D(5) * D(50) / D(6000)
    runs = [CreditFundedExecution(f"ev{i}", "review", value) for i in range(100)]
    runs.append(CreditFundedExecution("ev-fixed", "translate", value))  # a fixed price is on the invoice
    [e] = credit_funded_earnings("acme", NOV, runs, SKILLS, TERMS)
    # 100 x 0.041666... = 4.1666...; 30% = 1.25
    assert (e.id, e.amount, e.executions, e.invoice_id) == ("credits:acme:2026-11:alice", D("1.25"), 100, None)
    assert payable_at(e, {}) == ts(2026, 12, 1)


# ---- payable ---------------------------------------------------------------------------------------
def test_an_unpaid_invoice_accrues_nothing_payable():
    e = earning("30.00", invoice_id="inv-oct")
    assert payable_at(e, {}) is None
    nov = decide(NOV, [e])
    assert (nov.pay, nov.balance, nov.message) == (False, D("0.00"), "nothing payable for 2026-11")
    dec = decide(DEC, [e], paid={"inv-oct": ts(2026, 12, 4)}, payouts=[paid_out(nov)])
    assert (dec.pay, dec.amount, dec.earnings) == (True, D("30.00"), D("30.00"))


# ---- the monthly payout ---------------------------------------------------------------------------
def test_2499_carries_and_pays_next_month_when_it_crosses_25():
    first = earning("24.99", invoice_id="inv-oct")
    paid = {"inv-oct": ts(2026, 11, 5)}
    nov = decide(NOV, [first], paid)
    assert (nov.pay, nov.amount, nov.carried_out) == (False, D("0"), D("24.99"))
    assert nov.message == "$24.99 carried to 2026-12"
    second = earning("0.02", invoice_id="inv-nov")
    paid["inv-nov"] = ts(2026, 12, 4)
    dec = decide(DEC, [first, second], paid, payouts=[paid_out(nov)])
    assert (dec.carried_in, dec.earnings, dec.balance) == (D("24.99"), D("0.02"), D("25.01"))
    assert (dec.pay, dec.amount, dec.carried_out, dec.payout_id) == (True, D("25.01"), D("0"), "payout-alice-2026-12")
    jan = decide(JAN, [first, second], paid, payouts=[paid_out(nov), paid_out(dec)])
    assert (jan.pay, jan.balance) == (False, D("0"))


def test_a_refund_after_payout_is_carried_as_a_negative_adjustment():
    [e] = share_earnings("inv-oct", [ChargeLine("usage", D("100.00"), 100, {"review": 100})], [], SKILLS, TERMS)
    assert e.amount == D("30.00")
    paid = {"inv-oct": ts(2026, 11, 5)}
    nov = decide(NOV, [e], paid)
    assert (nov.pay, nov.amount) == (True, D("30.00"))
    # December 10: the customer is refunded the whole invoice, after alice was paid
    adj = refund_adjustments("inv-oct", [e], charged=D("100.00"), refunded=D("100.00"), previous=[],
                             refund_id="re_1", at=ts(2026, 12, 10))
    assert [(a.id, a.amount) for a in adj] == [("refund:inv-oct:re_1:alice", D("-30.00"))]
    assert refund_adjustments("inv-oct", [e], charged=D("100.00"), refunded=D("100.00"), previous=adj,
                              refund_id="re_1", at=ts(2026, 12, 10)) == []  # a replayed event adds nothing
    dec_earning = earning("10.00", invoice_id="inv-nov")
    paid["inv-nov"] = ts(2026, 12, 6)
    dec = decide(DEC, [e, dec_earning], paid, adjustments=adj, payouts=[paid_out(nov)])
    assert (dec.carried_in, dec.earnings, dec.adjustments, dec.balance) == (D("0.00"), D("10.00"), D("-30.00"), D("-20.00"))
    assert (dec.pay, dec.message) == (False, "-$20.00 carried to 2027-01")
    jan_earning = earning("50.00", invoice_id="inv-dec")
    paid["inv-dec"] = ts(2027, 1, 5)
    jan = decide(JAN, [e, dec_earning, jan_earning], paid, adjustments=adj, payouts=[paid_out(nov)])
    assert (jan.carried_in, jan.balance, jan.pay, jan.amount) == (D("-20.00"), D("30.00"), True, D("30.00"))


def test_partial_refunds_take_back_cumulatively_and_a_won_dispute_gives_back():
    [e] = share_earnings("inv", [ChargeLine("usage", D("10.00"), 3, {"review": 1})], [], SKILLS, TERMS)
    assert e.amount == D("1.00")  # 10.00 / 3 = 3.333..., 30% = 0.999... -> 1.00
    a1 = refund_adjustments("inv", [e], charged=D("10.00"), refunded=D("3.33"), previous=[], refund_id="r1",
                            at=ts(2026, 12, 1))
    a2 = refund_adjustments("inv", [e], charged=D("10.00"), refunded=D("10.00"), previous=a1, refund_id="r2",
                            at=ts(2026, 12, 2))
    assert [a.amount for a in a1 + a2] == [D("-0.33"), D("-0.67")]  # together exactly the earning
    back = refund_adjustments("inv", [e], charged=D("10.00"), refunded=D("0.00"), previous=a1 + a2,
                              refund_id="dispute-won", at=ts(2026, 12, 20))
    assert [a.amount for a in back] == [D("1.00")]


def test_a_failed_payout_stays_reserved_and_a_cancelled_one_returns_to_the_balance():
    e = earning("40.00", payable_from=ts(2026, 11, 15))
    nov = decide(NOV, [e])
    assert nov.pay and nov.amount == D("40.00")
    # still failed when December is decided: nothing is paid again
    dec = decide(DEC, [e], payouts=[paid_out(nov, PayoutStatus.failed)])
    assert (dec.pay, dec.balance) == (False, D("0.00"))
    # ops cancelled it: December pays it
    dec = decide(DEC, [e], payouts=[paid_out(nov, PayoutStatus.cancelled)])
    assert (dec.pay, dec.amount) == (True, D("40.00"))


def test_a_rerun_decides_the_same_whatever_was_paid_since():
    e = earning("40.00", payable_from=ts(2026, 11, 15))
    first = decide(NOV, [e])
    assert decide(NOV, [e], payouts=[paid_out(first)]) == first


def test_facts_of_another_creator_are_refused():
    with pytest.raises(PayoutError) as exc:
        decide(NOV, [earning("1.00", creator="bob", payable_from=ts(2026, 11, 2))])
    assert exc.value.field == "earnings"


def test_a_refund_landing_on_an_exact_half_cent_rounds_half_up():
    """0.17 earned x 0.05 refunded / 0.34 charged = 0.025 exactly: takes back 0.03 (dividing first would
    truncate 0.05/0.34 and land just under the half cent, 0.02)."""
    from billing.payouts import Earning, refund_adjustments

    earnings = [Earning("e0", "c0", "t", D("0.17"), D("0.17"), 1, (), invoice_id="inv")]
    got = refund_adjustments("inv", earnings, charged=D("0.34"), refunded=D("0.05"), previous=[], refund_id="r0",
                             at=datetime(2026, 10, 1, tzinfo=timezone.utc))
    assert [a.amount for a in got] == [D("-0.03")]
