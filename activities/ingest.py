"""Bulk ingestion of executions from JSON Lines (``tally usage ingest FILE.jsonl``).

One execution per line. Lines are validated in Python (each bad line is rejected with its line
number and the reason; good lines still load) and loaded in batches, each batch one transaction, so
a crash leaves whole batches or nothing, and re-running the same file is harmless:

- fresh events of known accounts (the usual export) are streamed with a binary COPY straight into
  ``executions`` while the lines are being validated (Postgres stores one row while Python reads
  the next), and the batch's month-to-date ``usage_counters`` are added in the same transaction;
  a COPY that meets a known (or repeated) event id fails whole, inside a savepoint, and so does a
  batch naming an unknown account: the batch then takes the general way;
- the general way COPYs the batch into a temporary staging table, rejects unknown accounts and
  moves the rows into ``executions`` skipping known event ids (an event id seen before, in this file
  or an earlier one, is a duplicate); the same statement counts the rows it inserted into the
  counters (``repositories.usage.COUNT_INSERTED``).

Either way the counters grow by exactly the rows inserted. Memory stays flat in the file size (one
batch of lines at a time). The HTTP API validates its items with the same ``parse_execution``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

import orjson
import psycopg

from billing.catalog import Catalog
from models.db import libpq_url
from repositories.usage import ADD_COUNTS, COUNT_INSERTED, INSERTED_COLUMNS

BATCH_LINES = 100_000
MAX_LISTED_REJECTIONS = 200
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_TOKENS = 10**12  # per execution; keeps monthly sums far inside bigint
MAX_COST = Decimal(10) ** 10  # executions.cost_usd is NUMERIC(18, 8)
MAX_DECISION_ID = 2**63 - 1  # executions.routing_decision_id is a bigint
COST_QUANTUM = Decimal("1E-8")

FIELDS = (
    "event_id", "account_id", "agent_id", "skill_id", "model", "input_tokens", "output_tokens", "byok",
    "sandbox", "cost_usd", "occurred_at", "routed_model", "routing_decision_id", "requested_model",
)
COLUMNS = (
    "line_no", "event_id", "account_id", "agent_id", "skill_id", "model", "input_tokens",
    "output_tokens", "byok", "sandbox", "cost_usd", "occurred_at", "routed_model", "routing_decision_id",
    "requested_model",
)
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    line_no bigint, event_id text, account_id text, agent_id text, skill_id text, model text,
    input_tokens bigint, output_tokens bigint, byok boolean, sandbox boolean, cost_usd numeric,
    occurred_at timestamptz, routed_model text, routing_decision_id bigint, requested_model text
) ON COMMIT DELETE ROWS
"""
_COPY = f"COPY ingest_staging ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_UNKNOWN_ACCOUNTS = """
DELETE FROM ingest_staging s
WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = s.account_id)
RETURNING s.line_no, s.account_id
"""
_INSERT_EXECUTIONS = """
INSERT INTO executions (event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens,
                        byok, sandbox, cost_usd, occurred_at, routed_model, routing_decision_id,
                        requested_model)
SELECT event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens,
       byok, sandbox, cost_usd, occurred_at, routed_model, routing_decision_id, requested_model
FROM ingest_staging s
"""
# The general merge: duplicates (earlier files, this file, concurrent writers) are skipped by the
# unique event id; the rows really inserted are counted into usage_counters in the same statement.
# Rows go in event id order (the first line of a repeated id wins), the order the HTTP API inserts in
# too, so concurrent writers of overlapping events wait for each other instead of deadlocking.
_MERGE = f"""
WITH ins AS (
    {_INSERT_EXECUTIONS} ORDER BY event_id, line_no
    ON CONFLICT (event_id) DO NOTHING
    RETURNING {INSERTED_COLUMNS}
), counted AS ({COUNT_INSERTED})
SELECT count(*) FROM ins
"""
# The same for a batch without repeated event ids: skipping known ids with an anti-join and a plain
# INSERT is about twice as fast as ON CONFLICT. A concurrent writer inserting one of these ids
# meanwhile makes it fail (unique violation, or a deadlock with that writer); the batch then falls
# back to _MERGE.
_MERGE_NEW = f"""
WITH ins AS (
    {_INSERT_EXECUTIONS} WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.event_id = s.event_id)
    RETURNING {INSERTED_COLUMNS}
), counted AS ({COUNT_INSERTED})
SELECT count(*) FROM ins
"""
LOAD_ATTEMPTS = 3  # a batch that loses a deadlock to a concurrent writer is loaded again
_COPY_EXECUTIONS = f"COPY executions ({', '.join(FIELDS)}) FROM STDIN (FORMAT BINARY)"
_COUNT_KNOWN_ACCOUNTS = "SELECT count(*) FROM accounts WHERE id = ANY(%s)"
# The counters of rows COPYed straight into executions (aggregated while parsing).
_ADD_COUNTERS = f"""
WITH ins AS (
    SELECT * FROM unnest(
        %(account_id)s::text[], %(period)s::text[], %(model)s::text[], %(byok)s::boolean[],
        %(sandbox)s::boolean[], %(executions)s::bigint[], %(input_tokens)s::bigint[],
        %(output_tokens)s::bigint[], %(cost_usd)s::numeric[]
    ) AS c(account_id, period, model, byok, sandbox, executions, input_tokens, output_tokens, cost_usd)
)
{ADD_COUNTS}
"""


@dataclass
class Rejection:
    line: int
    reason: str


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines(self) -> int:
        return self.accepted + self.duplicates + self.rejected

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            self.rejections.append(Rejection(line, reason))


class LineError(ValueError):
    """A bad line or item. The message is ``"field: reason"`` when one field is at fault."""

    @property
    def field(self) -> str | None:
        head, sep, _ = str(self).partition(": ")
        return head if sep and head in FIELDS else None

    @property
    def reason(self) -> str:
        return str(self).partition(": ")[2] if self.field else str(self)


def _text(obj: dict, name: str, max_len: int, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise LineError(f"{name}: required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise LineError(f"{name}: must be a non-empty string")
    if len(value) > max_len:
        raise LineError(f"{name}: longer than {max_len} characters")
    if "\x00" in value:
        raise LineError(f"{name}: must not contain NUL characters")
    return value


def _count(obj: dict, name: str) -> int:
    value = obj.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineError(f"{name}: must be a whole number")
    if value < 0:
        raise LineError(f"{name}: must not be negative")
    if value > MAX_TOKENS:
        raise LineError(f"{name}: must be at most {MAX_TOKENS:,}")
    return value


def _flag(obj: dict, name: str) -> bool:
    value = obj.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise LineError(f"{name}: must be true or false")
    return value


def _timestamp(obj: dict, now: datetime) -> datetime:
    value = obj.get("occurred_at")
    if not isinstance(value, str):
        raise LineError("occurred_at: required, an ISO 8601 timestamp with a time zone")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise LineError(f"occurred_at: {value!r} is not an ISO 8601 timestamp") from None
    if ts.tzinfo is None:
        raise LineError(f"occurred_at: {value!r} has no time zone (add Z or +00:00)")
    try:
        ts = ts.astimezone(timezone.utc)
    except OverflowError:
        raise LineError(f"occurred_at: {value!r} is out of range") from None
    if ts > now + FUTURE_TOLERANCE:
        raise LineError(f"occurred_at: {value} is in the future")
    return ts


def _cost(obj: dict) -> Decimal | None:
    value = obj.get("cost_usd")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise LineError("cost_usd: must be a decimal number")
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        raise LineError(f"cost_usd: {value!r} is not a decimal number") from None
    if not cost.is_finite() or cost < 0:
        raise LineError("cost_usd: must be a finite, non-negative amount")
    if cost >= MAX_COST:
        raise LineError(f"cost_usd: must be less than {MAX_COST:,}")
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)  # the column keeps 8 decimals


def _model(obj: dict, models: frozenset[str]) -> str:
    model = _text(obj, "model", 64)
    if model not in models:
        raise LineError(f"model: unknown model {model!r}")
    return model


def _routing(obj: dict, models: frozenset[str]) -> tuple[str | None, int | None]:
    """The routing decision an execution followed (``POST /v1/route``): both fields or neither."""
    routed, decision = obj.get("routed_model"), obj.get("routing_decision_id")
    if routed is None and decision is None:
        return None, None
    if decision is None:
        raise LineError("routing_decision_id: required with routed_model (the id POST /v1/route answered)")
    if isinstance(decision, bool) or not isinstance(decision, int) or not 0 < decision <= MAX_DECISION_ID:
        raise LineError("routing_decision_id: must be a positive whole number (the id POST /v1/route answered)")
    if routed is None:
        raise LineError("routed_model: required with routing_decision_id (the model the route chose)")
    if not isinstance(routed, str) or routed not in models:
        raise LineError(f"routed_model: unknown model {routed!r}")
    return routed, decision


def _requested_model(obj: dict, models: frozenset[str]) -> str | None:
    """The model the platform asked for, when the execution ran on another one (a fallback)."""
    if obj.get("requested_model") is None:
        return None
    model = _text(obj, "requested_model", 64)
    if model not in models:
        raise LineError(f"requested_model: unknown model {model!r}")
    return model


def parse_line(raw: bytes, models: frozenset[str], now: datetime) -> tuple:
    """One JSONL line -> a staging row (without line number). Raises LineError naming the field."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise LineError(f"not valid JSON ({err.msg})") from None
    return parse_execution(obj, models, now)


def _plain_text(value: object, max_len: int) -> bool:
    return type(value) is str and 0 < len(value) <= max_len and not value.isspace() and "\x00" not in value


def parse_execution(obj: object, models: frozenset[str], now: datetime) -> tuple:
    """One execution (a decoded JSON object: a file line or an HTTP API item) -> a staging row in
    ``FIELDS`` order. Raises LineError for the first bad field; ``execution_errors`` lists them all.
    The one validation of both ingestion paths.

    The usual execution (plain values, no cost) is checked inline; anything else, and every error,
    goes through the field checks below (``_checked_execution``), which the inline checks only
    ever narrow (tests compare the two)."""
    if type(obj) is dict:
        get = obj.get
        event_id, account_id, agent_id = get("event_id"), get("account_id"), get("agent_id")
        skill_id, model = get("skill_id"), get("model")
        tin, tout = get("input_tokens", 0), get("output_tokens", 0)
        byok, sandbox = get("byok", False), get("sandbox", False)
        routed, decision = get("routed_model"), get("routing_decision_id")
        if ((routed is None and decision is None or type(routed) is str and routed in models
             and type(decision) is int and 0 < decision <= MAX_DECISION_ID)
                and type(model) is str and model in models and _plain_text(event_id, 128) and _plain_text(account_id, 64)
                and _plain_text(agent_id, 128) and (skill_id is None or _plain_text(skill_id, 128))
                and type(tin) is int and 0 <= tin <= MAX_TOKENS and type(tout) is int and 0 <= tout <= MAX_TOKENS
                and type(byok) is bool and type(sandbox) is bool and get("cost_usd") is None
                and get("requested_model") is None):
            return (event_id, account_id, agent_id, skill_id, model, tin, tout, byok, sandbox, None,
                    _timestamp(obj, now), routed, decision, None)
    return _checked_execution(obj, models, now)


def _checked_execution(obj: object, models: frozenset[str], now: datetime) -> tuple:
    if not isinstance(obj, dict):
        raise LineError("not a JSON object")
    model = _model(obj, models)
    return (
        _text(obj, "event_id", 128),
        _text(obj, "account_id", 64),
        _text(obj, "agent_id", 128),
        _text(obj, "skill_id", 128, required=False),
        model,
        _count(obj, "input_tokens"),
        _count(obj, "output_tokens"),
        _flag(obj, "byok"),
        _flag(obj, "sandbox"),
        _cost(obj),
        _timestamp(obj, now),
        *_routing(obj, models),
        _requested_model(obj, models),
    )


def execution_errors(obj: object, models: frozenset[str], now: datetime) -> list[LineError]:
    """Every bad field of one execution, in the order ``parse_execution`` checks them (it raises
    the first). Empty when the execution is valid."""
    if not isinstance(obj, dict):
        return [LineError("not a JSON object")]
    checks = (
        lambda: _model(obj, models),
        lambda: _text(obj, "event_id", 128),
        lambda: _text(obj, "account_id", 64),
        lambda: _text(obj, "agent_id", 128),
        lambda: _text(obj, "skill_id", 128, required=False),
        lambda: _count(obj, "input_tokens"),
        lambda: _count(obj, "output_tokens"),
        lambda: _flag(obj, "byok"),
        lambda: _flag(obj, "sandbox"),
        lambda: _cost(obj),
        lambda: _timestamp(obj, now),
        lambda: _routing(obj, models),
        lambda: _requested_model(obj, models),
    )
    errors = []
    for check in checks:
        try:
            check()
        except LineError as err:
            errors.append(err)
    return errors


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    for n, raw in enumerate(lines, start=1):
        batch.append((n, raw))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def known_models(catalog: Catalog) -> frozenset[str]:
    """Every model any catalog version prices (an event is valid if some version knows its model)."""
    return frozenset(code for version in catalog.versions for code in version.models)


_NO_COST = Decimal(0)
# COPY ... (FORMAT BINARY) column types of FIELDS: psycopg's C dumpers write them, and Postgres
# parses no text (about a third cheaper on both sides than text COPY).
_BINARY_TYPES = ["text", "text", "text", "text", "text", "int8", "int8", "bool", "bool", "numeric", "timestamptz",
                 "text", "int8", "text"]


@dataclass
class _Batch:
    """The valid rows of one batch of lines (kept for the general way in)."""

    rows: list[tuple] = field(default_factory=list)  # FIELDS order
    line_nos: list[int] = field(default_factory=list)

    def accounts(self) -> list[str]:
        return list({row[1] for row in self.rows})

    def counter_params(self) -> dict:
        """The rows' month-to-date counters, as arrays for _ADD_COUNTERS."""
        counts: dict[tuple, list] = {}
        get = counts.get
        for row in self.rows:
            ts = row[10]
            key = (row[1], ts.year, ts.month, row[4], row[7], row[8])
            c = get(key)
            if c is None:
                counts[key] = [1, row[5], row[6], row[9] or _NO_COST]
            else:
                c[0] += 1
                c[1] += row[5]
                c[2] += row[6]
                if row[9]:
                    c[3] += row[9]
        keys = list(counts)
        sums = [counts[k] for k in keys]
        return {
            "account_id": [k[0] for k in keys], "period": [f"{k[1]:04d}-{k[2]:02d}" for k in keys],
            "model": [k[3] for k in keys], "byok": [k[4] for k in keys], "sandbox": [k[5] for k in keys],
            "executions": [c[0] for c in sums], "input_tokens": [c[1] for c in sums],
            "output_tokens": [c[2] for c in sums], "cost_usd": [c[3] for c in sums],
        }


class _NotFresh(Exception):
    """The batch cannot go straight in (an unknown account); it takes the general way."""


def _stream_new(conn: psycopg.Connection, lines: list[tuple[int, bytes]], models: frozenset[str],
                now: datetime, report: IngestReport) -> tuple[_Batch, bool]:
    """Validate the lines and COPY the valid rows straight into executions as they are parsed
    (Postgres stores them while Python reads on), then add their counters, in a savepoint. Returns
    (the batch, True) when that went through; (the batch, False), with nothing written, when a row's
    event id is known (or repeated, or being written by a concurrent writer) or an account unknown.
    Either way every line has been validated once."""
    batch = _Batch()
    rows, line_nos = batch.rows, batch.line_nos
    done = 0  # lines validated so far

    def take(line_no: int, raw: bytes) -> tuple | None:
        if not raw.strip():
            return None  # blank lines are not events
        try:
            row = parse_line(raw, models, now)
        except LineError as err:
            report.reject(line_no, str(err))
            return None
        rows.append(row)
        line_nos.append(line_no)
        return row

    try:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(_COPY_EXECUTIONS) as copy:
                copy.set_types(_BINARY_TYPES)
                for line_no, raw in lines:
                    row = take(line_no, raw)
                    done += 1
                    if row is not None:
                        copy.write_row(row)
            accounts = batch.accounts()
            if cur.execute(_COUNT_KNOWN_ACCOUNTS, (accounts,)).fetchone()[0] != len(accounts):
                raise _NotFresh
            if batch.rows:
                cur.execute(_ADD_COUNTERS, batch.counter_params())
        return batch, True
    except (_NotFresh, psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
        for line_no, raw in lines[done:]:  # the COPY failed before the end of the batch
            take(line_no, raw)
        return batch, False


def _merge(conn: psycopg.Connection, batch: _Batch, fast: bool) -> tuple[int, list[tuple[int, str]]]:
    """The general way in: COPY to staging, reject unknown accounts, insert the rows whose event id is
    new and count them. Returns (inserted, lines of unknown accounts)."""
    with conn.cursor() as cur:
        with cur.copy(_COPY) as copy:
            copy.set_types(["int8", *_BINARY_TYPES])
            for line_no, row in zip(batch.line_nos, batch.rows):
                copy.write_row((line_no, *row))
        unknown = cur.execute(_UNKNOWN_ACCOUNTS).fetchall()
        if fast and len({row[0] for row in batch.rows}) == len(batch.rows):
            try:
                with conn.transaction():  # a savepoint
                    return cur.execute(_MERGE_NEW).fetchone()[0], unknown
            except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
                pass  # a concurrent writer is recording some of these ids
        return cur.execute(_MERGE).fetchone()[0], unknown


def _load_batch(conn: psycopg.Connection, lines: list[tuple[int, bytes]], models: frozenset[str],
                now: datetime, report: IngestReport) -> set[str]:
    """One batch, one transaction. Fresh events of known accounts (the usual export) go straight in
    with COPY; anything else (known event ids, ids repeated in the batch, unknown accounts) through
    staging. Either way the counters grow by exactly the rows inserted."""
    batch, fast = None, True
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            with conn.transaction():
                if batch is None:
                    batch, done = _stream_new(conn, lines, models, now, report)
                    if done:
                        report.accepted += len(batch.rows)
                        return set(batch.accounts())
                if not batch.rows:
                    return set()
                inserted, unknown = _merge(conn, batch, fast)
            break
        except psycopg.errors.DeadlockDetected:
            fast = False
            if attempt == LOAD_ATTEMPTS:
                raise
    for line_no, account_id in unknown:
        report.reject(line_no, f"account_id: unknown account {account_id!r}")
    report.accepted += inserted
    report.duplicates += len(batch.rows) - len(unknown) - inserted
    # The accounts that may have got new executions (a superset when some rows were duplicates).
    return set(batch.accounts()) - {account_id for _, account_id in unknown} if inserted else set()


BatchObserver = Callable[[set[str], datetime], None]


def ingest_lines(database_url: str, lines: Iterable[bytes], models: frozenset[str],
                 now: datetime | None = None, batch_lines: int = BATCH_LINES,
                 on_batch: BatchObserver | None = None) -> IngestReport:
    """Load lines in batches of one transaction each; ``on_batch(accounts, now)`` is called after each
    committed batch with the accounts that got new executions."""
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    report = IngestReport()
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(_STAGING_DDL)
        conn.commit()
        for batch in _batches(lines, batch_lines):
            accounts = _load_batch(conn, batch, models, now, report)
            if accounts and on_batch is not None:
                on_batch(accounts, now)
    report.rejections.sort(key=lambda r: r.line)
    report.seconds = time.perf_counter() - started
    return report


def ingest_file(database_url: str, path: Path | str | IO[bytes], models: frozenset[str],
                now: datetime | None = None, on_batch: BatchObserver | None = None) -> IngestReport:
    if hasattr(path, "read"):
        return ingest_lines(database_url, path, models, now, on_batch=on_batch)  # type: ignore[arg-type]
    with open(path, "rb") as fh:
        return ingest_lines(database_url, fh, models, now, on_batch=on_batch)
