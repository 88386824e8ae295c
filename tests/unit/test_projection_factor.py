"""The preview's month-end projection: the factor from the usage so far to the whole month."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing.catalog import load_catalog
from billing.periods import Period
from billing.projection import project_month, projection_factor
from billing.rating import TermsSegment, UsageRow, rate_account, with_lines

CATALOG = load_catalog()
V1 = CATALOG.versions[0].version
OCT = Period.parse("2026-10")


def test_ten_days_into_a_31_day_month_usage_is_scaled_by_31_over_10():
    assert projection_factor(OCT.start, OCT.end, OCT.start + timedelta(days=10)) == Decimal("3.1")


def test_at_the_first_instant_nothing_has_elapsed_and_usage_is_not_scaled():
    assert projection_factor(OCT.start, OCT.end, OCT.start) == 1


@given(st.integers(0, 40 * 86_400))
def test_the_factor_never_shrinks_usage(seconds):
    assert projection_factor(OCT.start, OCT.end, OCT.start + timedelta(seconds=seconds)) >= 1


def test_the_projection_scales_this_months_usage_and_carries_prior_period_lines_unscaled():
    segs = [TermsSegment(OCT.start, OCT.end, "payg")]
    rows = [UsageRow(segment=0, version=V1, model="claude-haiku", billable=True, executions=100)]
    rated = rate_account(CATALOG, OCT.start, OCT.end, segs, rows)
    late = rate_account(CATALOG, OCT.start, OCT.end, segs, [
        UsageRow(segment=0, version=V1, model="claude-haiku", billable=True, executions=4)]).lines
    prior = [replace(ln, source_period="2026-09") for ln in late]
    projection = project_month(CATALOG, OCT.start, OCT.end, OCT.start + timedelta(days=10), segs, rows, 0,
                               with_lines(rated, prior))
    assert projection.executions == 310  # 100 x 31/10
    assert projection.total == Decimal("3.10") + Decimal("0.04")
