"""The outbox of customer messages (``notifications``); delivery comes with the alerts work."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.tables import notifications


def notify(conn: Connection, *, account_id: str, kind: str, dedupe_key: str, subject: str, body: str,
           payload: dict) -> bool:
    """Queue a customer notification once per dedupe key (a re-run queues nothing new)."""
    res = conn.execute(
        pg_insert(notifications).values(account_id=account_id, kind=kind, dedupe_key=dedupe_key,
                                        subject=subject, body=body, payload=payload)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    return res.rowcount == 1


def notifications_for(conn: Connection, account_id: str):
    return conn.execute(select(notifications).where(notifications.c.account_id == account_id)
                        .order_by(notifications.c.id)).all()
