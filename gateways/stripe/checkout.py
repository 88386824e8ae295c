"""Stripe Checkout Sessions (mode ``payment``): how a customer pays for a credit package.

A session carries ``client_reference_id`` and ``metadata.tally_purchase_id`` = the purchase id, so the
payment webhook and the poll find the purchase, and a look-up after a lost response finds the session.
Money becomes integer cents here and nowhere earlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.money import to_cents
from gateways.stripe.core import StripeCore, metadata_of


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str | None
    status: str  # open | complete | expired
    payment_status: str  # unpaid | paid | no_payment_required
    purchase_id: str | None
    payment_intent: str | None


def session_of(obj) -> CheckoutSession:
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    meta = obj.get("metadata") or {} if isinstance(obj, dict) else metadata_of(obj)
    return CheckoutSession(id=get("id"), url=get("url"), status=get("status"), payment_status=get("payment_status"),
                           purchase_id=meta.get("tally_purchase_id") or get("client_reference_id"),
                           payment_intent=get("payment_intent"))


class Checkout:
    def __init__(self, core: StripeCore):
        self.core = core

    def create_session(self, *, purchase_id: str, account_id: str, description: str, price: Decimal,
                       success_url: str, cancel_url: str, customer: str | None, idempotency_key: str) -> CheckoutSession:
        params = {
            "mode": "payment",
            "client_reference_id": purchase_id,
            "line_items": [{"quantity": 1, "price_data": {
                "currency": "usd", "unit_amount": to_cents(price), "product_data": {"name": description}}}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": {"tally_purchase_id": purchase_id, "tally_account_id": account_id},
            "payment_intent_data": {"metadata": {"tally_purchase_id": purchase_id}},
        }
        if customer:
            params["customer"] = customer
        return session_of(self.core.post("checkout.sessions.create", "/v1/checkout/sessions", params=params,
                                         idempotency_key=idempotency_key))

    def retrieve(self, session_id: str) -> CheckoutSession | None:
        obj = self.core.get("checkout.sessions.retrieve", self.core.client.v1.checkout.sessions.retrieve, session_id)
        return None if obj is None else session_of(obj)

    def find(self, purchase_id: str, created_after: int) -> CheckoutSession | None:
        """The session created for ``purchase_id`` (by metadata), looking at sessions created since
        ``created_after`` (Unix seconds): Checkout has no metadata search."""
        for obj in self.core.each("checkout.sessions.list", self.core.client.v1.checkout.sessions.list,
                                  params={"limit": 100, "created": {"gte": created_after}}):
            if metadata_of(obj).get("tally_purchase_id") == purchase_id:
                return session_of(obj)
        return None
