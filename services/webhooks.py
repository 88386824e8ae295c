"""Stripe webhook deliveries: verified, recorded once by event id, handled by the capabilities that act
on their type (``capabilities.webhook_handlers``), all in one transaction.

Stripe signs each delivery, retries undelivered events for up to three days, may deliver one event
several times and never promises an order. So: a bad signature writes nothing; an event seen before is
only counted; a handler that fails rolls the whole delivery back and answers an error, so Stripe
delivers it again; an event type nobody handles is recorded as ``ignored``.

A handler may return ``AfterCommit`` steps (e.g. start the expiry workflow of a grant it created): they run
only once the delivery is committed (``run_after_commit``), best effort, since whatever they start has a
sweep or poll behind it that starts it anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

import capabilities
from gateways.stripe.webhooks import BadSignature, verify_event
from repositories import stripe_events
from services.errors import InvalidInput, ServiceError


class WebhooksNotConfigured(ServiceError):
    """No endpoint secret: every delivery is refused rather than trusted unsigned."""


log = logging.getLogger(__name__)
# Stripe waits about 10 s for an answer: a step that cannot finish sooner is left to the sweep.
AFTER_COMMIT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class AfterCommit:
    """A step a handler asks for once its delivery is committed: ``start(temporal, settings)``."""
    what: str
    start: Callable[..., Awaitable[object]]


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    outcome: str  # handled | ignored | duplicate
    after_commit: tuple[AfterCommit, ...] = field(default=(), compare=False)


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
        after: list[AfterCommit] = []
        for handle in handlers:
            asked = handle(conn, event, now)
            after.extend(asked if isinstance(asked, (list, tuple)) else [asked] if asked is not None else [])
    return Delivery(event["id"], event["type"], "handled" if handlers else "ignored", tuple(after))


async def run_after_commit(delivery: Delivery, temporal, settings) -> list[str]:
    """Run the delivery's ``AfterCommit`` steps; a failing step is logged and skipped (Stripe has its
    answer already: the event is recorded). Returns what failed."""
    failed = []
    for step in delivery.after_commit:
        try:
            await asyncio.wait_for(step.start(temporal, settings), AFTER_COMMIT_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - best effort, named in the log; the sweep/poll catches up
            log.warning("after webhook %s: %s failed (%s); the periodic sweep will do it", delivery.event_id,
                        step.what, err)
            failed.append(step.what)
    return failed
