"""Stripe invoices: a draft per Tally invoice (``metadata.tally_invoice_id``), its lines in one
``add_lines`` call (each line carries ``metadata.tally_line_id``), then finalize.

Money arrives here as Decimal and leaves as integer cents; nothing Stripe-shaped leaks inward.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.money import to_cents
from gateways.stripe.core import StripeCore, StripeRejected, metadata_of

MAX_LINES = 250  # Stripe's limit per invoice


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


class Invoices:
    def __init__(self, core: StripeCore):
        self.core = core

    def create(self, customer_id: str, invoice_ref: str, account_id: str, period: str,
               idempotency_key: str) -> str:
        obj = self.core.post(
            "invoices.create", "/v1/invoices",
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

    def find(self, customer_id: str, invoice_ref: str) -> str | None:
        """Strongly consistent look-up (list by customer), unlike search, which may lag."""
        for inv in self.core.each("invoices.list", self.core.client.v1.invoices.list,
                                  params={"customer": customer_id, "limit": 100}):
            if metadata_of(inv).get("tally_invoice_id") == invoice_ref:
                return inv.id
        return None

    def count_for_period(self, period: str) -> int:
        """How many invoices in Stripe carry ``metadata.tally_period`` = period (all customers)."""
        return sum(1 for inv in self.core.each("invoices.list", self.core.client.v1.invoices.list,
                                               params={"limit": 100})
                   if metadata_of(inv).get("tally_period") == period)

    def add_lines(self, stripe_invoice_id: str, lines: list[LineItem], idempotency_key: str) -> None:
        if len(lines) > MAX_LINES:
            raise StripeRejected(f"invoice has {len(lines)} lines; Stripe allows at most {MAX_LINES}")
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
        self.core.post("invoices.add_lines", f"/v1/invoices/{stripe_invoice_id}/add_lines",
                       idempotency_key=idempotency_key, params={"lines": payload})

    def line_refs(self, stripe_invoice_id: str) -> set[str]:
        """The ``tally_line_id`` of every line already on the Stripe invoice."""
        refs = (metadata_of(line).get("tally_line_id")
                for line in self.core.each("invoices.lines.list", self.core.client.v1.invoices.line_items.list,
                                           stripe_invoice_id, params={"limit": 100}))
        return {ref for ref in refs if ref}

    def status(self, stripe_invoice_id: str) -> str | None:
        obj = self.core.get("invoices.retrieve", self.core.client.v1.invoices.retrieve, stripe_invoice_id)
        return obj.status if obj else None

    def finalize(self, stripe_invoice_id: str, idempotency_key: str) -> str:
        obj = self.core.post("invoices.finalize", f"/v1/invoices/{stripe_invoice_id}/finalize",
                             idempotency_key=idempotency_key, params={"auto_advance": False})
        return obj["status"]
