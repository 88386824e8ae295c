"""Activities of the monthly close. Each may run twice (retries, a worker killed mid-run): each is
idempotent by construction, and what it returns is small (counts and ids, never rows)."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from decimal import Decimal
from functools import cached_property
from typing import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import pricing
from activities import repository as repo
from activities.push import InvoiceBusy, InvoicePusher, InvoiceRejected
from activities.stripe_gateway import StripeError, StripeGateway
from billing.catalog import Catalog, CatalogError, load_catalog
from billing.periods import Period, PeriodError
from billing.rating import RatingError
from models.db import get_engine, worker_pool
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
from models.settings import Settings

# After this many attempts a chunk stops raising for transient Stripe trouble and leaves the
# remaining invoices as push_failed for ops to retry (`tally invoices retry`).
PUSH_ATTEMPTS_BEFORE_GIVING_UP = 8


class CloseActivities:
    def __init__(self, settings: Settings, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    @cached_property
    def engine(self):
        # Sized in models.db.worker_pool (one connection per concurrent invoice push, plus a few).
        pool_size, max_overflow = worker_pool(self.settings)
        return get_engine(self.settings.effective_database_url(), pool_size=pool_size, max_overflow=max_overflow)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.catalog_path)

    @cached_property
    def gateway(self) -> StripeGateway:
        return StripeGateway(self.settings)

    def _period(self, text: str) -> Period:
        try:
            return Period.parse(text)
        except PeriodError as err:
            raise ApplicationError(str(err), type="InvalidPeriod", non_retryable=True) from err

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
                type="PeriodNotClosable",
                non_retryable=True,
            )
        version = self.catalog.at(period.start)
        with self.engine.begin() as conn:
            repo.ensure_catalog_version(conn, version)
            n = repo.count_billable_accounts(conn, period)
        return PeriodCheck(period=str(period), period_start=period.start, period_end=period.end,
                           accounts=n, catalog_version=version.version)

    @activity.defn(name="list_account_chunks")
    def list_account_chunks(self, inp: ListChunksInput) -> ChunkPage:
        period = self._period(inp.period)
        with self.engine.begin() as conn:
            chunks, cursor = repo.account_chunks(conn, period, inp.after, inp.chunk_size, inp.max_chunks)
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
        """
        period = self._period(inp.period)
        result = RateChunkResult()
        with self.engine.begin() as conn:
            version_ids = {v.version: repo.ensure_catalog_version(conn, v)
                           for v in self.catalog.versions_overlapping(period.start, period.end)}
            accts = repo.accounts_in_range(conn, period, inp.accounts.after, inp.accounts.upto)
            result.account_ids = [a.id for a in accts]
            statuses = repo.invoice_statuses(conn, period, result.account_ids)
            to_rate = [a for a in accts if statuses.get(a.id) in (None, "draft")]
            result.frozen = len(accts) - len(to_rate)
            try:
                ratings = pricing.rate_accounts(conn, self.catalog, period, [a.id for a in to_rate])
                pricing.add_prior_period_usage(conn, self.catalog, period, ratings)
            except (RatingError, CatalogError) as err:
                raise ApplicationError(f"rating {period}: {err}", type="RatingError", non_retryable=True) from err
            total = Decimal("0.00")
            items = []
            for account in to_rate:
                rating = ratings.get(account.id)
                if rating is None:
                    continue
                primary = self.catalog.version(rating.rated.catalog_version)
                items.append(dict(
                    account=account, rated=rating.rated, adjustments=rating.prior,
                    catalog_version_id=version_ids.get(primary.version) or repo.ensure_catalog_version(conn, primary),
                ))
            written = repo.write_rated_invoices(conn, period=period, items=items, version_ids=version_ids)
            for it in items:
                account, rating = it["account"], ratings[it["account"].id]
                if account.id not in written:
                    result.frozen += 1
                    continue
                result.rated += 1
                if written[account.id][1] == "no_charge":
                    result.no_charge += 1
                total += rating.total
                self._maybe_convert_to_pro(conn, period, account, rating)
            result.total = total
        return result

    def _maybe_convert_to_pro(self, conn, period, account, rating) -> None:
        cmp = pricing.compare_with_pro(self.catalog, period, rating)
        if cmp is None or cmp.alternative_total >= cmp.current_total:
            return
        nxt = period.next()
        later = [t for t in repo.terms_history(conn, account.id) if t.effective_from >= nxt.start]
        if later:
            return  # the customer already changed terms from the next period on: theirs wins
        reason = (f"auto-convert: {period} would have cost ${cmp.alternative_total} on Pro "
                  f"(overage on) instead of ${cmp.current_total} on pay-as-you-go")
        repo.change_terms(conn, account_id=account.id, effective_from=nxt.start, reason=reason,
                          plan="pro", seats=1, overage_opt_in=True, now=self.clock())
        repo.notify(
            conn, account_id=account.id, kind="plan_auto_converted", dedupe_key=f"payg-to-pro:{account.id}:{period}",
            subject="You're moving to Pro: it would have saved you money",
            body=(f"Your pay-as-you-go usage in {period} cost ${cmp.current_total}. The same usage on Pro "
                  f"(with overage) would have cost ${cmp.alternative_total}, so from {nxt} your account is on "
                  "Pro with overage enabled. You can change plans at any time."),
            payload={"period": str(period), "payg_total": str(cmp.current_total),
                     "pro_total": str(cmp.alternative_total), "effective": nxt.start.isoformat()},
        )

    @activity.defn(name="push_invoices")
    def push_invoices(self, inp: CloseChunkInput) -> PushChunkResult:
        """Push every rated, not yet pushed invoice of the range to Stripe, several at once.

        Safe to run again at any point: finished invoices are skipped, half-pushed ones resume.
        Transient Stripe trouble fails the activity (Temporal retries it) until the last attempts,
        after which the remaining invoices are left as push_failed for ops.
        """
        period = self._period(inp.period)
        with self.engine.begin() as conn:
            ids = repo.pushable_invoice_ids(conn, period, inp.accounts.after, inp.accounts.upto)
            already = repo.count_pushed(conn, period, inp.accounts.after, inp.accounts.upto)
        pusher = InvoicePusher(self.engine, self.gateway, self.clock)
        result = PushChunkResult(already_pushed=already)
        transient: list[str] = []
        info = activity.info() if activity.in_activity() else None
        last_attempt = info is not None and info.attempt >= PUSH_ATTEMPTS_BEFORE_GIVING_UP
        with ThreadPoolExecutor(max_workers=self.settings.stripe_concurrency,
                                thread_name_prefix="stripe-push") as pool:
            futures = {pool.submit(pusher.push, i): i for i in ids}
            pending = set(futures)
            while pending:
                # Heartbeat on a timer, not per finished push: slow Stripe calls must not look like
                # a dead worker (that would start a second attempt while this one still runs).
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                if activity.in_activity():
                    activity.heartbeat(result.pushed + result.already_pushed)
                for fut in done:
                    invoice_id = futures[fut]
                    try:
                        outcome = fut.result()
                        result.stripe_calls += outcome.stripe_calls
                        if outcome.already_pushed:
                            result.already_pushed += 1
                        elif outcome.status == "open":
                            result.pushed += 1
                    except InvoiceRejected as err:
                        result.failed.append(self._failure(invoice_id, str(err)))
                    except (StripeError, InvoiceBusy) as err:
                        if last_attempt:
                            self._give_up(invoice_id, str(err))
                            result.failed.append(self._failure(invoice_id, str(err)))
                        else:
                            transient.append(f"invoice {invoice_id}: {err}")
        if transient:
            raise ApplicationError(
                f"{len(transient)} invoice(s) not pushed yet, will retry: " + "; ".join(transient[:5]),
                type="StripeTransient",
            )
        return result

    @activity.defn(name="push_invoice")
    def push_invoice(self, inp: PushInvoiceInput) -> PushInvoiceResult:
        """Push (or resume pushing) one invoice: what ops run to retry a failed invoice."""
        pusher = InvoicePusher(self.engine, self.gateway, self.clock)
        try:
            outcome = pusher.push(inp.invoice_id)
        except InvoiceRejected as err:
            raise ApplicationError(str(err), type="InvoiceRejected", non_retryable=True) from err
        except repo.NotFound as err:
            raise ApplicationError(str(err), type="NotFound", non_retryable=True) from err
        return PushInvoiceResult(
            invoice_id=outcome.invoice_id,
            status=outcome.status,
            stripe_invoice_id=outcome.stripe_invoice_id,
            stripe_calls=outcome.stripe_calls,
            already_pushed=outcome.already_pushed,
        )

    # ---- helpers --------------------------------------------------------------------------------
    def _failure(self, invoice_id: int, error: str) -> InvoiceFailure:
        with self.engine.begin() as conn:
            inv = repo.get_invoice(conn, invoice_id)
        return InvoiceFailure(invoice_id=invoice_id, account_id=inv.account_id, error=error)

    def _give_up(self, invoice_id: int, error: str) -> None:
        with self.engine.begin() as conn:
            repo.set_invoice_status(conn, invoice_id, "push_failed",
                                    from_statuses=("draft", "pushing"), error=error)

    def all(self) -> list:
        return [self.check_period, self.list_account_chunks, self.rate_accounts, self.push_invoices,
                self.push_invoice]
