"""The rules of usage reporting (billing/meters.py): hours, meter definitions, identifiers, what to send
for an account, meter and hour, the plan of a run and the drift at close."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.meters import (
    HOUR,
    HourUsage,
    MeterError,
    chunk_size_for,
    OverReported,
    Revision,
    Send,
    decide_report,
    explain_drift,
    format_hour,
    identifier,
    last_ended_hour,
    meter_definitions,
    oldest_reportable_hour,
    parse_hour,
    plan_hours,
    quantities_by_meter,
    report_subject,
    why_not_reportable,
)

UTC = timezone.utc
H = datetime(2026, 10, 14, 9, tzinfo=UTC)


# ---- hours ------------------------------------------------------------------------------------------
def test_an_hour_is_written_and_read_as_yyyy_mm_dd_t_hh_in_utc():
    assert format_hour(H) == "2026-10-14T09"
    assert parse_hour("2026-10-14T09") == H
    assert format_hour(datetime(2026, 10, 14, 11, 59, tzinfo=timezone(timedelta(hours=2)))) == "2026-10-14T09"


@pytest.mark.parametrize("text", ["2026-10-14", "2026-10-14T9", "2026-13-01T00", "2026-10-14T24", "x", ""])
def test_a_malformed_hour_is_refused_naming_the_field(text):
    with pytest.raises(MeterError) as err:
        parse_hour(text)
    assert str(err.value).startswith("hour: expected 'YYYY-MM-DDTHH'")


def test_the_hour_reported_is_the_last_one_that_ended_before_the_lag():
    lag = timedelta(minutes=15)
    assert last_ended_hour(datetime(2026, 10, 14, 10, 15, tzinfo=UTC), lag) == H
    assert last_ended_hour(datetime(2026, 10, 14, 10, 14, 59, tzinfo=UTC), lag) == H - HOUR
    assert last_ended_hour(datetime(2026, 10, 15, 0, 15, tzinfo=UTC), lag) == datetime(2026, 10, 14, 23, tzinfo=UTC)


def test_an_hour_is_reportable_from_its_end_plus_lag_until_35_days_minus_a_margin():
    lag = timedelta(minutes=15)
    assert "has not ended" in why_not_reportable(H, H + HOUR + lag - timedelta(seconds=1), lag)
    assert why_not_reportable(H, H + HOUR + lag, lag) is None
    assert why_not_reportable(H, H + timedelta(days=35) - timedelta(minutes=10)) is None
    assert "older than Stripe's 35-day" in why_not_reportable(H, H + timedelta(days=35) - timedelta(minutes=9))
    assert oldest_reportable_hour(H + timedelta(days=35) - timedelta(minutes=10)) == H
    assert oldest_reportable_hour(H + timedelta(days=35) - timedelta(minutes=9)) == H + HOUR


# ---- meters -----------------------------------------------------------------------------------------
def test_one_executions_meter_and_an_input_and_output_meter_per_model():
    defs = meter_definitions(["gpt-4o", "claude-haiku"])
    assert [d.key for d in defs] == ["executions", "input_tokens:claude-haiku", "output_tokens:claude-haiku",
                                     "input_tokens:gpt-4o", "output_tokens:gpt-4o"]
    assert [d.event_name for d in defs][:3] == ["tally_executions", "tally_input_tokens__claude_haiku",
                                                "tally_output_tokens__claude_haiku"]


def test_two_models_that_would_share_an_event_name_are_refused():
    with pytest.raises(MeterError) as err:
        meter_definitions(["gpt-4o", "GPT.4o"])
    assert "share the meter event name" in str(err.value)


def test_sandbox_and_byok_are_already_out_of_the_rows_and_zero_quantities_are_not_sent():
    rows = [HourUsage("a", "claude-haiku", 3, 100, 0), HourUsage("a", "gpt-4o", 2, 50, 7),
            HourUsage("b", "gpt-4o", 1, 0, 0)]
    assert quantities_by_meter(rows) == {
        ("a", "executions"): 5, ("a", "input_tokens:claude-haiku"): 100, ("a", "input_tokens:gpt-4o"): 50,
        ("a", "output_tokens:gpt-4o"): 7, ("b", "executions"): 1}


@given(accounts=st.integers(1, 100_000), largest=st.integers(1, 1000), parallel=st.integers(1, 16))
def test_chunks_take_the_fewest_rounds_of_the_fan_out_and_are_as_small_as_that_allows(accounts, largest, parallel):
    size = chunk_size_for(accounts, largest, parallel)
    chunks = -(-accounts // size)
    fewest_rounds = -(-accounts // (parallel * largest))
    assert 1 <= size <= largest
    assert -(-chunks // parallel) == fewest_rounds  # no extra round for a small last chunk
    assert (size - 1) * parallel * fewest_rounds < accounts  # a smaller size would need another round


def test_an_hour_of_1250_accounts_in_chunks_of_200_two_at_a_time_is_8_chunks_of_157():
    assert chunk_size_for(1250, 200, 2) == 157
    assert chunk_size_for(250, 200, 2) == 125 and chunk_size_for(3, 200, 2) == 2


# ---- identifiers ------------------------------------------------------------------------------------
def test_the_identifier_is_the_same_for_a_retry_and_new_for_each_revision():
    assert identifier("ACME", 3, H, 1) == "ACME:m3:2026-10-14T09:r1" == identifier("ACME", 3, H, 1)
    assert identifier("ACME", 3, H, 2) != identifier("ACME", 3, H, 1)
    assert report_subject("ACME", 3, H) == "usage:ACME:m3:2026-10-14T09"


@given(account=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.:-", min_size=1, max_size=64),
       meter=st.integers(1, 99999), revision=st.integers(1, 9999),
       hours=st.integers(0, 24 * 365 * 5))
def test_identifiers_never_exceed_100_characters_and_differ_by_each_part(account, meter, revision, hours):
    hour = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=hours)
    ident = identifier(account, meter, hour, revision)
    assert len(ident) <= 100
    assert ident != identifier(account, meter, hour, revision + 1)
    assert ident != identifier(account, meter, hour + HOUR, revision)
    assert ident != identifier(account + "x", meter, hour, revision)


# ---- what to send -------------------------------------------------------------------------------------
def test_the_first_report_of_an_hour_sends_its_whole_usage_as_revision_1():
    assert decide_report(42, []) == Send(1, 42, resend=False, reported_before=0)


def test_nothing_is_sent_again_when_the_reported_revisions_add_up_to_the_truth():
    assert decide_report(42, [Revision(1, 40, "reported"), Revision(2, 2, "reported")]) is None


def test_a_late_event_is_sent_as_the_difference_under_the_next_revision():
    assert decide_report(45, [Revision(1, 42, "reported")]) == Send(2, 3, resend=False, reported_before=42)


@pytest.mark.parametrize("state", ["sending", "failed"])
def test_an_unsettled_revision_is_sent_again_unchanged_even_if_more_usage_arrived(state):
    # its identifier may already be in Stripe: a new value under it would be lost as a duplicate
    assert decide_report(50, [Revision(1, 42, state)]) == Send(1, 42, resend=True, reported_before=0)


def test_more_reported_than_recorded_is_flagged_not_corrected():
    assert decide_report(5, [Revision(1, 7, "reported")]) == OverReported(5, 7)


def test_revisions_with_a_hole_are_refused():
    with pytest.raises(MeterError):
        decide_report(5, [Revision(2, 5, "reported")])


@given(truths=st.lists(st.integers(0, 10_000), min_size=1, max_size=8).map(lambda xs: sorted(xs)),
       lost=st.lists(st.booleans(), min_size=8, max_size=8))
def test_whatever_is_lost_on_the_way_stripe_ends_up_with_the_truth_and_no_identifier_twice(truths, lost):
    """Usage only grows; each run decides, sends, and may lose the answer (the revision stays
    'sending'). Stripe keeps the first event per identifier. After a final run without losses, Stripe's
    total is the truth and every identifier it holds was sent for one value only."""
    revisions: list[Revision] = []
    stripe: dict[int, int] = {}  # revision -> value Stripe holds

    def run(truth: int, lose: bool) -> None:
        while True:
            d = decide_report(truth, revisions)
            if not isinstance(d, Send):
                return
            stripe.setdefault(d.revision, d.quantity)  # a duplicate identifier is refused by Stripe
            assert stripe[d.revision] == d.quantity  # never a second value under one identifier
            state = "sending" if lose else "reported"
            if d.resend:
                revisions[-1] = Revision(d.revision, d.quantity, state)
            else:
                revisions.append(Revision(d.revision, d.quantity, state))
            if lose:
                return

    for truth, lose in zip(truths, lost):
        run(truth, lose)
    run(truths[-1], False)
    assert sum(stripe.values()) == truths[-1]
    assert all(r.state == "reported" for r in revisions)


# ---- the plan of a run -----------------------------------------------------------------------------
def test_a_plan_reports_hours_with_usage_oldest_first_and_refuses_those_past_the_window():
    now = H + timedelta(days=40)
    old, recent, idle = H, H + timedelta(days=10), H + timedelta(days=11)
    plan = plan_hours([recent, idle, old, recent + HOUR], {old, recent, recent + HOUR}, now)
    assert plan.to_report == [recent, recent + HOUR]
    assert plan.expired == [old] and plan.empty == [idle]


# ---- reconciliation ---------------------------------------------------------------------------------
def test_no_drift_when_stripe_holds_what_tally_counted():
    d = explain_drift(tally=10, reported=10, stripe=10)
    assert (d.drift, d.unexplained, d.explanation) == (0, 0, "in agreement")


def test_usage_in_hours_past_the_window_is_explained_as_not_reported():
    d = explain_drift(tally=10, reported=7, stripe=7, expired_hours=2)
    assert (d.drift, d.unreported, d.unexplained) == (-3, 3, 0)
    assert "3 not reported to Stripe: 2 hour(s) older than Stripe's 35-day window" in d.explanation


def test_stripe_holding_more_than_tally_reported_is_unexplained_drift():
    d = explain_drift(tally=10, reported=10, stripe=14)
    assert (d.drift, d.unexplained) == (4, 4)
    assert "+4 unexplained" in d.explanation


def test_an_account_without_a_customer_is_explained():
    d = explain_drift(tally=5, reported=0, stripe=None, has_customer=False)
    assert d.drift == -5 and "no Stripe customer" in d.explanation


def test_a_summary_short_of_what_was_sent_within_the_settle_time_is_unsettled_not_drift():
    d = explain_drift(tally=10, reported=10, stripe=7, recent=4)
    assert (d.drift, d.unexplained, d.unsettled) == (0, 0, 3)
    assert "3 sent within the settle time not in Stripe's summary yet" in d.explanation


def test_a_summary_short_by_more_than_the_recent_sends_is_drift_for_the_rest():
    d = explain_drift(tally=10, reported=10, stripe=5, recent=2)
    assert (d.drift, d.unexplained, d.unsettled) == (-3, -3, 2)
    assert "-3 unexplained" in d.explanation


def test_a_settled_summary_short_of_what_was_sent_is_drift():
    d = explain_drift(tally=10, reported=10, stripe=7, recent=0)
    assert (d.drift, d.unexplained, d.unsettled) == (-3, -3, 0)


def test_recent_sends_never_hide_stripe_holding_more_than_tally_reported():
    d = explain_drift(tally=10, reported=10, stripe=12, recent=5)
    assert (d.drift, d.unexplained, d.unsettled) == (2, 2, 0)
