from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from billing.catalog import CatalogVersion, load_catalog
from billing.errors import CatalogError, RatingError
from billing.money import round_money
from billing.rating import (
    AccountTerms,
    LineKind,
    ModelUsage,
    RatedInvoice,
    included_executions,
    rate_period,
    split_billable,
)

D = Decimal
UTC = timezone.utc
T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def cat() -> CatalogVersion:
    return load_catalog().at(T0)


def one(model: str, executions: int, included: int) -> list[ModelUsage]:
    return [ModelUsage(model, executions, max(0, executions - included))]


def kinds(inv: RatedInvoice) -> list[LineKind]:
    return [line.kind for line in inv.lines]


def check_invariants(inv: RatedInvoice) -> None:
    assert inv.subtotal == sum((line.amount for line in inv.lines), D(0))
    assert inv.total == inv.subtotal >= 0
    for line in inv.lines:
        assert line.amount == round_money(line.quantity * line.unit_price)
        assert line.amount.as_tuple().exponent == -2


# ---- free --------------------------------------------------------------------------------------
def test_free_100_executions_are_all_included_at_no_charge(cat):
    inv = rate_period(cat, AccountTerms("free"), one("claude-haiku", 100, 100))
    check_invariants(inv)
    assert inv.total == D("0.00")
    assert kinds(inv) == [LineKind.included_usage]
    assert inv.lines[0].description == "Included executions (100 of 100)"
    assert inv.lines[0].quantity == 100 and inv.lines[0].amount == 0
    assert (inv.executions, inv.billable_executions) == (100, 0)
    assert inv.plan == "free" and inv.catalog_version == "2026-01-01.1"


def test_free_101st_execution_is_blocked_and_shown_at_zero(cat):
    inv = rate_period(cat, AccountTerms("free"), one("claude-haiku", 101, 100))
    check_invariants(inv)
    assert inv.total == D("0.00")
    assert kinds(inv) == [LineKind.included_usage, LineKind.blocked_usage]
    blocked = inv.lines[1]
    assert (blocked.quantity, blocked.unit_price, blocked.amount, blocked.model) == (1, 0, 0, "claude-haiku")
    assert blocked.description == "Blocked beyond included quota — claude-haiku: 1 execution (not billed)"
    assert inv.billable_executions == 1


def test_free_with_overage_opt_in_still_blocks_past_quota(cat):
    inv = rate_period(cat, AccountTerms("free", overage_opt_in=True), one("claude-haiku", 150, 100))
    assert inv.total == 0
    assert kinds(inv)[-1] == LineKind.blocked_usage and inv.lines[-1].quantity == 50


def test_free_without_usage_has_no_lines(cat):
    inv = rate_period(cat, AccountTerms("free"), [])
    assert inv.lines == () and inv.total == 0


# ---- pro ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "opt_in", "total", "usage_amount"),
    [
        (5000, False, "29.00", None),
        (5000, True, "29.00", None),
        (5001, False, "29.00", None),
        (5001, True, "29.01", "0.01"),  # 1 x 0.005 = 0.005 -> line rounded once to 0.01
        (12345, False, "29.00", None),
        (12345, True, "65.73", "36.73"),  # 7,345 x 0.005 = 36.725 -> 36.73
    ],
    ids=["5000-fee-only", "5000-with-overage-fee-only", "5001-without-overage-blocked",
         "5001-with-overage-bills-one-cent", "12345-without-overage-blocked", "12345-with-overage-bills-36.73"],
)
def test_pro_bills_overage_only_with_opt_in_rounding_each_line_once(cat, n, opt_in, total, usage_amount):
    inv = rate_period(cat, AccountTerms("pro", overage_opt_in=opt_in), one("gpt-4o-mini", n, 5000))
    check_invariants(inv)
    assert inv.total == D(total)
    base = inv.lines[0]
    assert base.kind is LineKind.base_fee and base.amount == D("29.00") and base.description == "Pro plan — monthly fee"
    assert inv.lines[1].kind is LineKind.included_usage and inv.lines[1].quantity == 5000
    assert inv.lines[1].description == "Included executions (5,000 of 5,000)"
    usage = [line for line in inv.lines if line.kind is LineKind.usage]
    blocked = [line for line in inv.lines if line.kind is LineKind.blocked_usage]
    if usage_amount is None:
        assert usage == []
        assert len(blocked) == (1 if n > 5000 else 0)
    else:
        assert [u.amount for u in usage] == [D(usage_amount)]
        assert usage[0].unit_price == D("0.005")
        assert blocked == []


def test_pro_overage_and_blocked_lines_describe_count_and_rate(cat):
    inv = rate_period(cat, AccountTerms("pro", overage_opt_in=True), [
        ModelUsage("gpt-4o-mini", 6234, 1234), ModelUsage("claude-haiku", 0, 0)])
    assert inv.lines[-1].description == "Overage — gpt-4o-mini: 1,234 executions × $0.005"
    inv = rate_period(cat, AccountTerms("pro"), [ModelUsage("claude-haiku", 5012, 12)])
    assert inv.lines[-1].description == "Blocked beyond included quota — claude-haiku: 12 executions (not billed)"


def test_pro_under_quota_pays_the_fee_and_shows_what_was_included(cat):
    inv = rate_period(cat, AccountTerms("pro"), one("gpt-4o", 4200, 5000))
    assert inv.lines[1].description == "Included executions (4,200 of 5,000)"
    assert inv.total == D("29.00")


# ---- team --------------------------------------------------------------------------------------
def test_team_3_seats_with_overage_pays_seat_fees_and_overage(cat):
    inv = rate_period(cat, AccountTerms("team", seats=3, overage_opt_in=True), one("claude-sonnet", 80_000, 75_000))
    check_invariants(inv)
    assert inv.lines[0].description == "Team plan — 3 seats × $79.00"
    assert (inv.lines[0].quantity, inv.lines[0].unit_price, inv.lines[0].amount) == (3, D("79.00"), D("237.00"))
    assert inv.lines[1].quantity == 75_000
    assert inv.lines[2].kind is LineKind.usage and inv.lines[2].amount == D("15.00")
    assert inv.total == D("252.00")


def test_team_without_opt_in_blocks_past_pooled_quota(cat):
    inv = rate_period(cat, AccountTerms("team", seats=3), one("claude-sonnet", 80_000, 75_000))
    assert inv.total == D("237.00")
    assert kinds(inv) == [LineKind.base_fee, LineKind.included_usage, LineKind.blocked_usage]


def test_team_one_seat_pays_one_seat_fee(cat):
    inv = rate_period(cat, AccountTerms("team"), [])
    assert inv.lines[0].description == "Team plan — 1 seat × $79.00"
    assert inv.total == D("79.00")


def test_included_executions_multiplies_by_seats_only_for_per_seat_plans(cat):
    assert included_executions(cat.plan("team"), 3) == 75_000
    assert included_executions(cat.plan("pro"), 1) == 5000
    assert included_executions(cat.plan("payg"), 1) == 0
    with pytest.raises(RatingError, match="seats"):
        included_executions(cat.plan("pro"), 2)


# ---- payg --------------------------------------------------------------------------------------
def test_payg_without_usage_has_no_lines(cat):
    inv = rate_period(cat, AccountTerms("payg"), [])
    assert inv.lines == () and inv.total == D("0.00")
    inv = rate_period(cat, AccountTerms("payg"), [ModelUsage("gpt-4o", 0, 0)])
    assert inv.lines == () and inv.total == 0


@pytest.mark.parametrize(("n", "total"), [(1, "0.01"), (4999, "49.99"), (5000, "50.00")])
def test_payg_under_cap_bills_a_cent_per_execution(cat, n, total):
    inv = rate_period(cat, AccountTerms("payg"), one("gpt-4o-mini", n, 0))
    check_invariants(inv)
    assert kinds(inv) == [LineKind.usage]
    assert inv.total == D(total)


def test_payg_over_cap_is_capped_at_50_by_a_negative_line(cat):
    inv = rate_period(cat, AccountTerms("payg"), one("gpt-4o-mini", 12_000, 0))
    check_invariants(inv)
    assert kinds(inv) == [LineKind.usage, LineKind.cap_adjustment]
    assert inv.lines[0].amount == D("120.00")
    cap = inv.lines[1]
    assert cap.amount == D("-70.00") and cap.description == "Pay-as-you-go cap ($50.00)"
    assert inv.total == D("50.00")


def test_payg_cap_applies_to_the_sum_over_models(cat):
    usage = [ModelUsage("gpt-4o", 3000, 3000), ModelUsage("claude-haiku", 2500, 2500)]
    inv = rate_period(cat, AccountTerms("payg"), usage)
    check_invariants(inv)
    assert [line.model for line in inv.lines] == ["claude-haiku", "gpt-4o", None]
    assert [line.amount for line in inv.lines] == [D("25.00"), D("30.00"), D("-5.00")]
    assert inv.total == D("50.00")
    assert inv.lines[0].description == "Usage — claude-haiku: 2,500 executions × $0.01"


# ---- lines per model ---------------------------------------------------------------------------
def test_lines_per_model_when_billable_spans_models(cat):
    # pro, opt-in: 5,000 included; 10 events beyond in time order, spread over three models
    events = [(T0 + timedelta(seconds=i), f"e{i:05d}", "claude-haiku") for i in range(4995)]
    tail = ["gpt-4o-mini", "claude-haiku", "gpt-4o", "gpt-4o", "gpt-4o-mini"] * 3
    events += [(T0 + timedelta(hours=2, seconds=i), f"t{i:02d}", m) for i, m in enumerate(tail)]
    split = split_billable(reversed(events), 5000)
    # first 5 of tail are included (4,995 + 5 = 5,000)
    assert split == {
        "claude-haiku": ModelUsage("claude-haiku", 4998, 2),
        "gpt-4o": ModelUsage("gpt-4o", 6, 4),
        "gpt-4o-mini": ModelUsage("gpt-4o-mini", 6, 4),
    }
    inv = rate_period(cat, AccountTerms("pro", overage_opt_in=True), list(split.values()))
    check_invariants(inv)
    usage = [line for line in inv.lines if line.kind is LineKind.usage]
    assert [(u.model, u.quantity, u.amount) for u in usage] == [
        ("claude-haiku", 2, D("0.01")), ("gpt-4o", 4, D("0.02")), ("gpt-4o-mini", 4, D("0.02"))]
    assert inv.total == D("29.05")  # each line rounded once: 0.01 + 0.02 + 0.02, not round(10 x 0.005)=0.05
    assert inv.billable_executions == 10 and inv.executions == 5010


def test_each_line_rounded_once_not_sum(cat):
    # three models with 1 billable each: 3 x round(0.005) = 0.03 (not round(0.015) = 0.02)
    usage = [ModelUsage("gpt-4o", 5000, 0), ModelUsage("claude-haiku", 1, 1), ModelUsage("gpt-4o-mini", 1, 1),
             ModelUsage("groq-llama", 1, 1)]
    inv = rate_period(cat, AccountTerms("pro", overage_opt_in=True), usage)
    assert inv.total == D("29.03")


def test_lines_come_fee_included_then_blocked(cat):
    inv = rate_period(cat, AccountTerms("pro"), [ModelUsage("gpt-4o", 5003, 3)])
    assert kinds(inv) == [LineKind.base_fee, LineKind.included_usage, LineKind.blocked_usage]


# ---- split_billable ----------------------------------------------------------------------------
def test_split_billable_ties_broken_by_event_id():
    events = [(T0, "b", "gpt-4o"), (T0, "a", "claude-haiku"), (T0 - timedelta(seconds=1), "z", "groq-llama")]
    assert split_billable(events, 2) == {
        "claude-haiku": ModelUsage("claude-haiku", 1, 0),
        "gpt-4o": ModelUsage("gpt-4o", 1, 1),
        "groq-llama": ModelUsage("groq-llama", 1, 0),
    }
    assert split_billable([], 5) == {}
    assert split_billable(events, 0)["gpt-4o"].billable == 1


def test_split_billable_mixed_offsets_compare_as_instants():
    plus2 = timezone(timedelta(hours=2))
    early_local = datetime(2026, 10, 1, 1, 0, tzinfo=plus2)  # 2026-09-30 23:00 UTC
    events = [(T0, "a", "gpt-4o"), (early_local, "b", "claude-haiku")]
    assert split_billable(events, 1)["gpt-4o"].billable == 1


def test_split_billable_rejects_naive_times_duplicate_ids_negative_quota():
    with pytest.raises(RatingError, match="occurred_at"):
        split_billable([(datetime(2026, 10, 1), "a", "m")], 0)
    with pytest.raises(RatingError, match="duplicate event id"):
        split_billable([(T0, "a", "m"), (T0, "a", "m")], 0)
    with pytest.raises(RatingError, match="included"):
        split_billable([], -1)


# ---- validation --------------------------------------------------------------------------------
def test_enterprise_plan_is_refused_by_per_execution_rating(cat):
    with pytest.raises(RatingError, match="enterprise accounts are billed by their contract"):
        rate_period(cat, AccountTerms("enterprise"), [])


def test_unknown_plan_or_model_is_refused(cat):
    with pytest.raises(CatalogError, match="unknown plan 'gold'"):
        rate_period(cat, AccountTerms("gold"), [])
    with pytest.raises(CatalogError, match="unknown model 'gpt-5'"):
        rate_period(cat, AccountTerms("payg"), [ModelUsage("gpt-5", 1, 1)])


@pytest.mark.parametrize(
    ("terms", "usage", "field"),
    [
        (AccountTerms("pro", seats=2), [], "seats"),
        (AccountTerms("team", seats=0), [], "seats"),
        (AccountTerms("payg", seats=-1), [], "seats"),
        (AccountTerms("payg"), [ModelUsage("gpt-4o", -1, 0)], "executions"),
        (AccountTerms("payg"), [ModelUsage("gpt-4o", 3, 4)], "billable"),
        (AccountTerms("payg"), [ModelUsage("gpt-4o", 3, -1)], "billable"),
        (AccountTerms("payg"), [ModelUsage("gpt-4o", 3, 2)], "billable"),  # payg: all must be billable
        (AccountTerms("pro"), [ModelUsage("gpt-4o", 5001, 0)], "billable"),
        (AccountTerms("pro"), [ModelUsage("gpt-4o", 10, 1)], "billable"),
        (AccountTerms("payg"), [ModelUsage("gpt-4o", 1, 1), ModelUsage("gpt-4o", 1, 1)], "usage"),
        (AccountTerms("payg"), [ModelUsage("gpt-4o", True, True)], "executions"),  # type: ignore[arg-type]
    ],
)
def test_inconsistent_usage_is_refused_naming_the_field(cat, terms, usage, field):
    with pytest.raises(RatingError) as ei:
        rate_period(cat, terms, usage)
    assert ei.value.field == field
    assert str(ei.value).startswith(f"{field}: ")
    assert isinstance(ei.value, ValueError)


def test_ambient_decimal_context_cannot_change_a_bill(cat):
    from decimal import Inexact, localcontext

    with localcontext() as ctx:
        ctx.prec = 3
        ctx.traps[Inexact] = True
        inv = rate_period(cat, AccountTerms("pro", overage_opt_in=True), one("gpt-4o-mini", 12345, 5000))
        assert inv.total == D("65.73")
        assert cat.model("claude-opus").user_price_output(cat.markup) == D("150.00")
