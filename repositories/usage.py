"""Executions and what is counted of them (``executions``, ``usage_counters``): recording, the
month-to-date counters, usage by agent/model/day, the close's ranked aggregation and late usage.

Every insert into ``executions`` counts the rows it really inserted into ``usage_counters`` in the
same statement; the bulk file path (``activities.ingest``) does so with ``COUNT_INSERTED`` /
``ADD_COUNTS`` from here.
"""

from __future__ import annotations

from bisect import bisect_right
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal

from sqlalchemy import Connection, text

from billing.entitlements import MonthCounter
from billing.periods import Period
from billing.rating import TermsSegment, UsageRow
from repositories.arrays import text_array
from repositories.credits import ENTITLEMENT_FACTS_JOIN

_COUNTER_COLUMNS = ("account_id, period, model, byok, sandbox, executions, input_tokens, output_tokens, cost_usd, "
                    "uncosted_input_tokens, uncosted_output_tokens")
# A row counted before the uncosted tokens were (NULL there, migration 0015) stays NULL: NULL + n.
_ADD_TO_COUNTERS = """
ON CONFLICT (account_id, period, model, byok, sandbox) DO UPDATE SET
    executions = u.executions + EXCLUDED.executions,
    input_tokens = u.input_tokens + EXCLUDED.input_tokens,
    output_tokens = u.output_tokens + EXCLUDED.output_tokens,
    cost_usd = u.cost_usd + EXCLUDED.cost_usd,
    uncosted_input_tokens = u.uncosted_input_tokens + EXCLUDED.uncosted_input_tokens,
    uncosted_output_tokens = u.uncosted_output_tokens + EXCLUDED.uncosted_output_tokens,
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
       count(*), sum(input_tokens), sum(output_tokens), coalesce(sum(cost_usd), 0),
       coalesce(sum(input_tokens) FILTER (WHERE cost_usd IS NULL), 0),
       coalesce(sum(output_tokens) FILTER (WHERE cost_usd IS NULL), 0)
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


# ---- recording executions -----------------------------------------------------------------------
# Event ids are unique per tenant (``execution_ids``: platform, event id, content digest). Both ways in
# (the API's batches, the bulk file's staging table) record their rows with ``merge_sql``: the ids
# first (ON CONFLICT DO NOTHING, in key order so overlapping writers wait instead of deadlocking), then
# the executions of the ids this statement recorded, counted into usage_counters in the same
# statement. It answers the source rows it did NOT record; ``recorded_hashes`` then tells a replay
# (same digest: a duplicate) from a reuse of the id with other content (rejected).
EXECUTION_FIELDS = ("event_id", "account_id", "agent_id", "skill_id", "model", "input_tokens", "output_tokens",
                    "byok", "sandbox", "cost_usd", "occurred_at", "routed_model", "routing_decision_id",
                    "requested_model")
_FIELD_LIST = ", ".join(EXECUTION_FIELDS)


def merge_sql(source: str) -> str:
    """The recording statement over ``source``: a query with columns ``n`` (the caller's row number),
    ``platform_id``, ``content_hash`` and ``EXECUTION_FIELDS``, unique by (platform_id, event_id)."""
    return f"""
    WITH src AS ({source}),
    ids AS (
        INSERT INTO execution_ids (platform_id, event_id, content_hash)
        SELECT platform_id, event_id, content_hash FROM src ORDER BY platform_id, event_id
        ON CONFLICT DO NOTHING
        RETURNING platform_id, event_id
    ), ins AS (
        INSERT INTO executions ({_FIELD_LIST})
        SELECT {", ".join("s." + f for f in EXECUTION_FIELDS)}
        FROM src s JOIN ids ON ids.platform_id = s.platform_id AND ids.event_id = s.event_id
        RETURNING {INSERTED_COLUMNS}
    ), counted AS ({COUNT_INSERTED})
    SELECT s.n, s.platform_id, s.event_id, s.content_hash FROM src s
    WHERE NOT EXISTS (SELECT 1 FROM ids WHERE ids.platform_id = s.platform_id AND ids.event_id = s.event_id)
    """


_RECORD = merge_sql("""
    SELECT * FROM unnest(
        %(n)s::bigint[], %(platform_id)s::int[], %(content_hash)s::bytea[],
        %(event_id)s::text[], %(account_id)s::text[], %(agent_id)s::text[], %(skill_id)s::text[],
        %(model)s::text[], %(input_tokens)s::bigint[], %(output_tokens)s::bigint[], %(byok)s::boolean[],
        %(sandbox)s::boolean[], %(cost_usd)s::numeric[], %(occurred_at)s::timestamptz[],
        %(routed_model)s::text[], %(routing_decision_id)s::bigint[], %(requested_model)s::text[]
    ) AS b(n, platform_id, content_hash, event_id, account_id, agent_id, skill_id, model, input_tokens,
           output_tokens, byok, sandbox, cost_usd, occurred_at, routed_model, routing_decision_id,
           requested_model)
""")
RECORDED_HASHES = """
SELECT x.platform_id, x.event_id, x.content_hash FROM execution_ids x
JOIN unnest(%(platform_id)s::int[], %(event_id)s::text[]) AS k(platform_id, event_id)
  ON k.platform_id = x.platform_id AND k.event_id = x.event_id
"""
# What ingest needs to know of an account: its tenant (0: no platform) and when its billing starts.
# A batch's accounts are joined from unnest, never ``id = ANY(array parameter)``: once the statement is
# prepared Postgres may use its generic plan, where ANY over a parameter is a linear search per row
# (not the hash it builds for a constant array), so a seq scan of a small accounts table compared each
# row with every id of the batch (4-5 ms a batch for 1,000 accounts; issue 15, eleventh pass).
TENANCY = """
SELECT a.id, coalesce(a.platform_id, 0), a.billing_starts_at
FROM unnest(%(ids)s::text[]) AS k(id) JOIN accounts a ON a.id = k.id
WHERE %(platform_id)s::int IS NULL OR a.platform_id = %(platform_id)s::int
"""


def tenancy(conn: Connection, account_ids: list[str], platform_id: int | None = None) -> dict[str, tuple]:
    """{account: (tenant, billing_starts_at)} of the accounts that exist (and belong to ``platform_id``
    when given)."""
    rows = conn.exec_driver_sql(TENANCY, {"ids": text_array(account_ids), "platform_id": platform_id}).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def record_executions(conn: Connection, rows: list[tuple]) -> list[tuple]:
    """Record rows ``(n, platform_id, content_hash, *EXECUTION_FIELDS)`` unique by (platform, event
    id), counting the recorded ones into usage_counters, in one statement. Returns the rows not
    recorded as (n, platform_id, event_id, content_hash): their id was recorded before."""
    if not rows:
        return []
    columns = list(zip(*rows))
    params = {key: list(col) for key, col in zip(("n", "platform_id", "content_hash", *EXECUTION_FIELDS), columns)}
    return [tuple(r) for r in conn.exec_driver_sql(_RECORD, params).all()]


def recorded_hashes(conn: Connection, keys: list[tuple[int, str]]) -> dict[tuple[int, str], bytes]:
    """The content digest recorded for each (platform, event id) of ``keys`` that is known."""
    if not keys:
        return {}
    rows = conn.exec_driver_sql(RECORDED_HASHES, {"platform_id": [k[0] for k in keys],
                                                  "event_id": [k[1] for k in keys]}).all()
    return {(r[0], r[1]): bytes(r[2]) for r in rows}


_ADOPT_IDS = """
UPDATE execution_ids x SET platform_id = %(platform_id)s
FROM executions e
WHERE e.account_id = %(account_id)s AND x.platform_id = 0 AND x.event_id = e.event_id
  AND NOT EXISTS (SELECT 1 FROM execution_ids y WHERE y.platform_id = %(platform_id)s AND y.event_id = x.event_id)
"""


def adopt_event_ids(conn: Connection, account_id: str, platform_id: int) -> None:
    """An account without a platform joins one: the ids its executions used (tenant 0) become the
    platform's, so the platform replaying them gets ``duplicate``. An id the platform already used for
    another account stays where it is (it is that account's)."""
    conn.exec_driver_sql(_ADOPT_IDS, {"account_id": account_id, "platform_id": platform_id})


# ---- reading counters and usage -----------------------------------------------------------------
# What an entitlement check reads of accounts (one, the check's own read; or many, the API's entitlement
# view, services/entitlement_view.py): one row per account, (id, text), everything folded into the text: the account's fields
# split by U+001F, then U+001D, then its counters (fields split by U+001F, counters by U+001E);
# instants as microseconds since the epoch. A refresh of thousands of accounts then decodes thousands
# of short strings, tells an unchanged account by comparing them, and only the accounts a check asks
# for are made into snapshots (``snapshot_from_row``). No ORDER BY in the counters' aggregate (a sort
# per account): the primary key's order is the usual one, and another order costs one needless
# conversion, never a wrong answer.
_US, _RS, _GS = "\x1f", "\x1e", "\x1d"


def _micros(column: str) -> str:
    return f"coalesce((extract(epoch FROM {column}) * 1000000)::bigint::text, '')"


SNAPSHOT_ROWS_SQL = f"""
SELECT a.id,
       concat_ws(E'\\x1f', a.plan, a.seats, a.overage_opt_in::int, a.pricing, a.status,
                 {_micros('a.billing_starts_at')}, {_micros('a.created_at')}, {_micros('a.updated_at')},
                 (EXISTS (SELECT 1 FROM anomalies x WHERE x.account_id = a.id
                                                    AND x.state IN ('open', 'confirmed')))::int,
                 coalesce(cr.credits_only::int::text, ''), coalesce(cr.spendable::text, ''),
                 coalesce(a.platform_id::text, ''))
       || E'\\x1d' ||
       coalesce((SELECT string_agg(concat_ws(E'\\x1f', c.model, c.byok::int, c.sandbox::int, c.executions,
                                             c.input_tokens, c.output_tokens, c.cost_usd), E'\\x1e')
                 FROM usage_counters c WHERE c.account_id = a.id AND c.period = %(period)s), '')
FROM (SELECT DISTINCT id FROM unnest(%(ids)s::text[]) AS u(id)) k
JOIN accounts a ON a.id = k.id
{ENTITLEMENT_FACTS_JOIN}
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
    updated_at: datetime  # moves whenever the account's terms change (accounts.append_terms)
    paused_anomaly: bool = False  # a spike paused it and nobody has resumed it (anomalies)
    # (credits_only, spendable credits) at the snapshot's instant; None: the account holds no credits
    # (repositories.credits.entitlement_facts)
    credit_facts: tuple[bool, Decimal] | None = None
    platform_id: int | None = None


def account_with_counters(conn: Connection, account_id: str, platform_id: int, period: Period,
                          at: datetime | None = None):
    """(account, its counters for the period) in one indexed query, with its credit facts at ``at``
    (default: now); (None, []) when the account does not exist or belongs to another
    platform. The entitlement hot path: one round trip on the driver connection (a prepared
    statement, no ORM result processing), the same read the entitlement view makes of many."""
    rows = snapshot_rows(conn, [account_id], period, at or datetime.now(timezone.utc))
    if not rows:
        return None, []
    account, counters = snapshot_from_row(rows[0])
    if account.platform_id != platform_id:
        return None, []
    return account, counters


def snapshot_rows_params(account_ids: list[str], period: Period, at: datetime) -> dict:
    return {"ids": text_array(account_ids), "period": str(period), "at": at}


def snapshot_rows(conn: Connection, account_ids: list[str], period: Period, at: datetime) -> list[tuple[str, str]]:
    """For each of the accounts that exist (any platform), (id, text) of what ``account_with_counters``
    reads (``SNAPSHOT_ROWS_SQL``); ``snapshot_from_row`` makes the snapshot of one."""
    if not account_ids:
        return []
    with conn.connection.driver_connection.cursor() as cur:
        return cur.execute(SNAPSHOT_ROWS_SQL, snapshot_rows_params(account_ids, period, at)).fetchall()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _instant(micros: str) -> datetime | None:
    return _EPOCH + timedelta(microseconds=int(micros)) if micros else None


def account_part(row: tuple[str, str]) -> str:
    """The account's fields of a ``snapshot_rows`` row (what changes when its terms, status, anomaly
    pause or credits change; not when its counters do)."""
    return row[1].partition(_GS)[0]


def snapshot_from_row(row: tuple[str, str]) -> tuple[AccountSnapshot, list[MonthCounter]]:
    account_text, _, counters_text = row[1].partition(_GS)
    (plan, seats, overage, pricing, status, starts, created, updated, paused, credits_only, spendable,
     platform) = account_text.split(_US)
    counters = []
    if counters_text:
        for item in counters_text.split(_RS):
            model, byok, sandbox, executions, input_tokens, output_tokens, cost = item.split(_US)
            counters.append(MonthCounter(model, byok == "1", sandbox == "1", int(executions), int(input_tokens),
                                         int(output_tokens), Decimal(cost)))
    facts = None if credits_only == "" else (credits_only == "1", Decimal(spendable))
    account = AccountSnapshot(row[0], plan, int(seats), overage == "1", pricing, status, _instant(starts),
                              _instant(created), _instant(updated), paused_anomaly=paused == "1",
                              credit_facts=facts, platform_id=int(platform) if platform else None)
    return account, counters


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


# ---- the close's aggregation --------------------------------------------------------------------------
# What the close counts of a group of ranked executions ``r`` (read back by ``as_usage_row``).
USAGE_AGGREGATES = """count(*) AS executions,
           coalesce(sum(r.input_tokens), 0) AS input_tokens,
           coalesce(sum(r.output_tokens), 0) AS output_tokens,
           coalesce(sum(r.cost_usd) FILTER (WHERE NOT r.byok), 0) AS cost,
           coalesce(sum(r.input_tokens) FILTER (WHERE r.cost_usd IS NULL AND NOT r.byok), 0) AS uncosted_in,
           coalesce(sum(r.output_tokens) FILTER (WHERE r.cost_usd IS NULL AND NOT r.byok), 0) AS uncosted_out"""
# The chunk's accounts (quota, billing start), and the terms segments and catalog version windows the
# executions are split by (CTEs ``acct``, ``seg``, ``ver``).
_CHUNK_CTES = """acct AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:included AS bigint[]), CAST(:starts AS timestamptz[]))
            AS a(account_id, included, starts)
    ), seg AS (
        SELECT * FROM unnest(CAST(:seg_account AS text[]), CAST(:seg_index AS int[]),
                             CAST(:seg_start AS timestamptz[]), CAST(:seg_end AS timestamptz[]))
            AS s(account_id, idx, starts, ends)
    ), ver AS (
        SELECT * FROM unnest(CAST(:ver_name AS text[]), CAST(:ver_start AS timestamptz[]),
                             CAST(:ver_end AS timestamptz[])) AS v(name, starts, ends)"""
_USAGE_ROWS_SQL = text(
    f"""
    WITH {_CHUNK_CTES}
    ), base AS (
        SELECT e.account_id, e.event_id, e.model, e.byok, e.sandbox, e.input_tokens, e.output_tokens,
               e.cost_usd, e.occurred_at, a.included
        FROM executions e JOIN acct a ON a.account_id = e.account_id
        WHERE e.account_id = ANY(CAST(:ids AS text[]))  -- lets the planner use the account index
          AND e.occurred_at >= :start AND e.occurred_at < :end AND e.occurred_at >= a.starts
          AND (CAST(:known_at AS timestamptz) IS NULL OR e.ingested_at <= CAST(:known_at AS timestamptz))
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
           {USAGE_AGGREGATES}
    FROM ranked r
    JOIN seg s ON s.account_id = r.account_id AND r.occurred_at >= s.starts AND r.occurred_at < s.ends
    JOIN ver v ON r.occurred_at >= v.starts AND r.occurred_at < v.ends
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    """
)


# The same groups without the ranking: one pass over the chunk's executions (an index-only scan of
# the covering account index), hash-aggregated, nothing else. Each execution is counted by account,
# model, BYOK, sandbox and "bucket": the stretch between two consecutive instants where a segment or
# catalog version of the chunk begins or ends (``width_bucket`` over those instants in order; an
# account's billing start is its first segment's start). No boundary falls inside a bucket, so all of a
# bucket's executions share one segment, one version and one side of the billing start:
# ``_place_unranked`` then puts the few groups in their segment and version by their bucket's first
# instant, in Python, instead of every execution by range joins (or the groups by joins and a second
# aggregation in SQL, which cost Postgres ~20% of the pass). BYOK being a key, a BYOK group's cost and
# uncosted tokens are set to none there, not filtered per execution here. The token sums are cast to
# bigint (the int they are; an overflow fails, never wraps), so the driver hands back ints, not
# numerics to parse into Decimals.
_UNRANKED_ROWS_SQL = """
SELECT r.account_id, r.model, r.byok, r.sandbox, width_bucket(r.occurred_at, %(bounds)s::timestamptz[]),
       count(*), sum(r.input_tokens)::bigint, sum(r.output_tokens)::bigint, sum(r.cost_usd),
       coalesce(sum(r.input_tokens) FILTER (WHERE r.cost_usd IS NULL), 0)::bigint,
       coalesce(sum(r.output_tokens) FILTER (WHERE r.cost_usd IS NULL), 0)::bigint
FROM executions r
WHERE r.account_id = ANY(%(ids)s::text[])
  AND r.occurred_at >= %(start)s AND r.occurred_at < %(end)s
  AND (%(known_at)s::timestamptz IS NULL OR r.ingested_at <= %(known_at)s::timestamptz)
GROUP BY 1, 2, 3, 4, 5
"""
# The planner cannot estimate the groups of a bucket expression, takes every execution for a group,
# and sorts the chunk to aggregate it; hashing is what fits. Sorting is turned off around the pass,
# and back to what it was, in the same round trip as the pass (a pipeline: set, pass, restore; the
# old values wait in a transaction-local setting of our own).
_SORT_OFF = ("SELECT set_config('tally.saved_sort', current_setting('enable_sort') || ','"
             " || current_setting('enable_incremental_sort'), true),"
             " set_config('enable_sort', 'off', true), set_config('enable_incremental_sort', 'off', true)")
_SORT_BACK = ("SELECT set_config('enable_sort', split_part(current_setting('tally.saved_sort'), ',', 1), true),"
              " set_config('enable_incremental_sort', split_part(current_setting('tally.saved_sort'), ',', 2), true)")


def usage_rows(conn: Connection, start: datetime, end: datetime, segments: dict[str, list[TermsSegment]],
               included: dict[str, int], versions: list[tuple[str, datetime, datetime]],
               known_at: datetime | None = None) -> dict[str, list[UsageRow]]:
    """Aggregated usage of ``[start, end)`` per account, split by terms segment, the catalog version in
    force when each execution occurred, model, BYOK, sandbox and billable (past the account's pooled
    included quota in time order: occurred_at, then event id; sandbox tries never count). The
    ranking is ``billing.rating.split_at_quota`` in SQL; property tests compare the two. With
    ``known_at``, only the executions ingested by then (what a close rating at that time saw).

    Most accounts never pass their quota: one unranked aggregation answers them (all included, or
    all billable when the quota is 0); only the accounts past a positive quota are ranked in time
    order, by a second query over their executions alone."""
    ids = [a for a in included if a in segments]
    if not ids:
        return {}
    unranked, used = _unranked(conn, ids, start, end, segments, included, versions, known_at)
    ranked = [a for a in ids if 0 < included[a] < used.get(a, 0)]
    out = {a: rows for a, rows in unranked.items() if not 0 < included[a] < used[a]}
    if ranked:
        # Planned for its own accounts every time: psycopg prepares a statement from its 5th run on a
        # connection and Postgres then settles on a generic plan, blind to the chunk's ids, that reads
        # the chunk's rows from the whole month's heap (~10x slower from the close's 10th chunk on).
        with _never_prepared(conn):
            out.update(_aggregate(conn, _USAGE_ROWS_SQL, ranked, start, end, segments, included, versions,
                                  known_at))
    return out


# The month's counters of accounts as groups of the unranked pass (``_UNRANKED_ROWS_SQL``'s columns),
# all in the one bucket given.
_COUNTED_ROWS_SQL = """
SELECT account_id, model, byok, sandbox, %(bucket)s::int, executions, input_tokens, output_tokens, cost_usd,
       uncosted_input_tokens, uncosted_output_tokens
FROM usage_counters
WHERE account_id = ANY(%(ids)s::text[]) AND period = %(period)s
"""


def _unranked(conn: Connection, ids: list[str], start: datetime, end: datetime,
              segments: dict[str, list[TermsSegment]], included: dict[str, int],
              versions: list[tuple[str, datetime, datetime]],
              known_at: datetime | None) -> tuple[dict[str, list[UsageRow]], dict[str, int]]:
    """The unranked pass of the chunk: each account's rows as if it did not pass a positive quota,
    and its non-sandbox executions counted toward the quota (those outside every segment or version
    too: they count, as in the ranked query's ``totals``, but are not billed). Accounts without an
    execution from their billing start on are absent.

    An account whose month is one bucket (``countable``) is read from its month's counters
    (``_COUNTED_ROWS_SQL``: a few rows by primary key instead of every execution), unless one of them
    predates the counting of uncosted tokens (NULL); the others from their executions
    (``_UNRANKED_ROWS_SQL``). Counters and executions are written in one statement, so both give the
    same groups (a property test compares them)."""
    bounds = sorted({t for a in ids for sg in segments[a] for t in (sg.start, sg.end)}
                    | {t for _, lo, hi in versions for t in (lo, hi)})
    driver = conn.connection.driver_connection
    groups: list[tuple] = []
    counted = countable(ids, start, end, segments, versions, known_at)
    if counted:
        bucket = bisect_right(bounds, start)  # width_bucket of every execution of the month
        with driver.cursor() as cur:
            rows = cur.execute(_COUNTED_ROWS_SQL, {"ids": counted, "period": str(Period.of(start)),
                                                   "bucket": bucket}).fetchall()
        stale = {r[0] for r in rows if r[9] is None or r[10] is None}
        groups = [r for r in rows if r[0] not in stale]
        done = set(counted) - stale
        ids = [a for a in ids if a not in done]
    if ids:
        # Never prepared (each chunk is planned for its own ids; a prepared statement's generic plan
        # read the chunk's rows from the whole month's heap).
        with driver.cursor() as cur:
            with driver.pipeline():  # one round trip
                driver.execute(_SORT_OFF)
                cur.execute(_UNRANKED_ROWS_SQL, {"ids": ids, "bounds": bounds, "start": start, "end": end,
                                                 "known_at": known_at}, prepare=False)
                driver.execute(_SORT_BACK)
            groups += cur.fetchall()
    return _place_unranked(groups, bounds, segments, included, versions)


def countable(ids: list[str], start: datetime, end: datetime, segments: dict[str, list[TermsSegment]],
              versions: list[tuple[str, datetime, datetime]], known_at: datetime | None) -> list[str]:
    """The accounts whose unranked groups their month's counters give: ``[start, end)`` is a whole
    month (what a counter row sums), all of it is counted (no ``known_at``), and none of the account's
    segments nor any catalog version begins or ends inside it, so every execution of its month
    lies in one bucket, the one ``start`` lies in (one segment, one version, one side of the billing
    start)."""
    if known_at is not None:
        return []
    month = Period.of(start)
    if start != month.start or end != month.end:
        return []
    if any(start < t < end for _, lo, hi in versions for t in (lo, hi)):
        return []
    return [a for a in ids if not any(start < t < end for sg in segments[a] for t in (sg.start, sg.end))]


_ZERO_COST = Decimal(0)  # what Postgres's coalesce(sum(cost), 0) gives a group without a recorded cost
_SUMS = Context(prec=100)  # adds costs (numeric(18, 8)) exactly, whatever the caller's context


def _place_unranked(groups: list[tuple], bounds: list[datetime], segments: dict[str, list[TermsSegment]],
                    included: dict[str, int], versions: list[tuple[str, datetime, datetime]],
                    ) -> tuple[dict[str, list[UsageRow]], dict[str, int]]:
    """The unranked pass's groups put in their segment and version by their bucket's first instant
    (``bounds[bucket - 1]``; bucket 0 lies before every instant, so before the billing start), and
    added up by segment, version, model, BYOK and sandbox: the usage rows (billable: every non-sandbox
    execution when the quota is 0, else none) and the executions counted toward the quota."""
    places: dict[tuple[str, int], tuple | None] = {}
    rows_of: dict[str, dict[tuple, UsageRow]] = {}
    used: dict[str, int] = {}
    unpriced: dict[str, bool] = {}  # no quota: every non-sandbox execution is billable
    for account_id, model, byok, sandbox, bucket, n, tokens_in, tokens_out, cost, uncosted_in, uncosted_out in groups:
        place = places.get((account_id, bucket), False)
        if place is False:
            place = places[(account_id, bucket)] = _place(bounds, bucket, segments[account_id], versions)
        if place is None:
            continue  # before the account's billing start
        rows = rows_of.get(account_id)
        if rows is None:
            rows = rows_of[account_id] = {}
            used[account_id] = 0
            unpriced[account_id] = included[account_id] == 0
        if not sandbox:
            used[account_id] += n
        segment, version = place
        if segment is None or version is None:
            continue  # counted toward the quota, not billed
        if byok:  # BYOK executions carry no cost and no uncosted tokens
            cost, uncosted_in, uncosted_out = None, 0, 0
        row = UsageRow(segment, version, model, byok, sandbox, unpriced[account_id] and not sandbox, n, tokens_in,
                       tokens_out, _ZERO_COST if cost is None else cost, uncosted_in, uncosted_out)
        key = (segment, version, model, byok, sandbox)
        same = rows.get(key)
        rows[key] = row if same is None else _added(same, row)
    return {a: list(rows.values()) for a, rows in rows_of.items()}, used


def _added(a: UsageRow, b: UsageRow) -> UsageRow:
    """Two groups of one usage row (other buckets of it) added up, the cost as Postgres added the
    groups' ``coalesce(sum(cost), 0)``: exactly, 0 for no recorded cost."""
    return replace(a, executions=a.executions + b.executions, input_tokens=a.input_tokens + b.input_tokens,
                   output_tokens=a.output_tokens + b.output_tokens, cost=_SUMS.add(a.cost, b.cost),
                   uncosted_input_tokens=a.uncosted_input_tokens + b.uncosted_input_tokens,
                   uncosted_output_tokens=a.uncosted_output_tokens + b.uncosted_output_tokens)


def _place(bounds: list[datetime], bucket: int, segments: list[TermsSegment],
           versions: list[tuple[str, datetime, datetime]]) -> tuple[int | None, str | None] | None:
    """(segment index, version name) of a bucket of an account, either None when the bucket's first
    instant is outside every segment / version; None when the bucket lies before its billing start."""
    if bucket == 0:
        return None
    at = bounds[bucket - 1]
    if at < segments[0].start:
        return None
    segment = next((i for i, sg in enumerate(segments) if sg.start <= at < sg.end), None)
    version = next((name for name, lo, hi in versions if lo <= at < hi), None)
    return segment, version


@contextmanager
def _never_prepared(conn: Connection):
    """The statements inside are not prepared by psycopg (so each is planned for its own parameters),
    then the connection prepares as before: a setting of the client, no round trip."""
    driver = conn.connection.driver_connection
    threshold = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield
    finally:
        driver.prepare_threshold = threshold


def _aggregate(conn: Connection, sql, ids: list[str], start: datetime, end: datetime,
               segments: dict[str, list[TermsSegment]], included: dict[str, int],
               versions: list[tuple[str, datetime, datetime]], known_at: datetime | None) -> dict[str, list[UsageRow]]:
    seg_account, seg_index, seg_start, seg_end = [], [], [], []
    for a in ids:
        for i, sg in enumerate(segments[a]):
            seg_account.append(a)
            seg_index.append(i)
            seg_start.append(sg.start)
            seg_end.append(sg.end)
    rows = conn.execute(sql, {
        "ids": ids, "included": [included[a] for a in ids], "starts": [segments[a][0].start for a in ids],
        "seg_account": seg_account, "seg_index": seg_index, "seg_start": seg_start, "seg_end": seg_end,
        "ver_name": [v[0] for v in versions], "ver_start": [v[1] for v in versions],
        "ver_end": [v[2] for v in versions], "start": start, "end": end, "known_at": known_at,
    })
    # Fetched in one go and unpacked by position (~40k rows a month for 2,000 accounts): both queries
    # select account_id, then the columns ``as_usage_row`` reads, in its order (checked).
    if tuple(rows.keys()) != _USAGE_COLUMNS:
        raise RuntimeError(f"usage query columns {tuple(rows.keys())} are not {_USAGE_COLUMNS}")
    out: dict[str, list[UsageRow]] = {}
    for account_id, *fields in rows.all():
        rows_of = out.get(account_id)
        if rows_of is None:
            rows_of = out[account_id] = []
        rows_of.append(_usage_row(*fields))
    return out


_USAGE_COLUMNS = ("account_id", "idx", "name", "model", "byok", "sandbox", "billable", "executions", "input_tokens",
                  "output_tokens", "cost", "uncosted_in", "uncosted_out")


def as_usage_row(r) -> UsageRow:
    """A row of the close's aggregation (``idx``, ``name``, model, byok, sandbox, billable, counts)."""
    return _usage_row(r.idx, r.name, r.model, r.byok, r.sandbox, r.billable, r.executions, r.input_tokens,
                      r.output_tokens, r.cost, r.uncosted_in, r.uncosted_out)


def _usage_row(idx, name, model, byok, sandbox, billable, executions, input_tokens, output_tokens, cost,
               uncosted_in, uncosted_out) -> UsageRow:
    # The sums of bigint columns arrive as Decimal (numeric): made int here. ``cost`` is numeric,
    # already a Decimal from the driver.
    return UsageRow(idx, name, model, byok, sandbox, billable, executions, int(input_tokens), int(output_tokens),
                    cost if type(cost) is Decimal else Decimal(cost), int(uncosted_in), int(uncosted_out))


def period_executions(conn: Connection, account_id: str, start: datetime, end: datetime):
    """One account's executions of ``[start, end)`` (event id, occurred_at, model, BYOK, sandbox) in
    time order: what ``billing.explain`` sorts into included, billable and sandbox like the rating."""
    return conn.execute(text(
        """
        SELECT event_id, occurred_at, model, byok, sandbox
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


def arrived_between_invoices(conn: Connection, account_ids: list[str], source: Period, period: Period) -> set[str]:
    """The accounts with executions of ``source`` ingested after their ``source`` invoice was rated and
    by the time their ``period`` invoice was rated: what that later invoice could bill as late usage."""
    if not account_ids:
        return set()
    return set(conn.execute(text(
        """
        SELECT DISTINCT e.account_id
        FROM executions e
        JOIN invoices s ON s.account_id = e.account_id AND s.period = :source
        JOIN invoices p ON p.account_id = e.account_id AND p.period = :period
        WHERE e.account_id = ANY(CAST(:ids AS text[]))
          AND e.occurred_at >= :start AND e.occurred_at < :end
          AND e.ingested_at > s.rated_at AND e.ingested_at <= p.rated_at
        """
    ), {"ids": account_ids, "source": str(source), "period": str(period), "start": source.start,
        "end": source.end}).scalars())
