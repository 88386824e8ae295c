"""An in-memory view of the month to date of the accounts an API process checks, so that an
entitlement check answers from memory instead of queueing behind batches in Postgres (issue 15).

Why. With batches recorded in processes of their own (api/ingest_process.py), a check still spent
15-26 ms at p99 in its handler while batches arrived at 10,000 events/s, on a machine with 2 cores:
its one query waited for a Postgres backend to be scheduled among the backends copying, merging and
counting the batches, and for its own thread to be scheduled again when the answer came back.
Measured with the same bench, a check answered from this view never waits for Postgres at all.

How it stays current. One task on each serving process's event loop (``start``) re-reads, every
``interval`` (``TALLY_API_ENTITLEMENT_VIEW_MS``, default 500 ms), everything a check reads of every
account checked in the last ``keep`` seconds: the account row, whether a spike paused it, its credit
facts and the period's counters (``repositories.usage.SNAPSHOT_ROWS_SQL``: one query on an async
connection of its own, one row of text per account), and replaces the entries whose text changed. A
task rather than a thread: while Postgres works the loop serves checks, and no thread of the process
holds the interpreter a check needs (a first version in a thread, converting every row into objects,
made the idle p99 three times worse). A check uses an entry read at most ``max_age`` ago (default 5 s);
an older one means the refresher is stuck or Postgres is away, and the check reads Postgres itself as
before (and puts what it read here, so the next check of that account is served from memory).

What a caller sees. A check reflects the usage, pauses, plan changes and credits committed up to the
refresher's last read: at most ``interval`` plus one read ago (about 0.6 s). That is well inside
what a check can promise anyway: a platform checks before an execution and records it after it ran,
seconds later; and whatever slips through past a quota is billed exactly as the close ranks it (a
blocked execution appears at $0), never from this view. An account no view holds (its first check,
or past ``capacity``) is read from Postgres as before.

Accounts rated from the executions table. When an account's month to date depends on the time order of
its executions (``MeteringService.month_to_date``: several terms or catalog versions in the month,
overage billed on several models, blocked token-priced executions), the counters cannot price it. The
view then keeps an exact rating of it (``exact_month``), seeded by the check that rated it and re-done
every ``EXACT_EVERY`` (2 s) beside the refreshes, by ``rate_exact`` (``ExactRater`` in ``tally api``: a process
of its own at the ingest niceness, since the rater's Python would hold the interpreter the checks
need). The check takes the decision from the fresh counters and the charges from that rating; without
one younger than ``EXACT_MAX_AGE`` (15 s) it rates the account itself from Postgres, as before.
What that costs is bounded: an account whose row in the view (counters, account, credit facts, pause)
reads the same as when its last rating began is not rated again (that rating still is its month to
date), and the ratings keep their process busy at most ``EXACT_SHARE`` (10%) of the time: a rating
that took d seconds is followed by the next no sooner than 9 d later, however many accounts need one,
and a rating is used up to 1.5 times that spacing when it exceeds ``EXACT_MAX_AGE``. Without that bound
the ratings ran back to back once a round took longer than ``EXACT_EVERY`` (a round grows with the
held accounts that need one and with their executions), each in every serving process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Callable

from sqlalchemy import Engine

from billing.entitlements import MonthCounter
from billing.periods import Period
from repositories import usage
from repositories.usage import AccountSnapshot
from services.pacing import rest_after

log = logging.getLogger("tally.api.entitlement_view")

MAX_AGE_SECONDS = 5.0  # an entry read longer ago than this is not used (the refresher is stuck)
KEEP_SECONDS = 30.0  # accounts not checked for this long leave the view (their next check reads Postgres)
CAPACITY = 5_000  # accounts per serving process (each refresh reads them all in one query: ~30 ms of Postgres per 1,000)
SWEEP_SECONDS = 30.0  # how often every checked account's terms are warmed (their cache lasts 5 minutes)
EXACT_EVERY = 2.0  # how often the accounts rated from the executions table are rated again in the background
EXACT_MAX_AGE = 15.0  # a background rating older than this is not used (the check rates the account itself)
# ... at most: after a background rating that took d seconds the next starts d * (1 / EXACT_SHARE - 1)
# later at the soonest, so the ratings (their process and their Postgres backend) take at most this
# share of the time of one core, however many accounts they cover; a rating is then used up to
# 1.5 times the longest interval between two ratings' starts when that is more than EXACT_MAX_AGE.
EXACT_SHARE = 0.1


class _Entry:
    """One account: the text last read (``repositories.usage.snapshot_rows``), made into a snapshot the
    first time a check asks for it."""

    __slots__ = ("row", "period", "read_at", "checked_at", "_snapshot")

    def __init__(self, row: tuple | None, period: str, read_at: float, checked_at: float,
                 snapshot: tuple[AccountSnapshot, list[MonthCounter]] | None = None):
        self.row = row
        self.period = period
        self.read_at = read_at  # monotonic instant the read that produced it started
        self.checked_at = checked_at  # monotonic instant of the last check that used it
        self._snapshot = snapshot

    def snapshot(self) -> tuple[AccountSnapshot, list[MonthCounter]]:
        if self._snapshot is None:
            self._snapshot = usage.snapshot_from_row(self.row)
        return self._snapshot


class EntitlementView:
    """The checked accounts' snapshots for the current period, refreshed every ``interval`` seconds.

    ``now``: the service's clock (the period and the credit facts' instant). ``warm(conn, accounts,
    period)``: given checked accounts whose terms may have changed (and, every ``SWEEP_SECONDS``, all
    checked ones), loads what a check needs besides the snapshot (the metering service's terms segments)
    on a connection of the engine, so that checks served from here read nothing."""

    def __init__(self, engine: Engine, interval: float, now: Callable[[], datetime], *,
                 max_age: float = MAX_AGE_SECONDS, keep: float = KEEP_SECONDS, capacity: int = CAPACITY,
                 warm: Callable | None = None, monotonic: Callable[[], float] = time.monotonic,
                 rate_exact: Callable | None = None):
        self.engine = engine
        self.interval = interval
        self.max_age = max(max_age, 2 * interval)
        self.keep = keep
        self.capacity = capacity
        self._now = now
        self._monotonic = monotonic
        self._warm = warm
        # rate_exact(account_ids, period) -> {account id: (included, charges)}, awaitable: the month to
        # date of accounts whose money depends on the time order of their executions (see exact_month)
        self._rate_exact = rate_exact
        # account -> (included, charges, read_at, period, the view's row when its last background rating
        # began: None when no background rating began from a row read by the refresher)
        self._exact: dict[str, tuple[int, object, float, str, tuple | None]] = {}
        self._exact_took = 0.0  # seconds the last background rating took
        self._exact_next = 0.0  # monotonic instant before which no background rating starts
        self.exact_ratings = 0  # background ratings done
        self.exact_unchanged = 0  # accounts not rated again because nothing of theirs changed since their last rating
        self._want_exact: set[str] = set()
        self._rating: asyncio.Task | None = None  # the background rating in flight
        self._entries: dict[str, _Entry] = {}
        self._swept = monotonic()
        self._task: asyncio.Task | None = None
        self._failing = False
        self.refreshes = 0  # completed refreshes
        self.answered = 0  # checks answered from memory
        self.needed_database = 0  # checks of held accounts whose month to date needs the executions table

    # ---- the check's side (no I/O, no lock) ---------------------------------------------------------
    def get(self, platform_id: int, account_id: str, period: Period) -> tuple[AccountSnapshot, list[MonthCounter]] | None:
        """The account's snapshot and counters for ``period`` if this view holds a fresh one for this
        platform's account; else None (read Postgres)."""
        entry = self._entries.get(account_id)
        if entry is None or entry.period != str(period):
            return None
        now = self._monotonic()
        if now - entry.read_at > self.max_age:
            return None
        held = entry.snapshot()
        if held[0].platform_id != platform_id:
            return None
        entry.checked_at = now
        return held

    def mark(self) -> float:
        """The instant a read starts, for ``put``."""
        return self._monotonic()

    def put(self, account: AccountSnapshot, counters: list[MonthCounter], period: Period, read_at: float) -> None:
        """What a check read from Postgres itself (started at monotonic ``read_at``): the next checks
        of the account are served from here. Never replaces a newer read."""
        entry = self._entries.get(account.id)
        if entry is not None and entry.read_at >= read_at:
            return
        if entry is None and len(self._entries) >= self.capacity:
            return
        self._entries[account.id] = _Entry(None, str(period), read_at, self._monotonic(), (account, counters))

    def __len__(self) -> int:
        return len(self._entries)

    def exact_month(self, account_id: str, period: Period) -> tuple[int, object] | None:
        """(included, charges) of an account whose month to date must be rated from the executions table,
        as rated in the background at most ``max_age`` ago; None (and the account is rated from now on)
        when there is none. The check takes the decision from the view's fresh counters, and the charges
        from this rating."""
        if self._rate_exact is None:
            return None
        known = self._exact.get(account_id)
        if known is None or known[3] != str(period) or self._monotonic() - known[2] > self.exact_max_age():
            self._want_exact.add(account_id)
            return None
        return known[0], known[1]

    def exact_max_age(self) -> float:
        """How old a background rating may be: EXACT_MAX_AGE, or 1.5 times the longest time between
        two ratings' starts when the ratings' share (``EXACT_SHARE``) spaces them further apart."""
        return max(EXACT_MAX_AGE, 1.5 * (2 * self._exact_took + self._exact_rest()))

    def _exact_rest(self) -> float:
        """How long the background ratings rest after the last one (its share of the time)."""
        return rest_after(self._exact_took, EXACT_SHARE)

    # ---- the refresher's side ------------------------------------------------------------------------
    def _begin(self):
        """Drop the accounts not checked for ``keep`` seconds; (started, ids, at, period) of this read."""
        started = self._monotonic()
        for account_id, entry in list(self._entries.items()):
            if started - entry.checked_at > self.keep:
                self._entries.pop(account_id, None)
        at = self._now()
        return started, list(self._entries), at, Period.of(at)

    def _apply(self, rows: list[tuple[str, str]], ids: list[str], started: float, period: Period) -> list[AccountSnapshot]:
        """Replace the entries read; returns the checked accounts whose own fields changed (their terms
        may have), made into snapshots now, plus every checked account once per SWEEP_SECONDS."""
        found = dict(rows)
        key = str(period)
        changed: list[AccountSnapshot] = []
        for account_id in ids:
            entry = self._entries.get(account_id)
            if entry is None or entry.read_at > started:  # dropped, or a check read it after this read began
                continue
            text = found.get(account_id)
            if text is None:  # the account is gone
                self._entries.pop(account_id, None)
                continue
            row = (account_id, text)
            if row == entry.row and entry.period == key:  # unchanged: keep its snapshot
                entry.read_at = started
            else:
                fresh = _Entry(row, key, started, entry.checked_at)
                if entry._snapshot is not None and (entry.row is None or entry.period != key or
                                                    usage.account_part(row) != usage.account_part(entry.row)):
                    changed.append(fresh.snapshot()[0])
                self._entries[account_id] = fresh
        if started - self._swept > SWEEP_SECONDS:
            self._swept = started
            changed = [e.snapshot()[0] for e in list(self._entries.values()) if e._snapshot is not None]
        self.refreshes += 1
        return changed

    def refresh(self) -> int:
        """Re-read every account checked in the last ``keep`` seconds (here, on a connection of the
        engine); returns how many were read."""
        started, ids, at, period = self._begin()
        if not ids:
            return 0
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            rows = usage.snapshot_rows(conn, ids, period, at)
            changed = self._apply(rows, ids, started, period)
            if changed and self._warm is not None:
                self._warm(conn, changed, period)
        return len(rows)

    async def refresh_async(self, conn) -> int:
        """``refresh`` on the serving process's event loop, on an async psycopg connection: the loop
        serves checks while Postgres works, and no thread of the process competes with them for the
        interpreter (converting the rows is one short step; warming, when due, runs in a thread)."""
        started, ids, at, period = self._begin()
        if not ids:
            return 0
        cur = await conn.execute(usage.SNAPSHOT_ROWS_SQL, usage.snapshot_rows_params(ids, period, at))
        rows = await cur.fetchall()
        changed = self._apply(rows, ids, started, period)
        if changed and self._warm is not None:
            await asyncio.to_thread(self._warm_on_engine, changed, period)
        if self._rate_exact is not None and self._want_exact and (self._rating is None or self._rating.done()):
            # beside the refreshes, not in their way: a rating of many accounts takes seconds
            self._rating = asyncio.get_running_loop().create_task(self._rate_exact_logged(period))
        return len(rows)

    async def _rate_exact_logged(self, period: Period) -> None:
        try:
            await self.rate_exact_due(period)
        except Exception as exc:  # noqa: BLE001 - the checks rate those accounts themselves meanwhile
            log.warning("entitlement view: exact rating failed: %s", str(exc).strip().splitlines()[:1])

    def put_exact(self, account_id: str, period: Period, included: int, charges, read_at: float) -> None:
        """An exact month to date a check just rated from the executions table itself (started at
        ``read_at``): the view's next checks use it, and the background rates the account from now on."""
        if self._rate_exact is None:
            return
        known = self._exact.get(account_id)
        if known is None or known[3] != str(period) or known[2] < read_at:
            # the row the last background rating began with still tells whether anything changed since
            began = known[4] if known is not None and known[3] == str(period) else None
            self._exact[account_id] = (included, charges, read_at, str(period), began)
        self._want_exact.add(account_id)

    async def rate_exact_due(self, period: Period) -> int:
        """Rate again, in one call of ``rate_exact`` (a process of its own in ``tally api``), the held
        accounts that need the executions table, were rated more than ``EXACT_EVERY`` ago and changed
        since (their row in this view differs from the one their last rating began with); not before
        the last rating's share of the time allows (``EXACT_SHARE``). Returns how many were rated."""
        if self._rate_exact is None or not self._want_exact:
            return 0
        started = self._monotonic()
        if started < self._exact_next:
            return 0
        for account_id in list(self._want_exact):
            if account_id not in self._entries:
                self._want_exact.discard(account_id)
                self._exact.pop(account_id, None)
        key = str(period)
        due = []
        for a in sorted(self._want_exact):
            known, entry = self._exact.get(a), self._entries[a]
            if known is not None and known[3] == key and started - known[2] <= EXACT_EVERY:
                continue
            if (known is not None and known[3] == key and entry.row is not None and entry.period == key
                    and known[4] == entry.row):
                # Nothing of the account changed since its last rating began (its counters, row, credit
                # facts and pause read identical): that rating is the month to date as of this entry's read.
                self._exact[a] = (known[0], known[1], max(known[2], entry.read_at), key, known[4])
                self.exact_unchanged += 1
                continue
            due.append(a)
        if not due:
            return 0
        rows = {a: self._entries[a].row for a in due}
        try:
            rated = await self._rate_exact(due, period)
        finally:
            self._exact_took = self._monotonic() - started
            self._exact_next = self._monotonic() + self._exact_rest()
        self.exact_ratings += 1
        for account_id in due:
            if account_id in rated:
                included, charges = rated[account_id]
                self._exact[account_id] = (included, charges, started, key, rows[account_id])
            else:  # not billed in the period any more: the check reads Postgres
                self._exact.pop(account_id, None)
        return len(due)

    def _warm_on_engine(self, accounts: list[AccountSnapshot], period: Period) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            self._warm(conn, accounts, period)

    async def start(self) -> None:
        """Start refreshing on the running event loop (the API's start-up)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="entitlement-view")

    async def close(self) -> None:
        if self._rating is not None:
            self._rating.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        import psycopg

        from models.db import libpq_url

        dsn = libpq_url(self.engine.url.render_as_string(hide_password=False))
        conn = None
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
                    await self.refresh_async(conn)
                except Exception as exc:  # noqa: BLE001 - Postgres away: checks read it themselves meanwhile
                    if not self._failing:
                        log.warning("entitlement view: refresh failed (checks read Postgres until it works "
                                    "again): %s", str(exc).strip().splitlines()[:1])
                    self._failing = True
                    if conn is not None:
                        await conn.close()
                        conn = None
                else:
                    if self._failing:
                        log.info("entitlement view: refreshing again")
                    self._failing = False
        finally:
            if conn is not None:
                await conn.close()


class ExactRater:
    """``rate_exact`` for ``tally api``: the month to date of the given accounts rated from the
    executions table like the close (``activities.pricing.rate_accounts``) in a process of its own at
    ``nice``, so that the rater's Python never holds the interpreter the serving process's checks need."""

    def __init__(self, database_url: str, catalog_path: str | None, nice: int = 10):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._new = lambda: ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_exact_start, initargs=(database_url, catalog_path, nice))
        self._pool = self._new()

    async def __call__(self, account_ids: list[str], period: Period) -> dict:
        from concurrent.futures.process import BrokenProcessPool

        pool = self._pool
        try:
            return await asyncio.wrap_future(pool.submit(_exact_rate, account_ids, str(period)))
        except BrokenProcessPool:  # the process died (killed, out of memory): a new one for the next call
            if self._pool is pool:
                self._pool = self._new()
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_exact_state: tuple | None = None  # in the rater's process: (engine, catalog)
# Connections of a serving process's view beside its pool (docs/deployment.md counts them): the
# refresher's one async connection, and the exact rater's process's pool.
REFRESHER_CONNECTIONS = 1
EXACT_POOL_SIZE, EXACT_MAX_OVERFLOW = 1, 1


def _exact_start(database_url: str, catalog_path: str | None, nice: int) -> None:
    global _exact_state
    import os
    from pathlib import Path

    if nice:
        os.nice(nice)
    from billing.catalog import load_catalog
    from models.db import get_engine

    _exact_state = (get_engine(database_url, pool_size=EXACT_POOL_SIZE, max_overflow=EXACT_MAX_OVERFLOW),
                    load_catalog(Path(catalog_path) if catalog_path else None))


def _exact_rate(account_ids: list[str], period_text: str) -> dict:
    engine, catalog = _exact_state
    return exact_months(engine, catalog, account_ids, Period.parse(period_text))


def exact_months(engine: Engine, catalog, account_ids: list[str], period: Period) -> dict:
    """{account: (included, charges)} of the accounts billed in the period, rated from the executions
    table in chunks of 100 exactly as the close rates them (what ``month_to_date`` reads in the check)."""
    from activities import pricing

    out = {}
    for i in range(0, len(account_ids), 100):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for account_id, rating in pricing.rate_accounts(conn, catalog, period, account_ids[i:i + 100]).items():
                out[account_id] = (rating.included, rating.rated.total)
    return out


__all__ = ["EntitlementView", "ExactRater", "exact_months", "MAX_AGE_SECONDS", "KEEP_SECONDS", "CAPACITY", "SWEEP_SECONDS",
           "EXACT_EVERY"]
