"""Projection and what-if re-allocation (pure): exact rows, hand-computed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.projection import project_usage, reallocate_billable
from billing.rating import UsageRow

D = Decimal
V = "2026-01-01.1"


def row(model, executions, *, billable=False, sandbox=False, tin=0, tout=0, cost=D(0), uin=0, uout=0):
    return UsageRow(0, V, model, sandbox=sandbox, billable=billable, executions=executions, input_tokens=tin,
                    output_tokens=tout, cost=cost, uncosted_input_tokens=uin, uncosted_output_tokens=uout)


def test_reallocation_merges_twins_and_splits_tokens_and_cost_pro_rata_rounding_tokens_down():
    rows = [row("gpt-4o", 6, tin=601, tout=61, cost=D("0.6"), uin=301, uout=31),
            row("gpt-4o", 4, billable=True, tin=400, tout=40, cost=D("0.4"), uin=200, uout=20),
            row("claude-haiku", 5, tin=50, tout=5, cost=D("0.05")),
            row("gpt-4o", 3, sandbox=True, tin=30, tout=3, cost=D("0.03"))]
    # 15 platform executions, 9 included: 6 billable, 4 of gpt-4o's 10 and 2 of haiku's 5 (in proportion)
    assert reallocate_billable(rows, 9) == [
        row("gpt-4o", 6, tin=601, tout=61, cost=D("0.6"), uin=301, uout=31),
        row("gpt-4o", 4, billable=True, tin=400, tout=40, cost=D("0.4"), uin=200, uout=20),
        row("claude-haiku", 3, tin=30, tout=3, cost=D("0.03")),
        row("claude-haiku", 2, billable=True, tin=20, tout=2, cost=D("0.02")),
        row("gpt-4o", 3, sandbox=True, tin=30, tout=3, cost=D("0.03")),
    ]


def test_reallocation_gives_leftover_billable_executions_to_the_largest_remainders():
    rows = [row("a", 4), row("b", 1), row("c", 1)]
    # 3 billable of 6: exact shares 2, 0.5, 0.5 -> 2, 0, 0 and the one left goes to the first 0.5 (b)
    assert reallocate_billable(rows, 3) == [row("a", 2), row("a", 2, billable=True), row("b", 1, billable=True),
                                            row("c", 1)]


def test_reallocation_skips_sandbox_rows_wherever_they_come():
    rows = [row("s", 5, sandbox=True), row("a", 2), row("b", 2)]
    assert reallocate_billable(rows, 2) == [row("s", 5, sandbox=True), row("a", 1), row("a", 1, billable=True),
                                            row("b", 1), row("b", 1, billable=True)]


def test_reallocation_under_the_quota_or_with_nothing_makes_nothing_billable():
    assert reallocate_billable([row("a", 4, billable=True)], 4) == [row("a", 4)]
    assert reallocate_billable([], 0) == []
    assert reallocate_billable([row("a", 0)], 0) == [row("a", 0)]


def test_reallocation_without_a_quota_makes_every_platform_execution_billable():
    assert reallocate_billable([row("a", 3, tin=9), row("b", 1, sandbox=True)], 0) == [
        row("a", 3, billable=True, tin=9), row("b", 1, sandbox=True)]


def test_projection_scales_counts_tokens_and_cost_and_spreads_rounding_by_largest_remainder():
    rows = [row("gpt-4o", 2, tin=10, tout=7, cost=D("1.0"), uin=5, uout=10),
            row("claude-haiku", 3, tin=100, tout=12, cost=D("0.5"))]
    # x1.3: 2.6 and 3.9 executions, 6.5 in all -> 6: floors 2 + 3, the one left to the larger remainder
    assert project_usage(rows, D("1.3"), 10) == [
        row("gpt-4o", 2, tin=13, tout=9, cost=D("1.30"), uin=6, uout=13),
        row("claude-haiku", 4, tin=130, tout=15, cost=D("0.65")),  # 15.6 tokens round down
    ]
    # the same projection past a quota of 3: half of each row is billable
    assert project_usage(rows, D("1.3"), 3) == [
        row("gpt-4o", 1, tin=7, tout=5, cost=D("0.650"), uin=3, uout=7),
        row("gpt-4o", 1, billable=True, tin=6, tout=4, cost=D("0.650"), uin=3, uout=6),
        row("claude-haiku", 2, tin=65, tout=8, cost=D("0.325")),
        row("claude-haiku", 2, billable=True, tin=65, tout=7, cost=D("0.325")),  # 7.5 tokens round down
    ]


def test_projection_never_shrinks_usage():
    with pytest.raises(ValueError) as ei:
        project_usage([row("a", 1)], D("0.9"), 0)
    assert str(ei.value) == "factor: a projection never shrinks usage (factor >= 1)"
    assert project_usage([row("a", 7, tin=3)], D(1), 0) == [row("a", 7, billable=True, tin=3)]
