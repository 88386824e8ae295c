"""Activities of the monthly close. Each may run twice (retries, a worker killed mid-run): each is
idempotent by construction, and what it returns is small (counts and ids, never rows)."""

from __future__ import annotations

from decimal import Decimal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import pricing
from activities.deps import Deps
from activities.heartbeat import beating
from activities.push import CustomerRefused, InvoiceNotFound, InvoicePusher, InvoiceRejected
from billing.catalog import Catalog, CatalogError
from billing.close import AccountOutcome, decide
from billing.payouts import invoice_earnings
from billing.contracts import ContractError
from billing.periods import Period, PeriodError
from billing.rating import RatingError
from gateways.stripe import StripeGateway
from models.failures import Failure, PushBudget
from models.schemas import (
    AccountRange,
    ChunkPage,
    CloseChunkInput,
    InvoiceFailure,
    ListChunksInput,
    PeriodCheck,
    PushChunkResult,
    PushInvoiceInput,
    PushInvoiceResult,
    RateChunkResult,
)
from repositories import accounts, catalog_versions, invoices, notifications
from services import credits
from repositories import contracts as contract_months
from repositories import payouts as payout_rows



class CloseActivities:
    """The close's activities, built from the worker's one dependency object."""

    def __init__(self, deps: Deps):
        self.deps = deps
        self.settings = deps.settings
        self.clock = deps.clock

    @property
    def engine(self):
        return self.deps.engine

    @property
    def catalog(self) -> Catalog:
        return self.deps.catalog

    @property
    def gateway(self) -> StripeGateway:
        return self.deps.stripe

    def _period(self, text: str) -> Period:
        try:
            return Period.parse(text)
        except PeriodError as err:
            raise ApplicationError(str(err), type=Failure.INVALID_PERIOD, non_retryable=True) from err

    # ---- activities ---------------------------------------------------------------------------
    @activity.defn(name="check_period")
    def check_period(self, period_text: str) -> PeriodCheck:
        """Refuse a period that has not ended plus the late-usage grace; count what will be billed."""
        period = self._period(period_text)
        closes_at = period.closes_at(self.settings.late_usage_grace_hours)
        now = self.clock()
        if now < closes_at:
            state = "has not started" if now < period.start else "is still open"
            raise ApplicationError(
                f"period {period} {state}: it can be closed from {closes_at:%Y-%m-%d %H:%M} UTC "
                f"(period end + {self.settings.late_usage_grace_hours} h late-usage grace)",
                type=Failure.PERIOD_NOT_CLOSABLE,
                non_retryable=True,
            )
        try:
            version = self.catalog.at(period.start)
        except CatalogError as err:  # no retry brings a price list into force
            raise ApplicationError(f"period {period} cannot be billed: {err}", type=Failure.PERIOD_NOT_CLOSABLE,
                                   non_retryable=True) from err
        with self.engine.begin() as conn:
            catalog_versions.ensure_catalog_version(conn, version)
            n = accounts.count_billable_accounts(conn, period)
        return PeriodCheck(period=str(period), period_start=period.start, period_end=period.end,
                           accounts=n, catalog_version=version.version)

    @activity.defn(name="list_account_chunks")
    def list_account_chunks(self, inp: ListChunksInput) -> ChunkPage:
        period = self._period(inp.period)
        with self.engine.begin() as conn:
            chunks, cursor = accounts.account_chunks(conn, period, inp.after, inp.chunk_size, inp.max_chunks)
        return ChunkPage(
            chunks=[AccountRange(after=a, upto=u, count=n) for a, u, n in chunks], next_cursor=cursor
        )

    @activity.defn(name="rate_accounts")
    def rate_accounts(self, inp: CloseChunkInput) -> RateChunkResult:
        """Rate every account of the range and write its invoice, in one transaction.

        Each account is priced segment by segment (plan/seat changes), at the rate card in force when
        each execution occurred, plus prior-period lines for usage that arrived after an earlier
        invoice was final. Invoices already pushed (or final) are left untouched, so re-running a
        close changes nothing. Pay-as-you-go accounts that would have paid less on Pro are moved to
        Pro from the next period, with a notification (both idempotent).

        Load the facts (``pricing.load_chunk``), decide each account in ``billing.close`` (pure),
        write the outcome.
        """
        period = self._period(inp.period)
        with beating(), self.engine.begin() as conn:
            version_ids = {v.version: catalog_versions.ensure_catalog_version(conn, v)
                           for v in self.catalog.versions_overlapping(period.start, period.end)}
            try:
                chunk = pricing.load_chunk(conn, self.catalog, period, inp.accounts.after, inp.accounts.upto)
                outcomes = {a: decide(self.catalog, period, f) for a, f in chunk.facts.items()}
            except (RatingError, CatalogError, ContractError) as err:
                raise ApplicationError(f"rating {period}: {err}", type=Failure.RATING_ERROR, non_retryable=True) from err
            return self._write(conn, period, chunk, outcomes, version_ids)

    def _write(self, conn, period: Period, chunk: pricing.ChunkFacts, outcomes: dict[str, AccountOutcome],
               version_ids: dict[str, int]) -> RateChunkResult:
        """The invoices that are still drafts, then the auto-conversions of the accounts whose invoice
        was written."""
        result = RateChunkResult(account_ids=[a.id for a in chunk.accounts],
                                 frozen=len(chunk.accounts) - len(chunk.to_rate))
        items = []
        for account in chunk.to_rate:
            outcome = outcomes.get(account.id)
            if outcome is None:
                continue
            primary = self.catalog.version(outcome.rating.rated.catalog_version)
            items.append(dict(
                account=account, rated=outcome.rating.rated, adjustments=outcome.rating.prior,
                catalog_version_id=(version_ids.get(primary.version)
                                    or catalog_versions.ensure_catalog_version(conn, primary)),
            ))
        written = invoices.write_rated_invoices(conn, period=period, items=items, version_ids=version_ids)
        applied = credits.apply_usd_at_close(conn, written, period.closes_at(self.settings.late_usage_grace_hours))
        # contract accounts: the month's reconciliation is written with (and like) its invoice
        contract_months.record_months(
            conn, [invoice_id for invoice_id, _ in written.values()],
            [(written[a][0], rec) for a, o in outcomes.items() if a in written for rec in o.rating.reconciliations])
        self._write_earnings(conn, period, chunk, outcomes, written)
        total = Decimal("0.00")
        for it in items:
            account, outcome = it["account"], outcomes[it["account"].id]
            if account.id not in written:
                result.frozen += 1
                continue
            result.rated += 1
            if written[account.id][1] == "no_charge":
                result.no_charge += 1
            total += outcome.rating.total - applied.get(account.id, Decimal("0.00"))
            if outcome.conversion is not None:
                auto, note = outcome.conversion.auto, outcome.conversion.auto.notification
                accounts.append_terms(conn, account_id=account.id, effective_from=auto.effective_from,
                                      terms=outcome.conversion.terms, reason=auto.reason, now=self.clock())
                notifications.notify(conn, account_id=account.id, kind=note.kind, dedupe_key=note.dedupe_key,
                                     subject=note.subject, body=note.body, payload=note.payload)
        result.total = total
        return result

    def _write_earnings(self, conn, period: Period, chunk: pricing.ChunkFacts, outcomes: dict[str, AccountOutcome],
                        written: dict[str, tuple[int, str]]) -> None:
        """Creators' earnings per line of each invoice written (``billing.payouts.invoice_earnings``),
        rewritten with the draft: payable once the invoice is paid."""
        rows = []
        for account_id, (invoice_id, _status) in written.items():
            facts = chunk.facts.get(account_id)
            if facts is None or facts.premium is None:
                continue
            rated = outcomes[account_id].rating.rated
            terms = self.catalog.at(period.start).creator_terms()
            for e in invoice_earnings(str(invoice_id), rated.lines, rated.executions, facts.premium.usage,
                                      facts.premium.skills, terms):
                rows.append((invoice_id, account_id, period, e))
        payout_rows.replace_invoice_earnings(conn, [i for i, _ in written.values()], rows)

    @activity.defn(name="push_invoices")
    def push_invoices(self, inp: CloseChunkInput) -> PushChunkResult:
        """Push every rated, not yet pushed invoice of the range to Stripe, several at once.

        Safe to run again at any point: finished invoices are skipped, half-pushed ones resume.
        Transient Stripe trouble fails the activity (Temporal retries it) until the last attempts,
        after which the remaining invoices are left as push_failed for ops.
        """
        period = self._period(inp.period)
        with self.engine.begin() as conn:
            ids = invoices.pushable_invoice_ids(conn, period, inp.accounts.after, inp.accounts.upto)
            already = invoices.count_pushed(conn, period, inp.accounts.after, inp.accounts.upto)
        pusher = InvoicePusher(self.engine, self.gateway, self.clock)
        result = PushChunkResult(already_pushed=already)
        transient: list[str] = []
        info = activity.info() if activity.in_activity() else None
        last_attempt = info is not None and info.attempt >= PushBudget.GIVE_UP_AT

        def heartbeat(steps_done: int) -> None:
            # On a timer (perform_batch calls it about once a second), not per finished call: slow
            # Stripe calls must not look like a dead worker (that would start a second attempt).
            if activity.in_activity():
                activity.heartbeat(steps_done)

        # One batch for the chunk: each stage's keys are recorded in one commit before its calls
        # (activities.push), so the bookkeeping costs a few commits per chunk, not ~19 per invoice.
        batch = pusher.push_many(ids, workers=self.settings.stripe_concurrency, on_progress=heartbeat)
        for invoice_id in ids:
            outcome = batch.outcomes.get(invoice_id)
            if outcome is not None:
                result.stripe_calls += outcome.stripe_calls
                if outcome.already_pushed:
                    result.already_pushed += 1
                elif outcome.status == "open":
                    result.pushed += 1
                continue
            err = batch.errors[invoice_id]
            if isinstance(err, InvoiceNotFound):
                raise err  # listed a moment ago: a bug, not something to skip
            if isinstance(err, CustomerRefused):
                result.failed.append(self._failure(invoice_id, str(err), Failure.CUSTOMER_MISMATCH))
            elif isinstance(err, InvoiceRejected):
                result.failed.append(self._failure(invoice_id, str(err)))
            elif last_attempt:  # StripeFailed, StripeUnreachable or InvoiceBusy: out of retries
                self._give_up(invoice_id, str(err))
                result.failed.append(self._failure(invoice_id, str(err), Failure.STRIPE_TRANSIENT))
            else:
                transient.append(f"invoice {invoice_id}: {err}")
        if transient:
            raise ApplicationError(
                f"{len(transient)} invoice(s) not pushed yet, will retry: " + "; ".join(transient[:5]),
                type=Failure.STRIPE_TRANSIENT,
            )
        return result

    @activity.defn(name="push_invoice")
    def push_invoice(self, inp: PushInvoiceInput) -> PushInvoiceResult:
        """Push (or resume pushing) one invoice: what ops run to retry a failed invoice."""
        pusher = InvoicePusher(self.engine, self.gateway, self.clock)
        try:
            outcome = pusher.push(inp.invoice_id)
        except CustomerRefused as err:
            raise ApplicationError(str(err), type=Failure.CUSTOMER_MISMATCH, non_retryable=True) from err
        except InvoiceRejected as err:
            raise ApplicationError(str(err), type=Failure.INVOICE_REJECTED, non_retryable=True) from err
        except InvoiceNotFound as err:
            raise ApplicationError(str(err), type=Failure.NOT_FOUND, non_retryable=True) from err
        return PushInvoiceResult(
            invoice_id=outcome.invoice_id,
            status=outcome.status,
            stripe_invoice_id=outcome.stripe_invoice_id,
            stripe_calls=outcome.stripe_calls,
            already_pushed=outcome.already_pushed,
        )

    # ---- helpers --------------------------------------------------------------------------------
    def _failure(self, invoice_id: int, error: str, kind: str = Failure.INVOICE_REJECTED) -> InvoiceFailure:
        with self.engine.begin() as conn:
            inv = invoices.get_invoice(conn, invoice_id)
        return InvoiceFailure(invoice_id=invoice_id, account_id=inv.account_id, error=error, kind=kind)

    def _give_up(self, invoice_id: int, error: str) -> None:
        with self.engine.begin() as conn:
            invoices.set_invoice_status(conn, invoice_id, "push_failed",
                                        from_statuses=("draft", "pushing"), error=error)

    def all(self) -> list:
        return [self.check_period, self.list_account_chunks, self.rate_accounts, self.push_invoices,
                self.push_invoice]
