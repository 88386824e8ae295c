"""Account terms over time: a period's segments, and the rules a new account and a change follow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.catalog import load_catalog
from billing.errors import CatalogError, TermsError
from billing.periods import Period
from billing.terms import (
    Terms,
    TermsChange,
    changed_terms,
    day_start,
    decide_change,
    new_account_terms,
    segments,
)

CATALOG = load_catalog()
V1 = CATALOG.versions[0]
OCT = Period.parse("2026-10")
UTC = timezone.utc


@dataclass(frozen=True)
class Row:
    effective_from: datetime
    plan: str
    seats: int = 1
    overage_opt_in: bool = False
    pricing: str = "executions"


def day(d: int, month: int = 10) -> datetime:
    return datetime(2026, month, d, tzinfo=UTC)


# ---- segments ---------------------------------------------------------------------------------------
def test_terms_unchanged_through_the_period_are_one_segment_from_its_first_day():
    (seg,) = segments([Row(day(1, 1), "pro", overage_opt_in=True)], OCT)
    assert (seg.start, seg.end, seg.plan, seg.overage_opt_in) == (OCT.start, OCT.end, "pro", True)


def test_billing_that_starts_mid_month_starts_the_first_segment_that_day():
    (seg,) = segments([Row(day(12), "payg")], OCT)
    assert (seg.start, seg.end) == (day(12), OCT.end)


def test_a_change_splits_the_period_at_its_day_and_each_segment_has_its_terms():
    history = [Row(day(1, 1), "team", seats=2), Row(day(16), "team", seats=4)]
    assert [(s.start, s.end, s.seats) for s in segments(history, OCT)] == [
        (OCT.start, day(16), 2), (day(16), OCT.end, 4)]


def test_a_change_that_changes_nothing_does_not_split_the_period():
    history = [Row(day(1, 1), "pro"), Row(day(10), "pro")]
    assert [(s.start, s.end) for s in segments(history, OCT)] == [(OCT.start, OCT.end)]


def test_changes_from_the_next_period_on_leave_this_period_whole():
    history = [Row(day(1, 1), "payg"), Row(OCT.end, "pro", overage_opt_in=True)]
    (seg,) = segments(history, OCT)
    assert (seg.plan, seg.end) == ("payg", OCT.end)


def test_the_history_may_come_in_any_order():
    history = [Row(day(20), "pro"), Row(day(1, 1), "free")]
    assert [s.plan for s in segments(history, OCT)] == ["free", "pro"]


def test_an_account_billed_from_a_later_period_has_no_segments():
    assert segments([Row(OCT.end + timedelta(days=3), "pro")], OCT) == []


@given(st.lists(st.tuples(st.integers(-40, 40), st.sampled_from(["free", "pro", "team"]), st.integers(1, 3)),
                min_size=1, max_size=6, unique_by=lambda t: t[0]))
def test_segments_are_contiguous_whole_days_from_the_first_terms_to_the_period_end(changes):
    history = [Row(OCT.start + timedelta(days=d), plan, seats) for d, plan, seats in changes]
    segs = segments(history, OCT)
    first = min(r.effective_from for r in history)
    if first >= OCT.end:
        assert segs == []
        return
    assert segs[0].start == max(first, OCT.start) and segs[-1].end == OCT.end
    for a, b in zip(segs, segs[1:]):
        assert a.end == b.start and (a.plan, a.seats) != (b.plan, b.seats)
    assert all(s.start == day_start(s.start) and s.start < s.end for s in segs)


# ---- new accounts -----------------------------------------------------------------------------------
def test_a_contract_plan_cannot_be_created_without_a_contract():
    with pytest.raises(TermsError, match=r"^plan: enterprise accounts are billed by contract; create them with"):
        new_account_terms(V1, Terms("enterprise"))


def test_seats_are_only_for_per_seat_plans():
    with pytest.raises(TermsError, match=r"^seats: only per-seat plans take seats; pro is billed per account$"):
        new_account_terms(V1, Terms("pro", seats=3))
    assert new_account_terms(V1, Terms("team", seats=3)).seats == 3


def test_an_unknown_plan_names_the_known_ones():
    with pytest.raises(CatalogError, match="platinum"):
        new_account_terms(V1, Terms("platinum"))


# ---- changes ----------------------------------------------------------------------------------------
def test_a_plan_change_without_seats_starts_from_one_seat():
    assert changed_terms(Terms("team", seats=4), TermsChange(plan="pro")) == Terms("pro", 1)


def test_the_same_plan_keeps_its_seats_and_unnamed_terms_stay():
    now = Terms("team", seats=4, overage_opt_in=True, pricing="tokens")
    assert changed_terms(now, TermsChange(plan="team")) == now
    assert changed_terms(now, TermsChange(overage_opt_in=False)) == Terms("team", 4, False, "tokens")


def change(current=Terms("pro"), *, effective=day(16), billing_start=day(1, 1), invoiced=False, **asked):
    return decide_change(version=V1, account_id="acme", billing_starts_at=billing_start, effective_from=effective,
                         current=current, change=TermsChange(**asked), invoiced=invoiced)


def test_a_change_returns_the_terms_recorded_from_its_day():
    assert change(Terms("free"), plan="team", seats=3) == Terms("team", 3)


def test_a_change_that_asks_for_nothing_is_refused():
    with pytest.raises(TermsError, match="^nothing to change"):
        change()


@pytest.mark.parametrize("current", [None, Terms("free")])
def test_a_change_before_the_billing_start_is_refused_naming_effective(current):
    with pytest.raises(TermsError, match=r"^effective: 2026-10-02 is before the account's billing start 2026-10-05$"):
        change(current, effective=day(2), billing_start=day(5), plan="pro")


def test_a_change_into_an_invoiced_period_is_refused_naming_effective():
    with pytest.raises(TermsError, match=r"^effective: 2026-10 is already invoiced for acme; a change can take effect"):
        change(invoiced=True, overage_opt_in=True)


def test_a_change_to_a_contract_plan_is_refused():
    with pytest.raises(TermsError, match=r"^plan: enterprise accounts are billed by contract$"):
        change(plan="enterprise")


@pytest.mark.parametrize("asked,reason", [
    (dict(seats=0), "seats: must be at least 1"),
    (dict(seats=2), "seats: only per-seat plans take seats; pro is billed per account"),
    (dict(pricing="credits"), "pricing: unknown pricing 'credits'"),
])
def test_a_change_to_impossible_terms_is_refused_naming_the_field(asked, reason):
    with pytest.raises(TermsError, match=f"^{reason}"):
        change(**asked)


def test_seats_are_checked_against_the_plan_in_force_on_the_day_of_the_change():
    assert change(Terms("team", seats=2), seats=3) == Terms("team", 3)
