"""Session-level advisory locks: one process at a time works on a business object (an invoice push,
a payout). The lock belongs to the connection that took it; the caller keeps that connection for the
whole piece of work and releases the lock on it."""

from __future__ import annotations

from sqlalchemy import Connection, text


def try_lock(conn: Connection, name: str) -> bool:
    """Take the lock named ``name`` if free (never waits); commits so no transaction stays open."""
    got = conn.execute(text("SELECT pg_try_advisory_lock(hashtextextended(:name, 0))"), {"name": name}).scalar()
    conn.commit()
    return bool(got)


def unlock(conn: Connection, name: str) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:name, 0))"), {"name": name})
    conn.commit()
