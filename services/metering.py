"""What the API reads about an account, without HTTP: entitlements, live usage, the billing page;
and the batches of executions it records (``services.ingest``).

Month-to-date charges are rated by the close's own pricing path (``activities.pricing`` and
``billing.close``), so what the API shows and what the close bills cannot drift apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

from sqlalchemy import Engine

from activities import pricing
from billing.catalog import Catalog, Plan, version_windows
from billing.entitlements import (
    MonthCounter,
    bills_overage,
    decide,
    non_sandbox_executions,
    usage_rows_from_counters,
)
from billing.errors import BillingError
from billing.money import ZERO
from billing.periods import Period
from billing.rating import RatedInvoice, included_executions, pooled_included, rate_account
from models.db import retry_once_on_lost_connection
from repositories import accounts, alerts, invoices, platforms, usage
from services.contracts import month_commitment
from services.errors import NotFound
from services.ingest import BatchRecorder
from services.inputs import ACCOUNT_ID

# An account's terms segments for the month are reused while the account row is unchanged
# (repositories.accounts.append_terms updates it) and for at most this long.
SEGMENTS_CACHE_SECONDS = 300.0


class _NeedsDatabase(Exception):
    """The month to date cannot be told from memory alone (``month_to_date`` without a connection)."""


class AccountNotFound(NotFound):
    def __init__(self, account_id: str):
        super().__init__(f"no account {account_id!r}")


@dataclass
class MonthToDate:
    """An account's current period as the close would see it now."""

    period: Period
    plan: str
    plan_now: Plan | None  # the terms in force now; None: not billed yet (nothing is blocked)
    overage_opt_in: bool
    included: int
    used: int  # non-sandbox executions of the period so far
    charges: Decimal | None  # None: billed by contract
    rated: RatedInvoice | None
    exact: bool  # rated from the executions table (else from the counters)


class MeteringService:
    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime] | None = None,
                 ingest_concurrency: int = 1, grace_hours: int = 48, entitlement_view_ms: int = 0,
                 rate_exact=None):
        """``entitlement_view_ms``: answer entitlement checks from an in-memory view of the checked
        accounts refreshed that often (``services.entitlement_view``; ``start()`` starts its refresher on
        the running event loop); 0: every check reads Postgres. ``rate_exact``: the view's background
        rating of accounts whose month to date needs the executions table
        (``services.entitlement_view.ExactRater``; None: those checks read Postgres)."""
        self.engine = engine
        self.catalog = catalog
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.recorder = BatchRecorder(engine, catalog, ingest_concurrency, grace_hours)
        self._segments: dict[tuple, tuple[list, float]] = {}
        self.view = None
        if entitlement_view_ms:
            from services.entitlement_view import EntitlementView

            self.view = EntitlementView(engine, entitlement_view_ms / 1000, self.clock, warm=self._warm_segments,
                                        rate_exact=rate_exact)

    async def start(self) -> None:
        """Start the entitlement view's refresher on the running event loop (when there is a view)."""
        if self.view is not None:
            await self.view.start()

    async def close(self) -> None:
        if self.view is not None:
            await self.view.close()

    def _read(self):
        """A connection for reads: autocommit, so no BEGIN/ROLLBACK round trips."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def record(self, platform_id: int, items: list) -> dict:
        """Record a batch of the API (``services.ingest.BatchRecorder``) at this service's clock."""
        return self.recorder.record(platform_id, items, self.clock())

    # ---- entitlement and month to date ---------------------------------------------------------
    def entitlement(self, platform_id: int, account_id: str, model: str, sandbox: bool) -> dict:
        """The check from the entitlement view when it holds a fresh snapshot of the account (no I/O),
        else from Postgres (which puts the snapshot in the view)."""
        answer = self.entitlement_from_view(platform_id, account_id, model, sandbox)
        if answer is not None:
            return answer
        return self.entitlement_from_database(platform_id, account_id, model, sandbox)

    def entitlement_from_view(self, platform_id: int, account_id: str, model: str, sandbox: bool) -> dict | None:
        """The check from memory alone, or None when the view does not hold a fresh snapshot of the
        account or its month to date needs the executions table."""
        if self.view is None or not ACCOUNT_ID.match(account_id):
            return None
        now = self.clock()
        held = self.view.get(platform_id, account_id, Period.of(now))
        if held is None:
            return None
        try:
            answer = self._decide(account_id, model, sandbox, now, held[0],
                                  self.month_to_date(None, held[0], held[1], now))
        except _NeedsDatabase:  # rated like the close from the executions table: only Postgres can
            self.view.needed_database += 1
            return None
        self.view.answered += 1
        return answer

    @retry_once_on_lost_connection
    def entitlement_from_database(self, platform_id: int, account_id: str, model: str, sandbox: bool) -> dict:
        """The check read from Postgres (one round trip; the view, if any, keeps what it read, and the
        terms segments it read are cached)."""
        _check_account_id(account_id)
        now = self.clock()
        period = Period.of(now)
        read_at = self.view.mark() if self.view is not None else 0.0
        with self._read() as conn:
            account, counters = usage.account_with_counters(conn, account_id, platform_id, period, now)
            if account is None:
                raise AccountNotFound(account_id)
            mtd = self.month_to_date(conn, account, counters, now)
        if self.view is not None:
            self.view.put(account, counters, period, read_at)
            if mtd.exact and mtd.rated is not None:  # rated from the executions table, like the close
                self.view.put_exact(account.id, period, mtd.included, mtd.charges, read_at)
        return self._decide(account_id, model, sandbox, now, account, mtd)

    def _decide(self, account_id: str, model: str, sandbox: bool, now: datetime, account, mtd: "MonthToDate") -> dict:
        model_known = model in self.catalog.at(now).models
        allowed, reason = decide(status=account.status, model_known=model_known, sandbox=sandbox,
                                 plan=mtd.plan_now, overage_opt_in=mtd.overage_opt_in,
                                 included=mtd.included, used=mtd.used, paused_anomaly=account.paused_anomaly)
        allowed, reason = self._with_credits(account, model, sandbox, mtd, (allowed, reason), now)
        return {
            "account_id": account_id,
            "allowed": allowed,
            "reason": reason.value,
            "plan": mtd.plan,
            "model": model,
            "sandbox": sandbox,
            "included": mtd.included,
            "used": mtd.used,
            "remaining_included": max(0, mtd.included - mtd.used),
            "overage_opt_in": mtd.overage_opt_in,
            "month_to_date_charges": None if mtd.charges is None else str(mtd.charges),
            "period": str(Period.of(now)),
        }

    def _with_credits(self, account, model: str, sandbox: bool, mtd: MonthToDate, decision, now: datetime):
        """Prepaid credits may refuse a credits-only account (``no_credits``) or let a plan account past
        its quota (services/credits.py); the credit facts came with the account's snapshot."""
        from services import credits

        return credits.entitlement_from_facts(account.credit_facts, self.catalog, account, model=model,
                                              sandbox=sandbox, used=mtd.used, included=mtd.included,
                                              billed_plan=mtd.plan_now is not None, decision=decision, now=now)

    def month_to_date(self, conn, account, counters: list[MonthCounter] | None, now: datetime,
                      exact: bool = False) -> MonthToDate:
        """The current period rated as the close would rate it with the usage recorded so far.

        From the counters (one indexed read, done by the caller) when the period has one terms
        segment, one catalog version and the time order of executions cannot change the money;
        otherwise (or with ``exact``) from the executions table, like the close. ``conn`` None: from
        the given counters and the cached terms only (the entitlement view), else ``_NeedsDatabase``.
        """
        catalog = self.catalog
        period = Period.of(now)
        segments = self._terms_segments(conn, account, period)
        if not segments:  # billing starts after this period: nothing is billed or blocked yet
            plan = catalog.at(now).plan(account.plan)
            used = non_sandbox_executions(counters) if counters is not None else usage.count_non_sandbox(
                conn, account.id, period.start, period.end)
            return MonthToDate(period, account.plan, None, account.overage_opt_in,
                               0 if plan.contract else included_executions(plan, account.seats), used,
                               None if plan.contract else ZERO, None, True)
        current = next((s for s in segments if s.start <= now < s.end), None)
        plans = [catalog.at(s.start).plan(s.plan) for s in segments]
        plan_now = catalog.at(current.start).plan(current.plan) if current else None
        shown = current or segments[-1]
        opt_in = shown.overage_opt_in
        if any(p.contract for p in plans):  # enterprise: its contract bills it (rated only when exact)
            used = non_sandbox_executions(counters) if counters is not None else usage.count_non_sandbox(
                conn, account.id, period.start, period.end)
            rating = pricing.rate_accounts(_db(conn), catalog, period, [account.id]).get(account.id) if exact else None
            return MonthToDate(period, shown.plan, plan_now, opt_in, 0, used,
                               rating.rated.total if rating else None, rating.rated if rating else None, True)
        included = pooled_included(catalog, period.start, period.end, segments)
        windows = version_windows(catalog, period.start, period.end)
        if (not exact and counters is not None and len(segments) == 1 and len(windows) == 1
                and segments[0].start == period.start and segments[0].end == period.end):
            seg = segments[0]
            rows = usage_rows_from_counters(counters, version=windows[0][0], included=included,
                                            billed=bills_overage(plans[0], seg.overage_opt_in), pricing=seg.pricing)
            if rows is not None:
                rated = rate_account(catalog, period.start, period.end, segments, rows)
                return MonthToDate(period, shown.plan, plan_now, opt_in, included,
                                   non_sandbox_executions(counters), rated.total, rated, False)
        if conn is None:  # the entitlement view: its background rating, the decision from fresh counters
            known = self.view.exact_month(account.id, period) if self.view is not None else None
            if known is None:
                raise _NeedsDatabase
            return MonthToDate(period, shown.plan, plan_now, opt_in, known[0], non_sandbox_executions(counters),
                               known[1], None, True)
        rating = pricing.rate_accounts(conn, catalog, period, [account.id]).get(account.id)
        used = sum(r.executions for r in rating.usage if not r.sandbox)
        return MonthToDate(period, shown.plan, plan_now, opt_in, rating.included, used,
                           rating.rated.total, rating.rated, True)

    def _terms_segments(self, conn, account, period: Period) -> list:
        key = _segments_key(account, period)
        now = time.monotonic()
        hit = self._segments.get(key)
        if hit and hit[1] > now:
            return hit[0]
        segments = pricing.terms_segments(_db(conn), [account.id], period).get(account.id, [])
        self._keep_segments(key, segments, now)
        return segments

    def _keep_segments(self, key: tuple, segments: list, now: float) -> None:
        if len(self._segments) > 100_000:
            self._segments.clear()
        self._segments[key] = (segments, now + SEGMENTS_CACHE_SECONDS)

    def _warm_segments(self, conn, accounts: list, period: Period) -> None:
        """For the entitlement view: the terms segments of those accounts whose cached ones are missing,
        out of date or due to expire within a minute, in one query, so that checks served from the
        view never read them."""
        now = time.monotonic()
        due = {}
        for account in accounts:
            key = _segments_key(account, period)
            hit = self._segments.get(key)
            if hit is None or hit[1] - now < 60:
                due[account.id] = key
        if due:
            found = pricing.terms_segments(conn, list(due), period)
            for account_id, key in due.items():
                self._keep_segments(key, found.get(account_id, []), now)

    # ---- usage ------------------------------------------------------------------------------------
    @retry_once_on_lost_connection
    def usage(self, platform_id: int, account_id: str, period: Period | None, group_by: str) -> dict:
        _check_account_id(account_id)
        period = period or Period.of(self.clock())
        with self._read() as conn:
            if platforms.account_of_platform(conn, account_id, platform_id) is None:
                raise AccountNotFound(account_id)
            return self.usage_report(conn, account_id, period, group_by)

    def usage_report(self, conn, account_id: str, period: Period, group_by: str) -> dict:
        groups = usage.usage_groups(conn, account_id, period.start, period.end, group_by)
        rated = self._rated(conn, account_id, period)
        by_model: dict[str, Decimal] = {}
        if rated is not None:
            for line in rated.lines:
                if line.model is not None and line.source_period is None:
                    by_model[line.model] = by_model.get(line.model, ZERO) + line.amount
        out_groups = []
        for g in groups:
            charges = None
            if group_by == "model" and rated is not None:
                charges = str(by_model.get(g.key, ZERO))
            out_groups.append({"key": g.key, "executions": g.executions, "sandbox_executions": g.sandbox_executions,
                               "byok_executions": g.byok_executions, "input_tokens": g.input_tokens,
                               "output_tokens": g.output_tokens, "charges": charges})
        totals = {k: sum(g[k] for g in out_groups) for k in
                  ("executions", "sandbox_executions", "byok_executions", "input_tokens", "output_tokens")}
        totals["charges"] = None if rated is None else str(rated.total)
        return {"account_id": account_id, "period": str(period), "group_by": group_by,
                "groups": out_groups, "totals": totals}

    def _rated(self, conn, account_id: str, period: Period) -> RatedInvoice | None:
        """The period rated like the close (all usage recorded so far); None when the period cannot
        be rated: billed by contract, before the catalog, or before the account's billing start."""
        try:
            rating = pricing.rate_accounts(conn, self.catalog, period, [account_id]).get(account_id)
        except BillingError:
            return None
        return rating.rated if rating else None

    # ---- invoices ----------------------------------------------------------------------------------
    @retry_once_on_lost_connection
    def owned_account(self, platform_id: int, account_id: str):
        _check_account_id(account_id)
        with self._read() as conn:
            account = platforms.account_of_platform(conn, account_id, platform_id)
        if account is None:
            raise AccountNotFound(account_id)
        return account

    def invoice_periods(self, account_id: str) -> list[str]:
        with self._read() as conn:
            return invoices.invoice_periods(conn, account_id)

    # ---- the billing page ----------------------------------------------------------------------------
    @retry_once_on_lost_connection
    def billing_page(self, account_id: str) -> dict:
        """This month's usage and charges (the same number as the entitlement), executions per day,
        breakdowns by agent and by model, and the past invoices."""
        _check_account_id(account_id)
        now = self.clock()
        period = Period.of(now)
        with self._read() as conn:
            account = accounts.get_account(conn, account_id)
            if account is None:
                raise AccountNotFound(account_id)
            mtd = self.month_to_date(conn, account, None, now, exact=True)
            days = usage.usage_groups(conn, account_id, period.start, period.end, "day")
            agents = usage.usage_groups(conn, account_id, period.start, period.end, "agent")
            by_model = self.usage_report(conn, account_id, period, "model")
            past = [r for r in invoices.account_invoices(conn, account_id) if r.period != str(period)]
            contract = month_commitment(conn, self.catalog, account_id, now)
            kills = alerts.kills_of(conn, account_id, since=period.start)
            paused = alerts.list_anomalies(conn, ("open", "confirmed"), account_id)
        return {"account": account, "now": now, "period": period, "mtd": mtd, "days": days, "agents": agents,
                "models": by_model["groups"], "totals": by_model["totals"], "invoices": past, "contract": contract,
                "kills": kills, "paused": paused, "credits": self._credits_view(account_id, now)}

    def _credits_view(self, account_id: str, now: datetime) -> dict:
        from services.credits import credits_view

        return credits_view(self.engine, account_id, now)


def _segments_key(account, period: Period) -> tuple:
    """The terms segments cache's key: an account's terms change only with its ``updated_at``."""
    return account.id, str(period), account.created_at, account.updated_at


def _db(conn):
    """``conn``, or ``_NeedsDatabase`` when there is none (the month to date from memory only)."""
    if conn is None:
        raise _NeedsDatabase
    return conn


def _check_account_id(account_id: str) -> None:
    if not ACCOUNT_ID.match(account_id):
        raise AccountNotFound(account_id)  # cannot exist: account ids are checked at creation


__all__ = ["MeteringService", "AccountNotFound", "MonthToDate"]
