"""Prepaid credits: one append-only ledger per account, and the pure rules that write to it.

No I/O, no clock: every function takes the account's grants and ledger entries as they are in the
database and returns the entries to append (or a decision). The shell (activities) loads, calls one
function, writes what it returns. Timestamps are timezone-aware; amounts are ``Decimal``.

The model
---------
* A ``Grant`` is something the account received: ``amount`` of a ``unit`` (``credits``, spent on
  executions, or ``usd``, applied to invoice totals at close), valid over ``[granted_at, expires_at)``,
  bought for ``price`` USD (0 for an ops grant unless ops state a value). Grants are bought through a
  package (``purchase_grant``; the grant id derives from the purchase id, so a replayed payment webhook
  cannot grant twice) or given by ops (``ops_grant``, a reason is required).
* A ``LedgerEntry`` belongs to exactly one grant and has a signed ``amount`` in the grant's unit:
  ``grant`` (+, the grant itself, dated ``granted_at``), ``consume`` (-, one execution's credits),
  ``invoice_application`` (-, usd applied to an invoice), ``adjust`` (-, an ops correction) and
  ``expire`` (-, the remainder at expiry). Entry ids are deterministic (``consume:<event>:<grant>``,
  ``expire:<grant>``, ``invoice:<invoice>:<grant>``, ``grant:<grant>``): a unique index on them makes every
  write idempotent.
* Every balance is the sum of its ledger (``balance``); nothing is a stored counter. Only the ``grant``
  entry is positive and it is the earliest entry of its grant, and no rule lets a grant's sum go below
  zero, so no balance at any instant is ever negative. A correction in the customer's favour is a new ops
  grant, never a positive adjustment.

The rules
---------
* Which executions credits pay for (``credits_pay_for``): on a plan, the ones past the included quota
  (billable in ``billing.rating``'s time order), including those the plan would block; never sandbox
  tries (a plan never charges them) nor BYOK executions under token pricing (they cost no tokens). On a
  credits-only account (no plan) every execution.
* What one costs (``credit_cost``): the catalog's ``credit_cost`` by the model's class (fast 1 /
  standard 5 / heavy 25), ``sandbox`` 2 for a sandbox try, ``byok`` 1 for a BYOK execution (sandbox wins).
* Consumption (``consume``, or ``consume_from_remainders`` on the ingest hot path): executions in ``(occurred_at, event_id)`` order; each is paid from the
  grants valid when it occurred (``granted_at <= t < expires_at``) that have something left, the grant
  that expires first, then the oldest, then by id. One execution may be split across grants when their
  sum pays for it. When the spendable balance cannot pay its whole cost, the execution is not
  credit-funded at all (no entries); the plan's rule applies to it (overage, the PAYG cap, or block),
  and a later, cheaper execution may still be paid by what is left.
* Entitlement (``entitlement_with_credits``): a credits-only account is refused with ``no_credits`` when
  its spendable balance cannot pay for the next execution of that model; a plan account blocked at its
  quota is let through when credits can pay.
* Expiry (``expire``): exactly once, the grant's remainder: granted minus everything booked against it
  (consumption by executions that occurred before ``expires_at``, late ones inside the grace included,
  applications, adjustments). The entry is dated ``expires_at``.
* usd at close (``apply_usd_to_invoice``): ``min(spendable usd, invoice total)``, from the usd grants
  expiring first, one entry per grant tied to the invoice id; a re-run for the same invoice applies
  nothing more.
* Credit value (``credit_value``, ``funded_value``): what the customer paid per unit of the grant that
  paid, ``price / amount`` (Growth: $50 / 6,000 credits); an ops grant is worth its stated ``price``
  (0 by default: goodwill brought no revenue).

The shell must serialise writes per account (one advisory lock) so that every call sees the whole ledger.
"""

from __future__ import annotations

import calendar
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import Enum

from billing.catalog import CatalogVersion, CreditPackage
from billing.checks import require_aware, require_count, require_text
from billing.entitlements import Reason
from billing.errors import BillingError
from billing.money import ZERO, is_whole_cents
from billing.rating import UsageRow

_WIDE = Context(prec=60, rounding=ROUND_HALF_UP)


class CreditsError(BillingError):
    """Bad input to the credits core (a field and the reason), or a ledger that breaks its invariants."""


class Unit(str, Enum):
    credits = "credits"
    usd = "usd"


class EntryKind(str, Enum):
    grant = "grant"
    consume = "consume"
    expire = "expire"
    adjust = "adjust"
    invoice_application = "invoice_application"


_SIGN = {EntryKind.grant: 1, EntryKind.consume: -1, EntryKind.expire: -1, EntryKind.adjust: -1,
         EntryKind.invoice_application: -1}
_UNIT_OF_KIND = {EntryKind.consume: Unit.credits, EntryKind.invoice_application: Unit.usd}


@dataclass(frozen=True)
class Grant:
    """``amount`` of ``unit`` usable over ``[granted_at, expires_at)``, bought for ``price`` USD.

    ``package``: the catalog package that was bought (None for an ops grant); ``reference``: the purchase
    id, or the ops reason.
    """

    id: str
    account_id: str
    unit: Unit
    amount: Decimal
    granted_at: datetime
    expires_at: datetime
    price: Decimal = ZERO
    package: str | None = None
    reference: str = ""

    def __post_init__(self) -> None:
        _require_text(self.id, "grant_id")
        _require_text(self.account_id, "account_id")
        if not isinstance(self.unit, Unit):
            raise CreditsError(f"must be credits or usd, got {self.unit!r}", field="unit")
        _require_amount(self.amount, self.unit, "amount", positive=True)
        _require_aware(self.granted_at, "granted_at")
        _require_aware(self.expires_at, "expires_at")
        if self.expires_at <= self.granted_at:
            raise CreditsError(
                f"must be after granted_at ({self.granted_at.isoformat()}), got {self.expires_at.isoformat()}",
                field="expires_at",
            )
        _require_amount(self.price, Unit.usd, "price")

    def valid_at(self, t: datetime) -> bool:
        """Usable at ``t``: ``granted_at <= t < expires_at``."""
        return self.granted_at <= t < self.expires_at

    @property
    def fefo_key(self) -> tuple[datetime, datetime, str]:
        """Consumption order: the grant that expires first, then the oldest, then by id."""
        return (self.expires_at, self.granted_at, self.id)


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the append-only ledger. ``amount`` is signed (only ``grant`` entries are positive).

    ``reference``: the execution's event id (consume), the invoice id (invoice_application), the reason
    (adjust, ops expiry), the purchase id or ops reason (grant).
    """

    id: str
    account_id: str
    grant_id: str
    kind: EntryKind
    unit: Unit
    amount: Decimal
    occurred_at: datetime
    reference: str = ""

    def __post_init__(self) -> None:
        for name in ("id", "account_id", "grant_id"):
            _require_text(getattr(self, name), name)
        if not isinstance(self.kind, EntryKind):
            raise CreditsError(f"{self.id}: unknown kind {self.kind!r}", field="kind")
        if not isinstance(self.unit, Unit):
            raise CreditsError(f"{self.id}: must be credits or usd, got {self.unit!r}", field="unit")
        if isinstance(self.amount, bool) or not isinstance(self.amount, Decimal) or not self.amount.is_finite():
            raise CreditsError(f"{self.id}: must be a finite Decimal, got {self.amount!r}", field="amount")
        _require_aware(self.occurred_at, "occurred_at")


@dataclass(frozen=True)
class CreditCharge:
    """One execution that credits should pay for (see ``credits_pay_for``) and its cost in credits."""

    event_id: str
    occurred_at: datetime
    credits: int


@dataclass(frozen=True)
class Consumption:
    """The outcome for one ``CreditCharge``.

    ``funded``: credits pay for the execution (its ``entries`` are the new ledger rows, one per grant
    it drew from; empty when ``already_booked``). Not funded: no entries; the plan's rule applies.
    """

    event_id: str
    occurred_at: datetime
    credits: int
    funded: bool
    entries: tuple[LedgerEntry, ...] = ()
    already_booked: bool = False


@dataclass(frozen=True)
class InvoiceCredit:
    """The usd balance applied to one invoice: ``applied`` (>= 0, whole cents) and the rows to write."""

    invoice_id: str
    applied: Decimal
    entries: tuple[LedgerEntry, ...]
    already_applied: bool = False


@dataclass(frozen=True)
class GrantSummary:
    """Where a grant went: ``granted == consumed + applied + adjusted + expired + remaining`` (all >= 0)."""

    grant_id: str
    unit: Unit
    granted: Decimal
    consumed: Decimal
    applied: Decimal
    adjusted: Decimal
    expired: Decimal
    remaining: Decimal


# ---- validation ----------------------------------------------------------------------------------
def _require_text(v: object, field: str) -> str:
    return require_text(v, field, CreditsError)


def _require_aware(ts: object, field: str) -> datetime:
    return require_aware(ts, field, CreditsError)


def _require_amount(v: object, unit: Unit, field: str, *, positive: bool = False) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (Decimal, int)):
        raise CreditsError(f"must be a Decimal, not {type(v).__name__} ({v!r})", field=field)
    d = Decimal(v)
    if not d.is_finite() or d < 0 or (positive and d == 0):
        raise CreditsError(f"must be {'greater than zero' if positive else 'zero or more'}, got {v}", field=field)
    if unit is Unit.credits and d != d.to_integral_value():
        raise CreditsError(f"credits are whole numbers, got {v}", field=field)
    if unit is Unit.usd and not is_whole_cents(d):
        raise CreditsError(f"a usd amount must be a whole number of cents, got {v}", field=field)
    return d


def _index(grants: Iterable[Grant], entries: Iterable[LedgerEntry]) -> tuple[dict[str, Grant], dict[str, Decimal], set[str], set[str]]:
    """Check the ledger against its grants; return grants by id, remaining per grant, expired grant ids
    and entry ids. Raises ``CreditsError`` for a ledger that breaks an invariant (a bug upstream)."""
    by_id: dict[str, Grant] = {}
    account = None
    for g in grants:
        if g.id in by_id:
            raise CreditsError(f"grant {g.id!r} appears twice", field="grants")
        if account is not None and g.account_id != account:
            raise CreditsError(f"grants of two accounts ({account!r}, {g.account_id!r}) in one call", field="grants")
        account = g.account_id
        by_id[g.id] = g
    remaining: dict[str, Decimal] = {}
    granted: set[str] = set()
    expired: set[str] = set()
    ids: set[str] = set()
    for e in entries:
        g = by_id.get(e.grant_id)
        if g is None:
            raise CreditsError(f"entry {e.id!r} belongs to unknown grant {e.grant_id!r}", field="entries")
        if e.id in ids:
            raise CreditsError(f"entry id {e.id!r} appears twice", field="entries")
        ids.add(e.id)
        if e.account_id != g.account_id or e.unit is not g.unit:
            raise CreditsError(f"entry {e.id!r} does not match its grant's account or unit", field="entries")
        if (e.amount > 0) != (_SIGN[e.kind] > 0) or e.amount == 0:
            raise CreditsError(f"entry {e.id!r}: a {e.kind.value} entry cannot be {e.amount}", field="entries")
        if e.occurred_at < g.granted_at or (e.kind is EntryKind.grant and e.occurred_at != g.granted_at):
            raise CreditsError(f"entry {e.id!r} is dated before its grant {g.id!r}", field="entries")
        if e.kind in _UNIT_OF_KIND and (e.unit is not _UNIT_OF_KIND[e.kind] or not g.valid_at(e.occurred_at)):
            raise CreditsError(f"entry {e.id!r}: a {e.unit.value} grant cannot pay a {e.kind.value} "
                               f"at {e.occurred_at.isoformat()}", field="entries")
        if e.kind is EntryKind.grant:
            if e.grant_id in granted or e.amount != g.amount:
                raise CreditsError(f"grant {g.id!r} must have exactly one grant entry of {g.amount}", field="entries")
            granted.add(e.grant_id)
        elif e.kind is EntryKind.expire:
            if e.grant_id in expired:
                raise CreditsError(f"grant {g.id!r} expired twice", field="entries")
            expired.add(e.grant_id)
        remaining[e.grant_id] = remaining.get(e.grant_id, ZERO) + e.amount
    for gid, rest in remaining.items():
        if gid not in granted:
            raise CreditsError(f"grant {gid!r} has entries but no grant entry", field="entries")
        if rest < 0:
            raise CreditsError(f"grant {gid!r} is overdrawn ({rest})", field="entries")
    return by_id, remaining, expired, ids


# ---- grants ----------------------------------------------------------------------------------------
def add_months(ts: datetime, months: int) -> datetime:
    """``ts`` plus whole calendar months, same time of day; a day the target month lacks becomes its
    last day (2026-01-31 + 1 month = 2026-02-28)."""
    _require_aware(ts, "ts")
    if isinstance(months, bool) or not isinstance(months, int) or months < 0:
        raise CreditsError(f"must be a whole number >= 0, got {months!r}", field="months")
    index = ts.year * 12 + (ts.month - 1) + months
    year, month = divmod(index, 12)
    day = min(ts.day, calendar.monthrange(year, month + 1)[1])
    return ts.replace(year=year, month=month + 1, day=day)


def purchase_grant(package: CreditPackage, *, account_id: str, purchase_id: str, paid_at: datetime,
                   expiry_months: int) -> Grant:
    """The grant a successful payment for ``package`` creates: ``grant-<purchase_id>`` (so the same
    payment can only ever create one grant), valid from ``paid_at`` for ``expiry_months`` months, worth
    the package price."""
    _require_text(purchase_id, "purchase_id")
    return Grant(id=f"grant-{purchase_id}", account_id=account_id, unit=Unit(package.unit), amount=package.amount,
                 granted_at=paid_at, expires_at=add_months(paid_at, expiry_months), price=package.price,
                 package=package.code, reference=purchase_id)


def ops_grant(*, grant_id: str, account_id: str, unit: Unit, amount: Decimal, granted_at: datetime, reason: str,
              expiry_months: int, expires_at: datetime | None = None, price: Decimal = ZERO) -> Grant:
    """A grant given by ops (support, goodwill, a purchase replaced). ``reason`` is required; expiry
    defaults to ``expiry_months`` after ``granted_at``. ``price``: the value creators' shares use (0 =
    goodwill, no revenue to share; state the original price when the credits replace a refunded purchase)."""
    _require_text(reason, "reason")
    return Grant(id=grant_id, account_id=account_id, unit=unit, amount=amount, granted_at=granted_at,
                 expires_at=expires_at if expires_at is not None else add_months(granted_at, expiry_months),
                 price=price, package=None, reference=reason)


def grant_entry(grant: Grant) -> LedgerEntry:
    """The ledger row that makes ``grant`` spendable (id ``grant:<grant id>``, dated ``granted_at``)."""
    return LedgerEntry(id=f"grant:{grant.id}", account_id=grant.account_id, grant_id=grant.id,
                       kind=EntryKind.grant, unit=grant.unit, amount=grant.amount,
                       occurred_at=grant.granted_at, reference=grant.reference)


# ---- balances --------------------------------------------------------------------------------------
def balance(entries: Iterable[LedgerEntry], unit: Unit, at: datetime | None = None) -> Decimal:
    """The ledger balance of ``unit``: the sum of its entries (those with ``occurred_at <= at`` when
    ``at`` is given). Never negative for a ledger written by this module. This is what statements show;
    what can pay at an instant is ``spendable``."""
    if at is not None:
        _require_aware(at, "at")
    return sum((e.amount for e in entries if e.unit is unit and (at is None or e.occurred_at <= at)), ZERO)


def remaining(grant: Grant, entries: Iterable[LedgerEntry]) -> Decimal:
    """What is left of ``grant``: the sum of its entries (0 before its grant entry is written)."""
    return sum((e.amount for e in entries if e.grant_id == grant.id), ZERO)


def spendable(grants: Sequence[Grant], entries: Sequence[LedgerEntry], unit: Unit, at: datetime) -> Decimal:
    """What can pay at ``at``: the remainders of the ``unit`` grants valid at ``at``. Differs from
    ``balance`` only between a grant's ``expires_at`` and its expiry entry (and for grants not yet valid)."""
    _require_aware(at, "at")
    by_id, rest, _expired, _ids = _index(grants, entries)
    return sum((rest.get(g.id, ZERO) for g in by_id.values() if g.unit is unit and g.valid_at(at)), ZERO)


def summarize(grant: Grant, entries: Iterable[LedgerEntry]) -> GrantSummary:
    """Where ``grant`` went, by kind of entry (amounts as positive numbers)."""
    totals = {k: ZERO for k in EntryKind}
    for e in entries:
        if e.grant_id == grant.id:
            totals[e.kind] += e.amount
    rest = sum(totals.values(), ZERO)
    return GrantSummary(grant.id, grant.unit, totals[EntryKind.grant], -totals[EntryKind.consume],
                        -totals[EntryKind.invoice_application], -totals[EntryKind.adjust],
                        -totals[EntryKind.expire], rest)


# ---- which executions, at what cost ---------------------------------------------------------------
def credit_cost(version: CatalogVersion, model: str, *, byok: bool, sandbox: bool) -> int:
    """Credits one execution costs under ``version`` (the catalog in force when it occurred): a sandbox
    try ``sandbox``, else a BYOK execution ``byok``, else its model's class rate. Unknown model:
    ``CatalogError``."""
    if sandbox:
        return version.credit_cost["sandbox"]
    if byok:
        version.model(model)
        return version.credit_cost["byok"]
    return version.credit_cost[version.model(model).model_class.value]


def credits_pay_for(*, credits_only: bool, billable: bool, sandbox: bool, byok: bool, pricing: str) -> bool:
    """Would credits pay for this execution? Credits-only account: always. On a plan: only executions
    that would otherwise be charged or blocked, i.e. ``billable`` (past the included quota in time
    order, PAYG: all), not sandbox tries (never charged), and not BYOK under token pricing (no tokens
    to charge)."""
    if credits_only:
        return True
    if sandbox or not billable:
        return False
    return not (pricing == "tokens" and byok)


def entitlement_with_credits(plan_decision: tuple[bool, Reason], *, credits_only: bool, credits_pay: bool,
                             cost: int, spendable_credits: Decimal) -> tuple[bool, Reason]:
    """May the account start this execution, credits considered?

    ``plan_decision``: ``billing.entitlements.decide`` for the account (for a credits-only account only
    its refusals for a paused account or an unknown model matter); ``credits_pay``: ``credits_pay_for``
    for the next execution; ``cost``: its ``credit_cost``; ``spendable_credits``: ``spendable`` now.

    Credits-only: allowed iff ``spendable_credits >= cost``, else ``no_credits``. On a plan: the plan's
    answer, except that an execution blocked by the quota is allowed when credits can pay for it.
    """
    allowed, reason = plan_decision
    if reason in (Reason.account_paused, Reason.unknown_model):
        return allowed, reason
    can_pay = credits_pay and cost > 0 and spendable_credits >= cost
    if credits_only:
        return (True, Reason.ok) if can_pay else (False, Reason.no_credits)
    if not allowed and reason in (Reason.free_cap_reached, Reason.plan_cap_reached_no_overage) and can_pay:
        return True, Reason.ok
    return allowed, reason


# ---- consumption -----------------------------------------------------------------------------------
def consume(grants: Sequence[Grant], entries: Sequence[LedgerEntry], charges: Sequence[CreditCharge]) -> list[Consumption]:
    """Book the credit consumption of ``charges`` (executions credits pay for, see ``credits_pay_for``).

    Guarantees: charges are taken in ``(occurred_at, event_id)`` order; each one is paid whole from
    the ``credits`` grants valid at its ``occurred_at``, first-expiring first (then oldest, then id),
    split across grants if needed, or not at all (``funded=False``, no entries) when they cannot pay its
    whole cost. An event already booked in ``entries`` is reported ``already_booked`` with no new
    entries, so a retry writes nothing twice. No grant's remainder goes below zero. A charge of 0
    credits is not credit-funded. The whole ledger is checked first (``CreditsError`` if it is broken).
    """
    by_id, rest, _expired, _ids = _index(grants, entries)
    booked = {e.reference for e in entries if e.kind is EntryKind.consume}
    return _allocate(list(by_id.values()), rest, booked, charges)


def consume_from_remainders(grants: Sequence[Grant], remainders: Mapping[str, Decimal], booked: Collection[str],
                            charges: Sequence[CreditCharge]) -> list[Consumption]:
    """``consume`` for the ingest hot path, without loading the ledger: same rule, same result.

    ``remainders``: each grant's ledger sum (``SUM(amount) GROUP BY grant_id``, read under the account's
    lock); grants missing from it have nothing left. ``booked``: which of the charges' event ids already
    have consume entries. Passing only the grants that still have something left is enough.
    """
    rest: dict[str, Decimal] = {}
    for g in grants:
        left = remainders.get(g.id, ZERO)
        if isinstance(left, bool) or not isinstance(left, Decimal) or not left.is_finite() or not 0 <= left <= g.amount:
            raise CreditsError(f"grant {g.id}: must be between 0 and {g.amount}, got {left!r}", field="remainders")
        rest[g.id] = left
    return _allocate(list(grants), rest, set(booked), charges)


def _allocate(grants: list[Grant], rest: dict[str, Decimal], booked: set[str],
              charges: Sequence[CreditCharge]) -> list[Consumption]:
    usable = sorted((g for g in grants if g.unit is Unit.credits), key=lambda g: g.fefo_key)
    seen: set[str] = set()
    out: list[Consumption] = []
    for c in sorted(charges, key=lambda c: (_require_aware(c.occurred_at, "occurred_at"), c.event_id)):
        _require_text(c.event_id, "event_id")
        require_count(c.credits, "credits", CreditsError)
        if c.event_id in seen:
            raise CreditsError(f"event {c.event_id!r} appears twice", field="event_id")
        seen.add(c.event_id)
        if c.event_id in booked:
            out.append(Consumption(c.event_id, c.occurred_at, c.credits, funded=True, already_booked=True))
            continue
        valid = [g for g in usable if g.valid_at(c.occurred_at) and rest.get(g.id, ZERO) > 0]
        if c.credits == 0 or sum((rest[g.id] for g in valid), ZERO) < c.credits:
            out.append(Consumption(c.event_id, c.occurred_at, c.credits, funded=False))
            continue
        need = Decimal(c.credits)
        parts = []
        for g in valid:
            take = min(need, rest[g.id])
            rest[g.id] -= take
            need -= take
            parts.append(LedgerEntry(id=f"consume:{c.event_id}:{g.id}", account_id=g.account_id, grant_id=g.id,
                                     kind=EntryKind.consume, unit=Unit.credits, amount=-take,
                                     occurred_at=c.occurred_at, reference=c.event_id))
            if need == 0:
                break
        out.append(Consumption(c.event_id, c.occurred_at, c.credits, funded=True, entries=tuple(parts)))
    return out


# ---- expiry and ops corrections --------------------------------------------------------------------
def expire(grant: Grant, entries: Sequence[LedgerEntry], at: datetime | None = None, reason: str = "") -> LedgerEntry | None:
    """The entry that expires what is left of ``grant``, or None when it already expired or nothing is
    left (so calling it again, or after a retry, writes nothing).

    The remainder is granted minus everything booked against the grant: consumption by executions that
    occurred before ``expires_at`` (late ones booked inside the grace included; none after, since the
    grant was not valid then), invoice applications, adjustments. Call it once the grace after
    ``expires_at`` has passed. ``at``: ``expires_at`` by default; ops' "expire now" passes the current
    time. The entry is dated ``max(at, the grant's latest entry)``, so no balance at any earlier
    instant changes.
    """
    own = [e for e in entries if e.grant_id == grant.id]
    _index([grant], own)
    at = grant.expires_at if at is None else _require_aware(at, "at")
    if any(e.kind is EntryKind.expire for e in own):
        return None
    left = sum((e.amount for e in own), ZERO)
    if left <= 0:
        return None
    when = max([at] + [e.occurred_at for e in own])
    return LedgerEntry(id=f"expire:{grant.id}", account_id=grant.account_id, grant_id=grant.id,
                       kind=EntryKind.expire, unit=grant.unit, amount=-left, occurred_at=when,
                       reference=reason or "expired")


def adjust(grant: Grant, entries: Sequence[LedgerEntry], amount: Decimal, *, at: datetime, entry_id: str,
           reason: str) -> LedgerEntry:
    """An ops correction that takes ``amount`` (> 0) off ``grant`` (e.g. a charged-back purchase).

    Refused (``CreditsError`` naming the field) when it would take more than is left or is dated before
    the grant. Adjustments only ever reduce a grant: to give credits back, create an ops grant.
    """
    own = [e for e in entries if e.grant_id == grant.id]
    _index([grant], own)
    _require_text(entry_id, "entry_id")
    _require_text(reason, "reason")
    _require_aware(at, "at")
    amount = _require_amount(amount, grant.unit, "amount", positive=True)
    if at < grant.granted_at:
        raise CreditsError(f"must not be before the grant ({grant.granted_at.isoformat()})", field="at")
    left = sum((e.amount for e in own), ZERO)
    if amount > left:
        raise CreditsError(f"only {left} {grant.unit.value} left on grant {grant.id}, cannot take {amount}",
                           field="amount")
    return LedgerEntry(id=entry_id, account_id=grant.account_id, grant_id=grant.id, kind=EntryKind.adjust,
                       unit=grant.unit, amount=-amount, occurred_at=at, reference=reason)


# ---- the usd balance on an invoice -----------------------------------------------------------------
def apply_usd_to_invoice(grants: Sequence[Grant], entries: Sequence[LedgerEntry], *, invoice_id: str,
                         total: Decimal, at: datetime) -> InvoiceCredit:
    """Apply the usd balance to an invoice whose total (before this credit) is ``total``.

    Applies ``min(spendable usd at at, total)`` (nothing for a total <= 0), taken from the usd grants
    valid at ``at`` expiring first, one entry per grant, each id ``invoice:<invoice_id>:<grant>`` and
    referencing the invoice. So the invoice never goes negative. When entries for ``invoice_id``
    already exist, nothing more is applied: ``applied`` is what they hold and ``entries`` is empty (and
    a ``total`` now below that is refused: the invoice would go negative). ``at``: the close's instant
    (the same on a re-run, e.g. the scheduled time).

    The record of the application is its entries: applying $0 (no usd balance) leaves none, so a later
    call for the same invoice applies whatever is spendable then. Call it once the invoice's total is
    final (right before it is pushed), in the transaction that writes the invoice's credit line.
    """
    _require_text(invoice_id, "invoice_id")
    _require_aware(at, "at")
    if isinstance(total, bool) or not isinstance(total, Decimal) or not is_whole_cents(total):
        raise CreditsError(f"must be a Decimal of whole cents, got {total!r}", field="total")
    by_id, rest, _expired, _ids = _index(grants, entries)
    done = [e for e in entries if e.kind is EntryKind.invoice_application and e.reference == invoice_id]
    if done:
        applied = -sum((e.amount for e in done), ZERO)
        if applied > max(total, ZERO):
            raise CreditsError(f"invoice {invoice_id} already had {applied} of usd balance applied, more than "
                               f"its total {total}", field="total")
        return InvoiceCredit(invoice_id, applied, (), already_applied=True)
    need = max(total, ZERO)
    parts = []
    for g in sorted((g for g in by_id.values() if g.unit is Unit.usd), key=lambda g: g.fefo_key):
        if need == 0:
            break
        if not g.valid_at(at) or rest.get(g.id, ZERO) <= 0:
            continue
        take = min(need, rest[g.id])
        need -= take
        parts.append(LedgerEntry(id=f"invoice:{invoice_id}:{g.id}", account_id=g.account_id, grant_id=g.id,
                                 kind=EntryKind.invoice_application, unit=Unit.usd, amount=-take,
                                 occurred_at=at, reference=invoice_id))
    return InvoiceCredit(invoice_id, -sum((e.amount for e in parts), ZERO), tuple(parts))


# ---- what credits are worth (creator revenue share) ------------------------------------------------
def credit_value(grant: Grant) -> Decimal:
    """USD the customer paid per unit of ``grant`` (unrounded): Starter $10 / 1,100 credits =
    $0.00909...; an ops grant: its stated ``price`` / amount (0 for goodwill)."""
    return _WIDE.divide(grant.price, grant.amount)


def funded_value(grants: Sequence[Grant], consumption: Iterable[LedgerEntry]) -> Decimal:
    """USD value (unrounded) of the credits in ``consumption`` (e.g. one execution's entries, split
    across grants): the sum of credits x ``credit_value`` of the grant each came from."""
    by_id = {g.id: g for g in grants}
    total = ZERO
    for e in consumption:
        if e.kind is not EntryKind.consume:
            raise CreditsError(f"entry {e.id!r} is {e.kind.value}, not consume", field="consumption")
        g = by_id.get(e.grant_id)
        if g is None:
            raise CreditsError(f"entry {e.id!r} belongs to unknown grant {e.grant_id!r}", field="consumption")
        total = _WIDE.add(total, consumption_value(-e.amount, g.price, g.amount))
    return total


def consumption_value(credits: Decimal, price: Decimal, granted: Decimal) -> Decimal:
    """USD value (unrounded) of ``credits`` drawn from a grant of ``granted`` units bought for ``price``."""
    return _WIDE.multiply(credits, _WIDE.divide(price, granted))


# ---- the close: which usage rows credits paid for ----------------------------------------------------
def split_credit_funded(rows: Sequence[UsageRow], funded: Sequence[UsageRow]) -> list[UsageRow]:
    """The close's usage rows with the credit-funded executions taken out into rows of their own.

    ``funded``: the account's credit-funded executions grouped like ``rows`` (segment, version, model,
    BYOK, sandbox), with their counts, tokens and costs. Each group is taken from the matching billable
    row first (credits pay for executions past the quota), then from the matching included row (a
    credits-only account pays for every execution); what is taken becomes a ``credit_funded`` row that
    keeps the ``billable`` flag of the row it came from, so included and billable counts do not move
    and rating shows it at $0. Without ``funded`` the rows come back unchanged.
    """
    if not funded:
        return list(rows)
    out = [r for r in rows]
    extra: list[UsageRow] = []
    fields = ("executions", "input_tokens", "output_tokens", "cost", "uncosted_input_tokens", "uncosted_output_tokens")
    for f in funded:
        need = {k: getattr(f, k) for k in fields}
        for billable in (True, False):
            if need["executions"] <= 0:
                break
            for i, r in enumerate(out):
                if (r.segment, r.version, r.model, r.byok, r.sandbox, r.billable, r.credit_funded) != (
                        f.segment, f.version, f.model, f.byok, f.sandbox, billable, False) or r.executions == 0:
                    continue
                share = min(need["executions"], r.executions)
                whole = share == need["executions"]
                take = {k: (need[k] if whole else min(need[k], getattr(r, k))) for k in fields}
                take["executions"] = share
                take = {k: min(v, getattr(r, k)) for k, v in take.items()}
                out[i] = replace(r, **{k: getattr(r, k) - take[k] for k in fields})
                extra.append(replace(r, credit_funded=True, **take))
                need = {k: need[k] - take[k] for k in fields}
                break
    return [r for r in out if r.executions > 0] + extra


def expiry_notice_at(grant: Grant, days_before: int = 7) -> datetime:
    """When to queue the "your credits expire soon" notice: ``days_before`` days before ``expires_at``
    (not before ``granted_at``)."""
    return max(grant.granted_at, grant.expires_at - timedelta(days=days_before))


__all__ = [
    "CreditsError", "Unit", "EntryKind", "Grant", "LedgerEntry", "CreditCharge", "Consumption",
    "InvoiceCredit", "GrantSummary", "add_months", "purchase_grant", "ops_grant", "grant_entry",
    "balance", "remaining", "spendable", "summarize", "credit_cost", "credits_pay_for",
    "entitlement_with_credits", "consume", "consume_from_remainders", "expire", "adjust", "apply_usd_to_invoice", "credit_value",
    "funded_value", "expiry_notice_at", "split_credit_funded",
]
