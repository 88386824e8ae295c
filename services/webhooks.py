"""Stripe webhook deliveries: verified, recorded once by event id, handled by the capabilities that act
on their type (``capabilities.webhook_handlers``), all in one transaction.

Stripe signs each delivery, retries undelivered events for up to three days, may deliver one event
several times and never promises an order. So: a bad signature writes nothing; an event seen before is
only counted; a handler that fails rolls the whole delivery back and answers an error, so Stripe
delivers it again; an event type nobody handles is recorded as ``ignored``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

import capabilities
from gateways.stripe.webhooks import BadSignature, verify_event
from repositories import stripe_events
from services.errors import InvalidInput, ServiceError


class WebhooksNotConfigured(ServiceError):
    """No endpoint secret: every delivery is refused rather than trusted unsigned."""


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    outcome: str  # handled | ignored | duplicate


def receive(engine: Engine, payload: bytes, signature: str | None, secret: str | None, now: datetime) -> Delivery:
    if not secret:
        raise WebhooksNotConfigured("STRIPE_WEBHOOK_SECRET is not set: webhook deliveries are refused")
    try:
        event = verify_event(payload, signature, secret)
    except BadSignature as err:
        field, _, reason = str(err).partition(": ")
        raise InvalidInput(field, reason) from None
    handlers = capabilities.webhook_handlers().get(event["type"], [])
    with engine.begin() as conn:
        if not stripe_events.record_event(conn, event, "handled" if handlers else "ignored"):
            return Delivery(event["id"], event["type"], "duplicate")
        for handle in handlers:
            handle(conn, event, now)
    return Delivery(event["id"], event["type"], "handled" if handlers else "ignored")
