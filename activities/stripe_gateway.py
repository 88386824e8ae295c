"""The one place Tally talks to Stripe (the official SDK over HTTP: real Stripe or the emulator).

Money arrives here as Decimal and leaves as integer cents; nothing Stripe-shaped leaks inward.
Every write takes an explicit idempotency key chosen by the caller from business identities.

Failures are sorted into three kinds the caller can act on:
- ``StripeRejected``: Stripe said no (4xx, e.g. a bad customer). Retrying the same call cannot help.
- ``StripeFailed``: Stripe answered 5xx after the SDK's own retries. Stripe saves such a response under
  the idempotency key, so the same key will keep failing: look the object up, then use a new key.
- ``StripeUnreachable``: no answer (timeout, dropped connection). Stripe may or may not have committed;
  retrying with the SAME key is safe and returns the committed object if there is one.
429s are retried here with the same key after the server's Retry-After (they are never saved).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import stripe

from billing.money import to_cents
from models.settings import Settings


class StripeError(RuntimeError):
    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class StripeRejected(StripeError):
    pass


class StripeFailed(StripeError):
    pass


class StripeUnreachable(StripeError):
    pass


@dataclass(frozen=True)
class LineItem:
    """An invoice line as Stripe should show it: a whole-cent amount with its explanation."""

    line_ref: str  # our invoice_lines.id, stored in Stripe metadata for look-ups
    description: str
    amount: Decimal
    quantity: Decimal
    unit_price: Decimal
    period_start: int
    period_end: int


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


class StripeGateway:
    MAX_429_RETRIES = 8

    def __init__(self, settings: Settings):
        api_key, base = settings.effective_stripe()
        kwargs: dict = {
            "max_network_retries": settings.stripe_max_network_retries,
        }
        if base:
            kwargs["base_addresses"] = {"api": base, "meter_events": base, "connect": base}
        http_client = stripe.RequestsClient(timeout=settings.stripe_timeout_seconds)
        self.client = stripe.StripeClient(api_key, http_client=http_client, **kwargs)
        self.limiter = RateLimiter(settings.stripe_writes_per_second)
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._local = threading.local()

    # ---- plumbing -------------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._calls_lock:
            self.calls[name] += 1
        self._local.n = getattr(self._local, "n", 0) + 1

    def thread_calls(self) -> int:
        """Requests made by the calling thread so far (a push runs on one thread)."""
        return getattr(self._local, "n", 0)

    def _post(self, path: str, *, params: dict, options: dict) -> dict:
        """POST through the SDK's request path (auth, retries, errors) without turning the response
        into StripeObjects: the push reads one or two fields of objects that hold every line."""
        return self.client.raw_request("post", path, **params, **options).data

    def _write(self, op: str, fn, *args, idempotency_key: str, params: dict):
        """Run one write with its key; back off on 429; classify every failure."""
        name = op
        for attempt in range(self.MAX_429_RETRIES + 1):
            self.limiter.acquire()
            self._count(name)
            try:
                return fn(*args, params=params, options={"idempotency_key": idempotency_key})
            except stripe.RateLimitError as err:
                if attempt == self.MAX_429_RETRIES:
                    raise StripeUnreachable(f"{name}: still rate limited after {attempt + 1} tries", 429) from err
                time.sleep(_retry_after_seconds(err, attempt))
            except stripe.IdempotencyError as err:
                # Same key, other parameters: a bug or a changed invoice; never silently re-key.
                raise StripeRejected(f"{name}: {err.user_message or err}", 400) from err
            except (stripe.InvalidRequestError, stripe.CardError, stripe.PermissionError,
                    stripe.AuthenticationError) as err:
                raise StripeRejected(f"{name}: {err.user_message or err}", err.http_status) from err
            except stripe.APIConnectionError as err:
                raise StripeUnreachable(f"{name}: no response from Stripe ({err})") from err
            except stripe.StripeError as err:
                status = err.http_status
                if status == 409:
                    # A concurrent request with this key is still running: outcome unknown.
                    raise StripeUnreachable(f"{name}: concurrent request in flight", 409) from err
                raise StripeFailed(f"{name}: Stripe error {status}: {err.user_message or err}", status) from err
        raise AssertionError("unreachable")

    def _read(self, op: str, fn, *args, params: dict | None = None):
        name = op
        self._count(name)
        for attempt in range(self.MAX_429_RETRIES + 1):
            try:
                return fn(*args, params=params) if params else fn(*args)
            except stripe.RateLimitError as err:
                if attempt == self.MAX_429_RETRIES:
                    raise StripeUnreachable(f"{name}: rate limited", 429) from err
                time.sleep(_retry_after_seconds(err, attempt))
            except stripe.APIConnectionError as err:
                raise StripeUnreachable(f"{name}: no response from Stripe ({err})") from err
            except stripe.InvalidRequestError as err:
                if err.http_status == 404:
                    return None
                raise StripeRejected(f"{name}: {err.user_message or err}", err.http_status) from err
            except stripe.StripeError as err:
                raise StripeFailed(f"{name}: Stripe error {err.http_status}", err.http_status) from err
        raise AssertionError("unreachable")

    # ---- customers ------------------------------------------------------------------------------
    def create_customer(self, account_id: str, email: str | None, idempotency_key: str) -> str:
        params = {"metadata": {"tally_account_id": account_id}, "name": account_id}
        if email:
            params["email"] = email
        obj = self._write("customers.create", self._post, "/v1/customers",
                          idempotency_key=idempotency_key, params=params)
        return obj["id"]

    def find_customer(self, account_id: str) -> str | None:
        res = self._read("customers.search", self.client.v1.customers.search,
                         params={"query": f"metadata['tally_account_id']:'{account_id}'"})
        data = list(res.data) if res else []
        return data[0].id if data else None

    # ---- invoices -------------------------------------------------------------------------------
    def create_invoice(self, customer_id: str, invoice_ref: str, account_id: str, period: str,
                       idempotency_key: str) -> str:
        obj = self._write(
            "invoices.create", self._post, "/v1/invoices",
            idempotency_key=idempotency_key,
            params={
                "customer": customer_id,
                "currency": "usd",
                "auto_advance": False,
                "collection_method": "charge_automatically",
                "pending_invoice_items_behavior": "exclude",
                "description": f"Tally usage {period}",
                "metadata": {"tally_invoice_id": invoice_ref, "tally_account_id": account_id,
                             "tally_period": period},
            },
        )
        return obj["id"]

    def find_invoice(self, customer_id: str, invoice_ref: str) -> str | None:
        """Strongly consistent look-up (list by customer), unlike search, which may lag."""
        starting_after = None
        while True:
            params = {"customer": customer_id, "limit": 100}
            if starting_after:
                params["starting_after"] = starting_after
            page = self._read("invoices.list", self.client.v1.invoices.list, params=params)
            if page is None:
                return None
            for inv in page.data:
                if metadata_of(inv).get("tally_invoice_id") == invoice_ref:
                    return inv.id
            if not page.has_more or not page.data:
                return None
            starting_after = page.data[-1].id

    def add_lines(self, stripe_invoice_id: str, lines: list[LineItem], idempotency_key: str) -> None:
        if len(lines) > 250:
            raise StripeRejected(f"invoice has {len(lines)} lines; Stripe allows at most 250")
        payload = [
            {
                "amount": to_cents(line.amount),
                "description": line.description,
                "period": {"start": line.period_start, "end": line.period_end},
                "metadata": {
                    "tally_line_id": line.line_ref,
                    "quantity": str(line.quantity),
                    "unit_price": str(line.unit_price),
                },
            }
            for line in lines
        ]
        self._write("invoices.add_lines", self._post, f"/v1/invoices/{stripe_invoice_id}/add_lines",
                    idempotency_key=idempotency_key, params={"lines": payload})

    def invoice_line_refs(self, stripe_invoice_id: str) -> set[str]:
        refs: set[str] = set()
        starting_after = None
        while True:
            params = {"limit": 100}
            if starting_after:
                params["starting_after"] = starting_after
            page = self._read("invoices.lines.list", self.client.v1.invoices.line_items.list,
                              stripe_invoice_id, params=params)
            if page is None:
                return refs
            for line in page.data:
                ref = metadata_of(line).get("tally_line_id")
                if ref:
                    refs.add(ref)
            if not page.has_more or not page.data:
                return refs
            starting_after = page.data[-1].id

    def invoice_status(self, stripe_invoice_id: str) -> str | None:
        obj = self._read("invoices.retrieve", self.client.v1.invoices.retrieve, stripe_invoice_id)
        return obj.status if obj else None

    def finalize_invoice(self, stripe_invoice_id: str, idempotency_key: str) -> str:
        obj = self._write("invoices.finalize", self._post, f"/v1/invoices/{stripe_invoice_id}/finalize",
                          idempotency_key=idempotency_key, params={"auto_advance": False})
        return obj["status"]


def metadata_of(obj) -> dict:
    """A Stripe object's metadata as a plain dict (SDK 16's StripeObject has no ``.get``)."""
    meta = getattr(obj, "metadata", None)
    return meta.to_dict() if meta is not None else {}


def _retry_after_seconds(err: stripe.StripeError, attempt: int) -> float:
    headers = getattr(err, "headers", None) or {}
    value = None
    for k, v in dict(headers).items():
        if k.lower() == "retry-after":
            value = v
    try:
        if value is not None:
            return min(float(value), 30.0)
    except ValueError:
        pass
    return min(0.25 * (2**attempt), 8.0)
