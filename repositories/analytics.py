"""The seed's "data to collect" (usage analytics), in SQL over the months' executions and the terms
history; nothing loads a month of executions into Python.

``load_usage`` scans the window's executions ONCE into small temporary tables (dropped at commit):
``analytics_usage`` per account, model, BYOK, month and catalog version, ``analytics_weeks`` per week
and model, ``analytics_cost`` per account, model, BYOK and version of the report's month. Every measure but the tokens per execution (percentiles need the executions themselves)
reads them. Call everything in one transaction.

Sandbox tries are left out throughout: they are not executions a plan counts or charges, and they cost
the platform nothing (docs/decisions.md, "Platform cost"). An account is a "user" of a month when it
has at least one execution in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, text

PLAN_RANK = {"free": 0, "payg": 1, "pro": 2, "team": 3, "enterprise": 4}
# Executions per user per month: histogram bucket lower bounds (the plans' quotas are edges: free 100,
# pro 5,000, team 25,000 a seat).
HISTOGRAM_EDGES = (1, 11, 101, 1001, 5001, 25001, 100001)
WORK_MEM = "64MB"  # for the report's transaction: the scan's hash tables and the percentiles' sorts in memory

_SCOPE = "(CAST(:platform_id AS integer) IS NULL OR a.platform_id = CAST(:platform_id AS integer))"


@dataclass(frozen=True)
class Interval:
    """A piece of the scanned window inside one month, one week and one catalog version."""

    start: datetime
    end: datetime
    month: str  # YYYY-MM
    week: date  # the Monday that starts its ISO week
    version: str | None


def intervals(start: datetime, end: datetime, versions: list[tuple[str, datetime, datetime]]) -> list[Interval]:
    """``[start, end)`` cut at every month start, week start (Monday 00:00 UTC) and catalog version start."""
    cuts = {start, end} | {v[1] for v in versions}
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        if day.day == 1 or day.weekday() == 0:
            cuts.add(day)
        day += timedelta(days=1)
    points = sorted(c for c in cuts if start <= c <= end)
    return [Interval(lo, hi, f"{lo.year:04d}-{lo.month:02d}", (lo - timedelta(days=lo.weekday())).date(),
                     _version_at(versions, lo)) for lo, hi in zip(points, points[1:])]


def _version_at(versions: list[tuple[str, datetime, datetime]], at: datetime) -> str | None:
    return next((v[0] for v in versions if v[1] <= at < v[2]), None)


def load_usage(conn: Connection, start: datetime, end: datetime, versions: list[tuple[str, datetime, datetime]],
               costed_from: datetime, platform_id: int | None) -> None:
    """One scan of ``[start, end)``'s executions (sandbox tries left out) into three small tables:
    ``analytics_usage`` (executions per account, model, BYOK, month and catalog version),
    ``analytics_weeks`` (per week and model) and ``analytics_cost`` (from ``costed_from`` on, per
    account, model, BYOK and version: recorded costs, and the tokens of executions without one).

    The scan groups by plain columns (account, model, BYOK) and counts each interval with a FILTER,
    then unnests the intervals: grouping by time expressions instead makes the planner expect a group
    per row and sort the whole window."""
    pieces = intervals(start, end, versions)
    costed = [v for v in versions if v[2] > costed_from]
    params: dict = {"start": start, "end": end, "platform_id": platform_id}
    counts, cost, uin, uout = [], [], [], []
    for i, iv in enumerate(pieces):
        params[f"s{i}"], params[f"e{i}"] = iv.start, iv.end
        counts.append(f"count(*) FILTER (WHERE e.occurred_at >= :s{i} AND e.occurred_at < :e{i})")
    for j, (_name, v_start, v_end) in enumerate(costed):
        params[f"cs{j}"], params[f"ce{j}"] = max(v_start, costed_from), v_end
        inside = f"e.occurred_at >= :cs{j} AND e.occurred_at < :ce{j}"
        cost.append(f"coalesce(sum(e.cost_usd) FILTER (WHERE {inside}), 0)")
        uin.append(f"coalesce(sum(e.input_tokens) FILTER (WHERE {inside} AND e.cost_usd IS NULL), 0)")
        uout.append(f"coalesce(sum(e.output_tokens) FILTER (WHERE {inside} AND e.cost_usd IS NULL), 0)")
    params.update(i_month=[iv.month for iv in pieces], i_week=[iv.week for iv in pieces],
                  i_version=[iv.version for iv in pieces], c_version=[v[0] for v in costed])
    scope = "" if platform_id is None else f"JOIN accounts a ON a.id = e.account_id AND {_SCOPE}"
    arrays = lambda items: f"ARRAY[{', '.join(items)}]::numeric[]" if items else "ARRAY[]::numeric[]"  # noqa: E731
    intervals_sql = """CROSS JOIN unnest(CAST(:i_month AS text[]), CAST(:i_week AS date[]),
                                        CAST(:i_version AS text[])) WITH ORDINALITY AS i(month, week, version, idx)"""
    # The scan's groups are few (accounts x models x BYOK) but its rows many: hash them in parallel
    # (the planner would sort the window), in memory.
    conn.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    conn.execute(text("SET LOCAL enable_sort = off"))
    for table in ("analytics_scan", "analytics_usage", "analytics_weeks", "analytics_cost"):
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    conn.execute(text(f"""
        CREATE TEMP TABLE analytics_scan ON COMMIT DROP AS
        SELECT e.account_id, e.model, e.byok, ARRAY[{', '.join(counts)}] AS n,
               {arrays(cost)} AS cost, {arrays(uin)} AS uin, {arrays(uout)} AS uout
        FROM executions e {scope}
        WHERE e.occurred_at >= :start AND e.occurred_at < :end AND NOT e.sandbox
        GROUP BY 1, 2, 3
    """), params)
    conn.execute(text("SET LOCAL enable_sort = on"))
    conn.execute(text(f"""
        CREATE TEMP TABLE analytics_usage ON COMMIT DROP AS
        SELECT g.account_id, g.model, g.byok, i.month, i.version, sum(g.n[i.idx]) AS executions
        FROM analytics_scan g {intervals_sql}
        WHERE g.n[i.idx] > 0
        GROUP BY 1, 2, 3, 4, 5
    """), params)
    conn.execute(text(f"""
        CREATE TEMP TABLE analytics_weeks ON COMMIT DROP AS
        SELECT i.week, g.model, sum(g.n[i.idx]) AS executions
        FROM analytics_scan g {intervals_sql}
        WHERE g.n[i.idx] > 0
        GROUP BY 1, 2
    """), params)
    conn.execute(text("""
        CREATE TEMP TABLE analytics_cost ON COMMIT DROP AS
        SELECT g.account_id, g.model, g.byok, c.version, g.cost[c.idx] AS recorded_cost,
               g.uin[c.idx] AS uncosted_input, g.uout[c.idx] AS uncosted_output
        FROM analytics_scan g CROSS JOIN unnest(CAST(:c_version AS text[])) WITH ORDINALITY AS c(version, idx)
    """), params)


# ---- 1. executions per user per month --------------------------------------------------------------------------
def executions_per_user(conn: Connection) -> list:
    """Per month: users, executions, mean, median, p95, p99 and max executions per user."""
    return conn.execute(text("""
        WITH per AS (
            SELECT month, account_id, sum(executions) AS n FROM analytics_usage GROUP BY 1, 2
        )
        SELECT month, count(*) AS users, sum(n) AS executions, avg(n) AS mean, max(n) AS max,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY n::float8) AS pct
        FROM per GROUP BY month ORDER BY month
    """)).all()


def executions_histogram(conn: Connection, month: str) -> dict[int, int]:
    """Users of ``month`` per bucket of executions (1-based index into HISTOGRAM_EDGES)."""
    rows = conn.execute(text("""
        WITH per AS (
            SELECT account_id, sum(executions) AS n FROM analytics_usage WHERE month = :m GROUP BY 1
        )
        SELECT width_bucket(n, CAST(:edges AS bigint[])) AS bucket, count(*) FROM per GROUP BY 1
    """), {"m": month, "edges": list(HISTOGRAM_EDGES)})
    return {r[0]: r[1] for r in rows}


# ---- 2. tokens per execution by skill category and model -----------------------------------------------------------
def tokens_per_execution(conn: Connection, start: datetime, end: datetime, platform_id: int | None) -> list:
    """Per (skill category, model) of ``[start, end)``: executions, mean input and output tokens, and the
    median and p95 of tokens (input + output) per execution. Skills without a recorded category are
    "uncategorised"; executions without a skill "(no skill)"."""
    scope = "" if platform_id is None else f"JOIN accounts a ON a.id = e.account_id AND {_SCOPE}"
    return conn.execute(text(f"""
        SELECT CASE WHEN e.skill_id IS NULL THEN '(no skill)' ELSE coalesce(s.category, 'uncategorised') END
                   AS category,
               e.model, count(*) AS executions, avg(e.input_tokens) AS mean_input,
               avg(e.output_tokens) AS mean_output,
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY (e.input_tokens + e.output_tokens)::float8)
                   AS pct
        FROM executions e {scope}
        LEFT JOIN skills s ON s.skill_id = e.skill_id
        WHERE e.occurred_at >= :start AND e.occurred_at < :end AND NOT e.sandbox
        GROUP BY 1, 2 ORDER BY 1, 2
    """), {"start": start, "end": end, "platform_id": platform_id}).all()


# ---- 3. model mix over time ------------------------------------------------------------------------------------------
def model_mix_by_week(conn: Connection) -> list:
    """(week's Monday, model, executions), weeks clipped to the window."""
    return conn.execute(text("""
        SELECT week, model, executions FROM analytics_weeks ORDER BY 1, 2
    """)).all()


def model_mix_by_month(conn: Connection) -> list:
    return conn.execute(text("""
        SELECT month, model, sum(executions) AS executions FROM analytics_usage
        GROUP BY 1, 2 ORDER BY 1, 2
    """)).all()


# ---- 4. BYOK adoption ----------------------------------------------------------------------------------------------------
def byok_adoption(conn: Connection) -> list:
    """Per month: users, users with at least one BYOK execution, executions, BYOK executions."""
    return conn.execute(text("""
        WITH per AS (
            SELECT month, account_id, sum(executions) AS n, sum(executions) FILTER (WHERE byok) AS byok
            FROM analytics_usage GROUP BY 1, 2
        )
        SELECT month, count(*) AS users, count(*) FILTER (WHERE byok > 0) AS byok_users,
               sum(n) AS executions, coalesce(sum(byok), 0) AS byok_executions
        FROM per GROUP BY 1 ORDER BY 1
    """)).all()


# ---- 5. the tier conversion funnel --------------------------------------------------------------------------------------
_TERMS = f"""
    SELECT t.account_id, t.plan, t.effective_from
    FROM account_terms t JOIN accounts a ON a.id = t.account_id AND {_SCOPE}
    WHERE t.effective_from < :end
"""


def conversion_funnel(conn: Connection, end: datetime, platform_id: int | None) -> tuple[int, int, int]:
    """(accounts ever on free, of those later on pro, of those later on team), by the terms history
    up to ``end``."""
    return tuple(conn.execute(text(f"""
        WITH t AS ({_TERMS}),
        f AS (SELECT account_id, min(effective_from) AS at FROM t WHERE plan = 'free' GROUP BY 1),
        p AS (SELECT f.account_id, min(t.effective_from) AS at FROM f
              JOIN t ON t.account_id = f.account_id AND t.plan = 'pro' AND t.effective_from > f.at GROUP BY 1),
        m AS (SELECT DISTINCT p.account_id FROM p
              JOIN t ON t.account_id = p.account_id AND t.plan = 'team' AND t.effective_from > p.at)
        SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM p), (SELECT count(*) FROM m)
    """), {"end": end, "platform_id": platform_id}).one())


def plan_changes(conn: Connection, start: datetime, end: datetime, platform_id: int | None) -> list:
    """(month, from plan, to plan, accounts) for every change of plan effective in ``[start, end)``."""
    return conn.execute(text(f"""
        WITH t AS ({_TERMS}),
        ch AS (SELECT account_id, effective_from,
                      lag(plan) OVER (PARTITION BY account_id ORDER BY effective_from) AS from_plan, plan AS to_plan
               FROM t)
        SELECT to_char(effective_from AT TIME ZONE 'UTC', 'YYYY-MM') AS month, from_plan, to_plan,
               count(DISTINCT account_id) AS accounts
        FROM ch WHERE from_plan IS NOT NULL AND from_plan <> to_plan AND effective_from >= :start
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    """), {"start": start, "end": end, "platform_id": platform_id}).all()


# ---- 6. churn by usage level ------------------------------------------------------------------------------------------------
def _plan_at(name: str, at_param: str) -> str:
    return f"""{name} AS (
        SELECT DISTINCT ON (t.account_id) t.account_id, t.plan FROM account_terms t
        WHERE t.effective_from < :{at_param} ORDER BY t.account_id, t.effective_from DESC)"""


def churn_by_decile(conn: Connection, base_month: str, month: str, base_end: datetime, end: datetime) -> list:
    """The users of ``base_month`` in deciles of their executions that month (ntile, ties by account
    id), and per decile how many stopped (no execution in ``month``) or downgraded (their plan at the
    end of ``month`` ranks below their plan at the end of ``base_month``: free < payg < pro < team <
    enterprise)."""
    rank = "CASE {col} " + " ".join(f"WHEN '{p}' THEN {r}" for p, r in PLAN_RANK.items()) + " END"
    return conn.execute(text(f"""
        WITH base AS (
            SELECT account_id, sum(executions) AS n FROM analytics_usage WHERE month = :base
            GROUP BY 1
        ), nxt AS (
            SELECT DISTINCT account_id FROM analytics_usage WHERE month = :month
        ), {_plan_at("plan_base", "base_end")}, {_plan_at("plan_now", "end")},
        ranked AS (
            SELECT b.account_id, b.n, ntile(10) OVER (ORDER BY b.n, b.account_id COLLATE "C") AS decile,
                   nxt.account_id IS NULL AS stopped,
                   coalesce({rank.format(col="pn.plan")} < {rank.format(col="pb.plan")}, false) AS downgraded
            FROM base b
            LEFT JOIN nxt ON nxt.account_id = b.account_id
            LEFT JOIN plan_base pb ON pb.account_id = b.account_id
            LEFT JOIN plan_now pn ON pn.account_id = b.account_id
        )
        SELECT decile, count(*) AS accounts, min(n) AS min_executions, max(n) AS max_executions,
               count(*) FILTER (WHERE stopped) AS stopped,
               count(*) FILTER (WHERE downgraded AND NOT stopped) AS downgraded,
               count(*) FILTER (WHERE stopped OR downgraded) AS churned
        FROM ranked GROUP BY decile ORDER BY decile
    """), {"base": base_month, "month": month, "base_end": base_end, "end": end}).all()


# ---- 7. platform cost, revenue and margin per tier -------------------------------------------------------------------------
def tiers(conn: Connection, month: str, end: datetime, model_costs: list[tuple[str, str, object, object]],
          platform_id: int | None) -> list:
    """Per plan for ``month``: accounts, executions, revenue (the month's invoice totals) and LLM cost
    (recorded costs of platform-key executions; the rate card's cost for the tokens of those without
    one; BYOK costs nothing). An account's plan is its invoice's, else the plan in force at the end of
    the month. ``model_costs``: (version, model, cost per 1M input, cost per 1M output)."""
    return conn.execute(text(f"""
        WITH rc AS (
            SELECT * FROM unnest(CAST(:rc_version AS text[]), CAST(:rc_model AS text[]),
                                 CAST(:rc_in AS numeric[]), CAST(:rc_out AS numeric[])) AS r(version, model, cin, cout)
        ), usage AS (
            SELECT account_id, sum(executions) AS executions FROM analytics_usage WHERE month = :month GROUP BY 1
        ), cost AS (
            SELECT c.account_id, sum(c.recorded_cost + (c.uncosted_input * coalesce(rc.cin, 0)
                                                       + c.uncosted_output * coalesce(rc.cout, 0)) / 1000000) AS cost
            FROM analytics_cost c LEFT JOIN rc ON rc.version = c.version AND rc.model = c.model
            WHERE NOT c.byok GROUP BY 1
        ), inv AS (
            SELECT i.account_id, i.plan, i.total FROM invoices i
            JOIN accounts a ON a.id = i.account_id AND {_SCOPE}
            WHERE i.period = :month AND i.status <> 'void'
        ), {_plan_at("plan_now", "end")},
        per AS (
            SELECT coalesce(u.account_id, inv.account_id) AS account_id,
                   coalesce(inv.plan, pn.plan) AS plan, coalesce(u.executions, 0) AS executions,
                   coalesce(c.cost, 0) AS cost, inv.total AS revenue
            FROM usage u FULL JOIN inv ON inv.account_id = u.account_id
            LEFT JOIN cost c ON c.account_id = u.account_id
            LEFT JOIN plan_now pn ON pn.account_id = coalesce(u.account_id, inv.account_id)
        )
        SELECT plan, count(*) AS accounts, sum(executions) AS executions, count(revenue) AS invoices,
               coalesce(sum(revenue), 0) AS revenue, sum(cost) AS cost
        FROM per GROUP BY plan ORDER BY plan
    """), {"month": month, "end": end, "platform_id": platform_id,
           "rc_version": [c[0] for c in model_costs], "rc_model": [c[1] for c in model_costs],
           "rc_in": [c[2] for c in model_costs], "rc_out": [c[3] for c in model_costs]}).all()
