"""The ``stripe_requests`` record: every Stripe write with its idempotency key, written before the call.

Functions take a Connection and never commit: the caller owns the transaction boundary.
"""

from __future__ import annotations

from sqlalchemy import ARRAY, Connection, String, any_, func, literal, select, text, update
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


# ---- the same, for a batch of steps (``StripeLedger.perform_batch``) -----------------------------------
def latest_stripe_requests(conn: Connection, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], object]:
    """(subject, step) -> its latest record, for every pair that has one (one statement)."""
    if not pairs:
        return {}
    subjects = sorted({p[0] for p in pairs})
    rows = conn.execute(
        select(stripe_requests)
        .where(stripe_requests.c.subject == any_(literal(subjects, ARRAY(String))))
        .order_by(stripe_requests.c.subject, stripe_requests.c.step, stripe_requests.c.attempt)
    )
    keep = set(pairs)
    return {(r.subject, r.step): r for r in rows if (r.subject, r.step) in keep}  # the last attempt wins


def record_stripe_requests(conn: Connection, rows: list[dict]) -> None:
    """``key, subject, step, attempt`` for each, as 'started' (one statement)."""
    if rows:
        conn.execute(
            text("INSERT INTO stripe_requests (idempotency_key, subject, step, attempt, state) "
                 "SELECT k, s, t, a, 'started' FROM unnest(CAST(:k AS text[]), CAST(:s AS text[]), "
                 "CAST(:t AS text[]), CAST(:a AS int[])) AS x(k, s, t, a) ON CONFLICT (idempotency_key) DO NOTHING"),
            {"k": [r["key"] for r in rows], "s": [r["subject"] for r in rows], "t": [r["step"] for r in rows],
             "a": [r["attempt"] for r in rows]})


def finish_stripe_requests(conn: Connection, outcomes: list[dict]) -> None:
    """``key, state, stripe_object_id, http_status, error`` for each (one statement)."""
    if not outcomes:
        return
    conn.execute(
        text("UPDATE stripe_requests AS r SET state = o.state, stripe_object_id = o.object_id, "
             "http_status = o.http_status, error = o.error, finished_at = now() "
             "FROM (SELECT unnest(CAST(:k AS text[])) AS key, unnest(CAST(:s AS text[])) AS state, "
             "unnest(CAST(:o AS text[])) AS object_id, unnest(CAST(:h AS int[])) AS http_status, "
             "unnest(CAST(:e AS text[])) AS error) AS o WHERE r.idempotency_key = o.key"),
        {"k": [o["key"] for o in outcomes], "s": [o["state"] for o in outcomes],
         "o": [o.get("stripe_object_id") for o in outcomes], "h": [o.get("http_status") for o in outcomes],
         "e": [o.get("error") for o in outcomes]})
