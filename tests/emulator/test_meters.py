"""Billing meters and meter events."""

from __future__ import annotations

import os

import pytest
import stripe


@pytest.fixture
def meter(client):
    return client.billing.meters.create(params={
        "display_name": "Tokens", "event_name": "tokens",
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": {"event_payload_key": "value"},
    })


def _event(client, customer, value, identifier=None, timestamp=None, event_name="tokens"):
    params = {"event_name": event_name, "payload": {"stripe_customer_id": customer, "value": str(value)}}
    if identifier:
        params["identifier"] = identifier
    if timestamp is not None:
        params["timestamp"] = timestamp
    return client.billing.meter_events.create(params=params)


def _minute(emu) -> int:
    return int(emu.now()) // 60 * 60


def _settle(emu) -> None:
    """Let the summaries catch up: they lag behind ingestion (STRIPE_EMULATOR_METER_SUMMARY_LAG, on in tests)."""
    emu.advance_clock(emu.state.meter_settings["summary_lag_seconds"] + 1)


def test_duplicate_identifier_is_rejected_and_not_counted(client, emu, meter):
    now = _minute(emu)
    ev = _event(client, "cus_a", 5, identifier="evt-1")
    assert ev.identifier == "evt-1" and ev.event_name == "tokens"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _event(client, "cus_a", 5, identifier="evt-1")
    assert exc.value.http_status == 400
    assert "already exists with identifier evt-1" in exc.value.user_message
    assert exc.value.headers.get("Stripe-Should-Retry") == "false"
    _settle(emu)
    summary = client.billing.meters.event_summaries.list(
        meter.id, params={"customer": "cus_a", "start_time": now - 60, "end_time": now + 60})
    assert summary.data[0].aggregated_value == 5


def test_identifier_can_be_reused_after_24_hours(client, emu, meter):
    _event(client, "cus_a", 1, identifier="evt-2")
    emu.advance_clock(24 * 3600 + 1)
    assert _event(client, "cus_a", 1, identifier="evt-2").identifier == "evt-2"


def test_event_summaries_sum_values_per_customer_within_the_window(client, emu, meter):
    now = _minute(emu)
    _event(client, "cus_a", 10, timestamp=now - 3600)
    _event(client, "cus_a", 32, timestamp=now - 60)
    _event(client, "cus_a", 1000, timestamp=now - 7200)  # before the window
    _event(client, "cus_b", 7, timestamp=now - 60)       # other customer
    _settle(emu)
    res = client.billing.meters.event_summaries.list(
        meter.id, params={"customer": "cus_a", "start_time": now - 3600, "end_time": now + 60})
    assert len(res.data) == 1
    assert res.data[0].aggregated_value == 42 and res.data[0].meter == meter.id


def test_event_timestamps_outside_35_days_past_or_5_minutes_future_are_rejected(client, emu, meter):
    now = int(emu.now())
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _event(client, "cus_a", 1, timestamp=now - 36 * 86400)
    assert exc.value.param == "timestamp"
    with pytest.raises(stripe.InvalidRequestError):
        _event(client, "cus_a", 1, timestamp=now + 600)
    _event(client, "cus_a", 1, timestamp=now + 240)
    _event(client, "cus_a", 1, timestamp=now - 34 * 86400)
    # the window follows the emulator clock
    emu.advance_clock(2 * 86400)
    with pytest.raises(stripe.InvalidRequestError):
        _event(client, "cus_a", 1, timestamp=now - 34 * 86400)
    assert len(emu.state.meter_events) == 2


def test_meters_are_listed_and_event_names_are_unique(client, meter):
    assert [m.id for m in client.billing.meters.list().data] == [meter.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.billing.meters.create(params={"display_name": "again", "event_name": "tokens",
                                             "default_aggregation": {"formula": "sum"}})


def test_meter_event_value_must_be_a_whole_number(client, meter):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _event(client, "cus_a", "1.5")
    assert exc.value.code == "meter_event_invalid_value"


def test_summary_times_must_be_on_minute_boundaries_and_windows_on_hour_or_day_boundaries(client, emu, meter):
    hour = int(emu.now()) // 3600 * 3600
    summaries = client.billing.meters.event_summaries
    for params, bad in (({"start_time": hour + 1, "end_time": hour + 3600}, "start_time"),
                        ({"start_time": hour, "end_time": hour + 61}, "end_time"),
                        ({"start_time": hour + 60, "end_time": hour + 3600, "value_grouping_window": "hour"},
                         "start_time"),
                        ({"start_time": hour, "end_time": hour + 3600, "value_grouping_window": "day"},
                         "end_time" if hour % 86400 == 0 else "start_time")):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            summaries.list(meter.id, params={"customer": "cus_a", **params})
        assert exc.value.param == bad, params
    day = hour // 86400 * 86400
    ok = summaries.list(meter.id, params={"customer": "cus_a", "start_time": day - 86400, "end_time": day + 86400,
                                          "value_grouping_window": "day"})
    assert [s.end_time - s.start_time for s in ok.data] == [86400, 86400]


def test_hourly_summaries_group_events_by_their_timestamp_hour(client, emu, meter):
    hour = int(emu.now()) // 3600 * 3600 - 3 * 3600
    _event(client, "cus_a", 4, timestamp=hour)
    _event(client, "cus_a", 5, timestamp=hour + 3599)
    _event(client, "cus_a", 6, timestamp=hour + 2 * 3600)
    _settle(emu)
    res = client.billing.meters.event_summaries.list(meter.id, params={
        "customer": "cus_a", "start_time": hour, "end_time": hour + 3 * 3600, "value_grouping_window": "hour"})
    assert [(s.start_time - hour, s.aggregated_value) for s in res.data] == [(0, 9), (3600, 0), (7200, 6)]


def test_summaries_lag_behind_ingestion_by_the_configured_lag(client, emu, meter):
    from stripe_emulator.resources.meters import SUMMARY_LAG_ENV, set_summary_lag

    set_summary_lag(emu.state, 300)
    hour = int(emu.now()) // 3600 * 3600 - 3600
    before = emu.now()
    _event(client, "cus_a", 7, timestamp=hour)
    after = emu.now()  # ingested at an instant in [before, after]; the emulator's clock runs with real time
    params = {"customer": "cus_a", "start_time": hour, "end_time": hour + 3600}
    assert client.billing.meters.event_summaries.list(meter.id, params=params).data[0].aggregated_value == 0
    emu.advance_clock(299)
    value = client.billing.meters.event_summaries.list(meter.id, params=params).data[0].aggregated_value
    if emu.now() < before + 300:  # the whole read ran before the earliest instant the event may show
        assert value == 0
    emu.advance_clock(max(0.0, after + 300 - emu.now()) + 1)
    assert client.billing.meters.event_summaries.list(meter.id, params=params).data[0].aggregated_value == 7
    emu.reset()
    # a reset goes back to the environment's lag (tests/conftest.py sets it for every test)
    assert emu.state.meter_settings["summary_lag_seconds"] == float(os.environ[SUMMARY_LAG_ENV])


def test_a_429_on_meter_events_executes_nothing_and_a_lost_response_replays_the_one_event(
        make_client, emu, meter, fast_retries):
    client = make_client(max_network_retries=2)
    emu.add_fault(method="POST", path="/v1/billing/meter_events", kind="rate_limit_429", count=1, retry_after=0)
    with pytest.raises(stripe.RateLimitError):
        _event(client, "cus_a", 3, identifier="e-429")
    assert emu.state.meter_events == []
    emu.add_fault(method="POST", path="/v1/billing/meter_events", kind="drop_after_commit", count=1)
    ev = client.billing.meter_events.create(
        params={"event_name": "tokens", "identifier": "e-lost",
                "payload": {"stripe_customer_id": "cus_a", "value": "3"}},
        options={"idempotency_key": "k-lost"})
    assert ev.identifier == "e-lost"  # the SDK's retry with the same key got the saved response
    assert [e["identifier"] for e in emu.state.meter_events] == ["e-lost"]
