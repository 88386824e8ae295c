"""Usage analytics: the seed's "data to collect" for a month and the months before it
(``tally report usage``, the API's ops page ``/ops/usage``).

Every figure comes from SQL (``repositories.analytics``: one scan of the window's executions into a
temporary aggregate, percentiles with ``percentile_cont``); this module only shapes them: Decimal money
rounded once per line, statistics to 2 decimals, percentages to 1. ``to_json`` turns the result into
what ``--json`` prints and the page's tables show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Engine

from billing.catalog import Catalog, version_windows
from billing.money import round_money
from billing.periods import Period
from repositories import analytics as repo
from services.errors import InvalidInput
from services.inputs import parse_period

MAX_MONTHS = 24
CENT = Decimal("0.01")
TENTH = Decimal("0.1")
FUNNEL = ("free", "pro", "team")
SIX_DAYS = timedelta(days=6)  # a week that began up to 6 days before the window reaches into it


def _stat(x) -> Decimal | None:
    """A statistic (percentile, mean) to 2 decimals; percentile_cont answers double precision, whose
    repr is the shortest exact decimal of it."""
    if x is None:
        return None
    return Decimal(repr(x) if isinstance(x, float) else x).quantize(CENT, rounding=ROUND_HALF_UP)


def _percent(part, whole) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(TENTH, rounding=ROUND_HALF_UP)


def _bucket_label(i: int) -> str:
    edges = repo.HISTOGRAM_EDGES
    low = edges[i - 1]
    return f"{low:,}+" if i == len(edges) else f"{low:,}–{edges[i] - 1:,}"


@dataclass(frozen=True)
class Window:
    period: Period
    months: list[Period]  # oldest first, ``period`` last

    @property
    def start(self):
        return self.months[0].start


def window(period_text: str, months: int) -> Window:
    period = parse_period(period_text)
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_MONTHS:
        raise InvalidInput("months", f"must be a whole number from 1 to {MAX_MONTHS}")
    ms = [period]
    while len(ms) < months:
        ms.insert(0, ms[0].previous())
    return Window(period, ms)


def usage_analytics(engine: Engine, catalog: Catalog, period_text: str, months: int = 3,
                    platform_id: int | None = None) -> dict:
    """The seven measures for ``period`` (and the ``months - 1`` before it where a measure has a
    history), over every account or a platform's accounts."""
    w = window(period_text, months)
    p = w.period
    base = p.previous()  # churn compares the month before with this one
    scan_start = min(w.start, base.start)
    versions = version_windows(catalog, scan_start, p.end)
    model_costs = [(v.version, code, m.cost_input_per_mtok, m.cost_output_per_mtok)
                   for v in catalog.versions for code, m in v.models.items()]
    month_names = [str(m) for m in w.months]
    with engine.begin() as conn:
        repo.load_usage(conn, scan_start, p.end, versions, p.start, platform_id)
        per_user = repo.executions_per_user(conn)
        histogram = repo.executions_histogram(conn, str(p))
        tokens = repo.tokens_per_execution(conn, p.start, p.end, platform_id)
        weekly = repo.model_mix_by_week(conn)
        monthly = repo.model_mix_by_month(conn)
        byok = repo.byok_adoption(conn)
        funnel = repo.conversion_funnel(conn, p.end, platform_id)
        changes = repo.plan_changes(conn, w.start, p.end, platform_id)
        churn = repo.churn_by_decile(conn, str(base), str(p), base.end, p.end)
        tiers = repo.tiers(conn, str(p), p.end, model_costs, platform_id)

    in_window = set(month_names)
    month_totals: dict[str, int] = {}
    for r in monthly:
        month_totals[r.month] = month_totals.get(r.month, 0) + r.executions
    return {
        "period": str(p),
        "months": month_names,
        "executions_per_user": [
            {"month": r.month, "users": r.users, "executions": int(r.executions), "mean": _stat(r.mean),
             "median": _stat(r.pct[0]), "p95": _stat(r.pct[1]), "p99": _stat(r.pct[2]), "max": int(r.max)}
            for r in per_user if r.month in in_window],
        "executions_histogram": [
            {"bucket": _bucket_label(i), "low": repo.HISTOGRAM_EDGES[i - 1],
             "high": repo.HISTOGRAM_EDGES[i] - 1 if i < len(repo.HISTOGRAM_EDGES) else None,
             "users": histogram.get(i, 0)}
            for i in range(1, len(repo.HISTOGRAM_EDGES) + 1)],
        "tokens_per_execution": [
            {"category": r.category, "model": r.model, "executions": r.executions,
             "mean_input": _stat(r.mean_input), "mean_output": _stat(r.mean_output),
             "median": _stat(r.pct[0]), "p95": _stat(r.pct[1])} for r in tokens],
        "model_mix": {
            "weeks": [{"week": r.week.isoformat(), "model": r.model, "executions": int(r.executions)}
                      for r in weekly if r.week >= w.start.date() - SIX_DAYS],
            "months": [{"month": r.month, "model": r.model, "executions": int(r.executions),
                        "share_percent": _percent(r.executions, month_totals[r.month])}
                       for r in monthly if r.month in in_window],
        },
        "byok": [
            {"month": r.month, "users": r.users, "byok_users": r.byok_users,
             "byok_users_percent": _percent(r.byok_users, r.users), "executions": int(r.executions),
             "byok_executions": int(r.byok_executions),
             "byok_executions_percent": _percent(r.byok_executions, r.executions)}
            for r in byok if r.month in in_window],
        "funnel": {
            "stages": [{"plan": plan, "accounts": n, "percent_of_previous": None if i == 0 else _percent(n, funnel[i - 1])}
                       for i, (plan, n) in enumerate(zip(FUNNEL, funnel))],
            "plan_changes": [{"month": r.month, "from": r.from_plan, "to": r.to_plan, "accounts": r.accounts}
                             for r in changes],
        },
        "churn": {
            "base_month": str(base),
            "month": str(p),
            "deciles": [
                {"decile": r.decile, "accounts": r.accounts, "min_executions": int(r.min_executions),
                 "max_executions": int(r.max_executions), "stopped": r.stopped, "downgraded": r.downgraded,
                 "churned": r.churned, "churn_percent": _percent(r.churned, r.accounts)} for r in churn],
        },
        "tiers": [_tier(r) for r in tiers],
    }


def _tier(r) -> dict:
    revenue = round_money(Decimal(r.revenue))
    cost = round_money(Decimal(r.cost or 0))
    return {"plan": r.plan, "accounts": r.accounts, "executions": int(r.executions), "invoices": r.invoices,
            "revenue": revenue, "llm_cost": cost, "margin": revenue - cost,
            "margin_percent": _percent(revenue - cost, revenue) if r.invoices else None}


def to_json(value):
    """Decimals as strings (money and statistics never become floats), recursively."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


__all__ = ["usage_analytics", "to_json", "window", "MAX_MONTHS"]
