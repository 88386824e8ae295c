"""Pricing accounts for a period from the database: the one path the close, the invoice preview and
``invoices explain`` share, so a preview and the close can never disagree on the same data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from activities import repository as repo
from billing.catalog import Catalog, version_windows
from billing.close import AccountRating
from billing.periods import Period
from billing.rating import pooled_included, prior_period_lines, rate_account, with_lines

# How far back a close looks for usage that arrived after its period was invoiced.
LATE_USAGE_LOOKBACK_PERIODS = 3


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
        r.rated = with_lines(r.rated, lines)
        r.prior[str(source)] = late
