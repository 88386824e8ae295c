"""Pushing one rated invoice to Stripe: ensure customer, create invoice, add lines, finalize.

Every step is one recorded Stripe call (``gateways.stripe.ledger.StripeLedger``). Guarantees (each proven
by a fault-injection test):
- Every Stripe write is recorded in ``stripe_requests`` with its idempotency key BEFORE the call.
  Keys come from business identity (account, period, step, attempt), never from Temporal run ids.
- A retry after a lost response reuses the key, so Stripe replays the committed object.
- A key that Stripe may have forgotten (older than ~24 h) or under which it saved a failure (a 500) is
  never reused blindly: Tally first looks the object up in Stripe by metadata, and only if it is not
  there mints the next attempt's key.
- The account's Stripe customer, created, found or reused, must name the account in its metadata, else the
  invoice is ``push_failed`` with a ``CustomerMismatch`` error (``Failure.CUSTOMER_MISMATCH``).
- Only one process pushes a given invoice at a time (a Postgres advisory lock held for the push).
So whatever fails and however often the push is retried, each invoice exists once in Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Connection, Engine

from billing.periods import Period
from gateways.stripe import (
    LineItem,
    StripeFailed,
    StripeGateway,
    StripeRejected,
    StripeUnreachable,
)
from gateways.stripe.customers import CustomerMismatch
from gateways.stripe.ledger import StripeLedger
from repositories import accounts, invoices, locks, stripe_requests
from repositories.invoices import PUSHABLE_STATUSES


class InvoiceBusy(RuntimeError):
    """Another process holds this invoice's push lock right now (retry later)."""


class InvoiceNotFound(LookupError):
    """The invoice (or its account) named in the input does not exist."""


class InvoiceRejected(RuntimeError):
    """Stripe refused the invoice for a reason a retry cannot fix; the invoice is marked push_failed."""


class CustomerRefused(InvoiceRejected):
    """The account's Stripe customer names another account (``CustomerMismatch``): the invoice is marked
    push_failed and nothing is billed to that customer."""


@dataclass
class PushOutcome:
    invoice_id: int
    status: str
    stripe_invoice_id: str | None
    already_pushed: bool
    stripe_calls: int = 0


def ensure_customer(db: Engine | Connection, gateway: StripeGateway, clock: Callable[[], datetime],
                    account_id: str, email: str | None) -> str:
    """The account's Stripe customer, created once through the recorded call ``customer:<account>``
    (step ``customer``) whoever needs it first: the invoice push or the usage report. ``db`` is an
    Engine or a Connection outside any transaction (the push's lock holder).

    Whatever way the customer comes back (created now, found by look-up, or recorded by an earlier
    call and reused), its metadata must name ``account_id``: else ``CustomerMismatch`` and nothing is
    saved on the account."""
    asked = []  # the customer came from Stripe just now (created or found): its metadata was checked

    def call(key: str) -> str:
        asked.append(key)
        return gateway.customers.create(account_id, email, key)

    subject = f"customer:{account_id}"

    def lookup() -> str | None:
        # Only after a failure saved under a key, or a key Stripe may have forgotten: the customer, if
        # any call created it, was created after the first key was recorded.
        asked.append("lookup")
        return gateway.customers.find(account_id, created_since=_first_key_at(db, subject) - CLOCK_SKEW)

    customer_id = StripeLedger(db, clock).perform(
        subject=subject, step="customer", identity=account_id, call=call, lookup=lookup)
    if not asked:  # recorded by an earlier call: Stripe's customer may have changed since
        gateway.customers.check_owner(customer_id, account_id)
    if isinstance(db, Engine):
        with db.begin() as conn:
            accounts.set_stripe_customer(conn, account_id, customer_id)
    else:
        with db.begin():
            accounts.set_stripe_customer(db, account_id, customer_id)
    return customer_id


CLOCK_SKEW = 600  # seconds between our clock and Stripe's that a look-up window allows for


def _first_key_at(db: Engine | Connection, subject: str) -> int:
    """When the subject's first Stripe key was recorded (Unix seconds)."""
    if isinstance(db, Engine):
        with db.begin() as conn:
            rows = stripe_requests.stripe_requests_for(conn, subject)
    else:
        with db.begin():
            rows = stripe_requests.stripe_requests_for(db, subject)
    return int(rows[0].started_at.timestamp())


def reuse_customer(gateway: StripeGateway, account_id: str, customer_id: str) -> str:
    """The customer saved on the account, once Stripe's copy still names the account
    (``CustomerMismatch`` otherwise): a reused id is checked every time, before money lands on it."""
    return gateway.customers.check_owner(customer_id, account_id)


def _identity(inv) -> str:
    """An invoice's business identity in Stripe keys: ``<account>:<period>``."""
    return f"{inv.account_id}:{inv.period}"


class InvoicePusher:
    def __init__(self, engine: Engine, gateway: StripeGateway, clock: Callable[[], datetime] | None = None):
        self.engine = engine
        self.gateway = gateway
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def _ledger(self, conn: Connection) -> StripeLedger:
        """Every Stripe write of a push is recorded on the push's own connection (the lock holder)."""
        return StripeLedger(conn, self.clock)

    # ---- the push ---------------------------------------------------------------------------------
    def push(self, invoice_id: int) -> PushOutcome:
        """Push one invoice. Uses exactly one database connection, which also holds the lock."""
        lock = f"tally-invoice-push:{invoice_id}"
        with self.engine.connect() as lock_conn:
            if not locks.try_lock(lock_conn, lock):
                raise InvoiceBusy(f"invoice {invoice_id} is being pushed by another worker")
            before = self.gateway.thread_calls()
            try:
                outcome = self._push_locked(lock_conn, invoice_id)
                outcome.stripe_calls = self.gateway.thread_calls() - before
                return outcome
            finally:
                locks.unlock(lock_conn, lock)

    def _push_locked(self, conn: Connection, invoice_id: int) -> PushOutcome:
        with conn.begin():
            inv = invoices.get_invoice(conn, invoice_id)
            if inv is None:
                raise InvoiceNotFound(f"no invoice {invoice_id}")
            if inv.status in ("open", "paid", "void"):
                return PushOutcome(invoice_id, inv.status, inv.stripe_invoice_id, already_pushed=True)
            if inv.status == "no_charge":
                return PushOutcome(invoice_id, inv.status, None, already_pushed=False)
            invoices.set_invoice_status(conn, invoice_id, "pushing", from_statuses=PUSHABLE_STATUSES)
            account = accounts.get_account(conn, inv.account_id)
            if account is None:
                raise InvoiceNotFound(f"no account {inv.account_id!r} for invoice {invoice_id}")
            lines = invoices.invoice_lines_of(conn, invoice_id)
        period = Period.parse(inv.period)
        try:
            customer_id = (reuse_customer(self.gateway, account.id, account.stripe_customer_id)
                           if account.stripe_customer_id else self._ensure_customer(conn, account))
            stripe_invoice_id = inv.stripe_invoice_id or self._create_invoice(conn, inv, customer_id)
            self._add_lines(conn, inv, stripe_invoice_id, lines, period)
            self._finalize(conn, inv, stripe_invoice_id)
        except StripeRejected as err:
            with conn.begin():
                invoices.set_invoice_status(conn, invoice_id, "push_failed", from_statuses=("pushing",),
                                        error=str(err))
            if isinstance(err, CustomerMismatch):
                raise CustomerRefused(f"invoice {invoice_id} ({inv.account_id} {inv.period}): {err}") from err
            raise InvoiceRejected(f"invoice {invoice_id} ({inv.account_id} {inv.period}): {err}") from err
        except (StripeFailed, StripeUnreachable) as err:
            with conn.begin():
                invoices.set_invoice_status(conn, invoice_id, "pushing", from_statuses=("pushing",),
                                        error=str(err))
            raise
        with conn.begin():
            invoices.set_invoice_status(conn, invoice_id, "open", from_statuses=("pushing",),
                                    stripe_invoice_id=stripe_invoice_id)
        return PushOutcome(invoice_id, "open", stripe_invoice_id, already_pushed=False)

    def _ensure_customer(self, conn: Connection, account) -> str:
        return ensure_customer(conn, self.gateway, self.clock, account.id, account.email)

    def _create_invoice(self, conn: Connection, inv, customer_id: str) -> str:
        ref = _identity(inv)  # also the invoice's metadata.tally_invoice_id, for look-ups
        stripe_invoice_id = self._ledger(conn).perform(
            subject=f"invoice:{inv.id}", step="create", identity=ref,
            call=lambda key: self.gateway.invoices.create(customer_id, ref, inv.account_id, inv.period, key),
            lookup=lambda: self.gateway.invoices.find(customer_id, ref),
        )
        with conn.begin():
            invoices.set_stripe_invoice_id(conn, inv.id, stripe_invoice_id)
        return stripe_invoice_id

    def _add_lines(self, conn: Connection, inv, stripe_invoice_id: str, lines, period: Period) -> None:
        items = [
            LineItem(
                line_ref=str(line.id),
                description=line.description,
                amount=line.amount,
                quantity=line.quantity,
                unit_price=line.unit_price,
                period_start=int(period.start.timestamp()),
                period_end=int(period.end.timestamp()),
            )
            for line in lines
        ]
        wanted = {item.line_ref for item in items}

        def call(key: str) -> str:
            self.gateway.invoices.add_lines(stripe_invoice_id, items, key)
            return stripe_invoice_id

        def lookup() -> str | None:
            present = self.gateway.invoices.line_refs(stripe_invoice_id)
            if wanted <= present:
                return stripe_invoice_id
            if present & wanted:
                raise StripeRejected(
                    f"Stripe invoice {stripe_invoice_id} holds only some of this invoice's lines; "
                    "fix it by hand before retrying"
                )
            return None

        if items:
            self._ledger(conn).perform(subject=f"invoice:{inv.id}", step="add_lines",
                                       identity=_identity(inv), call=call, lookup=lookup)

    def _finalize(self, conn: Connection, inv, stripe_invoice_id: str) -> None:
        def call(key: str) -> str:
            self.gateway.invoices.finalize(stripe_invoice_id, key)
            return stripe_invoice_id

        def lookup() -> str | None:
            status = self.gateway.invoices.status(stripe_invoice_id)
            return stripe_invoice_id if status and status != "draft" else None

        self._ledger(conn).perform(subject=f"invoice:{inv.id}", step="finalize",
                                   identity=_identity(inv), call=call, lookup=lookup)
