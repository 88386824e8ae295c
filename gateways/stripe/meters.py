"""Stripe Billing Meters: the meters Tally reports to, v1 meter events, and event summaries.

- ``create``/``find``: one meter per event name (``sum`` of a whole-number ``value``, the customer in
  ``stripe_customer_id``, pre-aggregated per hour).
- ``report``: one meter event, paced under the worker's meter-event rate (``meters_events_per_second``)
  on top of the core's 429 back-off. A repeated identifier is ``MeterEventDuplicate`` (already reported);
  a timestamp past Stripe's 35-day window is ``MeterEventTooOld``; both are ``StripeRejected``.
- ``summary``: what Stripe aggregated for one customer over ``[start, end)`` (minute-aligned). Summaries
  lag behind ingestion: an event sent seconds ago may not be in them yet.
"""

from __future__ import annotations

from typing import Any

from gateways.stripe.core import RateLimiter, StripeCore, StripeRejected


class MeterEventDuplicate(StripeRejected):
    """Stripe already holds an event with this identifier: it was reported before."""


class MeterEventTooOld(StripeRejected):
    """The event's timestamp is past Stripe's 35-day window: it can never be reported."""


def _sdk_error(err: StripeRejected) -> Any:
    return err.__cause__  # the SDK's error the core classified


def _names_identifier(err: StripeRejected, identifier: str) -> bool:
    """Stripe does not document the duplicate's error code: a 400 that names the identifier parameter,
    or quotes this identifier, is read as "already exists" (STACK-NOTES)."""
    sdk = _sdk_error(err)
    return err.http_status == 400 and (getattr(sdk, "param", None) == "identifier" or identifier in str(err))


class Meters:
    def __init__(self, core: StripeCore, events_per_second: float = 0.0):
        self.core = core
        self.pacer = RateLimiter(events_per_second)

    def create(self, *, event_name: str, display_name: str, key: str, idempotency_key: str) -> str:
        params = {
            "display_name": display_name, "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
            "event_time_window": "hour",
        }
        obj = self.core.post("billing.meters.create", "/v1/billing/meters", params=params,
                             idempotency_key=idempotency_key)
        return obj["id"]

    def find(self, event_name: str) -> str | None:
        """The active meter with this event name (Stripe allows one), or None."""
        for m in self.core.each("billing.meters.list", self.core.client.v1.billing.meters.list,
                                params={"status": "active", "limit": 100}):
            if m.event_name == event_name:
                return m.id
        return None

    def report(self, *, event_name: str, customer_id: str, value: int, identifier: str, timestamp: int,
               idempotency_key: str) -> str:
        """Send one meter event; returns its identifier."""
        self.pacer.acquire()
        params = {"event_name": event_name, "identifier": identifier, "timestamp": timestamp,
                  "payload": {"stripe_customer_id": customer_id, "value": str(value)}}
        try:
            self.core.post("billing.meter_events.create", "/v1/billing/meter_events", params=params,
                           idempotency_key=idempotency_key)
        except StripeRejected as err:
            sdk = _sdk_error(err)
            if getattr(sdk, "code", None) == "timestamp_too_far_in_past":
                raise MeterEventTooOld(str(err), err.http_status) from sdk
            if _names_identifier(err, identifier):
                raise MeterEventDuplicate(str(err), err.http_status) from sdk
            raise
        return identifier

    def summary(self, meter_id: str, customer_id: str, start: int, end: int) -> int:
        """Stripe's aggregated value for the customer over ``[start, end)``."""
        total = 0.0
        for s in self.core.each("billing.meters.event_summaries.list",
                                self.core.client.v1.billing.meters.event_summaries.list, meter_id,
                                params={"customer": customer_id, "start_time": start, "end_time": end,
                                        "limit": 100}):
            total += float(s.aggregated_value)
        return int(round(total))
