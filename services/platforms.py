"""Platforms that call the API: their keys (shown once, stored as SHA-256 digests) and the accounts
each one reaches."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from repositories import platforms, usage
from services.errors import Conflict, InvalidInput, NotFound
from services.inputs import check_id

KEY_PREFIX = "tk_"


@dataclass(frozen=True)
class Platform:
    id: int
    name: str


def new_api_key() -> str:
    """``tk_`` + 32 random URL-safe characters; shown once, stored only as its hash."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_platform(engine: Engine, name: str) -> str:
    """Create the platform and return its new API key (only its hash is stored)."""
    check_id(name, "name")
    key = new_api_key()
    with engine.begin() as conn:
        if platforms.create_platform(conn, name, hash_key(key)) is None:
            raise Conflict(f"name: a platform named {name!r} exists already "
                           "(its key was shown when it was created; `tally platforms rotate-key` makes a new one)")
    return key


def rotate_key(engine: Engine, name: str) -> str:
    """Replace the platform's key and return the new one (the API forgets the old within 30 s)."""
    key = new_api_key()
    with engine.begin() as conn:
        if not platforms.rotate_platform_key(conn, name, hash_key(key)):
            raise NotFound(f"name: no platform {name!r}")
    return key


def list_platforms(engine: Engine) -> list:
    """(id, name, created_at, accounts) of every platform, by name."""
    with engine.begin() as conn:
        return platforms.list_platforms(conn)


def attach_accounts(engine: Engine, name: str, account_ids: list[str]) -> int:
    """Attach accounts to the platform (its key then reaches them), all or none."""
    with engine.begin() as conn:
        platform = platforms.platform_by_name(conn, name)
        if platform is None:
            raise NotFound(f"name: no platform {name!r}")
        for account_id in account_ids:
            assign_platform(conn, account_id, platform.id)
    return len(account_ids)


def assign_platform(conn: Connection, account_id: str, platform_id: int) -> None:
    """Attach an account to a platform inside the caller's transaction; an account never moves from
    one platform to another."""
    current = platforms.lock_platform_of(conn, account_id)
    if current is None:
        raise NotFound(f"no account {account_id!r}")
    if current.platform_id not in (None, platform_id):
        raise InvalidInput("platform", f"account {account_id!r} belongs to another platform")
    if current.platform_id is None:
        platforms.set_platform(conn, account_id, platform_id)
        usage.adopt_event_ids(conn, account_id, platform_id)


def platform_for_key_hash(engine: Engine, key_hash: str) -> Platform | None:
    """The platform whose key hashes to ``key_hash``, or None (one autocommit read)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        row = platforms.platform_by_key_hash(conn, key_hash)
    return None if row is None else Platform(row.id, row.name)
