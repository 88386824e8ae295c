"""Pushing rated invoices to Stripe: ensure customer, create invoice, add lines, finalize.

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

A chunk's invoices are pushed together (``InvoicePusher.push_many``), stage by stage: every customer
that is missing (and every customer saved or recorded earlier checked against Stripe's metadata),
then every invoice create, every add_lines, every finalize, each stage one ``perform_batch`` (its
keys recorded and committed in one statement before any of its calls; its outcomes in one statement
after). An invoice whose step fails leaves the later stages and resumes
from its records on the next try. The bookkeeping is about 17 commits per chunk, whatever its size
(it was about 19 per invoice pushed one at a time). ``push`` is ``push_many`` of one invoice.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Connection, Engine

from billing.periods import Period
from gateways.stripe import LineItem, StripeError, StripeGateway, StripeRejected
from gateways.stripe.customers import CustomerMismatch
from gateways.stripe.ledger import Step, StripeLedger
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


def customer_step(gateway: StripeGateway, db: Engine | Connection, account_id: str, email: str | None) -> Step:
    """The recorded call ``customer:<account>`` (step ``customer``) that creates the account's customer.
    Its look-up (only after a failure saved under a key, or a key Stripe may have forgotten) lists the
    customers created since the subject's first key was recorded (``db``: where to read it; an Engine
    when the look-up may run on another thread), not Stripe's lagging search."""
    subject = f"customer:{account_id}"

    def lookup() -> str | None:
        # the customer, if any call created it, was created after the first key was recorded
        return gateway.customers.find(account_id, created_since=_first_key_at(db, subject) - CLOCK_SKEW)

    return Step(subject=subject, step="customer", identity=account_id,
                call=lambda key: gateway.customers.create(account_id, email, key), lookup=lookup)


def _asking(s: Step, asked: set[str]) -> Step:
    """``s`` noting its account (its identity) in ``asked`` once it asks Stripe (creates or looks up):
    that answer's metadata is checked by ``gateway.customers``; a customer only recorded is not."""

    def call(key: str) -> str:
        asked.add(s.identity)
        return s.call(key)

    def lookup() -> str | None:
        asked.add(s.identity)
        return s.lookup()

    return replace(s, call=call, lookup=lookup)


def ensure_customer(db: Engine | Connection, gateway: StripeGateway, clock: Callable[[], datetime],
                    account_id: str, email: str | None) -> str:
    """The account's Stripe customer, created once through the recorded call ``customer:<account>``
    (step ``customer``) whoever needs it first: the invoice push or the usage report. ``db`` is an
    Engine or a Connection outside any transaction.

    Whatever way the customer comes back (created now, found by look-up, or recorded by an earlier
    call and reused), its metadata must name ``account_id``: else ``CustomerMismatch`` and nothing is
    saved on the account."""
    asked: set[str] = set()
    s = _asking(customer_step(gateway, db, account_id, email), asked)
    customer_id = StripeLedger(db, clock).perform(subject=s.subject, step=s.step, identity=s.identity,
                                                  call=s.call, lookup=s.lookup)
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


@dataclass
class PushBatch:
    """What ``push_many`` did: an outcome per invoice pushed (or found pushed / with nothing to
    charge), an exception per invoice that was not (InvoiceBusy, InvoiceNotFound, InvoiceRejected,
    CustomerRefused (an InvoiceRejected) or the StripeError a retry may cure)."""

    outcomes: dict[int, PushOutcome] = field(default_factory=dict)
    errors: dict[int, Exception] = field(default_factory=dict)

    @property
    def stripe_calls(self) -> int:
        return sum(o.stripe_calls for o in self.outcomes.values())


class InvoicePusher:
    def __init__(self, engine: Engine, gateway: StripeGateway, clock: Callable[[], datetime] | None = None):
        self.engine = engine
        self.gateway = gateway
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    # ---- the push ---------------------------------------------------------------------------------
    def push(self, invoice_id: int) -> PushOutcome:
        """Push one invoice (ops' retry): ``push_many`` of one, its failure raised."""
        batch = self.push_many([invoice_id], workers=1)
        if invoice_id in batch.errors:
            raise batch.errors[invoice_id]
        return batch.outcomes[invoice_id]

    def push_many(self, invoice_ids: list[int], *, workers: int = 8,
                  on_progress: Callable[[int], None] | None = None) -> PushBatch:
        """Push invoices, ``workers`` Stripe calls at once; ``on_progress(steps done in the stage)``
        about once a second. Uses one database connection, which also holds every invoice's lock;
        an invoice another process holds is reported InvoiceBusy and left alone."""
        names = {i: f"tally-invoice-push:{i}" for i in invoice_ids}
        batch = PushBatch()
        with self.engine.connect() as conn:
            held = locks.try_lock_many(conn, list(names.values()))
            mine = [i for i in invoice_ids if names[i] in held]
            for i in invoice_ids:
                if names[i] not in held:
                    batch.errors[i] = InvoiceBusy(f"invoice {i} is being pushed by another worker")
            try:
                if mine:
                    _Push(self, conn, batch, workers, on_progress).run(mine)
            finally:
                locks.unlock_many(conn, [names[i] for i in mine])
        return batch


class _Push:
    """One ``push_many`` under its locks: the stages and what each invoice has reached."""

    def __init__(self, pusher: InvoicePusher, conn: Connection, batch: PushBatch, workers: int,
                 on_progress: Callable[[int], None] | None):
        self.gateway = pusher.gateway
        self.engine = pusher.engine  # for look-ups on the worker threads (``customer_step``)
        self.conn = conn
        self.ledger = StripeLedger(conn, pusher.clock)  # the lock holder's connection
        self.batch = batch
        self.workers = workers
        self.on_progress = on_progress
        self.calls: dict[int, int] = {}
        self.stopped: dict[int, StripeError] = {}  # invoices out of the later stages
        self._lock = threading.Lock()

    def run(self, ids: list[int]) -> None:
        conn, batch = self.conn, self.batch
        with conn.begin():
            found = invoices.get_invoices(conn, ids)
            accts = accounts.get_accounts(conn, list({inv.account_id for inv in found.values()}))
            todo = []
            for i in ids:
                inv = found.get(i)
                if inv is None:
                    batch.errors[i] = InvoiceNotFound(f"no invoice {i}")
                elif inv.status in ("open", "paid", "void"):
                    batch.outcomes[i] = PushOutcome(i, inv.status, inv.stripe_invoice_id, already_pushed=True)
                elif inv.status == "no_charge":
                    batch.outcomes[i] = PushOutcome(i, inv.status, None, already_pushed=False)
                elif inv.account_id not in accts:
                    batch.errors[i] = InvoiceNotFound(f"no account {inv.account_id!r} for invoice {i}")
                else:
                    todo.append(inv)
            invoices.set_invoice_statuses(conn, [inv.id for inv in todo], "pushing", from_statuses=PUSHABLE_STATUSES)
            lines = invoices.lines_of_invoices(conn, [inv.id for inv in todo])
        if not todo:
            return
        customers = self._customers(todo, accts)
        stripe_ids = self._create(todo, customers)
        self._add_lines(todo, stripe_ids, lines)
        self._finalize(todo, stripe_ids)
        self._finish(todo, stripe_ids)

    # ---- the stages ---------------------------------------------------------------------------------
    def _stage(self, work: list[tuple[int, Step]]) -> list[str | None]:
        """``perform_batch`` of the (invoice, step) pairs; an invoice whose step fails is stopped.
        The Stripe calls each makes are counted on its invoice."""
        steps = [replace(s, call=self._counted(i, s.call), lookup=self._counted(i, s.lookup)) for i, s in work]
        outcomes = self.ledger.perform_batch(steps, workers=self.workers, on_progress=self.on_progress)
        for (i, _), out in zip(work, outcomes):
            if out.error is not None:
                self.stopped.setdefault(i, out.error)
        return [out.object_id for out in outcomes]

    def _counted(self, invoice_id: int, fn: Callable) -> Callable:
        def counted(*args):
            before = self.gateway.thread_calls()
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.calls[invoice_id] = self.calls.get(invoice_id, 0) + self.gateway.thread_calls() - before
        return counted

    def _live(self, todo: list) -> list:
        return [inv for inv in todo if inv.id not in self.stopped]

    def _customers(self, todo: list, accts: dict) -> dict[str, str]:
        """Account id -> Stripe customer, for every invoice's account whose customer names it: the one
        saved on the account (Stripe's copy checked every time, before money lands on it), else the one
        created or found by the recorded call (its answer checked; one only recorded by an earlier call
        checked again). A customer that names another account (``CustomerMismatch``), or a failure,
        stops all the account's invoices; nothing is saved on the account then."""
        first: dict[str, int] = {}  # each account's calls are made (and counted) for one invoice
        for inv in todo:
            first.setdefault(inv.account_id, inv.id)
        saved = {a: accts[a].stripe_customer_id for a in first if accts[a].stripe_customer_id}
        missing = [a for a in first if a not in saved]
        asked: set[str] = set()
        work = [(first[a], _asking(customer_step(self.gateway, self.engine, a, accts[a].email), asked))
                for a in missing]
        made = {a: cid for a, cid in zip(missing, self._stage(work)) if cid}
        unchecked = {**saved, **{a: cid for a, cid in made.items() if a not in asked}}
        self._reads([(first[a], lambda a=a, cid=cid: reuse_customer(self.gateway, a, cid))
                     for a, cid in unchecked.items()])
        made = {a: cid for a, cid in made.items() if first[a] not in self.stopped}
        with self.conn.begin():
            accounts.set_stripe_customers(self.conn, made)
        customers = {a: cid for a, cid in {**saved, **made}.items() if first[a] not in self.stopped}
        for inv in todo:  # the other invoices of an account whose customer failed stop too
            if inv.account_id not in customers and inv.id not in self.stopped:
                self.stopped[inv.id] = self.stopped[first[inv.account_id]]
        return customers

    def _reads(self, work: list[tuple[int, Callable[[], object]]]) -> None:
        """Stripe reads (nothing to record), ``workers`` at once, ``on_progress`` about once a second;
        an invoice whose read fails is stopped."""
        if not work:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(work))),
                                thread_name_prefix="stripe-read") as pool:
            futures = {pool.submit(self._counted(i, fn)): i for i, fn in work}
            pending, done_count = set(futures), 0
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                done_count += len(done)
                if self.on_progress is not None:
                    self.on_progress(done_count)
                for fut in done:
                    err = fut.exception()
                    if isinstance(err, StripeError):
                        self.stopped.setdefault(futures[fut], err)
                    elif err is not None:
                        raise err

    def _create(self, todo: list, customers: dict[str, str]) -> dict[int, str]:
        stripe_ids = {inv.id: inv.stripe_invoice_id for inv in todo if inv.stripe_invoice_id}
        work = []
        for inv in self._live(todo):
            if inv.id in stripe_ids:
                continue
            ref, cid = _identity(inv), customers[inv.account_id]  # ref: also metadata.tally_invoice_id
            work.append((inv.id, Step(
                subject=f"invoice:{inv.id}", step="create", identity=ref,
                call=lambda key, inv=inv, ref=ref, cid=cid: self.gateway.invoices.create(
                    cid, ref, inv.account_id, inv.period, key),
                lookup=lambda ref=ref, cid=cid: self.gateway.invoices.find(cid, ref))))
        made = {i: sid for (i, _), sid in zip(work, self._stage(work)) if sid}
        with self.conn.begin():
            invoices.set_stripe_invoice_ids(self.conn, made)
        stripe_ids.update(made)
        return stripe_ids

    def _add_lines(self, todo: list, stripe_ids: dict[int, str], lines: dict[int, list]) -> None:
        work = []
        for inv in self._live(todo):
            if lines[inv.id]:
                work.append((inv.id, self._add_lines_step(inv, stripe_ids[inv.id], lines[inv.id])))
        self._stage(work)

    def _add_lines_step(self, inv, stripe_invoice_id: str, lines: list) -> Step:
        period = Period.parse(inv.period)
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

        return Step(subject=f"invoice:{inv.id}", step="add_lines", identity=_identity(inv), call=call, lookup=lookup)

    def _finalize(self, todo: list, stripe_ids: dict[int, str]) -> None:
        work = []
        for inv in self._live(todo):
            sid = stripe_ids[inv.id]

            def call(key: str, sid=sid) -> str:
                self.gateway.invoices.finalize(sid, key)
                return sid

            def lookup(sid=sid) -> str | None:
                status = self.gateway.invoices.status(sid)
                return sid if status and status != "draft" else None

            work.append((inv.id, Step(subject=f"invoice:{inv.id}", step="finalize", identity=_identity(inv),
                                      call=call, lookup=lookup)))
        self._stage(work)

    def _finish(self, todo: list, stripe_ids: dict[int, str]) -> None:
        """Every invoice's new status in one transaction: open, push_failed (Stripe refused it, or its
        customer names another account: a retry cannot help; CustomerRefused then) or still pushing
        with the error (a retry resumes it)."""
        done = self._live(todo)
        rejected = [inv for inv in todo if isinstance(self.stopped.get(inv.id), StripeRejected)]
        transient = [inv for inv in todo if inv.id in self.stopped
                     and not isinstance(self.stopped[inv.id], StripeRejected)]
        with self.conn.begin():
            invoices.set_invoice_statuses(self.conn, [inv.id for inv in done], "open", from_statuses=("pushing",),
                                          stripe_invoice_ids=[stripe_ids[inv.id] for inv in done])
            invoices.set_invoice_statuses(self.conn, [inv.id for inv in rejected], "push_failed",
                                          from_statuses=("pushing",),
                                          errors=[str(self.stopped[inv.id]) for inv in rejected])
            invoices.set_invoice_statuses(self.conn, [inv.id for inv in transient], "pushing",
                                          from_statuses=("pushing",),
                                          errors=[str(self.stopped[inv.id]) for inv in transient])
        for inv in done:
            self.batch.outcomes[inv.id] = PushOutcome(inv.id, "open", stripe_ids[inv.id], already_pushed=False,
                                                      stripe_calls=self.calls.get(inv.id, 0))
        for inv in rejected:
            err = self.stopped[inv.id]
            kind = CustomerRefused if isinstance(err, CustomerMismatch) else InvoiceRejected
            failure = kind(f"invoice {inv.id} ({inv.account_id} {inv.period}): {err}")
            failure.__cause__ = err
            self.batch.errors[inv.id] = failure
        for inv in transient:
            self.batch.errors[inv.id] = self.stopped[inv.id]
