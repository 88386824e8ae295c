"""Usage reporting's SQL: the meters, what was reported per account/meter/hour, the hours a run looked
at, the corrections scan, the usage the reports and the reconciliation read, and the reconciliation.

Functions take a Connection and never commit: the caller owns the transaction. Usage is read straight
from ``executions`` (the truth), aggregated by the database: an hour by the BRIN index on
``occurred_at``, a period by the ``(account_id, occurred_at)`` index, late rows by the BRIN index on
``ingested_at``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Iterable

from sqlalchemy import Connection, Integer, and_, case, cast, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.meters import HOUR, HourUsage, Revision
from models.tables import (
    accounts,
    executions,
    meter_reconciliations,
    meter_report_hours,
    meter_report_state,
    meter_reports,
    meters,
)

Range = tuple[str | None, str]  # accounts with after < id <= upto


def _in_range(col, after: str | None, upto: str):
    return and_(col > after, col <= upto) if after is not None else col <= upto


def _ranges(ids: list[str], after: str | None, chunk_size: int) -> list[tuple[str | None, str, int]]:
    chunks, lower = [], after
    for i in range(0, len(ids), chunk_size):
        part = ids[i:i + chunk_size]
        chunks.append((lower, part[-1], len(part)))
        lower = part[-1]
    return chunks


def _page(conn: Connection, q, after: str | None, chunk_size: int, max_chunks: int, col):
    """Id ranges of ``chunk_size`` from the ordered ids ``q`` selects, one page at a time."""
    if after is not None:
        q = q.where(col > after)
    ids = list(conn.execute(q.order_by(col).limit(chunk_size * max_chunks + 1)).scalars())
    more = len(ids) > chunk_size * max_chunks
    chunks = _ranges(ids[:chunk_size * max_chunks], after, chunk_size)
    return chunks, (chunks[-1][1] if more else None)


def db_now(conn: Connection) -> datetime:
    """The database's clock: what ``executions.ingested_at`` is written with."""
    return conn.execute(select(func.now())).scalar_one()


# ---- meters -----------------------------------------------------------------------------------------
def all_meters(conn: Connection) -> list:
    return conn.execute(select(meters).order_by(meters.c.id)).all()


def save_meter(conn: Connection, *, key: str, quantity: str, model: str | None, event_name: str,
               stripe_meter_id: str) -> int:
    stmt = pg_insert(meters).values(key=key, quantity=quantity, model=model, event_name=event_name,
                                    stripe_meter_id=stripe_meter_id)
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"stripe_meter_id": stripe_meter_id})
    return conn.execute(stmt.returning(meters.c.id)).scalar_one()


# ---- usage --------------------------------------------------------------------------------------------
def _usage(where) -> select:
    not_sandbox = ~executions.c.sandbox
    platform_key = and_(~executions.c.sandbox, ~executions.c.byok)
    return (
        select(
            executions.c.account_id, executions.c.model,
            func.count().filter(not_sandbox),
            func.coalesce(func.sum(executions.c.input_tokens).filter(platform_key), 0),
            func.coalesce(func.sum(executions.c.output_tokens).filter(platform_key), 0),
        )
        .where(where)
        .group_by(executions.c.account_id, executions.c.model)
    )


def _rows(conn: Connection, q) -> list[HourUsage]:
    return [HourUsage(a, m, int(n), int(i), int(o)) for a, m, n, i, o in conn.execute(q)]


def _during(start: datetime, end: datetime):
    return and_(executions.c.occurred_at >= start, executions.c.occurred_at < end)


def hour_usage(conn: Connection, hour: datetime, after: str | None, upto: str) -> list[HourUsage]:
    """Per account of the range and model: executions (no sandbox tries) and platform-key tokens."""
    return _rows(conn, _usage(and_(_during(hour, hour + HOUR), _in_range(executions.c.account_id, after, upto))))


def period_usage(conn: Connection, start: datetime, end: datetime, after: str | None, upto: str) -> list[HourUsage]:
    return _rows(conn, _usage(and_(_in_range(executions.c.account_id, after, upto), _during(start, end))))


def usage_chunks(conn: Connection, hour: datetime, after: str | None, chunk_size: int, max_chunks: int):
    """The accounts with executions in the hour, as id ranges of ``chunk_size`` (one page)."""
    q = select(executions.c.account_id).where(_during(hour, hour + HOUR)).group_by(executions.c.account_id)
    return _page(conn, q, after, chunk_size, max_chunks, executions.c.account_id)


def count_usage_accounts(conn: Connection, hour: datetime) -> int:
    return conn.execute(select(func.count(func.distinct(executions.c.account_id)))
                        .where(_during(hour, hour + HOUR))).scalar_one()


def _hour_of(col):
    return func.date_trunc("hour", col, "UTC")


def hours_with_usage(conn: Connection, start: datetime, end: datetime) -> set[datetime]:
    """The hours in ``[start, end)`` that hold at least one execution."""
    h = _hour_of(executions.c.occurred_at)
    return set(conn.execute(select(h).where(_during(start, end)).group_by(h)).scalars())


def hours_ingested_since(conn: Connection, since: datetime, before: datetime) -> set[datetime]:
    """The hours (before ``before``) of executions ingested after ``since``: where late events landed."""
    h = _hour_of(executions.c.occurred_at)
    return set(conn.execute(select(h).where(executions.c.ingested_at > since, executions.c.occurred_at < before)
                            .group_by(h)).scalars())


def customers_of(conn: Connection, account_ids: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
    """account -> (Stripe customer id or None, e-mail)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    rows = conn.execute(select(accounts.c.id, accounts.c.stripe_customer_id, accounts.c.email)
                        .where(accounts.c.id.in_(ids)))
    return {a: (c, e) for a, c, e in rows}


# ---- what was reported --------------------------------------------------------------------------------
def revisions_for(conn: Connection, hour: datetime, after: str | None, upto: str) -> dict[tuple[str, int], list[Revision]]:
    """(account, meter id) -> its revisions for the hour, in order."""
    rows = conn.execute(
        select(meter_reports.c.account_id, meter_reports.c.meter_id, meter_reports.c.revision,
               meter_reports.c.quantity, meter_reports.c.state)
        .where(meter_reports.c.hour == hour, _in_range(meter_reports.c.account_id, after, upto))
        .order_by(meter_reports.c.account_id, meter_reports.c.meter_id, meter_reports.c.revision))
    out: dict[tuple[str, int], list[Revision]] = defaultdict(list)
    for a, m, r, q, s in rows:
        out[(a, m)].append(Revision(r, int(q), s))
    return out


def start_revisions(conn: Connection, rows: list[dict]) -> None:
    """Record revisions about to be sent (``account_id, meter_id, hour, revision, quantity,
    identifier``) as 'sending'; a revision already recorded is left as it is (one statement)."""
    if not rows:
        return
    conn.execute(
        text("INSERT INTO meter_reports (account_id, meter_id, hour, revision, quantity, identifier, state) "
             "SELECT a, m, h, r, q, i, 'sending' FROM unnest(CAST(:a AS text[]), CAST(:m AS int[]), "
             "CAST(:h AS timestamptz[]), CAST(:r AS int[]), CAST(:q AS bigint[]), CAST(:i AS text[])) "
             "AS x(a, m, h, r, q, i) ON CONFLICT DO NOTHING"),
        {"a": [r["account_id"] for r in rows], "m": [r["meter_id"] for r in rows], "h": [r["hour"] for r in rows],
         "r": [r["revision"] for r in rows], "q": [r["quantity"] for r in rows],
         "i": [r["identifier"] for r in rows]})


def settle_revisions(conn: Connection, outcomes: list[dict]) -> None:
    """``account_id, meter_id, hour, revision, state, error`` for each revision sent (one statement)."""
    if not outcomes:
        return
    conn.execute(
        text("UPDATE meter_reports AS r SET state = o.state, error = o.error, "
             "settled_at = CASE WHEN o.state = 'reported' THEN now() ELSE r.settled_at END "
             "FROM (SELECT unnest(CAST(:a AS text[])) AS account_id, unnest(CAST(:m AS int[])) AS meter_id, "
             "unnest(CAST(:h AS timestamptz[])) AS hour, unnest(CAST(:r AS int[])) AS revision, "
             "unnest(CAST(:s AS text[])) AS state, unnest(CAST(:e AS text[])) AS error) AS o "
             "WHERE r.account_id = o.account_id AND r.meter_id = o.meter_id AND r.hour = o.hour "
             "AND r.revision = o.revision"),
        {"a": [o["account_id"] for o in outcomes], "m": [o["meter_id"] for o in outcomes],
         "h": [o["hour"] for o in outcomes], "r": [o["revision"] for o in outcomes],
         "s": [o["state"] for o in outcomes], "e": [o.get("error") for o in outcomes]},
    )


def reported_totals(conn: Connection, start: datetime, end: datetime, after: str | None, upto: str):
    """(account, meter id) -> (reported total, revisions not settled) over hours in ``[start, end)``."""
    rows = conn.execute(
        select(meter_reports.c.account_id, meter_reports.c.meter_id,
               func.coalesce(func.sum(meter_reports.c.quantity).filter(meter_reports.c.state == "reported"), 0),
               func.count().filter(meter_reports.c.state != "reported"))
        .where(meter_reports.c.hour >= start, meter_reports.c.hour < end,
               _in_range(meter_reports.c.account_id, after, upto))
        .group_by(meter_reports.c.account_id, meter_reports.c.meter_id))
    return {(a, m): (int(total), int(unsettled)) for a, m, total, unsettled in rows}


def recently_reported(conn: Connection, start: datetime, end: datetime, after: str | None, upto: str,
                      since: datetime) -> dict[tuple[str, int], int]:
    """(account, meter id) -> quantity over hours in ``[start, end)`` whose report Stripe acknowledged at
    or after ``since`` (what its lagging summaries may not show yet)."""
    rows = conn.execute(
        select(meter_reports.c.account_id, meter_reports.c.meter_id, func.sum(meter_reports.c.quantity))
        .where(meter_reports.c.hour >= start, meter_reports.c.hour < end, meter_reports.c.state == "reported",
               meter_reports.c.settled_at >= since, _in_range(meter_reports.c.account_id, after, upto))
        .group_by(meter_reports.c.account_id, meter_reports.c.meter_id))
    return {(a, m): int(q) for a, m, q in rows}


def unreported_old_hours(conn: Connection, start: datetime, end: datetime, after: str | None, upto: str) -> dict[str, int]:
    """account -> hours in ``[start, end)`` with usage and nothing reported for the account (used with
    ``end`` = the oldest hour Stripe still accepts: hours that can no longer be reported)."""
    if end <= start:
        return {}
    h = _hour_of(executions.c.occurred_at)
    reported = (select(literal_column("1")).select_from(meter_reports)
                .where(meter_reports.c.account_id == executions.c.account_id, meter_reports.c.hour == h,
                       meter_reports.c.state == "reported").exists())
    rows = conn.execute(
        select(executions.c.account_id, func.count(func.distinct(h)))
        .where(_in_range(executions.c.account_id, after, upto), _during(start, end), ~executions.c.sandbox, ~reported)
        .group_by(executions.c.account_id))
    return {a: int(n) for a, n in rows}


def unsettled_reports(conn: Connection, limit: int = 20) -> list:
    """Revisions not reported (failed, or sent with no answer yet), newest hours first."""
    m = meters.alias("m")
    return conn.execute(
        select(meter_reports.c.account_id, m.c.key, meter_reports.c.hour, meter_reports.c.revision,
               meter_reports.c.quantity, meter_reports.c.state, meter_reports.c.error)
        .join(m, m.c.id == meter_reports.c.meter_id)
        .where(meter_reports.c.state != "reported")
        .order_by(meter_reports.c.hour.desc(), meter_reports.c.account_id).limit(limit)).all()


def count_unsettled(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(meter_reports)
                        .where(meter_reports.c.state != "reported")).scalar_one()


# ---- hours ---------------------------------------------------------------------------------------------
def begin_hour(conn: Connection, hour: datetime) -> None:
    conn.execute(
        pg_insert(meter_report_hours).values(hour=hour, state="running", runs=1)
        .on_conflict_do_update(index_elements=["hour"],
                               set_={"state": "running", "runs": meter_report_hours.c.runs + 1,
                                     "updated_at": func.now()}))


def finish_hour(conn: Connection, hour: datetime, *, state: str, accounts: int, events: int, already: int,
                failed: int, error: str | None) -> str:
    """Settle a run of the hour. An hour marked late while it ran stays late (the next run sends the
    corrections). Returns the state it has now."""
    return conn.execute(
        update(meter_report_hours).where(meter_report_hours.c.hour == hour)
        .values(state=case((meter_report_hours.c.state == "running", state), else_=meter_report_hours.c.state),
                accounts=accounts, events=events, already=already, failed=failed, error=error,
                updated_at=func.now())
        .returning(meter_report_hours.c.state)).scalar_one()


def mark_hours(conn: Connection, hours: Iterable[datetime], state: str, errors: dict[datetime, str] | None = None) -> None:
    rows = [{"hour": h, "state": state, "error": (errors or {}).get(h)} for h in hours]
    if rows:
        stmt = pg_insert(meter_report_hours)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["hour"],
            set_={"state": stmt.excluded.state, "error": stmt.excluded.error, "updated_at": func.now()}), rows)


def mark_late(conn: Connection, hours: Iterable[datetime]) -> list[datetime]:
    """Hours reported (or being reported) that got executions since: their corrections are due."""
    hours = sorted(set(hours))
    if not hours:
        return []
    return sorted(conn.execute(
        update(meter_report_hours)
        .where(meter_report_hours.c.hour.in_(hours), meter_report_hours.c.state.in_(("reported", "running")))
        .values(state="late", updated_at=func.now()).returning(meter_report_hours.c.hour)).scalars())


def hour_states(conn: Connection, start: datetime, end: datetime) -> dict[datetime, str]:
    """hour -> state, for hours in ``[start, end]``."""
    return dict(conn.execute(select(meter_report_hours.c.hour, meter_report_hours.c.state)
                             .where(meter_report_hours.c.hour >= start, meter_report_hours.c.hour <= end)).all())


def hours_to_redo(conn: Connection, after: datetime | None, end: datetime) -> list[datetime]:
    """Hours up to ``end`` (after ``after``) a run left unfinished: late or running, and partial ones
    whose last run is old enough: 1 h after the first try, then 2, 4, 8, 16 h, then daily (an event
    Stripe keeps refusing, e.g. a model without a meter yet, must not make every run redo the hour)."""
    h = meter_report_hours.c
    hours = cast(func.least(func.power(2, func.least(func.greatest(h.runs - 1, 0), 5)), 24), Integer)
    wait = func.make_interval(0, 0, 0, 0, hours)
    due = (h.state.in_(("late", "running"))) | ((h.state == "partial") & (h.updated_at <= func.now() - wait))
    q = select(h.hour).where(due, h.hour <= end)
    if after is not None:
        q = q.where(meter_report_hours.c.hour > after)
    return list(conn.execute(q.order_by(meter_report_hours.c.hour)).scalars())


def hours_not_reported(conn: Connection, limit: int = 50) -> list:
    return conn.execute(
        select(meter_report_hours).where(meter_report_hours.c.state != "reported")
        .order_by(meter_report_hours.c.hour.desc()).limit(limit)).all()


def last_reported_hour(conn: Connection) -> datetime | None:
    return conn.execute(select(func.max(meter_report_hours.c.hour))
                        .where(meter_report_hours.c.state == "reported")).scalar_one()


def count_hours_by_state(conn: Connection) -> dict[str, int]:
    return dict(conn.execute(select(meter_report_hours.c.state, func.count())
                             .group_by(meter_report_hours.c.state)).all())


def known_hours_between(conn: Connection, start: datetime, end: datetime) -> int:
    return conn.execute(select(func.count()).select_from(meter_report_hours)
                        .where(meter_report_hours.c.hour >= start, meter_report_hours.c.hour <= end)).scalar_one()


# ---- since when, and the corrections scan ----------------------------------------------------------------
def report_state(conn: Connection, *, for_update: bool = False):
    q = select(meter_report_state).where(meter_report_state.c.id == 1)
    return conn.execute(q.with_for_update() if for_update else q).first()


def start_reporting(conn: Connection, since: datetime, scanned_until: datetime) -> None:
    conn.execute(pg_insert(meter_report_state).values(id=1, reporting_since=since, scanned_until=scanned_until)
                 .on_conflict_do_nothing())


def set_scanned_until(conn: Connection, until: datetime) -> None:
    conn.execute(update(meter_report_state).where(meter_report_state.c.id == 1).values(scanned_until=until))


# ---- reconciliation ------------------------------------------------------------------------------------
def reconcile_chunks(conn: Connection, after: str | None, chunk_size: int, max_chunks: int):
    return _page(conn, select(accounts.c.id), after, chunk_size, max_chunks, accounts.c.id)


def count_accounts(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(accounts)).scalar_one()


def save_reconciliation(conn: Connection, period: str, rows: list[dict]) -> None:
    """Upsert ``account_id, meter_id, tally, reported, stripe, drift, unexplained, explanation, unsettled``."""
    if not rows:
        return
    stmt = pg_insert(meter_reconciliations)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["period", "account_id", "meter_id"],
        set_={c: stmt.excluded[c] for c in ("tally", "reported", "stripe", "drift", "unexplained", "explanation",
                                       "unsettled")}
        | {"checked_at": func.now()}), [{**r, "period": period} for r in rows])


def drift_lines(conn: Connection, period: str, *, only_drift: bool = True, limit: int | None = 100) -> list:
    m = meters.alias("m")
    q = (select(meter_reconciliations.c.account_id, m.c.key.label("meter"), meter_reconciliations.c.tally,
                meter_reconciliations.c.reported, meter_reconciliations.c.stripe, meter_reconciliations.c.drift,
                meter_reconciliations.c.unexplained, meter_reconciliations.c.explanation,
                meter_reconciliations.c.checked_at, meter_reconciliations.c.unsettled)
         .join(m, m.c.id == meter_reconciliations.c.meter_id)
         .where(meter_reconciliations.c.period == period)
         .order_by(func.abs(meter_reconciliations.c.drift).desc(), meter_reconciliations.c.account_id, m.c.key))
    if only_drift:
        q = q.where((meter_reconciliations.c.drift != 0) | (meter_reconciliations.c.unexplained != 0)
                    | (meter_reconciliations.c.unsettled != 0))
    return conn.execute(q.limit(limit) if limit else q).all()


def reconciliation_summaries(conn: Connection, limit: int = 3) -> list:
    """The latest periods reconciled: pairs checked, drifting, unexplained, when, not settled yet."""
    r = meter_reconciliations.c
    return conn.execute(
        select(r.period, func.count(), func.count().filter((r.drift != 0) | (r.unexplained != 0)),
               func.count().filter(r.unexplained != 0), func.max(r.checked_at), func.count().filter(r.unsettled != 0))
        .group_by(r.period).order_by(r.period.desc()).limit(limit)).all()

