"""Line keys: one module builds them and reads the segment back; the format stored on invoices never
changes (late usage is billed by difference per key)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing import line_keys
from billing.catalog import load_catalog
from billing.periods import Period
from billing.rating import TermsSegment, UsageRow, rate_account

CATALOG = load_catalog()
OCT = Period.parse("2026-10")
V1 = CATALOG.versions[0].version
NAME = st.text(st.characters(blacklist_characters="|", blacklist_categories=("Cs",)), min_size=1, max_size=20)


def test_every_kind_of_line_keeps_the_key_format_stored_invoices_carry():
    assert line_keys.base_fee(0, "pro", 1) == "base_fee|0|pro|1"
    assert line_keys.included_usage() == "included_usage"
    assert line_keys.sandbox() == "sandbox"
    assert line_keys.usage("claude-haiku", V1, Decimal("0.005"), None) == f"usage|claude-haiku|{V1}|0.005|"
    assert line_keys.usage("claude-haiku", V1, Decimal("0.005"), 1) == f"usage|claude-haiku|{V1}|0.005|1"
    assert line_keys.token_usage("gpt-4o", V1, "input", None) == f"token_usage|gpt-4o|{V1}|input|"
    assert line_keys.token_usage("gpt-4o", V1, "output", 2) == f"token_usage|gpt-4o|{V1}|output|2"
    assert line_keys.blocked_usage("gpt-4o") == "blocked_usage|gpt-4o"
    assert line_keys.cap_adjustment() == "cap_adjustment"


@given(model=NAME, version=NAME, rate=st.decimals(min_value=0, max_value=10, places=6),
       direction=st.sampled_from(["input", "output"]), segment=st.integers(0, 40))
def test_the_segment_of_a_usage_or_token_key_reads_back_as_built(model, version, rate, direction, segment):
    assert line_keys.segment_of(line_keys.usage(model, version, rate, segment)) == segment
    assert line_keys.segment_of(line_keys.token_usage(model, version, direction, segment)) == segment


@given(model=NAME, version=NAME, rate=st.decimals(min_value=0, max_value=10, places=6), seats=st.integers(1, 9),
       segment=st.integers(0, 40))
def test_keys_without_a_segment_read_back_as_none(model, version, rate, seats, segment):
    assert line_keys.segment_of(line_keys.usage(model, version, rate, None)) is None
    assert line_keys.segment_of(line_keys.token_usage(model, version, "input", None)) is None
    for key in (line_keys.base_fee(segment, model, seats), line_keys.blocked_usage(model),
                line_keys.included_usage(), line_keys.sandbox(), line_keys.cap_adjustment()):
        assert line_keys.segment_of(key) is None


def test_rating_writes_the_segment_an_overage_line_was_priced_in_into_its_key():
    mid = datetime(2026, 10, 16, tzinfo=timezone.utc)
    segments = [TermsSegment(OCT.start, mid, "pro", 1, True), TermsSegment(mid, OCT.end, "team", 2, True)]
    rows = [UsageRow(segment=0, version=V1, model="claude-haiku", billable=True, executions=7),
            UsageRow(segment=1, version=V1, model="claude-haiku", billable=True, executions=3)]
    rated = rate_account(CATALOG, OCT.start, OCT.end, segments, rows)
    by_segment = {line_keys.segment_of(ln.key): ln.quantity for ln in rated.lines if ln.kind.value == "usage"}
    assert by_segment == {0: 7, 1: 3}
