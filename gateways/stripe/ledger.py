"""THE recorded Stripe call: perform step S of subject X at most once in Stripe, however often it is retried.

``StripeLedger(db, clock).perform(subject=..., step=..., identity=..., call=..., lookup=...)``:

- The idempotency key comes from business identity, never from a Temporal run:
  ``tally:<identity>:<step>:a<attempt>`` (e.g. ``tally:ACME:2026-10:create:a1``, ``tally:ACME:customer:a1``).
- The key is recorded in ``stripe_requests`` (state ``started``) and committed BEFORE ``call(key)`` runs.
- Outcome unknown (timeout, dropped response, a crash, a 409 while the first request still runs) and the
  key younger than ``KEY_TRUST_WINDOW``: the same key is used again, so Stripe replays what it committed.
- A failure saved under the key (a 5xx or a rejection), or a key Stripe may have forgotten (older than
  the window; Stripe prunes keys after 24 h): ``lookup()`` asks Stripe for the object first (by metadata);
  only if it is not there is the next attempt's key minted and recorded.
- Success records the object id (later performs return it without calling Stripe); ``StripeFailed`` and
  ``StripeRejected`` are recorded ``failed`` with their status and re-raised; ``StripeUnreachable`` leaves
  the record ``started`` and is re-raised. ``already_done(err)`` may turn a specific rejection into
  success (e.g. "this meter event identifier exists": already reported).

It knows nothing of invoices or any other resource. Callers serialise performs of one subject (the
invoice push holds an advisory lock); two processes performing the same step at once are not its job.

``perform_batch(steps, workers=N)`` is the same call for many steps at once (meter events: thousands an
hour), with the same rules step by step and its bookkeeping batched: the latest records of all steps in
one statement, the keys of the new steps recorded and committed in one statement before any call, the
calls on ``workers`` threads, every outcome in one statement. A step whose record needs a look-up (a
saved failure, an old key) takes ``perform``'s own path (through the Connection's engine when ``db``
is a Connection, which threads must not share). So a batch costs three commits however many steps it holds,
which is what lets the invoice push record a chunk's steps stage by stage (``activities.push``).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator, Sequence

from sqlalchemy import Connection, Engine

from gateways.stripe.core import StripeError, StripeFailed, StripeRejected, StripeUnreachable
from repositories import stripe_requests as requests_repo

# Stripe keeps idempotency keys for at least 24 h; stop trusting ours a little before that.
KEY_TRUST_WINDOW = timedelta(hours=23)


def idempotency_key(identity: str, step: str, attempt: int) -> str:
    return f"tally:{identity}:{step}:a{attempt}"


@dataclass
class Step:
    """One step of ``perform_batch``: what ``perform`` takes."""

    subject: str
    step: str
    identity: str
    call: Callable[[str], str]
    lookup: Callable[[], str | None]
    already_done: Callable[[StripeRejected], str | None] | None = None


@dataclass
class StepOutcome:
    """``object_id`` on success (done now, before, or found), else ``error`` (the StripeError raised)."""

    object_id: str | None = None
    error: StripeError | None = None


class StripeLedger:
    """One Stripe step under a recorded key. ``db`` is an Engine (a transaction per record) or a
    Connection outside any transaction (the caller's, e.g. the one holding its advisory lock)."""

    def __init__(self, db: Engine | Connection, clock: Callable[[], datetime] | None = None, *,
                 trust_window: timedelta = KEY_TRUST_WINDOW):
        self.db = db
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.trust_window = trust_window

    def perform(self, *, subject: str, step: str, identity: str, call: Callable[[str], str],
                lookup: Callable[[], str | None],
                already_done: Callable[[StripeRejected], str | None] | None = None) -> str:
        """Run ``call(key)`` (it returns the Stripe object id) unless the step already succeeded;
        return the object id. ``lookup()`` finds the object in Stripe (None when it is not there);
        ``already_done(err)`` returns the object id when a rejection means "already done"."""
        with self._transaction() as conn:
            rec = requests_repo.latest_stripe_request(conn, subject, step)
        if rec is not None and rec.state == "succeeded":
            return rec.stripe_object_id
        if rec is not None and rec.state == "started" and self.clock() - rec.started_at < self.trust_window:
            # Outcome unknown (timeout, dropped response, crash): the same key replays a commit.
            key = rec.idempotency_key
        else:
            if rec is not None:
                # A failure saved under the old key, or a key Stripe may have forgotten: look first.
                found = lookup()
                if found:
                    self._finish(rec.idempotency_key, state="succeeded", stripe_object_id=found,
                                 error=(rec.error or "") + " [found in Stripe by look-up]")
                    return found
            attempt = rec.attempt + 1 if rec is not None else 1
            key = idempotency_key(identity, step, attempt)
            with self._transaction() as conn:
                requests_repo.record_stripe_request(conn, key=key, subject=subject, step=step, attempt=attempt)
        try:
            object_id = call(key)
        except StripeUnreachable:
            raise  # stays 'started': the next try reuses the key
        except StripeRejected as err:
            done = already_done(err) if already_done is not None else None
            if done is not None:
                self._finish(key, state="succeeded", stripe_object_id=done, http_status=err.http_status,
                             error=f"{err} [already done]")
                return done
            self._finish(key, state="failed", http_status=err.http_status, error=str(err))
            raise
        except StripeFailed as err:
            self._finish(key, state="failed", http_status=err.http_status, error=str(err))
            raise
        self._finish(key, state="succeeded", stripe_object_id=object_id)
        return object_id

    def perform_batch(self, steps: Sequence[Step], *, workers: int = 8,
                      on_progress: Callable[[int], None] | None = None) -> list[StepOutcome]:
        """``perform`` for every step (distinct subject and step each), ``workers`` calls at once;
        ``on_progress(steps done)`` about once a second. Each step's outcome, in order; a StripeError
        is returned, not raised. Recorded outcomes are written even when something else fails."""
        outcomes = [StepOutcome() for _ in steps]
        with self._transaction() as conn:
            latest = requests_repo.latest_stripe_requests(conn, [(s.subject, s.step) for s in steps])
        keys: dict[int, str] = {}
        fresh: list[dict] = []
        slow: list[int] = []
        now = self.clock()
        for i, s in enumerate(steps):
            rec = latest.get((s.subject, s.step))
            if rec is None:
                keys[i] = idempotency_key(s.identity, s.step, 1)
                fresh.append(dict(key=keys[i], subject=s.subject, step=s.step, attempt=1))
            elif rec.state == "succeeded":
                outcomes[i].object_id = rec.stripe_object_id
            elif rec.state == "started" and now - rec.started_at < self.trust_window:
                keys[i] = rec.idempotency_key  # outcome unknown: the same key replays a commit
            else:
                slow.append(i)  # a look-up first: perform's own path
        with self._transaction() as conn:
            requests_repo.record_stripe_requests(conn, fresh)
        finished: list[dict] = []
        lock = threading.Lock()
        # perform's own path commits its records as it goes: on the engine's pooled connections when
        # ours is a Connection (the caller's, which threads must not share)
        own = self if isinstance(self.db, Engine) else StripeLedger(self.db.engine, self.clock,
                                                                     trust_window=self.trust_window)

        def run(i: int) -> None:
            s = steps[i]
            if i not in keys:
                try:
                    outcomes[i].object_id = own.perform(subject=s.subject, step=s.step, identity=s.identity,
                                                         call=s.call, lookup=s.lookup, already_done=s.already_done)
                except StripeError as err:
                    outcomes[i].error = err
                return
            key, done = keys[i], None
            try:
                outcomes[i].object_id = s.call(key)
                done = dict(key=key, state="succeeded", stripe_object_id=outcomes[i].object_id)
            except StripeUnreachable as err:
                outcomes[i].error = err  # stays 'started': the next try reuses the key
            except StripeRejected as err:
                found = s.already_done(err) if s.already_done is not None else None
                if found is not None:
                    outcomes[i].object_id = found
                    done = dict(key=key, state="succeeded", stripe_object_id=found, http_status=err.http_status,
                                error=f"{err} [already done]")
                else:
                    outcomes[i].error = err
                    done = dict(key=key, state="failed", http_status=err.http_status, error=str(err))
            except StripeFailed as err:
                outcomes[i].error = err
                done = dict(key=key, state="failed", http_status=err.http_status, error=str(err))
            if done is not None:
                with lock:
                    finished.append(done)

        todo = deque(i for i in range(len(steps)) if i in keys or i in slow)
        left = [len(todo)]

        def drain() -> None:  # each of ``workers`` threads takes the next step until none is left
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.popleft()
                try:
                    run(i)
                finally:
                    with lock:
                        left[0] -= 1

        try:
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stripe-batch") as pool:
                pending = {pool.submit(drain) for _ in range(min(max(1, workers), len(todo)))}
                while pending:
                    done_now, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for fut in done_now:
                        fut.result()  # anything but a StripeError is a bug: raise it (after the finally)
                    if on_progress is not None:
                        on_progress(len(steps) - left[0])
        finally:
            with self._transaction() as conn:
                requests_repo.finish_stripe_requests(conn, finished)
        return outcomes

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        if isinstance(self.db, Engine):
            with self.db.begin() as conn:
                yield conn
        else:
            with self.db.begin():
                yield self.db

    def _finish(self, key: str, **outcome) -> None:
        with self._transaction() as conn:
            requests_repo.finish_stripe_request(conn, key, **outcome)
