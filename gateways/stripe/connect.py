"""Stripe Connect: creators' Express accounts, their onboarding links, transfers to them, reversals.

Money arrives as ``Decimal`` dollars and leaves as integer cents here (``to_cents``), nowhere else.
Writes take the caller's idempotency key (``StripeLedger`` records it first). A transfer carries the
payout id as ``transfer_group`` and in ``metadata.tally_payout_id``: Stripe has no search for transfers
and lists them only by ``created``, ``destination`` and ``transfer_group``, so ``find_transfer`` lists
by ``transfer_group`` (what the ledger's look-up asks before a key that Stripe may have forgotten is
replaced by a new one).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateways.stripe.core import StripeCore, metadata_of
from billing.money import to_cents


@dataclass(frozen=True)
class AccountState:
    """What payouts need to know of a connected account (also what ``account.updated`` carries)."""

    account_id: str
    charges_enabled: bool
    payouts_enabled: bool
    details_submitted: bool
    transfers: str  # active | inactive | pending


def account_state(obj) -> AccountState:
    """From an account object (a dict from a webhook, or the SDK's object)."""
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    caps = get("capabilities") or {}
    transfers = caps.get("transfers") if isinstance(caps, dict) else getattr(caps, "transfers", None)
    return AccountState(str(get("id")), bool(get("charges_enabled")), bool(get("payouts_enabled")),
                        bool(get("details_submitted")), transfers or "inactive")


class Connect:
    def __init__(self, core: StripeCore):
        self.core = core

    def create_account(self, creator_id: str, email: str, idempotency_key: str) -> str:
        """An Express account for a creator, asking for the ``transfers`` capability."""
        obj = self.core.post("accounts.create", "/v1/accounts", params={
            "type": "express", "email": email, "capabilities": {"transfers": {"requested": True}},
            "metadata": {"tally_creator_id": creator_id}}, idempotency_key=idempotency_key)
        return obj["id"]

    def find_account(self, creator_id: str) -> str | None:
        """The creator's account by ``metadata.tally_creator_id`` (accounts have no search: a list)."""
        for acct in self.core.each("accounts.list", self.core.client.v1.accounts.list, params={"limit": 100}):
            if metadata_of(acct).get("tally_creator_id") == creator_id:
                return acct.id
        return None

    def retrieve_account(self, account_id: str) -> AccountState | None:
        obj = self.core.get("accounts.retrieve", self.core.client.v1.accounts.retrieve, account_id)
        return account_state(obj) if obj is not None else None

    def onboarding_link(self, account_id: str, refresh_url: str, return_url: str) -> str:
        """A fresh onboarding URL (links expire within minutes; each call makes a new one, no key needed
        for a read-like write that changes nothing in the account)."""
        obj = self.core.client.v1.account_links.create({
            "account": account_id, "type": "account_onboarding", "refresh_url": refresh_url,
            "return_url": return_url})
        return obj.url

    def create_transfer(self, *, payout_id: str, destination: str, amount: Decimal, idempotency_key: str) -> str:
        obj = self.core.post("transfers.create", "/v1/transfers", params={
            "amount": to_cents(amount), "currency": "usd", "destination": destination,
            "transfer_group": payout_id, "description": f"Tally creator payout {payout_id}",
            "metadata": {"tally_payout_id": payout_id}}, idempotency_key=idempotency_key)
        return obj["id"]

    def find_transfer(self, payout_id: str) -> str | None:
        """The transfer of a payout, if Stripe has one: listed by ``transfer_group`` (and checked by
        metadata, in case another system used the same group)."""
        for t in self.core.each("transfers.list", self.core.client.v1.transfers.list,
                                params={"transfer_group": payout_id, "limit": 100}):
            if metadata_of(t).get("tally_payout_id") == payout_id:
                return t.id
        return None

    def reverse_transfer(self, transfer_id: str, amount: Decimal, reason: str, idempotency_key: str) -> str:
        obj = self.core.post("transfers.reverse", f"/v1/transfers/{transfer_id}/reversals", params={
            "amount": to_cents(amount), "metadata": {"tally_reason": reason[:500]}},
            idempotency_key=idempotency_key)
        return obj["id"]
