"""Spending alerts and cost anomalies (F-039 spending alerts, F-044): the rules, as pure functions.

No clock and no I/O: every instant and every count is an argument, money is ``Decimal``, and the
numbers come from the catalog's ``[versions.alerts]`` (``CatalogVersion.alert_settings()``; the
defaults below when a version has no such section). Each rule returns a verdict together with the
evidence behind it, and each notice carries a stable ``dedupe_key``: the shell writes it into the
notifications outbox in the same transaction as its cause, and the outbox's unique key makes
"at most once" hold under retries, re-ingests and concurrent writers.

What the shell loads, and what it gets back (one call per rule):

=========  ===============================================================  ======================
rule       the shell passes                                                 the core answers
=========  ===============================================================  ======================
budget     the budget (``default_budget`` unless the user set one), the     ``BudgetCheck``: which
           month-to-date usage charges (``budget_charges`` of the month's   thresholds to record,
           preview rating), the thresholds already noticed this period      which one to e-mail
loop       the execution's running cost, the costs of its agent's most      ``LoopVerdict``:
           recent ``loop_history_size`` completed executions                ``continue``/``kill``
spike      executions in the window and in the baseline span before it     ``SpikeVerdict``:
           (``spike_windows`` gives both spans for an instant)              pause or not
fallback   the requested model, the model used, the execution's tokens     ``Fallback`` or None
trend      the projected month total (the preview's projection, factor     ``TrendVerdict``:
           ``month_projection_factor``), the trailing months' totals        warn or not
=========  ===============================================================  ======================

The exact rules and why these numbers: docs/decisions.md, "Alerts and anomalies".
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Literal

from billing.catalog import DEFAULT_ALERT_SETTINGS, AlertSettings, CatalogVersion, Plan
from billing.entitlements import MonthCounter, bills_overage
from billing.errors import BillingError, CatalogError
from billing.money import format_rate, format_usd
from billing.numbers import WIDE, check_count, check_decimal, median
from billing.numbers import plain as _num
from billing.periods import Period
from billing.rating import LineKind, RatedInvoice

UTC = timezone.utc
PER_MILLION = Decimal(1_000_000)
DEDUPE_KEY_MAX = 160  # notifications.dedupe_key is VARCHAR(160)


class AlertError(BillingError):
    """The input to an alert rule is unusable (a negative cost, a naive instant, ...)."""


def _aware(ts: object, field: str) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise AlertError(f"must be a timezone-aware datetime, got {ts!r}", field=field)
    return ts.astimezone(UTC)


def _money(x: object, field: str) -> Decimal:
    return check_decimal(x, field, AlertError)


# =============================================================================================
# Budget: 50 / 80 / 100 % of the monthly budget, each at most once per account and period
# =============================================================================================
def default_budget(version: CatalogVersion, plan_code: str, seats: int = 1) -> Decimal | None:
    """The monthly budget of an account that has not set one: its plan's expected cost.

    The budget watches usage charges (``budget_charges``), so the expected cost is what the plan
    itself charges for a month: its fee (x seats for a per-seat plan: Team 3 seats -> $237.00), or,
    for a plan with a usage cap and no fee (PAYG), the cap ($50.00). ``None`` (no budget alerts
    unless the user sets a budget) for a contract plan (Enterprise: the contract is the budget) and
    for a plan without fee or cap (Free: blocked beyond its quota, so it has nothing to run away).
    """
    plan = version.plan(plan_code)
    if isinstance(seats, bool) or not isinstance(seats, int) or seats < 1:
        raise AlertError(f"must be an integer >= 1, got {seats!r}", field="seats")
    if plan.contract:
        return None
    if plan.monthly_fee > 0:
        return plan.monthly_fee * (seats if plan.fee_per_seat else 1)
    return plan.usage_cap


def budget_charges(month_to_date: RatedInvoice) -> Decimal:
    """Month-to-date charges a budget watches: the month's bill so far without its plan fees.

    ``month_to_date`` is the open month rated up to now, exactly as ``tally invoices preview`` rates
    it. Base fees are left out because they are due whatever happens: counted in, a Pro account
    would sit at 100% of a $29 budget on the 1st. What is left is what usage adds: overage, token
    charges, the PAYG cap adjustment (negative) and late usage of earlier months billed this month.
    """
    return sum((ln.amount for ln in month_to_date.lines if ln.kind is not LineKind.base_fee), Decimal("0.00"))


@dataclass(frozen=True)
class MonthUsage:
    """What the budget ceiling needs of an account's month-to-date counters (the usage observer reads
    it for a whole batch of accounts in one aggregated query)."""

    executions: int
    """Non-sandbox executions (they use the included quota; past it they are billable)."""
    models: int
    """At least the number of distinct models among them (per-execution charges have one line per
    model, each rounded once): the shell passes its non-sandbox counter rows, a model's BYOK and
    platform-key rows counted twice, which only widens the ceiling by half a cent."""
    platform_tokens: tuple[tuple[str, int, int], ...] = ()
    """``(model, input tokens, output tokens)`` of the platform-key, non-sandbox executions."""

    @classmethod
    def of(cls, counters: Sequence[MonthCounter]) -> MonthUsage:
        platform = [c for c in counters if not c.sandbox and c.executions]
        tokens: dict[str, list[int]] = {}
        for c in platform:
            if not c.byok:
                t = tokens.setdefault(c.model, [0, 0])
                t[0] += c.input_tokens
                t[1] += c.output_tokens
        return cls(sum(c.executions for c in platform), len({c.model for c in platform}),
                   tuple((m, t[0], t[1]) for m, t in sorted(tokens.items())))


def budget_charges_ceiling(version: CatalogVersion, plan: Plan, *, overage_opt_in: bool, pricing: str,
                           included: int, usage: MonthUsage) -> Decimal:
    """An upper bound of ``budget_charges`` for a month rated under ONE terms segment and ONE catalog
    version, from the month-to-date counters alone, without rating.

    The shell evaluates every account of every batch: when the ceiling is below every threshold not
    yet noticed, nothing can cross and the account is not rated. It is the exact sum of the usage
    charges before per-line rounding plus half a cent per possible line (each line is rounded once,
    half-up), capped at the plan's usage cap: per execution, ``max(0, used - included) x rate`` when
    overage is billed (else $0: blocked executions are shown at $0); per token, every platform-key,
    non-sandbox execution's tokens at the user price (blocked ones included, which only raises it).
    A property test pins it above the rating's own figure.
    """
    half_cent = Decimal("0.005")
    if pricing == "tokens":
        raw = Decimal(0)
        for model, tokens_in, tokens_out in usage.platform_tokens:
            m = version.model(model)
            raw += WIDE.divide(WIDE.add(WIDE.multiply(Decimal(tokens_in), m.user_price_input(version.markup)),
                                        WIDE.multiply(Decimal(tokens_out), m.user_price_output(version.markup))),
                               PER_MILLION)
        lines = 2 * len(usage.platform_tokens)
    else:
        billable = max(0, usage.executions - included)
        if not billable or not bills_overage(plan, overage_opt_in):
            return Decimal("0.00")
        raw = WIDE.multiply(Decimal(billable), plan.overage_rate)
        lines = usage.models
    ceiling = WIDE.add(raw, WIDE.multiply(half_cent, Decimal(lines)))
    if plan.usage_cap is not None:
        ceiling = min(ceiling, plan.usage_cap)
    return ceiling


def budget_may_cross(ceiling: Decimal, budget: Decimal, already_noticed: Collection[int] = (), *,
                     settings: AlertSettings = DEFAULT_ALERT_SETTINGS) -> bool:
    """Could charges of at most ``ceiling`` cross a threshold not yet noticed? (``check_budget``'s own
    comparison, on the ceiling.) False means: do not rate, nothing can be noticed. Thresholds increase,
    so it is enough to compare with the lowest one not yet noticed."""
    pending = [p for p in settings.budget_thresholds_percent if p not in already_noticed]
    return bool(pending) and WIDE.multiply(ceiling, Decimal(100)) >= WIDE.multiply(budget, Decimal(pending[0]))


@dataclass(frozen=True)
class BudgetCheck:
    """Where month-to-date charges stand against the budget.

    The shell records every threshold in ``newly_crossed`` as noticed for the period, and sends one
    notice, for ``notify`` (the highest newly crossed): charges that jump from 40% to 120% in one
    batch send one e-mail ("100%"), not three.
    """

    budget: Decimal
    charges: Decimal
    percent_used: Decimal
    """charges / budget x 100, floored to 0.1 (a figure to show: it never overstates)."""
    newly_crossed: tuple[int, ...]
    thresholds: tuple[int, ...]

    @property
    def notify(self) -> int | None:
        return self.newly_crossed[-1] if self.newly_crossed else None


def check_budget(charges: Decimal, budget: Decimal, already_noticed: Collection[int] = (), *,
                 settings: AlertSettings = DEFAULT_ALERT_SETTINGS) -> BudgetCheck:
    """Which budget thresholds month-to-date ``charges`` newly cross.

    A threshold ``p`` is crossed when ``charges >= budget x p / 100`` (exactly at it counts), in
    exact Decimal arithmetic. Thresholds in ``already_noticed`` (this account, this period) are
    never returned again, even if the budget has changed since: each is noticed at most once per
    period; a lowered budget can newly cross the ones not yet noticed. Values in
    ``already_noticed`` that are not thresholds of ``settings`` are ignored.
    """
    charges = check_decimal(charges, "charges", AlertError, minimum=None)
    budget = check_decimal(budget, "budget", AlertError, above_minimum=True)
    noticed = set(already_noticed)
    crossed = tuple(p for p in settings.budget_thresholds_percent
                    if WIDE.multiply(charges, Decimal(100)) >= WIDE.multiply(budget, Decimal(p)))
    percent = WIDE.divide(WIDE.multiply(charges, Decimal(100)), budget)
    return BudgetCheck(
        budget=budget,
        charges=charges,
        percent_used=percent.quantize(Decimal("0.1"), rounding=ROUND_FLOOR, context=WIDE),
        newly_crossed=tuple(p for p in crossed if p not in noticed),
        thresholds=settings.budget_thresholds_percent,
    )


# =============================================================================================
# Runaway loop: kill an execution whose running cost passes 3 x its agent's normal cost
# =============================================================================================
@dataclass(frozen=True)
class LoopVerdict:
    """The answer to "may this in-flight execution go on?", with the evidence to record on a kill."""

    verdict: Literal["continue", "kill"]
    reason: str
    cost: Decimal
    baseline: Decimal | None
    """Median cost of the agent's recent completed executions; ``None`` below the minimum history."""
    threshold: Decimal | None
    """``multiplier x baseline``: the cost must pass it (strictly) to kill; ``None`` when the rule
    cannot act (too little history, or a $0 baseline)."""
    multiplier: Decimal
    history_size: int
    min_history: int

    @property
    def kill(self) -> bool:
        return self.verdict == "kill"

    def evidence(self) -> dict[str, str | int | None]:
        """JSON-safe figures for the kill record and the notice payload (decimals as strings)."""
        return {"verdict": self.verdict, "reason": self.reason, "cost": str(self.cost),
                "baseline": _opt(self.baseline), "threshold": _opt(self.threshold),
                "multiplier": str(self.multiplier), "history_size": self.history_size,
                "min_history": self.min_history}


def loop_verdict(running_cost: Decimal, recent_costs: Sequence[Decimal], *,
                 settings: AlertSettings = DEFAULT_ALERT_SETTINGS) -> LoopVerdict:
    """``kill`` once ``running_cost > multiplier x median(recent_costs)``, else ``continue``.

    ``recent_costs``: the costs of the agent's most recent completed executions, at most
    ``settings.loop_history_size`` of them (all that are given are used; their order does not
    matter), in the same measure as ``running_cost`` (the execution record's ``cost_usd``).
    With fewer than ``settings.loop_min_history`` the agent has no norm yet: ``continue``.
    A zero median (an agent that runs on free models) is no norm either: a multiple of $0 would
    kill its first paid token, so ``continue``. Exactly at the threshold is not past it.
    """
    cost = _money(running_cost, "running_cost")
    costs = [_money(c, "recent_costs") for c in recent_costs]
    n, k = len(costs), settings.loop_kill_multiplier
    common = dict(cost=cost, multiplier=k, history_size=n, min_history=settings.loop_min_history)
    if n < settings.loop_min_history:
        return LoopVerdict("continue", f"only {n} completed executions of this agent; the rule acts from "
                           f"{settings.loop_min_history}", baseline=None, threshold=None, **common)
    baseline = median(costs)
    if baseline == 0:
        return LoopVerdict("continue", f"the agent's median cost over {n} executions is $0: no baseline "
                           "to multiply", baseline=baseline, threshold=None, **common)
    threshold = WIDE.multiply(k, baseline)
    figures = (f"{format_cost(cost)} against {_num(k)} × the median {format_cost(baseline)} "
               f"of {n} executions = {format_cost(threshold)}")
    if cost > threshold:
        return LoopVerdict("kill", f"running cost {figures}: passed", baseline=baseline, threshold=threshold,
                           **common)
    return LoopVerdict("continue", f"running cost {figures}: not passed", baseline=baseline,
                       threshold=threshold, **common)


# =============================================================================================
# Spike: executions per account in a sliding window far above the account's own baseline
# =============================================================================================
@dataclass(frozen=True)
class SpikeSpans:
    """The two spans an instant's spike check counts executions in (``occurred_at``, half-open)."""

    window_start: datetime
    window_end: datetime
    baseline_start: datetime
    baseline_end: datetime


def spike_windows(at: datetime, *, settings: AlertSettings = DEFAULT_ALERT_SETTINGS) -> SpikeSpans:
    """Window ``[at - 5 min, at)`` and baseline ``[window_start - 7 days, window_start)`` (defaults).

    The baseline ends where the window starts, so a spike never raises its own bar.
    """
    at = _aware(at, "at")
    start = at - timedelta(minutes=settings.spike_window_minutes)
    return SpikeSpans(start, at, start - timedelta(days=settings.spike_baseline_days), start)


@dataclass(frozen=True)
class SpikeVerdict:
    pause: bool
    reason: str
    window_executions: int
    baseline_executions: int
    typical_per_window: Decimal
    """The account's mean executions per window over the baseline span."""
    threshold: Decimal
    """``max(multiplier x typical_per_window, floor)``: the window must hold MORE to pause."""
    window_minutes: int
    baseline_days: int
    multiplier: Decimal
    floor: int

    def evidence(self) -> dict[str, str | int | bool]:
        """JSON-safe figures for the anomaly record and the notice payload."""
        return {"pause": self.pause, "reason": self.reason, "window_executions": self.window_executions,
                "baseline_executions": self.baseline_executions,
                "typical_per_window": str(self.typical_per_window), "threshold": str(self.threshold),
                "window_minutes": self.window_minutes, "baseline_days": self.baseline_days,
                "multiplier": str(self.multiplier), "floor": self.floor}


def check_spike(window_executions: int, baseline_executions: int, *,
                settings: AlertSettings = DEFAULT_ALERT_SETTINGS) -> SpikeVerdict:
    """Pause when ``window_executions > max(multiplier x typical, floor)``.

    ``typical`` = ``baseline_executions`` spread evenly over the baseline span, per window
    (defaults: executions in the 7 days before the window / 2,016 five-minute windows). The mean,
    not the median, of the windows: most five-minute windows of a normal account are empty, so
    a median would be 0 and the floor alone would decide. The floor (300 per 5 minutes, one a
    second) keeps new and quiet accounts from being paused by an ordinary batch. Exactly at the
    threshold does not pause.
    """
    w = check_count(window_executions, "window_executions", AlertError)
    b = check_count(baseline_executions, "baseline_executions", AlertError)
    s = settings
    windows = Decimal(s.spike_baseline_days * 24 * 60) / Decimal(s.spike_window_minutes)
    typical = WIDE.divide(Decimal(b), windows)
    threshold = max(WIDE.multiply(s.spike_multiplier, typical), Decimal(s.spike_floor_executions))
    pause = w > threshold
    reason = (f"{w:,} executions in {s.spike_window_minutes} minutes {'is above' if pause else 'is within'} "
              f"max({_num(s.spike_multiplier)} × the usual {_num(typical, 1)} per {s.spike_window_minutes} "
              f"minutes over {s.spike_baseline_days} days, {s.spike_floor_executions:,}) = {_num(threshold, 1)}")
    return SpikeVerdict(pause, reason, w, b, typical, threshold, s.spike_window_minutes, s.spike_baseline_days,
                        s.spike_multiplier, s.spike_floor_executions)


# =============================================================================================
# Fallback: an execution ran on a more expensive model than the one requested
# =============================================================================================
@dataclass(frozen=True)
class Fallback:
    """A fallback to a costlier model; noticed once per account, agent and UTC ``day``."""

    requested_model: str
    used_model: str
    day: date
    input_tokens: int
    output_tokens: int
    requested_cost: Decimal
    """The requested model's user price for these tokens (for 1M in + 1M out when there were none)."""
    used_cost: Decimal
    compared_at: Literal["execution tokens", "list price"]

    @property
    def increase(self) -> Decimal:
        return self.used_cost - self.requested_cost


def detect_fallback(version: CatalogVersion, requested_model: str | None, used_model: str,
                    input_tokens: int, output_tokens: int, occurred_at: datetime) -> Fallback | None:
    """A ``Fallback`` when the model used costs the user more than the one requested, else None.

    Compared by the rate card (``version``: the one in force at ``occurred_at``) at the user price
    for this execution's own tokens; an execution with no tokens is compared at list price
    (1M input + 1M output tokens). No requested model, the same model, or one no dearer: None.
    """
    if requested_model is None or requested_model == used_model:
        return None
    inp = check_count(input_tokens, "input_tokens", AlertError)
    out = check_count(output_tokens, "output_tokens", AlertError)
    day = _aware(occurred_at, "occurred_at").date()
    at_list = inp == 0 and out == 0
    tokens = (PER_MILLION, PER_MILLION) if at_list else (Decimal(inp), Decimal(out))
    costs = []
    for field, code in (("requested_model", requested_model), ("model", used_model)):
        try:
            m = version.model(code)
        except CatalogError as e:
            raise CatalogError(e.message, field=field) from None
        costs.append(WIDE.divide(WIDE.add(WIDE.multiply(tokens[0], m.user_price_input(version.markup)),
                                          WIDE.multiply(tokens[1], m.user_price_output(version.markup))),
                                 PER_MILLION))
    if costs[1] <= costs[0]:
        return None
    return Fallback(requested_model, used_model, day, inp, out, costs[0], costs[1],
                    "list price" if at_list else "execution tokens")


# =============================================================================================
# Trend: at mid-month, projected month spend >= 2 x the trailing 3-month average
# =============================================================================================
def month_projection_factor(period: Period, at: datetime) -> Decimal:
    """``period length / time elapsed at at``, exactly: 2 at 00:00 UTC on the 16th of a 30-day month.

    The linear factor of the month-end projection (``billing.projection.project_usage``): the
    preview's projected total at ``at`` is the figure the trend rule compares. ``at`` must lie in
    ``(period.start, period.end]``.
    """
    at = _aware(at, "at")
    if not period.start < at <= period.end:
        raise AlertError(f"must be after the start of {period} and no later than its end, got {at.isoformat()}",
                         field="at")
    span = (period.end - period.start) // timedelta(microseconds=1)
    elapsed = (at - period.start) // timedelta(microseconds=1)
    return WIDE.divide(Decimal(span), Decimal(elapsed))


@dataclass(frozen=True)
class TrendVerdict:
    warn: bool
    reason: str
    projected: Decimal
    trailing: tuple[Decimal, ...]
    """The totals the average was taken over (most recent first)."""
    average: Decimal | None
    threshold: Decimal | None
    multiplier: Decimal

    def evidence(self) -> dict[str, str | bool | list[str] | None]:
        return {"warn": self.warn, "reason": self.reason, "projected": str(self.projected),
                "trailing": [str(t) for t in self.trailing], "average": _opt(self.average),
                "threshold": _opt(self.threshold), "multiplier": str(self.multiplier)}


def check_trend(projected_total: Decimal, trailing_totals: Sequence[Decimal], *,
                settings: AlertSettings = DEFAULT_ALERT_SETTINGS) -> TrendVerdict:
    """Warn when ``projected_total >= multiplier x average(trailing)`` (at the threshold warns).

    ``trailing_totals``: invoice totals of the calendar months before this one, most recent first,
    one per month the account was billed; the first ``settings.trend_history_months`` are averaged.
    Fewer than that: no warning (an account that young has no "usual" yet, and the budget alerts
    already watch it). An average of $0: no warning (no multiple of nothing is a trend).
    """
    projected = _money(projected_total, "projected_total")
    totals = tuple(_money(t, "trailing_totals") for t in trailing_totals)[: settings.trend_history_months]
    k = settings.trend_multiplier
    if len(totals) < settings.trend_history_months:
        return TrendVerdict(False, f"only {len(totals)} complete months of history; the rule needs "
                            f"{settings.trend_history_months}", projected, totals, None, None, k)
    average = WIDE.divide(sum(totals, Decimal(0)), Decimal(len(totals)))
    if average == 0:
        return TrendVerdict(False, f"the average of the last {len(totals)} months is $0", projected, totals,
                            average, Decimal(0), k)
    threshold = WIDE.multiply(k, average)
    warn = projected >= threshold
    reason = (f"projected {format_usd(projected)} {'reaches' if warn else 'is below'} {_num(k)} × the "
              f"{len(totals)}-month average {format_usd(average)} = {format_usd(threshold)}")
    return TrendVerdict(warn, reason, projected, totals, average, threshold, k)


# =============================================================================================
# Notices: what the shell writes into the notifications outbox
# =============================================================================================
@dataclass(frozen=True)
class Notice:
    """One row of the notifications outbox (``repositories.notifications.notify``) plus its HTML body.

    ``dedupe_key`` is stable for the event it reports: writing the same notice twice (a retry, a
    re-ingest, two concurrent writers) leaves one row. ``payload`` holds the figures, JSON-safe.
    """

    kind: str
    dedupe_key: str
    subject: str
    text: str
    html: str
    payload: dict
    html_body: str = ""
    """The HTML between ``<body>`` and ``</body>`` of ``html``: what an e-mail template wraps."""


def dedupe_key(kind: str, *parts: object) -> str:
    """``kind:part:part…``; when longer than the outbox column (160), ``kind:sha256(…)`` instead."""
    key = ":".join([kind, *(str(p) for p in parts)])
    if len(key) <= DEDUPE_KEY_MAX:
        return key
    return f"{kind}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def budget_notice(account_id: str, period: Period, check: BudgetCheck) -> Notice:
    """The e-mail for ``check.notify`` (call only when it is not None). Key: account, period, threshold."""
    p = check.notify
    if p is None:
        raise AlertError("no threshold newly crossed: there is nothing to notify", field="check")
    subject = f"You have used {p}% of your {period} budget"
    lead = (f"Usage charges on account {account_id} for {period} have reached {format_usd(check.charges)}, "
            f"{_num(check.percent_used)}% of your monthly budget of {format_usd(check.budget)}.")
    rest = [f"We tell you once per month at each of {', '.join(f'{t}%' for t in check.thresholds)}. "
            "The budget counts usage charges on top of your plan's fee; you can change it at any time."]
    figures = [("Budget", format_usd(check.budget)), ("Usage charges so far", format_usd(check.charges)),
               ("Used", f"{_num(check.percent_used)}%"), ("Threshold", f"{p}%")]
    return _notice("budget_threshold", dedupe_key("budget", account_id, period, p), subject, [lead, *rest],
                   figures, {"account_id": account_id, "period": str(period), "threshold": p,
                             "budget": str(check.budget), "charges": str(check.charges),
                             "percent_used": str(check.percent_used)})


def loop_kill_notice(account_id: str, agent_id: str, execution_id: str, verdict: LoopVerdict) -> Notice:
    """The e-mail telling the user an execution was stopped. Key: the execution (one kill each)."""
    if not verdict.kill:
        raise AlertError("the verdict is 'continue': nothing was killed", field="verdict")
    subject = f"We stopped a runaway execution of agent {agent_id}"
    lead = (f"Execution {execution_id} of agent {agent_id} had cost {format_cost(verdict.cost)}, more than "
            f"{_num(verdict.multiplier)} times the agent's usual cost per execution, so it was stopped.")
    rest = [f"Usual cost: the median of its last {verdict.history_size} completed executions. "
            "A stuck loop is the usual cause; check the agent before running it again."]
    figures = [("Running cost", format_cost(verdict.cost)), ("Usual cost", format_cost(verdict.baseline)),
               ("Limit", f"{_num(verdict.multiplier)} × usual = {format_cost(verdict.threshold)}"),
               ("Executions behind the usual cost", str(verdict.history_size))]
    return _notice("execution_killed", dedupe_key("loop-kill", account_id, execution_id), subject,
                   [lead, *rest], figures,
                   {"account_id": account_id, "agent_id": agent_id, "execution_id": execution_id,
                    **verdict.evidence()})


def spike_notice(account_id: str, window_start: datetime, verdict: SpikeVerdict) -> Notice:
    """The e-mail telling the user the account is paused. Key: the account and the window's start."""
    if not verdict.pause:
        raise AlertError("the verdict does not pause: there is nothing to notify", field="verdict")
    start = _aware(window_start, "window_start")
    subject = f"Account {account_id} paused: unusual burst of executions"
    lead = (f"Account {account_id} ran {verdict.window_executions:,} executions in the {verdict.window_minutes} "
            f"minutes from {start:%Y-%m-%d %H:%M} UTC, far above its usual {_num(verdict.typical_per_window, 1)} "
            f"per {verdict.window_minutes} minutes. "
            "New executions are refused until someone reviews it.")
    rest = ["If you did not expect this, a leaked key or a webhook firing in a loop is the usual cause: "
            "rotate the key before asking us to resume."]
    figures = [("Executions in the window", f"{verdict.window_executions:,}"),
               (f"Usual per {verdict.window_minutes} minutes (last {verdict.baseline_days} days)",
                _num(verdict.typical_per_window, 1)),
               ("Pause above", _num(verdict.threshold, 1))]
    return _notice("account_paused_anomaly",
                   dedupe_key("spike", account_id, start.strftime("%Y%m%dT%H%M%SZ")), subject, [lead, *rest],
                   figures, {"account_id": account_id, "window_start": start.isoformat(), **verdict.evidence()})


def ops_spike_notice(account_id: str, window_start: datetime, verdict: SpikeVerdict, workflow_id: str) -> Notice:
    """The same pause, told to ops, with what to do. Key: the user's notice key with ``ops-``."""
    user = spike_notice(account_id, window_start, verdict)
    subject = f"[ops] Account {account_id} paused by a spike: decision needed"
    lead = (f"{verdict.reason}. The account is paused (entitlements answer paused_anomaly) until someone "
            f"decides in workflow {workflow_id}.")
    rest = [f"Resume: tally anomalies resume {workflow_id} --by NAME --reason WHY. Keep it paused (e.g. a "
            f"compromised key): tally anomalies confirm {workflow_id} --by NAME --reason WHY. "
            "Open anomalies in the Temporal UI: AnomalyState = 'open'."]
    figures = [("Account", account_id), ("Workflow", workflow_id),
               ("Executions in the window", f"{verdict.window_executions:,}"),
               ("Pause above", _num(verdict.threshold, 1))]
    return _notice("ops_account_paused", "ops-" + user.dedupe_key, subject, [lead, *rest], figures,
                   {**user.payload, "workflow_id": workflow_id})


def anomaly_decision_notice(account_id: str, workflow_id: str, decision: Literal["resume", "confirm"], by: str,
                            reason: str) -> Notice:
    """What the user hears when a person decides on a pause. Key: the anomaly and the decision."""
    if decision == "resume":
        subject = f"Account {account_id} is running again"
        lead = f"{by} reviewed the burst of executions that paused account {account_id} and resumed it: {reason}"
        rest = ["New executions are allowed again from now on."]
    elif decision == "confirm":
        subject = f"Account {account_id} stays paused"
        lead = f"{by} reviewed the burst of executions that paused account {account_id} and kept it paused: {reason}"
        rest = ["Executions stay refused until the account is resumed; reply to this e-mail once the cause "
                "(for example a leaked key) is fixed."]
    else:
        raise AlertError(f"must be 'resume' or 'confirm', got {decision!r}", field="decision")
    figures = [("Decision", decision), ("By", by), ("Anomaly", workflow_id)]
    return _notice("anomaly_resumed" if decision == "resume" else "anomaly_confirmed",
                   dedupe_key(f"anomaly-{decision}", workflow_id), subject, [lead, *rest], figures,
                   {"account_id": account_id, "workflow_id": workflow_id, "decision": decision, "by": by,
                    "reason": reason})


def fallback_notice(account_id: str, agent_id: str, fallback: Fallback) -> Notice:
    """The e-mail about a fallback. Key: account, agent and UTC day (once per agent per day)."""
    f = fallback
    subject = f"Agent {agent_id} fell back to a more expensive model"
    basis = "for its tokens" if f.compared_at == "execution tokens" else "at list price (1M in + 1M out tokens)"
    lead = (f"On {f.day.isoformat()} an execution of agent {agent_id} asked for {f.requested_model} but ran on "
            f"{f.used_model}, which costs {format_cost(f.used_cost)} instead of {format_cost(f.requested_cost)} "
            f"{basis}.")
    rest = ["We tell you at most once a day per agent; later fallbacks the same day are billed as usual."]
    figures = [("Requested", f.requested_model), ("Ran on", f.used_model),
               ("Cost requested", format_cost(f.requested_cost)), ("Cost actual", format_cost(f.used_cost))]
    return _notice("model_fallback", dedupe_key("fallback", account_id, agent_id, f.day.isoformat()), subject,
                   [lead, *rest], figures,
                   {"account_id": account_id, "agent_id": agent_id, "day": f.day.isoformat(),
                    "requested_model": f.requested_model, "used_model": f.used_model,
                    "requested_cost": str(f.requested_cost), "used_cost": str(f.used_cost),
                    "compared_at": f.compared_at})


def trend_notice(account_id: str, period: Period, verdict: TrendVerdict) -> Notice:
    """The mid-month warning. Key: account and period (once a month)."""
    if not verdict.warn:
        raise AlertError("the verdict does not warn: there is nothing to notify", field="verdict")
    subject = f"Your {period} spend is on track for {format_usd(verdict.projected)}"
    lead = (f"At the current pace, account {account_id} will be billed about {format_usd(verdict.projected)} "
            f"for {period}, {_num(verdict.multiplier)} times or more its average of "
            f"{format_usd(verdict.average)} over the last {len(verdict.trailing)} months.")
    rest = ["The projection scales this month's usage so far to the whole month; your plan's fee is counted "
            "once."]
    figures = [("Projected this month", format_usd(verdict.projected)),
               (f"Average of the last {len(verdict.trailing)} months", format_usd(verdict.average)),
               ("Warning from", format_usd(verdict.threshold))]
    return _notice("spend_trend", dedupe_key("trend", account_id, period), subject, [lead, *rest], figures,
                   {"account_id": account_id, "period": str(period), **verdict.evidence()})


def _notice(kind: str, key: str, subject: str, paragraphs: list[str], figures: list[tuple[str, str]],
            payload: dict) -> Notice:
    """Plain text and simple HTML from the same paragraphs and figures, so both say the same."""
    width = max(len(label) for label, _ in figures)
    text = "\n\n".join(paragraphs) + "\n\n" + "\n".join(f"  {label.ljust(width)}  {value}"
                                                         for label, value in figures) + "\n"
    e = html.escape
    rows = "".join(f"<tr><th align=\"left\">{e(label)}</th><td>{e(value)}</td></tr>" for label, value in figures)
    body = "".join(f"<p>{e(p)}</p>" for p in paragraphs)
    fragment = f"{body}<table>{rows}</table>"
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(subject)}</title></head>"
            f"<body>{fragment}</body></html>")
    return Notice(kind, key, subject, text, page, payload, fragment)


# ---- formatting --------------------------------------------------------------------------------
def format_cost(x: Decimal | None) -> str:
    """A per-execution cost to a millionth of a dollar, at least cents: ``$0.000675``, ``$0.03``."""
    if x is None:
        return "—"
    return format_rate(x.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP, context=WIDE))


def _opt(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


__all__ = [
    "AlertError", "default_budget", "budget_charges", "MonthUsage", "budget_charges_ceiling", "budget_may_cross",
    "BudgetCheck",
    "check_budget",
    "LoopVerdict", "loop_verdict", "SpikeSpans", "spike_windows", "SpikeVerdict", "check_spike",
    "Fallback", "detect_fallback", "month_projection_factor", "TrendVerdict", "check_trend",
    "Notice", "dedupe_key", "budget_notice", "loop_kill_notice", "spike_notice", "ops_spike_notice",
    "anomaly_decision_notice", "fallback_notice", "trend_notice", "format_cost",
]
