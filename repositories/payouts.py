"""Creators, premium skills, earnings, invoice payments, adjustments and payouts (SQL only; the caller
owns the transaction). Lookups return a row or None.

``credit_funded_executions`` is THE one source of credit-funded premium executions (from the prepaid
credits ledger, ``repositories.credits.premium_consumption``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.payouts import (
    CreditFundedExecution,
    Earning,
    PremiumSkill,
    PremiumUsage,
    RevenueModel,
)
from billing.periods import Period
from models.tables import (
    creator_adjustments,
    creator_earnings,
    creators,
    invoice_payments,
    invoices,
    payouts,
    premium_skills,
)

# ---- creators ----------------------------------------------------------------------------------------


def insert_creator(conn: Connection, creator_id: str, email: str) -> bool:
    """False when the creator exists already (nothing changed)."""
    row = conn.execute(pg_insert(creators).values(id=creator_id, email=email)
                       .on_conflict_do_nothing(index_elements=["id"]).returning(creators.c.id)).first()
    return row is not None


def get_creator(conn: Connection, creator_id: str):
    return conn.execute(select(creators).where(creators.c.id == creator_id)).first()


def lock_creator(conn: Connection, creator_id: str):
    return conn.execute(select(creators).where(creators.c.id == creator_id).with_for_update()).first()


def set_stripe_account(conn: Connection, creator_id: str, account_id: str) -> None:
    conn.execute(update(creators).where(creators.c.id == creator_id, creators.c.stripe_account_id.is_(None))
                 .values(stripe_account_id=account_id))


def update_account_state(conn: Connection, account_id: str, *, charges_enabled: bool, payouts_enabled: bool,
                         details_submitted: bool, transfers: str, at: datetime) -> int:
    """Apply an ``account.updated`` unless a later one was applied already (Stripe does not order events)."""
    return conn.execute(
        update(creators).where(creators.c.stripe_account_id == account_id,
                               or_(creators.c.account_event_at.is_(None), creators.c.account_event_at <= at))
        .values(charges_enabled=charges_enabled, payouts_enabled=payouts_enabled,
                details_submitted=details_submitted, transfers_capability=transfers, account_event_at=at)
    ).rowcount


# ---- premium skills ----------------------------------------------------------------------------------
def upsert_premium_skill(conn: Connection, skill: PremiumSkill) -> None:
    values = dict(skill_id=skill.skill_id, creator_id=skill.creator_id, model=skill.model.value,
                  fixed_price=skill.fixed_price)
    stmt = pg_insert(premium_skills).values(**values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["skill_id"],
                                            set_={**{k: stmt.excluded[k] for k in values if k != "skill_id"},
                                                  "updated_at": func.now()}))


def _insert_new(conn: Connection, table, rows: Sequence[dict]) -> int:
    """Insert the rows whose id is new; how many were (counted from RETURNING: a multi-row insert's
    rowcount is not reliable through the driver)."""
    return len(conn.execute(pg_insert(table).values(list(rows)).on_conflict_do_nothing(index_elements=["id"])
                            .returning(table.c.id)).all())


def premium_skills_in_force(conn: Connection) -> dict[str, PremiumSkill]:
    return {r.skill_id: PremiumSkill(r.skill_id, r.creator_id, RevenueModel(r.model), r.fixed_price)
            for r in conn.execute(select(premium_skills))}


_PREMIUM_USAGE_SQL = text(
    """
    WITH acct AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:included AS bigint[])) AS a(account_id, included)
    ), base AS (
        SELECT e.account_id, e.event_id, e.skill_id, e.model, e.byok, e.occurred_at, a.included
        FROM executions e JOIN acct a ON a.account_id = e.account_id
        WHERE e.occurred_at >= :start AND e.occurred_at < :end AND NOT e.sandbox
          AND (CAST(:known_at AS timestamptz) IS NULL OR e.ingested_at <= CAST(:known_at AS timestamptz))
          AND EXISTS (SELECT 1 FROM executions p WHERE p.account_id = e.account_id AND p.occurred_at >= :start
                      AND p.occurred_at < :end AND p.skill_id = ANY(CAST(:skills AS text[])))
    ), ranked AS (
        SELECT b.*, row_number() OVER (PARTITION BY b.account_id ORDER BY b.occurred_at, b.event_id COLLATE "C")
                    > b.included AS past_quota
        FROM base b
    )
    SELECT account_id, skill_id, model, byok, past_quota, count(*) AS n
    FROM ranked WHERE skill_id = ANY(CAST(:skills AS text[]))
    GROUP BY 1, 2, 3, 4, 5
    """
)


def premium_usage(conn: Connection, start: datetime, end: datetime, included: dict[str, int],
                  skill_ids: Sequence[str], known_at: datetime | None = None) -> dict[str, list[PremiumUsage]]:
    """Per account, its non-sandbox executions of the given skills in ``[start, end)``, by skill, model, BYOK
    and whether they were past the account's included quota (ranked by occurred_at, then event id, the
    rating's order). Only accounts that ran one of the skills are ranked at all."""
    if not included or not skill_ids:
        return {}
    ids = list(included)
    rows = conn.execute(_PREMIUM_USAGE_SQL, {"ids": ids, "included": [included[a] for a in ids],
                                             "start": start, "end": end, "skills": list(skill_ids),
                                             "known_at": known_at})
    out: dict[str, list[PremiumUsage]] = {}
    for r in rows:
        out.setdefault(r.account_id, []).append(PremiumUsage(r.skill_id, r.model, r.byok, r.past_quota, r.n))
    return out


# ---- earnings ----------------------------------------------------------------------------------------
def _earning_row(e: Earning, account_id: str, period: Period, invoice_id: int | None) -> dict:
    return dict(id=e.id, creator_id=e.creator_id, invoice_id=invoice_id, account_id=account_id, period=str(period),
                source=e.source, amount=e.amount, revenue=e.revenue, executions=e.executions,
                skills=[{"skill_id": s.skill_id, "executions": s.executions, "revenue": str(s.revenue)}
                        for s in e.skills],
                payable_from=e.payable_from)


def replace_invoice_earnings(conn: Connection, invoice_ids: Iterable[int],
                             earnings: Sequence[tuple[int, str, Period, Earning]]) -> int:
    """The earnings of invoices being (re)written as drafts: the old ones go, these are written.
    ``earnings``: (invoice id, account id, period, earning)."""
    ids = list(invoice_ids)
    if ids:
        conn.execute(creator_earnings.delete().where(creator_earnings.c.invoice_id.in_(ids)))
    rows = [_earning_row(e, a, p, i) for i, a, p, e in earnings]
    if rows:
        conn.execute(pg_insert(creator_earnings).values(rows).on_conflict_do_nothing(index_elements=["id"]))
    return len(rows)


def record_credit_earnings(conn: Connection, earnings: Sequence[tuple[str, Period, Earning]]) -> int:
    """Credit-funded earnings (payable at once): written once by id, never rewritten."""
    rows = [_earning_row(e, a, p, None) for a, p, e in earnings]
    if not rows:
        return 0
    return _insert_new(conn, creator_earnings, rows)


def credit_funded_executions(conn: Connection, period: Period) -> dict[str, list[CreditFundedExecution]]:
    """Per account, the premium-skill executions of ``period`` that prepaid credits paid for, each valued
    at what its credits cost (an execution split across two grants: the sum of both parts, each at its
    grant's purchase price; ``billing.credits.consumption_value``).
    ``activities.payouts.accrue_credit_earnings`` (run by ``payouts-YYYY-MM`` before deciding) turns them
    into earnings payable from the period's end."""
    from billing.credits import consumption_value
    from repositories import credits as credit_rows

    values: dict[tuple[str, str], tuple[str, Decimal]] = {}
    for r in credit_rows.premium_consumption(conn, period.start, period.end, sorted(premium_skills_in_force(conn))):
        _, v = values.get((r.account_id, r.event_id), (r.skill_id, Decimal(0)))
        values[(r.account_id, r.event_id)] = (r.skill_id, v + consumption_value(Decimal(r.credits), Decimal(r.price),
                                                                                Decimal(r.granted)))
    out: dict[str, list[CreditFundedExecution]] = {}
    for (account_id, event_id), (skill_id, value) in values.items():
        out.setdefault(account_id, []).append(CreditFundedExecution(event_id, skill_id, value))
    return out


def invoice_earnings_of(conn: Connection, invoice_id: int):
    return conn.execute(select(creator_earnings).where(creator_earnings.c.invoice_id == invoice_id)
                        .order_by(creator_earnings.c.id)).all()


# ---- invoice payments and adjustments -----------------------------------------------------------------
def invoice_by_stripe_id(conn: Connection, stripe_invoice_id: str):
    return conn.execute(select(invoices).where(invoices.c.stripe_invoice_id == stripe_invoice_id)).first()


def invoice_of_charge(conn: Connection, charge_id: str):
    row = conn.execute(select(invoice_payments.c.invoice_id).where(invoice_payments.c.stripe_charge_id == charge_id)).first()
    return None if row is None else conn.execute(select(invoices).where(invoices.c.id == row.invoice_id)).first()


def record_invoice_payment(conn: Connection, invoice_id: int, *, paid_at: datetime, source: str,
                           stripe_charge_id: str | None, amount: Decimal) -> bool:
    """Record that an invoice was paid (once: the first report wins); marks the invoice ``paid``."""
    row = conn.execute(pg_insert(invoice_payments).values(
        invoice_id=invoice_id, paid_at=paid_at, source=source, stripe_charge_id=stripe_charge_id, amount=amount)
        .on_conflict_do_nothing(index_elements=["invoice_id"]).returning(invoice_payments.c.invoice_id)).first()
    conn.execute(update(invoices).where(invoices.c.id == invoice_id, invoices.c.status == "open")
                 .values(status="paid", updated_at=func.now()))
    return row is not None


def invoice_payment(conn: Connection, invoice_id: int):
    return conn.execute(select(invoice_payments).where(invoice_payments.c.invoice_id == invoice_id)).first()


def adjustments_of_invoice(conn: Connection, invoice_id: int):
    return conn.execute(select(creator_adjustments).where(creator_adjustments.c.invoice_id == invoice_id)).all()


def insert_adjustments(conn: Connection, rows: Sequence[dict]) -> int:
    if not rows:
        return 0
    return _insert_new(conn, creator_adjustments, rows)


# ---- payouts -----------------------------------------------------------------------------------------
def creator_page(conn: Connection, after: str | None, limit: int) -> list[str]:
    q = select(creators.c.id).order_by(creators.c.id).limit(limit)
    if after is not None:
        q = q.where(creators.c.id > after)
    return [r.id for r in conn.execute(q)]


_BALANCE_FACTS_SQL = text(
    """
    WITH c AS (SELECT unnest(CAST(:ids AS text[])) AS creator_id),
    e AS (
        SELECT ce.creator_id, coalesce(ip.paid_at, ce.payable_from) AS at, ce.amount
        FROM creator_earnings ce LEFT JOIN invoice_payments ip ON ip.invoice_id = ce.invoice_id
        WHERE ce.creator_id = ANY(CAST(:ids AS text[]))
    )
    SELECT c.creator_id,
        (SELECT coalesce(sum(amount), 0) FROM e WHERE e.creator_id = c.creator_id AND e.at <= :start) AS earned_before,
        (SELECT coalesce(sum(amount), 0) FROM e WHERE e.creator_id = c.creator_id AND e.at > :start AND e.at <= :end)
            AS earned_now,
        (SELECT coalesce(sum(amount), 0) FROM creator_adjustments a WHERE a.creator_id = c.creator_id
            AND a.occurred_at <= :start) AS adjusted_before,
        (SELECT coalesce(sum(amount), 0) FROM creator_adjustments a WHERE a.creator_id = c.creator_id
            AND a.occurred_at > :start AND a.occurred_at <= :end) AS adjusted_now,
        (SELECT coalesce(sum(amount), 0) FROM payouts p WHERE p.creator_id = c.creator_id AND p.period < :period
            AND p.status <> 'cancelled') AS paid_before,
        (SELECT id FROM payouts p WHERE p.creator_id = c.creator_id AND p.period = :period) AS decided,
        (SELECT stripe_account_id FROM creators WHERE id = c.creator_id) AS destination
    FROM c
    """
)


def balance_facts(conn: Connection, creator_ids: list[str], period: Period):
    """Per creator: earnings payable before/within the period, adjustments before/within, what earlier
    payouts (not cancelled) took, whether this period's payout is decided, and the connected account."""
    if not creator_ids:
        return []
    return conn.execute(_BALANCE_FACTS_SQL, {"ids": creator_ids, "start": period.start, "end": period.end,
                                             "period": str(period)}).all()


def insert_payouts(conn: Connection, rows: Sequence[dict]) -> int:
    """Decisions are written once: a payout already decided is never re-decided."""
    if not rows:
        return 0
    return _insert_new(conn, payouts, rows)


def get_payout(conn: Connection, payout_id: str):
    return conn.execute(select(payouts).where(payouts.c.id == payout_id)).first()


def payouts_by_id(conn: Connection, payout_ids: Sequence[str]):
    return conn.execute(select(payouts).where(payouts.c.id.in_(list(payout_ids))).order_by(payouts.c.id)).all()


def pending_payouts(conn: Connection, period: Period, creator_ids: Sequence[str]):
    return conn.execute(select(payouts).where(payouts.c.period == str(period), payouts.c.status == "pending",
                                              payouts.c.creator_id.in_(list(creator_ids)))
                        .order_by(payouts.c.id)).all()


def destinations(conn: Connection, creator_ids: Sequence[str]) -> dict[str, str]:
    """creator id -> connected account id (creators without one are absent)."""
    rows = conn.execute(select(creators.c.id, creators.c.stripe_account_id).where(
        creators.c.id.in_(list(set(creator_ids))), creators.c.stripe_account_id.is_not(None)))
    return {r.id: r.stripe_account_id for r in rows}


def set_destinations(conn: Connection, by_payout: dict[str, str]) -> None:
    if by_payout:
        conn.execute(text("UPDATE payouts p SET destination = d.dest FROM unnest(CAST(:ids AS text[]), "
                          "CAST(:dests AS text[])) AS d(id, dest) WHERE p.id = d.id AND p.destination IS DISTINCT FROM d.dest"),
                     {"ids": list(by_payout), "dests": list(by_payout.values())})


def set_payout_outcomes(conn: Connection, outcomes: Sequence[dict], now: datetime) -> None:
    """``outcomes``: {id, status (paid|failed), stripe_transfer_id, failure_reason}; only a payout still
    pending (or failed, for a retry) moves: paid and cancelled are final."""
    if not outcomes:
        return
    conn.execute(text(
        """
        UPDATE payouts p SET status = o.status, stripe_transfer_id = coalesce(o.transfer, p.stripe_transfer_id),
            failure_reason = o.reason, attempts = p.attempts + 1, updated_at = :now,
            paid_at = CASE WHEN o.status = 'paid' THEN :now ELSE p.paid_at END
        FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:transfers AS text[]),
                    CAST(:reasons AS text[])) AS o(id, status, transfer, reason)
        WHERE p.id = o.id AND p.status IN ('pending', 'failed')
        """), {"ids": [o["id"] for o in outcomes], "statuses": [o["status"] for o in outcomes],
               "transfers": [o.get("stripe_transfer_id") for o in outcomes],
               "reasons": [o.get("failure_reason") for o in outcomes], "now": now})


def cancel_payout(conn: Connection, payout_id: str, reason: str, now: datetime) -> bool:
    return conn.execute(update(payouts).where(payouts.c.id == payout_id, payouts.c.status == "failed")
                        .values(status="cancelled", cancel_reason=reason, updated_at=now)).rowcount == 1


def list_payouts(conn: Connection, period: Period | None = None, status: str | None = None,
                 creator_id: str | None = None):
    q = select(payouts).order_by(payouts.c.period, payouts.c.id)
    if period is not None:
        q = q.where(payouts.c.period == str(period))
    if status is not None:
        q = q.where(payouts.c.status == status)
    if creator_id is not None:
        q = q.where(payouts.c.creator_id == creator_id)
    return conn.execute(q).all()


def statement_rows(conn: Connection, creator_id: str, period: Period):
    """The earnings that became payable in the period's window, with their skills (the statement)."""
    return conn.execute(text(
        """
        SELECT ce.id, ce.source, ce.amount, ce.revenue, ce.executions, ce.skills, ce.period AS usage_period,
               coalesce(ip.paid_at, ce.payable_from) AS payable_at
        FROM creator_earnings ce LEFT JOIN invoice_payments ip ON ip.invoice_id = ce.invoice_id
        WHERE ce.creator_id = :c AND coalesce(ip.paid_at, ce.payable_from) > :start
          AND coalesce(ip.paid_at, ce.payable_from) <= :end
        ORDER BY ce.id
        """), {"c": creator_id, "start": period.start, "end": period.end}).all()


def pending_earnings(conn: Connection, creator_id: str):
    """Earnings whose invoice is not paid yet (shown on the statement as not payable)."""
    return conn.execute(
        select(creator_earnings).outerjoin(invoice_payments, invoice_payments.c.invoice_id == creator_earnings.c.invoice_id)
        .where(creator_earnings.c.creator_id == creator_id, creator_earnings.c.invoice_id.is_not(None),
               invoice_payments.c.invoice_id.is_(None))).all()


def adjustments_in(conn: Connection, creator_id: str, period: Period):
    return conn.execute(select(creator_adjustments).where(
        creator_adjustments.c.creator_id == creator_id,
        and_(creator_adjustments.c.occurred_at > period.start, creator_adjustments.c.occurred_at <= period.end))
        .order_by(creator_adjustments.c.occurred_at)).all()
