"""Stripe customers: one per Tally account, found again by ``metadata.tally_account_id``.

Tally never bills a customer it has not seen name the account: every customer it creates, finds or reuses
must carry ``metadata.tally_account_id`` = the account, else ``CustomerMismatch`` (issue 14: an emulator
that handed out one id twice put one account's invoice on another account's customer)."""

from __future__ import annotations

import threading
import time
from typing import Any

from gateways.stripe.core import StripeCore, StripeRejected, metadata_of

ACCOUNT_KEY = "tally_account_id"


class CustomerMismatch(StripeRejected):
    """The Stripe customer's metadata names another account (or none): Tally refuses to use it. No retry
    can fix this; ops must look (runbook: "A Stripe customer names another account")."""

    def __init__(self, customer_id: str, account_id: str, named: str | None):
        super().__init__(
            f"Stripe customer {customer_id} names account {named!r} in metadata.{ACCOUNT_KEY}, not "
            f"{account_id!r}: refusing to use it for {account_id}", 409)
        self.customer_id = customer_id
        self.account_id = account_id
        self.named = named


class Customers:
    def __init__(self, core: StripeCore):
        self.core = core
        self._lock = threading.Lock()
        self._checked: dict[str, tuple[str, float]] = {}  # customer id -> (account, monotonic time checked)

    def create(self, account_id: str, email: str | None, idempotency_key: str) -> str:
        params = {"metadata": {ACCOUNT_KEY: account_id}, "name": account_id}
        if email:
            params["email"] = email
        obj = self.core.post("customers.create", "/v1/customers", params=params,
                             idempotency_key=idempotency_key)
        return self._owned(obj["id"], (obj.get("metadata") or {}).get(ACCOUNT_KEY), account_id)

    def find(self, account_id: str, created_since: int) -> str | None:
        """The account's customer created at or after ``created_since`` (Unix seconds), the oldest if
        there are several, else None. Stripe's search would be shorter but lags behind writes (up to a
        minute, an hour in outages) and may miss a customer created moments ago; a list is strongly
        consistent, and a narrow ``created`` window keeps it short."""
        found = None
        for c in self.core.each("customers.list", self.core.client.v1.customers.list,
                                params={"created": {"gte": int(created_since)}, "limit": 100}):
            if metadata_of(c).get(ACCOUNT_KEY) == account_id:
                found = c.id  # newest first: the last match is the oldest
        return self._owned(found, account_id, account_id) if found else None

    def check_owner(self, customer_id: str, account_id: str, *, max_age: float = 0.0) -> str:
        """``customer_id`` if Stripe's customer names ``account_id`` in its metadata, else
        ``CustomerMismatch`` (also for a deleted or missing customer). With ``max_age`` > 0 a pair
        checked (or created) by this process less than ``max_age`` seconds ago is not asked again."""
        if max_age > 0:
            with self._lock:
                seen = self._checked.get(customer_id)
            if seen is not None and seen[0] == account_id and time.monotonic() - seen[1] < max_age:
                return customer_id
        obj: Any = self.core.get("customers.retrieve", self.core.client.v1.customers.retrieve, customer_id)
        named = None if obj is None or getattr(obj, "deleted", False) else metadata_of(obj).get(ACCOUNT_KEY)
        return self._owned(customer_id, named, account_id)

    def _owned(self, customer_id: str, named: str | None, account_id: str) -> str:
        if named != account_id:
            with self._lock:
                self._checked.pop(customer_id, None)
            raise CustomerMismatch(customer_id, account_id, named)
        with self._lock:
            self._checked[customer_id] = (account_id, time.monotonic())
        return customer_id
