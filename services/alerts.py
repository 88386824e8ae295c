"""Spending alerts and cost anomalies that act (F-039 spending alerts, F-044): the usage observer that
evaluates budgets, spikes and fallbacks after every committed batch of executions, the budgets users
set, and the running-cost verdict that kills runaway loops.

Each rule is LOADED for the whole batch in a few queries (``repositories.alerts``), DECIDED in
``billing.alerts`` (pure) and, when it acts, WRITTEN with its notice in one transaction: a budget
crossing, an anomaly (the pause) or a kill is recorded once by its unique key, and its notice goes
into the outbox only when this transaction recorded it. So a threshold is noticed at most once per
account and period whatever retries, re-ingests or concurrent batches do, and a crash between the
batch and the observer is repaired by the account's next batch (the rules read state, not events).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Callable

from sqlalchemy import Connection, Engine

from activities import pricing
from activities.ingest import FUTURE_TOLERANCE
from billing import alerts as rules
from billing.catalog import AlertSettings, Catalog, CatalogVersion, Plan, version_windows
from billing.errors import BillingError
from billing.periods import Period, gather_by_period
from billing.rating import pooled_included
from models.schemas import RecordedUsage
from models.settings import get_settings
from repositories import alerts as repo
from repositories import notifications
from services.errors import InvalidInput, NotFound
from services.inputs import ACCOUNT_ID
from services.metering import AccountNotFound, MeteringService
from services.pacing import rest_after
from workflows.alerts import anomaly_workflow_id

log = logging.getLogger("tally.alerts")

# A batch whose transaction began this long before the observer's scan and committed after it is
# still read by the next fallback scan (docs/decisions.md "Fallback scan").
FALLBACK_SCAN_MARGIN = timedelta(hours=1)
MAX_BUDGET = Decimal("1000000000.00")
MAX_COST = Decimal(10) ** 10


@dataclass
class Evaluation:
    """What one evaluation recorded (for tests, logs and the benchmark)."""

    accounts: int = 0
    rated: int = 0  # accounts whose month was rated (the ceiling could not rule a crossing out)
    crossings: list[tuple[str, int]] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BudgetTerms:
    default: Decimal | None  # the plan's own monthly charge (billing.alerts.default_budget)
    version: CatalogVersion | None  # set when one terms segment and one catalog version cover the month
    plan: Plan | None
    overage_opt_in: bool
    pricing: str
    included: int


class AlertEvaluator:
    """Evaluates the alert rules for the accounts of committed batches (one per engine and catalog)."""

    def __init__(self, engine: Engine, catalog: Catalog):
        self.engine = engine
        self.catalog = catalog
        self.metering = MeteringService(engine, catalog)  # its month-to-date rating and terms cache
        # account -> (instant, executions in its spike window then, executions of the period recorded then)
        self._windows: dict[str, tuple[datetime, int, int]] = {}
        self._terms: dict[tuple, tuple[BudgetTerms | None, datetime]] = {}
        self.queue = EvaluationQueue(self)
        self._lock = threading.Lock()

    def evaluate(self, account_ids: list[str] | tuple[str, ...], at: datetime) -> Evaluation:
        out = Evaluation(accounts=len(account_ids))
        if not account_ids:
            return out
        at = at.astimezone(timezone.utc)
        try:
            version = self.catalog.at(at)
        except BillingError:
            return out  # before the first catalog version: nothing is priced, nothing to watch
        settings = version.alert_settings()
        period = Period.of(at)
        ids = sorted(set(account_ids))
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            watched = repo.watched_accounts(conn, ids, period)
            self._spikes(conn, [w for w in watched if not w.paused_anomaly], at, settings, out)
            self._load_budget_terms(conn, [w for w in watched if not set(settings.budget_thresholds_percent)
                                           <= set(w.noticed)], period, at)
            for w in watched:
                self._budget(conn, w, at, period, settings, out)
            self._fallbacks(conn, ids, out)
        return out

    # ---- budgets ----------------------------------------------------------------------------------
    def _budget(self, conn: Connection, w: repo.WatchedAccount, at: datetime, period: Period,
                settings: AlertSettings, out: Evaluation) -> None:
        if set(settings.budget_thresholds_percent) <= set(w.noticed):
            return  # every threshold of the month already noticed
        terms = self._budget_terms(conn, w, period, at)
        if terms is None:
            return
        budget = w.budget or terms.default
        if budget is None:
            return
        if terms.version is not None:  # one terms segment, one catalog version: the ceiling applies
            ceiling = rules.budget_charges_ceiling(terms.version, terms.plan, overage_opt_in=terms.overage_opt_in,
                                                   pricing=terms.pricing, included=terms.included, usage=w.usage)
            if not rules.budget_may_cross(ceiling, budget, w.noticed, settings=settings):
                return
        out.rated += 1
        mtd = self.metering.month_to_date(conn, w, repo.month_counters(conn, w.id, period), at)
        if mtd.rated is None:
            return
        check = rules.check_budget(rules.budget_charges(mtd.rated), budget, w.noticed, settings=settings)
        if not check.newly_crossed:
            return
        with self.engine.begin() as tx:
            inserted = repo.record_crossings(tx, account_id=w.id, period=period, thresholds=check.newly_crossed,
                                             budget=check.budget, charges=check.charges)
            if inserted:
                notifications.notify_notice(tx, w.id, rules.budget_notice(w.id, period, replace(check, newly_crossed=tuple(inserted))))
        out.crossings += [(w.id, t) for t in inserted]

    @staticmethod
    def _terms_key(w: repo.WatchedAccount, period: Period) -> tuple:
        return (w.id, str(period), w.created_at, w.updated_at)

    def _budget_terms(self, conn: Connection, w: repo.WatchedAccount, period: Period, at: datetime) -> BudgetTerms | None:
        """What the budget rule needs of the account's terms this period (cached until the account's
        terms change or its current segment ends); None when it is not billed yet."""
        with self._lock:
            hit = self._terms.get(self._terms_key(w, period))
        if hit is None or hit[1] <= at:
            self._load_budget_terms(conn, [w], period, at)
            with self._lock:
                hit = self._terms[self._terms_key(w, period)]
        return hit[0]

    def _load_budget_terms(self, conn: Connection, watched: list[repo.WatchedAccount], period: Period,
                           at: datetime) -> None:
        """Load the terms of every account not cached yet, in one query (a cold process evaluates a
        whole batch without a query per account)."""
        with self._lock:
            missing = [w for w in watched if (hit := self._terms.get(self._terms_key(w, period))) is None or hit[1] <= at]
        if not missing:
            return
        all_segments = pricing.terms_segments(conn, [w.id for w in missing], period)
        windows = version_windows(self.catalog, period.start, period.end)
        loaded = {}
        for w in missing:
            segments = all_segments.get(w.id, [])
            terms = None
            # A month with contract days is billed by the contract, not the rater: no budget evaluation.
            if segments and not any(self.catalog.at(sg.start).plan(sg.plan).contract for sg in segments):
                current = next((s for s in segments if s.start <= at < s.end), segments[-1])
                try:
                    default = rules.default_budget(self.catalog.at(current.start), current.plan, current.seats)
                except BillingError:
                    default = None
                single = (len(segments) == 1 and len(windows) == 1 and segments[0].start == period.start
                          and segments[0].end == period.end)
                version = self.catalog.version(windows[0][0]) if single else None
                terms = BudgetTerms(default, version, version.plan(current.plan) if version else None,
                                    current.overage_opt_in, current.pricing,
                                    pooled_included(self.catalog, period.start, period.end, segments))
            # Until the end of the current segment at the latest: the plan in force (the default budget) may change then.
            until = next((s.end for s in segments if s.start <= at < s.end), period.end)
            loaded[self._terms_key(w, period)] = (terms, until)
        with self._lock:
            if len(self._terms) > 100_000:
                self._terms.clear()
            self._terms.update(loaded)

    # ---- spikes -----------------------------------------------------------------------------------
    def _spikes(self, conn: Connection, watched: list[repo.WatchedAccount], at: datetime, settings: AlertSettings,
                out: Evaluation) -> None:
        spans = rules.spike_windows(at, settings=settings)
        floor = settings.spike_floor_executions
        in_period = Period.of(at).start <= spans.window_start
        starts = {}
        for w in watched:
            start = max(spans.window_start, w.quiet_until) if w.quiet_until else spans.window_start
            if start >= at or (in_period and not self._window_may_pass(w, at, floor)):
                continue
            starts[w.id] = start
        counts = repo.executions_between(conn, starts, at, ahead=FUTURE_TOLERANCE)
        recorded = {w.id: w.recorded for w in watched}
        with self._lock:
            for account_id in starts:
                self._windows[account_id] = (at, counts.get(account_id, (0, 0))[1], recorded[account_id])
        # The threshold is never below the floor: only accounts above it need their baseline counted.
        over = {a: n for a, (n, _) in counts.items() if n > floor}
        if not over:
            return
        baselines = repo.executions_between(conn, dict.fromkeys(over, spans.baseline_start), spans.baseline_end)
        for account_id, n in sorted(over.items()):
            verdict = rules.check_spike(n, baselines.get(account_id, (0, 0))[0], settings=settings)
            if not verdict.pause:
                continue
            start = starts[account_id]
            workflow_id = anomaly_workflow_id(account_id, start)
            with self.engine.begin() as tx:
                anomaly_id = repo.open_anomaly(tx, account_id=account_id, workflow_id=workflow_id, window_start=start,
                                               window_end=at, evidence=verdict.evidence())
                if anomaly_id is not None:
                    notifications.notify_notice(tx, account_id, rules.spike_notice(account_id, start, verdict))
                    notifications.notify_notice(tx, account_id, rules.ops_spike_notice(account_id, start, verdict, workflow_id), "ops")
            if anomaly_id is not None:
                out.paused.append(account_id)
                log.warning("account %s paused: %s (%s)", account_id, verdict.reason, workflow_id)

    def _window_may_pass(self, w: repo.WatchedAccount, at: datetime, floor: int) -> bool:
        """Could the account's window at ``at`` hold more than ``floor`` executions? Not when the whole
        period so far holds no more. Nor when, less than the ingest's future tolerance ago (at ``t``),
        this process counted the executions from that window's start up to ``t`` + the tolerance (all
        that could exist then), and that count plus every execution recorded in the period since (the
        counters grow by exactly those) holds no more: the window at ``at`` lies inside what was counted
        and what was recorded since. Saves the count for most accounts of most batches."""
        if w.recorded <= floor:
            return False
        with self._lock:
            seen = self._windows.get(w.id)
        if seen is None or not seen[0] <= at <= seen[0] + FUTURE_TOLERANCE or w.recorded < seen[2]:
            return True
        return seen[1] + (w.recorded - seen[2]) > floor

    # ---- fallbacks --------------------------------------------------------------------------------
    def _fallbacks(self, conn: Connection, ids: list[str], out: Evaluation) -> None:
        candidates = repo.fallback_candidates(conn, ids)
        if not candidates:
            return
        def key(c: repo.FallbackCandidate) -> str:
            return rules.dedupe_key("fallback", c.account_id, c.agent_id, c.occurred_at.astimezone(timezone.utc).date())
        done = repo.existing_dedupe_keys(conn, sorted({key(c) for c in candidates}))
        notices: list[tuple[str, rules.Notice]] = []
        for c in candidates:
            k = key(c)
            if k in done:
                continue
            try:
                found = rules.detect_fallback(self.catalog.at(c.occurred_at), c.requested_model, c.model,
                                              c.input_tokens, c.output_tokens, c.occurred_at)
            except BillingError:
                continue  # a model no version in force then prices: not a fallback we can compare
            if found is not None:
                done.add(k)
                notices.append((c.account_id, rules.fallback_notice(c.account_id, c.agent_id, found)))
        with self.engine.begin() as tx:
            queued = set(notifications.notify_notices(tx, notices))
            out.fallbacks += [account_id for account_id, n in notices if n.dedupe_key in queued]
            repo.advance_fallback_cursors(tx, [c.account_id for c in candidates], FALLBACK_SCAN_MARGIN)


# The alert evaluations of a process take at most this share of its time (EvaluationQueue).
EVALUATION_SHARE = 0.1


class EvaluationQueue:
    """Evaluations of one process, one at a time, each covering every account of the batches committed
    since the previous one.

    In line (the default: a file import, a test): the batch whose observer finds no evaluation running
    evaluates its accounts itself before returning, so sequential ingestion is evaluated batch by batch.
    In the background (``background = True``; the API sets it): a request never waits for an evaluation.
    Either way, batches committed while an evaluation runs only add their accounts, and a drainer thread
    evaluates what they added at most every ``min_interval`` seconds: under sustained concurrent
    ingestion a process evaluates each busy account twice a second however many batches name it.

    The evaluations' cost is bounded too: after a round that took d seconds the drainer starts the next
    no sooner than ``d * (1 / share - 1)`` later (and ``min_interval`` at least), so they take at most
    ``share`` (``EVALUATION_SHARE``, 10%) of the process's time however many accounts each covers. A
    round of 1,000 busy accounts that takes 0.2 s is followed by the next 1.8 s later: a threshold is then
    noticed within about 2 s of its batch instead of half a second.

    Forwarded (``forward`` set; ``tally api``'s batch recorders, api/ingest_process.py): ``submit`` only
    hands the accounts to ``forward(account_ids, at)`` and evaluates nothing here. The recorders of one
    serving process each see batches naming the same busy accounts; each evaluating them on its own
    repeated every evaluation once per recorder (per core), so their serving process gathers what they
    recorded and one process of its own evaluates it (``api.ingest_process.AlertsProcess``)."""

    def __init__(self, evaluator: AlertEvaluator, min_interval: float = 0.5, background: bool = False,
                 share: float | None = None, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic):
        self.evaluator = evaluator
        self.min_interval = min_interval
        self.background = background
        self.share = EVALUATION_SHARE if share is None else share
        self._sleep = sleep
        self._monotonic = monotonic
        self._next = 0.0  # monotonic instant before which the drainer starts no round (the last one's rest)
        self._mutex = threading.Lock()
        self._pending: dict[Period, tuple[set[str], datetime]] = {}
        self._running = False
        self._idle = threading.Event()
        self._idle.set()
        self.forward: Callable[[tuple[str, ...], datetime], None] | None = None
        self.evaluated = 0  # accounts evaluated by this queue's rounds (an account in two periods counts twice)

    def submit(self, account_ids: tuple[str, ...] | list[str], at: datetime) -> None:
        if self.forward is not None:
            self.forward(tuple(account_ids), at)
            return
        with self._mutex:
            gather_by_period(self._pending, account_ids, at)
            if self._running:
                return
            self._running = True
            self._idle.clear()
        if self.background:
            threading.Thread(target=self._drain, name="alerts-drainer", daemon=True).start()
            return
        self._round()
        with self._mutex:
            if not self._pending:
                self._finish()
                return
        threading.Thread(target=self._drain, name="alerts-drainer", daemon=True).start()

    def rest(self, took: float) -> float:
        """How long the drainer waits after a round that took ``took`` seconds."""
        return max(self.min_interval, rest_after(took, self.share))

    def _drain(self) -> None:
        while True:
            delay = self._next - self._monotonic()
            if delay > 0:
                self._sleep(delay)
            with self._mutex:
                if not self._pending:
                    self._finish()
                    return
            self._round()

    def _finish(self) -> None:  # under the mutex
        self._running = False
        self._idle.set()

    def _round(self) -> None:
        started = self._monotonic()
        with self._mutex:
            todo, self._pending = self._pending, {}
        try:
            for _period, (ids, at) in sorted(todo.items(), key=lambda kv: kv[1][1]):
                self.evaluated += len(ids)
                try:
                    self.evaluator.evaluate(sorted(ids), at)
                except Exception:  # noqa: BLE001 - logged; the accounts' next batch evaluates them again
                    log.exception("alert evaluation of %d accounts failed; their next batch retries it", len(ids))
        finally:
            ended = self._monotonic()
            self._next = ended + self.rest(ended - started)

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted batch is evaluated (tests; a graceful shutdown)."""
        return self._idle.wait(timeout)


_evaluators: dict[tuple[int, int], AlertEvaluator] = {}
_evaluators_lock = threading.Lock()


def evaluator(engine: Engine, catalog: Catalog) -> AlertEvaluator:
    """The process's evaluator for this engine and catalog (its terms cache outlives a batch)."""
    key = (id(engine), id(catalog))
    with _evaluators_lock:
        found = _evaluators.get(key)
        if found is None or found.engine is not engine or found.catalog is not catalog:
            found = _evaluators[key] = AlertEvaluator(engine, catalog)
        return found


def on_usage(engine: Engine, catalog: Catalog, recorded: RecordedUsage) -> None:
    """The usage observer (capabilities registry): evaluate budgets, spikes and fallbacks for the
    accounts of a committed batch, at the batch's recording time. Off with TALLY_ALERTS_ON_INGEST=false."""
    if not get_settings().alerts_on_ingest:
        return
    evaluator(engine, catalog).queue.submit(recorded.account_ids, recorded.recorded_at)


# ---- budgets set by users ---------------------------------------------------------------------------------
def parse_budget(value: object) -> Decimal:
    """A budget as the API or the CLI gives it: a decimal amount in dollars, whole cents, above 0."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput("amount", 'must be a decimal string such as "250.00"')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput("amount", f"{value!r} is not a decimal amount") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidInput("amount", "must be more than 0")
    if amount != amount.quantize(Decimal("0.01")):
        raise InvalidInput("amount", "must be whole cents (at most 2 decimals)")
    if amount >= MAX_BUDGET:
        raise InvalidInput("amount", f"must be less than {MAX_BUDGET:,}")
    return amount.quantize(Decimal("0.01"))


class BudgetService:
    """An account's monthly budget: what the user set or the plan's default, and where the month stands."""

    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime] | None = None):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.metering = MeteringService(engine, catalog, self.clock)

    def set_budget(self, account_id: str, amount: object | None, platform_id: int | None = None) -> dict:
        """Set the budget (``None``: back to the plan's default). Thresholds already noticed this month
        stay noticed; a lower budget can cross the others at the next batch."""
        value = None if amount is None else parse_budget(amount)
        with self.engine.begin() as conn:
            self._require(conn, account_id, platform_id)
            if value is None:
                repo.clear_budget(conn, account_id)
            else:
                repo.set_budget(conn, account_id, value)
        view = self.budget(account_id, platform_id)
        # Evaluate now: a budget lowered below this month's charges is noticed without waiting for usage.
        evaluator(self.engine, self.catalog).evaluate([account_id], self.clock())
        return view

    def budget(self, account_id: str, platform_id: int | None = None) -> dict:
        now = self.clock()
        period = Period.of(now)
        with self.engine.begin() as conn:
            self._require(conn, account_id, platform_id)
            watched = repo.watched_accounts(conn, [account_id], period)[0]
            crossings = repo.crossings_of(conn, account_id, period)
            segments = self.metering._terms_segments(conn, watched, period)
            mtd = self.metering.month_to_date(conn, watched, None, now, exact=True)
        current = next((s for s in segments if s.start <= now < s.end), segments[-1] if segments else None)
        default = None
        if current is not None:
            default = rules.default_budget(self.catalog.at(current.start), current.plan, current.seats)
        budget = watched.budget or default
        charges = rules.budget_charges(mtd.rated) if mtd.rated is not None else None
        check = rules.check_budget(charges, budget) if budget is not None and charges is not None else None
        return {
            "account_id": account_id,
            "period": str(period),
            "budget": None if budget is None else str(budget),
            "source": "set" if watched.budget is not None else ("plan" if default is not None else "none"),
            "plan_default": None if default is None else str(default),
            "charges": None if charges is None else str(charges),
            "percent_used": None if check is None else str(check.percent_used),
            "thresholds": [{"percent": p, "crossed_at": next((c.crossed_at.isoformat() for c in crossings
                                                               if c.threshold == p), None)}
                           for p in self.catalog.at(now).alert_settings().budget_thresholds_percent],
        }

    @staticmethod
    def _require(conn: Connection, account_id: str, platform_id: int | None) -> None:
        from repositories import accounts, platforms

        if not ACCOUNT_ID.match(account_id):
            raise AccountNotFound(account_id)
        found = (accounts.get_account(conn, account_id) if platform_id is None
                 else platforms.account_of_platform(conn, account_id, platform_id))
        if found is None:
            raise AccountNotFound(account_id)


# ---- the loop rule: a verdict on an execution's running cost ---------------------------------------------
def parse_cost(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput("cost_usd", 'required, a decimal amount such as "0.0125"')
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput("cost_usd", f"{value!r} is not a decimal amount") from None
    if not cost.is_finite() or cost < 0:
        raise InvalidInput("cost_usd", "must be a finite, non-negative amount")
    if cost >= MAX_COST:
        raise InvalidInput("cost_usd", f"must be less than {MAX_COST:,}")
    return cost


class CostVerdicts:
    """``continue`` or ``kill`` for an in-flight execution's running cost (the platform asks often).

    An agent's recent costs are read once and reused for ``history_seconds`` (the median of its last
    100 executions hardly moves in two seconds), so a platform polling the running cost of its
    executions gets most answers without a database round trip (``cached_verdict``)."""

    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime] | None = None,
                 history_seconds: float = 2.0):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.history_seconds = history_seconds
        self._history: dict[tuple[int, str, str, int], tuple[float, list[Decimal]]] = {}

    def _check(self, execution_id: str, account_id: str, agent_id: str, running_cost: object) -> tuple[Decimal, AlertSettings]:
        _check_text(execution_id, "execution_id", 128)
        if not isinstance(account_id, str) or not ACCOUNT_ID.match(account_id):
            raise InvalidInput("account_id", "required, an account id")
        _check_text(agent_id, "agent_id", 128)
        return parse_cost(running_cost), self.catalog.at(self.clock()).alert_settings()

    def cached_verdict(self, platform_id: int, execution_id: str, account_id: str, agent_id: str,
                       running_cost: object) -> dict | None:
        """The verdict from the agent's cached history, without I/O; None when the history is not
        cached or the verdict is a kill (recording it needs the database: ``verdict``)."""
        cost, settings = self._check(execution_id, account_id, agent_id, running_cost)
        hit = self._history.get((platform_id, account_id, agent_id, settings.loop_history_size))
        if hit is None or hit[0] < time.monotonic():
            return None
        v = rules.loop_verdict(cost, hit[1], settings=settings)
        return None if v.kill else self._answer(execution_id, account_id, agent_id, v)

    def verdict(self, platform_id: int, execution_id: str, account_id: str, agent_id: str, running_cost: object) -> dict:
        """One indexed read (the agent's recent costs) and a pure decision; a kill is also recorded
        with its evidence and a notice, once per execution (a later report of the same execution gets
        the recorded kill back)."""
        cost, settings = self._check(execution_id, account_id, agent_id, running_cost)
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            history = repo.agent_recent_costs(conn, platform_id, account_id, agent_id, settings.loop_history_size)
        if history is None:
            raise AccountNotFound(account_id)
        if len(self._history) > 100_000:
            self._history.clear()
        self._history[(platform_id, account_id, agent_id, settings.loop_history_size)] = (
            time.monotonic() + self.history_seconds, history)
        v = rules.loop_verdict(cost, history, settings=settings)
        out = self._answer(execution_id, account_id, agent_id, v)
        if v.kill:
            out.update(self._record_kill(execution_id, account_id, agent_id, v))
        return out

    @staticmethod
    def _answer(execution_id: str, account_id: str, agent_id: str, v: rules.LoopVerdict) -> dict:
        return {"execution_id": execution_id, "account_id": account_id, "agent_id": agent_id, **v.evidence(),
                "killed_at": None}

    def _record_kill(self, execution_id: str, account_id: str, agent_id: str, v: rules.LoopVerdict) -> dict:
        with self.engine.begin() as conn:
            if repo.record_kill(conn, execution_id=execution_id, account_id=account_id, agent_id=agent_id, cost=v.cost,
                                baseline=v.baseline, threshold=v.threshold, multiplier=v.multiplier,
                                history_size=v.history_size, reason=v.reason):
                notifications.notify_notice(conn, account_id, rules.loop_kill_notice(account_id, agent_id, execution_id, v))
            kill = repo.kill_of(conn, execution_id)
        return kill_view(kill) | {"verdict": "kill"}


def kill_view(k) -> dict:
    return {"execution_id": k.execution_id, "account_id": k.account_id, "agent_id": k.agent_id, "cost": str(k.cost),
            "baseline": str(k.baseline), "threshold": str(k.threshold), "multiplier": str(k.multiplier.normalize()),
            "history_size": k.history_size, "reason": k.reason, "killed_at": k.killed_at.isoformat()}


def account_kills(engine: Engine, account_id: str, platform_id: int | None = None, limit: int = 100) -> list[dict]:
    """The executions the loop rule killed on this account, newest first, with their evidence."""
    with engine.begin() as conn:
        BudgetService._require(conn, account_id, platform_id)
        return [kill_view(k) for k in repo.kills_of(conn, account_id, limit=limit)]


def _check_text(value: object, field: str, max_len: int) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len or "\x00" in value:
        raise InvalidInput(field, f"required, a non-empty string of at most {max_len} characters")


__all__ = ["AlertEvaluator", "EvaluationQueue", "Evaluation", "evaluator", "on_usage", "BudgetService", "CostVerdicts", "parse_budget",
           "account_kills", "kill_view"]
