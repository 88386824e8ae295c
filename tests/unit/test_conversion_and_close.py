"""What the close decides per account (pure): its invoice with late usage, and the PAYG auto-convert."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from billing.catalog import load_catalog
from billing.close import AccountFacts, ConversionFacts, LateUsage, decide, rate
from billing.conversion import decide_auto_convert
from billing.errors import TermsError
from billing.periods import Period
from billing.rating import BilledLine, TermsSegment, UsageRow, rate_account
from billing.terms import Terms

CATALOG = load_catalog()
V1 = CATALOG.versions[0].version
OCT, SEP = Period.parse("2026-10"), Period.parse("2026-09")
NOV_1 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def payg(pricing: str = "executions") -> list[TermsSegment]:
    return [TermsSegment(OCT.start, OCT.end, "payg", pricing=pricing)]


def billable(n: int, model: str = "claude-haiku", **kw) -> list[UsageRow]:
    return [UsageRow(segment=0, version=V1, model=model, billable=True, executions=n, **kw)]


def convert(n: int, segments=None, changed_from_next: bool = False):
    segs = segments or payg()
    total = rate_account(CATALOG, OCT.start, OCT.end, segs, billable(n)).total
    return decide_auto_convert(CATALOG, OCT, "heavy", segs, billable(n), total, changed_from_next)


def test_payg_that_would_have_cost_less_on_pro_moves_to_pro_next_month_and_is_told_why():
    conv = convert(8_000)  # PAYG: $80 capped at $50; Pro: $29 + 3,000 x $0.005 = $44
    assert conv.effective_from == NOV_1
    assert (conv.change.plan, conv.change.seats, conv.change.overage_opt_in) == ("pro", 1, True)
    assert conv.reason == ("auto-convert: 2026-10 would have cost $44.00 on Pro (overage on) instead of $50.00 "
                           "on pay-as-you-go")
    note = conv.notification
    assert (note.kind, note.dedupe_key) == ("plan_auto_converted", "payg-to-pro:heavy:2026-10")
    assert note.subject == "You're moving to Pro: it would have saved you money"
    assert note.body.startswith("Your pay-as-you-go usage in 2026-10 cost $50.00. The same usage on Pro "
                                "(with overage) would have cost $44.00, so from 2026-11 your account is on Pro")
    assert note.payload == {"period": "2026-10", "payg_total": "50.00", "pro_total": "44.00",
                            "effective": "2026-11-01T00:00:00+00:00"}


@pytest.mark.parametrize("n", [300, 0])
def test_payg_cheaper_than_pro_stays_on_payg(n):
    assert convert(n) is None


def test_payg_costing_exactly_what_pro_would_stays_on_payg():
    assert convert(2_900) is None  # PAYG $29.00 = Pro's $29.00 fee: no saving, no move
    assert convert(2_901) is not None


def test_an_account_that_already_changed_terms_from_next_month_keeps_its_choice():
    assert convert(8_000, changed_from_next=True) is None


@pytest.mark.parametrize("segments", [
    [TermsSegment(datetime(2026, 10, 5, tzinfo=timezone.utc), OCT.end, "payg")],  # started mid-month
    [TermsSegment(OCT.start, datetime(2026, 10, 16, tzinfo=timezone.utc), "free"),
     TermsSegment(datetime(2026, 10, 16, tzinfo=timezone.utc), OCT.end, "payg")],  # on PAYG part of the month
    [TermsSegment(OCT.start, OCT.end, "pro", overage_opt_in=True)],
])
def test_only_accounts_on_payg_for_the_whole_month_are_compared(segments):
    assert convert(8_000, segments) is None


def facts(n: int, *, invoiced_next: bool = False, late=()) -> AccountFacts:
    return AccountFacts("heavy", payg(), billable(n), 0, late,
                        ConversionFacts(datetime(2026, 1, 1, tzinfo=timezone.utc), False, invoiced_next))


def test_the_close_moves_a_payg_account_to_pro_with_one_seat_and_overage_on():
    outcome = decide(CATALOG, OCT, facts(8_000))
    assert outcome.conversion.terms == Terms("pro", 1, True, "executions")
    assert outcome.rating.total == Decimal("50.00")  # this month stays on PAYG
    assert decide(CATALOG, OCT, facts(300)).conversion is None


def test_accounts_the_close_loaded_no_conversion_facts_for_are_never_moved():
    assert decide(CATALOG, OCT, AccountFacts("heavy", payg(), billable(8_000), 0)).conversion is None


def test_a_move_into_a_month_already_invoiced_is_refused_like_any_change_of_terms():
    with pytest.raises(TermsError, match="^effective: 2026-11 is already invoiced for heavy"):
        decide(CATALOG, OCT, facts(8_000, invoiced_next=True))


def test_late_usage_adds_the_difference_per_line_to_this_months_invoice():
    sep = [TermsSegment(SEP.start, SEP.end, "payg")]
    billed_before = rate_account(CATALOG, SEP.start, SEP.end, sep,
                                 [UsageRow(segment=0, version=V1, model="claude-haiku", billable=True, executions=10)])
    late = LateUsage(SEP, 5, sep, [UsageRow(segment=0, version=V1, model="claude-haiku", billable=True, executions=15)],
                     [BilledLine(ln.key, ln.quantity, ln.amount) for ln in billed_before.lines])
    rating = rate(CATALOG, OCT, AccountFacts("heavy", payg(), billable(100), 0, [late]))
    prior = [ln for ln in rating.rated.lines if ln.source_period]
    assert [(ln.quantity, ln.amount, ln.source_period) for ln in prior] == [(5, Decimal("0.05"), "2026-09")]
    assert rating.total == Decimal("1.00") + Decimal("0.05")
    assert rating.prior == {"2026-09": 5}
