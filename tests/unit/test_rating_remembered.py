"""What ``billing.rating`` remembers between accounts (most accounts of a close share their terms and
rate cards): ``resolve_segments``' answers and each catalog version's token prices. A remembered
answer must be exactly what computing again would give, and inputs that are equal but not the same
(bool seats, other time zones, another catalog with the same version id) must not get one."""

from __future__ import annotations

from datetime import timedelta, timezone
from decimal import Decimal

import pytest

from billing.catalog import load_catalog
from billing.errors import RatingError
from billing.periods import Period
from billing.rating import (
    TermsSegment,
    UsageRow,
    _resolve_segments,
    pooled_included,
    rate_account,
    resolve_segments,
)

CATALOG = load_catalog()
OCT = Period.parse("2026-10")
MID = OCT.start + timedelta(days=12)


def _plain(segs):
    return [(s.index, s.plan, s.version.version, s.seats, s.overage_opt_in, s.pricing, s.days, s.period_days,
             s.label, s.included()) for s in segs]


@pytest.mark.parametrize("segments", [
    [TermsSegment(OCT.start, OCT.end, "pro")],
    [TermsSegment(OCT.start, MID, "team", 3, True), TermsSegment(MID, OCT.end, "payg", pricing="tokens")],
    [TermsSegment(OCT.start + timedelta(days=5), OCT.end, "team", 2)],
])
def test_a_remembered_answer_is_what_resolving_again_gives(segments):
    first = resolve_segments(CATALOG, OCT.start, OCT.end, segments)
    again = resolve_segments(CATALOG, OCT.start, OCT.end, list(segments))
    assert _plain(first) == _plain(again) == _plain(_resolve_segments(CATALOG, OCT.start, OCT.end, segments))
    again.clear()  # callers get their own list
    assert _plain(resolve_segments(CATALOG, OCT.start, OCT.end, segments)) == _plain(first)


def test_bool_seats_are_refused_even_after_the_same_terms_with_seats_1():
    resolve_segments(CATALOG, OCT.start, OCT.end, [TermsSegment(OCT.start, OCT.end, "team", 1)])
    with pytest.raises(RatingError) as ei:
        resolve_segments(CATALOG, OCT.start, OCT.end, [TermsSegment(OCT.start, OCT.end, "team", True)])
    assert ei.value.field == "seats"


def test_the_same_instants_in_another_zone_are_checked_in_that_zone():
    resolve_segments(CATALOG, OCT.start, OCT.end, [TermsSegment(OCT.start, OCT.end, "pro")])
    plus2 = timezone(timedelta(hours=2))
    with pytest.raises(RatingError, match="00:00 UTC"):  # 02:00 there
        resolve_segments(CATALOG, OCT.start, OCT.end,
                         [TermsSegment(OCT.start.astimezone(plus2), OCT.end.astimezone(plus2), "pro")])


def test_another_catalog_with_the_same_version_id_is_resolved_afresh():
    segments = [TermsSegment(OCT.start, OCT.end, "pro")]
    assert pooled_included(CATALOG, OCT.start, OCT.end, segments) == 5_000
    v = CATALOG.versions[0]
    smaller = CATALOG.model_copy(update={"versions": (v.model_copy(update={"plans": {
        **v.plans, "pro": v.plan("pro").model_copy(update={"included_executions": 7})}}),)})
    assert pooled_included(smaller, OCT.start, OCT.end, segments) == 7
    assert pooled_included(CATALOG, OCT.start, OCT.end, segments) == 5_000


def test_another_catalog_with_the_same_version_id_gets_its_own_token_prices():
    segments = [TermsSegment(OCT.start, OCT.end, "pro", pricing="tokens")]
    v = CATALOG.versions[0]
    rows = [UsageRow(0, v.version, "gpt-4o", executions=2, input_tokens=1_000_000, output_tokens=1_000_000)]

    def token_lines(catalog):
        inv = rate_account(catalog, OCT.start, OCT.end, segments, rows)
        return [(ln.direction, ln.unit_price, ln.amount, ln.description) for ln in inv.lines if ln.direction]

    before = token_lines(CATALOG)
    m = v.model("gpt-4o")
    dearer = CATALOG.model_copy(update={"versions": (v.model_copy(update={
        "models": {**v.models, "gpt-4o": m.model_copy(update={"price_input_per_mtok": Decimal("99"),
                                                               "price_output_per_mtok": Decimal("0.5")})},
        "markup": Decimal("3")}),)})
    assert token_lines(dearer) == [
        ("input", Decimal("0.000099"), Decimal("99.00"), "gpt-4o input tokens: 1,000,000 × $99.00 per 1M"),
        ("output", Decimal("5E-7"), Decimal("0.50"), "gpt-4o output tokens: 1,000,000 × $0.50 per 1M")]
    assert token_lines(CATALOG) == before
    per_in = m.user_price_input(v.markup)
    assert before[0][:2] == ("input", per_in / Decimal(1_000_000))
