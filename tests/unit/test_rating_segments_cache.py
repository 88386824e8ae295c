"""``billing.rating.resolve_segments`` remembers its answers (most accounts of a close share their
terms): a remembered answer must be exactly what resolving again would give, and inputs that are
equal but not the same (bool seats, other time zones, another catalog) must not get one."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from billing.catalog import load_catalog
from billing.errors import RatingError
from billing.periods import Period
from billing.rating import TermsSegment, _resolve_segments, pooled_included, resolve_segments

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
