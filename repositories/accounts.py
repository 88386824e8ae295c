"""Accounts and their terms history (``accounts``, ``account_terms``).

The history is append-only and effective-dated; ``accounts`` keeps the terms in force as of the
last change (plan, seats, overage, pricing) for listings and the API's hot path.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.periods import Period
from billing.terms import Terms
from models.tables import account_terms, accounts

CREATED_REASON = "account created"


# ---- accounts -----------------------------------------------------------------------------------
def create_account(conn: Connection, *, account_id: str, plan: str, seats: int, overage_opt_in: bool,
                   email: str | None, billing_starts_at: datetime, pricing: str = "executions") -> bool:
    """Insert the account and its first terms row (effective at ``billing_starts_at``, 00:00 UTC of a
    day). False, with nothing written, when an account with this id exists."""
    values = dict(id=account_id, plan=plan, seats=seats, overage_opt_in=overage_opt_in, email=email,
                  pricing=pricing, billing_starts_at=billing_starts_at)
    inserted = conn.execute(
        pg_insert(accounts).values(**values).on_conflict_do_nothing(index_elements=["id"])
        .returning(accounts.c.id)
    ).scalar()
    if not inserted:
        return False
    conn.execute(insert(account_terms).values(
        account_id=account_id, effective_from=billing_starts_at, plan=plan, seats=seats,
        overage_opt_in=overage_opt_in, pricing=pricing, reason=CREATED_REASON))
    return True


def get_account(conn: Connection, account_id: str):
    """The account row, or None."""
    return conn.execute(select(accounts).where(accounts.c.id == account_id)).first()


def get_accounts(conn: Connection, account_ids: list[str]) -> dict:
    """Account id -> row, for those that exist (one statement)."""
    if not account_ids:
        return {}
    return {r.id: r for r in conn.execute(select(accounts).where(accounts.c.id.in_(list(account_ids))))}


def lock_account(conn: Connection, account_id: str):
    """The account row, locked until the transaction ends (one change of terms at a time), or None."""
    return conn.execute(select(accounts).where(accounts.c.id == account_id).with_for_update()).first()


def list_accounts(conn: Connection, plan: str | None = None, limit: int = 1000):
    q = select(accounts).order_by(accounts.c.id).limit(limit)
    if plan:
        q = q.where(accounts.c.plan == plan)
    return conn.execute(q).all()


def existing_account_ids(conn: Connection, ids: list[str]) -> set[str]:
    rows = conn.execute(select(accounts.c.id).where(accounts.c.id.in_(ids))).scalars()
    return set(rows)


def set_stripe_customer(conn: Connection, account_id: str, customer_id: str) -> None:
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(stripe_customer_id=customer_id, updated_at=func.now())
    )


def set_stripe_customers(conn: Connection, customers: dict[str, str]) -> None:
    """``set_stripe_customer`` for many accounts (account id -> customer id) in one statement."""
    if customers:
        conn.execute(text(
            "UPDATE accounts AS a SET stripe_customer_id = x.c, updated_at = now() "
            "FROM unnest(CAST(:a AS text[]), CAST(:c AS text[])) AS x(a, c) WHERE a.id = x.a"),
            {"a": list(customers), "c": list(customers.values())})


# ---- the accounts a close bills -----------------------------------------------------------------------
def _billable_accounts(period: Period):
    # Enterprise accounts too: their contracts are billed by the close (billing.contracts).
    return accounts.c.billing_starts_at < period.end


def count_billable_accounts(conn: Connection, period: Period) -> int:
    return conn.execute(
        select(func.count()).select_from(accounts).where(_billable_accounts(period))
    ).scalar_one()


def account_chunks(conn: Connection, period: Period, after: str | None, chunk_size: int,
                   max_chunks: int) -> tuple[list[tuple[str | None, str, int]], str | None]:
    """Split the period's billable accounts into id ranges of ``chunk_size`` (one page at a time)."""
    q = (
        select(accounts.c.id)
        .where(_billable_accounts(period))
        .order_by(accounts.c.id)
        .limit(chunk_size * max_chunks + 1)
    )
    if after is not None:
        q = q.where(accounts.c.id > after)
    ids = list(conn.execute(q).scalars())
    more = len(ids) > chunk_size * max_chunks
    ids = ids[: chunk_size * max_chunks]
    chunks = []
    lower = after
    for i in range(0, len(ids), chunk_size):
        part = ids[i : i + chunk_size]
        chunks.append((lower, part[-1], len(part)))
        lower = part[-1]
    return chunks, (lower if more else None)


def accounts_in_range(conn: Connection, period: Period, after: str | None, upto: str):
    q = select(accounts).where(_billable_accounts(period), accounts.c.id <= upto).order_by(accounts.c.id)
    if after is not None:
        q = q.where(accounts.c.id > after)
    return conn.execute(q).all()


# ---- terms history ------------------------------------------------------------------------------------
def terms_history(conn: Connection, account_id: str):
    return conn.execute(
        select(account_terms).where(account_terms.c.account_id == account_id)
        .order_by(account_terms.c.effective_from)
    ).all()


def terms_histories(conn: Connection, account_ids: list[str], before: datetime) -> dict[str, list]:
    """Each account's terms rows effective before ``before``, oldest first (accounts without any are
    absent): what ``billing.terms.segments`` turns into a period's segments."""
    rows = conn.execute(
        select(account_terms)
        .where(account_terms.c.account_id.in_(account_ids), account_terms.c.effective_from < before)
        .order_by(account_terms.c.account_id, account_terms.c.effective_from)
    ).all()
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r.account_id, []).append(r)
    return out


def terms_at(conn: Connection, account_id: str, at: datetime):
    """The terms row in force at ``at``, or None before the billing start."""
    return conn.execute(
        select(account_terms).where(account_terms.c.account_id == account_id, account_terms.c.effective_from <= at)
        .order_by(account_terms.c.effective_from.desc()).limit(1)
    ).first()


def accounts_with_terms_from(conn: Connection, account_ids: list[str], start: datetime) -> set[str]:
    """The accounts that have terms effective at ``start`` or later."""
    if not account_ids:
        return set()
    return set(conn.execute(
        select(account_terms.c.account_id).distinct()
        .where(account_terms.c.account_id.in_(account_ids), account_terms.c.effective_from >= start)
    ).scalars())


def append_terms(conn: Connection, *, account_id: str, effective_from: datetime, terms: Terms, reason: str,
                 now: datetime) -> None:
    """Record the account's terms from ``effective_from`` (the same day again replaces that day's
    row: idempotent) and refresh the account's current terms as of ``now``. Holds the account row's
    lock until the transaction ends (changes of one account's terms run one at a time)."""
    lock_account(conn, account_id)
    values = dict(plan=terms.plan, seats=terms.seats, overage_opt_in=terms.overage_opt_in, pricing=terms.pricing)
    stmt = pg_insert(account_terms).values(account_id=account_id, effective_from=effective_from, reason=reason,
                                           **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "effective_from"],
        set_={**{k: stmt.excluded[k] for k in values}, "reason": stmt.excluded.reason},
    )
    conn.execute(stmt)
    latest = terms_at(conn, account_id, now)
    if latest is not None:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            plan=latest.plan, seats=latest.seats, overage_opt_in=latest.overage_opt_in,
            pricing=latest.pricing, updated_at=func.now()))
