"""``invoices explain`` selects the executions behind each line by the rating's own rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from billing import line_keys
from billing.catalog import load_catalog, version_windows
from billing.explain import PeriodExecutions
from billing.periods import Period
from billing.rating import TermsSegment, split_billable

CATALOG = load_catalog()
V1 = CATALOG.versions[0].version
OCT = Period.parse("2026-10")
WINDOWS = version_windows(CATALOG, OCT.start, OCT.end)
WHOLE = [TermsSegment(OCT.start, OCT.end, "pro", overage_opt_in=True)]


@dataclass(frozen=True)
class Ex:
    event_id: str
    occurred_at: datetime
    model: str = "claude-haiku"
    byok: bool = False
    sandbox: bool = False


def at(minutes: int) -> datetime:
    return OCT.start + timedelta(minutes=minutes)


def ids(sel) -> list[str]:
    return [e.event_id for e in sel.executions]


def test_the_first_executions_in_time_order_are_included_and_ties_go_by_event_id():
    evs = [Ex("c", at(9)), Ex("b", at(5)), Ex("a", at(5)), Ex("z", at(1))]
    behind = PeriodExecutions(evs, WHOLE, WINDOWS, included=2)
    assert ids(behind.for_line("included_usage", None, None, line_keys.included_usage())) == ["z", "a"]
    usage = behind.for_line("usage", "claude-haiku", V1, line_keys.usage("claude-haiku", V1, 0, None))
    assert ids(usage) == ["b", "c"]
    assert usage.description == "model claude-haiku, ranked past the 2 included (occurred_at, event id)"


def test_sandbox_tries_never_use_the_quota():
    evs = [Ex("s1", at(0), sandbox=True), Ex("a", at(1)), Ex("b", at(2))]
    behind = PeriodExecutions(evs, WHOLE, WINDOWS, included=2)
    assert ids(behind.for_line("included_usage", None, None, "included_usage")) == ["a", "b"]
    assert ids(behind.for_line("sandbox", None, None, "sandbox")) == ["s1"]


def test_executions_before_the_billing_start_are_not_ranked_as_the_close_does():
    starts = OCT.start + timedelta(days=10)
    evs = [Ex("early", at(0)), Ex("a", starts + timedelta(minutes=1)), Ex("b", starts + timedelta(minutes=2))]
    behind = PeriodExecutions(evs, [TermsSegment(starts, OCT.end, "pro", overage_opt_in=True)], WINDOWS, included=1)
    assert ids(behind.for_line("included_usage", None, None, "included_usage")) == ["a"]
    assert ids(behind.for_line("usage", "claude-haiku", V1, f"usage|claude-haiku|{V1}|0.005|")) == ["b"]


def test_a_usage_line_of_one_segment_selects_the_billable_executions_that_occurred_in_it():
    mid = OCT.start + timedelta(days=15)
    segs = [TermsSegment(OCT.start, mid, "pro", 1, True), TermsSegment(mid, OCT.end, "team", 2, True)]
    evs = [Ex("a", at(1)), Ex("b", at(2)), Ex("c", mid + timedelta(hours=1)), Ex("d", mid + timedelta(hours=2))]
    behind = PeriodExecutions(evs, segs, WINDOWS, included=1)
    second = behind.for_line("usage", "claude-haiku", V1, line_keys.usage("claude-haiku", V1, 0, 1))
    assert ids(second) == ["c", "d"] and second.description.endswith("during 2026-10-16..2026-11-01")
    assert ids(behind.for_line("usage", "claude-haiku", V1, line_keys.usage("claude-haiku", V1, 0, 0))) == ["b"]


def test_a_token_line_selects_the_platform_key_executions_of_its_model_included_ones_too():
    evs = [Ex("a", at(1)), Ex("k", at(2), byok=True), Ex("o", at(3), model="gpt-4o"), Ex("b", at(4))]
    behind = PeriodExecutions(evs, WHOLE, WINDOWS, included=5)
    tokens = behind.for_line("token_usage", "claude-haiku", V1, line_keys.token_usage("claude-haiku", V1, "input", None))
    assert ids(tokens) == ["a", "b"]


def test_lines_without_executions_behind_them_select_none():
    behind = PeriodExecutions([Ex("a", at(1))], WHOLE, WINDOWS, included=0)
    assert behind.for_line("base_fee", None, None, line_keys.base_fee(0, "pro", 1)).executions == []


EVENTS = st.lists(st.tuples(st.integers(0, 500), st.sampled_from(["claude-haiku", "gpt-4o", "claude-opus"])),
                  max_size=60)


@given(EVENTS, st.integers(0, 70))
def test_explain_splits_every_model_exactly_as_the_rating_reference_does(raw, included):
    evs = [Ex(f"e{i:03d}", at(minute), model) for i, (minute, model) in enumerate(raw)]
    behind = PeriodExecutions(evs, WHOLE, WINDOWS, included)
    reference = split_billable([(e.occurred_at, e.event_id, e.model) for e in evs], included)
    for model, counts in reference.items():
        line = behind.for_line("usage", model, V1, line_keys.usage(model, V1, 0, None))
        assert len(line.executions) == counts.billable
