"""Usage reporting to Stripe Billing Meters: the rules, with no I/O and no clock.

What Tally reports (``meter_definitions``): one Stripe meter per quantity a price applies to, so that an
account-hour costs at most one meter event per meter with usage:
- ``executions``: every execution that is not a sandbox try (BYOK included: it counts as an execution);
- ``input_tokens:<model>`` and ``output_tokens:<model>``: the tokens of platform-key executions (BYOK and
  sandbox tries carry no token charge), one meter per model and direction.
Meters carry usage; the split at the included quota stays the close's (it depends on the whole month).

When and what (``last_ended_hour``, ``reportable``): an hour ``[H, H+1h)`` is reported once it has ended
plus a lag for in-flight events; its events carry the hour's start as timestamp, which Stripe accepts
only within the past 35 days (and at most 5 minutes ahead).

Never twice (``decide_report``): what was reported is a list of revisions per account, meter and hour.
Each revision carries the difference between the truth (the executions known now) and what the earlier
revisions reported, under the deterministic ``identifier(account, meter, hour, revision)``. A revision
whose outcome is not known yet is sent again unchanged (same identifier, same value) before anything new;
a late event makes the next revision, never a repeat of an old one.

At close (``explain_drift``): Tally's totals per account and meter against Stripe's summaries, with the
part Tally never reported (hours past Stripe's window, failures) told apart from drift nobody explains.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from billing.errors import BillingError

UTC = timezone.utc
HOUR = timedelta(hours=1)

# Stripe's rules for v1 meter events (STACK-NOTES): timestamps within the past 35 days and at most
# 5 minutes ahead; identifiers unique over at least 24 h, at most 100 characters.
STRIPE_PAST_WINDOW = timedelta(days=35)
STRIPE_FUTURE_WINDOW = timedelta(minutes=5)
IDENTIFIER_MAX = 100
EVENT_NAME_MAX = 100
# An hour is refused this long before Stripe would refuse it: the plan and the send are not the same
# instant, and Stripe's clock is not ours.
WINDOW_MARGIN = timedelta(minutes=10)
# Rows ingested this long before the last corrections scan may still have been in flight then.
SCAN_MARGIN = timedelta(minutes=10)

QUANTITIES = ("executions", "input_tokens", "output_tokens")
_HOUR_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})")
_HOUR_HINT = "expected 'YYYY-MM-DDTHH' (UTC), e.g. '2026-10-14T09'"


class MeterError(BillingError):
    """A meter definition, an hour or a report cannot be used as given."""


# ---- hours ------------------------------------------------------------------------------------------
def parse_hour(text: str, field: str = "hour") -> datetime:
    """``YYYY-MM-DDTHH`` (UTC) -> the hour's start."""
    m = _HOUR_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m:
        raise MeterError(f"{_HOUR_HINT}; got {text!r}", field=field)
    try:
        return datetime(*(int(g) for g in m.groups()), tzinfo=UTC)
    except ValueError as err:
        raise MeterError(f"{_HOUR_HINT}; got {text!r} ({err})", field=field) from None


def format_hour(hour: datetime) -> str:
    return floor_hour(hour).strftime("%Y-%m-%dT%H")


def floor_hour(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise MeterError(f"must be timezone-aware, got {ts.isoformat()}", field="hour")
    ts = ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def last_ended_hour(now: datetime, lag: timedelta) -> datetime:
    """The latest hour that has ended at least ``lag`` before ``now`` (what an hourly run reports)."""
    return floor_hour(now - lag) - HOUR


def hours_between(first: datetime, last: datetime) -> list[datetime]:
    """Every hour from ``first`` to ``last``, both included, oldest first."""
    out, h = [], floor_hour(first)
    while h <= last:
        out.append(h)
        h += HOUR
    return out


def oldest_reportable_hour(now: datetime) -> datetime:
    """The oldest hour whose events Stripe still accepts at ``now`` (with a safety margin)."""
    earliest = now - STRIPE_PAST_WINDOW + WINDOW_MARGIN
    start = floor_hour(earliest)
    return start if start >= earliest else start + HOUR


def why_not_reportable(hour: datetime, now: datetime, lag: timedelta = timedelta(0)) -> str | None:
    """None when ``hour`` may be reported at ``now``; else the reason, in words for ops."""
    if hour + HOUR + lag > now:
        return (f"hour {format_hour(hour)} has not ended yet (plus the {int(lag.total_seconds() // 60)} min "
                "lag for in-flight events)")
    if hour < oldest_reportable_hour(now):
        return (f"hour {format_hour(hour)} is older than Stripe's 35-day meter event window: its usage "
                "cannot be reported any more (the close's reconciliation lists the difference)")
    return None


# ---- meters -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeterDef:
    """One Stripe meter Tally reports to. ``key`` is Tally's name for it (``input_tokens:claude-haiku``)."""

    key: str
    quantity: str
    model: str | None
    event_name: str
    display_name: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def meter_key(quantity: str, model: str | None = None) -> str:
    if quantity not in QUANTITIES:
        raise MeterError(f"unknown quantity {quantity!r}; expected one of {', '.join(QUANTITIES)}", field="quantity")
    if quantity == "executions":
        return quantity
    if not model:
        raise MeterError(f"{quantity} meters are per model: a model is required", field="model")
    return f"{quantity}:{model}"


def meter_definitions(models: Iterable[str]) -> list[MeterDef]:
    """The meters for these models: executions, then input and output tokens per model (sorted)."""
    defs = [MeterDef("executions", "executions", None, "tally_executions", "Tally executions")]
    for model in sorted(set(models)):
        slug = _slug(model)
        if not slug:
            raise MeterError(f"model {model!r} has no letters or digits to name a meter after", field="model")
        for quantity, label in (("input_tokens", "input tokens"), ("output_tokens", "output tokens")):
            defs.append(MeterDef(meter_key(quantity, model), quantity, model, f"tally_{quantity}__{slug}",
                                 f"Tally {label}, {model}"))
    seen: dict[str, str] = {}
    for d in defs:
        if len(d.event_name) > EVENT_NAME_MAX:
            raise MeterError(f"meter event name {d.event_name!r} is longer than {EVENT_NAME_MAX} characters",
                             field="model")
        if d.event_name in seen:
            raise MeterError(f"models {seen[d.event_name]!r} and {d.key!r} would share the meter event name "
                             f"{d.event_name!r}", field="model")
        seen[d.event_name] = d.key
    return defs


@dataclass(frozen=True)
class HourUsage:
    """One account's usage of one model in one hour, as the database aggregates it."""

    account_id: str
    model: str
    executions: int
    input_tokens: int
    output_tokens: int


def quantities_by_meter(rows: Iterable[HourUsage]) -> dict[tuple[str, str], int]:
    """(account, meter key) -> the quantity to report; zero quantities are left out (nothing to send)."""
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        for key, value in (("executions", r.executions),
                           (meter_key("input_tokens", r.model), r.input_tokens),
                           (meter_key("output_tokens", r.model), r.output_tokens)):
            if value < 0:
                raise MeterError(f"{key} of {r.account_id} is negative ({value})", field=key)
            if value:
                out[(r.account_id, key)] = out.get((r.account_id, key), 0) + value
    return out


def chunk_size_for(accounts: int, largest: int, parallel: int) -> int:
    """Accounts per chunk for an hour of ``accounts``: at most ``largest``, and as equal as can be in a
    multiple of ``parallel`` chunks, so that no round of the fan-out runs a small last chunk alone."""
    if accounts <= 0:
        return max(1, largest)
    rounds = -(-accounts // (parallel * largest))
    return max(1, -(-accounts // (parallel * rounds)))


# ---- identifiers ------------------------------------------------------------------------------------
def identifier(account_id: str, meter_id: int, hour: datetime, revision: int) -> str:
    """The meter event identifier of one revision: the same for every retry and re-run, different for
    every revision, at most 100 characters (a long account id is replaced by its digest)."""
    if revision < 1:
        raise MeterError(f"revision must be >= 1, got {revision}", field="revision")
    tail = f":m{meter_id}:{format_hour(hour)}:r{revision}"
    text = f"{account_id}{tail}"
    if len(text) <= IDENTIFIER_MAX:
        return text
    digest = hashlib.sha256(account_id.encode()).hexdigest()[:32]
    return f"h-{digest}{tail}"


def report_subject(account_id: str, meter_id: int, hour: datetime) -> str:
    """What ``stripe_requests`` records the events of one account, meter and hour under."""
    return f"usage:{account_identity(account_id, meter_id, hour)}"


def account_identity(account_id: str, meter_id: int, hour: datetime) -> str:
    return f"{account_id}:m{meter_id}:{format_hour(hour)}"


# ---- what to send ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Revision:
    """One revision recorded for an account, meter and hour: ``state`` sending|reported|failed."""

    revision: int
    quantity: int
    state: str


@dataclass(frozen=True)
class Send:
    """Send revision ``revision`` with ``quantity``; ``resend``: it was recorded before and its outcome
    is not known as success (sent again unchanged). ``reported_before``: the sum of earlier revisions."""

    revision: int
    quantity: int
    resend: bool
    reported_before: int


@dataclass(frozen=True)
class OverReported:
    """Stripe holds more than Tally knows (executions never disappear, so this is a bug to look at)."""

    truth: int
    reported: int


def decide_report(truth: int, revisions: Iterable[Revision]) -> Send | OverReported | None:
    """What to send for one account, meter and hour, given the truth now and the revisions so far.

    - a revision not known to have succeeded (``sending`` or ``failed``) is sent again as it was: its
      value and identifier never change, so if it had landed Stripe refuses it as a duplicate;
    - else the difference between the truth and the sum of reported revisions, as the next revision;
    - nothing when they agree. Revisions are settled in order, so at most one is ever unsettled."""
    if truth < 0:
        raise MeterError(f"usage cannot be negative, got {truth}", field="quantity")
    revs = sorted(revisions, key=lambda r: r.revision)
    for i, r in enumerate(revs):
        if r.revision != i + 1:
            raise MeterError(f"revisions must run 1, 2, 3...; got {[x.revision for x in revs]}", field="revision")
    reported = sum(r.quantity for r in revs if r.state == "reported")
    unsettled = [r for r in revs if r.state != "reported"]
    if unsettled:
        if len(unsettled) > 1 or unsettled[0] is not revs[-1]:
            raise MeterError("only the last revision may be unsettled", field="revision")
        r = unsettled[0]
        return Send(r.revision, r.quantity, resend=True, reported_before=reported)
    if truth == reported:
        return None
    if truth < reported:
        return OverReported(truth, reported)
    return Send(len(revs) + 1, truth - reported, resend=False, reported_before=reported)


# ---- the plan of a run -------------------------------------------------------------------------------
@dataclass(frozen=True)
class HourPlan:
    """Which hours a run reports (oldest first) and which it must refuse (past Stripe's window)."""

    to_report: list[datetime]
    expired: list[datetime]
    empty: list[datetime]


def plan_hours(candidates: Iterable[datetime], with_usage: set[datetime], now: datetime) -> HourPlan:
    """Split the hours a run should look at: those with usage inside Stripe's window are reported,
    oldest first; those with usage beyond it are refused; those without usage need no Stripe call."""
    oldest = oldest_reportable_hour(now)
    to_report, expired, empty = [], [], []
    for h in sorted(set(candidates)):
        if h not in with_usage:
            empty.append(h)
        elif h < oldest:
            expired.append(h)
        else:
            to_report.append(h)
    return HourPlan(to_report, expired, empty)


# ---- reconciliation ----------------------------------------------------------------------------------
# Stripe aggregates meter events asynchronously: a summary may not show an accepted event yet. What Tally
# sent less than this long ago may be missing from Stripe's summary without being drift (a setting:
# ``meters_settle_minutes``); the reconciliation checks such a pair again once it has settled.
DEFAULT_SETTLE = timedelta(minutes=60)


@dataclass(frozen=True)
class Drift:
    """Tally's total against Stripe's for one account and meter over a period."""

    tally: int
    reported: int
    stripe: int | None  # None: Stripe could not be asked (no customer)
    drift: int  # stripe (+ unsettled) - tally (0 when they agree)
    unreported: int  # tally - reported: what Tally never sent
    unexplained: int  # stripe (+ unsettled) - reported: what Stripe holds that Tally's records do not explain
    explanation: str
    unsettled: int = 0  # sent within the settle time and not in Stripe's summary yet: not drift (yet)


def explain_drift(*, tally: int, reported: int, stripe: int | None, expired_hours: int = 0,
                  unsettled_events: int = 0, has_customer: bool = True, recent: int = 0) -> Drift:
    """Compare and say why they differ, in words for ops.

    ``recent``: what Tally reported for the pair within the settle time. When Stripe's summary is short of
    what Tally reported, up to that much of the shortfall is Stripe's summaries lagging, not drift: it is
    ``unsettled`` (the reconciliation checks again later). A summary short by more than the recent sends
    (the rest), or above what Tally reported, is drift at once."""
    if stripe is None:
        stripe_v = 0
    else:
        stripe_v = stripe
    unsettled = 0
    if stripe is not None and stripe_v < reported:
        unsettled = min(reported - stripe_v, max(recent, 0))
    seen = stripe_v + unsettled  # what Stripe will show once its summaries catch up
    drift = seen - tally
    unreported = tally - reported
    unexplained = seen - reported
    lagging = (f"{unsettled} sent within the settle time not in Stripe's summary yet "
               "(its summaries lag; checked again once settled)") if unsettled else ""
    if drift == 0 and unexplained == 0:
        return Drift(tally, reported, stripe, 0, unreported, 0, lagging or "in agreement", unsettled)
    reasons = [lagging] if lagging else []
    if unreported > 0:
        why = []
        if not has_customer:
            why.append("the account has no Stripe customer")
        if expired_hours:
            why.append(f"{expired_hours} hour(s) older than Stripe's 35-day window")
        if unsettled_events:
            why.append(f"{unsettled_events} event(s) failed or not settled yet (tally meters status)")
        if not why:
            why.append("usage arrived after its hour was reported and the correction is not sent yet")
        reasons.append(f"{unreported} not reported to Stripe: " + "; ".join(why))
    elif unreported < 0:
        reasons.append(f"Tally reported {-unreported} more than its executions hold")
    if unexplained:
        reasons.append(f"Stripe holds {stripe_v} but Tally reported {reported} ({unexplained:+d} unexplained: "
                       "events lost or sent by someone else)")
    return Drift(tally, reported, stripe, drift, unreported, unexplained, "; ".join(reasons), unsettled)
