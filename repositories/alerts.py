"""Budgets, budget crossings, kills, anomalies and the fallback scan (``account_budgets``,
``budget_crossings``, ``execution_kills``, ``anomalies``, ``alert_cursors``), and what the usage
observer reads of executions and counters to evaluate a batch.

Every write that records an alert is idempotent by a unique key (a crossing per account, period and
threshold; a kill per execution; one unresolved anomaly per account): the caller writes the notice
into the outbox in the same transaction only when its record was really inserted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, text

from billing.alerts import MonthUsage
from billing.entitlements import MonthCounter
from billing.periods import Period
from repositories.usage import AccountSnapshot


# ---- budgets --------------------------------------------------------------------------------------
def set_budget(conn: Connection, account_id: str, amount: Decimal) -> None:
    conn.execute(text(
        "INSERT INTO account_budgets (account_id, amount) VALUES (:a, :amount) "
        "ON CONFLICT (account_id) DO UPDATE SET amount = EXCLUDED.amount, updated_at = now()"
    ), {"a": account_id, "amount": amount})


def clear_budget(conn: Connection, account_id: str) -> None:
    conn.execute(text("DELETE FROM account_budgets WHERE account_id = :a"), {"a": account_id})


def budget_of(conn: Connection, account_id: str) -> Decimal | None:
    return conn.execute(text("SELECT amount FROM account_budgets WHERE account_id = :a"),
                        {"a": account_id}).scalar()


def crossings_of(conn: Connection, account_id: str, period: Period):
    return conn.execute(text(
        "SELECT threshold, budget, charges, notified, crossed_at FROM budget_crossings "
        "WHERE account_id = :a AND period = :p ORDER BY threshold"), {"a": account_id, "p": str(period)}).all()


def record_crossings(conn: Connection, *, account_id: str, period: Period, thresholds: tuple[int, ...],
                     budget: Decimal, charges: Decimal) -> list[int]:
    """Record the thresholds as crossed in the period; returns those this call inserted (a concurrent
    writer or an earlier batch may have recorded the others). The highest inserted one is marked
    ``notified``: the caller sends its notice in this transaction."""
    inserted = sorted(conn.execute(text(
        """
        INSERT INTO budget_crossings (account_id, period, threshold, budget, charges, notified)
        SELECT :a, :p, t, :budget, :charges, false FROM unnest(CAST(:ts AS int[])) AS t
        ORDER BY t
        ON CONFLICT DO NOTHING
        RETURNING threshold
        """), {"a": account_id, "p": str(period), "ts": list(thresholds), "budget": budget,
               "charges": charges}).scalars())
    if inserted:
        conn.execute(text("UPDATE budget_crossings SET notified = true WHERE account_id = :a AND period = :p "
                          "AND threshold = :t"), {"a": account_id, "p": str(period), "t": inserted[-1]})
    return inserted


# ---- what the usage observer reads per batch ------------------------------------------------------------
@dataclass(frozen=True)
class WatchedAccount(AccountSnapshot):
    """An account of a batch, as the alert rules need it: the entitlement's snapshot (``paused_anomaly``:
    an anomaly is open or confirmed) plus its budget, the thresholds noticed and its month so far."""

    budget: Decimal | None = None  # set by the user; None: the plan's default
    noticed: tuple[int, ...] = ()  # budget thresholds already crossed this period
    quiet_until: datetime | None = None  # end of the last resumed anomaly's window: older executions never count again
    usage: MonthUsage = MonthUsage(0, 0)  # the period's counters, summed for the budget ceiling
    recorded: int = 0  # every execution of the period so far, sandbox tries included


_WATCHED = """
WITH a AS (
    SELECT id, plan, seats, overage_opt_in, pricing, status, billing_starts_at, created_at, updated_at
    FROM accounts WHERE id = ANY(%(ids)s::text[])
), c AS (
    SELECT u.account_id COLLATE "C" AS account_id,
           sum(u.executions) FILTER (WHERE NOT u.sandbox) AS used,
           count(*) FILTER (WHERE NOT u.sandbox) AS lines,
           sum(u.executions) AS recorded,
           array_agg(u.model) FILTER (WHERE tokens) AS t_model,
           array_agg(u.input_tokens) FILTER (WHERE tokens) AS t_in,
           array_agg(u.output_tokens) FILTER (WHERE tokens) AS t_out
    FROM usage_counters u JOIN a ON a.id = u.account_id,
         LATERAL (SELECT a.pricing = 'tokens' AND NOT u.sandbox AND NOT u.byok AS tokens) t
    WHERE u.account_id = ANY(%(ids)s::text[]) AND u.period = %(p)s
    GROUP BY u.account_id COLLATE "C"  -- bytewise: grouping needs no locale-aware sort
), crossed AS (
    SELECT account_id, array_agg(threshold) AS noticed FROM budget_crossings
    WHERE account_id = ANY(%(ids)s::text[]) AND period = %(p)s GROUP BY account_id
), anomaly AS (
    SELECT account_id, bool_or(state IN ('open', 'confirmed')) AS paused,
           max(window_end) FILTER (WHERE state = 'resumed') AS quiet_until
    FROM anomalies WHERE account_id = ANY(%(ids)s::text[]) GROUP BY account_id
)
SELECT a.id, a.plan, a.seats, a.overage_opt_in, a.pricing, a.status, a.billing_starts_at, a.created_at,
       a.updated_at, b.amount, crossed.noticed, coalesce(anomaly.paused, false), anomaly.quiet_until,
       c.used, c.lines, c.t_model, c.t_in, c.t_out, c.recorded
FROM a LEFT JOIN account_budgets b ON b.account_id = a.id
       LEFT JOIN c ON c.account_id = a.id
       LEFT JOIN crossed ON crossed.account_id = a.id
       LEFT JOIN anomaly ON anomaly.account_id = a.id
"""


def watched_accounts(conn: Connection, account_ids: list[str], period: Period) -> list[WatchedAccount]:
    """The batch's accounts with their budget, noticed thresholds, pause and month so far: one query
    for the whole batch, aggregated in Postgres (one row per account), on the driver connection."""
    with conn.connection.driver_connection.cursor() as cur:
        rows = cur.execute(_WATCHED, {"ids": account_ids, "p": str(period)}).fetchall()
    out = []
    for r in rows:
        tokens = ()
        if r[15]:  # per model, platform-key rows of several byok/sandbox keys summed
            sums: dict[str, list[int]] = {}
            for model, tin, tout in zip(r[15], r[16], r[17]):
                t = sums.setdefault(model, [0, 0])
                t[0] += tin
                t[1] += tout
            tokens = tuple((m, t[0], t[1]) for m, t in sums.items())
        out.append(WatchedAccount(*r[:9], paused_anomaly=r[11], budget=r[9], noticed=tuple(sorted(r[10] or ())),
                                  quiet_until=r[12], usage=MonthUsage(int(r[13] or 0), int(r[14] or 0), tokens),
                                  recorded=int(r[18] or 0)))
    return out


def month_counters(conn: Connection, account_id: str, period: Period) -> list[MonthCounter]:
    """One account's month-to-date counters (to rate its month when the ceiling allows a crossing)."""
    rows = conn.execute(text(
        "SELECT model, byok, sandbox, executions, input_tokens, output_tokens, cost_usd FROM usage_counters "
        "WHERE account_id = :a AND period = :p"), {"a": account_id, "p": str(period)})
    return [MonthCounter(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), Decimal(r[6])) for r in rows]


def executions_between(conn: Connection, starts: dict[str, datetime], end: datetime,
                       ahead: timedelta | None = None) -> dict[str, tuple[int, int]]:
    """Per account: (executions with ``starts[account] <= occurred_at < end``, the same up to ``end +
    ahead``) in one statement of index range scans; absent: none."""
    if not starts:
        return {}
    rows = conn.execute(text(
        """
        SELECT w.account_id, count(*) FILTER (WHERE e.occurred_at < :end), count(*)
        FROM unnest(CAST(:ids AS text[]), CAST(:starts AS timestamptz[])) AS w(account_id, starts)
        JOIN executions e ON e.account_id = w.account_id AND e.occurred_at >= w.starts AND e.occurred_at < :upto
        GROUP BY 1
        """), {"ids": list(starts), "starts": list(starts.values()), "end": end, "upto": end + (ahead or timedelta(0))})
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


@dataclass(frozen=True)
class FallbackCandidate:
    event_id: str
    account_id: str
    agent_id: str
    model: str
    requested_model: str
    input_tokens: int
    output_tokens: int
    occurred_at: datetime


def fallback_candidates(conn: Connection, account_ids: list[str]) -> list[FallbackCandidate]:
    """Executions that ran on another model than requested, recorded since each account's cursor
    (only these rows are in the partial index), oldest first."""
    rows = conn.execute(text(
        """
        SELECT e.event_id, e.account_id, e.agent_id, e.model, e.requested_model, e.input_tokens, e.output_tokens,
               e.occurred_at
        FROM executions e LEFT JOIN alert_cursors c ON c.account_id = e.account_id
        WHERE e.account_id = ANY(CAST(:ids AS text[]))
          AND e.requested_model IS NOT NULL AND e.requested_model <> e.model
          AND e.ingested_at >= coalesce(c.fallbacks_from, '-infinity')
        ORDER BY e.occurred_at, e.event_id
        """), {"ids": account_ids})
    return [FallbackCandidate(*r) for r in rows]


def advance_fallback_cursors(conn: Connection, account_ids: list[str], margin: timedelta) -> None:
    """Later scans start ``margin`` before now (this transaction's start): a batch whose transaction
    began earlier but committed after this scan is still read, as long as it took less than ``margin``."""
    conn.execute(text(
        """
        INSERT INTO alert_cursors (account_id, fallbacks_from)
        SELECT a, now() - CAST(:margin AS interval) FROM unnest(CAST(:ids AS text[])) AS a ORDER BY a
        ON CONFLICT (account_id) DO UPDATE SET fallbacks_from = greatest(alert_cursors.fallbacks_from,
                                                                          EXCLUDED.fallbacks_from)
        """), {"ids": sorted(set(account_ids)), "margin": margin})


def existing_dedupe_keys(conn: Connection, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    return set(conn.execute(text("SELECT dedupe_key FROM notifications WHERE dedupe_key = ANY(CAST(:k AS text[]))"),
                            {"k": keys}).scalars())


# ---- the loop rule: an agent's recent costs, kills ------------------------------------------------------
def agent_recent_costs(conn: Connection, platform_id: int, account_id: str, agent_id: str,
                       limit: int) -> list[Decimal] | None:
    """The recorded costs of the agent's most recent ``limit`` executions (newest first); None when
    the account does not exist or belongs to another platform. One round trip on the driver
    connection (the cost-verdict hot path)."""
    with conn.connection.driver_connection.cursor() as cur:
        row = cur.execute(
            """
            SELECT a.platform_id = %(platform)s,
                   ARRAY(SELECT e.cost_usd FROM executions e
                         WHERE e.account_id = a.id AND e.agent_id = %(agent)s AND e.cost_usd IS NOT NULL
                         ORDER BY e.occurred_at DESC LIMIT %(limit)s)
            FROM accounts a WHERE a.id = %(account)s
            """, {"platform": platform_id, "account": account_id, "agent": agent_id, "limit": limit}).fetchone()
    if row is None or not row[0]:
        return None
    return list(row[1])


def record_kill(conn: Connection, *, execution_id: str, account_id: str, agent_id: str, cost: Decimal,
                baseline: Decimal, threshold: Decimal, multiplier: Decimal, history_size: int, reason: str) -> bool:
    """Record a kill once per execution; False when it was already recorded (the first one stands)."""
    return conn.execute(text(
        """
        INSERT INTO execution_kills (execution_id, account_id, agent_id, cost, baseline, threshold, multiplier,
                                     history_size, reason)
        VALUES (:e, :a, :g, :cost, :baseline, :threshold, :multiplier, :n, :reason)
        ON CONFLICT (execution_id) DO NOTHING
        RETURNING execution_id
        """), {"e": execution_id, "a": account_id, "g": agent_id, "cost": cost, "baseline": baseline,
               "threshold": threshold, "multiplier": multiplier, "n": history_size, "reason": reason}).first() is not None


def kill_of(conn: Connection, execution_id: str):
    return conn.execute(text("SELECT * FROM execution_kills WHERE execution_id = :e"), {"e": execution_id}).first()


def kills_of(conn: Connection, account_id: str, since: datetime | None = None, limit: int = 100):
    return conn.execute(text(
        "SELECT * FROM execution_kills WHERE account_id = :a AND killed_at >= coalesce(CAST(:since AS timestamptz), '-infinity') "
        "ORDER BY killed_at DESC, execution_id LIMIT :limit"), {"a": account_id, "since": since, "limit": limit}).all()


# ---- anomalies -------------------------------------------------------------------------------------------
def open_anomaly(conn: Connection, *, account_id: str, workflow_id: str, window_start: datetime,
                 window_end: datetime, evidence: dict) -> int | None:
    """Pause the account with a new open anomaly; None when it already has one open or confirmed (or
    this very anomaly exists): then nothing is written."""
    return conn.execute(text(
        """
        INSERT INTO anomalies (account_id, workflow_id, window_start, window_end, evidence)
        VALUES (:a, :w, :start, :end, CAST(:evidence AS jsonb))
        ON CONFLICT DO NOTHING
        RETURNING id
        """), {"a": account_id, "w": workflow_id, "start": window_start, "end": window_end,
               "evidence": _json(evidence)}).scalar()


def _json(doc: dict) -> str:
    import json

    return json.dumps(doc, sort_keys=True)


def anomalies_to_review(conn: Connection, limit: int = 100):
    """Unresolved anomalies whose review workflow has not been started (oldest first)."""
    return conn.execute(text(
        "SELECT * FROM anomalies WHERE review_started_at IS NULL AND state IN ('open', 'confirmed') "
        "ORDER BY id LIMIT :limit"), {"limit": limit}).all()


def mark_reviews_started(conn: Connection, anomaly_ids: list[int]) -> None:
    conn.execute(text("UPDATE anomalies SET review_started_at = now() WHERE id = ANY(CAST(:ids AS bigint[])) "
                      "AND review_started_at IS NULL"), {"ids": anomaly_ids})


def get_anomaly(conn: Connection, anomaly_id: int):
    return conn.execute(text("SELECT * FROM anomalies WHERE id = :id"), {"id": anomaly_id}).first()


def anomaly_by_workflow(conn: Connection, workflow_id: str):
    return conn.execute(text("SELECT * FROM anomalies WHERE workflow_id = :w"), {"w": workflow_id}).first()


def list_anomalies(conn: Connection, states: tuple[str, ...] = ("open", "confirmed"), account_id: str | None = None,
                   limit: int = 200):
    return conn.execute(text(
        "SELECT * FROM anomalies WHERE state = ANY(CAST(:states AS text[])) "
        "AND (CAST(:a AS text) IS NULL OR account_id = :a) ORDER BY opened_at DESC, id DESC LIMIT :limit"),
        {"states": list(states), "a": account_id, "limit": limit}).all()


def decide_anomaly(conn: Connection, anomaly_id: int, *, to_state: str, from_states: tuple[str, ...], by: str,
                   reason: str):
    """Move the anomaly to ``to_state`` if it is in one of ``from_states``; the updated row, or None."""
    return conn.execute(text(
        """
        UPDATE anomalies SET state = :to, decided_at = now(), decided_by = :by, decision_reason = :reason
        WHERE id = :id AND state = ANY(CAST(:from AS text[]))
        RETURNING *
        """), {"id": anomaly_id, "to": to_state, "from": list(from_states), "by": by, "reason": reason}).first()


# ---- the trend rule -------------------------------------------------------------------------------------
def trailing_invoice_totals(conn: Connection, account_ids: list[str], period: Period,
                            months: int) -> dict[str, list[Decimal]]:
    """Each account's invoice totals of the ``months`` calendar months before ``period``, most recent
    first (only months it was invoiced for; drafts and void invoices do not count)."""
    first = period
    for _ in range(months):
        first = first.previous()
    rows = conn.execute(text(
        """
        SELECT account_id, period, total FROM invoices
        WHERE account_id = ANY(CAST(:ids AS text[])) AND period >= :first AND period < :this
          AND status NOT IN ('draft', 'void')
        ORDER BY account_id, period DESC
        """), {"ids": account_ids, "first": str(first), "this": str(period)})
    out: dict[str, list[Decimal]] = {}
    for r in rows:
        out.setdefault(r.account_id, []).append(r.total)
    return out
