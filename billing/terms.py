"""An account's terms over time (pure): the segments a period is priced in, and the rules every new
account and every change of terms follows (the CLI's `accounts create/change`, the close's PAYG
auto-convert).

Terms change at 00:00 UTC of a day, so a period's segments are whole days. The history is
append-only (``account_terms``); a change never reaches into a period whose invoice is final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from billing.catalog import CatalogVersion, Plan
from billing.errors import TermsError
from billing.periods import Period
from billing.rating import PRICING_MODES, TermsSegment


@dataclass(frozen=True)
class Terms:
    plan: str
    seats: int = 1
    overage_opt_in: bool = False
    pricing: str = "executions"


@dataclass(frozen=True)
class TermsChange:
    """What a change asks for; None keeps (or, for seats, derives) the current value."""

    plan: str | None = None
    seats: int | None = None
    overage_opt_in: bool | None = None
    pricing: str | None = None

    @property
    def empty(self) -> bool:
        return self.plan is None and self.seats is None and self.overage_opt_in is None and self.pricing is None


class TermsRecord(Protocol):
    """One row of an account's terms history (``account_terms``)."""

    effective_from: datetime
    plan: str
    seats: int
    overage_opt_in: bool
    pricing: str


def day_start(ts: datetime) -> datetime:
    """00:00 UTC of the instant's day: where terms (and billing) start."""
    return ts.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


# ---- the period's segments ------------------------------------------------------------------------
def segments(history: Sequence[TermsRecord], period: Period) -> list[TermsSegment]:
    """The account's terms over the period as contiguous whole-day segments: one starts at the period
    start (or the billing start) and at every change that changes something. Empty when billing
    starts after the period."""
    rows = sorted(history, key=lambda r: r.effective_from)
    out: list[TermsSegment] = []
    period_start, period_end = period.start, period.end  # each read builds a datetime (and end a Period)
    for i, r in enumerate(rows):
        nxt = rows[i + 1].effective_from if i + 1 < len(rows) else period_end
        start, end = max(r.effective_from, period_start), min(nxt, period_end)
        if start >= end:
            continue
        seg = TermsSegment(start=start, end=end, plan=r.plan, seats=r.seats,
                           overage_opt_in=r.overage_opt_in, pricing=r.pricing)
        if out and _same_terms(out[-1], seg):
            out[-1] = TermsSegment(out[-1].start, end, seg.plan, seg.seats, seg.overage_opt_in, seg.pricing)
        else:
            out.append(seg)
    return out


def _same_terms(a: TermsSegment, b: TermsSegment) -> bool:
    return (a.plan, a.seats, a.overage_opt_in, a.pricing) == (b.plan, b.seats, b.overage_opt_in, b.pricing)


def terms_of(segment: TermsSegment) -> Terms:
    return Terms(segment.plan, segment.seats, segment.overage_opt_in, segment.pricing)


# ---- rules ----------------------------------------------------------------------------------------
MAX_SEATS = 100_000  # accounts.seats is an integer column; no team buys more


def _check_seats(plan: Plan, seats: int) -> None:
    if seats < 1:
        raise TermsError("must be at least 1", field="seats")
    if seats > MAX_SEATS:
        raise TermsError(f"must be at most {MAX_SEATS:,}", field="seats")
    if seats > 1 and not plan.fee_per_seat:
        raise TermsError(f"only per-seat plans take seats; {plan.code} is billed per account", field="seats")


def _check_pricing(pricing: str) -> None:
    if pricing not in PRICING_MODES:
        raise TermsError(f"unknown pricing {pricing!r}; use executions or tokens", field="pricing")


def new_account_terms(version: CatalogVersion, terms: Terms) -> Terms:
    """A new account's terms, checked against the catalog in force: a known plan (CatalogError
    otherwise), not a contract plan, seats only on per-seat plans."""
    plan = version.plan(terms.plan)
    if plan.contract:
        raise TermsError(f"{plan.code} accounts are billed by contract; create them with a contract", field="plan")
    _check_seats(plan, terms.seats)
    _check_pricing(terms.pricing)
    return terms


def require_some_change(change: TermsChange) -> None:
    if change.empty:
        raise TermsError("nothing to change: give --plan, --seats, --overage/--no-overage or --pricing")


def changed_terms(current: Terms, change: TermsChange) -> Terms:
    """The terms after ``change``: what it names, the rest as now. A plan change without seats
    starts from one seat; the same plan keeps its seats."""
    plan = change.plan or current.plan
    if change.seats is not None:
        seats = change.seats
    else:
        seats = current.seats if plan == current.plan else 1
    return Terms(
        plan=plan,
        seats=seats,
        overage_opt_in=current.overage_opt_in if change.overage_opt_in is None else change.overage_opt_in,
        pricing=change.pricing or current.pricing,
    )


def decide_change(*, version: CatalogVersion, account_id: str, billing_starts_at: datetime,
                  effective_from: datetime, current: Terms | None, change: TermsChange,
                  invoiced: bool) -> Terms:
    """The terms an account has from ``effective_from`` (00:00 UTC of a day) after ``change``.

    ``current``: the terms in force that day (None before the billing start); ``version``: the
    catalog in force that day; ``invoiced``: an invoice of that day's period or a later one is
    already final. Refused: an empty change, a day before the billing start, an unknown or
    contract plan, seats on a per-account plan, and a period whose invoice cannot change any more.
    """
    require_some_change(change)
    if current is None or effective_from < billing_starts_at:
        raise TermsError(f"{effective_from:%Y-%m-%d} is before the account's billing start "
                         f"{billing_starts_at:%Y-%m-%d}", field="effective")
    new = changed_terms(current, change)
    plan = version.plan(new.plan)
    if plan.contract:
        raise TermsError(f"{plan.code} accounts are billed by contract", field="plan")
    _check_seats(plan, new.seats)
    _check_pricing(new.pricing)
    if invoiced:
        raise TermsError(f"{Period.of(effective_from)} is already invoiced for {account_id}; "
                         "a change can take effect from the next period", field="effective")
    return new


__all__ = ["Terms", "TermsChange", "TermsRecord", "day_start", "segments", "terms_of", "new_account_terms",
           "require_some_change", "changed_terms", "decide_change"]
