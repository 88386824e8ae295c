"""The pure reference of the close's usage aggregation (``billing.rating.aggregate_usage``) on a worked
month; tests/integration/test_rating_fast_path.py compares the SQL with it on generated months."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from billing.rating import Execution, TermsSegment, aggregate_usage

OCT_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
OCT_END = datetime(2026, 11, 1, tzinfo=timezone.utc)
LATE_START = OCT_START + timedelta(days=5)


def test_the_pure_rule_ranks_past_the_quota_and_leaves_out_executions_before_billing_starts():
    """A worked month for the reference itself: quota 2, one execution before the first segment,
    a sandbox try among ties, a BYOK execution with a cost (not ours) and one without a cost."""
    seg = [TermsSegment(LATE_START, OCT_END, "pro", pricing="tokens")]
    windows = [("v1", OCT_START, OCT_END)]
    t = LATE_START + timedelta(hours=1)
    rows = aggregate_usage([
        Execution("early", OCT_START, "gpt-4o"),
        Execution("b", t, "gpt-4o", input_tokens=10, cost_usd=Decimal("0.2")),
        Execution("a", t, "gpt-4o", sandbox=True),
        Execution("A", t, "gpt-4o", byok=True, input_tokens=5, cost_usd=Decimal("9")),
        Execution("c", t, "gpt-4o", input_tokens=7, output_tokens=3),
    ], OCT_START, OCT_END, seg, windows, included=2)
    assert [(r.byok, r.sandbox, r.billable, r.executions, r.cost, r.uncosted_input_tokens) for r in rows] == [
        (False, False, False, 1, Decimal("0.2"), 0),  # "b": second in C order ("A" < "b" < "c")
        (False, False, True, 1, Decimal(0), 7),  # "c": past the quota of 2, no recorded cost
        (False, True, False, 1, Decimal(0), 0),  # the sandbox try: never ranked
        (True, False, False, 1, Decimal(0), 0),  # "A": BYOK, first; its cost is not ours
    ]
