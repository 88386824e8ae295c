"""Rating one account for one billing period (per-execution pricing).

Pure functions: counts in, invoice lines out. Every line amount is rounded to whole cents exactly
once (``round_money(quantity * unit_price)``); unit prices keep their sub-cent precision.

Billable executions are those past the included quota in time order (``occurred_at``, then event
id). ``split_billable`` is the reference implementation of that rule; production computes the same
per-model counts in SQL with ``row_number() over (order by occurred_at, event_id)`` and tests compare
the two.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from enum import Enum

from billing.catalog import CatalogVersion, Plan
from billing.errors import RatingError
from billing.money import ZERO, format_rate, format_usd, round_money


_RATING_CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class ModelUsage:
    """One model's executions in the period; ``billable`` = how many fall past the included quota."""

    model: str
    executions: int
    billable: int


@dataclass(frozen=True)
class AccountTerms:
    plan: str
    seats: int = 1
    overage_opt_in: bool = False


class LineKind(str, Enum):
    base_fee = "base_fee"
    included_usage = "included_usage"
    usage = "usage"
    blocked_usage = "blocked_usage"
    cap_adjustment = "cap_adjustment"


@dataclass(frozen=True)
class RatedLine:
    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    model: str | None = None


@dataclass(frozen=True)
class RatedInvoice:
    plan: str
    catalog_version: str
    lines: tuple[RatedLine, ...]
    executions: int
    billable_executions: int
    subtotal: Decimal
    total: Decimal


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _n(count: int, noun: str = "execution") -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _check_seats(plan: Plan, seats: int) -> None:
    if not _is_int(seats) or seats < 1:
        raise RatingError(f"must be an integer >= 1, got {seats!r}", field="seats")
    if not plan.fee_per_seat and seats != 1:
        raise RatingError(
            f"must be 1 for plan {plan.code!r} (only per-seat plans have several seats), got {seats}",
            field="seats",
        )


def included_executions(plan: Plan, seats: int = 1) -> int:
    """The period's included quota: ``included_executions`` (x seats for per-seat plans)."""
    _check_seats(plan, seats)
    return plan.included_executions * seats if plan.fee_per_seat else plan.included_executions


def split_billable(events: Iterable[tuple[datetime, str, str]], included: int) -> dict[str, ModelUsage]:
    """Reference rule: events ``(occurred_at, event_id, model)`` in any order, sorted by
    ``(occurred_at, event_id)``; the first ``included`` are included, the rest billable.

    Returns per-model counts keyed by model code (sorted). ``occurred_at`` must be tz-aware;
    event ids must be unique.
    """
    if not _is_int(included) or included < 0:
        raise RatingError(f"must be an integer >= 0, got {included!r}", field="included")
    evs = list(events)
    seen: set[str] = set()
    for occurred_at, event_id, _model in evs:
        if not isinstance(occurred_at, datetime) or occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
            raise RatingError(f"must be a timezone-aware datetime, got {occurred_at!r}", field="occurred_at")
        if event_id in seen:
            raise RatingError(f"duplicate event id {event_id!r}", field="event_id")
        seen.add(event_id)
    evs.sort(key=lambda e: (e[0], e[1]))
    executions: Counter[str] = Counter()
    billable: Counter[str] = Counter()
    for i, (_ts, _id, model) in enumerate(evs):
        executions[model] += 1
        if i >= included:
            billable[model] += 1
    return {m: ModelUsage(m, executions[m], billable[m]) for m in sorted(executions)}


def _validate_usage(catalog: CatalogVersion, usage: Sequence[ModelUsage]) -> list[ModelUsage]:
    seen: set[str] = set()
    out = []
    for u in usage:
        if not isinstance(u, ModelUsage):
            raise RatingError(f"items must be ModelUsage, got {type(u).__name__}", field="usage")
        catalog.model(u.model)  # CatalogError for an unknown model
        if u.model in seen:
            raise RatingError(f"model {u.model!r} appears more than once", field="usage")
        seen.add(u.model)
        if not _is_int(u.executions) or u.executions < 0:
            raise RatingError(f"{u.model}: must be an integer >= 0, got {u.executions!r}", field="executions")
        if not _is_int(u.billable) or not 0 <= u.billable <= u.executions:
            raise RatingError(
                f"{u.model}: must be an integer between 0 and executions ({u.executions}), got {u.billable!r}",
                field="billable",
            )
        out.append(u)
    return sorted(out, key=lambda u: u.model)


def rate_period(catalog: CatalogVersion, terms: AccountTerms, usage: Sequence[ModelUsage]) -> RatedInvoice:
    """Rate one account's period under ``catalog`` (the version in force for the period).

    Line order: base_fee, included_usage, usage (by model), blocked_usage (by model), cap_adjustment.
    Arithmetic runs in a wide private decimal context: the caller's context cannot change a bill.
    """
    with localcontext(_RATING_CONTEXT):
        return _rate_period(catalog, terms, usage)


def _rate_period(catalog: CatalogVersion, terms: AccountTerms, usage: Sequence[ModelUsage]) -> RatedInvoice:
    plan = catalog.plan(terms.plan)  # CatalogError for an unknown plan
    if plan.contract:
        raise RatingError(
            f"enterprise accounts are billed by their contract (plan {plan.code!r}), not by per-execution rating",
            field="plan",
        )
    included = included_executions(plan, terms.seats)
    rows = _validate_usage(catalog, usage)
    total_exec = sum(u.executions for u in rows)
    total_billable = sum(u.billable for u in rows)
    expected = max(0, total_exec - included)
    if total_billable != expected:
        raise RatingError(
            f"sum of billable ({total_billable:,}) must equal executions beyond the included quota "
            f"(max(0, {total_exec:,} - {included:,}) = {expected:,})",
            field="billable",
        )

    lines: list[RatedLine] = []
    # 1. base fee
    if plan.monthly_fee > 0:
        if plan.fee_per_seat:
            lines.append(RatedLine(
                LineKind.base_fee,
                f"{plan.name} plan — {_n(terms.seats, 'seat')} × {format_usd(plan.monthly_fee)}",
                Decimal(terms.seats), plan.monthly_fee, round_money(plan.monthly_fee * terms.seats),
            ))
        else:
            lines.append(RatedLine(
                LineKind.base_fee, f"{plan.name} plan — monthly fee",
                Decimal(1), plan.monthly_fee, round_money(plan.monthly_fee),
            ))
    # 2. included usage (informational)
    if included > 0 and total_exec > 0:
        used = min(total_exec, included)
        lines.append(RatedLine(
            LineKind.included_usage, f"Included executions ({used:,} of {included:,})",
            Decimal(used), ZERO, ZERO,
        ))
    # 3./4. billable executions, one line per model
    billed = plan.overage_rate is not None and (terms.overage_opt_in or not plan.overage_requires_opt_in)
    usage_sum = ZERO
    for u in rows:
        if u.billable == 0:
            continue
        if billed:
            assert plan.overage_rate is not None
            label = "Overage" if included > 0 else "Usage"
            amount = round_money(Decimal(u.billable) * plan.overage_rate)
            usage_sum += amount
            lines.append(RatedLine(
                LineKind.usage,
                f"{label} — {u.model}: {_n(u.billable)} × {format_rate(plan.overage_rate)}",
                Decimal(u.billable), plan.overage_rate, amount, u.model,
            ))
        else:
            lines.append(RatedLine(
                LineKind.blocked_usage,
                f"Blocked beyond included quota — {u.model}: {_n(u.billable)} (not billed)",
                Decimal(u.billable), ZERO, ZERO, u.model,
            ))
    # 5. usage cap
    if plan.usage_cap is not None and usage_sum > plan.usage_cap:
        adj = round_money(plan.usage_cap - usage_sum)
        lines.append(RatedLine(
            LineKind.cap_adjustment, f"{plan.name} cap ({format_usd(plan.usage_cap)})",
            Decimal(1), adj, adj,
        ))

    subtotal = round_money(sum((line.amount for line in lines), ZERO))
    if subtotal < 0:  # pragma: no cover - impossible by construction (cap > 0, prices >= 0)
        raise RatingError(f"rated subtotal is negative ({subtotal})", field="total")
    return RatedInvoice(
        plan=plan.code,
        catalog_version=catalog.version,
        lines=tuple(lines),
        executions=total_exec,
        billable_executions=total_billable,
        subtotal=subtotal,
        total=subtotal,
    )


__all__ = [
    "ModelUsage",
    "AccountTerms",
    "LineKind",
    "RatedLine",
    "RatedInvoice",
    "included_executions",
    "split_billable",
    "rate_period",
]
