"""Creator revenue share: what a premium skill's creator earns, when it becomes payable, and the
monthly payout decision. Pure functions, no I/O, no clock; money is ``Decimal``.

The terms (``CreatorTerms``, the catalog's ``[creators]`` section): ``share`` skills earn the creator
30% of the revenue their executions were billed for, after discounts; ``fixed`` skills charge the user
the creator's price per execution ($0.01 to $0.50) on their own invoice line, of which the creator
earns 70%; a creator is paid when the payable balance reaches $25.00.

Earnings (one ``Earning`` per creator per source line, rounded to the cent half-up once)
------------------------------------------------------------------------------------
* ``share_earnings``: the shell describes the invoice's charge lines (``ChargeLine``: amount, the
  executions behind it, and how many of those ran each premium skill) and its discounts
  (``DiscountLine``: a negative amount and the charge lines it reduces). A discount is spread over the
  lines it applies to in proportion to their amounts; each line's net amount is spread evenly over the
  executions behind it. So the base fee line, whose executions are all the period's non-sandbox,
  non-blocked executions, is attributed pro rata per execution; a usage line to the executions it
  charged. A creator's exact share of a line is ``share_percent`` of the net revenue of their skills'
  executions on it; rounded once per creator per line; the sub-cent remainder stays with the platform.
* ``fixed_price_line`` / ``fixed_earnings``: the skill's own invoice line (executions x price, rounded
  once) and ``fixed_percent`` of that line.
* ``credit_funded_earnings``: executions paid with credits are on no invoice; they are valued at the
  purchase price of the credits that paid (``billing.credits.funded_value``) and earn the share
  percentage, aggregated per creator per account per period into one row, rounded once.

Payable, and paid
-----------------
* ``payable_at``: invoice earnings become payable when their invoice is paid (``invoice_paid_at``), never
  while it is unpaid; credit-funded ones at the end of their period (at once, as their month ends).
* ``refund_adjustments``: a refund or lost dispute takes the same fraction of each creator's earnings
  on that invoice back, as a negative adjustment (also after a payout: the next payout absorbs it).
* ``decide_payout``: per creator and month ``P``, balance = carried in (everything payable at or before
  ``P.start``, minus the payouts of earlier months that were not cancelled) + earnings that became
  payable in ``(P.start, P.end]`` + adjustments in that window. At or above the minimum: one transfer of
  the whole balance; else it carries over ("$24.99 carried to 2026-12"). Given the same facts the
  decision is the same whenever it is computed, and across months nothing is lost or paid twice:
  ``sum(payouts not cancelled) + carried == sum(payable earnings) + sum(adjustments)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import Enum

from billing.catalog import CreatorTerms
from billing.checks import require_aware, require_count, require_text
from billing.errors import BillingError
from billing.money import ZERO, format_rate, format_usd, is_whole_cents, parse_money, round_money
from billing.periods import Period

_WIDE = Context(prec=60, rounding=ROUND_HALF_UP)
HUNDRED = Decimal(100)


class PayoutError(BillingError):
    """Bad input to the revenue-share core: names the field and the reason."""


class RevenueModel(str, Enum):
    share = "share"
    fixed = "fixed"


class PayoutStatus(str, Enum):
    pending = "pending"
    paid = "paid"
    failed = "failed"
    cancelled = "cancelled"


@dataclass(frozen=True)
class PremiumSkill:
    """A skill a creator marked premium: ``share`` of its revenue, or a ``fixed_price`` per execution."""

    skill_id: str
    creator_id: str
    model: RevenueModel
    fixed_price: Decimal | None = None


@dataclass(frozen=True)
class ChargeLine:
    """An invoice line that charged for executions (base fee, usage, token usage, prior-period usage).

    ``amount``: as billed (whole cents, >= 0); ``executions``: every execution behind the line;
    ``skill_executions``: of those, how many ran each skill (any skills; only ``share`` ones earn here).
    """

    line_id: str
    amount: Decimal
    executions: int
    skill_executions: Mapping[str, int]


@dataclass(frozen=True)
class DiscountLine:
    """A negative invoice line (e.g. the PAYG cap) that reduces the charge lines ``applies_to``."""

    line_id: str
    amount: Decimal
    applies_to: tuple[str, ...]


@dataclass(frozen=True)
class SkillRevenue:
    skill_id: str
    executions: int
    revenue: Decimal
    """Exact (unrounded) revenue attributed to this skill's executions on the source line."""


@dataclass(frozen=True)
class Earning:
    """What one creator earned from one source: an invoice line, or a period's credit-funded executions.

    ``amount``: whole cents, rounded once. ``invoice_id``: the invoice that must be paid first (None for
    credit-funded earnings, which are payable from ``payable_from``). ``id`` is deterministic, for a
    unique index: ``invoice:<invoice>:<line>:<creator>`` or ``credits:<account>:<period>:<creator>``.
    """

    id: str
    creator_id: str
    source: str
    amount: Decimal
    revenue: Decimal
    executions: int
    skills: tuple[SkillRevenue, ...]
    invoice_id: str | None = None
    payable_from: datetime | None = None


@dataclass(frozen=True)
class FixedPriceLine:
    """A fixed-price skill's own invoice line: ``quantity`` executions x ``unit_price`` = ``amount``."""

    line_id: str
    skill_id: str
    creator_id: str
    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class CreditFundedExecution:
    """An execution of a premium skill that credits paid for, valued at what those credits cost
    (``billing.credits.funded_value`` of its consumption entries; unrounded)."""

    event_id: str
    skill_id: str
    value: Decimal


@dataclass(frozen=True)
class CreatorAdjustment:
    """A correction to a creator's balance: negative for a refund or lost dispute (``invoice_id`` set),
    positive when a dispute is won back. Counts in the payout month containing ``occurred_at``."""

    id: str
    creator_id: str
    amount: Decimal
    occurred_at: datetime
    reason: str
    invoice_id: str | None = None


@dataclass(frozen=True)
class PriorPayout:
    """A payout already decided for a creator (any status). Cancelled ones give their amount back."""

    payout_id: str
    creator_id: str
    period: Period
    amount: Decimal
    status: PayoutStatus


@dataclass(frozen=True)
class PayoutDecision:
    """The month's decision for one creator. ``balance == carried_in + earnings + adjustments``;
    ``pay``: one transfer of ``amount == balance``; else ``carried_out == balance`` moves to next month."""

    creator_id: str
    period: Period
    payout_id: str
    carried_in: Decimal
    earnings: Decimal
    adjustments: Decimal
    balance: Decimal
    pay: bool
    amount: Decimal
    carried_out: Decimal
    message: str


# ---- validation ----------------------------------------------------------------------------------
def _text(v: object, field: str) -> str:
    return require_text(v, field, PayoutError)


def _count(v: object, field: str) -> int:
    return require_count(v, field, PayoutError)


def _cents(v: object, field: str, *, sign: int = 0) -> Decimal:
    """A Decimal of whole cents; ``sign`` 1: >= 0, -1: <= 0, 0: any."""
    if isinstance(v, bool) or not isinstance(v, Decimal) or not v.is_finite() or not is_whole_cents(v):
        raise PayoutError(f"must be a Decimal of whole cents, got {v!r}", field=field)
    if sign * v < 0:
        raise PayoutError(f"must be {'zero or more' if sign > 0 else 'zero or less'}, got {v}", field=field)
    return v


def _aware(ts: object, field: str) -> datetime:
    return require_aware(ts, field, PayoutError)


def _percent_of(percent: Decimal, amount: Decimal) -> Decimal:
    return _WIDE.divide(_WIDE.multiply(amount, percent), HUNDRED)


# ---- premium skills ------------------------------------------------------------------------------
def check_fixed_price(price: str | Decimal, terms: CreatorTerms) -> Decimal:
    """A creator's price per execution as a Decimal, or ``PayoutError`` (field ``fixed_price``) unless it is
    whole cents within ``[fixed_price_min, fixed_price_max]`` (the message states the range)."""
    value = parse_money(price, field="fixed_price", allow_negative=True)
    lo, hi = terms.fixed_price_min, terms.fixed_price_max
    if not lo <= value <= hi or not is_whole_cents(value):
        raise PayoutError(
            f"must be between {format_usd(lo)} and {format_usd(hi)} per execution, in whole cents; "
            f"got {format_rate(value)}",
            field="fixed_price",
        )
    return value


def premium_skill(skill_id: str, creator_id: str, terms: CreatorTerms, *, share: bool = False,
                  fixed_price: str | Decimal | None = None) -> PremiumSkill:
    """Mark a skill premium: exactly one of ``share=True`` or a ``fixed_price`` (checked against the range)."""
    _text(skill_id, "skill_id")
    _text(creator_id, "creator_id")
    if share == (fixed_price is not None):
        raise PayoutError("choose exactly one of share or a fixed price", field="model")
    if share:
        return PremiumSkill(skill_id, creator_id, RevenueModel.share)
    return PremiumSkill(skill_id, creator_id, RevenueModel.fixed, check_fixed_price(fixed_price, terms))


# ---- earnings -------------------------------------------------------------------------------------
def _net_amounts(charges: Sequence[ChargeLine], discounts: Sequence[DiscountLine]) -> dict[str, Decimal]:
    net: dict[str, Decimal] = {}
    for c in charges:
        _text(c.line_id, "line_id")
        if c.line_id in net:
            raise PayoutError(f"line {c.line_id!r} appears twice", field="line_id")
        _cents(c.amount, f"{c.line_id}.amount", sign=1)
        _count(c.executions, f"{c.line_id}.executions")
        behind = sum(_count(n, f"{c.line_id}.skill_executions") for n in c.skill_executions.values())
        if behind > c.executions:
            raise PayoutError(f"{c.line_id}: skill executions ({behind}) exceed the line's executions "
                              f"({c.executions})", field="skill_executions")
        net[c.line_id] = c.amount
    billed = dict(net)
    for d in discounts:
        _cents(d.amount, f"{d.line_id}.amount", sign=-1)
        unknown = [x for x in d.applies_to if x not in net]
        if unknown or not d.applies_to or len(set(d.applies_to)) != len(d.applies_to):
            raise PayoutError(f"{d.line_id}: must name distinct charge lines of this invoice, got "
                              f"{list(d.applies_to)}", field="applies_to")
        base = sum((billed[x] for x in d.applies_to), ZERO)
        if -d.amount > base:
            raise PayoutError(f"{d.line_id}: discount {d.amount} exceeds the lines it applies to ({base})",
                              field="amount")
        if d.amount == 0:
            continue
        for line_id in d.applies_to:
            net[line_id] = _WIDE.add(net[line_id], _WIDE.divide(_WIDE.multiply(billed[line_id], d.amount), base))
    for line_id, amount in net.items():
        if amount < 0:
            raise PayoutError(f"{line_id}: its discounts together exceed it", field="amount")
    return net


def share_earnings(invoice_id: str, charges: Sequence[ChargeLine], discounts: Sequence[DiscountLine],
                   skills: Mapping[str, PremiumSkill], terms: CreatorTerms) -> list[Earning]:
    """The ``share`` earnings of one invoice: per charge line and creator with executions behind it,
    ``share_percent`` of the line's net amount (after the discounts that apply to it, spread in
    proportion to amounts) x the creator's share skills' executions / the line's executions, rounded
    once, half-up. Lines with no executions earn nobody anything. Deterministic order (line, creator).

    Guarantees: every amount is whole cents; before rounding, a line's earnings never exceed
    ``share_percent`` of its net amount; ``fixed`` and unknown skills earn nothing here.
    """
    _text(invoice_id, "invoice_id")
    net = _net_amounts(charges, discounts)
    out: list[Earning] = []
    for c in charges:
        if c.executions == 0:
            continue
        per_creator: dict[str, list[SkillRevenue]] = {}
        for skill_id in sorted(c.skill_executions):
            n = c.skill_executions[skill_id]
            skill = skills.get(skill_id)
            if n == 0 or skill is None or skill.model is not RevenueModel.share:
                continue
            revenue = _WIDE.divide(_WIDE.multiply(net[c.line_id], Decimal(n)), Decimal(c.executions))
            per_creator.setdefault(skill.creator_id, []).append(SkillRevenue(skill_id, n, revenue))
        for creator_id in sorted(per_creator):
            parts = per_creator[creator_id]
            revenue = sum((p.revenue for p in parts), ZERO)
            out.append(Earning(
                id=f"invoice:{invoice_id}:{c.line_id}:{creator_id}", creator_id=creator_id,
                source=f"invoice:{invoice_id}:{c.line_id}",
                amount=round_money(_percent_of(terms.share_percent, revenue)), revenue=revenue,
                executions=sum(p.executions for p in parts), skills=tuple(parts), invoice_id=invoice_id,
            ))
    return out


def fixed_price_line(skill: PremiumSkill, executions: int) -> FixedPriceLine:
    """The invoice line of a ``fixed`` skill for ``executions`` (the period's non-sandbox, non-blocked
    executions of that skill, credit-funded ones included: the price is on top of the platform charge).
    ``amount = round(executions x price)`` once; id ``fixed:<skill>``."""
    if skill.model is not RevenueModel.fixed or skill.fixed_price is None:
        raise PayoutError(f"skill {skill.skill_id!r} is not a fixed-price skill", field="skill")
    n = _count(executions, "executions")
    price = skill.fixed_price
    return FixedPriceLine(
        line_id=f"fixed:{skill.skill_id}", skill_id=skill.skill_id, creator_id=skill.creator_id,
        description=f"Premium skill {skill.skill_id}: {n:,} execution{'' if n == 1 else 's'} × {format_rate(price)}",
        quantity=n, unit_price=price, amount=round_money(_WIDE.multiply(Decimal(n), price)),
    )


def fixed_earnings(invoice_id: str, line: FixedPriceLine, terms: CreatorTerms) -> Earning:
    """The creator's ``fixed_percent`` of their skill's invoice line, rounded once, half-up."""
    _text(invoice_id, "invoice_id")
    _cents(line.amount, "amount", sign=1)
    return Earning(
        id=f"invoice:{invoice_id}:{line.line_id}:{line.creator_id}", creator_id=line.creator_id,
        source=f"invoice:{invoice_id}:{line.line_id}",
        amount=round_money(_percent_of(terms.fixed_percent, line.amount)), revenue=line.amount,
        executions=line.quantity, skills=(SkillRevenue(line.skill_id, line.quantity, line.amount),),
        invoice_id=invoice_id,
    )


def credit_funded_earnings(account_id: str, period: Period, executions: Sequence[CreditFundedExecution],
                           skills: Mapping[str, PremiumSkill], terms: CreatorTerms) -> list[Earning]:
    """``share`` earnings of one account's credit-funded executions in ``period``: per creator,
    ``share_percent`` of the executions' value (what their credits cost), rounded once. Payable from
    ``period.end`` (no invoice to wait for). Fixed and unknown skills earn nothing here (a fixed skill's
    price is on the invoice)."""
    _text(account_id, "account_id")
    seen: set[str] = set()
    per_creator: dict[str, dict[str, tuple[int, Decimal]]] = {}
    for x in executions:
        _text(x.event_id, "event_id")
        if x.event_id in seen:
            raise PayoutError(f"event {x.event_id!r} appears twice", field="event_id")
        seen.add(x.event_id)
        if isinstance(x.value, bool) or not isinstance(x.value, Decimal) or not x.value.is_finite() or x.value < 0:
            raise PayoutError(f"{x.event_id}: must be a Decimal >= 0, got {x.value!r}", field="value")
        skill = skills.get(x.skill_id)
        if skill is None or skill.model is not RevenueModel.share:
            continue
        per_skill = per_creator.setdefault(skill.creator_id, {})
        n, v = per_skill.get(x.skill_id, (0, ZERO))
        per_skill[x.skill_id] = (n + 1, _WIDE.add(v, x.value))
    out = []
    for creator_id in sorted(per_creator):
        parts = tuple(SkillRevenue(s, n, v) for s, (n, v) in sorted(per_creator[creator_id].items()))
        revenue = sum((p.revenue for p in parts), ZERO)
        source = f"credits:{account_id}:{period}"
        out.append(Earning(
            id=f"{source}:{creator_id}", creator_id=creator_id, source=source,
            amount=round_money(_percent_of(terms.share_percent, revenue)), revenue=revenue,
            executions=sum(p.executions for p in parts), skills=parts, payable_from=period.end,
        ))
    return out


# ---- payable, refunds, payouts --------------------------------------------------------------------
def payable_at(earning: Earning, invoice_paid_at: Mapping[str, datetime]) -> datetime | None:
    """When ``earning`` became payable: its invoice's paid time (None while unpaid: nothing payable),
    or ``payable_from`` for a credit-funded earning."""
    if earning.invoice_id is None:
        return earning.payable_from
    return invoice_paid_at.get(earning.invoice_id)


def refund_adjustments(invoice_id: str, earnings: Sequence[Earning], *, charged: Decimal, refunded: Decimal,
                       previous: Sequence[CreatorAdjustment], refund_id: str, at: datetime) -> list[CreatorAdjustment]:
    """Negative adjustments after ``refunded`` (cumulative, of ``charged``) of an invoice was refunded
    or lost in a dispute: per creator, ``-round(their earnings on the invoice x refunded / charged)`` minus
    what ``previous`` adjustments for this invoice already took. So a full refund takes back exactly
    the earnings, a replayed refund event adds nothing, and a dispute won back (a lower ``refunded``)
    gives a positive adjustment. Ids ``refund:<invoice>:<refund_id>:<creator>``."""
    _text(invoice_id, "invoice_id")
    _text(refund_id, "refund_id")
    _aware(at, "at")
    _cents(charged, "charged", sign=1)
    _cents(refunded, "refunded", sign=1)
    if refunded > charged:
        raise PayoutError(f"must not exceed the amount charged ({charged}), got {refunded}", field="refunded")
    earned: dict[str, Decimal] = {}
    for e in earnings:
        if e.invoice_id != invoice_id:
            raise PayoutError(f"earning {e.id!r} is not from invoice {invoice_id!r}", field="earnings")
        earned[e.creator_id] = earned.get(e.creator_id, ZERO) + e.amount
    taken: dict[str, Decimal] = {}
    for a in previous:
        if a.invoice_id == invoice_id:
            taken[a.creator_id] = taken.get(a.creator_id, ZERO) + a.amount
    out = []
    for creator_id in sorted(earned):
        # Multiply before dividing: refunded/charged alone may not terminate (0.05/0.34), and rounding its
        # truncation would land just under an exact half cent (0.17 x 0.05 / 0.34 = 0.025 -> 0.03, not 0.02).
        target = -round_money(_WIDE.divide(_WIDE.multiply(earned[creator_id], refunded), charged)) if charged else ZERO
        delta = target - taken.get(creator_id, ZERO)
        if delta:
            out.append(CreatorAdjustment(id=f"refund:{invoice_id}:{refund_id}:{creator_id}", creator_id=creator_id,
                                         amount=delta, occurred_at=at, invoice_id=invoice_id,
                                         reason=f"refund {refund_id} of invoice {invoice_id}"))
    return out


def payout_id(creator_id: str, period: Period) -> str:
    """``payout-<creator>-<YYYY-MM>``: the payout's id, its workflow id and the root of its Stripe keys."""
    return f"payout-{_text(creator_id, 'creator_id')}-{period}"


def decide_payout(creator_id: str, period: Period, *, earnings: Iterable[Earning],
                  invoice_paid_at: Mapping[str, datetime], adjustments: Iterable[CreatorAdjustment],
                  payouts: Iterable[PriorPayout], terms: CreatorTerms) -> PayoutDecision:
    """The payout of ``creator_id`` for ``period``.

    A fact counts when it is at or before ``period.end`` (earnings by ``payable_at``, adjustments by
    ``occurred_at``); it is new in this period when after ``period.start``, else it is in ``carried_in``,
    net of the payouts of earlier periods that were not cancelled (a failed payout stays reserved until
    ops retry or cancel it; a cancelled one returns to the balance). Payouts of this period or later are
    ignored, so a re-run decides the same. Pay when ``balance >= minimum_payout`` (and > 0): one
    transfer of the whole balance. Otherwise carry it, with a message such as ``"$24.99 carried to
    2026-12"`` (negative balances carry too). Inputs for other creators: ``PayoutError``.
    """
    pid = payout_id(creator_id, period)
    start, end = period.start, period.end
    carried = new = adj = ZERO
    for e in earnings:
        if e.creator_id != creator_id:
            raise PayoutError(f"earning {e.id!r} belongs to {e.creator_id!r}", field="earnings")
        _cents(e.amount, f"{e.id}.amount")
        when = payable_at(e, invoice_paid_at)
        if when is None or _aware(when, "payable_at") > end:
            continue
        if when <= start:
            carried += e.amount
        else:
            new += e.amount
    for a in adjustments:
        if a.creator_id != creator_id:
            raise PayoutError(f"adjustment {a.id!r} belongs to {a.creator_id!r}", field="adjustments")
        _cents(a.amount, f"{a.id}.amount")
        if _aware(a.occurred_at, "occurred_at") > end:
            continue
        if a.occurred_at <= start:
            carried += a.amount
        else:
            adj += a.amount
    for p in payouts:
        if p.creator_id != creator_id:
            raise PayoutError(f"payout {p.payout_id!r} belongs to {p.creator_id!r}", field="payouts")
        if p.period < period and p.status is not PayoutStatus.cancelled:
            carried -= _cents(p.amount, f"{p.payout_id}.amount", sign=1)
    total = carried + new + adj
    if total > 0 and total >= terms.minimum_payout:
        return PayoutDecision(creator_id, period, pid, carried, new, adj, total, True, total, ZERO,
                              f"{format_usd(total)} to pay for {period} ({pid})")
    message = f"nothing payable for {period}" if total == 0 else f"{format_usd(total)} carried to {period.next()}"
    return PayoutDecision(creator_id, period, pid, carried, new, adj, total, False, ZERO, total, message)


# ---- an invoice's premium lines and earnings (the close's part) ----------------------------------
@dataclass(frozen=True)
class PremiumUsage:
    """An account's non-sandbox executions of one premium skill in a period that share a model, BYOK
    and whether they were past the included quota (ranked like the rating: occurred_at, event id)."""

    skill_id: str
    model: str
    byok: bool
    past_quota: bool
    executions: int


def _blocked_models(lines: Sequence) -> set[str]:
    """Models whose past-quota executions were blocked (a blocked line and no line that charged them)."""
    charged = {line.model for line in lines if line.kind.value in ("usage", "token_usage")}
    return {line.model for line in lines if line.kind.value == "blocked_usage" and line.model not in charged}


def premium_lines(usage: Sequence[PremiumUsage], skills: Mapping[str, PremiumSkill], lines: Sequence) -> list[FixedPriceLine]:
    """The fixed-price lines of an account's invoice: per ``fixed`` skill, its non-sandbox executions that
    were not blocked (``lines``: the rated invoice's lines, which say what was blocked), x its price."""
    blocked = _blocked_models(lines)
    counts: dict[str, int] = {}
    for u in usage:
        skill = skills.get(u.skill_id)
        if skill is None or skill.model is not RevenueModel.fixed or (u.past_quota and u.model in blocked):
            continue
        counts[u.skill_id] = counts.get(u.skill_id, 0) + _count(u.executions, "executions")
    return [fixed_price_line(skills[s], n) for s, n in sorted(counts.items()) if n > 0]


def invoice_earnings(invoice_id: str, lines: Sequence, executions: int, usage: Sequence[PremiumUsage],
                     skills: Mapping[str, PremiumSkill], terms: CreatorTerms) -> list[Earning]:
    """Every creator's earnings from one invoice (``lines``: its rated lines, with ``kind``, ``model``,
    ``amount``, ``executions``, ``key``; ``executions``: the period's non-sandbox executions).

    How revenue is attributed to executions (docs/decisions.md, "Creator revenue share"):
    * the base fee lines (one charge line ``base_fee``) are shared pro rata by every non-sandbox execution
      of the period that was not blocked (included or billable);
    * the per-execution usage lines of a model (``usage:<model>``) by that model's executions past the
      included quota; the token lines of a model (``tokens:<model>``) by its platform-key executions
      that were not blocked (BYOK executions carry no token charge);
    * the pay-as-you-go cap is a discount spread over the usage and token lines;
    * the fixed-price lines (kind ``premium_skill``) earn their creator ``fixed_percent`` of the line;
    * prior-period, contract and enterprise lines are not attributed (no premium earning comes from them).
    """
    blocked = _blocked_models(lines)
    base_amount = ZERO
    usage_amount: dict[str, Decimal] = {}
    usage_execs: dict[str, int] = {}
    token_amount: dict[str, Decimal] = {}
    token_execs: dict[str, int] = {}
    blocked_total = 0
    discounts = ZERO
    fixed: list[FixedPriceLine] = []
    for line in lines:
        kind = line.kind.value
        if kind == "base_fee":
            base_amount += line.amount
        elif kind == "usage":
            usage_amount[line.model] = usage_amount.get(line.model, ZERO) + line.amount
            usage_execs[line.model] = usage_execs.get(line.model, 0) + line.executions
        elif kind == "token_usage":
            token_amount[line.model] = token_amount.get(line.model, ZERO) + line.amount
            token_execs[line.model] = token_execs.get(line.model, 0) + line.executions
        elif kind == "blocked_usage" and line.model in blocked:
            blocked_total += line.executions
        elif kind == "cap_adjustment":
            discounts += line.amount
        elif kind == "premium_skill":
            skill_id = line.key.removeprefix("fixed:")
            skill = skills.get(skill_id)
            if skill is not None:
                fixed.append(FixedPriceLine(line.key, skill_id, skill.creator_id, line.description,
                                            int(line.quantity), line.unit_price, line.amount))
    base_skills: dict[str, int] = {}
    usage_skills: dict[str, dict[str, int]] = {}
    token_skills: dict[str, dict[str, int]] = {}
    for u in usage:
        if u.past_quota and u.model in blocked:
            continue
        base_skills[u.skill_id] = base_skills.get(u.skill_id, 0) + u.executions
        if u.past_quota and u.model in usage_execs:
            per = usage_skills.setdefault(u.model, {})
            per[u.skill_id] = per.get(u.skill_id, 0) + u.executions
        if not u.byok and u.model in token_execs:
            per = token_skills.setdefault(u.model, {})
            per[u.skill_id] = per.get(u.skill_id, 0) + u.executions
    charges = []
    if base_amount > 0:
        charges.append(ChargeLine("base_fee", base_amount, max(executions - blocked_total, sum(base_skills.values())),
                                  base_skills))
    for model in sorted(usage_amount):
        charges.append(ChargeLine(f"usage:{model}", usage_amount[model], usage_execs[model], usage_skills.get(model, {})))
    for model in sorted(token_amount):
        charges.append(ChargeLine(f"tokens:{model}", token_amount[model], token_execs[model], token_skills.get(model, {})))
    discount_lines = []
    if discounts < 0:
        applies = tuple(c.line_id for c in charges if c.line_id != "base_fee")
        discount_lines.append(DiscountLine("cap", discounts, applies))
    out = share_earnings(invoice_id, charges, discount_lines, skills, terms)
    out.extend(fixed_earnings(invoice_id, f, terms) for f in fixed)
    return [e for e in out if e.amount != 0 or e.executions]


__all__ = [
    "PayoutError", "RevenueModel", "PremiumSkill", "ChargeLine", "DiscountLine",
    "SkillRevenue", "Earning", "FixedPriceLine", "CreditFundedExecution", "CreatorAdjustment", "PriorPayout",
    "PayoutDecision", "check_fixed_price", "premium_skill", "share_earnings", "fixed_price_line",
    "fixed_earnings", "credit_funded_earnings", "payable_at", "refund_adjustments", "payout_id",
    "decide_payout", "PremiumUsage", "premium_lines", "invoice_earnings",
]
# By its class, not a quoted name: the quoted name is the search attribute's, which only
# workflows/search_attributes.py may spell out (tests/unit/test_registry.py).
__all__.append(PayoutStatus.__name__)
