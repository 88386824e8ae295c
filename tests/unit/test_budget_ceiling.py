"""The budget ceiling (billing.alerts.budget_charges_ceiling): the usage observer rates an account only
when the ceiling says a threshold may be crossed, so it must never be below what the rating charges,
whatever the time order of the executions (which ones are past the quota) and whatever the plan."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.alerts import MonthUsage, budget_charges, budget_charges_ceiling, budget_may_cross
from billing.catalog import load_catalog
from billing.entitlements import MonthCounter
from billing.periods import Period
from billing.rating import TermsSegment, UsageRow, pooled_included, rate_account

CATALOG = load_catalog()
V1 = CATALOG.versions[0]
OCT = Period.parse("2026-10")
MODELS = sorted(V1.models)


@st.composite
def month(draw):
    plan = draw(st.sampled_from(["free", "pro", "team", "payg"]))
    seats = draw(st.integers(1, 3)) if plan == "team" else 1
    segment = TermsSegment(OCT.start, OCT.end, plan, seats, draw(st.booleans()), draw(st.sampled_from(["executions", "tokens"])))
    keys = draw(st.lists(st.tuples(st.sampled_from(MODELS), st.booleans(), st.booleans()), min_size=1, max_size=6,
                         unique=True))
    counters = [MonthCounter(m, byok, sandbox, draw(st.integers(1, 40_000)), draw(st.integers(0, 10**9)),
                             draw(st.integers(0, 10**9)), Decimal(0)) for m, byok, sandbox in keys]
    included = pooled_included(CATALOG, OCT.start, OCT.end, [segment])
    billable = max(0, sum(c.executions for c in counters if not c.sandbox) - included)
    rows = []
    room = sum(c.executions for c in counters if not c.sandbox)  # what the counters not yet split can hold
    for c in counters:  # any split of the billable executions over the counters: any time order
        if not c.sandbox:
            room -= c.executions
        # at least what the later counters cannot hold, so every billable execution finds a place
        part = 0 if c.sandbox else draw(st.integers(max(0, billable - room), min(billable, c.executions)))
        billable -= part
        share = draw(st.fractions(0, 1)) if part < c.executions else 1
        common = dict(segment=0, version=V1.version, model=c.model, byok=c.byok, sandbox=c.sandbox)
        tin, tout = int(c.input_tokens * share), int(c.output_tokens * share)
        if part:
            rows.append(UsageRow(**common, billable=True, executions=part, input_tokens=tin, output_tokens=tout))
        if c.executions - part:
            rows.append(UsageRow(**common, executions=c.executions - part, input_tokens=c.input_tokens - tin,
                                 output_tokens=c.output_tokens - tout))
    assert billable == 0
    return segment, counters, included, rows


@settings(max_examples=300, deadline=None)
@given(month())
def test_the_ceiling_is_never_below_the_rated_usage_charges(m):
    segment, counters, included, rows = m
    rated = rate_account(CATALOG, OCT.start, OCT.end, [segment], rows)
    ceiling = budget_charges_ceiling(V1, V1.plan(segment.plan), overage_opt_in=segment.overage_opt_in,
                                     pricing=segment.pricing, included=included, usage=MonthUsage.of(counters))
    assert budget_charges(rated) <= ceiling


def test_the_ceiling_of_a_blocked_plan_and_of_usage_inside_the_quota_is_zero():
    pro = V1.plan("pro")
    inside = [MonthCounter("gpt-4o", False, False, 5000, 10**6, 10**6, Decimal(0))]
    past = [MonthCounter("gpt-4o", False, False, 9000, 10**6, 10**6, Decimal(0))]
    assert budget_charges_ceiling(V1, pro, overage_opt_in=True, pricing="executions", included=5000,
                                  usage=MonthUsage.of(inside)) == 0
    assert budget_charges_ceiling(V1, pro, overage_opt_in=False, pricing="executions", included=5000,
                                  usage=MonthUsage.of(past)) == 0
    # 4,000 past the quota at $0.005 = $20.00, plus half a cent for the one line's rounding
    assert budget_charges_ceiling(V1, pro, overage_opt_in=True, pricing="executions", included=5000,
                                  usage=MonthUsage.of(past)) == Decimal("20.005")


def test_the_ceiling_of_payg_stops_at_the_cap():
    payg = V1.plan("payg")
    many = [MonthCounter("claude-haiku", False, False, 1_000_000, 0, 0, Decimal(0))]
    assert budget_charges_ceiling(V1, payg, overage_opt_in=False, pricing="executions", included=0,
                                  usage=MonthUsage.of(many)) == Decimal("50.00")


def test_budget_may_cross_only_when_the_ceiling_reaches_a_threshold_not_yet_noticed():
    assert not budget_may_cross(Decimal("14.49"), Decimal("29.00"))
    assert budget_may_cross(Decimal("14.50"), Decimal("29.00"))
    assert not budget_may_cross(Decimal("20.00"), Decimal("29.00"), already_noticed=(50,))
    assert budget_may_cross(Decimal("23.20"), Decimal("29.00"), already_noticed=(50,))


def test_month_usage_sums_platform_tokens_per_model_and_counts_models_of_non_sandbox_executions():
    counters = [MonthCounter("gpt-4o", False, False, 10, 100, 50, Decimal(0)),
                MonthCounter("gpt-4o", True, False, 5, 1000, 500, Decimal(0)),  # BYOK: no token charge
                MonthCounter("claude-haiku", False, True, 7, 70, 7, Decimal(0)),  # sandbox: not charged
                MonthCounter("claude-haiku", False, False, 3, 30, 3, Decimal(0))]
    assert MonthUsage.of(counters) == MonthUsage(18, 2, (("claude-haiku", 30, 3), ("gpt-4o", 100, 50)))
