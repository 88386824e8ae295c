"""Bulk ingestion of executions from JSON Lines (``tally usage ingest FILE.jsonl``).

One execution per line. Lines are validated in Python (each bad line is rejected with its line
number and the reason; good lines still load) and loaded in batches, each batch one transaction, so
a crash leaves whole batches or nothing, and re-running the same file is harmless:

- fresh events of known accounts (the usual export) are validated and screened, then COPYed
  (binary, in account order) straight into ``executions``, their ids COPYed into ``execution_ids``
  and the batch's month-to-date ``usage_counters`` added, in the same transaction (``copy_fresh``, as
  the HTTP API's batches); a batch naming an unknown account or holding a row ``screen`` refuses is
  not written, and a COPY that meets a known (or repeated) event id fails whole, inside a savepoint:
  the batch then takes the general way;
- the general way screens the rows in Python (unknown accounts, events before the account's billing
  start or older than any close will bill, ids repeated in the batch), COPYs the rest into a
  temporary staging table and records them with ``repositories.usage.merge_sql``: rows whose
  (tenant, event id) is new go in; a known id is a duplicate when its content digest is the same,
  else the line is rejected ("event_id reused with different content").

A bulk load keeps ``LOADERS`` (2) batches in flight, each on its own connection and thread: Python
validates one while Postgres stores the other (profiled on 2 cores: a single loader waited on
Postgres 40% of the time and Postgres idled while Python parsed). Each batch is still one
transaction and observers hear of batches in file order. A batch that repeats an event id of an
earlier batch still in flight waits for that batch to commit first, so the first line of a file
wins as with a single loader.

Event ids are unique per tenant: the account's platform (ops file ingest included; 0 for an account
of no platform). Either way the counters grow by exactly the rows inserted. Memory stays flat in the file size (one
batch of lines at a time). The HTTP API validates its items with the same ``parse_execution``.
"""

from __future__ import annotations

import hashlib
import operator
import queue
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

import orjson
import psycopg

from billing.catalog import Catalog
from models.db import libpq_url
from activities.pricing import LATE_USAGE_LOOKBACK_PERIODS
from billing.periods import oldest_billed_period
from repositories.arrays import bool_array, int_array, numeric_array, text_array
from repositories.usage import ADD_COUNTS, RECORDED_HASHES, TENANCY, merge_sql

BATCH_LINES = 100_000
MAX_LISTED_REJECTIONS = 200
FUTURE_TOLERANCE = timedelta(minutes=5)
# Plausibility bounds, far inside what the columns hold (executions: bigint tokens, NUMERIC(18, 8)
# cost; usage_counters sums them per month: bigint, NUMERIC(20, 8)): no execution reads a billion
# tokens or costs $10,000, and a month of them still fits the counters.
MAX_TOKENS = 10**9  # per execution, input and output each
MAX_COST = Decimal(10_000)  # USD per execution
MAX_DECISION_ID = 2**63 - 1  # executions.routing_decision_id is a bigint
COST_QUANTUM = Decimal("1E-8")

FIELDS = (
    "event_id", "account_id", "agent_id", "skill_id", "model", "input_tokens", "output_tokens", "byok",
    "sandbox", "cost_usd", "occurred_at", "routed_model", "routing_decision_id", "requested_model",
)
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    line_no bigint, platform_id int, content_hash bytea, event_id text, account_id text, agent_id text,
    skill_id text, model text, input_tokens bigint, output_tokens bigint, byok boolean, sandbox boolean,
    cost_usd numeric, occurred_at timestamptz, routed_model text, routing_decision_id bigint,
    requested_model text
) ON COMMIT DELETE ROWS
"""
_COPY = f"COPY ingest_staging (line_no, platform_id, content_hash, {', '.join(FIELDS)}) FROM STDIN (FORMAT BINARY)"
# The general way in (repositories.usage.merge_sql): rows whose (tenant, event id) is new are
# recorded and counted; the statement answers the others.
_MERGE = merge_sql(f"SELECT line_no AS n, platform_id, content_hash, {', '.join(FIELDS)} FROM ingest_staging")
_COPY_IDS = "COPY execution_ids (platform_id, event_id, content_hash) FROM STDIN (FORMAT BINARY)"
# Batches loaded at once by a bulk load (each on its own connection): see ingest_lines.
LOADERS = 2
LOAD_ATTEMPTS = 3  # a batch that loses a deadlock to a concurrent writer is loaded again
_COPY_EXECUTIONS = f"COPY executions ({', '.join(FIELDS)}) FROM STDIN (FORMAT BINARY)"
# The counters of rows COPYed straight into executions (aggregated while parsing).
_ADD_COUNTERS = f"""
WITH ins AS (
    SELECT * FROM unnest(
        %(account_id)s::text[], %(period)s::text[], %(model)s::text[], %(byok)s::boolean[],
        %(sandbox)s::boolean[], %(executions)s::bigint[], %(input_tokens)s::bigint[],
        %(output_tokens)s::bigint[], %(cost_usd)s::numeric[], %(uncosted_input_tokens)s::bigint[],
        %(uncosted_output_tokens)s::bigint[]
    ) AS c(account_id, period, model, byok, sandbox, executions, input_tokens, output_tokens, cost_usd,
           uncosted_input_tokens, uncosted_output_tokens)
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

    def add(self, other: "IngestReport") -> None:
        """Count in a later batch's report (batches are added in file order, so the listed
        rejections are the same first ones a single loader would list)."""
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        room = MAX_LISTED_REJECTIONS - len(self.rejections)
        if room > 0:
            self.rejections.extend(other.rejections[:room])


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
    # Bounded before rounding: a huge exponent never reaches quantize, and nothing at most MAX_COST
    # rounds past it (the old bound, 10^10, let 9999999999.999999995 round into an overflow).
    if cost > MAX_COST:
        raise LineError(f"cost_usd: must be at most {MAX_COST:,} per execution")
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


# The event id as it is written in a line, found without parsing the JSON: enough to tell whether two
# batches can share an id (a line where it is not found this way makes its batch wait for every
# earlier one).
_RAW_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]*)"')


def _raw_event_ids(batch: list[tuple[int, bytes]]) -> frozenset[bytes] | None:
    """The event ids of ``batch`` as written, or None when one line's id cannot be read that way."""
    ids = set()
    for _n, raw in batch:
        found = _RAW_EVENT_ID.findall(raw)
        if len(found) != 1:
            return None
        ids.add(found[0])
    return frozenset(ids)


class _InFlight:
    """Batches loaded at once, in file order: a batch sharing an event id with an earlier one still in
    flight waits until that one is committed (first line wins, as with one loader). Only earlier batches
    are waited for, so no two batches wait for each other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: dict[int, tuple[threading.Event, list, threading.Event]] = {}

    def enter(self, seq: int) -> None:
        with self._lock:
            self._batches[seq] = (threading.Event(), [None], threading.Event())

    def wait_for_earlier(self, seq: int, ids: frozenset[bytes] | None) -> None:
        with self._lock:
            mine = self._batches[seq]
            earlier = sorted(((s, b) for s, b in self._batches.items() if s < seq), key=lambda e: e[0])
        mine[1][0] = ids
        mine[0].set()
        for _s, (known, their_ids, finished) in earlier:
            known.wait()
            if ids is None or their_ids[0] is None or ids & their_ids[0]:
                finished.wait()

    def leave(self, seq: int) -> None:
        with self._lock:
            known, _ids, finished = self._batches.pop(seq)
        known.set()
        finished.set()


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


# ---- what depends on the account and on what billing will see (both ways in) ---------------------
@dataclass(frozen=True)
class Tenancy:
    """What ingest knows of an account: its tenant (its platform; 0 for none) and its billing start."""

    platform_id: int
    billing_starts_at: datetime


class _Duplicate:
    def __repr__(self) -> str:
        return "DUPLICATE"


DUPLICATE = _Duplicate()  # a screen verdict: a repeat of an earlier row of the batch, same content
REUSED_ID = "event_id reused with different content"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def content_hash(row: tuple) -> bytes:
    """The digest of an execution's content (every field but its event id), the same for a replay
    whatever its JSON spelling (offsets, cost digits). The migration that backfilled ``execution_ids``
    computes it in SQL (migrations/versions/0011_reliability.py, CONTENT_HASH_SQL): keep the two equal."""
    (_, account, agent, skill, model, tin, tout, byok, sandbox, cost, ts, routed, decision, requested) = row
    text = "\x1f".join((
        account, agent, skill or "", model, str(tin), str(tout), "t" if byok else "f", "t" if sandbox else "f",
        "" if cost is None else format(cost, "f"), str((ts - _EPOCH) // _MICROSECOND), routed or "",
        "" if decision is None else str(decision), requested or "",
    ))
    return hashlib.md5(text.encode(), usedforsecurity=False).digest()


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def billed_from(now: datetime, grace_hours: int = 48) -> datetime:
    """The earliest occurred_at some close still to come will bill (the late-usage look-back)."""
    return oldest_billed_period(now, LATE_USAGE_LOOKBACK_PERIODS, grace_hours).start


def screen(rows: list[tuple], hashes: list[bytes], tenancy: dict[str, Tenancy], not_before: datetime) -> list:
    """Per row, what the batch itself says before anything is written: None (record it), DUPLICATE
    (an earlier row of the batch has its tenant, id and content) or the rejection ("field: reason"):
    an account unknown (to this tenant), an event before the account's billing start or older than
    any close will bill, an id an earlier row of the batch used with other content."""
    verdicts: list = []
    seen: dict[tuple[int, str], bytes] = {}
    for row, digest in zip(rows, hashes):
        account = tenancy.get(row[1])
        if account is None:
            verdicts.append(f"account_id: unknown account {row[1]!r}")
            continue
        ts = row[10]
        if ts < not_before:  # the later of the two bounds is named
            verdicts.append(f"occurred_at: {_iso(ts)} is before {not_before:%Y-%m}, the oldest "
                            f"period a close still bills (late usage reaches back {LATE_USAGE_LOOKBACK_PERIODS} "
                            "periods); it would never be billed")
            continue
        if ts < account.billing_starts_at:
            verdicts.append(f"occurred_at: {_iso(ts)} is before the account's billing start "
                            f"({account.billing_starts_at:%Y-%m-%d}); it would never be billed")
            continue
        key = (account.platform_id, row[0])
        first = seen.get(key)
        if first is None:
            seen[key] = digest
            verdicts.append(None)
        else:
            verdicts.append(DUPLICATE if first == digest else REUSED_ID)
    return verdicts


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
    hashes: list[bytes] = field(default_factory=list)  # content_hash of each row
    tenancy: dict[str, Tenancy] | None = None  # of the batch's accounts, once looked up
    verdicts: list = field(default_factory=list)  # screen's, once looked up

    def accounts(self) -> list[str]:
        return list({row[1] for row in self.rows})


def counter_params(rows: list[tuple]) -> dict:
    """The month-to-date counters of rows (``FIELDS`` order), a list per column of _ADD_COUNTERS
    (``counter_literals`` writes them as the array literals it is given)."""
    counts: dict[tuple, list] = {}
    get = counts.get
    for row in rows:
        ts = row[10]
        key = (row[1], ts.year, ts.month, row[4], row[7], row[8])
        c = get(key)
        cost = row[9]
        if c is None:
            if cost is None:
                counts[key] = [1, row[5], row[6], _NO_COST, row[5], row[6]]
            else:
                counts[key] = [1, row[5], row[6], cost, 0, 0]
        else:
            c[0] += 1
            c[1] += row[5]
            c[2] += row[6]
            if cost is None:
                c[4] += row[5]
                c[5] += row[6]
            else:
                c[3] += cost
    keys = list(counts)
    sums = [counts[k] for k in keys]
    return {
        "account_id": [k[0] for k in keys], "period": [f"{k[1]:04d}-{k[2]:02d}" for k in keys],
        "model": [k[3] for k in keys], "byok": [k[4] for k in keys], "sandbox": [k[5] for k in keys],
        "executions": [c[0] for c in sums], "input_tokens": [c[1] for c in sums],
        "output_tokens": [c[2] for c in sums], "cost_usd": [c[3] for c in sums],
        "uncosted_input_tokens": [c[4] for c in sums], "uncosted_output_tokens": [c[5] for c in sums],
    }


# _ADD_COUNTERS's arrays as Postgres array literals (repositories/arrays.py): psycopg's per-element
# adaptation of the lists cost ~5x more client CPU (9.6 against 2.0 ms for a batch's 800 counter keys).
_COUNTER_ARRAYS = {"account_id": text_array, "period": text_array, "model": text_array, "byok": bool_array,
                   "sandbox": bool_array, "executions": int_array, "input_tokens": int_array,
                   "output_tokens": int_array, "cost_usd": numeric_array, "uncosted_input_tokens": int_array,
                   "uncosted_output_tokens": int_array}


def counter_literals(params: dict) -> dict:
    """``counter_params``'s lists as the array literals _ADD_COUNTERS is given."""
    return {name: _COUNTER_ARRAYS[name](values) for name, values in params.items()}


_by_account = operator.itemgetter(1)  # FIELDS[1]: account_id


def _id_order(key: tuple[int, str, bytes]) -> tuple[int, str]:
    return key[0], key[1]


def record_ids_and_counts(cur: psycopg.Cursor, ids: list[tuple[int, str, bytes]], rows: list[tuple]) -> None:
    """Record the (tenant, event id, digest) of executions just COPYed (in key order, the order every
    writer locks them in) and add their counters. A known id raises UniqueViolation: the caller's
    savepoint then undoes the batch and it takes the general way."""
    with cur.copy(_COPY_IDS) as copy:
        copy.set_types(["int4", "text", "bytea"])
        for key in sorted(ids, key=_id_order):
            copy.write_row(key)
    cur.execute(_ADD_COUNTERS, counter_literals(counter_params(rows)))


def copy_fresh(cur: psycopg.Cursor, rows: list[tuple], ids: list[tuple[int, str, bytes]]) -> None:
    """The fast way in for rows (``FIELDS`` order) whose ids are new and unique in the batch, screened
    already: COPY (binary) into executions, then ``record_ids_and_counts``; the HTTP API's batches and
    the bulk loader's (``_load_fresh``).

    The rows go in account order: four of the executions' six B-trees lead with the account, so each
    index is then walked once from one end to the other instead of at random. Measured (one connection,
    1,000-row binary statements into a month partition of 300,000-420,000 rows, six rounds): 16.2 against
    17.2 ms of Postgres CPU per 1,000 rows, lower in every round; the sort costs ~0.1 ms per 1,000 here."""
    with cur.copy(_COPY_EXECUTIONS) as copy:
        copy.set_types(_BINARY_TYPES)
        for row in sorted(rows, key=_by_account):
            copy.write_row(row)
    record_ids_and_counts(cur, ids, rows)


class _NotFresh(Exception):
    """The batch cannot go straight in (an unknown account, a row billing will not see, an id
    repeated in the batch); it takes the general way."""


def _load_fresh(conn: psycopg.Connection, lines: list[tuple[int, bytes]], models: frozenset[str],
                now: datetime, not_before: datetime, report: IngestReport) -> tuple[_Batch, bool]:
    """Validate the lines, screen the valid rows and record them the HTTP batches' way
    (``copy_fresh``: COPY into executions in account order, their ids, their counters), in a
    savepoint. Returns (the batch, True) when that went through; (the batch, False), with nothing
    written, when a row's event id is known (or repeated, or being written by a concurrent writer), an
    account unknown or a row refused by ``screen``. Either way every line has been validated once.

    The whole batch is validated before anything is written, rather than each row COPYed as it is
    parsed, so that its rows go in account order (``copy_fresh``'s reason) and a batch ``screen``
    refuses is never COPYed at all. Measured with ``api_bench`` (1M events, two pairs alternating):
    51,205 and 53,059 against 57,757 and 60,279 events/s; the overlap of parsing and storing that
    streaming gave is the other loader's (``LOADERS``)."""
    batch = _Batch()
    for line_no, raw in lines:
        if not raw.strip():
            continue  # blank lines are not events
        try:
            row = parse_line(raw, models, now)
        except LineError as err:
            report.reject(line_no, str(err))
            continue
        batch.rows.append(row)
        batch.line_nos.append(line_no)
        batch.hashes.append(content_hash(row))
    rows, hashes = batch.rows, batch.hashes
    try:
        with conn.transaction(), conn.cursor() as cur:
            batch.tenancy = tenancy = _tenancy(cur, batch.accounts())
            batch.verdicts = screen(rows, hashes, tenancy, not_before)
            if any(v is not None for v in batch.verdicts):
                raise _NotFresh
            if rows:
                copy_fresh(cur, rows, [(tenancy[row[1]].platform_id, row[0], digest)
                                       for row, digest in zip(rows, hashes)])
        return batch, True
    except (_NotFresh, psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
        return batch, False


def _tenancy(cur: psycopg.Cursor, account_ids: list[str]) -> dict[str, Tenancy]:
    rows = cur.execute(TENANCY, {"ids": text_array(account_ids), "platform_id": None}).fetchall()
    return {r[0]: Tenancy(r[1], r[2]) for r in rows}


@dataclass
class _Outcome:
    """What the general way did to one batch (applied to the report once its transaction committed)."""

    accepted: int = 0
    duplicates: int = 0
    rejections: list[tuple[int, str]] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)  # accounts that got new executions

    def apply(self, report: IngestReport) -> None:
        report.accepted += self.accepted
        report.duplicates += self.duplicates
        for line_no, reason in self.rejections:
            report.reject(line_no, reason)


def _merge(conn: psycopg.Connection, batch: _Batch, not_before: datetime) -> _Outcome:
    """The general way in: screen the rows (unknown accounts, rows billing will not see, ids repeated
    in the batch), COPY the others to staging and record those whose (tenant, event id) is new; a
    known id is a duplicate when its content is the same, else rejected."""
    out = _Outcome()
    with conn.cursor() as cur:
        if batch.tenancy is None:
            batch.tenancy = _tenancy(cur, batch.accounts())
            batch.verdicts = screen(batch.rows, batch.hashes, batch.tenancy, not_before)
        tenancy = batch.tenancy
        staged: dict[int, str] = {}  # line -> account
        with cur.copy(_COPY) as copy:
            copy.set_types(["int8", "int4", "bytea", *_BINARY_TYPES])
            for line_no, row, digest, verdict in zip(batch.line_nos, batch.rows, batch.hashes, batch.verdicts):
                if verdict is None:
                    copy.write_row((line_no, tenancy[row[1]].platform_id, digest, *row))
                    staged[line_no] = row[1]
                elif verdict is DUPLICATE:
                    out.duplicates += 1
                else:
                    out.rejections.append((line_no, verdict))
        if not staged:
            return out
        not_recorded = cur.execute(_MERGE).fetchall()
        known = _recorded_hashes(cur, [(r[1], r[2]) for r in not_recorded])
    for line_no, platform_id, event_id, digest in not_recorded:
        del staged[line_no]
        if known.get((platform_id, event_id)) == bytes(digest):
            out.duplicates += 1
        else:
            out.rejections.append((line_no, REUSED_ID))
    out.accepted = len(staged)
    out.accounts = set(staged.values())
    return out


def _recorded_hashes(cur: psycopg.Cursor, keys: list[tuple[int, str]]) -> dict[tuple[int, str], bytes]:
    if not keys:
        return {}
    rows = cur.execute(RECORDED_HASHES, {"platform_id": [k[0] for k in keys],
                                         "event_id": [k[1] for k in keys]}).fetchall()
    return {(r[0], r[1]): bytes(r[2]) for r in rows}


def _load_batch(conn: psycopg.Connection, lines: list[tuple[int, bytes]], models: frozenset[str],
                now: datetime, not_before: datetime, report: IngestReport) -> set[str]:
    """One batch, one transaction. Fresh events of known accounts (the usual export) go straight in
    with COPY; anything else (known event ids, ids repeated in the batch, unknown accounts, rows
    billing will not see) through staging. Either way the counters grow by exactly the rows inserted."""
    batch = None
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            with conn.transaction():
                if batch is None:
                    batch, done = _load_fresh(conn, lines, models, now, not_before, report)
                    if done:
                        report.accepted += len(batch.rows)
                        return set(batch.accounts())
                if not batch.rows:
                    return set()
                outcome = _merge(conn, batch, not_before)
            break
        except psycopg.errors.DeadlockDetected:
            if attempt == LOAD_ATTEMPTS:
                raise
    outcome.apply(report)
    return outcome.accounts


BatchObserver = Callable[[set[str], datetime], None]


def ingest_lines(database_url: str, lines: Iterable[bytes], models: frozenset[str],
                 now: datetime | None = None, batch_lines: int = BATCH_LINES,
                 on_batch: BatchObserver | None = None, grace_hours: int = 48,
                 loaders: int = LOADERS) -> IngestReport:
    """Load lines in batches of one transaction each; ``on_batch(accounts, now)`` is called after each
    committed batch, in file order, with the accounts that got new executions.

    ``loaders`` batches are loaded at once, each on a connection of its own (a thread each: Python
    validates one batch while Postgres stores another, and Postgres works on two). Each batch is
    still one transaction, so a crash leaves whole batches; but a batch after the one being
    reported may have committed already. A batch repeating an event id of an earlier batch in flight
    waits for it to commit (``_InFlight``), so the first line of a file wins; ``loaders=1`` loads and
    reports strictly one batch after the other."""
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    not_before = billed_from(now, grace_hours)
    report = IngestReport()
    connections: queue.SimpleQueue = queue.SimpleQueue()
    opened: list[psycopg.Connection] = []

    in_flight = _InFlight()

    def load(batch: list[tuple[int, bytes]], seq: int) -> tuple[IngestReport, set[str]]:
        try:
            in_flight.wait_for_earlier(seq, _raw_event_ids(batch))
            return load_now(batch)
        finally:
            in_flight.leave(seq)

    def load_now(batch: list[tuple[int, bytes]]) -> tuple[IngestReport, set[str]]:
        try:
            conn = connections.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(libpq_url(database_url))
            opened.append(conn)
            conn.execute(_STAGING_DDL)
            conn.commit()
        try:
            part = IngestReport()
            return part, _load_batch(conn, batch, models, now, not_before, part)
        finally:
            connections.put(conn)

    def done(result: tuple[IngestReport, set[str]]) -> None:
        part, accounts = result
        report.add(part)
        if accounts and on_batch is not None:
            on_batch(accounts, now)

    try:
        if loaders <= 1:
            for batch in _batches(lines, batch_lines):
                done(load_now(batch))
        else:
            with ThreadPoolExecutor(loaders, thread_name_prefix="ingest-loader") as pool:
                pending: deque[Future] = deque()
                try:
                    for seq, batch in enumerate(_batches(lines, batch_lines)):
                        if len(pending) >= loaders:  # at most ``loaders`` batches in memory
                            done(pending.popleft().result())
                        in_flight.enter(seq)
                        pending.append(pool.submit(load, batch, seq))
                    while pending:
                        done(pending.popleft().result())
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
    finally:
        for conn in opened:
            conn.close()
    report.rejections.sort(key=lambda r: r.line)
    report.seconds = time.perf_counter() - started
    return report


def ingest_file(database_url: str, path: Path | str | IO[bytes], models: frozenset[str],
                now: datetime | None = None, on_batch: BatchObserver | None = None,
                grace_hours: int = 48, loaders: int = LOADERS) -> IngestReport:
    if hasattr(path, "read"):
        return ingest_lines(database_url, path, models, now, on_batch=on_batch,  # type: ignore[arg-type]
                            grace_hours=grace_hours, loaders=loaders)
    with open(path, "rb") as fh:
        return ingest_lines(database_url, fh, models, now, on_batch=on_batch, grace_hours=grace_hours,
                            loaders=loaders)
