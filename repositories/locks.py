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


# ---- many at once (a chunk's invoice pushes) -------------------------------------------------------------
def try_lock_many(conn: Connection, names: list[str]) -> set[str]:
    """Take every free lock of ``names`` in one statement (never waits); commits. The names taken."""
    if not names:
        return set()
    rows = conn.execute(text(
        "SELECT n FROM unnest(CAST(:names AS text[])) AS x(n) WHERE pg_try_advisory_lock(hashtextextended(n, 0))"
    ), {"names": list(names)}).scalars().all()
    conn.commit()
    return set(rows)


def unlock_many(conn: Connection, names: list[str]) -> None:
    if names:
        conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(n, 0)) FROM unnest(CAST(:names AS text[])) AS x(n)"),
                     {"names": list(names)})
    conn.commit()
