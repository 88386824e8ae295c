"""Recording the API's batches of executions in processes of their own, so that the small requests
(entitlement checks, ``POST /v1/route``, cost verdicts) never wait behind a batch.

Measured before this (benchmarks/api_bench.py, issue 15): an entitlement check spent up to 47 ms at
p99 *inside its handler* while batches arrived at 10,000 events/s. The handler ran in the same Python
process as the batches: each batch decoded and validated 1,000 items, adapted 14 arrays of 1,000
values for the insert and built 1,000 results, all holding the GIL, and after each batch the alert
evaluator (services/alerts.py) rated the batch's accounts in a background thread of the same
process, also holding the GIL. A check needs the GIL a dozen times (thread hand-off, pool checkout,
query, rating, JSON); each time it queued behind those threads' 1 ms slices, and a full collection of
the batches' garbage stalled every thread at once.

So each uvicorn worker hands the raw body of ``POST /v1/executions`` to ``TALLY_API_INGEST_PROCESSES``
(default 1) child processes with their own connection pool: the child decodes, validates, inserts,
counts and runs the usage observers (alerts) exactly as the in-process path does
(``services.ingest.BatchRecorder``) and sends back the response body. The serving process only
moves bytes for a batch; its threads, GIL and connection pool are the read path's alone. The time a
batch is recorded at is the serving process's clock, passed along.

Group commit: a batch that arrives while every child is busy (and one call is already queued for the
next free one) waits in the serving process; the next call takes every batch waiting (``TALLY_API_INGEST_GROUP``, default 4, at most) and records
them as one (``BatchRecorder.record_many``: one transaction, one commit, the observers told once),
each request answered as if its batch had been recorded alone after the earlier ones. With as many
batches in flight as children nothing waits and each batch goes alone, as before.

A child that dies (killed, out of memory) answers its batch 503 with Retry-After and is replaced;
the batch was one transaction, so a retry records what was not recorded and answers the rest
``duplicate``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import threading
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path

import orjson

from api.errors import ApiError

log = logging.getLogger("tally.api.ingest")

_recorder = None  # the child's services.ingest.BatchRecorder
# Each ingest process's connections (docs/deployment.md counts them): one batch (or group) at a time, plus the
# alert evaluation's reads and writes.
POOL_SIZE, MAX_OVERFLOW = 2, 2


def _start(database_url: str, catalog_path: str | None, pool_size: int, concurrency: int, grace_hours: int,
           nice: int = 0) -> None:
    """In the child: its own engine, catalog and recorder; alerts evaluated in its background thread.
    At ``nice`` (TALLY_API_INGEST_NICE): when the host's cores are all busy, the scheduler runs the
    serving process's small requests before this child's batch work."""
    global _recorder
    import os

    if nice:
        os.nice(nice)
    from api.app import api_engine
    from billing.catalog import load_catalog
    from services.alerts import evaluator
    from services.ingest import BatchRecorder

    engine = api_engine(database_url, pool_size=pool_size, max_overflow=MAX_OVERFLOW)
    catalog = load_catalog(Path(catalog_path) if catalog_path else None)
    evaluator(engine, catalog).queue.background = True
    _recorder = BatchRecorder(engine, catalog, concurrency, grace_hours)
    gc.collect()
    gc.freeze()


def _ready() -> bool:
    return _recorder is not None


def _answer(outcome) -> tuple[int, bytes, dict | None]:
    """In the child: (status, JSON body, headers) of one ``POST /v1/executions`` from what recording it
    gave: its result, or the exception it raised (answered as the serving process answers it)."""
    from api.errors import DATABASE_RETRY_AFTER_SECONDS, database_unavailable, error_response

    if isinstance(outcome, ApiError):
        resp = error_response(outcome.status, outcome.type, outcome.message, outcome.field, outcome.headers)
        return outcome.status, bytes(resp.body), outcome.headers
    if isinstance(outcome, BaseException):  # api/errors.py answers these the same way
        if database_unavailable(outcome):
            log.warning("database unavailable while recording a batch: %s", str(outcome).strip().splitlines()[0:1])
            resp = error_response(503, "unavailable", "the database is unavailable; retry later",
                                  headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
            return 503, bytes(resp.body), {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        log.error("recording a batch failed", exc_info=outcome)
        return 500, bytes(error_response(500, "internal", "internal error; it has been logged").body), None
    return 200, orjson.dumps(outcome), None


def _record(platform_id: int, body: bytes, now: datetime) -> tuple[int, bytes, dict | None]:
    """In the child: (status, JSON body, headers) of one ``POST /v1/executions``."""
    return _record_group([(platform_id, body, now)])[0]


def _record_group(batches: list[tuple[int, bytes, datetime]]) -> list[tuple[int, bytes, dict | None]]:
    """In the child: the answers of the ``POST /v1/executions`` bodies that waited for it, in their order,
    recorded as one (``BatchRecorder.record_many``: one transaction, each answered as if alone). A
    body that is not a batch (bad JSON, too many items) is answered on its own and left out."""
    from api.app import batch_items

    answers: list = [None] * len(batches)
    todo, places = [], []
    for k, (platform_id, body, now) in enumerate(batches):
        try:
            todo.append((platform_id, batch_items(body), now))
            places.append(k)
        except ApiError as err:
            answers[k] = _answer(err)
    if len(todo) == 1:
        try:
            outcomes = [_recorder.record(*todo[0])]
        except Exception as exc:  # noqa: BLE001 - answered by _answer
            outcomes = [exc]
    else:
        outcomes = _recorder.record_many(todo) if todo else []
    for k, outcome in zip(places, outcomes):
        answers[k] = _answer(outcome)
    return answers


class IngestProcesses:
    """The batch recorders of one API process: ``processes`` children, one call at a time each, and one
    call queued for the next free child. A batch that arrives while they are all taken waits here; the
    next call takes every batch waiting (at most ``group``) and records them as one (``_record_group``),
    so under load the batches share a transaction, its statements and its commit while each request
    keeps its own answer."""

    def __init__(self, database_url: str, catalog_path: Path | None, processes: int, pool_size: int = POOL_SIZE,
                 concurrency: int = 1, grace_hours: int = 48, nice: int = 0, group: int = 4):
        self._args = (database_url, str(catalog_path) if catalog_path else None, pool_size, concurrency, grace_hours,
                      nice)
        self.processes = processes
        self.group = max(1, group)
        self._lock = threading.Lock()
        self._pool = self._new_pool()
        self._waiting: deque = deque()  # (platform_id, body, now, asyncio future), in arrival order
        self._busy = 0  # calls handed to the children and not answered yet
        self.sent: Counter[int] = Counter()  # calls handed to the children, by the batches they carried

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=self._args)

    def start(self) -> None:
        """At the server's start-up, without waiting: start the children now rather than with the
        first batches (their imports take seconds on a busy host; measured, the first batches after a
        start waited up to 16 s at p99). A child the pool still lacks is started by the next batch."""
        for _ in range(self.processes):
            self._pool.submit(_ready)

    def ready(self, timeout: float = 120.0) -> bool:
        """Start a child and wait until it is ready (tests)."""
        return self._pool.submit(_ready).result(timeout)

    async def record(self, platform_id: int, body: bytes, now: datetime) -> tuple[int, bytes, dict | None]:
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((platform_id, body, now, answer))
        self._dispatch()
        return await answer

    def _dispatch(self) -> None:
        """(In the event loop.) Hand the waiting batches to the children, ``group`` at most per call, and
        one call more than there are children: that one waits in the pool's queue, so a child that
        finishes starts on it at once instead of idling while the next body crosses the pipe. What
        arrives after it waits here and goes as one group."""
        while self._waiting and self._busy < self.processes + 1:
            taken = [self._waiting.popleft() for _ in range(min(self.group, len(self._waiting)))]
            taken = [t for t in taken if not t[3].done()]  # a request cancelled while it waited
            if not taken:
                continue
            pool = self._pool
            try:
                if len(taken) == 1:
                    call = pool.submit(_record, *taken[0][:3])
                else:
                    call = pool.submit(_record_group, [t[:3] for t in taken])
            except BrokenProcessPool:
                self._broken(pool, [t[3] for t in taken])
                continue
            self._busy += 1
            self.sent[len(taken)] += 1
            asyncio.wrap_future(call).add_done_callback(
                lambda done, pool=pool, answers=[t[3] for t in taken]: self._answered(done, pool, answers))

    def _answered(self, done: asyncio.Future, pool: ProcessPoolExecutor, answers: list[asyncio.Future]) -> None:
        self._busy -= 1
        if done.cancelled():
            err = None
        else:
            err = done.exception()
        if isinstance(err, BrokenProcessPool):
            self._broken(pool, answers)
        elif err is not None or done.cancelled():
            for a in answers:
                if not a.done():
                    a.set_exception(err or asyncio.CancelledError())
        else:
            result = done.result()
            for a, r in zip(answers, [result] if len(answers) == 1 else result):
                if not a.done():
                    a.set_result(r)
        self._dispatch()

    def _broken(self, pool: ProcessPoolExecutor, answers: list[asyncio.Future]) -> None:
        with self._lock:
            if self._pool is pool:
                log.error("an ingest process died; starting new ones")
                self._pool = self._new_pool()
        for a in answers:
            if not a.done():
                a.set_exception(ApiError(503, "unavailable", "the batch's recorder stopped; send the same batch "
                                         "again (recorded items answer duplicate)", headers={"Retry-After": "1"}))

    def close(self) -> None:
        """At shutdown (uvicorn has answered every request by then): stop the children without waiting
        for one that is still starting (its imports take seconds on a busy machine)."""
        children = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for child in children:
            child.terminate()
