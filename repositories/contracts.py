"""Committed-use contracts (``contracts``, ``contract_amendments``, ``contract_months``,
``contract_summaries``) and the executions of a contract month ranked against its commitment.

A contract's history (``billing.contracts.ContractHistory``) is rebuilt from its row and its
amendments, which replays them through the rules that accepted them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.contracts import Amendment, Contract, ContractHistory, MonthReconciliation, TermSummary
from billing.periods import Period
from billing.rating import UsageRow
from repositories.usage import USAGE_AGGREGATES, as_usage_row
from models.tables import contract_amendments, contract_months, contract_summaries, contracts, invoices


# ---- contracts and amendments ------------------------------------------------------------------
def insert_contract(conn: Connection, contract: Contract, ends_at: datetime):
    """Store a validated contract; returns (row, created). An account's contract starting the same
    day already stored is returned instead (created False), whatever its terms."""
    row = conn.execute(
        pg_insert(contracts).values(account_id=contract.account, commitment=contract.commitment,
                                    starts_at=contract.start, months=contract.months,
                                    catalog_version=contract.catalog_version, ends_at=ends_at)
        .on_conflict_do_nothing(index_elements=["account_id", "starts_at"]).returning(*contracts.c)
    ).first()
    if row is not None:
        return row, True
    return conn.execute(select(contracts).where(contracts.c.account_id == contract.account,
                                                contracts.c.starts_at == contract.start)).first(), False


def get_contract(conn: Connection, contract_id: int, lock: bool = False):
    """The contract row (locked until the transaction ends with ``lock``), or None."""
    q = select(contracts).where(contracts.c.id == contract_id)
    return conn.execute(q.with_for_update() if lock else q).first()


def contracts_of(conn: Connection, account_ids: Sequence[str], starting_before: datetime | None = None):
    """The accounts' contracts, oldest first (those starting before ``starting_before``)."""
    q = select(contracts).where(contracts.c.account_id.in_(list(account_ids)))
    if starting_before is not None:
        q = q.where(contracts.c.starts_at < starting_before)
    return conn.execute(q.order_by(contracts.c.account_id, contracts.c.starts_at)).all()


def amendments_of(conn: Connection, contract_ids: Sequence[int]) -> dict[int, list]:
    rows = conn.execute(select(contract_amendments).where(contract_amendments.c.contract_id.in_(list(contract_ids)))
                        .order_by(contract_amendments.c.contract_id, contract_amendments.c.seq)).all()
    out: dict[int, list] = {}
    for r in rows:
        out.setdefault(r.contract_id, []).append(r)
    return out


def as_history(row, amendment_rows: Sequence) -> ContractHistory:
    """The stored contract as the rules see it (amendments replayed and re-checked)."""
    contract = Contract(row.account_id, int(row.commitment), row.starts_at, row.months, row.catalog_version,
                        str(row.id))
    return ContractHistory(contract, tuple(
        Amendment(a.kind, a.requested_at, a.effective,
                  commitment=None if a.commitment is None else int(a.commitment), extra_months=a.extra_months)
        for a in amendment_rows))


def histories(conn: Connection, rows: Sequence) -> list[ContractHistory]:
    """Each contract row's history, in the order given."""
    amended = amendments_of(conn, [r.id for r in rows]) if rows else {}
    return [as_history(r, amended.get(r.id, [])) for r in rows]


def amendment_by_request(conn: Connection, request_id: str):
    return conn.execute(select(contract_amendments).where(contract_amendments.c.request_id == request_id)).first()


def append_amendment(conn: Connection, contract_id: int, request_id: str, amendment: Amendment,
                     ends_at: datetime) -> None:
    """Record an accepted amendment after the contract's others and move the contract's end."""
    seq = conn.execute(select(func.coalesce(func.max(contract_amendments.c.seq), 0))
                       .where(contract_amendments.c.contract_id == contract_id)).scalar_one() + 1
    conn.execute(insert(contract_amendments).values(
        contract_id=contract_id, seq=seq, request_id=request_id, kind=amendment.kind.value,
        requested_at=amendment.requested_at, effective=amendment.effective, commitment=amendment.commitment,
        extra_months=amendment.extra_months))
    conn.execute(update(contracts).where(contracts.c.id == contract_id).values(ends_at=ends_at))


# ---- monthly reconciliations (written by the close) --------------------------------------------------
def record_months(conn: Connection, invoice_ids: Sequence[int],
                  months: Sequence[tuple[int, MonthReconciliation]]) -> None:
    """Replace the reconciliations of the (draft) invoices ``invoice_ids`` with ``months``
    ((invoice id, reconciliation) pairs): the close writes them with the invoice lines."""
    if not invoice_ids:
        return
    conn.execute(contract_months.delete().where(contract_months.c.invoice_id.in_(list(invoice_ids))))
    rows = [dict(contract_id=int(r.contract_id), period=str(r.period), invoice_id=invoice_id, number=r.number,
                 starts_at=r.start, ends_at=r.end, committed=r.committed, used=r.used, overage=r.overage,
                 shortfall=r.shortfall, utilisation=r.utilisation, committed_charge=r.committed_charge,
                 overage_charge=r.overage_charge, termination_fee=r.termination_fee, total=r.total)
            for invoice_id, r in months]
    if rows:
        conn.execute(insert(contract_months), rows)


def month_with_invoice(conn: Connection, contract_id: int, period: Period):
    """The recorded reconciliation of the contract's month with its invoice's status, or None
    (not rated yet)."""
    return conn.execute(
        select(contract_months, invoices.c.status.label("invoice_status"))
        .join(invoices, invoices.c.id == contract_months.c.invoice_id)
        .where(contract_months.c.contract_id == contract_id, contract_months.c.period == str(period))
    ).first()


def mark_reconciled(conn: Connection, contract_id: int, period: Period, now: datetime) -> bool:
    """Take the month as final, once (False: it already was)."""
    res = conn.execute(update(contract_months)
                       .where(contract_months.c.contract_id == contract_id,
                              contract_months.c.period == str(period), contract_months.c.reconciled_at.is_(None))
                       .values(reconciled_at=now))
    return res.rowcount == 1


def months_of(conn: Connection, contract_id: int):
    """The contract's recorded months with their invoice's status, in order."""
    return conn.execute(
        select(contract_months, invoices.c.status.label("invoice_status"))
        .join(invoices, invoices.c.id == contract_months.c.invoice_id)
        .where(contract_months.c.contract_id == contract_id).order_by(contract_months.c.period)
    ).all()


def as_reconciliation(row, account_id: str) -> MonthReconciliation:
    return MonthReconciliation(
        contract_id=str(row.contract_id), account=account_id, period=Period.parse(row.period), number=row.number,
        start=row.starts_at, end=row.ends_at, committed=int(row.committed), used=int(row.used),
        overage=int(row.overage), shortfall=int(row.shortfall), utilisation=Decimal(row.utilisation),
        committed_charge=row.committed_charge, overage_charge=row.overage_charge,
        termination_fee=row.termination_fee, total=row.total)


def latest_final_period(conn: Connection) -> Period | None:
    """The latest period with an invoice that can no longer change (its close has run), or None."""
    p = conn.execute(select(func.max(invoices.c.period)).where(invoices.c.status != "draft")).scalar()
    return Period.parse(p) if p else None


# ---- term summaries --------------------------------------------------------------------------------
def write_summary(conn: Connection, s: TermSummary) -> bool:
    """Record the term's summary once (False: it was already recorded)."""
    res = conn.execute(pg_insert(contract_summaries).values(
        contract_id=int(s.contract_id), starts_at=s.start, ends_at=s.end, terminated_early=s.terminated_early,
        months=s.months, committed=s.committed, used=s.used, overage=s.overage, shortfall=s.shortfall,
        committed_charges=s.committed_charges, overage_charges=s.overage_charges, termination_fee=s.termination_fee,
        total_charges=s.total_charges, average_utilisation=s.average_utilisation,
        months_under_commitment=s.months_under_commitment,
    ).on_conflict_do_nothing(index_elements=["contract_id"]))
    return res.rowcount == 1


def summary_of(conn: Connection, contract_id: int):
    return conn.execute(select(contract_summaries).where(contract_summaries.c.contract_id == contract_id)).first()


# ---- executions of a span, ranked against its committed executions ----------------------------------
_SPAN_USAGE_SQL = text(
    f"""
    WITH span AS (
        SELECT * FROM unnest(CAST(:idx AS int[]), CAST(:account AS text[]), CAST(:starts AS timestamptz[]),
                             CAST(:ends AS timestamptz[]), CAST(:committed AS bigint[]))
            AS s(idx, account_id, starts, ends, committed)
    ), ver AS (
        SELECT * FROM unnest(CAST(:ver_name AS text[]), CAST(:ver_start AS timestamptz[]),
                             CAST(:ver_end AS timestamptz[])) AS v(name, starts, ends)
    ), ranked AS (
        -- the rule of billing.rating.split_at_quota with the span's committed executions as the quota
        SELECT s.idx, e.model, e.byok, e.sandbox, e.input_tokens, e.output_tokens, e.cost_usd, e.occurred_at,
               NOT e.sandbox AND row_number() OVER (PARTITION BY s.idx, e.sandbox
                                                    ORDER BY e.occurred_at, e.event_id COLLATE "C") > s.committed
                   AS billable
        FROM span s JOIN executions e ON e.account_id = s.account_id
             AND e.occurred_at >= s.starts AND e.occurred_at < s.ends AND e.occurred_at < :usage_end
    )
    SELECT r.idx, v.name, r.model, r.byok, r.sandbox, r.billable,
           {USAGE_AGGREGATES}
    FROM ranked r JOIN ver v ON r.occurred_at >= v.starts AND r.occurred_at < v.ends
    GROUP BY 1, 2, 3, 4, 5, 6
    """
)


def span_usage(conn: Connection, spans: Sequence[tuple[str, datetime, datetime, int]],
               versions: Sequence[tuple[str, datetime, datetime]], usage_end: datetime) -> list[list[UsageRow]]:
    """For each span ``(account, start, end, committed)``: its executions before ``usage_end``
    aggregated like ``repositories.usage.usage_rows`` (catalog version in force, model, BYOK,
    sandbox), ``billable`` for the non-sandbox ones past the first ``committed`` in time order
    (occurred_at, then event id). One query for all spans."""
    out: list[list[UsageRow]] = [[] for _ in spans]
    if not spans:
        return out
    rows = conn.execute(_SPAN_USAGE_SQL, {
        "idx": list(range(len(spans))), "account": [s[0] for s in spans], "starts": [s[1] for s in spans],
        "ends": [s[2] for s in spans], "committed": [s[3] for s in spans],
        "ver_name": [v[0] for v in versions], "ver_start": [v[1] for v in versions],
        "ver_end": [v[2] for v in versions], "usage_end": usage_end,
    })
    for r in rows:
        out[r.idx].append(as_usage_row(r))
    return out
