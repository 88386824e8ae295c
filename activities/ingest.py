"""Bulk ingestion of executions from JSON Lines (``tally usage ingest FILE.jsonl``).

One execution per line. Lines are validated in Python (each bad line is rejected with its line
number and the reason; good lines still load), streamed with COPY into a temporary staging table,
then moved into ``executions`` with ``ON CONFLICT (event_id) DO NOTHING``: an event id seen before,
in this file or any earlier one, is counted as a duplicate and skipped. Each batch is one
transaction, so a crash leaves whole batches or nothing, and re-running the same file is harmless.
Memory stays flat in the file size: lines are read, checked and copied as a stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson
import psycopg

from billing.catalog import Catalog
from models.db import libpq_url

BATCH_LINES = 250_000
MAX_LISTED_REJECTIONS = 200
FUTURE_TOLERANCE = timedelta(minutes=5)

COLUMNS = (
    "line_no", "event_id", "account_id", "agent_id", "skill_id", "model", "input_tokens",
    "output_tokens", "byok", "sandbox", "cost_usd", "occurred_at",
)
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    line_no bigint, event_id text, account_id text, agent_id text, skill_id text, model text,
    input_tokens bigint, output_tokens bigint, byok boolean, sandbox boolean, cost_usd numeric,
    occurred_at timestamptz
) ON COMMIT DELETE ROWS
"""
_COPY = f"COPY ingest_staging ({', '.join(COLUMNS)}) FROM STDIN"
_UNKNOWN_ACCOUNTS = """
DELETE FROM ingest_staging s
WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = s.account_id)
RETURNING s.line_no, s.account_id
"""
_MERGE = """
INSERT INTO executions (event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens,
                        byok, sandbox, cost_usd, occurred_at)
SELECT event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens,
       byok, sandbox, cost_usd, occurred_at
FROM ingest_staging ORDER BY line_no
ON CONFLICT (event_id) DO NOTHING
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
    pass


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
    return value


def _count(obj: dict, name: str) -> int:
    value = obj.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineError(f"{name}: must be a whole number")
    if value < 0:
        raise LineError(f"{name}: must not be negative")
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
    ts = ts.astimezone(timezone.utc)
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
    return cost


def parse_line(raw: bytes, models: frozenset[str], now: datetime) -> tuple:
    """One JSONL line -> a staging row (without line number). Raises LineError naming the field."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise LineError(f"not valid JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise LineError("not a JSON object")
    model = _text(obj, "model", 64)
    if model not in models:
        raise LineError(f"model: unknown model {model!r}")
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
    )


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


def ingest_lines(database_url: str, lines: Iterable[bytes], models: frozenset[str],
                 now: datetime | None = None, batch_lines: int = BATCH_LINES) -> IngestReport:
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    report = IngestReport()
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(_STAGING_DDL)
        conn.commit()
        for batch in _batches(lines, batch_lines):
            staged = 0
            with conn.transaction():
                with conn.cursor() as cur:
                    with cur.copy(_COPY) as copy:
                        for line_no, raw in batch:
                            if not raw.strip():
                                continue  # blank lines are not events
                            try:
                                row = parse_line(raw, models, now)
                            except LineError as err:
                                report.reject(line_no, str(err))
                                continue
                            copy.write_row((line_no, *row))
                            staged += 1
                    for line_no, account_id in cur.execute(_UNKNOWN_ACCOUNTS).fetchall():
                        report.reject(line_no, f"account_id: unknown account {account_id!r}")
                        staged -= 1
                    inserted = cur.execute(_MERGE).rowcount
            report.accepted += inserted
            report.duplicates += staged - inserted
    report.rejections.sort(key=lambda r: r.line)
    report.seconds = time.perf_counter() - started
    return report


def ingest_file(database_url: str, path: Path | str | IO[bytes], models: frozenset[str],
                now: datetime | None = None) -> IngestReport:
    if hasattr(path, "read"):
        return ingest_lines(database_url, path, models, now)  # type: ignore[arg-type]
    with open(path, "rb") as fh:
        return ingest_lines(database_url, fh, models, now)
