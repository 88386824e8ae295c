"""Model routing's tables: quality scores, skills, per-account routing settings, routing decisions,
and the month's routed executions for the savings report.

The route's hot path (``route_facts``, ``record_decision``) runs on the driver connection (prepared
statements, no ORM result processing), like the entitlement check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson
from sqlalchemy import Connection, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.tables import account_routing, skills


# ---- quality scores -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreRow:
    skill: str
    model: str
    measured_at: datetime
    suite_id: str
    score: Decimal

    @property
    def key(self) -> tuple[str, str, datetime, str]:
        return (self.skill, self.model, self.measured_at, self.suite_id)


_RUN_KEYS = """
SELECT q.skill, q.model, q.measured_at, q.suite_id, q.score
FROM quality_scores q
JOIN unnest(CAST(:skill AS text[]), CAST(:model AS text[]), CAST(:measured_at AS timestamptz[]),
            CAST(:suite_id AS text[])) AS k(skill, model, measured_at, suite_id)
  ON q.skill = k.skill AND q.model = k.model AND q.measured_at = k.measured_at AND q.suite_id = k.suite_id
"""
_INSERT_SCORES = """
INSERT INTO quality_scores (skill, model, measured_at, suite_id, score)
SELECT * FROM unnest(CAST(:skill AS text[]), CAST(:model AS text[]), CAST(:measured_at AS timestamptz[]),
                     CAST(:suite_id AS text[]), CAST(:score AS numeric[]))
ORDER BY 1, 2, 3, 4
ON CONFLICT DO NOTHING
"""


def _columns(rows: list[ScoreRow]) -> dict:
    return {"skill": [r.skill for r in rows], "model": [r.model for r in rows],
            "measured_at": [r.measured_at for r in rows], "suite_id": [r.suite_id for r in rows],
            "score": [r.score for r in rows]}


def recorded_runs(conn: Connection, rows: list[ScoreRow]) -> dict[tuple, Decimal]:
    """The scores already recorded for these rows' runs (skill, model, measured_at, suite id)."""
    if not rows:
        return {}
    params = _columns(rows)
    del params["score"]
    return {(r.skill, r.model, r.measured_at, r.suite_id): r.score for r in conn.execute(text(_RUN_KEYS), params)}


def insert_scores(conn: Connection, rows: list[ScoreRow]) -> int:
    """Insert new runs' scores (a run recorded meanwhile by a concurrent import is skipped)."""
    if not rows:
        return 0
    return conn.execute(text(_INSERT_SCORES), _columns(rows)).rowcount


# The score in force per (skill, model): newest measured_at, then the greater suite id in C order
# (billing.routing.current_scores' rule; Python compares str by code point, as COLLATE "C" does).
_CURRENT = """
SELECT DISTINCT ON (skill, model) skill, model, score, measured_at, suite_id
FROM quality_scores
{where}
ORDER BY skill, model, measured_at DESC, suite_id COLLATE "C" DESC
"""


def current_scores(conn: Connection, skill: str | None = None) -> list:
    """(skill, model, score, measured_at, suite_id) in force, per skill and model."""
    where, params = ("WHERE skill = :skill", {"skill": skill}) if skill is not None else ("", {})
    return conn.execute(text(_CURRENT.format(where=where)), params).all()


# ---- skills and account settings --------------------------------------------------------------------------
def _upsert(conn: Connection, table, key: str, values: dict) -> None:
    stmt = pg_insert(table).values(**values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_={
        **{c: stmt.excluded[c] for c in values if c != key}, "updated_at": text("now()")}))


def upsert_skill(conn: Connection, skill_id: str, category: str | None, default_model: str | None) -> None:
    _upsert(conn, skills, "skill_id", {"skill_id": skill_id, "category": category, "default_model": default_model})


def get_skill(conn: Connection, skill_id: str):
    return conn.execute(text("SELECT skill_id, category, default_model FROM skills WHERE skill_id = :s"),
                        {"s": skill_id}).first()


def upsert_account_routing(conn: Connection, account_id: str, slider: Decimal, byok_providers: list[str]) -> None:
    _upsert(conn, account_routing, "account_id",
            {"account_id": account_id, "slider": slider, "byok_providers": byok_providers})


def get_account_routing(conn: Connection, account_id: str):
    """(slider, byok_providers) of the account, or None when it never set them."""
    return conn.execute(text("SELECT slider, byok_providers FROM account_routing WHERE account_id = :a"),
                        {"a": account_id}).first()


# ---- the route's hot path ------------------------------------------------------------------------------------
_FACTS = """
SELECT a.id, r.slider, r.byok_providers, s.default_model,
       (SELECT coalesce(json_agg(json_build_array(q.model, q.score::text)), '[]'::json) FROM (
            SELECT DISTINCT ON (model) model, score FROM quality_scores WHERE skill = %(skill)s
            ORDER BY model, measured_at DESC, suite_id COLLATE "C" DESC) q) AS scores
FROM accounts a
LEFT JOIN account_routing r ON r.account_id = a.id
LEFT JOIN skills s ON s.skill_id = %(skill)s
WHERE a.id = %(id)s AND a.platform_id IS NOT DISTINCT FROM %(platform_id)s
"""
_FACTS_ANY_PLATFORM = _FACTS.replace("AND a.platform_id IS NOT DISTINCT FROM %(platform_id)s", "")


@dataclass(frozen=True)
class RouteFacts:
    slider: Decimal  # the account's (0 when it never set one)
    byok_providers: tuple[str, ...]  # empty: platform keys
    skill_default_model: str | None
    scores: dict[str, Decimal]  # the skill's current score per model


def route_facts(conn: Connection, account_id: str, skill: str, platform_id: int | None,
                any_platform: bool = False) -> RouteFacts | None:
    """Everything a route needs but the token mix, in one indexed query; None when the account does
    not exist or belongs to another platform (``any_platform``: the CLI, which sees every account)."""
    sql = _FACTS_ANY_PLATFORM if any_platform else _FACTS
    with conn.connection.driver_connection.cursor() as cur:
        row = cur.execute(sql, {"id": account_id, "skill": skill, "platform_id": platform_id}).fetchone()
    if row is None:
        return None
    scores = row[4] if not isinstance(row[4], (str, bytes)) else orjson.loads(row[4])
    return RouteFacts(Decimal(row[1]) if row[1] is not None else Decimal(0), tuple(row[2] or ()), row[3],
                      {model: Decimal(score) for model, score in scores})


_RECENT_TOKENS = """
SELECT input_tokens, output_tokens FROM executions WHERE skill_id = %(skill)s
ORDER BY occurred_at DESC LIMIT %(n)s
"""


def recent_tokens(conn: Connection, skill: str, n: int) -> list[tuple[int, int]]:
    """(input, output) tokens of the skill's ``n`` most recent executions (ix_executions_skill_occurred)."""
    with conn.connection.driver_connection.cursor() as cur:
        return [(int(a), int(b)) for a, b in cur.execute(_RECENT_TOKENS, {"skill": skill, "n": n}).fetchall()]


_RECORD_DECISION = """
INSERT INTO routing_decisions (account_id, skill, model, default_model, score, expected_cost, threshold, slider,
                               below_threshold, byok, input_tokens, output_tokens, token_mix_source,
                               catalog_version, reason, alternatives, decided_at)
VALUES (%(account_id)s, %(skill)s, %(model)s, %(default_model)s, %(score)s, %(expected_cost)s, %(threshold)s,
        %(slider)s, %(below_threshold)s, %(byok)s, %(input_tokens)s, %(output_tokens)s, %(token_mix_source)s,
        %(catalog_version)s, %(reason)s, %(alternatives)s::jsonb, %(decided_at)s)
RETURNING id
"""


def record_decision(conn: Connection, values: dict) -> int:
    """Insert one decision (``alternatives`` as a JSON-able list) in its own transaction on an
    autocommit connection; returns its id.

    Committed without waiting for the WAL flush (``synchronous_commit = off`` for this transaction
    only): the flush was most of a route's time. A crash may lose the last fraction of a second of
    decisions, never corrupt anything; an execution naming a lost decision is counted by the savings
    report without a default model (docs/decisions.md, "Model routing")."""
    params = {**values, "alternatives": orjson.dumps(values["alternatives"]).decode()}
    driver = conn.connection.driver_connection
    with driver.pipeline(), driver.transaction(), driver.cursor() as cur:  # one round trip
        cur.execute("SET LOCAL synchronous_commit TO OFF")
        cur.execute(_RECORD_DECISION, params)
        return cur.fetchone()[0]


def get_decision(conn: Connection, decision_id: int):
    return conn.execute(text("SELECT * FROM routing_decisions WHERE id = :id"), {"id": decision_id}).first()


# ---- the savings report ----------------------------------------------------------------------------------------
_SAVINGS = """
WITH ver AS (
    SELECT * FROM unnest(CAST(:ver_name AS text[]), CAST(:ver_start AS timestamptz[]),
                         CAST(:ver_end AS timestamptz[])) AS v(name, starts, ends)
)
SELECT e.account_id, coalesce(e.skill_id, d.skill, '(none)') AS skill, v.name AS version, e.model,
       d.default_model, e.byok,
       count(*) AS executions,
       count(*) FILTER (WHERE e.model = e.routed_model) AS followed,
       coalesce(sum(e.input_tokens), 0) AS input_tokens, coalesce(sum(e.output_tokens), 0) AS output_tokens,
       min(e.occurred_at) AS first_at
FROM executions e
JOIN ver v ON e.occurred_at >= v.starts AND e.occurred_at < v.ends
LEFT JOIN routing_decisions d ON d.id = e.routing_decision_id AND d.account_id = e.account_id
WHERE e.occurred_at >= :start AND e.occurred_at < :end
  AND e.routing_decision_id IS NOT NULL AND NOT e.sandbox
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY 1, 2, 3, 4, 5, 6
"""


def routed_execution_groups(conn: Connection, start: datetime, end: datetime,
                            versions: list[tuple[str, datetime, datetime]]) -> list:
    """The routed, non-sandbox executions of ``[start, end)`` grouped by account, skill, catalog version
    in force, model run, the decision's default model (None: the decision is unknown or named none)
    and BYOK, with their counts (and how many ran the routed model) and summed tokens."""
    return conn.execute(text(_SAVINGS), {
        "ver_name": [v[0] for v in versions], "ver_start": [v[1] for v in versions],
        "ver_end": [v[2] for v in versions], "start": start, "end": end}).all()
