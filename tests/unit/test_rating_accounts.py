"""The general rater (segments, rate-card versions, token pricing, BYOK, sandbox): hand-computed
cases and properties."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import load_catalog
from billing.periods import Period
from billing.projection import project_usage, reallocate_billable
from billing.rating import (
    AccountTerms,
    BilledLine,
    LineKind,
    ModelUsage,
    TermsSegment,
    UsageRow,
    pooled_included,
    prior_period_lines,
    rate_account,
    rate_period,
)

CATALOG = load_catalog()
V1 = CATALOG.versions[0]
OCT = Period.parse("2026-10")
MODELS = sorted(V1.models)


def whole(plan: str, **kw) -> list[TermsSegment]:
    return [TermsSegment(OCT.start, OCT.end, plan, **kw)]


def rate(segments, rows):
    return rate_account(CATALOG, OCT.start, OCT.end, segments, rows)


def test_whole_month_on_one_plan_matches_the_simple_rater():
    usage = [ModelUsage("claude-haiku", 5000, 3), ModelUsage("gpt-4o", 2000, 1997)]
    simple = rate_period(V1, AccountTerms("pro", 1, True), usage)
    rows = [UsageRow(0, V1.version, "claude-haiku", executions=4997),
            UsageRow(0, V1.version, "claude-haiku", billable=True, executions=3),
            UsageRow(0, V1.version, "gpt-4o", executions=3),
            UsageRow(0, V1.version, "gpt-4o", billable=True, executions=1997)]
    general = rate(whole("pro", overage_opt_in=True), rows)
    assert [(ln.kind, ln.description, ln.amount) for ln in general.lines] == [
        (ln.kind, ln.description, ln.amount) for ln in simple.lines]
    assert general.total == simple.total == Decimal("39.01")  # 29 + 0.015->0.02 + 9.985->9.99


def test_token_priced_lines_per_model_and_direction_with_byok_free():
    rows = [UsageRow(0, V1.version, "claude-sonnet", executions=10, input_tokens=2_000_000, output_tokens=500_000,
                     uncosted_input_tokens=2_000_000, uncosted_output_tokens=500_000),
            UsageRow(0, V1.version, "claude-sonnet", byok=True, executions=5, input_tokens=9_000_000,
                     output_tokens=9_000_000)]
    inv = rate(whole("pro", pricing="tokens"), rows)
    tokens = [ln for ln in inv.lines if ln.kind == LineKind.token_usage]
    assert [(ln.direction, ln.quantity, ln.amount) for ln in tokens] == [
        ("input", 2_000_000, Decimal("12.00")),  # 2M x $6.00 per 1M
        ("output", 500_000, Decimal("15.00")),  # 0.5M x $30.00 per 1M
    ]
    assert inv.total == Decimal("56.00") and inv.executions == 15 and inv.byok_executions == 5
    # our cost: the platform-key tokens at cost (3.00 / 15.00 per 1M); BYOK costs us nothing
    assert inv.platform_cost == Decimal("6.00") + Decimal("7.50")


def test_sandbox_tries_are_shown_never_charged_and_never_use_the_quota():
    rows = [UsageRow(0, V1.version, "gpt-4o", sandbox=True, executions=40)]
    inv = rate(whole("payg"), rows)
    assert inv.total == 0 and inv.sandbox_executions == 40 and inv.executions == 0
    assert [ln.kind for ln in inv.lines] == [LineKind.sandbox]


def test_team_seat_change_prorates_fee_and_pools_quota():
    mid = datetime(2026, 10, 16, tzinfo=timezone.utc)
    segs = [TermsSegment(OCT.start, mid, "team", 2), TermsSegment(mid, OCT.end, "team", 4)]
    assert pooled_included(CATALOG, OCT.start, OCT.end, segs) == 24_194 + 51_613
    inv = rate(segs, [])
    assert [(ln.quantity, ln.unit_price, ln.amount) for ln in inv.lines] == [
        (2, Decimal("38.23"), Decimal("76.46")), (4, Decimal("40.77"), Decimal("163.08"))]


def test_payg_cap_counts_token_charges_too():
    rows = [UsageRow(0, V1.version, "claude-opus", executions=1, input_tokens=1_000_000, output_tokens=1_000_000)]
    inv = rate(whole("payg", pricing="tokens"), rows)  # $30 + $150 = $180, capped at $50
    assert inv.total == Decimal("50.00")
    assert inv.lines[-1].kind == LineKind.cap_adjustment and inv.lines[-1].amount == Decimal("-130.00")


def test_prior_period_lines_bill_only_the_difference():
    before = rate(whole("payg"), [UsageRow(0, V1.version, "gpt-4o", billable=True, executions=30)])
    after = rate(whole("payg"), [UsageRow(0, V1.version, "gpt-4o", billable=True, executions=35)])
    billed = [BilledLine(ln.key, ln.quantity, ln.amount) for ln in before.lines]
    lines = prior_period_lines("2026-09", after, billed)
    assert [(ln.kind, ln.quantity, ln.amount, ln.source_period) for ln in lines] == [
        (LineKind.prior_period_usage, 5, Decimal("0.05"), "2026-09")]
    assert prior_period_lines("2026-09", after, billed + [BilledLine(ln.key, ln.quantity, ln.amount)
                                                          for ln in lines]) == []


token_rows = st.lists(
    st.tuples(st.sampled_from(MODELS), st.booleans(), st.integers(0, 50), st.integers(0, 30_000_000),
              st.integers(0, 30_000_000)),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(token_rows)
def test_token_lines_match_a_direct_decimal_computation_within_half_a_cent_per_line(raw):
    merged: dict = {}
    for model, byok, n, tin, tout in raw:
        k = (model, byok)
        a = merged.get(k, (0, 0, 0))
        merged[k] = (a[0] + n, a[1] + tin, a[2] + tout)
    rows = [UsageRow(0, V1.version, m, byok=b, executions=n, input_tokens=i, output_tokens=o)
            for (m, b), (n, i, o) in merged.items()]
    inv = rate(whole("pro", overage_opt_in=True, pricing="tokens"), rows)
    direct = Decimal(0)
    for r in rows:
        if r.byok:
            continue
        m = V1.model(r.model)
        direct += Decimal(r.input_tokens) * m.user_price_input(V1.markup) / 1_000_000
        direct += Decimal(r.output_tokens) * m.user_price_output(V1.markup) / 1_000_000
    token_lines = [ln for ln in inv.lines if ln.kind == LineKind.token_usage]
    charged = sum((ln.amount for ln in token_lines), Decimal(0))
    assert abs(charged - direct) <= Decimal("0.005") * len(token_lines)
    for ln in token_lines:
        assert ln.amount == (ln.quantity * ln.unit_price).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert inv.total == sum((ln.amount for ln in inv.lines), Decimal(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MODELS), st.integers(0, 10_000)), max_size=8),
       st.integers(0, 20_000), st.integers(10, 40))
def test_projection_keeps_totals_and_quota_consistent(raw, included, tenths):
    rows = [UsageRow(0, V1.version, m, executions=n) for m, n in raw]
    factor = Decimal(tenths) / 10
    projected = project_usage(rows, max(factor, Decimal(1)), included)
    total = sum(r.executions for r in rows)
    p_total = sum(r.executions for r in projected)
    assert p_total == int(total * max(factor, Decimal(1)))
    assert sum(r.executions for r in projected if r.billable) == max(0, p_total - included)
    again = reallocate_billable(projected, included)
    assert sum(r.executions for r in again if r.billable) == max(0, p_total - included)
