"""Stripe customers: one per Tally account, found again by ``metadata.tally_account_id``."""

from __future__ import annotations

from gateways.stripe.core import StripeCore


class Customers:
    def __init__(self, core: StripeCore):
        self.core = core

    def create(self, account_id: str, email: str | None, idempotency_key: str) -> str:
        params = {"metadata": {"tally_account_id": account_id}, "name": account_id}
        if email:
            params["email"] = email
        obj = self.core.post("customers.create", "/v1/customers", params=params,
                             idempotency_key=idempotency_key)
        return obj["id"]

    def find(self, account_id: str) -> str | None:
        res = self.core.get("customers.search", self.core.client.v1.customers.search,
                            params={"query": f"metadata['tally_account_id']:'{account_id}'"})
        data = list(res.data) if res else []
        return data[0].id if data else None
