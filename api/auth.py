"""Who is calling: platform API keys (stored as sha256 digests) and signed billing-page links."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from activities import metering

KEY_PREFIX = "tk_"
KEY_CACHE_SECONDS = 30.0  # a rotated key stops working within this time
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def new_api_key() -> str:
    """``tk_`` + 32 random URL-safe characters; shown once, stored only as its hash."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def retry_once_on_lost_connection(fn):
    """Run a read again on a fresh connection when the pooled one turns out dead: the API's pool does
    not ping before each checkout (a round trip on every request)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DBAPIError as err:
            if not err.connection_invalidated:
                raise
        except psycopg.OperationalError:  # raised on the driver connection (the hot read path)
            pass
        return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Platform:
    id: int
    name: str


class PlatformKeys:
    """Resolves bearer keys to platforms, caching hits for ``KEY_CACHE_SECONDS`` (the lookup is on
    every request; the cache keeps it off the database)."""

    def __init__(self, engine: Engine, ttl: float = KEY_CACHE_SECONDS):
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[Platform, float]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> Platform | None:
        """The platform when the key was resolved recently (no database access), else None."""
        hit = self._cache.get(hash_key(key))
        return hit[0] if hit and hit[1] > time.monotonic() else None

    @retry_once_on_lost_connection
    def resolve(self, key: str) -> Platform | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and hit[1] > now:
            return hit[0]
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            row = metering.platform_by_key_hash(conn, digest)
        if row is None:
            return None
        platform = Platform(row.id, row.name)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (platform, now + self.ttl)
        return platform


# ---- billing-page links ---------------------------------------------------------------------------
class BadLink(ValueError):
    pass


def _signature(secret: bytes, account_id: str, expires: int) -> str:
    mac = hmac.new(secret, f"billing-page:{account_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def billing_token(secret: bytes, account_id: str, expires: int) -> str:
    """``EXPIRES.SIGNATURE``: the link opens this account's page until ``expires`` (Unix time)."""
    return f"{expires}.{_signature(secret, account_id, expires)}"


def check_billing_token(secret: bytes, account_id: str, token: str, now: float | None = None) -> None:
    expires_text, _, sig = token.partition(".")
    if not expires_text.isdigit() or not sig or len(expires_text) > 12:
        raise BadLink("token: not a billing link token")
    expires = int(expires_text)
    if not hmac.compare_digest(sig, _signature(secret, account_id, expires)):
        raise BadLink("token: this link is not valid for this account")
    if (now if now is not None else time.time()) >= expires:
        raise BadLink("token: this link has expired; ask for a new one (`tally accounts billing-link`)")


def billing_link(base_url: str, secret: bytes, account_id: str, hours: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + hours * 3600)
    return (f"{base_url.rstrip('/')}/accounts/{quote(account_id, safe='')}/billing"
            f"?token={billing_token(secret, account_id, expires)}")
