"""Stripe webhook events received (``stripe_events``): each recorded once by its id."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.tables import stripe_events


def record_event(conn: Connection, event: dict, outcome: str) -> bool:
    """Record a verified event; False (and one more delivery counted) when it was recorded before."""
    inserted = conn.execute(
        pg_insert(stripe_events)
        .values(id=event["id"], type=event["type"],
                created=datetime.fromtimestamp(int(event.get("created", 0)), tz=timezone.utc),
                livemode=bool(event.get("livemode", False)), payload=event, outcome=outcome)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(stripe_events.c.id)
    ).first()
    if inserted is None:
        conn.execute(update(stripe_events).where(stripe_events.c.id == event["id"])
                     .values(deliveries=stripe_events.c.deliveries + 1))
    return inserted is not None


def events_of_type(conn: Connection, event_type: str, limit: int = 100):
    return conn.execute(select(stripe_events).where(stripe_events.c.type == event_type)
                        .order_by(stripe_events.c.created.desc()).limit(limit)).all()


def dispute_closed_status(conn: Connection, dispute_id: str) -> str | None:
    """The status a recorded ``charge.dispute.closed`` event gave dispute ``dispute_id`` (None when none
    arrived yet): how a ``created`` delivered after its ``closed`` knows the dispute is over."""
    obj = stripe_events.c.payload["data"]["object"]
    return conn.execute(
        select(obj["status"].astext)
        .where(stripe_events.c.type == "charge.dispute.closed", obj["id"].astext == dispute_id)
        .order_by(stripe_events.c.created.desc()).limit(1)
    ).scalar()
