"""Reports over closed periods: revenue beside our LLM cost, and a period's totals by plan."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine

from billing.periods import Period
from repositories import reports
from repositories.reports import PeriodTotals
from services.errors import InvalidInput
from services.inputs import parse_period

MARGIN_GROUPS = ("plan", "account", "model")


@dataclass(frozen=True)
class MarginRow:
    key: str | None
    invoices: int
    executions: int
    revenue: Decimal
    cost: Decimal  # to the cent
    margin: Decimal
    margin_percent: Decimal | None  # None without revenue


def margin(engine: Engine, period_text: str, by: str = "plan") -> list[MarginRow]:
    """Revenue beside our LLM cost (platform keys; BYOK costs us nothing) by plan, account or model.

    By model, revenue is what usage and token lines charged for that model, and cost is the LLM cost
    of the executions behind those lines.
    """
    if by not in MARGIN_GROUPS:
        raise InvalidInput("by", f"{by!r} is not one of {', '.join(MARGIN_GROUPS)}")
    period = parse_period(period_text)
    with engine.begin() as conn:
        rows = reports.margin_report(conn, period, by)
    out = []
    for r in rows:
        revenue = r.revenue if r.revenue is not None else Decimal("0.00")
        cost = (r.cost or Decimal(0)).quantize(Decimal("0.01"))
        out.append(MarginRow(r.key, r.invoices, int(r.executions or 0), revenue, cost, revenue - cost,
                             (revenue - cost) / revenue * 100 if revenue else None))
    return out


@dataclass(frozen=True)
class PeriodSummary:
    totals: list[PeriodTotals]  # by plan
    auto_conversions: int  # PAYG accounts moved to Pro from the next period


def period_summary(engine: Engine, period: Period) -> PeriodSummary:
    with engine.begin() as conn:
        return PeriodSummary(reports.period_totals(conn, period), reports.auto_conversions(conn, period))
