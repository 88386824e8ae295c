"""Month-end projection and what-if re-rating from aggregated usage (pure).

Aggregated usage rows have lost the exact time order, so when the included quota changes (a
projection, a what-if on another plan) the billable executions are re-allocated across rows in
proportion to their size. Only per-line rounding depends on the exact split (under a cent per line),
so this is good for forecasts and decisions, never for invoices: invoices are ranked in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from billing.catalog import Catalog
from billing.money import ZERO
from billing.rating import RatedInvoice, TermsSegment, UsageRow, rate_account


def _merge(rows: Sequence[UsageRow]) -> list[UsageRow]:
    """Merge billable/included twins so each (segment, version, model, byok, sandbox) is one row."""
    merged: dict[tuple, UsageRow] = {}
    for r in rows:
        k = (r.segment, r.version, r.model, r.byok, r.sandbox)
        m = merged.get(k)
        merged[k] = replace(r, billable=False) if m is None else replace(
            m,
            executions=m.executions + r.executions,
            input_tokens=m.input_tokens + r.input_tokens,
            output_tokens=m.output_tokens + r.output_tokens,
            cost=m.cost + r.cost,
            uncosted_input_tokens=m.uncosted_input_tokens + r.uncosted_input_tokens,
            uncosted_output_tokens=m.uncosted_output_tokens + r.uncosted_output_tokens,
        )
    return list(merged.values())


def _split(row: UsageRow, billable: int) -> list[UsageRow]:
    """Split a merged row into an included part and a billable part, tokens and cost pro rata."""
    if billable <= 0:
        return [row]
    if billable >= row.executions:
        return [replace(row, billable=True)]
    f = Decimal(billable) / row.executions

    def part(n: int) -> int:
        return int((Decimal(n) * f).to_integral_value(ROUND_FLOOR))

    b = replace(row, billable=True, executions=billable, input_tokens=part(row.input_tokens),
                output_tokens=part(row.output_tokens), cost=row.cost * f,
                uncosted_input_tokens=part(row.uncosted_input_tokens),
                uncosted_output_tokens=part(row.uncosted_output_tokens))
    i = replace(row, billable=False, executions=row.executions - billable,
                input_tokens=row.input_tokens - b.input_tokens, output_tokens=row.output_tokens - b.output_tokens,
                cost=row.cost - b.cost, uncosted_input_tokens=row.uncosted_input_tokens - b.uncosted_input_tokens,
                uncosted_output_tokens=row.uncosted_output_tokens - b.uncosted_output_tokens)
    return [i, b]


def reallocate_billable(rows: Sequence[UsageRow], included: int) -> list[UsageRow]:
    """Rows with ``billable`` re-derived for another included quota (largest-remainder allocation)."""
    merged = _merge(rows)
    platform = [r for r in merged if not r.sandbox]
    total = sum(r.executions for r in platform)
    billable = max(0, total - included)
    shares: list[tuple[Decimal, int]] = []
    alloc: dict[int, int] = {}
    if total and billable:
        for i, r in enumerate(merged):
            if r.sandbox:
                continue
            exact = Decimal(r.executions) * billable / total
            alloc[i] = int(exact.to_integral_value(ROUND_FLOOR))
            shares.append((exact - alloc[i], i))
        left = billable - sum(alloc.values())
        for _, i in sorted(shares, key=lambda t: (-t[0], t[1]))[:left]:
            alloc[i] += 1
    out: list[UsageRow] = []
    for i, r in enumerate(merged):
        out.extend(_split(r, alloc.get(i, 0)))
    return out


def project_usage(rows: Sequence[UsageRow], factor: Decimal, included: int) -> list[UsageRow]:
    """Linear month-end projection: every count scaled by ``factor`` (period / elapsed)."""
    if factor < 1:
        raise ValueError("factor: a projection never shrinks usage (factor >= 1)")

    def s(n: int) -> int:
        return int((Decimal(n) * factor).to_integral_value(ROUND_FLOOR))

    merged = _merge(rows)
    # Executions: the projected total is floor(total x factor), spread by largest remainder, so
    # rounding per row never loses executions.
    exact = [Decimal(r.executions) * factor for r in merged]
    counts = [int(e.to_integral_value(ROUND_FLOOR)) for e in exact]
    left = int(sum(exact, Decimal(0)).to_integral_value(ROUND_FLOOR)) - sum(counts)
    for i in sorted(range(len(merged)), key=lambda i: (counts[i] - exact[i], i))[:left]:
        counts[i] += 1
    scaled = [
        replace(r, executions=n, input_tokens=s(r.input_tokens), output_tokens=s(r.output_tokens),
                cost=r.cost * factor, uncosted_input_tokens=s(r.uncosted_input_tokens),
                uncosted_output_tokens=s(r.uncosted_output_tokens))
        for r, n in zip(merged, counts)
    ]
    return reallocate_billable(scaled, included)


def projection_factor(period_start: datetime, period_end: datetime, at: datetime) -> Decimal:
    """The factor that takes usage up to ``at`` to the whole period: period length / time elapsed,
    never below 1 (1 at the period start, where nothing has elapsed yet)."""
    elapsed = (at - period_start).total_seconds()
    if elapsed <= 0:
        return Decimal(1)
    factor = Decimal(str((period_end - period_start).total_seconds())) / Decimal(str(elapsed))
    return max(factor, Decimal(1))


@dataclass(frozen=True)
class MonthProjection:
    executions: int
    total: Decimal


def project_month(catalog: Catalog, period_start: datetime, period_end: datetime, at: datetime,
                  segments: Sequence[TermsSegment], usage: Sequence[UsageRow], included: int,
                  rated: RatedInvoice) -> MonthProjection:
    """The month-end invoice if usage goes on at the pace so far (``rated``: the month to ``at``).
    Prior-period lines are late usage of earlier months: carried over as they are, never scaled."""
    factor = projection_factor(period_start, period_end, at)
    projected = rate_account(catalog, period_start, period_end, segments, project_usage(usage, factor, included))
    prior = sum((line.amount for line in rated.lines if line.source_period), ZERO)
    return MonthProjection(projected.executions, projected.total + prior)
