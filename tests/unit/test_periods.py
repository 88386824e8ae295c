from datetime import datetime, timedelta, timezone

import pytest

from billing.errors import PeriodError
from billing.periods import UTC, Period


def test_parse_and_str_round_trip_yyyy_mm():
    p = Period.parse("2026-10")
    assert p == Period(2026, 10)
    assert str(p) == "2026-10"
    assert str(Period(987, 1)) == "0987-01"


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-10", "2026/10", "2026-10-01", " 2026-10", "2026-10\n", "", "abcd-ef", "２０２６-10"])
def test_parse_rejects_anything_but_yyyy_mm_naming_the_field(text):
    with pytest.raises(PeriodError) as ei:
        Period.parse(text)
    assert ei.value.field == "period"
    assert "YYYY-MM" in str(ei.value)
    assert str(ei.value).startswith("period: ")
    assert isinstance(ei.value, ValueError)


def test_parse_rejects_a_non_string():
    with pytest.raises(PeriodError):
        Period.parse(202610)  # type: ignore[arg-type]


def test_constructor_rejects_month_out_of_range():
    with pytest.raises(PeriodError):
        Period(2026, 13)
    with pytest.raises(PeriodError):
        Period(2026, 0)


def test_period_is_half_open_from_first_instant_to_next_months_first():
    p = Period(2026, 10)
    assert p.start == datetime(2026, 10, 1, tzinfo=UTC)
    assert p.end == datetime(2026, 11, 1, tzinfo=UTC)
    assert p.start.tzinfo is not None and p.end.utcoffset() == timedelta(0)
    last = datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert Period.of(last) == p
    assert p.contains(last)
    first_of_next = datetime(2026, 11, 1, tzinfo=UTC)
    assert Period.of(first_of_next) == Period(2026, 11)
    assert not p.contains(first_of_next)
    assert p.contains(p.start)
    assert not p.contains(p.start - timedelta(microseconds=1))


def test_of_converts_to_utc():
    # 2026-11-01 01:30 in UTC+02:00 is 2026-10-31 23:30 UTC
    ts = datetime(2026, 11, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert Period.of(ts) == Period(2026, 10)
    # 2026-10-31 20:00 in UTC-05:00 is 2026-11-01 01:00 UTC
    ts = datetime(2026, 10, 31, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert Period.of(ts) == Period(2026, 11)


def test_naive_datetimes_are_rejected():
    with pytest.raises(PeriodError, match="timezone-aware"):
        Period.of(datetime(2026, 10, 5))
    with pytest.raises(PeriodError, match="timezone-aware"):
        Period(2026, 10).contains(datetime(2026, 10, 5))


def test_december_is_followed_by_january_of_next_year():
    assert Period(2026, 12).next() == Period(2027, 1)
    assert Period(2027, 1).previous() == Period(2026, 12)
    assert Period(2026, 12).end == datetime(2027, 1, 1, tzinfo=UTC)
    assert Period(2026, 5).next().previous() == Period(2026, 5)


def test_days_counts_the_days_of_the_month_including_leap_february():
    assert Period(2026, 2).days == 28
    assert Period(2028, 2).days == 29
    assert Period(2026, 10).days == 31
    assert Period(2026, 11).days == 30
    p = Period(2026, 3)
    assert (p.end - p.start).days == p.days


def test_closes_at_is_period_end_plus_grace_hours():
    p = Period(2026, 10)
    assert p.closes_at(48) == datetime(2026, 11, 3, tzinfo=UTC)
    assert p.closes_at(0) == p.end
    with pytest.raises(PeriodError, match="grace_hours"):
        p.closes_at(-1)


def test_periods_order_chronologically_and_are_hashable_values():
    assert Period(2026, 9) < Period(2026, 10) < Period(2027, 1)
    assert sorted([Period(2027, 1), Period(2026, 12)]) == [Period(2026, 12), Period(2027, 1)]
    assert len({Period(2026, 1), Period.parse("2026-01")}) == 1
    with pytest.raises(AttributeError):
        Period(2026, 1).month = 2  # type: ignore[misc]
