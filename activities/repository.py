"""Every SQL statement of the close and the CLI lives here (ingestion has its own bulk path).

Functions take a Connection and never commit: the caller (an activity, a CLI command) owns the
transaction boundary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, and_, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.catalog import CatalogVersion
from billing.periods import Period
from billing.rating import ModelUsage, RatedInvoice
from models.tables import (
    accounts,
    catalog_versions,
    invoice_lines,
    invoices,
    stripe_requests,
)

FROZEN_STATUSES = ("pushing", "open", "paid", "void", "no_charge", "push_failed")
PUSHABLE_STATUSES = ("draft", "pushing", "push_failed")


class NotFound(LookupError):
    pass


# ---- catalog ----------------------------------------------------------------------------------------
def ensure_catalog_version(conn: Connection, version: CatalogVersion) -> int:
    """Record the catalog version (idempotent) and return its id; a changed document under an
    existing version id is refused: versions are immutable once used."""
    digest = version.digest()
    row = conn.execute(
        select(catalog_versions.c.id, catalog_versions.c.digest).where(
            catalog_versions.c.version == version.version
        )
    ).first()
    if row:
        if row.digest != digest:
            raise ValueError(
                f"catalog version {version.version!r} changed after it was recorded "
                f"(digest {row.digest[:12]} in the database, {digest[:12]} in the file); "
                "publish a new version with a later effective_from instead"
            )
        return row.id
    stmt = (
        pg_insert(catalog_versions)
        .values(
            version=version.version,
            effective_from=version.effective_from,
            digest=digest,
            document=json.loads(version.model_dump_json()),
        )
        .on_conflict_do_nothing(index_elements=["version"])
        .returning(catalog_versions.c.id)
    )
    new_id = conn.execute(stmt).scalar()
    if new_id is None:  # raced with another process
        return ensure_catalog_version(conn, version)
    return new_id


def catalog_version_name(conn: Connection, version_id: int) -> str:
    return conn.execute(
        select(catalog_versions.c.version).where(catalog_versions.c.id == version_id)
    ).scalar_one()


# ---- accounts ---------------------------------------------------------------------------------------
def create_account(conn: Connection, *, account_id: str, plan: str, seats: int, overage_opt_in: bool,
                   email: str | None, billing_starts_at: datetime | None) -> bool:
    """Insert the account; False when an identical one exists. A different one is an error."""
    values = dict(id=account_id, plan=plan, seats=seats, overage_opt_in=overage_opt_in, email=email)
    if billing_starts_at is not None:
        values["billing_starts_at"] = billing_starts_at
    inserted = conn.execute(
        pg_insert(accounts).values(**values).on_conflict_do_nothing(index_elements=["id"])
        .returning(accounts.c.id)
    ).scalar()
    if inserted:
        return True
    existing = get_account(conn, account_id)
    same = (existing.plan, existing.seats, existing.overage_opt_in, existing.email) == (
        plan, seats, overage_opt_in, email)
    if not same:
        raise ValueError(
            f"account {account_id!r} already exists with plan={existing.plan} seats={existing.seats} "
            f"overage={existing.overage_opt_in}; changing an account is not `accounts create`"
        )
    return False


def get_account(conn: Connection, account_id: str):
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    if row is None:
        raise NotFound(f"no account {account_id!r}")
    return row


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


def _billable_accounts(period: Period):
    return and_(accounts.c.billing_starts_at < period.end, accounts.c.plan != "enterprise")


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


# ---- usage ------------------------------------------------------------------------------------------
_USAGE_SQL = text(
    """
    WITH acct AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:included AS bigint[])) AS a(account_id, included)
    ), ranked AS (
        SELECT e.account_id, e.model, a.included,
               row_number() OVER (PARTITION BY e.account_id ORDER BY e.occurred_at, e.event_id) AS rn
        FROM executions e JOIN acct a ON a.account_id = e.account_id
        WHERE e.occurred_at >= :start AND e.occurred_at < :end AND NOT e.sandbox
    )
    SELECT account_id, model, count(*) AS executions,
           count(*) FILTER (WHERE rn > included) AS billable
    FROM ranked
    GROUP BY account_id, model
    """
)


def usage_by_account(conn: Connection, period: Period, included: dict[str, int]) -> dict[str, list[ModelUsage]]:
    """Executions per account and model for the period, and how many of them fall past each
    account's included quota in time order (occurred_at, then event id)."""
    if not included:
        return {}
    ids = list(included)
    rows = conn.execute(
        _USAGE_SQL,
        {"ids": ids, "included": [included[i] for i in ids], "start": period.start, "end": period.end},
    )
    out: dict[str, list[ModelUsage]] = {}
    for account_id, model, n, billable in rows:
        out.setdefault(account_id, []).append(ModelUsage(model=model, executions=n, billable=billable))
    return out


# ---- invoices ---------------------------------------------------------------------------------------
def invoice_statuses(conn: Connection, period: Period, account_ids: list[str]) -> dict[str, str]:
    rows = conn.execute(
        select(invoices.c.account_id, invoices.c.status).where(
            invoices.c.period == str(period), invoices.c.account_id.in_(account_ids)
        )
    )
    return {a: s for a, s in rows}


def write_rated_invoice(conn: Connection, *, account, period: Period, rated: RatedInvoice,
                        catalog_version_id: int) -> tuple[int, str] | None:
    """Write (or rewrite, while still a draft) the account's invoice for the period.

    Returns (invoice id, status), or None when the invoice is already frozen (pushed or final):
    a re-run never changes what Stripe has seen.
    """
    status = "no_charge" if rated.total == 0 else "draft"
    values = dict(
        account_id=account.id,
        period=str(period),
        period_start=period.start,
        period_end=period.end,
        status=status,
        plan=account.plan,
        seats=account.seats,
        overage_opt_in=account.overage_opt_in,
        catalog_version_id=catalog_version_id,
        executions=rated.executions,
        billable_executions=rated.billable_executions,
        subtotal=rated.subtotal,
        total=rated.total,
    )
    stmt = pg_insert(invoices).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "period"],
        set_={k: stmt.excluded[k] for k in values if k not in ("account_id", "period")}
        | {"rated_at": func.now(), "updated_at": func.now()},
        where=invoices.c.status == "draft",
    ).returning(invoices.c.id)
    invoice_id = conn.execute(stmt).scalar()
    if invoice_id is None:
        return None
    conn.execute(invoice_lines.delete().where(invoice_lines.c.invoice_id == invoice_id))
    if rated.lines:
        conn.execute(
            insert(invoice_lines),
            [
                dict(
                    invoice_id=invoice_id,
                    position=i,
                    kind=line.kind.value,
                    model=line.model,
                    description=line.description,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    amount=line.amount,
                    catalog_version_id=catalog_version_id,
                )
                for i, line in enumerate(rated.lines, start=1)
            ],
        )
    return invoice_id, status


def pushable_invoice_ids(conn: Connection, period: Period, after: str | None, upto: str) -> list[int]:
    q = (
        select(invoices.c.id)
        .where(
            invoices.c.period == str(period),
            invoices.c.status.in_(PUSHABLE_STATUSES),
            invoices.c.account_id <= upto,
        )
        .order_by(invoices.c.account_id)
    )
    if after is not None:
        q = q.where(invoices.c.account_id > after)
    return list(conn.execute(q).scalars())


def count_pushed(conn: Connection, period: Period, after: str | None, upto: str) -> int:
    q = select(func.count()).select_from(invoices).where(
        invoices.c.period == str(period),
        invoices.c.status.in_(("open", "paid", "void")),
        invoices.c.account_id <= upto,
    )
    if after is not None:
        q = q.where(invoices.c.account_id > after)
    return conn.execute(q).scalar_one()


def get_invoice(conn: Connection, invoice_id: int):
    row = conn.execute(select(invoices).where(invoices.c.id == invoice_id)).first()
    if row is None:
        raise NotFound(f"no invoice {invoice_id}")
    return row


def find_invoice(conn: Connection, account_id: str, period: Period):
    row = conn.execute(
        select(invoices).where(invoices.c.account_id == account_id, invoices.c.period == str(period))
    ).first()
    if row is None:
        get_account(conn, account_id)  # a missing account is the better message
        raise NotFound(f"no invoice for account {account_id!r} in {period} (has the close run?)")
    return row


def invoice_lines_of(conn: Connection, invoice_id: int):
    return conn.execute(
        select(invoice_lines).where(invoice_lines.c.invoice_id == invoice_id).order_by(invoice_lines.c.position)
    ).all()


def list_invoices(conn: Connection, period: Period, status: str | None = None):
    q = select(invoices).where(invoices.c.period == str(period)).order_by(invoices.c.account_id)
    if status:
        q = q.where(invoices.c.status == status)
    return conn.execute(q).all()


def set_invoice_status(conn: Connection, invoice_id: int, status: str, *, from_statuses: tuple[str, ...],
                       stripe_invoice_id: str | None = None, error: str | None = None) -> bool:
    """Move an invoice along its state machine; False if it was not in one of ``from_statuses``."""
    values: dict = {"status": status, "updated_at": func.now(), "last_error": error}
    if stripe_invoice_id is not None:
        values["stripe_invoice_id"] = stripe_invoice_id
    if status == "open":
        values["pushed_at"] = func.now()
    res = conn.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id, invoices.c.status.in_(from_statuses))
        .values(**values)
    )
    return res.rowcount == 1


def set_stripe_invoice_id(conn: Connection, invoice_id: int, stripe_invoice_id: str) -> None:
    conn.execute(
        update(invoices).where(invoices.c.id == invoice_id).values(stripe_invoice_id=stripe_invoice_id)
    )


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


# ---- Stripe request records -------------------------------------------------------------------------
def latest_stripe_request(conn: Connection, subject: str, step: str):
    return conn.execute(
        select(stripe_requests)
        .where(stripe_requests.c.subject == subject, stripe_requests.c.step == step)
        .order_by(stripe_requests.c.attempt.desc())
        .limit(1)
    ).first()


def record_stripe_request(conn: Connection, *, key: str, subject: str, step: str, attempt: int) -> None:
    conn.execute(
        pg_insert(stripe_requests)
        .values(idempotency_key=key, subject=subject, step=step, attempt=attempt, state="started")
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )


def finish_stripe_request(conn: Connection, key: str, *, state: str, stripe_object_id: str | None = None,
                          http_status: int | None = None, error: str | None = None) -> None:
    conn.execute(
        update(stripe_requests)
        .where(stripe_requests.c.idempotency_key == key)
        .values(state=state, stripe_object_id=stripe_object_id, http_status=http_status, error=error,
                finished_at=func.now())
    )


def stripe_requests_for(conn: Connection, subject: str):
    return conn.execute(
        select(stripe_requests).where(stripe_requests.c.subject == subject)
        .order_by(stripe_requests.c.started_at, stripe_requests.c.attempt)
    ).all()
