"""Recording executions: a JSON Lines file (``tally usage ingest``, the bulk loader) and a batch of the
HTTP API, both validated by the one ``activities.ingest.parse_execution`` and both counting what they
insert into the month-to-date counters in the same transaction."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

import capabilities
from activities.ingest import IngestReport, LineError, execution_errors, ingest_file, known_models, parse_execution
from billing.catalog import Catalog
from models.db import get_engine
from models.schemas import RecordedUsage
from repositories import platforms, usage

RECORD_ATTEMPTS = 3


def ingest_jsonl(database_url: str, source: Path | str | IO[bytes], catalog: Catalog,
                 now: datetime | None = None) -> IngestReport:
    """Load a JSON Lines file (or stream): duplicates skipped and counted, each bad line rejected
    with its number and reason while the good ones load, in batches of one transaction each. After
    each committed batch the capabilities that watch usage hear which accounts got new executions."""
    engine = get_engine(database_url, pool_size=1)
    try:
        return ingest_file(database_url, source, known_models(catalog), now,
                           on_batch=lambda accounts, at: capabilities.observe_usage(
                               engine, catalog, RecordedUsage(account_ids=tuple(accounts), recorded_at=at)))
    finally:
        engine.dispose()


def _is_transient(err: DBAPIError) -> bool:
    return err.connection_invalidated or isinstance(
        err.orig, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure))


def _result(event_id: str | None, status: str, errors: list[dict]) -> dict:
    return {"event_id": event_id, "status": status, "errors": errors}


class BatchRecorder:
    """Records the API's batches of executions for one process."""

    def __init__(self, engine: Engine, catalog: Catalog, ingest_concurrency: int = 1):
        self.engine = engine
        self.catalog = catalog
        self.models = known_models(catalog)
        # Validating a batch is pure Python: one at a time per process, so the GIL is never split
        # between several batches while a small request (an entitlement check) waits for it.
        self._validating = threading.Lock()
        # Batch inserts running at once in this process: more only queue up in Postgres, where they
        # compete for CPU with the small reads entitlement checks make.
        self._inserting = threading.BoundedSemaphore(ingest_concurrency)

    def record(self, platform_id: int, items: list, now: datetime) -> dict:
        """Validate each item with the bulk path's validation, insert the good ones (idempotent by
        event id) and count them, in one transaction. Per item: accepted, duplicate or rejected."""
        results: list[dict | None] = [None] * len(items)
        valid: list[tuple[int, tuple]] = []
        with self._validating:
            for i, item in enumerate(items):
                try:
                    valid.append((i, parse_execution(item, self.models, now)))
                except LineError:
                    event_id = item.get("event_id") if isinstance(item, dict) else None
                    results[i] = _result(event_id if isinstance(event_id, str) else None, "rejected",
                                         [{"field": e.field, "reason": e.reason}
                                          for e in execution_errors(item, self.models, now)])
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                inserted, known = self._insert(platform_id, valid)
                break
            except DBAPIError as err:
                if attempt == RECORD_ATTEMPTS or not _is_transient(err):
                    raise
                time.sleep(0.01 * attempt)
        if inserted:
            accounts = tuple(sorted({row[1] for _, row in valid if row[0] in inserted and row[1] in known}))
            capabilities.observe_usage(self.engine, self.catalog, RecordedUsage(account_ids=accounts, recorded_at=now))
        first_index: dict[str, int] = {}
        for i, row in valid:
            event_id, account_id = row[0], row[1]
            if account_id not in known:
                results[i] = _result(event_id, "rejected",
                                     [{"field": "account_id", "reason": f"unknown account {account_id!r}"}])
            elif event_id in first_index or event_id not in inserted:
                results[i] = _result(event_id, "duplicate", [])
            else:
                first_index[event_id] = i
                results[i] = _result(event_id, "accepted", [])
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for r in results:
            counts[r["status"]] += 1
        return {"results": results, "accepted": counts["accepted"], "duplicates": counts["duplicate"],
                "rejected": counts["rejected"]}

    def _insert(self, platform_id: int, valid: list[tuple[int, tuple]]) -> tuple[set[str], set[str]]:
        if not valid:
            return set(), set()
        with self._inserting, self.engine.begin() as conn:
            known = platforms.platform_account_ids(conn, platform_id, list({row[1] for _, row in valid}))
            rows, seen = [], set()
            for _, row in valid:
                if row[1] in known and row[0] not in seen:  # an id twice in one request: the first counts
                    seen.add(row[0])
                    rows.append(row)
            return usage.record_executions(conn, rows), known
