"""The one request path to Stripe (the official SDK over HTTP: real Stripe or the emulator).

Every request, write or read, every page of a list included, goes through ``_Wire``: the client-side
write cap (``RateLimiter``), per-thread counting, and the 429 back-off. A 429 is never saved under an
idempotency key, so it is re-sent in place, byte for byte (same key), after the server's Retry-After.

Failures are sorted into three kinds the caller can act on:
- ``StripeRejected``: Stripe said no (4xx, e.g. a bad customer). Retrying the same call cannot help.
- ``StripeFailed``: Stripe answered 5xx after the SDK's own retries. Stripe saves such a response under
  the idempotency key, so the same key will keep failing: look the object up, then use a new key.
- ``StripeUnreachable``: no answer (timeout, dropped connection, a concurrent request with the key still
  running, still rate limited). Stripe may or may not have committed; retrying with the SAME key is safe
  and returns the committed object if there is one.

Resources (customers, invoices, ...) are small modules beside this one; each takes a ``StripeCore``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Mapping

import stripe

from models.settings import Settings

MAX_429_RETRIES = 8


class StripeError(RuntimeError):
    def __init__(self, message: str, http_status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.code = code  # Stripe's error code when it gave one (``balance_insufficient``, ...)


class StripeRejected(StripeError):
    pass


class StripeFailed(StripeError):
    pass


class StripeUnreachable(StripeError):
    pass


class RateLimiter:
    """Token bucket shared by the threads of one process (0 = unlimited)."""

    def __init__(self, per_second: float):
        self.per_second = per_second
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self) -> None:
        if self.per_second <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.per_second
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


class _Wire(stripe.RequestsClient):
    """The SDK's HTTP client with Tally's three concerns: writes wait for the rate limiter, every
    request is counted on its thread, and a 429 is re-sent (same headers, so the same idempotency key)
    after Retry-After, at most ``MAX_429_RETRIES`` times; then the 429 reaches the SDK, which raises."""

    def __init__(self, limiter: RateLimiter, **kwargs: Any):
        super().__init__(**kwargs)
        self.limiter = limiter
        self._counts = threading.local()

    def thread_calls(self) -> int:
        return getattr(self._counts, "n", 0)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None):
        for attempt in range(MAX_429_RETRIES + 1):
            if method.lower() == "post":
                self.limiter.acquire()
            self._counts.n = self.thread_calls() + 1
            content, status, rheaders = super().request(method, url, headers, post_data)
            if status != 429 or attempt == MAX_429_RETRIES:
                return content, status, rheaders
            time.sleep(retry_after_seconds(rheaders, attempt))
        raise AssertionError("unreachable")


def build_client(settings: Settings, http_client: stripe.HTTPClient | None = None) -> stripe.StripeClient:
    """A StripeClient for the settings' Stripe (real Stripe with STRIPE_API_KEY, else the emulator)."""
    api_key, base = settings.effective_stripe()
    kwargs: dict = {"max_network_retries": settings.stripe_max_network_retries}
    if base:
        kwargs["base_addresses"] = {"api": base, "meter_events": base, "connect": base}
    http_client = http_client or stripe.RequestsClient(timeout=settings.stripe_timeout_seconds)
    return stripe.StripeClient(api_key, http_client=http_client, **kwargs)


class StripeCore:
    """The client and the three ways to use it: ``post`` (a write under a caller's idempotency key),
    ``get`` (one object, None when Stripe has no such object) and ``each`` (every item of a list)."""

    def __init__(self, settings: Settings):
        self._wire = _Wire(RateLimiter(settings.stripe_writes_per_second),
                           timeout=settings.stripe_timeout_seconds)
        self.client = build_client(settings, self._wire)

    def thread_calls(self) -> int:
        """HTTP requests made by the calling thread so far (a push runs on one thread)."""
        return self._wire.thread_calls()

    def post(self, op: str, path: str, *, params: dict, idempotency_key: str) -> dict:
        """POST through the SDK's request path (auth, retries, errors) without turning the response
        into StripeObjects: callers read one or two fields of objects that may hold every line."""
        try:
            return self.client.raw_request("post", path, **params, idempotency_key=idempotency_key).data
        except stripe.StripeError as err:
            raise classify(op, err) from err

    def get(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any | None:
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as err:
            if _is_missing(err):
                return None
            raise classify(op, err) from err

    def each(self, op: str, list_fn: Callable[..., Any], *args: Any, params: dict) -> Iterator[Any]:
        """Every item of a list, page after page (the SDK's ``auto_paging_iter``); nothing when the
        parent object does not exist. Later pages go through the same wire (back-off, counting)."""
        try:
            yield from list_fn(*args, params=params).auto_paging_iter()
        except stripe.StripeError as err:
            if _is_missing(err):
                return
            raise classify(op, err) from err


def classify(op: str, err: stripe.StripeError) -> StripeError:
    """The SDK's error as one of the three kinds above, its message prefixed with the operation."""
    status = err.http_status
    if isinstance(err, stripe.RateLimitError):
        return StripeUnreachable(f"{op}: still rate limited after {MAX_429_RETRIES + 1} tries", 429)
    if isinstance(err, stripe.IdempotencyError):
        # Same key, other parameters: a bug or a changed object; never silently re-key.
        return StripeRejected(f"{op}: {err.user_message or err}", 400)
    if isinstance(err, (stripe.InvalidRequestError, stripe.CardError, stripe.PermissionError,
                        stripe.AuthenticationError)):
        return StripeRejected(f"{op}: {err.user_message or err}", status, getattr(err, "code", None))
    if isinstance(err, stripe.APIConnectionError):
        return StripeUnreachable(f"{op}: no response from Stripe ({err})")
    if status == 409:
        # A concurrent request with this key is still running: outcome unknown.
        return StripeUnreachable(f"{op}: concurrent request in flight", 409)
    return StripeFailed(f"{op}: Stripe error {status}: {err.user_message or err}", status)


def _is_missing(err: stripe.StripeError) -> bool:
    return isinstance(err, stripe.InvalidRequestError) and err.http_status == 404


def metadata_of(obj: Any) -> dict:
    """A Stripe object's metadata as a plain dict (SDK 16's StripeObject has no ``.get``)."""
    meta = getattr(obj, "metadata", None)
    return meta.to_dict() if meta is not None else {}


def retry_after_seconds(headers: Mapping[str, str] | None, attempt: int) -> float:
    """The server's Retry-After (capped at 30 s), else exponential back-off from 0.25 s to 8 s."""
    value = None
    for k, v in dict(headers or {}).items():
        if k.lower() == "retry-after":
            value = v
    try:
        if value is not None:
            return min(float(value), 30.0)
    except ValueError:
        pass
    return min(0.25 * (2**attempt), 8.0)
