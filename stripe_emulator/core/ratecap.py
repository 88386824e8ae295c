"""An optional cap on API writes per second, like Stripe's own rate limiter (live mode about 100
operations/s, test mode about 25/s): a POST beyond the cap is answered 429 ``invalid_request_error``
(``code: rate_limit``, the spec's type) with ``Retry-After``, before the idempotency check, so nothing is
executed or saved under its key.

Off unless set: ``python -m stripe_emulator --write-rate-cap 100`` or ``POST /_emulator/rate_cap
{"writes_per_second": 100}`` (0 or null turns it off). A token bucket holding one second of writes (at least one).
"""

from __future__ import annotations

import threading
import time


class WriteCap:
    def __init__(self, per_second: float):
        if per_second <= 0:
            raise ValueError("writes_per_second must be positive")
        self.per_second = float(per_second)
        self.burst = max(1.0, self.per_second)  # one second of writes, at least one
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()
        self.limited = 0  # writes answered 429 so far

    def admit(self) -> float:
        """0 when the write may go now (a token is taken), else the seconds until a token is free."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            self.limited += 1
            return (1.0 - self._tokens) / self.per_second

    def describe(self) -> dict:
        return {"writes_per_second": self.per_second, "limited": self.limited}
