"""The one place Tally talks to Stripe: the only code that imports the ``stripe`` SDK.

``StripeGateway(settings)`` exposes one object per Stripe resource (``gw.customers``, ``gw.invoices``)
over one shared request path (``core``: back-off, write cap, counting, error kinds, pagination).
Every write takes an explicit idempotency key chosen by the caller from business identities; the
recorded, retry-safe way to make one is ``gateways.stripe.ledger.StripeLedger``.

Adding a resource (meters, transfers, checkout): a new module beside ``invoices.py`` with a class
taking a ``StripeCore``, and one attribute here.
"""

from __future__ import annotations

from gateways.stripe.core import (
    RateLimiter,
    StripeCore,
    StripeError,
    StripeFailed,
    StripeRejected,
    StripeUnreachable,
)
from gateways.stripe.connect import Connect
from gateways.stripe.checkout import Checkout, CheckoutSession
from gateways.stripe.customers import Customers
from gateways.stripe.invoices import Invoices, LineItem
from gateways.stripe.meters import MeterEventDuplicate, Meters, MeterEventTooOld
from models.settings import Settings

__all__ = [
    "CheckoutSession",
    "LineItem",
    "MeterEventDuplicate",
    "MeterEventTooOld",
    "RateLimiter",
    "StripeError",
    "StripeFailed",
    "StripeGateway",
    "StripeRejected",
    "StripeUnreachable",
]


class StripeGateway:
    """Stripe, by resource. One per process is enough: it is safe to share between threads."""

    def __init__(self, settings: Settings):
        self.core = StripeCore(settings)
        self.customers = Customers(self.core)
        self.invoices = Invoices(self.core)
        self.meters = Meters(self.core, settings.meters_events_per_second)
        self.connect = Connect(self.core)
        self.checkout = Checkout(self.core)

    def thread_calls(self) -> int:
        """HTTP requests the calling thread has made to Stripe so far (retries included)."""
        return self.core.thread_calls()
