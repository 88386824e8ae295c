"""Reports over closed periods: totals by plan, auto-conversions, revenue beside our LLM cost."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, func, select, text

from billing.conversion import REASON_PREFIX
from billing.periods import Period
from models.tables import account_terms


@dataclass
class PeriodTotals:
    plan: str
    accounts: int
    invoices: int
    executions: int
    total: Decimal
    pushed: int


def period_totals(conn: Connection, period: Period) -> list[PeriodTotals]:
    rows = conn.execute(
        text(
            """
            SELECT plan, count(*) AS accounts,
                   count(*) FILTER (WHERE status IN ('open','paid','void','draft','pushing','push_failed')) AS invoices,
                   coalesce(sum(executions), 0) AS executions,
                   coalesce(sum(total), 0) AS total,
                   count(*) FILTER (WHERE stripe_invoice_id IS NOT NULL AND status IN ('open','paid','void')) AS pushed
            FROM invoices WHERE period = :p GROUP BY plan ORDER BY plan
            """
        ),
        {"p": str(period)},
    )
    return [PeriodTotals(*r) for r in rows]


def margin_report(conn: Connection, period: Period, by: str):
    """Revenue beside our LLM cost for a closed period, by plan, account or model.

    By plan/account: invoice totals and invoice platform cost. By model: what usage and token lines
    charged for the model, and the platform cost of all its platform-key executions (included ones
    too), from the executions themselves and the rate card where no cost was recorded.
    """
    if by in ("plan", "account"):
        col = "plan" if by == "plan" else "account_id"
        return conn.execute(text(
            f"""
            SELECT {col} AS key, count(*) AS invoices, sum(executions) AS executions,
                   sum(total) AS revenue, sum(platform_cost) AS cost
            FROM invoices WHERE period = :p GROUP BY 1 ORDER BY 1
            """), {"p": str(period)}).all()
    return conn.execute(text(
        """
        SELECT l.model AS key, count(DISTINCT l.invoice_id) AS invoices, sum(l.line_executions) AS executions,
               sum(l.amount) AS revenue, sum(l.cost) AS cost
        FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
        WHERE i.period = :p AND l.model IS NOT NULL AND l.kind IN ('usage', 'token_usage')
        GROUP BY 1 ORDER BY 1
        """), {"p": str(period)}).all()


def auto_conversions(conn: Connection, period: Period) -> int:
    """Accounts moved from pay-as-you-go to Pro by the close of ``period``."""
    return conn.execute(
        select(func.count()).select_from(account_terms).where(
            account_terms.c.effective_from == period.next().start,
            account_terms.c.reason.like(f"{REASON_PREFIX}%"))
    ).scalar_one()
