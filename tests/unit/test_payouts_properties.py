"""Property tests of creator earnings and payouts (hypothesis)."""

from datetime import timedelta, timezone
from decimal import Decimal
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.catalog import load_catalog
from billing.money import is_whole_cents, round_money
from billing.payouts import (
    ChargeLine,
    CreatorAdjustment,
    DiscountLine,
    Earning,
    PayoutStatus,
    PriorPayout,
    decide_payout,
    payable_at,
    premium_skill,
    refund_adjustments,
    share_earnings,
)
from billing.periods import Period

UTC = timezone.utc
TERMS = load_catalog().latest.creators
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIRST = Period(2026, 1)
TOLERANCE = Decimal("1e-40")


def month(i: int) -> Period:
    p = FIRST
    for _ in range(i):
        p = p.next()
    return p


cents = st.integers(0, 4000).map(lambda c: Decimal(c) / 100)

# an earning: amount, which month it becomes payable in (None: its invoice is never paid), an offset
# inside that month, how many months later Tally learns of it (a late webhook), credit-funded or not
earning_st = st.tuples(cents, st.one_of(st.none(), st.integers(0, 8)), st.integers(1, 27 * 24 * 3600),
                       st.integers(0, 2), st.booleans())
adjust_st = st.tuples(st.integers(-3000, 500).map(lambda c: Decimal(c) / 100), st.integers(0, 8),
                      st.integers(0, 27 * 24 * 3600))


@SETTINGS
@given(raw_earnings=st.lists(earning_st, max_size=25), raw_adjustments=st.lists(adjust_st, max_size=6),
       statuses=st.lists(st.sampled_from([PayoutStatus.pending, PayoutStatus.paid, PayoutStatus.failed]),
                         min_size=12, max_size=12),
       cancel_later=st.lists(st.booleans(), min_size=12, max_size=12))
def test_across_months_nothing_is_lost_or_paid_twice(raw_earnings, raw_adjustments, statuses, cancel_later):
    earnings, known, paid = [], {}, {}
    for i, (amount, m, offset, delay, credit_funded) in enumerate(raw_earnings):
        when = None if m is None else month(m).start + timedelta(seconds=offset)
        if credit_funded and when is not None:
            e = Earning(f"e{i}", "alice", "t", amount, amount, 1, (), payable_from=when)
        else:
            e = Earning(f"e{i}", "alice", "t", amount, amount, 1, (), invoice_id=f"inv{i}")
            if when is not None:
                paid[f"inv{i}"] = when
        earnings.append(e)
        known[e.id] = (m if m is not None else 0) + delay  # the month whose payout first sees it
    adjustments = [CreatorAdjustment(f"a{i}", "alice", amount, month(m).start + timedelta(seconds=off), "refund")
                   for i, (amount, m, off) in enumerate(raw_adjustments)]
    payouts: list[PriorPayout] = []
    for i in range(12):
        p = month(i)
        seen = [e for e in earnings if known[e.id] <= i]
        d = decide_payout("alice", p, earnings=seen, invoice_paid_at=paid, adjustments=adjustments,
                          payouts=payouts, terms=TERMS)
        assert d.balance == d.carried_in + d.earnings + d.adjustments
        assert d.amount + d.carried_out == d.balance
        if d.pay:
            assert d.amount >= TERMS.minimum_payout and is_whole_cents(d.amount)
            assert all(x.payout_id != d.payout_id for x in payouts)  # one payout per creator and month
            payouts.append(PriorPayout(d.payout_id, "alice", p, d.amount, statuses[i]))
        # a re-run of the same month, after its payout was recorded, decides the same
        again = decide_payout("alice", p, earnings=seen, invoice_paid_at=paid, adjustments=adjustments,
                              payouts=payouts, terms=TERMS)
        assert again == d
        # ops may cancel a pending or failed payout later on (its amount returns to the balance)
        if cancel_later[i] and payouts and payouts[-1].status in (PayoutStatus.pending, PayoutStatus.failed):
            payouts[-1] = PriorPayout(payouts[-1].payout_id, "alice", payouts[-1].period, payouts[-1].amount,
                                      PayoutStatus.cancelled)
    # what is still owed after every cancellation: one more month's decision, with no new facts in it
    last = decide_payout("alice", month(12), earnings=earnings, invoice_paid_at=paid, adjustments=adjustments,
                         payouts=payouts, terms=TERMS)
    assert last.earnings == last.adjustments == 0
    end = month(12).end
    payable = sum((e.amount for e in earnings if (t := payable_at(e, paid)) is not None and t <= end), Decimal(0))
    adjusted = sum((a.amount for a in adjustments if a.occurred_at <= end), Decimal(0))
    out = sum((x.amount for x in payouts if x.status is not PayoutStatus.cancelled), Decimal(0))
    assert out + last.balance == payable + adjusted


skills = {
    "s1": premium_skill("s1", "alice", TERMS, share=True),
    "s2": premium_skill("s2", "alice", TERMS, share=True),
    "s3": premium_skill("s3", "bob", TERMS, share=True),
    "f1": premium_skill("f1", "carol", TERMS, fixed_price="0.10"),
}


@st.composite
def invoice_st(draw):
    n = draw(st.integers(1, 4))
    charges = []
    for i in range(n):
        executions = draw(st.integers(0, 50))
        split = {}
        left = executions
        for s in ("s1", "s2", "s3", "f1"):
            k = draw(st.integers(0, left))
            split[s] = k
            left -= k
        charges.append(ChargeLine(f"l{i}", draw(cents), executions, split))
    discounts = []
    for j in range(draw(st.integers(0, 2))):
        targets = draw(st.lists(st.sampled_from([c.line_id for c in charges]), min_size=1, unique=True))
        base = sum((c.amount for c in charges if c.line_id in targets), Decimal(0))
        # discounts on a line never exceed it in total: split the lines' amount between two discounts at most
        amount = -(base * draw(st.integers(0, 50)) / 100).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
        discounts.append(DiscountLine(f"d{j}", amount, tuple(targets)))
    return charges, discounts


def _half_up_cents(x: Fraction) -> Decimal:
    cents = x * 100
    whole = cents.numerator // cents.denominator
    if cents - whole >= Fraction(1, 2):
        whole += 1
    return Decimal(whole) / 100


@SETTINGS
@given(invoice=invoice_st())
def test_share_earnings_never_attribute_more_than_the_net_revenue_and_round_once(invoice):
    charges, discounts = invoice
    got = share_earnings("inv", charges, discounts, skills, TERMS)
    for e in got:
        assert is_whole_cents(e.amount)
        # exact arithmetic as the oracle: 28-digit Decimal context can land just under a half cent
        exact = Fraction(e.revenue) * Fraction(TERMS.share_percent) / 100
        assert e.amount == _half_up_cents(exact)
        assert e.creator_id in ("alice", "bob")  # fixed skills earn nothing here
    # what a line's discounts leave it, summed over lines, is the invoice's charges plus discounts
    factor = {c.line_id: Decimal(1) for c in charges}
    for d in discounts:
        base = sum((c.amount for c in charges if c.line_id in d.applies_to), Decimal(0))
        for line_id in d.applies_to:
            factor[line_id] += d.amount / base if base else 0
    for c in charges:
        on_line = [e for e in got if e.source == f"inv:{c.line_id}" or e.source == f"invoice:inv:{c.line_id}"]
        share_execs = c.skill_executions["s1"] + c.skill_executions["s2"] + c.skill_executions["s3"]
        revenue = sum((e.revenue for e in on_line), Decimal(0))
        if c.executions:
            assert abs(revenue - c.amount * factor[c.line_id] * share_execs / c.executions) < Decimal("1e-20")
            # rounding once per creator and line: at most half a cent each above the exact share
            exact = revenue * TERMS.share_percent / 100
            assert sum((e.amount for e in on_line), Decimal(0)) <= exact + Decimal("0.005") * len(on_line)
        else:
            assert on_line == []


@SETTINGS
@given(earned=st.lists(cents, min_size=1, max_size=3), charged=st.integers(1, 100_000),
       steps=st.lists(st.integers(0, 100), min_size=1, max_size=6))
def test_refunds_take_back_exactly_their_fraction_whatever_the_sequence(earned, charged, steps):
    charged = Decimal(charged) / 100
    earnings = [Earning(f"e{i}", f"c{i}", "t", a, a, 1, (), invoice_id="inv") for i, a in enumerate(earned)]
    previous: list[CreatorAdjustment] = []
    for k, pct in enumerate(steps):
        refunded = (charged * pct / 100).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
        new = refund_adjustments("inv", earnings, charged=charged, refunded=refunded, previous=previous,
                                 refund_id=f"r{k}", at=month(0).start)
        previous += new
        # a replay of the same event adds nothing
        assert refund_adjustments("inv", earnings, charged=charged, refunded=refunded, previous=previous,
                                  refund_id=f"r{k}", at=month(0).start) == []
        for e in earnings:
            total = sum((a.amount for a in previous if a.creator_id == e.creator_id), Decimal(0))
            assert total == -_half_up_cents(Fraction(e.amount) * Fraction(refunded) / Fraction(charged))
            assert -e.amount <= total <= 0
