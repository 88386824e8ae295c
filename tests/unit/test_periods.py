from datetime import datetime, timedelta, timezone

import pytest

from billing.errors import PeriodError
from billing.periods import UTC, Period
from tests.unit.helpers import assert_error


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


# ---- exact errors and limits --------------------------------------------------------------------------
HINT = "expected 'YYYY-MM' with a month from 01 to 12, e.g. '2026-10'"


@pytest.mark.parametrize(
    ("call", "message", "field"),
    [
        (lambda: Period.parse(202610), f"period: {HINT}; got int 202610", "period"),
        (lambda: Period.parse("2026-13"), f"period: {HINT}; got '2026-13'", "period"),
        (lambda: Period.parse("2026-00"), f"period: {HINT}; got '2026-00'", "period"),
        (lambda: Period(2026, 13), f"period: month must be 1-12, got 13; {HINT}", "period"),
        (lambda: Period("2026", 1), "period: year must be an int, got '2026'", "period"),
        (lambda: Period(2026, True), "period: month must be an int, got True", "period"),
        (lambda: Period(0, 1), "period: year must be 0001-9998, got 0", "period"),
        (lambda: Period(9999, 1), "period: year must be 0001-9998, got 9999", "period"),
        (lambda: Period.of("2026-10-01"), "ts: must be a datetime, not str", "ts"),
        (lambda: Period.of(datetime(2026, 10, 5)),
         "ts: must be timezone-aware (naive datetime 2026-10-05T00:00:00 is ambiguous)", "ts"),
        (lambda: Period(2026, 10).contains(datetime(2026, 10, 5)),
         "ts: must be timezone-aware (naive datetime 2026-10-05T00:00:00 is ambiguous)", "ts"),
        (lambda: Period(2026, 10).closes_at(-1), "grace_hours: must be a non-negative int, got -1", "grace_hours"),
        (lambda: Period(2026, 10).closes_at(True), "grace_hours: must be a non-negative int, got True", "grace_hours"),
        (lambda: Period(2026, 10).closes_at(1.5), "grace_hours: must be a non-negative int, got 1.5", "grace_hours"),
    ],
)
def test_period_errors_name_the_field_and_the_reason(call, message, field):
    assert_error(PeriodError, call, message, field)


def test_years_0001_to_9998_and_every_month_are_valid():
    assert Period(1, 1).start == datetime(1, 1, 1, tzinfo=UTC)
    assert Period(9998, 12).start == datetime(9998, 12, 1, tzinfo=UTC)
    assert [Period.parse(f"2026-{m:02d}").month for m in range(1, 13)] == list(range(1, 13))


def test_default_grace_is_48_hours():
    assert Period(2026, 10).closes_at() == datetime(2026, 11, 3, tzinfo=UTC)


def test_zoneinfo_datetimes_are_aware_and_compared_as_instants():
    from zoneinfo import ZoneInfo

    paris = datetime(2026, 11, 1, 0, 30, tzinfo=ZoneInfo("Europe/Paris"))  # = 2026-10-31 23:30 UTC
    assert Period.of(paris) == Period(2026, 10)
    assert Period(2026, 10).contains(paris)


def test_period_of_does_not_depend_on_the_machine_time_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert Period.of(datetime(2026, 10, 31, 20, 0, tzinfo=UTC)) == Period(2026, 10)
        assert Period.of(datetime(2026, 10, 31, 20, 0, tzinfo=UTC)).start.tzinfo is UTC
    finally:
        monkeypatch.undo()
        time.tzset()
