"""The pure entitlement rules: refusals exactly where the close would block, and month-to-date
charges from counters equal to rating the executions in time order whenever counters are used."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import default_catalog
from billing.entitlements import MonthCounter, Reason, bills_overage, decide, usage_rows_from_counters
from billing.rating import TermsSegment, UsageRow, included_executions, rate_account

CATALOG = default_catalog()
VERSION = CATALOG.at(datetime(2026, 10, 1, tzinfo=timezone.utc))
START, END = datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc)


def plan(code: str):
    return VERSION.plan(code)


def test_refusals_follow_the_plans():
    free, pro, team, payg = plan("free"), plan("pro"), plan("team"), plan("payg")
    ok = (True, Reason.ok)
    common = dict(status="active", model_known=True, sandbox=False)
    assert decide(**common, plan=free, overage_opt_in=False, included=100, used=99) == ok
    assert decide(**common, plan=free, overage_opt_in=False, included=100, used=100) == (False, Reason.free_cap_reached)
    assert decide(**common, plan=free, overage_opt_in=True, included=100, used=100) == (False, Reason.free_cap_reached)
    assert decide(**common, plan=pro, overage_opt_in=False, included=5000, used=4999) == ok
    assert decide(**common, plan=pro, overage_opt_in=False, included=5000, used=5000) == (
        False, Reason.plan_cap_reached_no_overage)
    assert decide(**common, plan=pro, overage_opt_in=True, included=5000, used=10**6) == ok
    assert decide(**common, plan=team, overage_opt_in=False, included=75000, used=74999) == ok
    assert decide(**common, plan=payg, overage_opt_in=False, included=0, used=10**7) == ok
    assert decide(status="active", model_known=True, sandbox=True, plan=free, overage_opt_in=False,
                  included=100, used=500) == ok
    assert decide(status="paused", model_known=True, sandbox=True, plan=payg, overage_opt_in=False,
                  included=0, used=0) == (False, Reason.account_paused)
    assert decide(status="active", model_known=False, sandbox=False, plan=payg, overage_opt_in=False,
                  included=0, used=0) == (False, Reason.unknown_model)
    assert decide(**common, plan=None, overage_opt_in=False, included=100, used=900) == ok  # not billed yet


MODELS = ["claude-haiku", "gpt-4o", "claude-opus"]
event_st = st.tuples(st.integers(0, 10_000), st.sampled_from(MODELS), st.booleans(), st.booleans(),
                     st.integers(0, 5000), st.integers(0, 2000), st.sampled_from([None, Decimal("0.0031")]))


def exact_rows(events, included: int) -> list[UsageRow]:
    """The reference: executions in time order, the first `included` non-sandbox ones included."""
    ordered = sorted(enumerate(events), key=lambda e: (e[1][0], e[0]))
    rows: dict[tuple, list] = {}
    rank = 0
    for _, (_, model, byok, sandbox, tin, tout, cost) in ordered:
        billable = False
        if not sandbox:
            rank += 1
            billable = rank > included
        acc = rows.setdefault((model, byok, sandbox, billable), [0, 0, 0, Decimal(0)])
        acc[0] += 1
        acc[1] += tin
        acc[2] += tout
        acc[3] += (cost or 0) if not byok else 0
    return [UsageRow(segment=0, version=VERSION.version, model=m, byok=b, sandbox=s, billable=bl, executions=a[0],
                     input_tokens=a[1], output_tokens=a[2], cost=a[3]) for (m, b, s, bl), a in rows.items()]


def counters_of(events) -> list[MonthCounter]:
    acc: dict[tuple, list] = {}
    for _, model, byok, sandbox, tin, tout, cost in events:
        a = acc.setdefault((model, byok, sandbox), [0, 0, 0, Decimal(0)])
        a[0] += 1
        a[1] += tin
        a[2] += tout
        a[3] += cost or 0
    return [MonthCounter(m, b, s, *a) for (m, b, s), a in acc.items()]


@settings(max_examples=300, deadline=None)
@given(events=st.lists(event_st, max_size=60), plan_code=st.sampled_from(["free", "pro", "team", "payg"]),
       opt_in=st.booleans(), pricing=st.sampled_from(["executions", "tokens"]), included_override=st.integers(0, 40))
def test_counters_give_the_time_ordered_charges_whenever_they_are_used(events, plan_code, opt_in, pricing,
                                                                      included_override):
    p = plan(plan_code)
    included = min(included_override, included_executions(p, 1)) if p.included_executions else 0
    # shrink the quota so small samples cross it: the rater takes it as given (pooled_included)
    seg = [TermsSegment(START, END, plan_code, 1, opt_in, pricing)]
    rows = usage_rows_from_counters(counters_of(events), version=VERSION.version, included=included,
                                    billed=bills_overage(p, opt_in), pricing=pricing)
    if rows is None:
        return
    # The rater prices the billable flags it is given; `included` only labels the informational line.
    fast = rate_account(CATALOG, START, END, seg, rows)
    exact = rate_account(CATALOG, START, END, seg, exact_rows(events, included))
    assert fast.total == exact.total
    assert fast.executions == exact.executions and fast.billable_executions == exact.billable_executions


def test_counters_are_refused_when_time_order_changes_the_money():
    events = [(i, MODELS[i % 2], False, False, 10, 10, None) for i in range(12)]
    rows = usage_rows_from_counters(counters_of(events), version=VERSION.version, included=10, billed=True,
                                    pricing="executions")
    assert rows is None  # 2 billable executions, two models: which ones are billable matters
    one_model = [(i, "gpt-4o", False, False, 10, 10, None) for i in range(12)]
    rows = usage_rows_from_counters(counters_of(one_model), version=VERSION.version, included=10, billed=True,
                                    pricing="executions")
    assert sum(r.executions for r in rows if r.billable) == 2
    total = rate_account(CATALOG, START, END, [TermsSegment(START, END, "pro", 1, True, "executions")], rows).total
    assert total == Decimal("29.01")  # $29 + 2 x $0.005 = $29.01
