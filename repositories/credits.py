"""Prepaid credits in Postgres: credit accounts, purchases, grants, the append-only ledger and the
consumption's bookings. Every query of the credits capability lives here; the caller owns the
transaction and serialises writes per account with ``lock_account`` (a transaction-scoped advisory
lock), so every rule in ``billing.credits`` sees the whole ledger of the account it writes to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.credits import EntryKind, Grant, LedgerEntry, Unit
from models.tables import credit_accounts, credit_grants, credit_ledger, credit_purchases
from repositories.arrays import text_array


# ---- locking ----------------------------------------------------------------------------------------
def lock_account(conn: Connection, account_id: str) -> None:
    """Serialise every ledger write of one account until the transaction ends (consumption, grants,
    expiry, the close's usd application all take it)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('credits:' || :a, 0))"), {"a": account_id})


# ---- credit accounts ----------------------------------------------------------------------------------
def ensure_credit_account(conn: Connection, account_id: str, credits_only: bool | None = None) -> None:
    """List the account among those that hold credits (the usage observer reads only these);
    ``credits_only`` set when given, kept otherwise."""
    stmt = pg_insert(credit_accounts).values(account_id=account_id, credits_only=bool(credits_only))
    if credits_only is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["account_id"])
    else:
        stmt = stmt.on_conflict_do_update(index_elements=["account_id"],
                                          set_={"credits_only": credits_only, "updated_at": func.now()})
    conn.execute(stmt)


def credit_accounts_among(conn: Connection, account_ids: list[str]) -> dict[str, bool]:
    """{account id: credits_only} for the accounts of ``account_ids`` that hold credits (one indexed read)."""
    if not account_ids:
        return {}
    # One array parameter (not an IN list of as many parameters): the ingest asks this of every batch's
    # accounts, and rendering and binding 1,000 parameters cost ~18 ms of CPU a batch (issue 15).
    # As an array literal (repositories/arrays.py): adapting the list cost ~1 us an id more.
    return dict(conn.execute(_CREDIT_ACCOUNTS_AMONG, {"ids": text_array(account_ids)}).all())


_CREDIT_ACCOUNTS_AMONG = text(  # joined from unnest: see repositories.usage.TENANCY
    "SELECT ca.account_id, ca.credits_only FROM unnest(CAST(:ids AS text[])) AS k(id) "
    "JOIN credit_accounts ca ON ca.account_id = k.id")


# An account's credit facts: credits_only and the credits spendable at ``{at}`` (what is left of its
# grants valid then). One statement, written once, serves the single read and the check's composed read.
_FACTS_OF = """
    SELECT ca.credits_only,
           coalesce((SELECT sum(g.remaining) FROM credit_grants g
                     WHERE g.account_id = ca.account_id AND g.unit = 'credits'
                       AND g.granted_at <= {at} AND g.expires_at > {at}), 0) AS spendable
    FROM credit_accounts ca WHERE ca.account_id = {account}
"""
_ENTITLEMENT_SQL = text(_FACTS_OF.format(at=":at", account=":a"))


# The same facts as columns ``credits_only`` (NULL: the account holds no credits) and ``spendable`` of
# an account ``a``, at the parameter ``%(at)s``: composed into the entitlement check's one read
# (repositories.usage.account_with_counters), so a check is one round trip.
ENTITLEMENT_FACTS_JOIN = f"""
LEFT JOIN LATERAL ({_FACTS_OF.format(at="%(at)s", account="a.id")}) cr ON true"""


def entitlement_facts(conn: Connection, account_id: str, at: datetime) -> tuple[bool, Decimal] | None:
    """(credits_only, spendable credits at ``at``) in one round trip; None when the account holds no
    credits (the plan's answer stands)."""
    row = conn.execute(_ENTITLEMENT_SQL, {"a": account_id, "at": at}).first()
    return None if row is None else (row.credits_only, Decimal(row.spendable))


# ---- purchases ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Purchase:
    id: str
    account_id: str
    package: str
    catalog_version: str
    unit: str
    amount: Decimal
    price: Decimal
    status: str
    stripe_session_id: str | None
    checkout_url: str | None
    created_at: datetime
    settled_at: datetime | None
    detail: str | None


def _purchase(row) -> Purchase:
    return Purchase(**{k: getattr(row, k) for k in Purchase.__dataclass_fields__})


def insert_purchase(conn: Connection, *, purchase_id: str, account_id: str, package: str, catalog_version: str,
                    unit: str, amount: Decimal, price: Decimal, created_at: datetime) -> None:
    conn.execute(insert(credit_purchases).values(
        id=purchase_id, account_id=account_id, package=package, catalog_version=catalog_version, unit=unit,
        amount=amount, price=price, status="pending", created_at=created_at))


def set_checkout_session(conn: Connection, purchase_id: str, session_id: str, url: str | None) -> None:
    conn.execute(update(credit_purchases).where(credit_purchases.c.id == purchase_id)
                 .values(stripe_session_id=session_id, checkout_url=url))


def get_purchase(conn: Connection, purchase_id: str, *, for_update: bool = False) -> Purchase | None:
    q = select(credit_purchases).where(credit_purchases.c.id == purchase_id)
    if for_update:
        q = q.with_for_update()
    row = conn.execute(q).first()
    return None if row is None else _purchase(row)


def purchases_of(conn: Connection, account_id: str) -> list[Purchase]:
    rows = conn.execute(select(credit_purchases).where(credit_purchases.c.account_id == account_id)
                        .order_by(credit_purchases.c.created_at, credit_purchases.c.id))
    return [_purchase(r) for r in rows]


def pending_purchases(conn: Connection, created_before: datetime, limit: int = 500) -> list[Purchase]:
    """Purchases still pending that were created before ``created_before`` (the poll's candidates)."""
    rows = conn.execute(select(credit_purchases)
                        .where(credit_purchases.c.status == "pending", credit_purchases.c.created_at < created_before)
                        .order_by(credit_purchases.c.created_at).limit(limit))
    return [_purchase(r) for r in rows]


def settle_purchase(conn: Connection, purchase_id: str, status: str, at: datetime, detail: str | None) -> bool:
    """Move a pending purchase to ``status``; False when it was no longer pending (already settled)."""
    return conn.execute(update(credit_purchases)
                        .where(credit_purchases.c.id == purchase_id, credit_purchases.c.status == "pending")
                        .values(status=status, settled_at=at, detail=detail)
                        .returning(credit_purchases.c.id)).first() is not None


# ---- grants and the ledger -------------------------------------------------------------------------------
def _grant(row) -> Grant:
    return Grant(id=row.id, account_id=row.account_id, unit=Unit(row.unit), amount=Decimal(row.amount),
                 granted_at=row.granted_at, expires_at=row.expires_at, price=Decimal(row.price),
                 package=row.package, reference=row.reference)


def _entry(row) -> LedgerEntry:
    return LedgerEntry(id=row.id, account_id=row.account_id, grant_id=row.grant_id, kind=EntryKind(row.kind),
                       unit=Unit(row.unit), amount=Decimal(row.amount), occurred_at=row.occurred_at,
                       reference=row.reference)


def insert_grant(conn: Connection, grant: Grant, *, purchase_id: str | None = None,
                 granted_by: str | None = None) -> bool:
    """Write the grant (False when it exists: a replayed payment grants nothing twice)."""
    return conn.execute(pg_insert(credit_grants).values(
        id=grant.id, account_id=grant.account_id, unit=grant.unit.value, amount=grant.amount, price=grant.price,
        package=grant.package, purchase_id=purchase_id, reference=grant.reference, granted_by=granted_by,
        granted_at=grant.granted_at, expires_at=grant.expires_at,
    ).on_conflict_do_nothing(index_elements=["id"]).returning(credit_grants.c.id)).first() is not None


def get_grant(conn: Connection, grant_id: str) -> Grant | None:
    row = conn.execute(select(credit_grants).where(credit_grants.c.id == grant_id)).first()
    return None if row is None else _grant(row)


def grants_of(conn: Connection, account_id: str) -> list[Grant]:
    rows = conn.execute(select(credit_grants).where(credit_grants.c.account_id == account_id)
                        .order_by(credit_grants.c.granted_at, credit_grants.c.id))
    return [_grant(r) for r in rows]


def grant_audit(conn: Connection, account_id: str) -> dict[str, tuple[str | None, str | None]]:
    """{grant id: (purchase id, granted_by)}: where each grant came from."""
    return {r.id: (r.purchase_id, r.granted_by) for r in conn.execute(
        select(credit_grants.c.id, credit_grants.c.purchase_id, credit_grants.c.granted_by)
        .where(credit_grants.c.account_id == account_id))}


def ledger_of(conn: Connection, account_id: str, grant_id: str | None = None) -> list[LedgerEntry]:
    q = select(credit_ledger).where(credit_ledger.c.account_id == account_id)
    if grant_id is not None:
        q = q.where(credit_ledger.c.grant_id == grant_id)
    rows = conn.execute(q.order_by(credit_ledger.c.occurred_at, credit_ledger.c.recorded_at, credit_ledger.c.id))
    return [_entry(r) for r in rows]


def append_entries(conn: Connection, entries: list[LedgerEntry], *, invoice_id: int | None = None,
                   actor: str | None = None) -> int:
    """Append ledger entries; an id already written is skipped (idempotent). Returns how many were new."""
    if not entries:
        return 0
    return len(conn.execute(_APPEND_SQL, {
        "id": [e.id for e in entries], "account": [e.account_id for e in entries],
        "grant": [e.grant_id for e in entries], "kind": [e.kind.value for e in entries],
        "unit": [e.unit.value for e in entries], "amount": [e.amount for e in entries],
        "at": [e.occurred_at for e in entries], "ref": [e.reference for e in entries],
        "invoice": invoice_id, "actor": actor}).all())


_APPEND_SQL = text(
    """
    INSERT INTO credit_ledger (id, account_id, grant_id, kind, unit, amount, occurred_at, reference, invoice_id, actor)
    SELECT id, account_id, grant_id, kind, unit, amount, occurred_at, reference, CAST(:invoice AS bigint),
           CAST(:actor AS text)
    FROM unnest(CAST(:id AS text[]), CAST(:account AS text[]), CAST(:grant AS text[]), CAST(:kind AS text[]),
                CAST(:unit AS text[]), CAST(:amount AS numeric[]), CAST(:at AS timestamptz[]),
                CAST(:ref AS text[])) AS x(id, account_id, grant_id, kind, unit, amount, occurred_at, reference)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)


_BALANCES_SQL = text(
    """
    SELECT l.unit, sum(l.amount) AS balance,
           coalesce(sum(l.amount) FILTER (WHERE g.granted_at <= :at AND g.expires_at > :at), 0) AS spendable
    FROM credit_ledger l JOIN credit_grants g ON g.id = l.grant_id
    WHERE l.account_id = :a
    GROUP BY l.unit
    """
)


def balances(conn: Connection, account_id: str, at: datetime) -> dict[str, tuple[Decimal, Decimal]]:
    """{unit: (ledger balance, spendable at ``at``)}: sums of the ledger, nothing stored."""
    return {r.unit: (Decimal(r.balance), Decimal(r.spendable))
            for r in conn.execute(_BALANCES_SQL, {"a": account_id, "at": at})}


_DAILY_SQL = text(
    """
    SELECT date_trunc('day', occurred_at AT TIME ZONE 'UTC')::date AS day, unit, -sum(amount) AS used
    FROM credit_ledger
    WHERE account_id = :a AND kind IN ('consume', 'invoice_application') AND occurred_at >= :start
      AND occurred_at < :end
    GROUP BY 1, 2 ORDER BY 1, 2
    """
)


def consumption_per_day(conn: Connection, account_id: str, start: datetime, end: datetime):
    """(day, unit, amount used) for ``[start, end)``: the billing page's consumption per day."""
    return conn.execute(_DAILY_SQL, {"a": account_id, "start": start, "end": end}).all()


def invoice_application(conn: Connection, invoice_id: int) -> Decimal:
    """What the usd balance paid of one invoice so far (0 when nothing)."""
    return -Decimal(conn.execute(select(func.coalesce(func.sum(credit_ledger.c.amount), 0))
                                 .where(credit_ledger.c.kind == "invoice_application",
                                        credit_ledger.c.invoice_id == invoice_id)).scalar())


def accounts_with_usd(conn: Connection, account_ids: list[str]) -> set[str]:
    """Of ``account_ids``, those with usd grants (whatever is left of them)."""
    if not account_ids:
        return set()
    return set(conn.execute(select(credit_grants.c.account_id).distinct()
                            .where(credit_grants.c.unit == "usd", credit_grants.c.account_id.in_(account_ids)))
               .scalars())


# ---- consumption ---------------------------------------------------------------------------------------
_RANKS_SQL = text(
    """
    SELECT r.event_id, r.rank FROM (
        SELECT e.event_id, count(*) FILTER (WHERE NOT e.sandbox) OVER (
                   ORDER BY e.occurred_at, e.event_id COLLATE "C"
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS rank
        FROM executions e
        WHERE e.account_id = :a AND e.occurred_at >= :period_start AND e.occurred_at < :until
    ) r WHERE r.event_id = ANY(CAST(:ids AS text[]))
    """
)


@dataclass(frozen=True)
class Unbooked:
    """An execution the consumption has not decided on yet."""

    event_id: str
    occurred_at: datetime
    model: str
    byok: bool
    sandbox: bool


def ranks(conn: Connection, account_id: str, period_start: datetime, until: datetime,
          event_ids: list[str]) -> dict[str, int]:
    """Each execution's place among the period's non-sandbox executions in time order (occurred_at,
    then event id), itself included: whether it is past the included quota."""
    return {r.event_id: int(r.rank) for r in conn.execute(
        _RANKS_SQL, {"a": account_id, "period_start": period_start, "until": until, "ids": event_ids})}


# ---- what the close and payouts read ------------------------------------------------------------------
_FUNDED_SQL = text(
    """
    SELECT e.account_id, e.occurred_at, e.model, e.byok, e.sandbox, e.input_tokens, e.output_tokens,
           e.cost_usd
    FROM credit_bookings b
    JOIN executions e ON e.account_id = b.account_id AND e.event_id = b.event_id
    WHERE b.funded AND b.account_id = ANY(CAST(:ids AS text[]))
      AND e.occurred_at >= :start AND e.occurred_at < :end
      AND (CAST(:known_at AS timestamptz) IS NULL OR e.ingested_at <= CAST(:known_at AS timestamptz))
    """
)


def funded_executions(conn: Connection, account_ids: list[str], start: datetime, end: datetime,
                      known_at: datetime | None = None):
    """The credit-funded executions of ``[start, end)`` of these accounts (what the close does not
    charge): account, occurred_at, model, byok, sandbox, tokens and cost. Empty for accounts without
    credits (one index probe)."""
    if not account_ids:
        return []
    return conn.execute(_FUNDED_SQL, {"ids": account_ids, "start": start, "end": end, "known_at": known_at}).all()


_CONSUMPTION_VALUED_SQL = text(
    """
    SELECT l.id, l.reference AS event_id, e.skill_id, l.grant_id, -l.amount AS credits, l.occurred_at,
           g.price, g.amount AS granted
    FROM credit_ledger l
    JOIN credit_grants g ON g.id = l.grant_id
    LEFT JOIN executions e ON e.account_id = l.account_id AND e.event_id = l.reference
    WHERE l.account_id = :a AND l.kind = 'consume' AND l.occurred_at >= :start AND l.occurred_at < :end
    ORDER BY l.occurred_at, l.reference, l.grant_id
    """
)


@dataclass(frozen=True)
class ValuedConsumption:
    """One consumption entry with the purchase price per credit of the grant that paid
    (``price / granted``, unrounded: Growth $50 / 6,000 credits)."""

    entry_id: str
    event_id: str
    skill_id: str | None
    grant_id: str
    credits: Decimal
    occurred_at: datetime
    grant_price: Decimal
    grant_amount: Decimal

    @property
    def price_per_credit(self) -> Decimal:
        from billing.credits import _WIDE

        return _WIDE.divide(self.grant_price, self.grant_amount)


def consumption_with_purchase_price(conn: Connection, account_id: str, start: datetime,
                                    end: datetime) -> list[ValuedConsumption]:
    """For payouts: every consumption entry of ``account_id`` whose execution occurred in
    ``[start, end)``, with the execution's skill and its grant's purchase price per credit. One
    execution split across two grants has two entries (valued at each grant's price)."""
    return [ValuedConsumption(r.id, r.event_id, r.skill_id, r.grant_id, Decimal(r.credits), r.occurred_at,
                              Decimal(r.price), Decimal(r.granted))
            for r in conn.execute(_CONSUMPTION_VALUED_SQL, {"a": account_id, "start": start, "end": end})]


_PREMIUM_CONSUMPTION_SQL = text(
    """
    SELECT l.account_id, l.reference AS event_id, e.skill_id, -l.amount AS credits, g.price, g.amount AS granted
    FROM credit_ledger l
    JOIN credit_grants g ON g.id = l.grant_id
    JOIN executions e ON e.account_id = l.account_id AND e.event_id = l.reference
    WHERE l.kind = 'consume' AND l.occurred_at >= :start AND l.occurred_at < :end
      AND e.skill_id = ANY(CAST(:skills AS text[]))
    ORDER BY l.account_id, l.reference, l.grant_id
    """
)


def premium_consumption(conn: Connection, start: datetime, end: datetime, skill_ids: Sequence[str]):
    """For payouts: every consumption entry, of any account, whose execution of one of ``skill_ids``
    occurred in ``[start, end)``: (account_id, event_id, skill_id, credits, grant price, grant amount)."""
    if not skill_ids:
        return []
    return conn.execute(_PREMIUM_CONSUMPTION_SQL, {"start": start, "end": end, "skills": list(skill_ids)}).all()


# ---- expiry --------------------------------------------------------------------------------------------
def grants_needing_workflows(conn: Connection, after: str | None, limit: int) -> list[str]:
    """Grant ids (in id order, after ``after``) that have not been expired yet: the sweep checks that
    each has its ``credit-grant-<id>`` workflow."""
    q = (select(credit_grants.c.id)
         .where(~select(credit_ledger.c.id).where(credit_ledger.c.grant_id == credit_grants.c.id,
                                                  credit_ledger.c.kind == "expire").exists())
         .order_by(credit_grants.c.id).limit(limit))
    if after is not None:
        q = q.where(credit_grants.c.id > after)
    return list(conn.execute(q).scalars())


__all__ = [
    "lock_account", "ensure_credit_account", "credit_accounts_among", "entitlement_facts", "ENTITLEMENT_FACTS_JOIN", "Purchase",
    "insert_purchase", "set_checkout_session", "get_purchase", "purchases_of", "pending_purchases",
    "settle_purchase", "insert_grant", "get_grant", "grants_of", "grant_audit", "ledger_of", "append_entries",
    "balances", "consumption_per_day", "invoice_application", "accounts_with_usd",
    "Unbooked", "ranks", "non_sandbox_counts", "account_rows", "lock_accounts", "remainders_of", "booking_starts",
    "unbooked_many", "unbooked_recent", "record_bookings_many", "set_booked_through_many", "funded_executions", "ValuedConsumption",
    "consumption_with_purchase_price", "premium_consumption", "grants_needing_workflows",
]


def grants_created_since(conn: Connection, since: datetime) -> list[str]:
    return list(conn.execute(select(credit_grants.c.id).where(credit_grants.c.created_at >= since)).scalars())


def grants_overdue(conn: Connection, grant_ids: list[str], expired_before: datetime) -> list[str]:
    """Of ``grant_ids``, those whose ``expires_at`` is before ``expired_before`` (expiry plus grace passed)."""
    if not grant_ids:
        return []
    return list(conn.execute(select(credit_grants.c.id).where(credit_grants.c.id.in_(grant_ids),
                                                              credit_grants.c.expires_at < expired_before)
                             .order_by(credit_grants.c.id)).scalars())


# ---- the same, for many accounts at once (the usage observer books a whole batch in a few statements) ----
def lock_accounts(conn: Connection, account_ids: list[str]) -> None:
    """``lock_account`` for each, in id order (two bookers of overlapping sets never deadlock)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('credits:' || a, 0)) "
                      "FROM unnest(CAST(:ids AS text[])) AS a ORDER BY a COLLATE \"C\""), {"ids": sorted(account_ids)})


_REMAINDERS_MANY_SQL = text(
    """
    SELECT g.id, g.account_id, g.unit, g.amount, g.price, g.package, g.reference, g.granted_at, g.expires_at,
           g.remaining AS rest
    FROM credit_grants g
    WHERE g.account_id = ANY(CAST(:ids AS text[])) AND g.unit = :unit AND g.remaining > 0
    """
)


def remainders_of(conn: Connection, account_ids: list[str], unit: Unit) -> dict[str, list[tuple[Grant, Decimal]]]:
    out: dict[str, list[tuple[Grant, Decimal]]] = {}
    for r in conn.execute(_REMAINDERS_MANY_SQL, {"ids": account_ids, "unit": unit.value}):
        out.setdefault(r.account_id, []).append((_grant(r), Decimal(r.rest)))
    return out


_READ_FROM_SQL = text(
    """
    SELECT least(clock_timestamp(),
                 (SELECT min(xact_start) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
                    AND backend_type = 'client backend'))
    """
)


def booking_starts(conn: Connection, account_ids: list[str]) -> tuple[datetime, dict[str, datetime | None]]:
    """(what the next booking may read from: now, or the start of the oldest transaction still open, whose
    executions, dated by ``ingested_at = now()`` at its start, this booking cannot see yet; each
    account's ``booked_through``)."""
    now = conn.execute(_READ_FROM_SQL).scalar_one()
    rows = conn.execute(select(credit_accounts.c.account_id, credit_accounts.c.booked_through)
                        .where(credit_accounts.c.account_id.in_(account_ids)))
    return now, {a: b for a, b in rows}


_UNBOOKED_MANY_SQL = text(
    """
    SELECT s.n, u.event_id, u.occurred_at, u.model, u.byok, u.sandbox
    FROM unnest(CAST(:n AS int[]), CAST(:a AS text[]), CAST(:since AS timestamptz[]), CAST(:until AS timestamptz[]),
                CAST(:fresh AS timestamptz[])) AS s(n, account_id, since, until, fresh)
    CROSS JOIN LATERAL (
        SELECT e.event_id, e.occurred_at, e.model, e.byok, e.sandbox
        FROM executions e
        WHERE e.account_id = s.account_id AND e.occurred_at >= s.since AND e.occurred_at < s.until
          AND (s.fresh IS NULL OR e.ingested_at >= s.fresh)
          AND NOT EXISTS (SELECT 1 FROM credit_bookings b WHERE b.account_id = s.account_id
                                                            AND b.event_id = e.event_id)
        ORDER BY e.occurred_at, e.event_id COLLATE "C"
        LIMIT :limit
    ) u
    """
)


def unbooked_many(conn: Connection, windows: list[tuple[str, datetime, datetime, datetime | None]],
                  limit: int = 5000) -> list[list[Unbooked]]:
    """``unbooked_executions`` for each (account, since, until, fresh_since) window, in one statement."""
    out: list[list[Unbooked]] = [[] for _ in windows]
    if not windows:
        return out
    rows = conn.execute(_UNBOOKED_MANY_SQL, {
        "n": list(range(len(windows))), "a": [w[0] for w in windows], "since": [w[1] for w in windows],
        "until": [w[2] for w in windows], "fresh": [w[3] for w in windows], "limit": limit})
    for r in rows:
        out[r.n].append(Unbooked(r.event_id, r.occurred_at, r.model, r.byok, r.sandbox))
    for lst in out:
        lst.sort(key=lambda u: (u.occurred_at, u.event_id.encode()))
    return out


def record_bookings_many(conn: Connection, decided: list[tuple[str, str, int, bool]]) -> None:
    """(account, event id, credits, funded) for many accounts, in one statement. Idempotent."""
    if not decided:
        return
    conn.execute(text(
        """
        INSERT INTO credit_bookings (account_id, event_id, credits, funded)
        SELECT * FROM unnest(CAST(:a AS text[]), CAST(:e AS text[]), CAST(:c AS int[]), CAST(:f AS boolean[]))
        ON CONFLICT (account_id, event_id) DO NOTHING
        """), {"a": [d[0] for d in decided], "e": [d[1] for d in decided], "c": [d[2] for d in decided],
               "f": [d[3] for d in decided]})


def set_booked_through_many(conn: Connection, account_ids: list[str], at: datetime) -> None:
    conn.execute(update(credit_accounts).where(credit_accounts.c.account_id.in_(account_ids))
                 .values(booked_through=at))


def non_sandbox_counts(conn: Connection, account_ids: list[str], period: str) -> dict[str, int]:
    """``non_sandbox_in_period`` for many accounts (absent: none yet)."""
    if not account_ids:
        return {}
    return {a: int(n) for a, n in conn.execute(text(
        "SELECT account_id, sum(executions) FILTER (WHERE NOT sandbox) FROM usage_counters "
        "WHERE account_id = ANY(CAST(:ids AS text[])) AND period = :p GROUP BY 1"), {"ids": account_ids, "p": period})}


def account_rows(conn: Connection, account_ids: list[str]) -> list:
    """The account rows (plan, pricing, updated_at: what the booking's terms cache keys on)."""
    from models.tables import accounts

    return list(conn.execute(select(accounts).where(accounts.c.id.in_(account_ids))))


_UNBOOKED_RECENT_SQL = text(
    """
    SELECT c.account_id, c.event_id, c.occurred_at, c.model, c.byok, c.sandbox
    FROM (SELECT e.account_id, e.event_id, e.occurred_at, e.model, e.byok, e.sandbox
          FROM executions e
          JOIN unnest(CAST(:ids AS text[]), CAST(:fresh AS timestamptz[])) AS s(account_id, fresh)
            ON s.account_id = e.account_id AND e.ingested_at >= s.fresh
          WHERE e.ingested_at >= :oldest) c
    LEFT JOIN LATERAL (SELECT true AS decided FROM credit_bookings b
                       WHERE b.account_id = c.account_id AND b.event_id = c.event_id LIMIT 1) k ON true
    WHERE k.decided IS NULL
    """
)


def unbooked_recent(conn: Connection, fresh_since: dict[str, datetime]) -> dict[str, list[Unbooked]]:
    """The not yet decided executions of these accounts, each from its own ``fresh_since`` on, by
    account, in time order: the rows of the last few seconds (the B-tree on ``ingested_at``) joined to
    each account's own start, each candidate probed by key in ``credit_bookings`` (never the month's
    bookings: the LIMIT keeps the probe a nested index lookup)."""
    out: dict[str, list[Unbooked]] = {}
    if not fresh_since:
        return out
    ids = sorted(fresh_since)
    params = {"ids": ids, "fresh": [fresh_since[a] for a in ids], "oldest": min(fresh_since.values())}
    for r in conn.execute(_UNBOOKED_RECENT_SQL, params):
        out.setdefault(r.account_id, []).append(Unbooked(r.event_id, r.occurred_at, r.model, r.byok, r.sandbox))
    for rows in out.values():
        rows.sort(key=lambda u: (u.occurred_at, u.event_id.encode()))
    return out
