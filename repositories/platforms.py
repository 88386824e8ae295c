"""Platforms that call the API (``platforms``: a name and the SHA-256 of its key) and the accounts
each one reaches."""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.tables import accounts, platforms


def create_platform(conn: Connection, name: str, api_key_hash: str) -> int | None:
    """The new platform's id; None, with nothing written, when the name is taken."""
    return conn.execute(
        pg_insert(platforms).values(name=name, api_key_hash=api_key_hash)
        .on_conflict_do_nothing(index_elements=["name"]).returning(platforms.c.id)
    ).scalar()


def rotate_platform_key(conn: Connection, name: str, api_key_hash: str) -> bool:
    res = conn.execute(update(platforms).where(platforms.c.name == name).values(api_key_hash=api_key_hash))
    return res.rowcount == 1


def platform_by_key_hash(conn: Connection, api_key_hash: str):
    return conn.execute(
        select(platforms.c.id, platforms.c.name).where(platforms.c.api_key_hash == api_key_hash)
    ).first()


def platform_by_name(conn: Connection, name: str):
    return conn.execute(select(platforms.c.id, platforms.c.name).where(platforms.c.name == name)).first()


def list_platforms(conn: Connection):
    counts = (
        select(accounts.c.platform_id, func.count().label("accounts"))
        .group_by(accounts.c.platform_id).subquery()
    )
    return conn.execute(
        select(platforms.c.id, platforms.c.name, platforms.c.created_at,
               func.coalesce(counts.c.accounts, 0).label("accounts"))
        .select_from(platforms.outerjoin(counts, counts.c.platform_id == platforms.c.id))
        .order_by(platforms.c.name)
    ).all()


def lock_platform_of(conn: Connection, account_id: str):
    """The account's platform id (None: not attached), the account row locked; None when there is
    no such account."""
    return conn.execute(
        select(accounts.c.platform_id).where(accounts.c.id == account_id).with_for_update()
    ).first()


def set_platform(conn: Connection, account_id: str, platform_id: int) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(platform_id=platform_id))


def account_of_platform(conn: Connection, account_id: str, platform_id: int):
    """The account row if it belongs to the platform, else None (the caller answers 404)."""
    return conn.execute(
        select(accounts).where(accounts.c.id == account_id, accounts.c.platform_id == platform_id)
    ).first()


_PLATFORM_ACCOUNTS = text(
    "SELECT id FROM accounts WHERE id = ANY(CAST(:ids AS text[])) AND platform_id = :platform_id"
)


def platform_account_ids(conn: Connection, platform_id: int, account_ids: list[str]) -> set[str]:
    """Which of ``account_ids`` exist and belong to the platform."""
    if not account_ids:
        return set()
    return set(conn.execute(_PLATFORM_ACCOUNTS, {"ids": account_ids, "platform_id": platform_id}).scalars())
