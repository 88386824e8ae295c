"""Activities of usage reporting to Stripe Billing Meters. Each may run twice (retries, a worker killed
mid-run) and is idempotent by construction; inputs are hours and account-id ranges, outputs counts.

Reporting one hour for a range of accounts (``report_usage``, the ``MeterReporter``):
1. load the range's usage in the hour (``executions``, aggregated by the database), what was reported
   before (``meter_reports``) and the accounts' Stripe customers, in one transaction;
2. decide per account and meter (``billing.meters.decide_report``): nothing, the next revision with the
   difference, or an unsettled revision again, unchanged;
3. record the new revisions ('sending') in one statement, create missing Stripe customers (the same
   recorded call the invoice push uses), then send every event through THE recorded Stripe call, in
   its batched form (``StripeLedger.perform_batch``: subject ``usage:<account>:m<meter>:<hour>``, step
   ``r<revision>``; keys recorded in one statement before any call, outcomes in one after), at most
   ``stripe_concurrency`` at once and under the worker's meter-event pace;
4. settle the revisions in one statement.
A repeated identifier answered with a 400 is read as "already reported" (``already_done``). A revision
whose key Stripe may have forgotten, or under which a failure was saved, is looked up in Stripe's
summary for that customer and hour before anything is sent again. One account's failure never holds
up the others: transient trouble fails the activity only after every other event was sent, so Temporal
retries it (what is settled is skipped), and from ``ReportBudget.GIVE_UP_AT`` on the failures are
returned and the hour stays ``partial`` for the next run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.push import ensure_customer
from billing.meters import (
    HOUR,
    SCAN_MARGIN,
    MeterError,
    OverReported,
    Send,
    account_identity,
    chunk_size_for,
    decide_report,
    explain_drift,
    format_hour,
    hours_between,
    identifier,
    oldest_reportable_hour,
    parse_hour,
    plan_hours,
    quantities_by_meter,
    report_subject,
    why_not_reportable,
)
from billing.periods import Period, PeriodError
from gateways.stripe import (
    MeterEventDuplicate,
    MeterEventTooOld,
    StripeError,
    StripeGateway,
    StripeRejected,
)
from gateways.stripe.ledger import Step, StripeLedger
from models.failures import Failure, ReportBudget
from models.schemas import (
    MAX_LISTED,
    AccountRange,
    BeginUsageHourInput,
    ChunkPage,
    HourError,
    ListChunksInput,
    ListUsageChunksInput,
    MeterDriftLine,
    MeterEventFailure,
    ReconcileCheck,
    ReconcileChunkInput,
    ReconcileChunkResult,
    UsageChunkInput,
    UsageChunkResult,
    UsageHourCheck,
    UsageHourResult,
    UsagePlan,
    UsagePlanInput,
)
from repositories import meter_reports as repo

CUSTOMER_CHECK_SECONDS = 3600.0  # a saved customer's metadata is checked again after this long (per worker)
PASSES = 3  # a settled resend may leave a further difference to send: at most this many rounds a run


def _hour(text: str) -> datetime:
    try:
        return parse_hour(text)
    except MeterError as err:
        raise ApplicationError(str(err), type=Failure.HOUR_NOT_REPORTABLE, non_retryable=True) from err


def _page(chunks: list[tuple[str | None, str, int]], cursor: str | None) -> ChunkPage:
    return ChunkPage(chunks=[AccountRange(after=a, upto=u, count=n) for a, u, n in chunks], next_cursor=cursor)


def _no_meters() -> ApplicationError:
    return ApplicationError("no Stripe meters are recorded yet: run `tally meters apply`",
                            type=Failure.METERS_NOT_SET_UP, non_retryable=True)


@dataclass
class _Event:
    """One revision to send for an account, meter and hour."""

    account_id: str
    meter: object  # a ``meters`` row
    hour: datetime
    send: Send
    customer_id: str | None = None
    outcome: str = ""  # sent | already | failed | transient
    error: str | None = None
    called: bool = False  # a request was sent now (not: recorded before, or found by look-up)
    duplicate: bool = False  # Stripe refused the identifier: it was reported before
    calls: int = 0  # HTTP requests to Stripe for it (look-ups and retries included)

    @property
    def ident(self) -> str:
        return identifier(self.account_id, self.meter.id, self.hour, self.send.revision)

    def row(self) -> dict:
        return dict(account_id=self.account_id, meter_id=self.meter.id, hour=self.hour,
                    revision=self.send.revision, quantity=self.send.quantity, identifier=self.ident)


@dataclass
class _Tally:
    result: UsageChunkResult = field(default_factory=UsageChunkResult)
    transient: list[_Event] = field(default_factory=list)  # failed for now; the same revision is sent again

    def fail(self, account_id: str, meter: str, hour: datetime, error: str) -> None:
        self.result.failed_count += 1
        if len(self.result.failed) < MAX_LISTED:
            self.result.failed.append(MeterEventFailure(account_id=account_id, meter=meter, hour=format_hour(hour),
                                                        error=error))


class MeterReporter:
    """Reports one hour of a range of accounts (see the module docstring)."""

    def __init__(self, engine: Engine, gateway: StripeGateway, clock: Callable[[], datetime], concurrency: int,
                 heartbeat: Callable[[int], None] | None = None):
        self.engine = engine
        self.gateway = gateway
        self.clock = clock
        self.concurrency = max(1, concurrency)
        self.heartbeat = heartbeat or (lambda _n: None)

    def report(self, hour: datetime, after: str | None, upto: str, *, give_up: bool) -> UsageChunkResult:
        with self.engine.begin() as conn:
            meters = {m.key: m for m in repo.all_meters(conn)}
        if not meters:
            raise _no_meters()
        tally = _Tally()
        seen_accounts: set[str] = set()
        only: set[tuple[str, int]] | None = None  # after the first pass: the pairs a resend just settled
        for _ in range(PASSES):
            events, customers = self._decide(hour, after, upto, meters, tally, only=only, seen=seen_accounts)
            if not events:
                break
            self._send(events, customers, tally)
            only = {(e.account_id, e.meter.id) for e in events if e.send.resend and e.outcome in ("sent", "already")}
            if not only:
                break  # nothing settled that could leave a further difference
        tally.result.accounts = len(seen_accounts)
        if tally.transient and not give_up:
            raise ApplicationError(
                f"{len(tally.transient)} meter event(s) not sent yet, will retry: "
                + "; ".join(f"{e.account_id} {e.meter.key}: {e.error}" for e in tally.transient[:5]),
                type=Failure.STRIPE_TRANSIENT)
        for e in tally.transient:  # the last attempts: left unsettled for the next run, and listed
            tally.fail(e.account_id, e.meter.key, e.hour, e.error or "no answer from Stripe")
        return tally.result

    # ---- load and decide ---------------------------------------------------------------------------------
    def _decide(self, hour, after, upto, meters, tally: _Tally, *, only: set[tuple[str, int]] | None,
                seen: set[str]):
        with self.engine.begin() as conn:
            usage = repo.hour_usage(conn, hour, after, upto)
            revisions = repo.revisions_for(conn, hour, after, upto)
            customers = repo.customers_of(conn, {u.account_id for u in usage})
        events: list[_Event] = []
        for (account_id, key), truth in sorted(quantities_by_meter(usage).items()):
            seen.add(account_id)
            meter = meters.get(key)
            if only is not None and (meter is None or (account_id, meter.id) not in only):
                continue
            if meter is None:
                tally.fail(account_id, key, hour, f"no Stripe meter for {key}: run `tally meters apply`")
                continue
            decision = decide_report(truth, revisions.get((account_id, meter.id), []))
            if isinstance(decision, OverReported):
                tally.fail(account_id, key, hour, f"reported {decision.reported} but the executions hold "
                                                  f"{decision.truth}: look before sending anything")
                continue
            if decision is not None:
                events.append(_Event(account_id, meter, hour, decision))
        return events, customers

    # ---- send ---------------------------------------------------------------------------------------------
    def _send(self, events: list[_Event], customers: dict, tally: _Tally) -> None:
        fresh = [e.row() for e in events if not e.send.resend]
        with self.engine.begin() as conn:
            repo.start_revisions(conn, fresh)
        missing = sorted({e.account_id for e in events if customers.get(e.account_id, (None, None))[0] is None})
        refused = self._check_customers(sorted({e.account_id for e in events} - set(missing)), customers, tally)
        refused.update(self._ensure_customers(missing, customers, tally))
        for e in events:
            e.customer_id = customers.get(e.account_id, (None, None))[0]
            if e.customer_id is None:
                e.outcome, e.error = refused[e.account_id]
        ready = [e for e in events if e.customer_id is not None]
        outcomes = StripeLedger(self.engine, self.clock).perform_batch(
            [self._step(e) for e in ready], workers=self.concurrency, on_progress=self.heartbeat)
        for e, o in zip(ready, outcomes):
            if o.error is None:
                e.outcome = "already" if e.duplicate or not e.called else "sent"
            elif isinstance(o.error, MeterEventTooOld):
                e.outcome, e.error = "failed", f"past Stripe's 35-day window: {o.error}"
            elif isinstance(o.error, StripeRejected):
                e.outcome, e.error = "failed", str(o.error)
            else:  # failed (5xx) or no answer: the same revision is sent again later
                e.outcome, e.error = "transient", str(o.error)
        for e in events:
            tally.result.stripe_calls += e.calls
            if e.outcome == "sent":
                tally.result.events += 1
            elif e.outcome == "already":
                tally.result.already += 1
            elif e.outcome == "transient":
                tally.transient.append(e)
            else:
                tally.fail(e.account_id, e.meter.key, e.hour, e.error or "refused")
        with self.engine.begin() as conn:
            repo.settle_revisions(conn, [
                {**e.row(), "state": "reported" if e.outcome in ("sent", "already") else
                 ("failed" if e.outcome == "failed" else "sending"), "error": e.error}
                for e in events])

    def _check_customers(self, account_ids: list[str], customers: dict, tally: _Tally) -> dict:
        """The saved customer of each account must still name it in Stripe (checked at most once per
        ``CUSTOMER_CHECK_SECONDS`` per worker; issue 14). A mismatch drops the customer from ``customers``
        and fails the account's events; returns account -> (outcome, error) for those."""
        failed: dict[str, tuple[str, str]] = {}

        def one(account_id: str) -> int:
            before = self.gateway.thread_calls()
            try:
                self.gateway.customers.check_owner(customers[account_id][0], account_id,
                                                   max_age=CUSTOMER_CHECK_SECONDS)
            except StripeError as err:
                failed[account_id] = ("failed" if isinstance(err, StripeRejected) else "transient", str(err))
                customers[account_id] = (None, customers[account_id][1])
            return self.gateway.thread_calls() - before

        if account_ids:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="stripe-customers") as pool:
                tally.result.stripe_calls += sum(pool.map(one, account_ids))
        return failed

    def _ensure_customers(self, account_ids: list[str], customers: dict, tally: _Tally) -> dict:
        """A Stripe customer for each account that has none yet (the invoice push's recorded call, so
        the push finds it later). Fills ``customers``; returns account -> (outcome, error) for those that
        could not get one."""
        failed: dict[str, tuple[str, str]] = {}

        def one(account_id: str) -> tuple[int, int]:
            before = self.gateway.thread_calls()
            try:
                cid = ensure_customer(self.engine, self.gateway, self.clock, account_id,
                                      customers.get(account_id, (None, None))[1])
                customers[account_id] = (cid, None)
            except StripeError as err:
                failed[account_id] = ("failed" if isinstance(err, StripeRejected) else "transient",
                                      f"no Stripe customer yet: {err}")
            calls = self.gateway.thread_calls() - before
            return (1 if calls and account_id not in failed else 0), calls

        if account_ids:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="stripe-customers") as pool:
                for made, calls in pool.map(one, account_ids):
                    tally.result.customers_created += made
                    tally.result.stripe_calls += calls
        return failed

    def _step(self, e: _Event) -> Step:
        start = int(e.hour.timestamp())

        def counted(fn):
            def wrapper(*args):
                before = self.gateway.thread_calls()
                try:
                    return fn(*args)
                finally:
                    e.calls += self.gateway.thread_calls() - before
            return wrapper

        @counted
        def call(key: str) -> str:
            e.called = True
            return self.gateway.meters.report(event_name=e.meter.event_name, customer_id=e.customer_id,
                                              value=e.send.quantity, identifier=e.ident, timestamp=start,
                                              idempotency_key=key)

        @counted
        def lookup() -> str | None:
            # Stripe keeps no meter event we could fetch: its summary for the customer and hour holds
            # this revision when it holds everything reported before plus this value.
            held = self.gateway.meters.summary(e.meter.stripe_meter_id, e.customer_id, start, start + 3600)
            return e.ident if held >= e.send.reported_before + e.send.quantity else None

        def already_done(err: StripeRejected) -> str | None:
            if isinstance(err, MeterEventDuplicate):
                e.duplicate = True
                return e.ident
            return None

        return Step(subject=report_subject(e.account_id, e.meter.id, e.hour), step=f"r{e.send.revision}",
                    identity=account_identity(e.account_id, e.meter.id, e.hour), call=call, lookup=lookup,
                    already_done=already_done)


class MeterActivities:
    """Usage reporting's activities, built from the worker's one dependency object."""

    def __init__(self, deps: Deps):
        self.deps = deps  # its engine and Stripe gateway are built on first use

    def clock(self) -> datetime:
        return self.deps.clock()

    # ---- the scheduled run ---------------------------------------------------------------------------
    @activity.defn(name="plan_usage_hours")
    def plan_usage_hours(self, inp: UsagePlanInput) -> UsagePlan:
        """Which hours up to ``target`` to report, oldest first: hours never looked at since reporting
        began, and hours a run left partial, late or running. The first page (``after`` None) also scans
        the executions ingested since the last scan and marks the reported hours they belong to late.
        Hours without usage are settled here without a Stripe call; hours with usage past Stripe's
        35-day window are marked expired with their error. Idempotent: a second plan finds the same."""
        target = _hour(inp.target)
        after = _hour(inp.after) if inp.after else None
        now = self.clock()
        with self.deps.engine.begin() as conn:
            if not repo.all_meters(conn):
                return UsagePlan(target=inp.target, note="no Stripe meters yet: run `tally meters apply`")
            state = repo.report_state(conn, for_update=True)
            late: list[datetime] = []
            if state is None:
                repo.start_reporting(conn, since=target, scanned_until=repo.db_now(conn))
                since = target
            else:
                since = state.reporting_since
                if after is None:
                    scanned = repo.db_now(conn)
                    found = repo.hours_ingested_since(conn, state.scanned_until - SCAN_MARGIN, target + HOUR)
                    late = repo.mark_late(conn, found)
                    repo.set_scanned_until(conn, scanned)
            first = max(since, after + HOUR) if after is not None else since
            known = repo.hour_states(conn, first, target)
            missing = [h for h in hours_between(first, target) if h not in known]
            redo = repo.hours_to_redo(conn, after, target)
            with_usage = (repo.hours_with_usage(conn, min(missing), target + HOUR) if missing else set()) | set(redo)
            plan = plan_hours(missing + redo, with_usage, now)
            errors = {h: why_not_reportable(h, now) or "past Stripe's 35-day window" for h in plan.expired}
            repo.mark_hours(conn, plan.empty, "reported")
            repo.mark_hours(conn, plan.expired, "expired", errors)
        hours = plan.to_report[:inp.max_hours]
        return UsagePlan(
            target=inp.target, hours=[format_hour(h) for h in hours],
            expired=[HourError(hour=format_hour(h), error=errors[h]) for h in plan.expired][:MAX_LISTED],
            late=[format_hour(h) for h in late][:MAX_LISTED], empty=len(plan.empty),
            more=len(plan.to_report) > inp.max_hours)

    # ---- one hour -------------------------------------------------------------------------------------
    @activity.defn(name="begin_usage_hour")
    def begin_usage_hour(self, inp: BeginUsageHourInput) -> UsageHourCheck:
        """Refuse an hour that has not ended or is past Stripe's window (marked expired); mark it
        running; choose the chunk size (``billing.meters.chunk_size_for``: equal chunks, a multiple of
        ``parallel_chunks`` of them) and list the first page of chunks."""
        hour = _hour(inp.hour)
        reason = why_not_reportable(hour, self.clock())
        with self.deps.engine.begin() as conn:
            n_meters = len(repo.all_meters(conn))
            if reason is None and n_meters:
                repo.begin_hour(conn, hour)
                accounts = repo.count_usage_accounts(conn, hour)
                size = chunk_size_for(accounts, inp.chunk_size, inp.parallel_chunks)
                chunks, cursor = repo.usage_chunks(conn, hour, None, size, inp.max_chunks)
            elif reason is not None and "older than" in reason and repo.hours_with_usage(conn, hour, hour + HOUR):
                repo.mark_hours(conn, [hour], "expired", {hour: reason})
        if reason is not None:
            raise ApplicationError(reason, type=Failure.HOUR_NOT_REPORTABLE, non_retryable=True)
        if not n_meters:
            raise _no_meters()
        return UsageHourCheck(hour=inp.hour, accounts=accounts, meters=n_meters, chunk_size=size,
                              first_page=_page(chunks, cursor))

    @activity.defn(name="list_usage_chunks")
    def list_usage_chunks(self, inp: ListUsageChunksInput) -> ChunkPage:
        hour = _hour(inp.hour)
        with self.deps.engine.begin() as conn:
            chunks, cursor = repo.usage_chunks(conn, hour, inp.after, inp.chunk_size, inp.max_chunks)
        return _page(chunks, cursor)

    @activity.defn(name="report_usage")
    def report_usage(self, inp: UsageChunkInput) -> UsageChunkResult:
        """Report the hour's usage of a range of accounts (module docstring). Safe to run again at any
        point: settled revisions are skipped, unsettled ones sent again unchanged."""
        hour = _hour(inp.hour)
        reason = why_not_reportable(hour, self.clock())
        if reason is not None:
            raise ApplicationError(reason, type=Failure.HOUR_NOT_REPORTABLE, non_retryable=True)
        info = activity.info() if activity.in_activity() else None
        give_up = info is not None and info.attempt >= ReportBudget.GIVE_UP_AT
        reporter = MeterReporter(self.deps.engine, self.deps.stripe, self.deps.clock, self.deps.settings.stripe_concurrency,
                                 heartbeat=activity.heartbeat if activity.in_activity() else None)
        return reporter.report(hour, inp.accounts.after, inp.accounts.upto, give_up=give_up)

    @activity.defn(name="finish_usage_hour")
    def finish_usage_hour(self, res: UsageHourResult) -> str:
        """Record how the hour's run ended; returns the hour's state (late when executions arrived while
        it ran: the next run sends the corrections)."""
        hour = _hour(res.hour)
        if res.failed_count == 0:
            state, error = "reported", None
        else:
            state = "partial"
            error = "; ".join(f"{f.account_id} {f.meter}: {f.error}" for f in res.failed[:3])
            if res.failed_count > 3:
                error += f"; and {res.failed_count - 3} more"
        with self.deps.engine.begin() as conn:
            return repo.finish_hour(conn, hour, state=state, accounts=res.accounts, events=res.events,
                                    already=res.already, failed=res.failed_count, error=error)

    # ---- reconciliation at close ---------------------------------------------------------------------
    def _period(self, text: str) -> Period:
        try:
            return Period.parse(text)
        except PeriodError as err:
            raise ApplicationError(str(err), type=Failure.INVALID_PERIOD, non_retryable=True) from err

    @activity.defn(name="check_meters_reconcile")
    def check_meters_reconcile(self, period_text: str) -> ReconcileCheck:
        self._period(period_text)
        with self.deps.engine.begin() as conn:
            return ReconcileCheck(period=period_text, accounts=repo.count_accounts(conn),
                                  meters=len(repo.all_meters(conn)))

    @activity.defn(name="list_reconcile_chunks")
    def list_reconcile_chunks(self, inp: ListChunksInput) -> ChunkPage:
        self._period(inp.period)
        with self.deps.engine.begin() as conn:
            chunks, cursor = repo.reconcile_chunks(conn, inp.after, inp.chunk_size, inp.max_chunks)
        return _page(chunks, cursor)

    @activity.defn(name="reconcile_meters")
    def reconcile_meters(self, inp: ReconcileChunkInput) -> ReconcileChunkResult:
        """Compare, per account of the range and meter, the period's usage (executions), what Tally
        reported, and Stripe's summary; write every comparison, return the drifting ones. What Stripe
        acknowledged within the settle time and its (lagging) summary does not show yet is counted as
        unsettled, not drift. Read-only in Stripe: safe to run again."""
        period = self._period(inp.period)
        after, upto = inp.accounts.after, inp.accounts.upto
        with self.deps.engine.begin() as conn:
            meters = {m.key: m for m in repo.all_meters(conn)}
            by_id = {m.id: m for m in meters.values()}
            usage = repo.period_usage(conn, period.start, period.end, after, upto)
            reported = repo.reported_totals(conn, period.start, period.end, after, upto)
            oldest = min(period.end, oldest_reportable_hour(self.clock()))
            too_old = repo.unreported_old_hours(conn, period.start, oldest, after, upto)
            recent = repo.recently_reported(conn, period.start, period.end, after, upto,
                                            since=self.clock() - timedelta(minutes=inp.settle_minutes))
            customers = repo.customers_of(conn, {u.account_id for u in usage} | {a for a, _ in reported})
        truths = {(a, meters[k].id): q for (a, k), q in quantities_by_meter(usage).items() if k in meters}
        pairs = sorted(set(truths) | set(reported))
        result = ReconcileChunkResult(pairs=len(pairs))
        rows = []
        before = self.deps.stripe.thread_calls()
        start, end = int(period.start.timestamp()), int(period.end.timestamp())
        for account_id, meter_id in pairs:
            meter = by_id[meter_id]
            customer_id = customers.get(account_id, (None, None))[0]
            stripe_total = (self.deps.stripe.meters.summary(meter.stripe_meter_id, customer_id, start, end)
                            if customer_id else None)
            total, unsettled = reported.get((account_id, meter_id), (0, 0))
            d = explain_drift(tally=truths.get((account_id, meter_id), 0), reported=total, stripe=stripe_total,
                              expired_hours=too_old.get(account_id, 0), unsettled_events=unsettled,
                              has_customer=customer_id is not None, recent=recent.get((account_id, meter_id), 0))
            rows.append(dict(account_id=account_id, meter_id=meter_id, tally=d.tally, reported=d.reported,
                             stripe=d.stripe, drift=d.drift, unexplained=d.unexplained, explanation=d.explanation,
                             unsettled=d.unsettled))
            result.unsettled += 1 if d.unsettled else 0
            if d.drift or d.unexplained:
                result.drifting += 1
                result.unexplained += 1 if d.unexplained else 0
            if d.drift or d.unexplained or d.unsettled:
                result.lines.append(MeterDriftLine(account_id=account_id, meter=meter.key, tally=d.tally,
                                                   reported=d.reported, stripe=d.stripe, drift=d.drift,
                                                   unexplained=d.unexplained, explanation=d.explanation,
                                                   unsettled=d.unsettled))
            if activity.in_activity():
                activity.heartbeat(len(rows))
        result.stripe_calls = self.deps.stripe.thread_calls() - before
        result.lines = sorted(result.lines, key=lambda x: (-abs(x.drift), x.account_id, x.meter))[:MAX_LISTED]
        with self.deps.engine.begin() as conn:
            repo.save_reconciliation(conn, inp.period, rows)
        return result

