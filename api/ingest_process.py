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
counts and runs the usage observers as the in-process path does (the alerts' evaluation
forwarded, below)
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

Alerts once per serving process: the children do not evaluate alert rules themselves. Each child's
batches name most of the same busy accounts as its siblings' (a platform's batches spread over every
account), so a child per core evaluating its own repeated each evaluation once per core. Each call
answers the accounts its batches recorded beside the answers; the serving process hands them to
``AlertsProcess``, one process of its own whose ``services.alerts.EvaluationQueue`` paces them as before
(rounds at most 10% of its time). Measured under full HTTP ingest (api_bench, 2 children,
pg_stat_statements): 627 account evaluations a second with the children evaluating, 283 with one alerts
process, whose rounds came every ~3 s; the alerts' statements went from 8% to 6% of Postgres' statement
time. If that process dies the accounts it held are evaluated with their next batch (the rules read
state, not events).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import threading
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import Callable

import orjson

from api.errors import ApiError
from billing.periods import Period, gather_by_period

log = logging.getLogger("tally.api.ingest")

_recorder = None  # the child's services.ingest.BatchRecorder
# In the child: the accounts its calls recorded, (account ids, recorded at), until the call answers them.
_observed: list[tuple[tuple[str, ...], datetime]] = []
# Each ingest process's connections (docs/deployment.md counts them): one batch (or group) at a time, then
# the usage observers that run in line (credits); the alerts go to AlertsProcess.
POOL_SIZE, MAX_OVERFLOW = 1, 1
# The alerts process's: its evaluation's reads, and the writes of a crossing or an anomaly meanwhile.
ALERTS_POOL_SIZE, ALERTS_MAX_OVERFLOW = 1, 1


def _start(database_url: str, catalog_path: str | None, pool_size: int, concurrency: int, grace_hours: int,
           nice: int = 0, forward_alerts: bool = False) -> None:
    """In the child: its own engine, catalog and recorder; alerts evaluated in its background thread,
    or (``forward_alerts``) answered to the serving process for its AlertsProcess. At ``nice``
    (TALLY_API_INGEST_NICE): when the host's cores are all busy, the scheduler runs the serving
    process's small requests before this child's batch work."""
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
    queue = evaluator(engine, catalog).queue
    queue.background = True
    if forward_alerts:
        queue.forward = lambda account_ids, at: _observed.append((account_ids, at))
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


def _call(batches: list[tuple[int, bytes, datetime]]) -> tuple[list[tuple[int, bytes, dict | None]], list]:
    """In the child, one call of the serving process: the answers of ``_record_group`` and the accounts
    the batches recorded, ``[(account ids, recorded at)]``, for its AlertsProcess."""
    try:
        return _record_group(batches), _observed[:]
    finally:
        _observed.clear()


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
                 concurrency: int = 1, grace_hours: int = 48, nice: int = 0, group: int = 4,
                 observer: Callable[[list], None] | None = None):
        """``observer``: given what each call's batches recorded (``[(account ids, recorded at)]``;
        ``AlertsProcess.submit``), the children then evaluate no alerts themselves."""
        self._args = (database_url, str(catalog_path) if catalog_path else None, pool_size, concurrency, grace_hours,
                      nice, observer is not None)
        self._observer = observer
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
                call = pool.submit(_call, [t[:3] for t in taken])
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
            results, observed = done.result()
            for a, r in zip(answers, results):
                if not a.done():
                    a.set_result(r)
            if observed and self._observer is not None:
                try:
                    self._observer(observed)
                except Exception:  # noqa: BLE001 - the batches are recorded; their next batches evaluate them
                    log.exception("handing %d recorded account sets to the alerts process failed", len(observed))
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
        """At shutdown (uvicorn has answered every request by then)."""
        _stop(self._pool)


class AlertsProcess:
    """The alert evaluations of one serving process's batch recorders, in one process of its own at their
    niceness (``services.alerts.EvaluationQueue`` in the background, fed by ``submit``), so that N
    recorders evaluate each busy account once, not N times. One call at a time goes to it; the accounts
    that arrive meanwhile are gathered here (per period, the latest recording time) and go with the
    next, so a stuck process holds one call, never an unbounded queue. A process that dies is replaced
    at the next call; what it held is evaluated with the accounts' next batches."""

    def __init__(self, database_url: str, catalog_path: Path | None, nice: int = 0):
        self._args = (database_url, str(catalog_path) if catalog_path else None, nice)
        self._pool = self._new_pool()
        self._pending: dict[Period, tuple[set[str], datetime]] = {}  # (accounts, latest recorded at) per period
        self._in_flight = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_alerts_start,
                                   initargs=self._args)

    def start(self) -> None:
        """At the server's start-up, without waiting (its imports take seconds on a busy host)."""
        self._pool.submit(_alerts_ready)

    def submit(self, observed: list[tuple[tuple[str, ...], datetime]]) -> None:
        """(In the event loop.) Evaluate these recorded accounts there; returns at once."""
        self._loop = asyncio.get_running_loop()
        for account_ids, at in observed:
            gather_by_period(self._pending, account_ids, at)
        if not self._in_flight:
            self._send()

    def _send(self) -> None:
        observed = [(tuple(ids), at) for ids, at in self._pending.values()]
        self._pending = {}
        for _ in range(2):
            pool = self._pool
            try:
                call = pool.submit(_alerts_observe, observed)
            except BrokenProcessPool:
                log.error("the alerts process died; starting a new one")
                self._pool = self._new_pool()
                continue
            self._in_flight = True
            call.add_done_callback(self._done)
            return

    def _done(self, done) -> None:
        """(In the pool's thread.) Back to the event loop; none at shutdown, when the loop has closed."""
        try:
            self._loop.call_soon_threadsafe(self._answered, done)
        except RuntimeError:
            pass

    def _answered(self, done) -> None:
        self._in_flight = False
        err = None if done.cancelled() else done.exception()
        if err is not None and not isinstance(err, BrokenProcessPool):
            log.error("handing accounts to the alerts process failed", exc_info=err)
        if self._pending:
            self._send()

    def settle(self, timeout: float = 30.0) -> int | None:
        """(Not in the event loop; tests.) Wait until everything submitted so far is evaluated: the
        accounts evaluated there since the process started, or None if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._pending or self._in_flight:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return self._pool.submit(_alerts_settle, timeout).result(timeout + 60)

    def close(self) -> None:
        _stop(self._pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's processes without waiting for one that is still starting (its imports take seconds
    on a busy machine)."""
    children = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for child in children:
        child.terminate()


_alerts = None  # in the alerts process: its services.alerts.AlertEvaluator


def _alerts_start(database_url: str, catalog_path: str | None, nice: int) -> None:
    global _alerts
    import os

    if nice:
        os.nice(nice)
    from api.app import api_engine
    from billing.catalog import load_catalog
    from services.alerts import evaluator

    engine = api_engine(database_url, pool_size=ALERTS_POOL_SIZE, max_overflow=ALERTS_MAX_OVERFLOW)
    _alerts = evaluator(engine, load_catalog(Path(catalog_path) if catalog_path else None))
    _alerts.queue.background = True
    gc.collect()
    gc.freeze()


def _alerts_ready() -> bool:
    return _alerts is not None


def _alerts_observe(observed: list[tuple[tuple[str, ...], datetime]]) -> None:
    for account_ids, at in observed:
        _alerts.queue.submit(account_ids, at)


def _alerts_settle(timeout: float) -> int | None:
    return _alerts.queue.evaluated if _alerts.queue.settle(timeout) else None
