"""Invoices, their lines and prior-period adjustments (``invoices``, ``invoice_lines``,
``prior_period_adjustments``).

An invoice is written (and rewritten) while it is a draft; once pushed or final it never changes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.periods import Period
from billing.rating import BilledLine
from models.tables import invoice_lines, invoices, prior_period_adjustments

PUSHABLE_STATUSES = ("draft", "pushing", "push_failed")


def invoice_statuses(conn: Connection, period: Period, account_ids: list[str]) -> dict[str, str]:
    rows = conn.execute(
        select(invoices.c.account_id, invoices.c.status).where(
            invoices.c.period == str(period), invoices.c.account_id.in_(account_ids)
        )
    )
    return {a: s for a, s in rows}


def write_rated_invoices(conn: Connection, *, period: Period, items: list[dict],
                         version_ids: dict[str, int] | None = None) -> dict[str, tuple[int, str]]:
    """Write (or rewrite, while still drafts) a chunk's invoices with their lines, in five statements.

    A rated total of $0 is stored as ``no_charge`` (never sent to Stripe). ``items``: dicts with
    ``account``, ``rated``, ``catalog_version_id`` and ``adjustments``. Returns {account id: (invoice
    id, status)} for the invoices written; accounts whose invoice is already frozen are absent (a
    re-run never changes what Stripe has seen).
    """
    if not items:
        return {}
    version_ids = version_ids or {}
    rows = []
    for it in items:
        account, rated = it["account"], it["rated"]
        rows.append(dict(
            account_id=account.id, period=str(period), period_start=period.start, period_end=period.end,
            status="no_charge" if rated.total == 0 else "draft", plan=rated.plan, seats=account.seats,
            overage_opt_in=account.overage_opt_in, catalog_version_id=it["catalog_version_id"],
            executions=rated.executions, billable_executions=rated.billable_executions,
            sandbox_executions=rated.sandbox_executions, byok_executions=rated.byok_executions,
            platform_cost=rated.platform_cost, subtotal=rated.subtotal, total=rated.total,
        ))
    stmt = pg_insert(invoices).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "period"],
        set_={k: stmt.excluded[k] for k in rows[0] if k not in ("account_id", "period")}
        | {"rated_at": func.now(), "updated_at": func.now()},
        where=invoices.c.status == "draft",
    ).returning(invoices.c.account_id, invoices.c.id, invoices.c.status)
    written = {a: (i, st) for a, i, st in conn.execute(stmt)}
    ids = [i for i, _ in written.values()]
    if not ids:
        return {}
    conn.execute(invoice_lines.delete().where(invoice_lines.c.invoice_id.in_(ids)))
    conn.execute(prior_period_adjustments.delete().where(prior_period_adjustments.c.invoice_id.in_(ids)))
    adj_rows, line_rows = [], []
    for it in items:
        account, rated = it["account"], it["rated"]
        if account.id not in written:
            continue
        invoice_id = written[account.id][0]
        for source, n in (it.get("adjustments") or {}).items():
            adj_rows.append(dict(invoice_id=invoice_id, account_id=account.id, source_period=source, executions=n))
        for i, line in enumerate(rated.lines, start=1):
            line_rows.append(dict(
                invoice_id=invoice_id, position=i, kind=line.kind.value, model=line.model,
                description=line.description, quantity=line.quantity, unit_price=line.unit_price,
                amount=line.amount, catalog_version_id=version_ids.get(line.version, it["catalog_version_id"]),
                key=line.key, rate_version=line.version, direction=line.direction,
                line_executions=line.executions, cost=line.cost, source_period=line.source_period,
            ))
    if adj_rows:
        conn.execute(insert(prior_period_adjustments), adj_rows)
    if line_rows:
        conn.execute(insert(invoice_lines), line_rows)
    return written


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
    """The invoice row, or None."""
    return conn.execute(select(invoices).where(invoices.c.id == invoice_id)).first()


def find_invoice(conn: Connection, account_id: str, period: Period):
    """The account's invoice of the period, or None."""
    return conn.execute(
        select(invoices).where(invoices.c.account_id == account_id, invoices.c.period == str(period))
    ).first()


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


# ---- the same for a chunk's invoices at once (``activities.push.InvoicePusher.push_many``) -----------
def get_invoices(conn: Connection, invoice_ids: list[int]) -> dict:
    """Invoice id -> row, for those that exist."""
    if not invoice_ids:
        return {}
    return {r.id: r for r in conn.execute(select(invoices).where(invoices.c.id.in_(list(invoice_ids))))}


def lines_of_invoices(conn: Connection, invoice_ids: list[int]) -> dict[int, list]:
    """Invoice id -> its lines in position order (every id present, maybe with no lines)."""
    out: dict[int, list] = {i: [] for i in invoice_ids}
    if invoice_ids:
        for line in conn.execute(select(invoice_lines).where(invoice_lines.c.invoice_id.in_(list(invoice_ids)))
                                 .order_by(invoice_lines.c.invoice_id, invoice_lines.c.position)):
            out[line.invoice_id].append(line)
    return out


def set_invoice_statuses(conn: Connection, invoice_ids: list[int], status: str, *, from_statuses: tuple[str, ...],
                         stripe_invoice_ids: list[str | None] | None = None,
                         errors: list[str | None] | None = None) -> int:
    """``set_invoice_status`` for many invoices in one statement (each its own Stripe id and error, if
    given; a None Stripe id keeps the one recorded). How many moved."""
    if not invoice_ids:
        return 0
    n = len(invoice_ids)
    res = conn.execute(text(
        "UPDATE invoices AS i SET status = :status, updated_at = now(), last_error = x.error, "
        "stripe_invoice_id = coalesce(x.sid, i.stripe_invoice_id), "
        "pushed_at = CASE WHEN CAST(:opening AS boolean) THEN now() ELSE i.pushed_at END "
        "FROM unnest(CAST(:ids AS bigint[]), CAST(:sids AS text[]), CAST(:errors AS text[])) AS x(id, sid, error) "
        "WHERE i.id = x.id AND i.status = ANY(CAST(:from_statuses AS text[]))"),
        {"status": status, "opening": status == "open", "ids": list(invoice_ids), "sids": list(stripe_invoice_ids or [None] * n),
         "errors": list(errors or [None] * n), "from_statuses": list(from_statuses)})
    return res.rowcount


def set_stripe_invoice_ids(conn: Connection, stripe_ids: dict[int, str]) -> None:
    """``set_stripe_invoice_id`` for many invoices (invoice id -> Stripe id) in one statement."""
    if stripe_ids:
        conn.execute(text(
            "UPDATE invoices AS i SET stripe_invoice_id = x.sid "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:sids AS text[])) AS x(id, sid) WHERE i.id = x.id"),
            {"ids": list(stripe_ids), "sids": list(stripe_ids.values())})


def set_stripe_invoice_id(conn: Connection, invoice_id: int, stripe_invoice_id: str) -> None:
    conn.execute(
        update(invoices).where(invoices.c.id == invoice_id).values(stripe_invoice_id=stripe_invoice_id)
    )


def invoiced_from(conn: Connection, account_ids: list[str], period: Period) -> set[str]:
    """The accounts with an invoice of ``period`` or a later one that is no longer a draft (a change
    of terms cannot reach into those periods any more)."""
    if not account_ids:
        return set()
    return set(conn.execute(
        select(invoices.c.account_id).distinct().where(
            invoices.c.account_id.in_(account_ids), invoices.c.period >= str(period), invoices.c.status != "draft")
    ).scalars())


def billed_lines(conn: Connection, account_id: str, source: Period, excluding_period: Period,
                 rated_before: datetime | None = None) -> list[BilledLine]:
    """What has been billed for ``source``: its own invoice's lines plus prior-period lines for it on
    later invoices (except the invoice of ``excluding_period``, which is being rewritten); with
    ``rated_before``, only what invoices rated before then billed."""
    own_q = (select(invoice_lines.c.key, invoice_lines.c.quantity, invoice_lines.c.amount)
             .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
             .where(invoices.c.account_id == account_id, invoices.c.period == str(source)))
    later_q = (select(invoice_lines.c.key, invoice_lines.c.quantity, invoice_lines.c.amount)
               .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
               .where(invoices.c.account_id == account_id, invoice_lines.c.source_period == str(source),
                      invoices.c.period != str(excluding_period)))
    if rated_before is not None:
        own_q = own_q.where(invoices.c.rated_at < rated_before)
        later_q = later_q.where(invoices.c.rated_at < rated_before)
    own = conn.execute(own_q).all()
    later = conn.execute(later_q).all()
    return [BilledLine(k, q, a) for k, q, a in [*own, *later]]


def invoice_periods(conn: Connection, account_id: str) -> list[str]:
    return list(conn.execute(
        select(invoices.c.period).where(invoices.c.account_id == account_id).order_by(invoices.c.period.desc())
    ).scalars())


def account_invoices(conn: Connection, account_id: str):
    """(period, status, executions, total) of the account's invoices, newest first (billing page)."""
    return conn.execute(
        select(invoices.c.period, invoices.c.status, invoices.c.executions, invoices.c.total)
        .where(invoices.c.account_id == account_id).order_by(invoices.c.period.desc())
    ).all()


# ---- prepaid credits: the usd balance applied at close (services/credits.py) --------------------------
def invoice_total(conn: Connection, invoice_id: int):
    return conn.execute(select(invoices.c.total).where(invoices.c.id == invoice_id)).scalar_one()


def add_prepaid_balance_line(conn: Connection, invoice_id: int, applied) -> None:
    """Append the line "Prepaid balance applied" (-``applied``) to a just-written draft and lower its
    total by it; an invoice paid in full by the balance is ``paid`` at once (nothing to push)."""
    from billing import line_keys

    inv = conn.execute(select(invoices.c.catalog_version_id, invoices.c.total)
                       .where(invoices.c.id == invoice_id).with_for_update()).one()
    position = conn.execute(select(func.coalesce(func.max(invoice_lines.c.position), 0))
                            .where(invoice_lines.c.invoice_id == invoice_id)).scalar_one() + 1
    conn.execute(insert(invoice_lines).values(
        invoice_id=invoice_id, position=position, kind="prepaid_balance", model=None,
        description=f"Prepaid balance applied (${applied:,.2f})", quantity=1, unit_price=-applied, amount=-applied,
        catalog_version_id=inv.catalog_version_id, key=line_keys.prepaid_balance()))
    total = inv.total - applied
    conn.execute(update(invoices).where(invoices.c.id == invoice_id).values(
        total=total, status="paid" if total == 0 else "draft", updated_at=func.now()))
def period_summary(conn: Connection, period: Period) -> tuple[dict[str, int], Decimal]:
    """({status: invoices}, total of the invoices that charge) of the period: what its close did,
    whichever run or caller did it."""
    rows = conn.execute(
        select(invoices.c.status, func.count(), func.coalesce(func.sum(invoices.c.total), 0))
        .where(invoices.c.period == str(period)).group_by(invoices.c.status)
    ).all()
    return {r[0]: r[1] for r in rows}, sum((Decimal(r[2]) for r in rows if r[0] != "no_charge"), Decimal(0))
