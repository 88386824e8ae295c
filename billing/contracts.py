"""Enterprise committed-use contracts: the pure rules (no I/O, no clock).

A contract commits an enterprise account to ``commitment`` executions a month for ``months`` months
from ``start`` (00:00 UTC of a day). Each month the committed volume is billed at the discounted rate
of its tier whether used or not; executions above it are billed at the standard rate. The tiers, the
standard rate and the minimums come from the catalog version in force on the start day
(``CatalogVersion.contracts``); the contract keeps that version for its whole term, amendments included.

The shell (workflow ``contract-<id>``, the close, the CLI/API) only loads facts, calls these functions
and stores what they return:

* ``create_contract`` — validate and price a new contract (one ``ContractError`` naming the field).
* ``ContractHistory`` — a contract plus its amendments, oldest first; every "what is in force when"
  question is answered from it. Amendments are effective-dated, so the same history always gives the
  same months: a close re-run that recomputes a month gets the same figures.
* ``raise_commitment`` / ``extend_term`` / ``terminate_early`` — validate an amendment and return the
  ``Amendment`` to append (``history.amend(a)``). A Temporal update validator calls the same function
  and discards the result, so validator and handler cannot disagree.
* ``term_months`` / ``contract_month`` — what each contract month looks like (days, commitment
  segments, prorated committed executions, rates, the termination fee on the last month).
* ``reconcile_month`` — committed vs used for one month: the figures to record and the invoice lines.
* ``summarize_term`` — the contract summary at term end, from the recorded reconciliations.

Rounding (see docs/decisions.md, "Committed-use contracts"): a month's prorated commitment is rounded
to a whole number of executions, half-up, once per month (shared between commitment segments by
rounding the running total); each line's amount is ``round_money(quantity x unit_price)``, rounded once
to the cent, half-up. So every line reads ``quantity x unit price = amount`` and overage is a whole
number of executions.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import Enum

from billing.catalog import Catalog, CatalogVersion, CommittedUse
from billing.errors import BillingError, CatalogError
from billing.money import ZERO, format_rate, format_usd, round_money
from billing.periods import UTC, Period
from billing.rating import LineKind, ModelUsage, RatedInvoice, RatedLine, TermsSegment, UsageRow, llm_cost

_EXACT = Context(prec=60, rounding=ROUND_HALF_UP)
ENTERPRISE_PLAN = "enterprise"
CONTRACT_LINE_KINDS = frozenset({"committed_use", "committed_usage", "contract_overage", "termination_fee",
                                 "enterprise_usage"})
"""The invoice line kinds an enterprise account's contracts bill (``billing.rating.LineKind`` values)."""
UTILISATION_PLACES = Decimal("0.0001")
"""Utilisation (used / committed) is reported as a fraction rounded half-up to 4 places (0.01%)."""


class ContractError(BillingError):
    """A contract or an amendment breaks a rule; ``.field`` names the offending field."""


# --------------------------------------------------------------------------------------------
# Days
# --------------------------------------------------------------------------------------------
def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def utc_day(day: date) -> datetime:
    """00:00 UTC of a calendar day: how the shell turns ``--start 2026-10-17`` into a contract start."""
    if isinstance(day, datetime) or not isinstance(day, date):
        raise ContractError(f"must be a calendar date such as 2026-10-17, got {day!r}", field="start")
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _require_day(ts: object, field: str) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise ContractError(f"must be a timezone-aware datetime at 00:00 UTC, got {ts!r}", field=field)
    u = ts.astimezone(UTC)
    if (u.hour, u.minute, u.second, u.microsecond) != (0, 0, 0, 0):
        raise ContractError(f"must be 00:00 UTC of a day (contracts run in whole UTC days), got {u.isoformat()}",
                            field=field)
    return u


def _require_instant(ts: object, field: str) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise ContractError(f"must be a timezone-aware datetime, got {ts!r}", field=field)
    return ts.astimezone(UTC)


def next_day(ts: datetime) -> datetime:
    """00:00 UTC of the UTC day after ``ts``: when an amendment requested at ``ts`` takes effect."""
    u = _require_instant(ts, "requested_at")
    return datetime(u.year, u.month, u.day, tzinfo=UTC) + timedelta(days=1)


def anniversary(start: datetime, months: int) -> datetime:
    """The exclusive end of a term of ``months`` months from ``start``: the same day of the month
    ``months`` later (2026-10-17 + 12 -> 2027-10-17). When that month has no such day, the term runs
    to the end of that month (2026-01-31 + 13 -> 2027-03-01, i.e. through 2027-02-28)."""
    start = _require_day(start, "start")
    y, m = divmod(start.month - 1 + months, 12)
    year, month = start.year + y, m + 1
    if year > 9998:
        raise ContractError(f"a term of {months:,} months from {_fmt_day(start)} ends after the year 9998",
                            field="months")
    if start.day <= calendar.monthrange(year, month)[1]:
        return datetime(year, month, start.day, tzinfo=UTC)
    return Period(year, month).end


def _fmt_day(ts: datetime) -> str:
    return f"{ts:%Y-%m-%d}"


def _span_label(start: datetime, end: datetime) -> str:
    """``Oct 17–31`` (end exclusive)."""
    last = end - timedelta(days=1)
    return f"{start:%b} {start.day}–{last.day}"


# --------------------------------------------------------------------------------------------
# The contract and its amendments
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contract:
    """What was signed. Build it with ``create_contract`` (which validates it against the catalog and
    the account's other contracts); constructing it directly only checks types.

    ``start`` is 00:00 UTC of the first day; the term ends (exclusive) at ``anniversary(start, months)``.
    ``catalog_version`` is the id of the version that priced it (in force on ``start``); its tiers and
    rates apply for the whole term. ``id`` is assigned by the shell when it stores the contract; it is
    needed to bill (line keys) but not to validate.
    """

    account: str
    commitment: int
    start: datetime
    months: int
    catalog_version: str
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.account, str) or not self.account.strip():
            raise ContractError(f"must be a non-empty account id, got {self.account!r}", field="account")
        if not _is_int(self.commitment) or self.commitment <= 0:
            raise ContractError(f"must be a whole number of executions per month, got {self.commitment!r}",
                                field="commitment")
        object.__setattr__(self, "start", _require_day(self.start, "start"))
        if not _is_int(self.months) or self.months <= 0:
            raise ContractError(f"must be a whole number of months, got {self.months!r}", field="months")
        if not isinstance(self.catalog_version, str) or not self.catalog_version:
            raise ContractError(f"must be a catalog version id, got {self.catalog_version!r}",
                                field="catalog_version")
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise ContractError(f"must be a non-empty string or None, got {self.id!r}", field="id")


class AmendmentKind(str, Enum):
    raise_commitment = "raise_commitment"
    extend_term = "extend_term"
    terminate = "terminate"


@dataclass(frozen=True)
class Amendment:
    """One accepted change to a contract, effective from 00:00 UTC of ``effective``.

    Produced by ``raise_commitment`` / ``extend_term`` / ``terminate_early``; the shell stores all
    fields and rebuilds it from storage (``ContractHistory`` replays and re-checks the sequence).

    * raise_commitment: ``commitment`` (the new monthly commitment) applies from ``effective``.
    * extend_term: ``extra_months`` are added to the term (``effective`` = the day it was agreed).
    * terminate: the term ends (exclusive) at ``effective``; a fee is due (see ``TerminationFee``).
    """

    kind: AmendmentKind
    requested_at: datetime
    effective: datetime
    commitment: int | None = None
    extra_months: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", AmendmentKind(self.kind))
        except ValueError:
            raise ContractError(f"must be one of {', '.join(k.value for k in AmendmentKind)}, got {self.kind!r}",
                                field="kind") from None
        object.__setattr__(self, "requested_at", _require_instant(self.requested_at, "requested_at"))
        object.__setattr__(self, "effective", _require_day(self.effective, "effective"))
        wants_commitment = self.kind is AmendmentKind.raise_commitment
        wants_months = self.kind is AmendmentKind.extend_term
        if wants_commitment != (self.commitment is not None):
            raise ContractError(f"is {'required' if wants_commitment else 'not allowed'} for {self.kind.value}",
                                field="commitment")
        if wants_months != (self.extra_months is not None):
            raise ContractError(f"is {'required' if wants_months else 'not allowed'} for {self.kind.value}",
                                field="extra_months")


@dataclass(frozen=True)
class ContractHistory:
    """A contract and its amendments in the order they were accepted: the contract as it stands.

    Constructing it replays every amendment through the same checks that accepted it, so a history
    rebuilt from storage is either exactly what the amendment functions produced or a ``ContractError``.
    (Overlap with the account's other contracts is checked when an amendment is made, not on replay.)
    """

    contract: Contract
    amendments: tuple[Amendment, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.contract, Contract):
            raise ContractError(f"must be a Contract, got {type(self.contract).__name__}", field="contract")
        object.__setattr__(self, "amendments", tuple(self.amendments))
        for i, a in enumerate(self.amendments):
            if not isinstance(a, Amendment):
                raise ContractError(f"[{i}] must be an Amendment, got {type(a).__name__}", field="amendments")
            prior = ContractHistory._unchecked(self.contract, self.amendments[:i])
            expected = _decide(prior, a)
            if expected != a:
                raise ContractError(
                    f"[{i}] ({a.kind.value} requested {a.requested_at.isoformat()}) does not follow from the "
                    f"amendments before it: expected {expected!r}", field="amendments")

    @classmethod
    def _unchecked(cls, contract: Contract, amendments: tuple[Amendment, ...]) -> ContractHistory:
        h = object.__new__(cls)
        object.__setattr__(h, "contract", contract)
        object.__setattr__(h, "amendments", amendments)
        return h

    def amend(self, amendment: Amendment) -> ContractHistory:
        """This history with ``amendment`` appended (re-checked)."""
        return ContractHistory(self.contract, (*self.amendments, amendment))

    # -- what is in force ------------------------------------------------------------------------
    @property
    def start(self) -> datetime:
        return self.contract.start

    @property
    def months(self) -> int:
        """Contract months signed, extensions included (a termination does not change it)."""
        return self.contract.months + sum(a.extra_months for a in self.amendments
                                          if a.kind is AmendmentKind.extend_term)

    @property
    def scheduled_end(self) -> datetime:
        """Exclusive end of the term as signed and extended, ignoring an early termination."""
        return anniversary(self.start, self.months)

    @property
    def termination(self) -> Amendment | None:
        return next((a for a in self.amendments if a.kind is AmendmentKind.terminate), None)

    @property
    def end(self) -> datetime:
        """Exclusive end of the term: the termination day if terminated early, else ``scheduled_end``."""
        t = self.termination
        return t.effective if t is not None else self.scheduled_end

    def commitment_on(self, day: datetime) -> int:
        """The monthly commitment in force on ``day`` (the latest raise effective on or before it)."""
        day = _require_day(day, "day")
        c = self.contract.commitment
        for a in self.amendments:
            if a.kind is AmendmentKind.raise_commitment and a.effective <= day:
                c = a.commitment
        return c

    @property
    def current_commitment(self) -> int:
        """The commitment after every accepted raise."""
        return ([a.commitment for a in self.amendments if a.kind is AmendmentKind.raise_commitment]
                or [self.contract.commitment])[-1]

    def commitment_changes(self) -> list[tuple[datetime, int]]:
        """``[(from_day, commitment), ...]``: the commitment schedule, first entry at ``start``."""
        out = [(self.start, self.contract.commitment)]
        for a in self.amendments:
            if a.kind is AmendmentKind.raise_commitment:
                if out[-1][0] == a.effective:
                    out[-1] = (a.effective, a.commitment)
                else:
                    out.append((a.effective, a.commitment))
        return out


def _history(h: ContractHistory | Contract) -> ContractHistory:
    if isinstance(h, Contract):
        return ContractHistory(h)
    if not isinstance(h, ContractHistory):
        raise ContractError(f"must be a Contract or ContractHistory, got {type(h).__name__}", field="contract")
    return h


# --------------------------------------------------------------------------------------------
# Creating a contract
# --------------------------------------------------------------------------------------------
def contract_pricing(version: CatalogVersion) -> CommittedUse:
    """The committed-use section of ``version`` (``ContractError`` if it has none)."""
    if version.contracts is None:
        raise ContractError(f"catalog version {version.version!r} does not price committed-use contracts "
                            "(it has no [versions.contracts] section)", field="catalog_version")
    return version.contracts


def _pricing_for(history: ContractHistory, version: CatalogVersion) -> CommittedUse:
    if version.version != history.contract.catalog_version:
        raise ContractError(f"the contract is priced by catalog version {history.contract.catalog_version!r}, "
                            f"got {version.version!r}", field="catalog_version")
    return contract_pricing(version)


def _check_no_overlap(account: str, contract_id: str | None, start: datetime, end: datetime,
                      others: Sequence[ContractHistory | Contract], field: str) -> None:
    for other in others:
        o = _history(other)
        if o.contract.account != account or (contract_id is not None and o.contract.id == contract_id):
            continue
        if start < o.end and o.start < end:
            name = f"contract {o.contract.id}" if o.contract.id else "another contract"
            raise ContractError(
                f"the term {_fmt_day(start)} to {_fmt_day(end)} (exclusive) overlaps {name} of account "
                f"{account!r} ({_fmt_day(o.start)} to {_fmt_day(o.end)}); an account has one contract at a time",
                field=field)


def create_contract(catalog: Catalog, *, account: str, commitment: int, start: datetime, months: int,
                    earliest_open_period: Period, others: Sequence[ContractHistory | Contract] = (),
                    contract_id: str | None = None) -> Contract:
    """Validate and price a new contract; the discount comes from the catalog's tier table.

    ``start`` is 00:00 UTC of the first day (``utc_day(date)``); it must fall in ``earliest_open_period``
    or later (the first period the monthly close has not closed yet). ``others`` are the account's
    other contracts (any contracts may be passed: other accounts' are ignored; each as its
    ``ContractHistory`` so early terminations and extensions count). The catalog version in force on
    ``start`` prices it and must have a ``contracts`` section.

    Raises one ``ContractError`` for the first rule broken, naming the field: ``account``,
    ``commitment`` / ``months`` (whole numbers), ``start`` (00:00 UTC of a day, covered by the
    catalog), ``catalog_version`` (the version prices contracts), ``commitment`` (at least the minimum),
    ``months`` (at least the minimum), ``start`` (not in a closed period; not overlapping another
    contract of the account).
    """
    if not isinstance(catalog, Catalog):
        raise ContractError(f"must be a Catalog, got {type(catalog).__name__}", field="catalog")
    if not isinstance(earliest_open_period, Period):
        raise ContractError(f"must be a Period, got {earliest_open_period!r}", field="earliest_open_period")
    if not isinstance(account, str) or not account.strip():
        raise ContractError(f"must be a non-empty account id, got {account!r}", field="account")
    if not _is_int(commitment):
        raise ContractError(f"must be a whole number of executions per month, got {commitment!r}",
                            field="commitment")
    if not _is_int(months):
        raise ContractError(f"must be a whole number of months, got {months!r}", field="months")
    start = _require_day(start, "start")
    try:
        version = catalog.at(start)
    except CatalogError as e:
        raise ContractError(e.message, field="start") from None
    pricing = contract_pricing(version)
    if commitment < pricing.minimum_commitment:
        raise ContractError(f"must be at least {pricing.minimum_commitment:,} executions a month "
                            f"(the minimum commitment), got {commitment:,}", field="commitment")
    if months < pricing.minimum_months:
        raise ContractError(f"must be at least {pricing.minimum_months} (a contract runs at least "
                            f"{pricing.minimum_months} months), got {months}", field="months")
    if Period.of(start) < earliest_open_period:
        raise ContractError(f"{_fmt_day(start)} falls in {Period.of(start)}, which is already closed; the "
                            f"earliest open period is {earliest_open_period}", field="start")
    contract = Contract(account, commitment, start, months, version.version, contract_id)
    _check_no_overlap(account, contract_id, start, anniversary(start, months), others, "start")
    return contract


# --------------------------------------------------------------------------------------------
# Amendments: validate, then return the effect to append
# --------------------------------------------------------------------------------------------
def _refuse_if_closed(h: ContractHistory, requested_at: datetime, what: str) -> None:
    t = h.termination
    if t is not None:
        raise ContractError(f"the contract was terminated effective {_fmt_day(t.effective)}; it cannot be {what}",
                            field="contract")
    if requested_at >= h.end:
        raise ContractError(f"the term ended on {_fmt_day(h.end)} (exclusive); it cannot be {what} — "
                            "sign a new contract", field="contract")
    if h.amendments and requested_at < h.amendments[-1].requested_at:
        raise ContractError(f"{requested_at.isoformat()} is before the previous amendment "
                            f"({h.amendments[-1].requested_at.isoformat()}); amendments are applied in order",
                            field="requested_at")


def raise_commitment(history: ContractHistory | Contract, commitment: int, requested_at: datetime) -> Amendment:
    """Raise the monthly commitment from the day after ``requested_at`` (or from the start, if the
    contract has not started). The new commitment's tier (and so its discount) applies from that day;
    the month it falls in is prorated by days between the old and the new commitment.

    Refused: a commitment not higher than the current one (a lowered commitment mid-term is refused:
    the discount was granted for the committed volume for the whole term), a terminated or ended
    contract, a raise that would take effect at or after the end of the term.
    """
    h = _history(history)
    requested_at = _require_instant(requested_at, "requested_at")
    if not _is_int(commitment):
        raise ContractError(f"must be a whole number of executions per month, got {commitment!r}",
                            field="commitment")
    _refuse_if_closed(h, requested_at, "amended")
    current = h.current_commitment
    if commitment < current:
        raise ContractError(
            f"cannot be lowered mid-term (from {current:,} to {commitment:,} a month): the discount was granted "
            f"for committing to {current:,} a month until {_fmt_day(h.end)}; a lower commitment needs a new "
            "contract after this term", field="commitment")
    if commitment == current:
        raise ContractError(f"is already {current:,} a month; a raise must be higher", field="commitment")
    effective = max(next_day(requested_at), h.start)
    if effective >= h.end:
        raise ContractError(f"the term ends on {_fmt_day(h.end)} (exclusive), so a raise from "
                            f"{_fmt_day(effective)} would cover no day", field="requested_at")
    return Amendment(AmendmentKind.raise_commitment, requested_at, effective, commitment=commitment)


def extend_term(history: ContractHistory | Contract, extra_months: int, requested_at: datetime,
                others: Sequence[ContractHistory | Contract] = ()) -> Amendment:
    """Add ``extra_months`` (>= 1) to the term, agreed at ``requested_at`` (before the term ends).

    The new end is ``anniversary(start, months + extra_months)``: the former last month, if it was
    prorated, becomes a whole month and the new last month is prorated instead. Months already
    closed are never changed (they end before the old end). ``others``: the account's other contracts;
    the longer term must not overlap one (as in ``create_contract``).
    """
    h = _history(history)
    requested_at = _require_instant(requested_at, "requested_at")
    if not _is_int(extra_months) or extra_months < 1:
        raise ContractError(f"must be a whole number of months, at least 1, got {extra_months!r}",
                            field="extra_months")
    _refuse_if_closed(h, requested_at, "extended")
    new_end = anniversary(h.start, h.months + extra_months)
    c = h.contract
    _check_no_overlap(c.account, c.id, h.start, new_end, others, "extra_months")
    return Amendment(AmendmentKind.extend_term, requested_at, next_day(requested_at), extra_months=extra_months)


def terminate_early(history: ContractHistory | Contract, requested_at: datetime) -> Amendment:
    """End the term early, from the day after ``requested_at`` (the term's last day is the request day).

    The months are billed as usual up to the termination (the last one prorated by days), and the last
    month's invoice also carries the early-termination fee: the committed-use charge the remaining term
    would have billed (see ``TerminationFee``). Refused before the contract starts (nothing to end
    early) and when the term would end by then anyway.
    """
    h = _history(history)
    requested_at = _require_instant(requested_at, "requested_at")
    _refuse_if_closed(h, requested_at, "terminated")
    effective = next_day(requested_at)
    if effective <= h.start:
        raise ContractError(f"the contract has not started (it starts {_fmt_day(h.start)}); there is no term to "
                            "end early", field="requested_at")
    if effective >= h.end:
        raise ContractError(f"the term already ends on {_fmt_day(h.end)} (exclusive); ending it from "
                            f"{_fmt_day(effective)} is not early", field="requested_at")
    return Amendment(AmendmentKind.terminate, requested_at, effective)


def _decide(prior: ContractHistory, a: Amendment) -> Amendment:
    """What the amendment functions would have produced from ``prior`` for ``a``'s request."""
    if a.kind is AmendmentKind.raise_commitment:
        return raise_commitment(prior, a.commitment, a.requested_at)
    if a.kind is AmendmentKind.extend_term:
        return extend_term(prior, a.extra_months, a.requested_at)
    return terminate_early(prior, a.requested_at)


# --------------------------------------------------------------------------------------------
# Months of the term
# --------------------------------------------------------------------------------------------
def _div_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-up, in exact integer arithmetic (both >= 0, d > 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def prorated_executions(commitment: int, days: int, period_days: int) -> int:
    """``commitment x days / period_days`` rounded half-up to a whole number of executions
    (100,000 x 15/31 = 48,387.097 -> 48,387). Exact: integer arithmetic, no decimal context."""
    if not (_is_int(commitment) and _is_int(days) and _is_int(period_days)) or commitment < 0 \
            or not 0 <= days <= period_days or period_days <= 0:
        raise ContractError(f"needs whole numbers with 0 <= days <= period_days, got {commitment!r} x "
                            f"{days!r}/{period_days!r}", field="days")
    return _div_half_up(commitment * days, period_days)


@dataclass(frozen=True)
class CommitmentSegment:
    """Part of a contract month under one commitment: ``[start, end)``, whole UTC days."""

    start: datetime
    end: datetime
    days: int
    period_days: int
    commitment: int
    """Monthly commitment in force."""
    discount: Decimal
    rate: Decimal
    """Discounted price per committed execution (not rounded)."""
    committed: int
    """This segment's committed executions. The month's committed executions are its exact prorated
    volume (sum of ``commitment x days / period_days`` over its segments) rounded half-up once; each
    segment gets the rounded running total at its end minus that at its start. One segment:
    ``prorated_executions(commitment, days, period_days)``."""

    @property
    def prorated(self) -> bool:
        return self.days != self.period_days


@dataclass(frozen=True)
class TerminationFee:
    """Early-termination fee: the committed-use charge of the rest of the scheduled term.

    ``committed`` = the committed executions of the term as scheduled (signed, extended and raised,
    without the termination) minus those of the months served, so served + fee is exactly the
    scheduled term. All of it is at the commitment in force at termination (no raise can take effect
    after it); it is priced at that commitment's discounted rate once:
    ``amount = round_money(committed x rate)``.
    """

    effective: datetime
    """The termination day (the first day no longer in the term)."""
    scheduled_end: datetime
    commitment: int
    rate: Decimal
    committed: int
    amount: Decimal


@dataclass(frozen=True)
class ContractMonth:
    """One contract month: the part of a calendar month inside the term.

    ``number`` counts from 1. The first and last are prorated by days unless the term starts on the
    1st; a 12-month term from the 17th has 13 contract months. ``committed`` is the sum of the
    segments' committed executions: the threshold above which executions are overage. The executions
    that count against it are the account's executions in ``[start, end)`` (sandbox tries excluded, as
    for the included quota of other plans). ``termination_fee`` is set on the last month of a
    contract terminated early.
    """

    contract_id: str | None
    account: str
    period: Period
    number: int
    start: datetime
    end: datetime
    segments: tuple[CommitmentSegment, ...]
    committed: int
    last: bool
    termination_fee: TerminationFee | None = None

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def prorated(self) -> bool:
        return self.start != self.period.start or self.end != self.period.end


def _segments(h: ContractHistory, pricing: CommittedUse, start: datetime, end: datetime,
              period: Period) -> tuple[CommitmentSegment, ...]:
    changes = h.commitment_changes()
    out = []
    exact = 0  # running sum of commitment x days, over period.days
    rounded = 0
    for i, (since, commitment) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        s, e = max(since, start), min(until, end)
        if s >= e:
            continue
        days = (e - s).days
        exact += commitment * days
        committed = _div_half_up(exact, period.days) - rounded
        rounded += committed
        out.append(CommitmentSegment(s, e, days, period.days, commitment, pricing.tier(commitment).discount,
                                     pricing.discounted_rate(commitment), committed))
    return tuple(out)


def _months(h: ContractHistory, pricing: CommittedUse, end: datetime,
            fee: TerminationFee | None) -> tuple[ContractMonth, ...]:
    out = []
    day = h.start
    while day < end:
        p = Period.of(day)
        until = min(p.end, end)
        segs = _segments(h, pricing, day, until, p)
        last = until == end
        out.append(ContractMonth(h.contract.id, h.contract.account, p, len(out) + 1, day, until, segs,
                                 sum(s.committed for s in segs), last, fee if last else None))
        day = until
    return tuple(out)


def _termination_fee(h: ContractHistory, pricing: CommittedUse) -> TerminationFee | None:
    t = h.termination
    if t is None:
        return None
    scheduled = sum(m.committed for m in _months(h, pricing, h.scheduled_end, None))
    served = sum(m.committed for m in _months(h, pricing, t.effective, None))
    commitment = h.current_commitment
    rate = pricing.discounted_rate(commitment)
    committed = scheduled - served
    return TerminationFee(t.effective, h.scheduled_end, commitment, rate, committed,
                          round_money(_EXACT.multiply(Decimal(committed), rate)))


def term_months(history: ContractHistory | Contract, version: CatalogVersion) -> tuple[ContractMonth, ...]:
    """Every month of the term in order, as the history stands (amendments applied by effective day).

    ``version`` must be the catalog version that priced the contract (``contract.catalog_version``).
    """
    h = _history(history)
    pricing = _pricing_for(h, version)
    return _months(h, pricing, h.end, _termination_fee(h, pricing))


def contract_month(history: ContractHistory | Contract, version: CatalogVersion,
                   period: Period) -> ContractMonth | None:
    """What calendar month ``period`` looks like under the contract, or ``None`` if outside the term."""
    if not isinstance(period, Period):
        raise ContractError(f"must be a Period, got {period!r}", field="period")
    return next((m for m in term_months(history, version) if m.period == period), None)


# --------------------------------------------------------------------------------------------
# Monthly reconciliation
# --------------------------------------------------------------------------------------------
class ContractLineKind(str, Enum):
    committed_use = "committed_use"
    """Committed executions x discounted rate (one per commitment segment of the month)."""
    committed_usage = "committed_usage"
    """Informational ($0): used executions against the month's commitment."""
    contract_overage = "contract_overage"
    """Executions above the commitment x standard rate (one per model)."""
    termination_fee = "termination_fee"


@dataclass(frozen=True)
class ContractLine:
    """An invoice line; same field names as ``rating.RatedLine`` so one writer stores both.
    ``amount == round_money(quantity * unit_price)`` on every line."""

    kind: ContractLineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    model: str | None = None
    key: str = ""
    """Stable identity within the period: ``contract|<id>|<kind>|...``."""
    version: str | None = None
    executions: int = 0


@dataclass(frozen=True)
class MonthReconciliation:
    """Committed vs used for one contract month: the figures to record and the invoice lines.

    ``overage = max(0, used - committed)``, ``shortfall = max(0, committed - used)`` (never both
    positive); ``utilisation = used / committed`` rounded half-up to 4 places (may exceed 1).
    ``total = committed_charge + overage_charge + termination_fee`` = the sum of the lines.
    """

    contract_id: str
    account: str
    period: Period
    number: int
    start: datetime
    end: datetime
    committed: int
    used: int
    overage: int
    shortfall: int
    utilisation: Decimal
    committed_charge: Decimal
    overage_charge: Decimal
    termination_fee: Decimal
    total: Decimal
    lines: tuple[ContractLine, ...] = ()


def _percent(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"


def _n(count: int) -> str:
    return f"{count:,} execution{'' if count == 1 else 's'}"


def utilisation(used: int, committed: int) -> Decimal:
    """``used / committed`` as a fraction rounded half-up to 4 places (``committed`` > 0)."""
    if committed <= 0:
        raise ContractError(f"must be positive, got {committed}", field="committed")
    return _EXACT.divide(Decimal(used), Decimal(committed)).quantize(UTILISATION_PLACES, rounding=ROUND_HALF_UP)


def _validate_usage(usage: Sequence[ModelUsage], committed: int) -> tuple[int, list[ModelUsage]]:
    rows: list[ModelUsage] = []
    seen: set[str] = set()
    for u in usage:
        if not isinstance(u, ModelUsage):
            raise ContractError(f"items must be ModelUsage, got {type(u).__name__}", field="usage")
        if not isinstance(u.model, str) or not u.model or u.model in seen:
            raise ContractError(f"model {u.model!r} is empty or appears more than once", field="usage")
        seen.add(u.model)
        if not _is_int(u.executions) or u.executions < 0:
            raise ContractError(f"{u.model}: must be an integer >= 0, got {u.executions!r}", field="executions")
        if not _is_int(u.billable) or not 0 <= u.billable <= u.executions:
            raise ContractError(f"{u.model}: must be an integer between 0 and executions ({u.executions}), "
                                f"got {u.billable!r}", field="billable")
        rows.append(u)
    used = sum(u.executions for u in rows)
    over = sum(u.billable for u in rows)
    if over != max(0, used - committed):
        raise ContractError(f"the executions above the commitment ({over:,}) must equal used ({used:,}) minus "
                            f"committed ({committed:,}) when positive, else 0", field="billable")
    return used, sorted(rows, key=lambda u: u.model)


def reconcile_month(history: ContractHistory | Contract, version: CatalogVersion, period: Period,
                    usage: Sequence[ModelUsage]) -> MonthReconciliation:
    """Reconcile contract month ``period``: committed vs used, the charges and the invoice lines.

    ``usage`` is per model: ``executions`` = the account's executions in the contract month's
    ``[start, end)`` (``contract_month(...)``), ``billable`` = how many of them are above the month's
    ``committed`` executions in time order (rank by ``(occurred_at, event_id)``; those ranked past
    ``committed`` are overage) — the same split as ``rating.split_billable`` with ``committed`` as the
    quota. Pure and deterministic: a re-run with the same history and usage gives the same result.

    Lines: one committed-use line per commitment segment (prorated commitment x discounted rate),
    an informational line (used of committed, $0), one overage line per model (x standard rate), and
    on the last month of a terminated contract the early-termination fee.
    """
    h = _history(history)
    if h.contract.id is None:
        raise ContractError("the contract must be stored (have an id) before it is billed", field="id")
    pricing = _pricing_for(h, version)
    month = contract_month(h, version, period)
    if month is None:
        raise ContractError(f"{period} is outside the term ({_fmt_day(h.start)} to {_fmt_day(h.end)}, exclusive)",
                            field="period")
    used, rows = _validate_usage(usage, month.committed)
    cid = h.contract.id
    ver = h.contract.catalog_version
    lines: list[ContractLine] = []
    for i, s in enumerate(month.segments):
        desc = f"Committed use — {s.commitment:,} executions/month ({_percent(s.discount)} off)"
        if s.prorated:
            desc += f", {s.days}/{s.period_days} days ({_span_label(s.start, s.end)})"
        desc += f": {s.committed:,} × {format_rate(s.rate)}"
        lines.append(ContractLine(ContractLineKind.committed_use, desc, Decimal(s.committed), s.rate,
                                  round_money(_EXACT.multiply(Decimal(s.committed), s.rate)),
                                  key=f"contract|{cid}|committed_use|{i}|{s.commitment}", version=ver))
    committed_charge = sum((ln.amount for ln in lines), ZERO)
    util = utilisation(used, month.committed)
    lines.append(ContractLine(ContractLineKind.committed_usage,
                              f"Used {used:,} of {month.committed:,} committed executions ({util * 100:.1f}%)",
                              Decimal(used), ZERO, ZERO, key=f"contract|{cid}|committed_usage", version=ver,
                              executions=used))
    rate = pricing.standard_rate
    overage_charge = ZERO
    for u in rows:
        if u.billable == 0:
            continue
        amount = round_money(_EXACT.multiply(Decimal(u.billable), rate))
        overage_charge += amount
        lines.append(ContractLine(ContractLineKind.contract_overage,
                                  f"Above commitment — {u.model}: {_n(u.billable)} × {format_rate(rate)}",
                                  Decimal(u.billable), rate, amount, u.model,
                                  key=f"contract|{cid}|contract_overage|{u.model}", version=ver,
                                  executions=u.billable))
    fee = ZERO
    if month.termination_fee is not None:
        f = month.termination_fee
        fee = f.amount
        lines.append(ContractLine(
            ContractLineKind.termination_fee,
            f"Early termination — committed use {_fmt_day(f.effective)} to "
            f"{_fmt_day(f.scheduled_end - timedelta(days=1))}: {f.committed:,} × {format_rate(f.rate)}",
            Decimal(f.committed), f.rate, f.amount, key=f"contract|{cid}|termination_fee", version=ver))
    overage = max(0, used - month.committed)
    return MonthReconciliation(
        contract_id=cid, account=h.contract.account, period=period, number=month.number,
        start=month.start, end=month.end, committed=month.committed, used=used, overage=overage,
        shortfall=max(0, month.committed - used), utilisation=util, committed_charge=committed_charge,
        overage_charge=overage_charge, termination_fee=fee,
        total=committed_charge + overage_charge + fee, lines=tuple(lines))


# --------------------------------------------------------------------------------------------
# Term summary
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TermSummary:
    """The contract summary at term end.

    ``average_utilisation`` is volume-weighted: total used / total committed (so a 15-day first month
    weighs half a whole month), rounded like ``utilisation``. ``months_under_commitment`` counts the
    contract months with a shortfall.
    """

    contract_id: str
    account: str
    start: datetime
    end: datetime
    terminated_early: bool
    months: int
    committed: int
    used: int
    overage: int
    shortfall: int
    committed_charges: Decimal
    overage_charges: Decimal
    termination_fee: Decimal
    total_charges: Decimal
    average_utilisation: Decimal
    months_under_commitment: int


def summarize_term(history: ContractHistory | Contract, version: CatalogVersion,
                   reconciliations: Sequence[MonthReconciliation]) -> TermSummary:
    """Summarise the term from its recorded monthly reconciliations (any order, exactly one per month).

    Refused (``reconciliations``) when a month is missing or repeated, or when a recorded month does
    not match the history (another contract, or a commitment that differs from what the history
    says): the summary is only written for a complete, consistent term.
    """
    h = _history(history)
    months = term_months(h, version)
    by_period: dict[Period, MonthReconciliation] = {}
    for r in reconciliations:
        if not isinstance(r, MonthReconciliation):
            raise ContractError(f"items must be MonthReconciliation, got {type(r).__name__}",
                                field="reconciliations")
        if r.contract_id != h.contract.id:
            raise ContractError(f"{r.period} belongs to contract {r.contract_id}, not {h.contract.id}",
                                field="reconciliations")
        if r.period in by_period:
            raise ContractError(f"{r.period} is reconciled more than once", field="reconciliations")
        by_period[r.period] = r
    expected = {m.period: m for m in months}
    if extra := sorted(set(by_period) - set(expected)):
        raise ContractError(f"{', '.join(map(str, extra))} outside the term", field="reconciliations")
    if missing := sorted(set(expected) - set(by_period)):
        raise ContractError(f"missing month(s) {', '.join(map(str, missing))}", field="reconciliations")
    for p, m in expected.items():
        if by_period[p].committed != m.committed:
            raise ContractError(f"{p}: recorded committed {by_period[p].committed:,} but the contract says "
                                f"{m.committed:,}", field="reconciliations")
    rs = [by_period[m.period] for m in months]
    committed = sum(r.committed for r in rs)
    used = sum(r.used for r in rs)
    fee = sum((r.termination_fee for r in rs), ZERO)
    committed_charges = sum((r.committed_charge for r in rs), ZERO)
    overage_charges = sum((r.overage_charge for r in rs), ZERO)
    return TermSummary(
        contract_id=h.contract.id, account=h.contract.account, start=h.start, end=h.end,
        terminated_early=h.termination is not None, months=len(rs), committed=committed, used=used,
        overage=sum(r.overage for r in rs), shortfall=sum(r.shortfall for r in rs),
        committed_charges=committed_charges, overage_charges=overage_charges, termination_fee=fee,
        total_charges=committed_charges + overage_charges + fee,
        average_utilisation=utilisation(used, committed),
        months_under_commitment=sum(1 for r in rs if r.shortfall > 0))


def describe_summary(s: TermSummary) -> str:
    """A few lines a person can read (the notice at term end, ``tally contracts show``)."""
    ended = "terminated early" if s.terminated_early else "ended"
    return "\n".join([
        f"Contract {s.contract_id} ({s.account}), {_fmt_day(s.start)} to "
        f"{_fmt_day(s.end - timedelta(days=1))}, {ended}: {s.months} contract months",
        f"Committed {s.committed:,}, used {s.used:,} (average utilisation {s.average_utilisation * 100:.1f}%), "
        f"{s.months_under_commitment} month(s) under commitment",
        f"Committed use {format_usd(s.committed_charges)} + overage {format_usd(s.overage_charges)} "
        f"({s.overage:,} executions)"
        + (f" + early termination {format_usd(s.termination_fee)}" if s.termination_fee else "")
        + f" = {format_usd(s.total_charges)}",
    ])



# --------------------------------------------------------------------------------------------
# The close: an enterprise account's calendar month (its part of ``billing.close``'s decision)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UsageSpan:
    """Days of an enterprise account's period whose executions are counted on their own.

    A contract month (``contract`` set): its executions in time order, the first ``committed`` within
    the commitment, the rest above it (``billable``). Enterprise days no contract covers (``contract``
    None, ``committed`` 0): every execution is billed at the standard rate of ``version``.
    """

    start: datetime
    end: datetime
    committed: int
    version: CatalogVersion
    contract: ContractHistory | None = None


@dataclass(frozen=True)
class EnterpriseSplit:
    """How the close bills an account's period that has enterprise days: ``rated_segments`` (the
    days on another plan, rated by ``billing.rating``) and ``spans`` (the enterprise days)."""

    rated_segments: tuple[TermsSegment, ...]
    spans: tuple[UsageSpan, ...]


def _subtract(spans: list[tuple[datetime, datetime]], cut: tuple[datetime, datetime]) -> list[tuple[datetime, datetime]]:
    out = []
    for s, e in spans:
        if cut[1] <= s or e <= cut[0]:
            out.append((s, e))
            continue
        if s < cut[0]:
            out.append((s, cut[0]))
        if cut[1] < e:
            out.append((cut[1], e))
    return out


def split_enterprise_period(catalog: Catalog, period: Period, segments: Sequence[TermsSegment],
                            contracts: Sequence[ContractHistory]) -> EnterpriseSplit | None:
    """Split the account's period between the rater and the contracts; None when it has no
    enterprise day (rated as usual).

    ``segments``: its terms segments over the period; ``contracts``: its stored contracts (any;
    those without a month in the period are ignored). Every contract day must be an enterprise day
    (a contract makes the account enterprise from its start; ``ContractError`` otherwise).
    """
    if not isinstance(period, Period):
        raise ContractError(f"must be a Period, got {period!r}", field="period")
    enterprise = [s for s in segments if catalog.at(s.start).plan(s.plan).contract]
    if not enterprise:
        return None
    rated = tuple(s for s in segments if s not in enterprise)
    free = [(s.start, s.end) for s in enterprise]
    spans: list[UsageSpan] = []
    for h in sorted((_history(c) for c in contracts), key=lambda h: h.start):
        version = catalog.version(h.contract.catalog_version)
        month = contract_month(h, version, period)
        if month is None:
            continue
        if not any(s <= month.start and month.end <= e for s, e in free):
            raise ContractError(f"contract {h.contract.id} bills {_fmt_day(month.start)} to "
                                f"{_fmt_day(month.end)} (exclusive) but the account is not on the enterprise "
                                "plan on all of those days", field="segments")
        free = _subtract(free, (month.start, month.end))
        spans.append(UsageSpan(month.start, month.end, month.committed, version, h))
    for s, e in free:
        spans.append(UsageSpan(s, e, 0, catalog.at(s)))
    return EnterpriseSplit(rated, tuple(sorted(spans, key=lambda sp: sp.start)))


def check_leaving_enterprise(effective: datetime, contracts: Sequence[ContractHistory | Contract]) -> None:
    """An enterprise account may move to another plan from 00:00 UTC of the 1st of a month on which
    none of its contracts is in force any more (contract days are enterprise days, and a month with
    enterprise days keeps them at its end: ``split_enterprise_period`` rates the rest before them)."""
    effective = _require_day(effective, "effective")
    for c in contracts:
        h = _history(c)
        if h.end > effective:
            raise ContractError(f"the account is under contract {h.contract.id} until {_fmt_day(h.end)} (exclusive); "
                                "it stays enterprise until then (terminate the contract early to end it sooner)",
                                field="effective")
    if effective.day != 1:
        raise ContractError(f"an enterprise account moves to another plan from the 1st of a month, got "
                            f"{_fmt_day(effective)}; use {_fmt_day(Period.of(effective).end)}", field="effective")


def _model_usage(rows: Sequence[UsageRow]) -> list[ModelUsage]:
    executions: dict[str, int] = {}
    billable: dict[str, int] = {}
    for r in rows:
        if r.sandbox:
            continue
        executions[r.model] = executions.get(r.model, 0) + r.executions
        billable[r.model] = billable.get(r.model, 0) + (r.executions if r.billable else 0)
    return [ModelUsage(m, executions[m], billable[m]) for m in sorted(executions)]


def _as_rated(line: ContractLine, cost: Decimal = ZERO) -> RatedLine:
    return RatedLine(LineKind(line.kind.value), line.description, line.quantity, line.unit_price, line.amount,
                     line.model, key=line.key, version=line.version, executions=line.executions, cost=cost)


def _span_lines(catalog: Catalog, period: Period, span: UsageSpan,
                rows: Sequence[UsageRow]) -> tuple[list[RatedLine], MonthReconciliation | None]:
    def cost(pick) -> Decimal:
        return sum((llm_cost(catalog.version(r.version), r.model, [r]) for r in rows if pick(r)), ZERO)

    usage = _model_usage(rows)
    if span.contract is not None:
        rec = reconcile_month(span.contract, span.version, period, usage)
        return [_as_rated(ln, cost(lambda r: not r.billable)
                          if ln.kind is ContractLineKind.committed_usage else
                          cost(lambda r, m=ln.model: r.billable and r.model == m)
                          if ln.kind is ContractLineKind.contract_overage else ZERO)
                for ln in rec.lines], rec
    rate = contract_pricing(span.version).standard_rate
    lines = []
    for u in usage:
        if not u.executions:
            continue
        lines.append(RatedLine(
            LineKind.enterprise_usage,
            f"Enterprise, no contract in force ({_span_label(span.start, span.end)}) — {u.model}: "
            f"{_n(u.executions)} × {format_rate(rate)}",
            Decimal(u.executions), rate, round_money(_EXACT.multiply(Decimal(u.executions), rate)), u.model,
            key=f"enterprise_usage|{_fmt_day(span.start)}|{u.model}", version=span.version.version,
            executions=u.executions, cost=cost(lambda r, m=u.model: r.model == m)))
    return lines, None


def rate_enterprise_account(catalog: Catalog, period: Period, split: EnterpriseSplit,
                            rated: RatedInvoice | None,
                            span_usage: Sequence[Sequence[UsageRow]]) -> tuple[RatedInvoice, tuple[MonthReconciliation, ...]]:
    """The account's invoice for the period: ``rated`` (the rater's invoice for
    ``split.rated_segments``, None without any) followed by each span's lines in time order, and the
    reconciliation of each contract month. ``span_usage[i]``: the executions of ``split.spans[i]``
    aggregated like the close's usage rows (``billable``: ranked past the span's committed
    executions; every non-sandbox execution for a span without a contract).
    """
    if len(span_usage) != len(split.spans):
        raise ContractError(f"needs usage for each of the {len(split.spans)} spans, got {len(span_usage)}",
                            field="span_usage")
    lines: list[RatedLine] = list(rated.lines) if rated is not None else []
    recs = []
    for span, rows in zip(split.spans, span_usage):
        span_lines, rec = _span_lines(catalog, period, span, rows)
        lines += span_lines
        if rec is not None:
            recs.append(rec)
    spans_rows = [r for rows in span_usage for r in rows]
    platform = [r for r in spans_rows if not r.sandbox]
    total = round_money(sum((ln.amount for ln in lines), ZERO))
    # The invoice's plan and version: those of the last days of the period.
    enterprise_last = rated is None or split.spans[-1].end >= split.rated_segments[-1].end
    return RatedInvoice(
        plan=ENTERPRISE_PLAN if enterprise_last else rated.plan,
        catalog_version=split.spans[-1].version.version if enterprise_last else rated.catalog_version,
        lines=tuple(lines),
        executions=(rated.executions if rated else 0) + sum(r.executions for r in platform),
        billable_executions=(rated.billable_executions if rated else 0)
        + sum(r.executions for r in platform if r.billable),
        subtotal=total, total=total,
        sandbox_executions=(rated.sandbox_executions if rated else 0)
        + sum(r.executions for r in spans_rows if r.sandbox),
        byok_executions=(rated.byok_executions if rated else 0) + sum(r.executions for r in platform if r.byok),
        platform_cost=(rated.platform_cost if rated else ZERO)
        + sum((llm_cost(catalog.version(r.version), r.model, [r]) for r in platform), ZERO),
    ), tuple(recs)

__all__ = [
    "Amendment",
    "AmendmentKind",
    "CONTRACT_LINE_KINDS",
    "ENTERPRISE_PLAN",
    "EnterpriseSplit",
    "UsageSpan",
    "rate_enterprise_account",
    "split_enterprise_period",
    "CommitmentSegment",
    "Contract",
    "ContractError",
    "ContractHistory",
    "ContractLine",
    "ContractLineKind",
    "ContractMonth",
    "MonthReconciliation",
    "TermSummary",
    "TerminationFee",
    "UTILISATION_PLACES",
    "anniversary",
    "check_leaving_enterprise",
    "contract_month",
    "contract_pricing",
    "create_contract",
    "describe_summary",
    "extend_term",
    "next_day",
    "prorated_executions",
    "raise_commitment",
    "reconcile_month",
    "summarize_term",
    "term_months",
    "terminate_early",
    "utc_day",
    "utilisation",
]
