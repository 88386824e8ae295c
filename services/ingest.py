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
from activities.ingest import (
    DUPLICATE,
    REUSED_ID,
    IngestReport,
    LineError,
    Tenancy,
    billed_from,
    content_hash,
    copy_fresh,
    execution_errors,
    ingest_file,
    known_models,
    parse_execution,
    screen,
)
from billing.catalog import Catalog
from models.db import get_engine
from models.schemas import RecordedUsage
from repositories import usage

RECORD_ATTEMPTS = 3


def ingest_jsonl(database_url: str, source: Path | str | IO[bytes], catalog: Catalog,
                 now: datetime | None = None, grace_hours: int = 48) -> IngestReport:
    """Load a JSON Lines file (or stream): duplicates skipped and counted, each bad line rejected
    with its number and reason while the good ones load, in batches of one transaction each. After
    each committed batch the capabilities that watch usage hear which accounts got new executions."""
    engine = get_engine(database_url, pool_size=1)
    try:
        return ingest_file(database_url, source, known_models(catalog), now, grace_hours=grace_hours,
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

    def __init__(self, engine: Engine, catalog: Catalog, ingest_concurrency: int = 1, grace_hours: int = 48):
        self.engine = engine
        self.catalog = catalog
        self.models = known_models(catalog)
        self.grace_hours = grace_hours
        # Validating a batch is pure Python: one at a time per process, so the GIL is never split
        # between several batches while a small request (an entitlement check) waits for it.
        self._validating = threading.Lock()
        # Batch inserts running at once in this process: more only queue up in Postgres, where they
        # compete for CPU with the small reads entitlement checks make.
        self._inserting = threading.BoundedSemaphore(ingest_concurrency)

    def record(self, platform_id: int, items: list, now: datetime) -> dict:
        """Validate each item with the bulk path's validation (``parse_execution`` then ``screen``),
        record the good ones (idempotent by the platform's event id and the content) and count them,
        in one transaction. Per item: accepted, duplicate or rejected (with field and reason)."""
        results: list[dict | None] = [None] * len(items)
        valid: list[tuple[int, tuple, bytes]] = []
        with self._validating:
            for i, item in enumerate(items):
                try:
                    row = parse_execution(item, self.models, now)
                    valid.append((i, row, content_hash(row)))
                except LineError:
                    event_id = item.get("event_id") if isinstance(item, dict) else None
                    results[i] = _result(event_id if isinstance(event_id, str) else None, "rejected",
                                         [{"field": e.field, "reason": e.reason}
                                          for e in execution_errors(item, self.models, now)])
        not_before = billed_from(now, self.grace_hours)
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                verdicts = self._insert(platform_id, valid, not_before)
                break
            except DBAPIError as err:
                if attempt == RECORD_ATTEMPTS or not _is_transient(err):
                    raise
                time.sleep(0.01 * attempt)
        accounts = sorted({row[1] for (_, row, _), v in zip(valid, verdicts) if v == "accepted"})
        if accounts:
            capabilities.observe_usage(self.engine, self.catalog,
                                       RecordedUsage(account_ids=tuple(accounts), recorded_at=now))
        for (i, row, _), verdict in zip(valid, verdicts):
            if verdict in ("accepted", "duplicate"):
                results[i] = _result(row[0], verdict, [])
            else:
                err = LineError(verdict)
                results[i] = _result(row[0], "rejected", [{"field": err.field or "event_id", "reason": err.reason}])
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for r in results:
            counts[r["status"]] += 1
        return {"results": results, "accepted": counts["accepted"], "duplicates": counts["duplicate"],
                "rejected": counts["rejected"]}

    @staticmethod
    def _copy_fresh(conn, to_record: list[tuple]) -> bool:
        """The usual batch (every id new): COPY it straight in (``activities.ingest.copy_fresh``) in a
        savepoint; False, with nothing written, when an id was recorded before (or is being recorded
        by a concurrent batch): the batch then takes the general statement, which sorts that out."""
        if not to_record:
            return True
        try:
            with conn.begin_nested(), conn.connection.driver_connection.cursor() as cur:
                copy_fresh(cur, [r[3:] for r in to_record], [(r[1], r[3], r[2]) for r in to_record])
            return True
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            return False

    def _insert(self, platform_id: int, valid: list[tuple[int, tuple, bytes]], not_before: datetime) -> list[str]:
        """Per valid item: "accepted", "duplicate" or the rejection ("field: reason")."""
        if not valid:
            return []
        with self._inserting, self.engine.begin() as conn:
            tenancy = {a: Tenancy(*t) for a, t in
                       usage.tenancy(conn, list({row[1] for _, row, _ in valid}), platform_id).items()}
            rows = [row for _, row, _ in valid]
            verdicts: list = screen(rows, [h for _, _, h in valid], tenancy, not_before)
            to_record = [(n, tenancy[row[1]].platform_id, digest, *row)
                         for n, ((_, row, digest), v) in enumerate(zip(valid, verdicts)) if v is None]
            if self._copy_fresh(conn, to_record):
                not_recorded = []
            else:
                not_recorded = usage.record_executions(conn, to_record)
            known = usage.recorded_hashes(conn, [(r[1], r[2]) for r in not_recorded])
        for n, *_ in to_record:
            verdicts[n] = "accepted"
        for n, p, event_id, digest in not_recorded:
            verdicts[n] = "duplicate" if known.get((p, event_id)) == bytes(digest) else REUSED_ID
        return ["duplicate" if v is DUPLICATE else v for v in verdicts]
