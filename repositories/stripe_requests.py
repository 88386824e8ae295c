"""The ``stripe_requests`` record: every Stripe write with its idempotency key, written before the call.

Functions take a Connection and never commit: the caller owns the transaction boundary.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.tables import stripe_requests


def latest_stripe_request(conn: Connection, subject: str, step: str):
    return conn.execute(
        select(stripe_requests)
        .where(stripe_requests.c.subject == subject, stripe_requests.c.step == step)
        .order_by(stripe_requests.c.attempt.desc())
        .limit(1)
    ).first()


def record_stripe_request(conn: Connection, *, key: str, subject: str, step: str, attempt: int) -> None:
    conn.execute(
        pg_insert(stripe_requests)
        .values(idempotency_key=key, subject=subject, step=step, attempt=attempt, state="started")
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )


def finish_stripe_request(conn: Connection, key: str, *, state: str, stripe_object_id: str | None = None,
                          http_status: int | None = None, error: str | None = None) -> None:
    conn.execute(
        update(stripe_requests)
        .where(stripe_requests.c.idempotency_key == key)
        .values(state=state, stripe_object_id=stripe_object_id, http_status=http_status, error=error,
                finished_at=func.now())
    )


def stripe_requests_for(conn: Connection, subject: str):
    return conn.execute(
        select(stripe_requests).where(stripe_requests.c.subject == subject)
        .order_by(stripe_requests.c.started_at, stripe_requests.c.attempt)
    ).all()
