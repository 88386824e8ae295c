"""The outbox of customer (and ops) messages, ``notifications``, and its e-mail delivery record.

Whoever has something to tell writes it with ``notify`` in the transaction of its cause; the delivery
(``activities.alerts.AlertsActivities.deliver_notifications``) claims pending rows, writes their
Message-ID before the first send, sends, and marks them sent.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.tables import notifications

AUDIENCES = ("account", "ops")


def notify(conn: Connection, *, account_id: str, kind: str, dedupe_key: str, subject: str, body: str,
           payload: dict, html: str | None = None, audience: str = "account") -> bool:
    """Queue a notification once per dedupe key (a re-run queues nothing new). ``body`` is the plain
    text; ``html`` an optional HTML fragment (else the e-mail's HTML part is made from the text);
    ``audience``: the account's e-mail address, or ops (``TALLY_OPS_EMAIL``)."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience: must be one of {AUDIENCES}, got {audience!r}")
    # RETURNING, not rowcount: SQLAlchemy adds its own RETURNING to a single-row insert, and psycopg
    # then reports a rowcount of -1 (so this used to answer False even for a new row).
    return conn.execute(
        pg_insert(notifications).values(account_id=account_id, kind=kind, dedupe_key=dedupe_key,
                                        subject=subject, body=body, payload=payload, html=html,
                                        audience=audience)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(notifications.c.id)
    ).first() is not None


def notify_notice(conn: Connection, account_id: str, notice, audience: str = "account") -> bool:
    """Queue a ``billing.alerts.Notice`` (text, HTML fragment, figures) once per its dedupe key."""
    return notify(conn, account_id=account_id, kind=notice.kind, dedupe_key=notice.dedupe_key,
                  subject=notice.subject, body=notice.text, payload=notice.payload, html=notice.html_body,
                  audience=audience)


def notify_notices(conn: Connection, notices: list[tuple[str, object]], audience: str = "account") -> list[str]:
    """Queue many ``(account_id, Notice)`` in one statement, each once per its dedupe key; returns the
    dedupe keys queued now (the others were queued before)."""
    if not notices:
        return []
    rows = [dict(account_id=a, kind=n.kind, dedupe_key=n.dedupe_key, subject=n.subject, body=n.text,
                 payload=n.payload, html=n.html_body, audience=audience) for a, n in notices]
    return list(conn.execute(pg_insert(notifications).values(rows)
                             .on_conflict_do_nothing(index_elements=["dedupe_key"])
                             .returning(notifications.c.dedupe_key)).scalars())


def notifications_for(conn: Connection, account_id: str):
    return conn.execute(select(notifications).where(notifications.c.account_id == account_id)
                        .order_by(notifications.c.id)).all()


# ---- delivery ----------------------------------------------------------------------------------------
_CLAIM = text(
    """
    WITH next AS (
        SELECT n.id FROM notifications n
        WHERE n.sent_at IS NULL AND n.failed_at IS NULL AND (n.claimed_until IS NULL OR n.claimed_until < now())
        ORDER BY n.id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE notifications n
    SET message_id = coalesce(n.message_id,
                              '<tally.' || n.id || '.' || substr(md5(n.dedupe_key), 1, 16) || '@' || :domain || '>'),
        attempts = n.attempts + 1,
        claimed_until = now() + CAST(:lease AS interval)
    FROM next, accounts a
    WHERE n.id = next.id AND a.id = n.account_id
    RETURNING n.id, n.account_id, n.kind, n.dedupe_key, n.subject, n.body, n.html, n.payload, n.audience,
              n.message_id, n.attempts, n.created_at, a.email
    """
)


def claim_pending(conn: Connection, *, limit: int, lease: timedelta, domain: str) -> list:
    """Claim up to ``limit`` undelivered notifications (oldest first) for ``lease``: nobody else sends
    them meanwhile; a crash before ``mark_sent`` lets them be claimed again once the lease ends. Each
    gets its Message-ID here, before the first send, from its id and dedupe key; a later attempt keeps
    the one recorded (so a resend carries the same Message-ID, never a new one)."""
    rows = conn.execute(_CLAIM, {"limit": limit, "lease": lease, "domain": domain}).all()
    return sorted(rows, key=lambda r: r.id)


def mark_sent(conn: Connection, notification_id: int, delivered_to: str) -> None:
    conn.execute(text("UPDATE notifications SET sent_at = now(), delivered_to = :to, claimed_until = NULL, "
                      "last_error = NULL WHERE id = :id AND sent_at IS NULL"), {"id": notification_id, "to": delivered_to})


def release(conn: Connection, notification_id: int, error: str) -> None:
    """A transient failure: keep the notification pending (claimable again now) with the reason."""
    conn.execute(text("UPDATE notifications SET claimed_until = NULL, last_error = :err WHERE id = :id"),
                 {"id": notification_id, "err": error[:2000]})


def give_up(conn: Connection, notification_id: int, error: str) -> None:
    """A permanent failure (the server refused the recipient, no address): never attempted again."""
    conn.execute(text("UPDATE notifications SET failed_at = now(), claimed_until = NULL, last_error = :err "
                      "WHERE id = :id AND sent_at IS NULL"), {"id": notification_id, "err": error[:2000]})


def list_notifications(conn: Connection, *, account_id: str | None = None, pending_only: bool = False,
                       limit: int = 100):
    return conn.execute(text(
        """
        SELECT id, account_id, kind, audience, subject, created_at, sent_at, failed_at, attempts, last_error,
               message_id, delivered_to
        FROM notifications
        WHERE (CAST(:a AS text) IS NULL OR account_id = :a)
          AND (NOT :pending OR (sent_at IS NULL AND failed_at IS NULL))
        ORDER BY id DESC LIMIT :limit
        """), {"a": account_id, "pending": pending_only, "limit": limit}).all()


def count_pending(conn: Connection) -> int:
    return conn.execute(text("SELECT count(*) FROM notifications WHERE sent_at IS NULL AND failed_at IS NULL")
                        ).scalar_one()
