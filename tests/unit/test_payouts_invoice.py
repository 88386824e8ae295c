"""An invoice's premium lines and earnings (``billing.payouts.premium_lines`` / ``invoice_earnings``):
which executions share which line, hand-computed."""

from __future__ import annotations

from decimal import Decimal

from billing.catalog import load_catalog
from billing.payouts import PremiumSkill, PremiumUsage, RevenueModel, invoice_earnings, premium_lines
from billing.rating import LineKind, RatedLine

TERMS = load_catalog().latest.creators
SKILLS = {"share": PremiumSkill("share", "cr", RevenueModel.share),
          "fixed": PremiumSkill("fixed", "cr", RevenueModel.fixed, Decimal("0.10"))}


def line(kind: LineKind, amount: str, model: str | None = None, executions: int = 0, key: str = "",
         quantity: str = "1", unit: str = "0") -> RatedLine:
    return RatedLine(kind, kind.value, Decimal(quantity), Decimal(unit), Decimal(amount), model, key=key,
                     executions=executions)


def by_line(earnings) -> dict[str, Decimal]:
    return {e.source.split(":", 2)[2]: e.amount for e in earnings}


def test_past_quota_executions_of_a_blocked_model_earn_nothing_and_pay_no_fixed_price():
    lines = [line(LineKind.base_fee, "29.00"), line(LineKind.blocked_usage, "0", "gpt-4o", 10)]
    usage = [PremiumUsage("share", "gpt-4o", False, False, 40), PremiumUsage("share", "gpt-4o", False, True, 10),
             PremiumUsage("fixed", "gpt-4o", False, False, 5), PremiumUsage("fixed", "gpt-4o", False, True, 3)]
    [fixed] = premium_lines(usage, SKILLS, lines)
    assert (fixed.quantity, fixed.amount) == (5, Decimal("0.50"))  # the 3 blocked ones are not charged
    # base fee over the 100 - 10 blocked executions; the skill's 40 unblocked: 29 x 40/90 x 30% = 3.8666 -> 3.87
    earned = invoice_earnings("7", lines, 100, usage, SKILLS, TERMS)
    assert by_line(earned) == {"base_fee": Decimal("3.87")}


def test_the_payg_cap_is_a_discount_spread_over_the_usage_lines_not_the_fixed_line():
    lines = [line(LineKind.usage, "60.00", "claude-haiku", 6000), line(LineKind.usage, "10.00", "gpt-4o", 1000),
             line(LineKind.cap_adjustment, "-20.00"),
             line(LineKind.premium_skill, "10.00", key="fixed:fixed", quantity="100", unit="0.10", executions=100)]
    usage = [PremiumUsage("share", "claude-haiku", False, True, 600)]
    earned = invoice_earnings("7", lines, 7100, usage, SKILLS, TERMS)
    # haiku's line nets 60 - 20 x 60/70 = 42.857...; 600/6000 of it x 30% = 1.2857 -> 1.29; fixed 70% of 10.00
    assert by_line(earned) == {"usage:claude-haiku": Decimal("1.29"), "fixed:fixed": Decimal("7.00")}


def test_token_lines_are_shared_by_platform_key_executions_only():
    lines = [line(LineKind.token_usage, "3.00", "gpt-4o", 100), line(LineKind.token_usage, "1.00", "gpt-4o", 0)]
    usage = [PremiumUsage("share", "gpt-4o", False, False, 50), PremiumUsage("share", "gpt-4o", True, False, 30)]
    earned = invoice_earnings("7", lines, 130, usage, SKILLS, TERMS)
    assert by_line(earned) == {"tokens:gpt-4o": Decimal("0.60")}  # $4.00 x 50/100 x 30%


def test_an_invoice_without_premium_usage_earns_nobody_anything():
    lines = [line(LineKind.base_fee, "29.00"), line(LineKind.usage, "5.00", "gpt-4o", 1000)]
    assert invoice_earnings("7", lines, 6000, [], SKILLS, TERMS) == []
    assert premium_lines([], SKILLS, lines) == []
