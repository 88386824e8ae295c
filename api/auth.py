"""Who is calling: platform API keys, resolved with a cache (keys are stored as SHA-256 digests by
``services.platforms``; billing-page links are signed by ``services.accounts``)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine

from models.db import retry_once_on_lost_connection
from services.platforms import KEY_PREFIX, Platform, hash_key, platform_for_key_hash

KEY_CACHE_SECONDS = 30.0  # a rotated key stops working within this time


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
        platform = platform_for_key_hash(self.engine, digest)
        if platform is None:
            return None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (platform, now + self.ttl)
        return platform
