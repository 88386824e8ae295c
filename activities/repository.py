"""Stripe request records, and what the invoice push (``activities/push.py``) reads and writes
through this module until the push moves onto the one recorded Stripe call (issue 7). Every other
query lives in ``repositories/``.

Functions take a Connection and never commit: the caller owns the transaction boundary.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.tables import stripe_requests
from repositories import accounts as _accounts
from repositories import invoices as _invoices
from repositories.accounts import set_stripe_customer
from repositories.invoices import PUSHABLE_STATUSES, invoice_lines_of, set_invoice_status, set_stripe_invoice_id

__all__ = ["NotFound", "get_invoice", "get_account", "set_stripe_customer", "PUSHABLE_STATUSES", "invoice_lines_of",
           "set_invoice_status", "set_stripe_invoice_id", "latest_stripe_request", "record_stripe_request",
           "finish_stripe_request", "stripe_requests_for"]


class NotFound(LookupError):
    pass


def get_invoice(conn: Connection, invoice_id: int):
    row = _invoices.get_invoice(conn, invoice_id)
    if row is None:
        raise NotFound(f"no invoice {invoice_id}")
    return row


def get_account(conn: Connection, account_id: str):
    row = _accounts.get_account(conn, account_id)
    if row is None:
        raise NotFound(f"no account {account_id!r}")
    return row


# ---- Stripe request records -------------------------------------------------------------------------
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
