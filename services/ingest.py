"""Recording executions: a JSON Lines file (``tally usage ingest``, the bulk loader) and a batch of the
HTTP API, both validated by the one ``activities.ingest.parse_execution`` and both counting what they
insert into the month-to-date counters in the same transaction."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
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
from billing.periods import Period, gather_by_period
from models.db import get_engine
from models.schemas import RecordedUsage
from repositories import usage

RECORD_ATTEMPTS = 3
log = logging.getLogger("tally.ingest")


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


@dataclass
class _Request:
    """One batch of the API inside ``BatchRecorder``: its items' results (None until known) and its valid
    rows ``(item index, row, content digest)`` with their verdicts once written."""

    platform_id: int
    now: datetime
    results: list[dict | None]
    valid: list[tuple[int, tuple, bytes]]
    verdicts: list[str] = field(default_factory=list)

    def answer(self) -> dict:
        results = self.results[:]
        for (i, row, _), verdict in zip(self.valid, self.verdicts):
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

    def accounts(self) -> set[str]:
        """The accounts that got new executions (once written)."""
        return {row[1] for (_, row, _), v in zip(self.valid, self.verdicts) if v == "accepted"}


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
        request = self._validate(platform_id, items, now)
        self._write([request])
        self._observe([request])
        return request.answer()

    def record_many(self, batches: list[tuple[int, list, datetime]]) -> list[dict | Exception]:
        """Several batches (``(platform_id, items, now)``, in the order they arrived) recorded as one
        (group commit: one transaction, one set of statements, one commit, the observers told once),
        each answered exactly as ``record`` would have answered it had it run after the earlier ones:
        every batch is validated and screened at its own clock, and an item whose event id an earlier
        batch of the group records is that batch's duplicate (same content) or rejected (other
        content). When the group's transaction fails, each batch is recorded alone, so one batch's
        failure is its own. Per batch: its answer, or the exception ``record`` would have raised."""
        requests = [self._validate(p, items, now) for p, items, now in batches]
        if len(requests) > 1:
            try:
                self._write(requests)
            except Exception as exc:  # noqa: BLE001 - each batch alone says whose it is
                log.warning("a group of %d batches failed as one (%s); recording each alone", len(requests),
                            str(exc).strip().splitlines()[0:1])
            else:
                self._observe(requests)
                return [r.answer() for r in requests]
        out: list[dict | Exception] = []
        for request in requests:
            try:
                self._write([request])
            except Exception as exc:  # noqa: BLE001 - answered to its own request
                out.append(exc)
                continue
            self._observe([request])
            out.append(request.answer())
        return out

    def _validate(self, platform_id: int, items: list, now: datetime) -> _Request:
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
        return _Request(platform_id, now, results, valid)

    def _write(self, requests: list[_Request]) -> None:
        """Record the requests' valid rows in one transaction (again after a transient error)."""
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                verdicts = self._insert(requests)
                break
            except DBAPIError as err:
                if attempt == RECORD_ATTEMPTS or not _is_transient(err):
                    raise
                time.sleep(0.01 * attempt)
        for request, v in zip(requests, verdicts):
            request.verdicts = v

    def _observe(self, requests: list[_Request]) -> None:
        """Tell the capabilities which accounts got new executions: once per month of the requests'
        clocks (a group straddling a month end is observed in each), at the latest of those clocks."""
        by_period: dict[Period, tuple[set[str], datetime]] = {}
        for request in requests:
            accounts = request.accounts()
            if accounts:
                gather_by_period(by_period, accounts, request.now)
        for ids, at in by_period.values():
            capabilities.observe_usage(self.engine, self.catalog, RecordedUsage(account_ids=tuple(sorted(ids)),
                                                                                recorded_at=at))

    def _insert(self, requests: list[_Request]) -> list[list[str]]:
        """Per request, per valid item: "accepted", "duplicate" or the rejection ("field: reason").

        The usual group (every id new) is COPYed straight in (``activities.ingest.copy_fresh``): that is
        the whole transaction, no savepoint. When an id was recorded before (or is being recorded by a
        concurrent batch) that transaction is rolled back and the group is screened again and recorded
        by the general statement in a new one (``repositories.usage.record_executions``), which tells a
        duplicate from a reused id."""
        if not any(r.valid for r in requests):
            return [[] for _ in requests]
        with self._inserting:
            try:
                with self.engine.begin() as conn:
                    verdicts, to_record, where = self._screen(conn, requests)
                    if to_record:
                        with conn.connection.driver_connection.cursor() as cur:
                            copy_fresh(cur, [r[3:] for r in to_record], [(r[1], r[3], r[2]) for r in to_record])
                not_recorded: list[tuple] = []
                hashes: dict = {}
            except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
                with self.engine.begin() as conn:
                    verdicts, to_record, where = self._screen(conn, requests)
                    not_recorded = usage.record_executions(conn, to_record)
                    hashes = usage.recorded_hashes(conn, [(r[1], r[2]) for r in not_recorded])
        for n, *_ in to_record:
            k, j = where[n]
            verdicts[k][j] = "accepted"
        for n, p, event_id, digest in not_recorded:
            k, j = where[n]
            verdicts[k][j] = "duplicate" if hashes.get((p, event_id)) == bytes(digest) else REUSED_ID
        return [["duplicate" if x is DUPLICATE else x for x in v] for v in verdicts]

    def _screen(self, conn, requests: list[_Request]) -> tuple[list[list], list[tuple], list[tuple[int, int]]]:
        """(per request its ``screen`` verdicts, the rows to record ``(n, tenant, digest, *row)``, and
        where row n comes from: (request, index of its valid rows)). Each request is screened at its own
        clock against its own platform's accounts (one tenancy read for the group); a row whose id an
        earlier request of the group records is that one's duplicate (same content) or rejected."""
        platforms = {r.platform_id for r in requests}
        known = usage.tenancy(conn, list({row[1] for r in requests for _, row, _ in r.valid}),
                              next(iter(platforms)) if len(platforms) == 1 else None)
        verdicts: list[list] = []
        to_record: list[tuple] = []
        where: list[tuple[int, int]] = []
        recording: dict[tuple[int, str], bytes] = {}  # (tenant, id) -> digest the group records
        for k, request in enumerate(requests):
            tenancy = {a: Tenancy(*t) for a, t in known.items() if t[0] == request.platform_id}
            v: list = screen([row for _, row, _ in request.valid], [h for _, _, h in request.valid], tenancy,
                             billed_from(request.now, self.grace_hours))
            for j, (verdict, (_, row, digest)) in enumerate(zip(v, request.valid)):
                if verdict is not None:
                    continue
                key = (tenancy[row[1]].platform_id, row[0])
                earlier = recording.get(key)
                if earlier is not None:  # an earlier batch of the group records this id
                    v[j] = DUPLICATE if earlier == digest else REUSED_ID
                    continue
                recording[key] = digest
                where.append((k, j))
                to_record.append((len(where) - 1, key[0], digest, *row))
            verdicts.append(v)
        return verdicts, to_record, where
