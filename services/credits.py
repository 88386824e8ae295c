"""Prepaid credits: buying a package, the grant a payment creates (once), consumption as executions
arrive, what the entitlement check asks, the usd balance at close, expiry, and ops' grants.

Each operation LOADS through ``repositories.credits``, DECIDES with ``billing.credits`` and WRITES
through the repository, in one transaction holding the account's credits lock
(``repositories.credits.lock_account``), so every rule sees the account's whole ledger and two writers
never book the same credits twice: a balance never goes negative, whatever runs concurrently.

How a purchase becomes a grant (exactly once):
1. ``buy``: the purchase is recorded ``pending`` (committed), then a Stripe Checkout Session is created
   through the recorded call (``StripeLedger``, subject ``credit-purchase:<id>``, key
   ``tally:<purchase id>:checkout:a1``); the buyer pays on Stripe's page.
2. Stripe's signed webhook (``checkout.session.completed`` with ``payment_status`` ``paid``, or
   ``checkout.session.async_payment_succeeded``) calls ``settle_paid``; a failed or expired payment
   (``checkout.session.async_payment_failed``, ``checkout.session.expired``) settles the purchase
   without a grant. Each handler acts on the state the event names, so duplicates and any order are
   harmless: only a pending purchase moves, and the grant id is ``grant-<purchase id>``. Once the
   delivery commits, the API starts the grant's expiry workflow (``AfterCommit``; if Temporal cannot be
   reached then, the daily sweep starts it).
3. The poll (``poll_pending``, schedule ``credit-purchases-poll``) asks Stripe about purchases still
   pending after ``TALLY_CREDITS_PENDING_MINUTES``: webhooks can be down for days.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from sqlalchemy import Connection, Engine

from billing import credits as rules
from billing.catalog import Catalog, CatalogError
from billing.credits import CreditCharge, CreditsError, Grant, Unit
from billing.entitlements import Reason
from billing.money import ZERO
from billing.periods import Period
from billing.rating import pooled_included
from models.schemas import RecordedUsage
from repositories import accounts as account_rows
from repositories import credits as repo
from repositories import notifications
from services.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger("tally.credits")

CHECKOUT_SUBJECT = "credit-purchase:{}"
MAX_OPS_CREDITS = 10_000_000
MAX_OPS_USD = Decimal("100000.00")


class AccountNotFound(NotFound):
    def __init__(self, account_id: str):
        super().__init__(f"no account {account_id!r}")


class GrantNotFound(NotFound):
    def __init__(self, grant_id: str):
        super().__init__(f"no credit grant {grant_id!r}")


def grant_workflow_id(grant_id: str) -> str:
    return f"credit-grant-{grant_id}"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _require_account(conn: Connection, account_id: str):
    account = account_rows.get_account(conn, account_id)
    if account is None:
        raise AccountNotFound(account_id)
    return account


# ---- buying -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PurchaseStarted:
    purchase_id: str
    account_id: str
    package: str
    unit: str
    amount: Decimal
    price: Decimal
    status: str
    checkout_session_id: str
    checkout_url: str | None


def buy(engine: Engine, catalog: Catalog, gateway, *, account_id: str, package: str, now: datetime,
        success_url: str, cancel_url: str, purchase_id: str | None = None) -> PurchaseStarted:
    """Record a pending purchase of ``package`` and create its Stripe Checkout Session (recorded call).

    ``purchase_id``: given by a caller retrying the same purchase (the API's Idempotency-Key); a new one
    otherwise. Safe to call again with the same id: the same session comes back, nothing is charged twice.
    Nothing is granted here: only a payment Stripe confirms grants (``settle_paid``).
    """
    from gateways.stripe.ledger import StripeLedger

    try:
        pkg = catalog.at(now).credit_package(package)
    except CatalogError as err:
        raise InvalidInput.of(err, "package") from None
    purchase_id = purchase_id or f"cp_{uuid.uuid4().hex[:20]}"
    with engine.begin() as conn:
        account = _require_account(conn, account_id)
        existing = repo.get_purchase(conn, purchase_id)
        if existing is None:
            repo.insert_purchase(conn, purchase_id=purchase_id, account_id=account_id, package=pkg.code,
                                 catalog_version=catalog.at(now).version, unit=pkg.unit, amount=pkg.amount,
                                 price=pkg.price, created_at=now)
        elif existing.account_id != account_id or existing.package != pkg.code:
            raise Conflict(f"purchase {purchase_id} is for {existing.account_id}, package {existing.package}")
        repo.ensure_credit_account(conn, account_id)
    created_after = int(now.timestamp()) - 60
    found: dict = {}

    def call(key: str) -> str:
        s = gateway.checkout.create_session(
            purchase_id=purchase_id, account_id=account_id, description=f"{pkg.name} — Tally prepaid credits",
            price=pkg.price, success_url=success_url, cancel_url=cancel_url,
            customer=account.stripe_customer_id, idempotency_key=key)
        found["session"] = s
        return s.id

    def lookup() -> str | None:
        s = gateway.checkout.find(purchase_id, created_after)
        if s is not None:
            found["session"] = s
        return s.id if s else None

    session_id = StripeLedger(engine).perform(subject=CHECKOUT_SUBJECT.format(purchase_id), step="checkout",
                                              identity=purchase_id, call=call, lookup=lookup)
    session = found.get("session") or gateway.checkout.retrieve(session_id)
    with engine.begin() as conn:
        repo.set_checkout_session(conn, purchase_id, session_id, session.url if session else None)
        p = repo.get_purchase(conn, purchase_id)
    return PurchaseStarted(p.id, p.account_id, p.package, p.unit, p.amount, p.price, p.status, session_id,
                           p.checkout_url)


# ---- payment outcomes (webhooks and the poll) ----------------------------------------------------------
def settle_paid(conn: Connection, catalog: Catalog, purchase_id: str, paid_at: datetime, detail: str | None) -> str | None:
    """The payment for ``purchase_id`` succeeded: grant its package, once. Returns the new grant id, or
    None when the purchase was already settled (a replay) or is unknown (not ours)."""
    purchase = repo.get_purchase(conn, purchase_id, for_update=True)
    if purchase is None or purchase.status != "pending":
        return None
    repo.lock_account(conn, purchase.account_id)
    version = catalog.version(purchase.catalog_version)
    pkg = version.credit_package(purchase.package)
    grant = rules.purchase_grant(pkg, account_id=purchase.account_id, purchase_id=purchase.id, paid_at=paid_at,
                                 expiry_months=version.credits.expiry_months)
    repo.settle_purchase(conn, purchase_id, "paid", paid_at, detail)
    repo.ensure_credit_account(conn, purchase.account_id)
    if repo.insert_grant(conn, grant, purchase_id=purchase.id):
        repo.append_entries(conn, [rules.grant_entry(grant)])
    return grant.id


def settle_unpaid(conn: Connection, purchase_id: str, status: str, at: datetime, detail: str) -> bool:
    """The payment failed or the session expired: the purchase is settled without a grant (once)."""
    purchase = repo.get_purchase(conn, purchase_id, for_update=True)
    if purchase is None or purchase.status != "pending":
        return False
    return repo.settle_purchase(conn, purchase_id, status, at, detail)


def _session_of_event(event: dict) -> dict:
    return (event.get("data") or {}).get("object") or {}


def _purchase_of(session: dict) -> str | None:
    return (session.get("metadata") or {}).get("tally_purchase_id") or session.get("client_reference_id")


def _event_time(event: dict, now: datetime) -> datetime:
    """When the grant starts: when Tally learned of the payment (the webhook's receipt or the poll), on
    Tally's clock, so a grant is never dated before Tally could know of it (``event.created`` is kept
    in the recorded event)."""
    return now


def _catalog() -> Catalog:
    from billing.catalog import load_catalog
    from models.settings import get_settings

    return load_catalog(get_settings().catalog_path)


def _watch_grant(conn: Connection, grant_id: str | None):
    """Once the delivery that created ``grant_id`` commits, start its expiry workflow (else the next poll
    or the daily sweep does)."""
    from services.webhooks import AfterCommit

    grant = repo.get_grant(conn, grant_id) if grant_id else None
    if grant is None:
        return None
    return AfterCommit(f"start {grant_workflow_id(grant.id)}",
                       lambda temporal, settings: start_grant_workflow(temporal, settings, grant.id, grant.account_id))


def on_checkout_completed(conn: Connection, event: dict, now: datetime):
    """``checkout.session.completed``: paid now (card), or ``unpaid`` for a delayed method (the
    ``async_payment_*`` event settles it later)."""
    session = _session_of_event(event)
    purchase_id = _purchase_of(session)
    if purchase_id and session.get("payment_status") in ("paid", "no_payment_required"):
        return _watch_grant(conn, settle_paid(conn, _catalog(), purchase_id, _event_time(event, now),
                                              session.get("payment_intent")))
    return None


def on_async_payment_succeeded(conn: Connection, event: dict, now: datetime):
    session = _session_of_event(event)
    purchase_id = _purchase_of(session)
    if purchase_id:
        return _watch_grant(conn, settle_paid(conn, _catalog(), purchase_id, _event_time(event, now),
                                              session.get("payment_intent")))
    return None


def on_async_payment_failed(conn: Connection, event: dict, now: datetime) -> None:
    purchase_id = _purchase_of(_session_of_event(event))
    if purchase_id:
        settle_unpaid(conn, purchase_id, "failed", _event_time(event, now), "payment failed")


def on_checkout_expired(conn: Connection, event: dict, now: datetime) -> None:
    purchase_id = _purchase_of(_session_of_event(event))
    if purchase_id:
        settle_unpaid(conn, purchase_id, "expired", _event_time(event, now), "checkout session expired")




@dataclass(frozen=True)
class PollResult:
    checked: int
    granted: list[str]
    failed: int


def poll_pending(engine: Engine, catalog: Catalog, gateway, now: datetime, pending_minutes: int,
                 limit: int = 500) -> PollResult:
    """Ask Stripe about each purchase pending for more than ``pending_minutes``: a paid session grants
    (exactly as its webhook would have: whichever comes first wins, the other finds it settled), an
    expired one settles without a grant, an open or unpaid one stays pending."""
    with engine.begin() as conn:
        pending = repo.pending_purchases(conn, now - timedelta(minutes=pending_minutes), limit)
    granted, failed = [], 0
    for p in pending:
        if not p.stripe_session_id:
            continue  # its checkout call never finished: the buyer never saw a page to pay on
        session = gateway.checkout.retrieve(p.stripe_session_id)
        if session is None:
            continue
        with engine.begin() as conn:
            if session.payment_status in ("paid", "no_payment_required"):
                gid = settle_paid(conn, catalog, p.id, now, session.payment_intent)
                if gid:
                    granted.append(gid)
            elif session.status == "expired":
                failed += settle_unpaid(conn, p.id, "expired", now, "checkout session expired (poll)")
    return PollResult(len(pending), granted, failed)


# ---- consumption as executions arrive ------------------------------------------------------------------
_TERMS_CACHE: dict[tuple, tuple[int | None, float]] = {}
TERMS_CACHE_SECONDS = 60.0


def _quotas(conn: Connection, catalog: Catalog, accounts: list, period: Period) -> dict[str, int | None]:
    """Each plan account's pooled included quota for the period (None: not billed in the period, so
    nothing is charged and credits pay for nothing), cached briefly per account row version; the
    misses are loaded in one query."""
    from activities import pricing

    now = time.monotonic()
    out: dict[str, int | None] = {}
    missing = []
    for a in accounts:
        hit = _TERMS_CACHE.get((a.id, str(period), a.updated_at))
        if hit and hit[1] > now:
            out[a.id] = hit[0]
        else:
            missing.append(a)
    if missing:
        segments = pricing.terms_segments(conn, [a.id for a in missing], period)
        if len(_TERMS_CACHE) > 50_000:
            _TERMS_CACHE.clear()
        for a in missing:
            segs = segments.get(a.id)
            out[a.id] = pooled_included(catalog, period.start, period.end, segs) if segs else None
            _TERMS_CACHE[(a.id, str(period), a.updated_at)] = (out[a.id], now + TERMS_CACHE_SECONDS)
    return out


# Open transactions are accounted for exactly (booking_starts); the margin covers the instant between a
# transaction taking its start time and pg_stat_activity showing it, and small clock adjustments. Every
# booking re-reads and re-probes this much of its holders' rows: 1 s cost a busy platform ~10x the new rows.
BOOKING_MARGIN = timedelta(milliseconds=100)
BOOKING_PAGE = 5000
RECENT_READ = timedelta(seconds=30)  # booked this recently: read the platform's rows since, not the account's


def book_consumption(conn: Connection, catalog: Catalog, account_id: str, credits_only: bool, now: datetime,
                     grace_hours: int, *, full: bool = False) -> int:
    """``book_consumptions`` for one account."""
    return book_consumptions(conn, catalog, {account_id: credits_only}, now, grace_hours, full=full)


def book_consumptions(conn: Connection, catalog: Catalog, holders: dict[str, bool], now: datetime,
                      grace_hours: int, *, full: bool = False) -> int:
    """Book every execution of these accounts (id -> credits_only) not decided on yet, in time order,
    from the grants that were valid when each occurred (``billing.credits.consume_from_remainders``).
    Call it in a transaction: it takes the accounts' credits locks (in id order). Idempotent (decided
    executions are recorded in ``credit_bookings``); catches up whatever an earlier failure left.
    Returns the entries written. A whole batch's accounts take a handful of statements, not a handful
    per account.

    Only executions ingested since an account's last booking (precisely: since the oldest transaction
    that was still open then, whose rows it could not see) are read, each account from its own, so a
    batch costs what it brings, not the month (docs/decisions.md, "What a booking reads"); ``full``
    reads every execution the grants could pay for (the expiry does, before it expires).
    """
    ids = sorted(holders)
    if not ids:
        return 0
    repo.lock_accounts(conn, ids)
    read_at, through = repo.booking_starts(conn, ids)
    held = repo.remainders_of(conn, ids, Unit.credits)
    current = Period.of(now)
    periods = [p for p in (current.previous(), current) if p == current or p.closes_at(grace_hours) > now]
    windows, plans = [], {}
    for account_id in ids:
        grants = [g for g, _ in held.get(account_id, [])]
        if not grants:
            continue
        since = min(g.granted_at for g in grants)
        until = min(max(g.expires_at for g in grants), now + timedelta(minutes=5))
        b = through.get(account_id)
        fresh = b - BOOKING_MARGIN if b is not None and not full else None
        for period in periods:
            start, end = max(period.start, since), min(period.end, until)
            if start < end:
                windows.append((account_id, period, start, end, fresh))
    written = 0
    remainders = {g.id: left for pairs in held.values() for g, left in pairs}
    # Accounts booked in the last RECENT_READ: what was ingested since each one's own last booking, all of
    # them in one read of the last seconds' rows. The others (never booked, booked long ago, or ``full``)
    # page through their own executions (the account index), so one quiet account never makes a batch
    # read everything the platform ingested since it last had a booking.
    recent_since = {w[0]: w[4] for w in windows if w[4] is not None and w[4] >= read_at - RECENT_READ}
    recent = repo.unbooked_recent(conn, recent_since)
    while windows:
        paged = [w for w in windows if w[0] not in recent_since]
        fetched = iter(repo.unbooked_many(conn, [(w[0], w[2], w[3], w[4]) for w in paged], BOOKING_PAGE))
        found = [[r for r in recent.get(w[0], []) if w[2] <= r.occurred_at < w[3]] if w[0] in recent_since
                 else next(fetched) for w in windows]
        busy = [(w, rows) for w, rows in zip(windows, found) if rows]
        on_plans = sorted({w[0] for w, _ in busy if not holders[w[0]]} - set(plans))
        if on_plans:
            plans.update({a.id: a for a in repo.account_rows(conn, on_plans)})
        quota: dict[tuple[str, str], int | None] = {}
        counts: dict[str, dict[str, int]] = {}
        for period in periods:
            ids_p = sorted({w[0] for w, _ in busy if w[1] == period and not holders[w[0]]})
            if ids_p:
                for a, q in _quotas(conn, catalog, [plans[a] for a in ids_p], period).items():
                    quota[(a, str(period))] = q
                counts[str(period)] = repo.non_sandbox_counts(
                    conn, [a for a in ids_p if quota[(a, str(period))]], str(period))
        entries, decided, again = [], [], []
        for w, rows in busy:
            account_id, period = w[0], w[1]
            credits_only = holders[account_id]
            included, pricing = 0, "executions"
            if not credits_only:
                pricing = plans[account_id].pricing
                included = quota[(account_id, str(period))]
                if included is None:  # not billed in this period: credits pay for nothing
                    decided += [(account_id, r.event_id, 0, False) for r in rows]
                    continue
            rank: dict[str, int] = {}
            if included > 0 and counts.get(str(period), {}).get(account_id, 0) > included:
                rank = repo.ranks(conn, account_id, period.start, w[3], [r.event_id for r in rows])
            charges = []
            for r in rows:
                try:
                    cost = rules.credit_cost(catalog.at(r.occurred_at), r.model, byok=r.byok, sandbox=r.sandbox)
                except CatalogError:
                    decided.append((account_id, r.event_id, 0, False))
                    continue
                billable = not r.sandbox and (included == 0 or rank.get(r.event_id, 0) > included)
                if rules.credits_pay_for(credits_only=credits_only, billable=billable, sandbox=r.sandbox,
                                         byok=r.byok, pricing=pricing):
                    charges.append(CreditCharge(r.event_id, r.occurred_at, cost))
                else:
                    decided.append((account_id, r.event_id, 0, False))
            grants = [g for g, _ in held[account_id]]
            outcome = rules.consume_from_remainders(grants, {g.id: remainders[g.id] for g in grants}, (), charges)
            for c in outcome:
                for e in c.entries:
                    remainders[e.grant_id] += e.amount
                    entries.append(e)
                decided.append((account_id, c.event_id, c.credits, c.funded))
            if account_id not in recent_since and len(rows) == BOOKING_PAGE:
                again.append(w)
        written += repo.append_entries(conn, entries)
        repo.record_bookings_many(conn, decided)
        windows = again
    repo.set_booked_through_many(conn, ids, read_at)
    return written


def consume_for(engine: Engine, catalog: Catalog, account_ids: list[str] | tuple[str, ...], now: datetime,
                grace_hours: int) -> int:
    """Book the consumption of the accounts that hold credits among ``account_ids``: one transaction,
    a handful of statements for the whole batch, the accounts' locks held only for it."""
    with engine.begin() as conn:
        holders = repo.credit_accounts_among(conn, sorted(set(account_ids)))
        return book_consumptions(conn, catalog, holders, now, grace_hours) if holders else 0


def on_usage(engine: Engine, catalog: Catalog, recorded: RecordedUsage) -> None:
    """The usage observer (capabilities registry): after every committed batch, book the consumption of
    its accounts that hold credits. Idempotent, catches up. Off with TALLY_CREDITS_ON_INGEST=false."""
    from models.settings import get_settings

    settings = get_settings()
    if not settings.credits_on_ingest:
        return
    consume_for(engine, catalog, recorded.account_ids, recorded.recorded_at, settings.late_usage_grace_hours)


# ---- the entitlement check ---------------------------------------------------------------------------
def entitlement(conn: Connection, catalog: Catalog, account, *, model: str, sandbox: bool, used: int,
                included: int, billed_plan: bool, decision: tuple[bool, Reason], now: datetime) -> tuple[bool, Reason]:
    """The plan's ``decision`` with credits considered (``billing.credits.entitlement_with_credits``):
    a credits-only account is refused with ``no_credits`` when its spendable credits cannot pay for the
    next execution of ``model``; a plan account blocked at its quota may run on credits. Accounts that
    hold no credits: one indexed read, the plan's answer unchanged."""
    return entitlement_from_facts(repo.entitlement_facts(conn, account.id, now), catalog, account, model=model,
                                  sandbox=sandbox, used=used, included=included, billed_plan=billed_plan,
                                  decision=decision, now=now)


def entitlement_from_facts(facts: tuple[bool, Decimal] | None, catalog: Catalog, account, *, model: str,
                           sandbox: bool, used: int, included: int, billed_plan: bool, decision: tuple[bool, Reason],
                           now: datetime) -> tuple[bool, Reason]:
    """``entitlement`` with the account's credit facts read already (``repositories.usage
    .account_with_counters`` reads them in the check's one round trip)."""
    if facts is None:
        return decision
    credits_only, spendable = facts
    if decision[1] in (Reason.account_paused, Reason.unknown_model, Reason.paused_anomaly):
        return decision
    try:
        cost = rules.credit_cost(catalog.at(now), model, byok=False, sandbox=sandbox)
    except CatalogError:
        return decision
    billable = billed_plan and (included == 0 or used >= included)
    pays = rules.credits_pay_for(credits_only=credits_only, billable=billable, sandbox=sandbox, byok=False,
                                 pricing=account.pricing)
    return rules.entitlement_with_credits(decision, credits_only=credits_only, credits_pay=pays, cost=cost,
                                          spendable_credits=spendable)


# ---- the usd balance at close ------------------------------------------------------------------------
def apply_usd_at_close(conn: Connection, invoices_written: dict[str, tuple[int, str]], at: datetime) -> dict[str, Decimal]:
    """Apply each account's usd balance to its just-written invoice (``billing.credits.apply_usd_to_invoice``):
    a ``prepaid_balance`` line of minus what it paid, the invoice total lowered by it, ledger entries
    tied to the invoice. A re-run of the close (the draft rewritten) finds the entries and writes the
    same line again, applying nothing twice. Returns {account: applied}."""
    from repositories import invoices as invoice_rows

    applied: dict[str, Decimal] = {}
    for account_id in sorted(repo.accounts_with_usd(conn, list(invoices_written))):
        invoice_id, status = invoices_written[account_id]
        repo.lock_account(conn, account_id)
        total = invoice_rows.invoice_total(conn, invoice_id)
        grants = repo.grants_of(conn, account_id)
        entries = repo.ledger_of(conn, account_id)
        outcome = rules.apply_usd_to_invoice(grants, entries, invoice_id=str(invoice_id), total=total, at=at)
        repo.append_entries(conn, list(outcome.entries), invoice_id=invoice_id)
        if outcome.applied > 0:
            invoice_rows.add_prepaid_balance_line(conn, invoice_id, outcome.applied)
            applied[account_id] = outcome.applied
    return applied


# ---- what people see ---------------------------------------------------------------------------------
def fmt(unit: str | Unit, amount: Decimal) -> str:
    """Credits as a whole number ("6000"), usd in cents ("12.50")."""
    return f"{amount:.0f}" if Unit(unit) is Unit.credits else f"{amount:.2f}"


def _view_grant(g: Grant, entries, audit) -> dict:
    s = rules.summarize(g, entries)
    purchase_id, granted_by = audit.get(g.id, (None, None))
    u = g.unit
    return {"grant_id": g.id, "unit": u.value, "amount": fmt(u, g.amount), "remaining": fmt(u, s.remaining),
            "consumed": fmt(u, s.consumed + s.applied), "expired": fmt(u, s.expired), "adjusted": fmt(u, s.adjusted),
            "price": str(g.price), "package": g.package, "granted_at": g.granted_at.isoformat(),
            "expires_at": g.expires_at.isoformat(), "purchase_id": purchase_id, "granted_by": granted_by,
            "reference": g.reference, "workflow_id": grant_workflow_id(g.id)}


def credits_view(engine: Engine, account_id: str, now: datetime) -> dict:
    """Balances per unit (the ledger sum, and what can pay now), every grant with its expiry and
    remainder, the purchases, and consumption per day of the current month."""
    period = Period.of(now)
    with engine.connect() as conn:
        account = _require_account(conn, account_id)
        sums = repo.balances(conn, account_id, now)
        grants = repo.grants_of(conn, account_id)
        entries = repo.ledger_of(conn, account_id)
        audit = repo.grant_audit(conn, account_id)
        days = repo.consumption_per_day(conn, account_id, period.start, period.end)
        purchases = repo.purchases_of(conn, account_id)
        only = repo.credit_accounts_among(conn, [account_id]).get(account_id, False)
    return {
        "account_id": account.id,
        "credits_only": bool(only),
        "balances": {u.value: {"balance": fmt(u, sums.get(u.value, (ZERO, ZERO))[0]),
                               "spendable": fmt(u, sums.get(u.value, (ZERO, ZERO))[1])} for u in Unit},
        "grants": [_view_grant(g, entries, audit) for g in grants],
        "purchases": [{"purchase_id": p.id, "package": p.package, "unit": p.unit, "amount": fmt(p.unit, p.amount),
                       "price": str(p.price), "status": p.status, "created_at": p.created_at.isoformat(),
                       "settled_at": p.settled_at.isoformat() if p.settled_at else None,
                       "checkout_url": p.checkout_url} for p in purchases],
        "consumption_per_day": [{"day": d.day.isoformat(), "unit": d.unit, "amount": fmt(d.unit, d.used)}
                                for d in days],
        "period": str(period),
    }


def history(engine: Engine, account_id: str) -> list[dict]:
    """The account's ledger, oldest first: every grant, consumption, application, adjustment, expiry."""
    with engine.connect() as conn:
        _require_account(conn, account_id)
        entries = repo.ledger_of(conn, account_id)
    return [{"id": e.id, "grant_id": e.grant_id, "kind": e.kind.value, "unit": e.unit.value, "amount": fmt(e.unit, e.amount),
             "occurred_at": e.occurred_at.isoformat(), "reference": e.reference} for e in entries]


# ---- ops -------------------------------------------------------------------------------------------------
def parse_ops_amount(credits: object | None, usd: object | None) -> tuple[Unit, Decimal]:
    """Exactly one of ``--credits N`` (a whole number) or ``--usd X`` (whole cents), above zero."""
    if (credits is None) == (usd is None):
        raise InvalidInput("amount", "give exactly one of --credits N or --usd X")
    if credits is not None:
        text = str(credits).strip()
        if not text.isdigit() or int(text) <= 0 or int(text) > MAX_OPS_CREDITS:
            raise InvalidInput("credits", f"must be a whole number from 1 to {MAX_OPS_CREDITS:,}, got {credits!r}")
        return Unit.credits, Decimal(int(text))
    try:
        amount = Decimal(str(usd).strip())
    except InvalidOperation:
        raise InvalidInput("usd", f"{usd!r} is not a decimal amount") from None
    if not amount.is_finite() or amount <= 0 or amount > MAX_OPS_USD:
        raise InvalidInput("usd", f"must be more than 0 and at most {MAX_OPS_USD}, got {usd}")
    if amount != amount.quantize(Decimal("0.01")):
        raise InvalidInput("usd", "must be whole cents (at most 2 decimals)")
    return Unit.usd, amount.quantize(Decimal("0.01"))


def ops_grant(engine: Engine, catalog: Catalog, *, account_id: str, credits: object | None, usd: object | None,
              reason: str, granted_by: str, now: datetime, expires: date | None = None) -> dict:
    """Give credits (or usd of invoice credit) by hand: the reason is required and recorded with who
    gave it (the grant and its ledger entry carry both). Expires at ``expires`` 00:00 UTC, or after the
    catalog's expiry months."""
    unit, amount = parse_ops_amount(credits, usd)
    if not reason or not reason.strip():
        raise InvalidInput("reason", "is required (why these credits are given)")
    if not granted_by or not granted_by.strip():
        raise InvalidInput("by", "is required (who gives them)")
    expires_at = None
    if expires is not None:
        expires_at = datetime(expires.year, expires.month, expires.day, tzinfo=timezone.utc)
        if expires_at <= now:
            raise InvalidInput("expires", f"must be after today ({now:%Y-%m-%d}), got {expires.isoformat()}")
    version = catalog.at(now)
    months = version.credits.expiry_months if version.credits else 12
    grant_id = f"grant-ops-{uuid.uuid4().hex[:16]}"
    try:
        grant = rules.ops_grant(grant_id=grant_id, account_id=account_id, unit=unit, amount=amount, granted_at=now,
                                reason=reason.strip(), expiry_months=months, expires_at=expires_at)
    except CreditsError as err:
        raise InvalidInput.of(err) from None
    with engine.begin() as conn:
        _require_account(conn, account_id)
        repo.lock_account(conn, account_id)
        repo.ensure_credit_account(conn, account_id)
        repo.insert_grant(conn, grant, granted_by=granted_by.strip())
        repo.append_entries(conn, [rules.grant_entry(grant)], actor=granted_by.strip())
        entries = repo.ledger_of(conn, account_id, grant.id)
        audit = repo.grant_audit(conn, account_id)
    return _view_grant(grant, entries, audit)


def expire_now(engine: Engine, grant_id: str, *, by: str, reason: str, now: datetime) -> dict:
    """Support's "expire this grant now": the remainder is expired at once with an entry dated now
    (who and why recorded); the grant's workflow later finds nothing left to expire."""
    if not by or not by.strip():
        raise InvalidInput("by", "is required (who expires it)")
    with engine.begin() as conn:
        grant = repo.get_grant(conn, grant_id)
        if grant is None:
            raise GrantNotFound(grant_id)
        repo.lock_account(conn, grant.account_id)
        entries = repo.ledger_of(conn, grant.account_id, grant.id)
        entry = rules.expire(grant, entries, at=now, reason=f"expired now by {by.strip()}: {reason or 'support'}")
        if entry is None:
            if any(e.kind is rules.EntryKind.expire for e in entries):
                raise Conflict(f"grant {grant_id} has already expired")
            raise Conflict(f"grant {grant_id} has nothing left to expire")
        repo.append_entries(conn, [entry], actor=by.strip())
    return {"grant_id": grant_id, "expired": fmt(grant.unit, -entry.amount), "unit": grant.unit.value,
            "occurred_at": entry.occurred_at.isoformat()}


def set_credits_only(engine: Engine, account_id: str, credits_only: bool) -> dict:
    """Make an account credits-only (its plan must be ``free``: nothing is ever charged; every execution
    is paid with credits or refused with ``no_credits``), or back to its plan's rules."""
    with engine.begin() as conn:
        account = _require_account(conn, account_id)
        if credits_only and account.plan != "free":
            raise InvalidInput("plan", f"a credits-only account must be on the free plan (no charges), "
                                       f"{account_id} is on {account.plan}")
        repo.ensure_credit_account(conn, account_id, credits_only)
    return {"account_id": account_id, "credits_only": credits_only}


# ---- expiry (the grant's workflow's activities call these) --------------------------------------------------
@dataclass(frozen=True)
class GrantTimes:
    grant_id: str
    account_id: str
    expires_at: datetime
    notice_at: datetime
    expired: bool


def grant_times(engine: Engine, grant_id: str) -> GrantTimes | None:
    with engine.connect() as conn:
        grant = repo.get_grant(conn, grant_id)
        if grant is None:
            return None
        entries = repo.ledger_of(conn, grant.account_id, grant.id)
    return GrantTimes(grant.id, grant.account_id, grant.expires_at, rules.expiry_notice_at(grant),
                      any(e.kind is rules.EntryKind.expire for e in entries))


def queue_expiry_notice(engine: Engine, grant_id: str) -> bool:
    """Queue "your credits expire on ..." in the notifications outbox, once per grant, when something is
    left to expire. Returns whether it was queued now."""
    with engine.begin() as conn:
        grant = repo.get_grant(conn, grant_id)
        if grant is None:
            return False
        left = rules.remaining(grant, repo.ledger_of(conn, grant.account_id, grant.id))
        if left <= 0:
            return False
        what = f"{left:,.0f} credits" if grant.unit is Unit.credits else f"${left:,.2f} of prepaid balance"
        when = grant.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return notifications.notify(
            conn, account_id=grant.account_id, kind="credits_expiring", dedupe_key=f"credits-expiring:{grant.id}",
            subject=f"{what} expire on {grant.expires_at:%Y-%m-%d}",
            body=f"{what} of grant {grant.id} expire on {when}. Use them before then; what is left is expired.",
            payload={"grant_id": grant.id, "remaining": str(left), "unit": grant.unit.value,
                     "expires_at": grant.expires_at.isoformat()})


def expire_grant(engine: Engine, grant_id: str) -> Decimal:
    """Expire the remainder of a grant whose expiry plus the late-usage grace has passed: exactly once,
    an entry dated ``expires_at``. The account's pending consumption is booked first (under the same
    lock), so executions before ``expires_at`` that arrived inside the grace consume before the rest
    expires. Returns what expired (0 when nothing was left or it already expired)."""
    from models.settings import get_settings

    settings = get_settings()
    with engine.begin() as conn:
        grant = repo.get_grant(conn, grant_id)
        if grant is None:
            raise GrantNotFound(grant_id)
        only = repo.credit_accounts_among(conn, [grant.account_id]).get(grant.account_id, False)
        if grant.unit is Unit.credits:
            book_consumption(conn, _catalog(), grant.account_id, only,
                             grant.expires_at + timedelta(hours=settings.late_usage_grace_hours),
                             settings.late_usage_grace_hours, full=True)
        repo.lock_account(conn, grant.account_id)
        entry = rules.expire(grant, repo.ledger_of(conn, grant.account_id, grant.id))
        if entry is None:
            return ZERO
        repo.append_entries(conn, [entry])
        return -entry.amount


__all__ = [
    "AccountNotFound", "GrantNotFound", "PurchaseStarted", "PollResult", "GrantTimes", "grant_workflow_id", "buy",
    "settle_paid", "settle_unpaid", "poll_pending", "book_consumption", "consume_for", "on_usage", "entitlement",
    "entitlement_from_facts",
    "apply_usd_at_close", "credits_view", "history", "parse_ops_amount", "ops_grant", "expire_now",
    "set_credits_only", "grant_times", "queue_expiry_notice", "expire_grant",
]


async def start_grant_workflow(temporal, settings, grant_id: str, account_id: str) -> str:
    """Start ``credit-grant-<id>`` (a running or finished one is left as it is). Returns its id."""
    from temporalio.common import (
        SearchAttributePair,
        TypedSearchAttributes,
        WorkflowIDConflictPolicy,
        WorkflowIDReusePolicy,
    )
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from models.schemas import CreditGrantInput
    from workflows.credits import CreditGrantWorkflow
    from workflows.search_attributes import BILLING_ACCOUNT_IDS

    client = await temporal()
    wid = grant_workflow_id(grant_id)
    try:
        await client.start_workflow(
            CreditGrantWorkflow.run, CreditGrantInput(grant_id=grant_id, grace_hours=settings.late_usage_grace_hours),
            id=wid, task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_ACCOUNT_IDS, [account_id])]))
    except WorkflowAlreadyStartedError:
        pass
    return wid
