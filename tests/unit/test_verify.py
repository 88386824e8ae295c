"""Comparing an invoice's recorded lines with today's rating of the same facts."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal as D

from billing.verify import compare_lines


@dataclass(frozen=True)
class Line:
    kind: str
    key: str
    quantity: D
    unit_price: D
    amount: D
    source_period: str | None = None


BASE = Line("base_fee", "base|0", D("1"), D("29.00"), D("29.00"))
USAGE = Line("usage", "usage|haiku|v1", D("4"), D("0.005"), D("0.02"))
PRIOR = Line("usage", "usage|haiku|v1", D("2"), D("0.005"), D("0.01"), source_period="2026-09")


def test_the_same_lines_in_another_order_and_scale_are_no_difference():
    rerated = [Line("usage", "usage|haiku|v1", D("4.0000"), D("0.00500000"), D("0.020")), BASE.__class__(
        **{**BASE.__dict__, "amount": D("29")})]
    assert compare_lines([BASE, USAGE], rerated) == []


def test_a_changed_amount_names_the_line_and_both_values():
    diffs = compare_lines([BASE, USAGE], [BASE, Line("usage", USAGE.key, D("4"), D("0.006"), D("0.02"))])
    assert [str(d) for d in diffs] == ["usage usage|haiku|v1: unit_price 0.005 -> 0.006"]


def test_a_line_on_one_side_only_is_a_difference():
    assert [str(d) for d in compare_lines([BASE, USAGE], [BASE])] == ["usage usage|haiku|v1: line 1 line(s) -> -"]
    assert [str(d) for d in compare_lines([BASE], [BASE, USAGE])] == ["usage usage|haiku|v1: line - -> 1 line(s)"]


def test_prior_period_lines_are_matched_by_the_period_they_bill():
    moved = Line("usage", PRIOR.key, PRIOR.quantity, PRIOR.unit_price, PRIOR.amount, source_period="2026-08")
    diffs = compare_lines([BASE, USAGE, PRIOR], [BASE, USAGE, moved])
    assert [str(d) for d in diffs] == ["usage usage|haiku|v1 for 2026-08: line - -> 1 line(s)",
                                       "usage usage|haiku|v1 for 2026-09: line 1 line(s) -> -"]
