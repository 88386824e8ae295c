"""Every SQL statement of the close and the CLI lives here (ingestion has its own bulk path).

Functions take a Connection and never commit: the caller (an activity, a CLI command) owns the
transaction boundary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import Connection, and_, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing import terms as terms_rules
from billing.catalog import CatalogVersion
from billing.periods import Period
from billing.terms import day_start
from billing.rating import BilledLine, TermsSegment, UsageRow
from models.tables import (
    account_terms,
    accounts,
    catalog_versions,
    invoice_lines,
    invoices,
    notifications,
    prior_period_adjustments,
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
                   email: str | None, billing_starts_at: datetime | None, pricing: str = "executions") -> bool:
    """Insert the account and its first terms row; False when an identical one exists.

    Billing starts at 00:00 UTC of the given day (terms change on day boundaries, so a month's
    segments are whole days). A different existing account is an error.
    """
    start = day_start(billing_starts_at or datetime.now(timezone.utc))
    values = dict(id=account_id, plan=plan, seats=seats, overage_opt_in=overage_opt_in, email=email,
                  pricing=pricing, billing_starts_at=start)
    inserted = conn.execute(
        pg_insert(accounts).values(**values).on_conflict_do_nothing(index_elements=["id"])
        .returning(accounts.c.id)
    ).scalar()
    if inserted:
        conn.execute(insert(account_terms).values(
            account_id=account_id, effective_from=start, plan=plan, seats=seats,
            overage_opt_in=overage_opt_in, pricing=pricing, reason="account created"))
        return True
    existing = get_account(conn, account_id)
    same = (existing.plan, existing.seats, existing.overage_opt_in, existing.email, existing.pricing) == (
        plan, seats, overage_opt_in, email, pricing)
    if not same:
        raise ValueError(
            f"account {account_id!r} already exists with plan={existing.plan} seats={existing.seats} "
            f"overage={existing.overage_opt_in} pricing={existing.pricing}; "
            "use `tally accounts change` to change its terms"
        )
    return False


def change_terms(conn: Connection, *, account_id: str, effective_from: datetime, reason: str,
                 plan: str | None = None, seats: int | None = None, overage_opt_in: bool | None = None,
                 pricing: str | None = None, now: datetime | None = None) -> dict:
    """Append a terms row effective at 00:00 UTC of ``effective_from``'s day.

    Refused inside a period whose invoice is already final (its bill cannot change any more).
    Returns the terms now recorded. Idempotent for an identical change at the same instant.
    """
    start = day_start(effective_from)
    now = now or datetime.now(timezone.utc)
    account = conn.execute(select(accounts).where(accounts.c.id == account_id).with_for_update()).first()
    if account is None:
        raise NotFound(f"no account {account_id!r}")
    if start < account.billing_starts_at:
        raise ValueError(f"effective: {start:%Y-%m-%d} is before the account's billing start "
                         f"{account.billing_starts_at:%Y-%m-%d}")
    period = Period.of(start)
    frozen = conn.execute(
        select(invoices.c.status).where(invoices.c.account_id == account_id, invoices.c.period >= str(period),
                                        invoices.c.status != "draft")
    ).first()
    if frozen:
        raise ValueError(f"effective: {period} is already invoiced for {account_id}; "
                         "a change can take effect from the next period")
    current = conn.execute(
        select(account_terms).where(account_terms.c.account_id == account_id,
                                    account_terms.c.effective_from <= start)
        .order_by(account_terms.c.effective_from.desc()).limit(1)
    ).first()
    new = terms_rules.changed_terms(
        terms_rules.Terms(current.plan, current.seats, current.overage_opt_in, current.pricing),
        terms_rules.TermsChange(plan, seats, overage_opt_in, pricing))
    terms = dict(plan=new.plan, seats=new.seats, overage_opt_in=new.overage_opt_in, pricing=new.pricing)
    stmt = pg_insert(account_terms).values(account_id=account_id, effective_from=start, reason=reason, **terms)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "effective_from"],
        set_={**{k: stmt.excluded[k] for k in terms}, "reason": stmt.excluded.reason},
    )
    conn.execute(stmt)
    latest = conn.execute(
        select(account_terms).where(account_terms.c.account_id == account_id,
                                    account_terms.c.effective_from <= now)
        .order_by(account_terms.c.effective_from.desc()).limit(1)
    ).first()
    if latest is not None:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            plan=latest.plan, seats=latest.seats, overage_opt_in=latest.overage_opt_in,
            pricing=latest.pricing, updated_at=func.now()))
    return terms


def terms_history(conn: Connection, account_id: str):
    return conn.execute(
        select(account_terms).where(account_terms.c.account_id == account_id)
        .order_by(account_terms.c.effective_from)
    ).all()


def terms_segments(conn: Connection, account_ids: list[str], period: Period) -> dict[str, list[TermsSegment]]:
    """Each account's terms over the period, as contiguous whole-day segments.

    A segment starts at the period start (or the account's billing start) and at every change.
    """
    rows = conn.execute(
        select(account_terms)
        .where(account_terms.c.account_id.in_(account_ids), account_terms.c.effective_from < period.end)
        .order_by(account_terms.c.account_id, account_terms.c.effective_from)
    ).all()
    by_account: dict[str, list] = {}
    for r in rows:
        by_account.setdefault(r.account_id, []).append(r)
    out: dict[str, list[TermsSegment]] = {}
    for account_id, history in by_account.items():
        segs = terms_rules.segments(history, period)
        if segs:
            out[account_id] = segs
    return out


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
_USAGE_ROWS_SQL = text(
    """
    WITH acct AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:included AS bigint[]), CAST(:starts AS timestamptz[]))
            AS a(account_id, included, starts)
    ), seg AS (
        SELECT * FROM unnest(CAST(:seg_account AS text[]), CAST(:seg_index AS int[]),
                             CAST(:seg_start AS timestamptz[]), CAST(:seg_end AS timestamptz[]))
            AS s(account_id, idx, starts, ends)
    ), ver AS (
        SELECT * FROM unnest(CAST(:ver_name AS text[]), CAST(:ver_start AS timestamptz[]),
                             CAST(:ver_end AS timestamptz[])) AS v(name, starts, ends)
    ), base AS (
        SELECT e.account_id, e.event_id, e.model, e.byok, e.sandbox, e.input_tokens, e.output_tokens,
               e.cost_usd, e.occurred_at, a.included
        FROM executions e JOIN acct a ON a.account_id = e.account_id
        WHERE e.occurred_at >= :start AND e.occurred_at < :end AND e.occurred_at >= a.starts
    ), totals AS (
        SELECT account_id, count(*) FILTER (WHERE NOT sandbox) AS n FROM base GROUP BY account_id
    ), ranked AS (
        -- Only accounts past a positive quota need the time order (a sort); the others are all
        -- included (under quota) or all billable (no quota).
        SELECT b.account_id, b.model, b.byok, b.sandbox, b.input_tokens, b.output_tokens, b.cost_usd,
               b.occurred_at, NOT b.sandbox AND b.included = 0 AS billable
        FROM base b JOIN totals t ON t.account_id = b.account_id
        WHERE t.n <= b.included OR b.included = 0
        UNION ALL
        SELECT b.account_id, b.model, b.byok, b.sandbox, b.input_tokens, b.output_tokens, b.cost_usd,
               b.occurred_at,
               NOT b.sandbox AND row_number() OVER (PARTITION BY b.account_id, b.sandbox
                                                    ORDER BY b.occurred_at, b.event_id COLLATE "C") > b.included
        FROM base b JOIN totals t ON t.account_id = b.account_id
        WHERE t.n > b.included AND b.included > 0
    )
    SELECT r.account_id, s.idx, v.name, r.model, r.byok, r.sandbox, r.billable,
           count(*) AS executions,
           coalesce(sum(r.input_tokens), 0) AS input_tokens,
           coalesce(sum(r.output_tokens), 0) AS output_tokens,
           coalesce(sum(r.cost_usd) FILTER (WHERE NOT r.byok), 0) AS cost,
           coalesce(sum(r.input_tokens) FILTER (WHERE r.cost_usd IS NULL AND NOT r.byok), 0) AS uncosted_in,
           coalesce(sum(r.output_tokens) FILTER (WHERE r.cost_usd IS NULL AND NOT r.byok), 0) AS uncosted_out
    FROM ranked r
    JOIN seg s ON s.account_id = r.account_id AND r.occurred_at >= s.starts AND r.occurred_at < s.ends
    JOIN ver v ON r.occurred_at >= v.starts AND r.occurred_at < v.ends
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    """
)


def usage_rows(conn: Connection, start: datetime, end: datetime, segments: dict[str, list[TermsSegment]],
               included: dict[str, int], versions: list[tuple[str, datetime, datetime]]) -> dict[str, list[UsageRow]]:
    """Aggregated usage of ``[start, end)`` per account, split by terms segment, the catalog version in
    force when each execution occurred, model, BYOK, sandbox and billable (past the account's pooled
    included quota in time order: occurred_at, then event id; sandbox tries never count)."""
    ids = [a for a in included if a in segments]
    if not ids:
        return {}
    seg_account, seg_index, seg_start, seg_end = [], [], [], []
    for a in ids:
        for i, sg in enumerate(segments[a]):
            seg_account.append(a)
            seg_index.append(i)
            seg_start.append(sg.start)
            seg_end.append(sg.end)
    rows = conn.execute(_USAGE_ROWS_SQL, {
        "ids": ids, "included": [included[a] for a in ids], "starts": [segments[a][0].start for a in ids],
        "seg_account": seg_account, "seg_index": seg_index, "seg_start": seg_start, "seg_end": seg_end,
        "ver_name": [v[0] for v in versions], "ver_start": [v[1] for v in versions],
        "ver_end": [v[2] for v in versions], "start": start, "end": end,
    })
    out: dict[str, list[UsageRow]] = {}
    for r in rows:
        out.setdefault(r.account_id, []).append(UsageRow(
            segment=r.idx, version=r.name, model=r.model, byok=r.byok, sandbox=r.sandbox, billable=r.billable,
            executions=r.executions, input_tokens=int(r.input_tokens), output_tokens=int(r.output_tokens),
            cost=Decimal(r.cost), uncosted_input_tokens=int(r.uncosted_in),
            uncosted_output_tokens=int(r.uncosted_out),
        ))
    return out


def ranked_executions(conn: Connection, account_id: str, start: datetime, end: datetime):
    """One account's executions of ``[start, end)`` in billing order with their rank among
    non-sandbox executions (what ``usage_rows`` aggregates; used to explain an invoice)."""
    return conn.execute(text(
        """
        SELECT event_id, occurred_at, model, byok, sandbox,
               row_number() OVER (PARTITION BY sandbox ORDER BY occurred_at, event_id COLLATE "C") AS rn
        FROM executions
        WHERE account_id = :a AND occurred_at >= :start AND occurred_at < :end
        ORDER BY occurred_at, event_id COLLATE "C"
        """
    ), {"a": account_id, "start": start, "end": end}).all()


# ---- late usage ---------------------------------------------------------------------------------------
_LATE_SQL = text(
    """
    WITH billed AS (
        SELECT i.account_id, i.period, i.period_start, i.period_end,
               i.executions + i.sandbox_executions + coalesce((
                   SELECT sum(pa.executions) FROM prior_period_adjustments pa
                   JOIN invoices j ON j.id = pa.invoice_id
                   WHERE pa.account_id = i.account_id AND pa.source_period = i.period AND j.period <> :period
               ), 0) AS billed
        FROM invoices i
        WHERE i.account_id = ANY(CAST(:ids AS text[])) AND i.period >= :since AND i.period < :period
          AND i.status IN ('open', 'paid', 'void', 'no_charge')
    ), candidates AS (
        -- usage_counters (kept exact at ingest) make the common case cheap: only periods whose
        -- counters exceed what was billed are counted precisely (executions before the account's
        -- billing start are in the counters but never billed).
        SELECT b.* FROM billed b
        WHERE (SELECT coalesce(sum(c.executions), 0) FROM usage_counters c
               WHERE c.account_id = b.account_id AND c.period = b.period) > b.billed
    )
    SELECT b.account_id, b.period, b.billed, n.now_count
    FROM candidates b
    CROSS JOIN LATERAL (
        SELECT count(*) AS now_count FROM executions e JOIN accounts a ON a.id = e.account_id
        WHERE e.account_id = b.account_id AND e.occurred_at >= b.period_start AND e.occurred_at < b.period_end
          AND e.occurred_at >= a.billing_starts_at
    ) n
    WHERE n.now_count > b.billed
    ORDER BY b.account_id, b.period
    """
)


def late_usage(conn: Connection, account_ids: list[str], period: Period, lookback_periods: int):
    """(account, earlier period, executions not yet billed) for usage that arrived after its period
    was invoiced, looking back ``lookback_periods`` months."""
    if not account_ids:
        return []
    since = period
    for _ in range(lookback_periods):
        since = since.previous()
    rows = conn.execute(_LATE_SQL, {"ids": account_ids, "since": str(since), "period": str(period)})
    return [(r.account_id, Period.parse(r.period), r.now_count - r.billed) for r in rows]


def billed_lines(conn: Connection, account_id: str, source: Period, excluding_period: Period) -> list[BilledLine]:
    """What has been billed for ``source``: its own invoice's lines plus prior-period lines for it on
    later invoices (except the invoice of ``excluding_period``, which is being rewritten)."""
    own = conn.execute(
        select(invoice_lines.c.key, invoice_lines.c.quantity, invoice_lines.c.amount)
        .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
        .where(invoices.c.account_id == account_id, invoices.c.period == str(source))
    ).all()
    later = conn.execute(
        select(invoice_lines.c.key, invoice_lines.c.quantity, invoice_lines.c.amount)
        .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
        .where(invoices.c.account_id == account_id, invoice_lines.c.source_period == str(source),
               invoices.c.period != str(excluding_period))
    ).all()
    return [BilledLine(k, q, a) for k, q, a in [*own, *later]]


# ---- notifications outbox -------------------------------------------------------------------------------
def notify(conn: Connection, *, account_id: str, kind: str, dedupe_key: str, subject: str, body: str,
           payload: dict) -> bool:
    """Queue a customer notification once per dedupe key (a re-run queues nothing new)."""
    res = conn.execute(
        pg_insert(notifications).values(account_id=account_id, kind=kind, dedupe_key=dedupe_key,
                                        subject=subject, body=body, payload=payload)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    return res.rowcount == 1


def auto_conversions(conn: Connection, period: Period) -> int:
    """Accounts moved from pay-as-you-go to Pro by the close of ``period``."""
    return conn.execute(
        select(func.count()).select_from(account_terms).where(
            account_terms.c.effective_from == period.next().start,
            account_terms.c.reason.like("auto-convert%"))
    ).scalar_one()


def notifications_for(conn: Connection, account_id: str):
    return conn.execute(select(notifications).where(notifications.c.account_id == account_id)
                        .order_by(notifications.c.id)).all()


# ---- invoices ---------------------------------------------------------------------------------------
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
    ``account``, ``rated``, ``catalog_version_id`` and ``adjustments``. Returns {account id: (invoice id, status)} for the invoices written; accounts whose invoice is
    already frozen are absent (a re-run never changes what Stripe has seen).
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
