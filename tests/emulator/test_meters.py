"""Billing meters and meter events."""

from __future__ import annotations


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


def test_duplicate_identifier_is_rejected_and_not_counted(client, emu, meter):
    now = int(emu.now())
    ev = _event(client, "cus_a", 5, identifier="evt-1")
    assert ev.identifier == "evt-1" and ev.event_name == "tokens"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _event(client, "cus_a", 5, identifier="evt-1")
    assert exc.value.http_status == 400
    assert "already exists with identifier evt-1" in exc.value.user_message
    assert exc.value.headers.get("Stripe-Should-Retry") == "false"
    summary = client.billing.meters.event_summaries.list(
        meter.id, params={"customer": "cus_a", "start_time": now - 60, "end_time": now + 60})
    assert summary.data[0].aggregated_value == 5


def test_identifier_can_be_reused_after_24_hours(client, emu, meter):
    _event(client, "cus_a", 1, identifier="evt-2")
    emu.advance_clock(24 * 3600 + 1)
    assert _event(client, "cus_a", 1, identifier="evt-2").identifier == "evt-2"


def test_event_summaries_sum_values_per_customer_within_the_window(client, emu, meter):
    now = int(emu.now())
    _event(client, "cus_a", 10, timestamp=now - 3600)
    _event(client, "cus_a", 32, timestamp=now - 60)
    _event(client, "cus_a", 1000, timestamp=now - 7200)  # before the window
    _event(client, "cus_b", 7, timestamp=now - 60)       # other customer
    res = client.billing.meters.event_summaries.list(
        meter.id, params={"customer": "cus_a", "start_time": now - 3600, "end_time": now + 1})
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
