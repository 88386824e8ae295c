"""Every SQL statement of the metering service (the HTTP API): platforms and their keys, recording
executions together with their month-to-date counters, entitlement snapshots, live usage, and the
billing page's data.

Functions take a Connection and never commit: the caller (a request handler, a CLI command) owns the
transaction boundary. The bulk file path (``activities.ingest``) maintains the counters with the same
``COUNT_INSERTED`` statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from billing.entitlements import MonthCounter
from billing.periods import Period
from models.tables import accounts, invoices, platforms

_COUNTER_COLUMNS = "account_id, period, model, byok, sandbox, executions, input_tokens, output_tokens, cost_usd"
_ADD_TO_COUNTERS = """
ON CONFLICT (account_id, period, model, byok, sandbox) DO UPDATE SET
    executions = u.executions + EXCLUDED.executions,
    input_tokens = u.input_tokens + EXCLUDED.input_tokens,
    output_tokens = u.output_tokens + EXCLUDED.output_tokens,
    cost_usd = u.cost_usd + EXCLUDED.cost_usd,
    updated_at = now()
"""
# Counts the rows of a data-modifying CTE named ``ins`` (``RETURNING account_id, occurred_at, model,
# byok, sandbox, input_tokens, output_tokens, cost_usd``) into usage_counters. ``ins`` holds only the
# rows this statement actually inserted (ON CONFLICT DO NOTHING leaves duplicates out), so whoever
# wins an event id counts it, once. The counter rows are locked in key order (ORDER BY), so two
# concurrent batches never deadlock on them.
COUNT_INSERTED = f"""
INSERT INTO usage_counters AS u ({_COUNTER_COLUMNS})
SELECT account_id, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'), model, byok, sandbox,
       count(*), sum(input_tokens), sum(output_tokens), coalesce(sum(cost_usd), 0)
FROM ins
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
{_ADD_TO_COUNTERS}"""
# The same for counts already aggregated per counter key, in a relation ``ins`` with the counter
# columns: the bulk path's COPY fast path, whose COPY inserted every row it counts.
ADD_COUNTS = f"""
INSERT INTO usage_counters AS u ({_COUNTER_COLUMNS})
SELECT {_COUNTER_COLUMNS} FROM ins
ORDER BY 1, 2, 3, 4, 5
{_ADD_TO_COUNTERS}"""
INSERTED_COLUMNS = "account_id, occurred_at, model, byok, sandbox, input_tokens, output_tokens, cost_usd"


class PlatformExists(ValueError):
    pass


# ---- platforms ----------------------------------------------------------------------------------
def create_platform(conn: Connection, name: str, api_key_hash: str) -> int:
    row = conn.execute(
        pg_insert(platforms).values(name=name, api_key_hash=api_key_hash)
        .on_conflict_do_nothing(index_elements=["name"]).returning(platforms.c.id)
    ).scalar()
    if row is None:
        raise PlatformExists(f"name: a platform named {name!r} exists already "
                             "(its key was shown when it was created; `tally platforms rotate-key` makes a new one)")
    return row


def rotate_platform_key(conn: Connection, name: str, api_key_hash: str) -> bool:
    res = conn.execute(update(platforms).where(platforms.c.name == name).values(api_key_hash=api_key_hash))
    return res.rowcount == 1


def platform_by_key_hash(conn: Connection, api_key_hash: str):
    return conn.execute(
        select(platforms.c.id, platforms.c.name).where(platforms.c.api_key_hash == api_key_hash)
    ).first()


def platform_by_name(conn: Connection, name: str):
    return conn.execute(select(platforms.c.id, platforms.c.name).where(platforms.c.name == name)).first()


def list_platforms(conn: Connection):
    counts = (
        select(accounts.c.platform_id, func.count().label("accounts"))
        .group_by(accounts.c.platform_id).subquery()
    )
    return conn.execute(
        select(platforms.c.id, platforms.c.name, platforms.c.created_at,
               func.coalesce(counts.c.accounts, 0).label("accounts"))
        .select_from(platforms.outerjoin(counts, counts.c.platform_id == platforms.c.id))
        .order_by(platforms.c.name)
    ).all()


def assign_platform(conn: Connection, account_id: str, platform_id: int) -> None:
    """Attach an account to a platform; an account never moves from one platform to another."""
    current = conn.execute(
        select(accounts.c.platform_id).where(accounts.c.id == account_id).with_for_update()
    ).first()
    if current is None:
        raise LookupError(f"no account {account_id!r}")
    if current.platform_id not in (None, platform_id):
        raise ValueError(f"platform: account {account_id!r} belongs to another platform")
    if current.platform_id is None:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(platform_id=platform_id))


def account_of_platform(conn: Connection, account_id: str, platform_id: int):
    """The account row if it belongs to the platform, else None (the caller answers 404)."""
    return conn.execute(
        select(accounts).where(accounts.c.id == account_id, accounts.c.platform_id == platform_id)
    ).first()


def get_account(conn: Connection, account_id: str):
    return conn.execute(select(accounts).where(accounts.c.id == account_id)).first()


# ---- recording executions -----------------------------------------------------------------------
_PLATFORM_ACCOUNTS = text(
    "SELECT id FROM accounts WHERE id = ANY(CAST(:ids AS text[])) AND platform_id = :platform_id"
)

_RECORD = text(
    f"""
    WITH batch AS (
        SELECT * FROM unnest(
            CAST(:event_id AS text[]), CAST(:account_id AS text[]), CAST(:agent_id AS text[]),
            CAST(:skill_id AS text[]), CAST(:model AS text[]), CAST(:input_tokens AS bigint[]),
            CAST(:output_tokens AS bigint[]), CAST(:byok AS boolean[]), CAST(:sandbox AS boolean[]),
            CAST(:cost_usd AS numeric[]), CAST(:occurred_at AS timestamptz[])
        ) AS b(event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens,
               byok, sandbox, cost_usd, occurred_at)
    ), ins AS (
        INSERT INTO executions (event_id, account_id, agent_id, skill_id, model, input_tokens,
                                output_tokens, byok, sandbox, cost_usd, occurred_at)
        SELECT event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens,
               byok, sandbox, cost_usd, occurred_at
        FROM batch
        ORDER BY event_id  -- one lock order for every writer: overlapping batches cannot deadlock
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id, {INSERTED_COLUMNS}
    ), counted AS ({COUNT_INSERTED})
    SELECT event_id FROM ins
    """
)

_RECORD_KEYS = ("event_id", "account_id", "agent_id", "skill_id", "model", "input_tokens", "output_tokens",
                "byok", "sandbox", "cost_usd", "occurred_at")


def platform_account_ids(conn: Connection, platform_id: int, account_ids: list[str]) -> set[str]:
    if not account_ids:
        return set()
    return set(conn.execute(_PLATFORM_ACCOUNTS, {"ids": account_ids, "platform_id": platform_id}).scalars())


def record_executions(conn: Connection, rows: list[tuple]) -> set[str]:
    """Insert executions (rows in ``activities.ingest.FIELDS`` order, unique event ids, accounts
    known) and count the inserted ones into usage_counters, in one statement. Returns the event ids
    actually inserted; the others were recorded before (duplicates)."""
    if not rows:
        return set()
    columns = list(zip(*rows))
    params = {key: list(col) for key, col in zip(_RECORD_KEYS, columns)}
    return set(conn.execute(_RECORD, params).scalars())


# ---- reading counters and usage -----------------------------------------------------------------
_SNAPSHOT = """
SELECT a.id, a.plan, a.seats, a.overage_opt_in, a.pricing, a.status, a.billing_starts_at, a.created_at,
       a.updated_at, c.model, c.byok, c.sandbox, c.executions, c.input_tokens, c.output_tokens, c.cost_usd
FROM accounts a
LEFT JOIN usage_counters c ON c.account_id = a.id AND c.period = %(period)s
WHERE a.id = %(id)s AND a.platform_id = %(platform_id)s
"""


@dataclass(frozen=True)
class AccountSnapshot:
    id: str
    plan: str
    seats: int
    overage_opt_in: bool
    pricing: str
    status: str
    billing_starts_at: datetime
    created_at: datetime
    updated_at: datetime  # moves whenever the account's terms change (repository.change_terms)


def account_with_counters(conn: Connection, account_id: str, platform_id: int, period: Period):
    """(account, its counters for the period) in one indexed query; (None, []) when the account does
    not exist or belongs to another platform. The entitlement hot path: run on the driver connection
    (a prepared statement, no ORM result processing)."""
    with conn.connection.driver_connection.cursor() as cur:
        rows = cur.execute(_SNAPSHOT, {"id": account_id, "platform_id": platform_id,
                                       "period": str(period)}).fetchall()
    if not rows:
        return None, []
    counters = [MonthCounter(r[9], r[10], r[11], int(r[12]), int(r[13]), int(r[14]), Decimal(r[15]))
                for r in rows if r[9] is not None]
    return AccountSnapshot(*rows[0][:9]), counters


def counters_of(conn: Connection, account_ids: list[str] | None = None, period: Period | None = None):
    """Raw counter rows (tests and ops checks)."""
    q = "SELECT account_id, period, model, byok, sandbox, executions, input_tokens, output_tokens, cost_usd " \
        "FROM usage_counters WHERE true"
    params: dict = {}
    if account_ids is not None:
        q += " AND account_id = ANY(CAST(:ids AS text[]))"
        params["ids"] = account_ids
    if period is not None:
        q += " AND period = :period"
        params["period"] = str(period)
    return conn.execute(text(q + " ORDER BY 1, 2, 3, 4, 5"), params).all()


_GROUP_KEYS = {
    "agent": "agent_id",
    "model": "model",
    "skill": "skill_id",
    "day": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


@dataclass(frozen=True)
class UsageGroup:
    key: str | None
    executions: int  # non-sandbox: what counts against the quota and is billed
    sandbox_executions: int
    byok_executions: int
    input_tokens: int
    output_tokens: int


def usage_groups(conn: Connection, account_id: str, start: datetime, end: datetime, group_by: str) -> list[UsageGroup]:
    """One account's executions of ``[start, end)`` grouped by agent, model, skill or UTC day
    (an index range scan on (account_id, occurred_at))."""
    key = _GROUP_KEYS[group_by]  # KeyError for anything else: callers validate group_by first
    rows = conn.execute(text(
        f"""
        SELECT {key} AS key,
               count(*) FILTER (WHERE NOT sandbox) AS executions,
               count(*) FILTER (WHERE sandbox) AS sandbox_executions,
               count(*) FILTER (WHERE byok AND NOT sandbox) AS byok_executions,
               coalesce(sum(input_tokens), 0) AS input_tokens,
               coalesce(sum(output_tokens), 0) AS output_tokens
        FROM executions
        WHERE account_id = :a AND occurred_at >= :start AND occurred_at < :end
        GROUP BY 1
        ORDER BY 1 NULLS LAST
        """
    ), {"a": account_id, "start": start, "end": end})
    return [UsageGroup(r.key, r.executions, r.sandbox_executions, r.byok_executions, int(r.input_tokens),
                       int(r.output_tokens)) for r in rows]


def count_non_sandbox(conn: Connection, account_id: str, start: datetime, end: datetime) -> int:
    return conn.execute(text(
        "SELECT count(*) FROM executions WHERE account_id = :a AND occurred_at >= :start "
        "AND occurred_at < :end AND NOT sandbox"
    ), {"a": account_id, "start": start, "end": end}).scalar_one()


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
