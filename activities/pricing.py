"""Pricing accounts for a period from the database: the one path the close, the invoice preview and
``invoices explain`` share, so a preview and the close can never disagree on the same data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from activities import repository as repo
from billing.catalog import Catalog
from billing.money import ZERO
from billing.periods import Period
from billing.projection import reallocate_billable
from billing.rating import (
    RatedInvoice,
    TermsSegment,
    UsageRow,
    pooled_included,
    prior_period_lines,
    rate_account,
)

# How far back a close looks for usage that arrived after its period was invoiced.
LATE_USAGE_LOOKBACK_PERIODS = 3


def version_windows(catalog: Catalog, start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """(version, from, to) for every catalog version in force during ``[start, end)``."""
    out = []
    versions = catalog.versions
    for i, v in enumerate(versions):
        v_end = versions[i + 1].effective_from if i + 1 < len(versions) else end
        lo, hi = max(v.effective_from, start), min(v_end, end)
        if lo < hi:
            out.append((v.version, lo, hi))
    return out


@dataclass
class AccountRating:
    account_id: str
    segments: list[TermsSegment]
    usage: list[UsageRow]
    rated: RatedInvoice
    included: int
    prior: dict[str, int] = field(default_factory=dict)  # source period -> late executions billed

    @property
    def total(self) -> Decimal:
        return self.rated.total


def rate_accounts(conn: Connection, catalog: Catalog, period: Period, account_ids: list[str],
                  usage_end: datetime | None = None) -> dict[str, AccountRating]:
    """Rate each account's period; usage up to ``usage_end`` (default: the period end).

    Accounts with no terms in force during the period (billing not started) are left out.
    """
    segments = repo.terms_segments(conn, account_ids, period)
    included = {a: pooled_included(catalog, period.start, period.end, segs) for a, segs in segments.items()}
    end = min(usage_end or period.end, period.end)
    rows = repo.usage_rows(conn, period.start, end, segments, included,
                           version_windows(catalog, period.start, period.end)) if end > period.start else {}
    return {
        a: AccountRating(a, segments[a], rows.get(a, []),
                         rate_account(catalog, period.start, period.end, segments[a], rows.get(a, [])),
                         included[a])
        for a in account_ids if a in segments
    }


def add_prior_period_usage(conn: Connection, catalog: Catalog, period: Period,
                           ratings: dict[str, AccountRating]) -> None:
    """Append prior-period lines for usage that arrived after its period was invoiced.

    The earlier period is re-rated with everything known now (its own terms and rate cards) and
    billed by difference, so nothing is lost and nothing is billed twice.
    """
    for account_id, source, late in repo.late_usage(conn, list(ratings), period, LATE_USAGE_LOOKBACK_PERIODS):
        again = rate_accounts(conn, catalog, source, [account_id]).get(account_id)
        if again is None:
            continue
        billed = repo.billed_lines(conn, account_id, source, excluding_period=period)
        lines = prior_period_lines(str(source), again.rated, billed)
        r = ratings[account_id]
        rated = r.rated
        extra = sum((ln.amount for ln in lines), ZERO)
        r.rated = RatedInvoice(
            plan=rated.plan, catalog_version=rated.catalog_version, lines=rated.lines + tuple(lines),
            executions=rated.executions, billable_executions=rated.billable_executions,
            subtotal=rated.subtotal + extra, total=rated.total + extra,
            sandbox_executions=rated.sandbox_executions, byok_executions=rated.byok_executions,
            platform_cost=rated.platform_cost,
        )
        r.prior[str(source)] = late


@dataclass(frozen=True)
class PlanComparison:
    current_total: Decimal
    alternative_total: Decimal
    alternative_plan: str

    @property
    def saving(self) -> Decimal:
        return self.current_total - self.alternative_total


def compare_with_pro(catalog: Catalog, period: Period, rating: AccountRating) -> PlanComparison | None:
    """What a pay-as-you-go account's period would have cost on Pro with overage (same usage).

    Only for accounts on PAYG for the whole period. The billable split under Pro's quota is
    re-allocated across models in proportion (per-line rounding is all that depends on the exact
    time order: under a cent per model line).
    """
    segs = rating.segments
    if len(segs) != 1 or segs[0].plan != "payg" or segs[0].start != period.start:
        return None
    pro = TermsSegment(period.start, period.end, "pro", 1, True, segs[0].pricing)
    included = pooled_included(catalog, period.start, period.end, [pro])
    rows = reallocate_billable(rating.usage, included)
    alt = rate_account(catalog, period.start, period.end, [pro], rows)
    return PlanComparison(current_total=rating.rated.total, alternative_total=alt.total, alternative_plan="pro")
