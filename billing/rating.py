"""Rating one account for one billing period (per-execution pricing).

Pure functions: counts in, invoice lines out. Every line amount is rounded to whole cents exactly
once (``round_money(quantity * unit_price)``); unit prices keep their sub-cent precision.

Billable executions are those past the included quota in time order (``occurred_at``, then event
id). ``split_billable`` is the reference implementation of that rule; production computes the same
per-model counts in SQL with ``row_number() over (order by occurred_at, event_id)`` and tests compare
the two.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from enum import Enum
from typing import TypeVar

from billing import line_keys
from billing.catalog import Catalog, CatalogVersion, LlmModel, Plan
from billing.errors import RatingError
from billing.fastinit import dict_init
from billing.money import ZERO, format_rate, format_usd, round_money


_RATING_CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP)
T = TypeVar("T")


@dataclass(frozen=True)
class ModelUsage:
    """One model's executions in the period; ``billable`` = how many fall past the included quota."""

    model: str
    executions: int
    billable: int


@dataclass(frozen=True)
class AccountTerms:
    plan: str
    seats: int = 1
    overage_opt_in: bool = False


class LineKind(str, Enum):
    base_fee = "base_fee"
    included_usage = "included_usage"
    usage = "usage"
    blocked_usage = "blocked_usage"
    cap_adjustment = "cap_adjustment"
    token_usage = "token_usage"
    sandbox = "sandbox"
    prior_period_usage = "prior_period_usage"
    # enterprise accounts (billing/contracts.py): a contract month's lines, and enterprise days
    # that no contract covers
    committed_use = "committed_use"
    committed_usage = "committed_usage"
    contract_overage = "contract_overage"
    termination_fee = "termination_fee"
    enterprise_usage = "enterprise_usage"
    # a fixed-price premium skill's own line (billing/payouts.py): executions x the creator's price
    premium_skill = "premium_skill"
    # prepaid credits (billing/credits.py): executions credits paid for ($0, shown), and the usd
    # balance applied to the invoice total at close (negative)
    credit_usage = "credit_usage"
    prepaid_balance = "prepaid_balance"


@dict_init
@dataclass(frozen=True)
class RatedLine:
    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    model: str | None = None
    key: str = ""  # stable identity of the line within its period (late usage is billed by difference)
    version: str | None = None  # catalog version whose rate priced it
    direction: str | None = None  # input / output (token lines)
    executions: int = 0  # executions behind a usage line
    cost: Decimal = ZERO  # our LLM cost of those executions
    source_period: str | None = None  # prior-period lines: the period the usage belongs to


@dataclass(frozen=True)
class RatedInvoice:
    plan: str
    catalog_version: str
    lines: tuple[RatedLine, ...]
    executions: int
    billable_executions: int
    subtotal: Decimal
    total: Decimal
    sandbox_executions: int = 0
    byok_executions: int = 0
    platform_cost: Decimal = ZERO


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _n(count: int, noun: str = "execution") -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _check_seats(plan: Plan, seats: int) -> None:
    if not _is_int(seats) or seats < 1:
        raise RatingError(f"must be an integer >= 1, got {seats!r}", field="seats")
    if not plan.fee_per_seat and seats != 1:
        raise RatingError(
            f"must be 1 for plan {plan.code!r} (only per-seat plans have several seats), got {seats}",
            field="seats",
        )


def included_executions(plan: Plan, seats: int = 1) -> int:
    """The period's included quota: ``included_executions`` (x seats for per-seat plans)."""
    _check_seats(plan, seats)
    return plan.included_executions * seats if plan.fee_per_seat else plan.included_executions


def split_billable(events: Iterable[tuple[datetime, str, str]], included: int) -> dict[str, ModelUsage]:
    """Reference rule: events ``(occurred_at, event_id, model)`` in any order, sorted by
    ``(occurred_at, event_id)``; the first ``included`` are included, the rest billable.

    Returns per-model counts keyed by model code (sorted). ``occurred_at`` must be tz-aware;
    event ids must be unique.
    """
    if not _is_int(included) or included < 0:
        raise RatingError(f"must be an integer >= 0, got {included!r}", field="included")
    evs = list(events)
    seen: set[str] = set()
    for occurred_at, event_id, _model in evs:
        if not isinstance(occurred_at, datetime) or occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
            raise RatingError(f"must be a timezone-aware datetime, got {occurred_at!r}", field="occurred_at")
        if event_id in seen:
            raise RatingError(f"duplicate event id {event_id!r}", field="event_id")
        seen.add(event_id)
    executions = Counter(model for _ts, _id, model in evs)
    _, past = split_at_quota(evs, included, key=lambda e: (e[0], e[1]))
    billable = Counter(model for _ts, _id, model in past)
    return {m: ModelUsage(m, executions[m], billable[m]) for m in sorted(executions)}


def split_at_quota(events: Iterable[T], included: int,
                   key: Callable[[T], tuple[datetime, str]]) -> tuple[list[T], list[T]]:
    """The billable-execution rule: non-sandbox executions in time order (``key`` gives
    ``(occurred_at, event_id)``; ties on the instant go by event id), the first ``included`` are
    included and the rest billable. Returns (included, billable), each in that order.

    ``split_billable``, the SQL ranking of the close (``repositories.usage.usage_rows``) and
    ``invoices explain`` (``billing.explain``) all apply this one rule; tests compare SQL with it.
    """
    ordered = sorted(events, key=key)
    return ordered[:included], ordered[included:]


def _validate_usage(catalog: CatalogVersion, usage: Sequence[ModelUsage]) -> list[ModelUsage]:
    seen: set[str] = set()
    out = []
    for u in usage:
        if not isinstance(u, ModelUsage):
            raise RatingError(f"items must be ModelUsage, got {type(u).__name__}", field="usage")
        catalog.model(u.model)  # CatalogError for an unknown model
        if u.model in seen:
            raise RatingError(f"model {u.model!r} appears more than once", field="usage")
        seen.add(u.model)
        if not _is_int(u.executions) or u.executions < 0:
            raise RatingError(f"{u.model}: must be an integer >= 0, got {u.executions!r}", field="executions")
        if not _is_int(u.billable) or not 0 <= u.billable <= u.executions:
            raise RatingError(
                f"{u.model}: must be an integer between 0 and executions ({u.executions}), got {u.billable!r}",
                field="billable",
            )
        out.append(u)
    return sorted(out, key=lambda u: u.model)


def rate_period(catalog: CatalogVersion, terms: AccountTerms, usage: Sequence[ModelUsage]) -> RatedInvoice:
    """Rate one account's whole period under one catalog version, per-execution pricing.

    The common case, and the reference the general ``rate_account`` must agree with.
    Line order: base_fee, included_usage, usage (by model), blocked_usage (by model), cap_adjustment.
    """
    with localcontext(_RATING_CONTEXT):
        plan = catalog.plan(terms.plan)  # CatalogError for an unknown plan
        _refuse_contract(plan)
        included = included_executions(plan, terms.seats)
        rows = _validate_usage(catalog, usage)
        total_exec = sum(u.executions for u in rows)
        total_billable = sum(u.billable for u in rows)
        expected = max(0, total_exec - included)
        if total_billable != expected:
            raise RatingError(
                f"sum of billable ({total_billable:,}) must equal executions beyond the included quota "
                f"(max(0, {total_exec:,} - {included:,}) = {expected:,})",
                field="billable",
            )
        usage_rows: list[UsageRow] = []
        for u in rows:
            if u.executions - u.billable:
                usage_rows.append(UsageRow(segment=0, version=catalog.version, model=u.model,
                                           executions=u.executions - u.billable))
            if u.billable:
                usage_rows.append(UsageRow(segment=0, version=catalog.version, model=u.model,
                                           billable=True, executions=u.billable))
        seg = _Segment(index=0, plan=plan, version=catalog, seats=terms.seats,
                       overage_opt_in=terms.overage_opt_in, pricing="executions", days=None, period_days=None)
        return _rate({catalog.version: catalog}, [seg], usage_rows, pooled_included=included)


def _refuse_contract(plan: Plan) -> None:
    if plan.contract:
        raise RatingError(
            f"enterprise accounts are billed by their contract (plan {plan.code!r}), not by per-execution rating",
            field="plan",
        )


# ---- the general rater: plan segments, catalog versions, token pricing, BYOK, sandbox ------------------
PRICING_MODES = ("executions", "tokens")
PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TermsSegment:
    """The account's terms over ``[start, end)`` (whole UTC days inside the period).

    Plan changes and seat changes split a period into segments; each is priced under its own
    terms, its fee and included quota prorated by days.
    """

    start: datetime
    end: datetime
    plan: str
    seats: int = 1
    overage_opt_in: bool = False
    pricing: str = "executions"  # or "tokens"


@dict_init
@dataclass(frozen=True)
class UsageRow:
    """Aggregated executions of one account that share everything pricing depends on.

    ``version``: the catalog version in force when they occurred; ``billable``: past the (pooled)
    included quota in time order; ``cost``: our recorded LLM cost of the platform-key ones;
    ``uncosted_*``: tokens of platform-key executions that arrived without a cost (priced from the
    rate card's cost columns).
    """

    segment: int
    version: str
    model: str
    byok: bool = False
    sandbox: bool = False
    billable: bool = False
    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = ZERO
    uncosted_input_tokens: int = 0
    uncosted_output_tokens: int = 0
    credit_funded: bool = False  # paid with prepaid credits: shown, never charged (billing.credits)


@dict_init
@dataclass(frozen=True)
class _Segment:
    index: int
    plan: Plan
    version: CatalogVersion  # whose plan terms (fee, quota, overage rate) apply
    seats: int
    overage_opt_in: bool
    pricing: str
    days: int | None  # None: the whole period (no proration)
    period_days: int | None
    label: str = ""

    @property
    def prorated(self) -> bool:
        return self.days is not None and self.days != self.period_days

    @property
    def billed(self) -> bool:
        """Are executions past the quota charged (else blocked: shown, not billed)?"""
        p = self.plan
        return p.overage_rate is not None and (self.overage_opt_in or not p.overage_requires_opt_in)

    def included(self) -> int:
        full = included_executions(self.plan, self.seats)
        if not self.prorated:
            return full
        return int((Decimal(full) * self.days / self.period_days).to_integral_value(ROUND_HALF_UP))


def segment_days(period_start: datetime, period_end: datetime, seg: TermsSegment) -> int:
    for name, ts in (("start", seg.start), ("end", seg.end)):
        if ts.tzinfo is None or (ts.hour, ts.minute, ts.second, ts.microsecond) != (0, 0, 0, 0):
            raise RatingError(f"segment {name} must be 00:00 UTC of a day, got {ts!r}", field="segments")
    if not period_start <= seg.start < seg.end <= period_end:
        raise RatingError("segments must lie inside the period and not be empty", field="segments")
    return (seg.end - seg.start).days


def resolve_segments(catalog: Catalog, period_start: datetime, period_end: datetime,
                     segments: Sequence[TermsSegment]) -> list[_Segment]:
    """Each terms segment with its plan and catalog version looked up and checked (``RatingError``
    / ``CatalogError`` otherwise). Remembered per catalog object and plainly typed segments: most
    accounts of a close share their terms, and the close resolves each account's twice (its quota,
    then its rating)."""
    key = _resolve_key(catalog, period_start, period_end, segments)
    if key is None:
        return _resolve_segments(catalog, period_start, period_end, segments)
    hit = _RESOLVED.get(key)
    if hit is None or hit[0] is not catalog:
        hit = (catalog, tuple(_resolve_segments(catalog, period_start, period_end, segments)))
        if len(_RESOLVED) >= 4_096:
            _RESOLVED.clear()
        _RESOLVED[key] = hit
    return list(hit[1])


# (id(catalog), period start, period end, *segments) -> (catalog, its resolved segments). The entry
# holds the catalog, so its id cannot be reused while the entry lives; catalogs are frozen.
_RESOLVED: dict[tuple, tuple[Catalog, tuple[_Segment, ...]]] = {}


def _resolve_key(catalog: Catalog, period_start: datetime, period_end: datetime,
                 segments: Sequence[TermsSegment]) -> tuple | None:
    """A key under which equal inputs are the same input, or None (not remembered). Only exact
    types qualify: ``True == 1`` and equal instants in other time zones compare equal but resolve
    differently (seats must not be a bool; labels and day checks read the zone's fields)."""
    if not (isinstance(segments, (list, tuple)) and type(period_start) is datetime and type(period_end) is datetime
            and period_start.tzinfo is timezone.utc and period_end.tzinfo is timezone.utc):
        return None
    for s in segments:
        if not (type(s) is TermsSegment and type(s.start) is datetime and type(s.end) is datetime
                and s.start.tzinfo is timezone.utc and s.end.tzinfo is timezone.utc and type(s.plan) is str
                and type(s.seats) is int and type(s.overage_opt_in) is bool and type(s.pricing) is str):
            return None
    return (id(catalog), period_start, period_end, *segments)


def _resolve_segments(catalog: Catalog, period_start: datetime, period_end: datetime,
                      segments: Sequence[TermsSegment]) -> list[_Segment]:
    if not segments:
        raise RatingError("at least one terms segment is needed", field="segments")
    period_days = (period_end - period_start).days
    out = []
    prev_end = None
    for i, seg in enumerate(segments):
        days = segment_days(period_start, period_end, seg)
        if prev_end is not None and seg.start != prev_end:
            raise RatingError("segments must be contiguous and in time order", field="segments")
        prev_end = seg.end
        if seg.pricing not in PRICING_MODES:
            raise RatingError(f"unknown pricing {seg.pricing!r}; use executions or tokens", field="pricing")
        version = catalog.at(seg.start)
        plan = version.plan(seg.plan)
        _refuse_contract(plan)
        _check_seats(plan, seg.seats)
        label = f"{seg.start:%b} {seg.start.day}–{(seg.end - timedelta(days=1)).day}"
        out.append(_Segment(i, plan, version, seg.seats, seg.overage_opt_in, seg.pricing,
                            days, period_days, label))
    return out


def pooled_included(catalog: Catalog, period_start: datetime, period_end: datetime,
                    segments: Sequence[TermsSegment]) -> int:
    """The period's included quota: each segment's quota prorated by its days, pooled.

    Executions past it (in time order) are billable, each priced by the terms of the segment
    it occurred in. The database ranks executions against this number.
    """
    with localcontext(_RATING_CONTEXT):
        return sum(s.included() for s in resolve_segments(catalog, period_start, period_end, segments))


def rate_account(catalog: Catalog, period_start: datetime, period_end: datetime,
                 segments: Sequence[TermsSegment], usage: Sequence[UsageRow]) -> RatedInvoice:
    """Rate one account's period (or month to date) from its terms segments and aggregated usage."""
    with localcontext(_RATING_CONTEXT):
        segs = resolve_segments(catalog, period_start, period_end, segments)
        versions = {}
        known: set[tuple[str, str]] = set()  # (version, model) pairs already looked up
        n_segs = len(segs)
        for row in usage:
            if row.version not in versions:
                versions[row.version] = catalog.version(row.version)
            if not 0 <= row.segment < n_segs:
                raise RatingError(f"usage row refers to segment {row.segment}", field="usage")
            if row.executions < 0 or row.input_tokens < 0 or row.output_tokens < 0:
                raise RatingError("counts must not be negative", field="usage")
            if (row.version, row.model) not in known:
                versions[row.version].model(row.model)  # CatalogError for an unknown model
                known.add((row.version, row.model))
        return _rate(versions, segs, list(usage), pooled_included=sum(s.included() for s in segs))


def _rate(versions: dict[str, CatalogVersion], segs: list[_Segment], usage: list[UsageRow],
          pooled_included: int) -> RatedInvoice:
    multi_version = len(versions) > 1
    multi_segment = len(segs) > 1
    lines: list[RatedLine] = []

    # 1. base fees, one per segment (prorated by days when the segment is part of the period)
    for seg in segs:
        plan = seg.plan
        if plan.monthly_fee <= 0:
            continue
        qty = Decimal(seg.seats if plan.fee_per_seat else 1)
        unit = plan.monthly_fee
        desc = f"{plan.name} plan — monthly fee"
        if plan.fee_per_seat:
            desc = f"{plan.name} plan — {_n(seg.seats, 'seat')} × {format_usd(plan.monthly_fee)}"
        if seg.prorated:
            # The prorated unit fee is rounded to the cent first, so quantity × unit is the amount.
            unit = round_money(plan.monthly_fee * seg.days / seg.period_days)
            desc += f", {seg.days}/{seg.period_days} days ({seg.label}) = {format_usd(unit)}"
            if plan.fee_per_seat:
                desc += " per seat"
        lines.append(RatedLine(LineKind.base_fee, desc, qty, unit, round_money(qty * unit),
                               key=line_keys.base_fee(seg.index, plan.code, seg.seats)))

    # One pass for the period's counts (platform = not sandbox).
    platform: list[UsageRow] = []
    total_exec = total_billable = sandbox = byok = 0
    for r in usage:
        if r.sandbox:
            sandbox += r.executions
            continue
        platform.append(r)
        total_exec += r.executions
        if r.billable:
            total_billable += r.executions
        if r.byok:
            byok += r.executions

    # 2. informational: included executions, sandbox tries, BYOK
    if pooled_included > 0 and total_exec > 0:
        used = total_exec - total_billable
        lines.append(RatedLine(LineKind.included_usage,
                               f"Included executions ({used:,} of {pooled_included:,})",
                               Decimal(used), ZERO, ZERO, key=line_keys.included_usage()))
    if sandbox:
        lines.append(RatedLine(LineKind.sandbox, f"Sandbox tries: {_n(sandbox, 'try').replace('trys', 'tries')} (not charged)",
                               Decimal(sandbox), ZERO, ZERO, key=line_keys.sandbox()))

    # 3. charges: per-execution overage/usage, or per-token; blocked executions shown at $0
    usage_lines: list[RatedLine] = []
    blocked: dict[str, int] = {}
    per_exec: dict[tuple, list[UsageRow]] = {}
    tokens: dict[tuple, list[UsageRow]] = {}
    funded: dict[str, int] = {}
    seg_billed = [seg.billed for seg in segs]
    seg_tokens = [seg.pricing == "tokens" for seg in segs]
    seg_key = [seg.index if multi_segment else None for seg in segs]
    rates: dict[tuple[str, int], Decimal] = {}  # (version, segment) -> the plan's overage rate there
    for r in platform:
        i = r.segment
        if r.credit_funded:
            funded[r.model] = funded.get(r.model, 0) + r.executions
            continue
        if r.billable and not seg_billed[i]:
            blocked[r.model] = blocked.get(r.model, 0) + r.executions
            continue
        if seg_tokens[i]:
            if not r.byok:
                tokens.setdefault((r.model, r.version, seg_key[i]), []).append(r)
        elif r.billable:
            rate_key = (r.version, i)
            if rate_key not in rates:
                rates[rate_key] = versions[r.version].plan(segs[i].plan.code).overage_rate
            per_exec.setdefault((r.model, r.version, rates[rate_key], seg_key[i]), []).append(r)

    capped_charge = ZERO  # usage charged under a plan with a usage cap (pay-as-you-go)
    for (model, version, rate, seg_index), rows in sorted(per_exec.items(), key=lambda kv: str(kv[0])):
        n = sum(r.executions for r in rows)
        seg = segs[rows[0].segment]
        amount = round_money(Decimal(n) * rate)
        if seg.plan.usage_cap is not None:
            capped_charge += amount
        label = "Overage" if pooled_included > 0 else "Usage"
        where = _where(version if multi_version else None, seg.label if seg_index is not None else None)
        usage_lines.append(RatedLine(
            LineKind.usage, f"{label} — {model}{where}: {_n(n)} × {_rate_text(rate)}",
            Decimal(n), rate, amount, model,
            key=line_keys.usage(model, version, rate, seg_index), version=version,
            executions=n, cost=_cost(versions[version], model, rows),
        ))
    for (model, version, seg_index), rows in sorted(tokens.items(), key=lambda kv: str(kv[0])):
        seg = segs[rows[0].segment]
        where = _where(version if multi_version else None, seg.label if seg_index is not None else None)
        n = qty_in = qty_out = 0
        for r in rows:
            n += r.executions
            qty_in += r.input_tokens
            qty_out += r.output_tokens
        cost = _cost(versions[version], model, rows)
        for (direction, unit, per_m_text), qty in zip(_token_prices(versions[version], model), (qty_in, qty_out)):
            if qty == 0:
                continue
            amount = round_money(Decimal(qty) * unit)
            if seg.plan.usage_cap is not None:
                capped_charge += amount
            usage_lines.append(RatedLine(
                LineKind.token_usage,
                f"{model} {direction} tokens{where}: {qty:,} × {per_m_text} per 1M",
                Decimal(qty), unit, amount, model,
                key=line_keys.token_usage(model, version, direction, seg_index), version=version,
                direction=direction, executions=n if direction == "input" else 0,
                cost=cost if direction == "input" else ZERO,
            ))
    lines.extend(usage_lines)
    for model in sorted(blocked):
        n = blocked[model]
        lines.append(RatedLine(
            LineKind.blocked_usage, f"Blocked beyond included quota — {model}: {_n(n)} (not billed)",
            Decimal(n), ZERO, ZERO, model, key=line_keys.blocked_usage(model), executions=n,
        ))

    for model in sorted(funded):
        n = funded[model]
        lines.append(RatedLine(
            LineKind.credit_usage, f"Paid with prepaid credits — {model}: {_n(n)} (not billed)",
            Decimal(n), ZERO, ZERO, model, key=line_keys.credit_usage(model), executions=n,
        ))

    # 4. usage cap (pay-as-you-go): the period's usage charge never exceeds it
    capped = [s for s in segs if s.plan.usage_cap is not None]
    if capped:
        cap = capped[0].plan.usage_cap
        if capped_charge > cap:
            adj = round_money(cap - capped_charge)
            lines.append(RatedLine(LineKind.cap_adjustment, f"{capped[0].plan.name} cap ({format_usd(cap)})",
                                   Decimal(1), adj, adj, key=line_keys.cap_adjustment()))

    subtotal = round_money(sum((line.amount for line in lines), ZERO))
    if subtotal < 0:  # pragma: no cover - impossible by construction (cap > 0, prices >= 0)
        raise RatingError(f"rated subtotal is negative ({subtotal})", field="total")
    # Each row's cost as ``_cost(version, model, [row])`` gives it, added up in row order: the same
    # operations as summing those calls, inlined (the close does this for ~20 rows an account). A BYOK
    # row's is 0.00, which changes nothing in a sum that starts at 0.00.
    platform_cost = ZERO
    llm_models: dict[tuple[str, str], LlmModel] = {}
    for r in platform:
        if r.byok:
            continue
        m = llm_models.get((r.version, r.model))
        if m is None:
            m = llm_models[(r.version, r.model)] = versions[r.version].model(r.model)
        row_cost = ZERO + r.cost
        row_cost += (Decimal(r.uncosted_input_tokens) * m.cost_input_per_mtok
                     + Decimal(r.uncosted_output_tokens) * m.cost_output_per_mtok) / PER_MILLION
        platform_cost += row_cost
    return RatedInvoice(
        plan=segs[-1].plan.code,
        catalog_version=segs[-1].version.version,
        lines=tuple(lines),
        executions=total_exec,
        billable_executions=total_billable,
        subtotal=subtotal,
        total=subtotal,
        sandbox_executions=sandbox,
        byok_executions=byok,
        platform_cost=platform_cost,
    )


def _token_prices(version: CatalogVersion, model: str) -> tuple[tuple[str, Decimal, str], tuple[str, Decimal, str]]:
    """("input" / "output", unit price per token, text of the price per 1M) of ``model`` under
    ``version``: its user prices (explicit, else cost x markup) / 1M in the rating's context.
    Remembered per catalog version object (frozen: the same object always prices the same); the
    entry holds the version, so its id cannot be reused while the entry lives."""
    key = (id(version), model)
    hit = _TOKEN_PRICES.get(key)
    if hit is None or hit[0] is not version:
        m = version.model(model)
        per_in, per_out = m.user_price_input(version.markup), m.user_price_output(version.markup)
        hit = (version, (("input", _RATING_CONTEXT.divide(per_in, PER_MILLION), format_rate(per_in)),
                         ("output", _RATING_CONTEXT.divide(per_out, PER_MILLION), format_rate(per_out))))
        if len(_TOKEN_PRICES) >= 4_096:
            _TOKEN_PRICES.clear()
        _TOKEN_PRICES[key] = hit
    return hit[1]


_TOKEN_PRICES: dict[tuple[int, str], tuple[CatalogVersion, tuple]] = {}
_RATE_TEXTS: dict[Decimal, str] = {}


def _rate_text(rate: Decimal) -> str:
    """``format_rate`` of a catalog rate, remembered: its text depends only on the rate's value (equal
    Decimals such as 0.50 and 0.5 give the same text), and a catalog has few distinct rates."""
    text = _RATE_TEXTS.get(rate)
    if text is None:
        text = format_rate(rate)
        if len(_RATE_TEXTS) < 10_000:
            _RATE_TEXTS[rate] = text
    return text


def _where(version: str | None, segment_label: str | None) -> str:
    parts = [p for p in (segment_label, f"rates {version}" if version else None) if p]
    return f" ({', '.join(parts)})" if parts else ""


def _cost(version: CatalogVersion, model: str, rows: Sequence[UsageRow]) -> Decimal:
    """Our LLM cost: recorded costs, plus rate-card cost for tokens that came without one. BYOK: 0."""
    m = version.model(model)
    total = ZERO
    for r in rows:
        if r.byok or r.sandbox:
            continue
        total += r.cost
        total += (Decimal(r.uncosted_input_tokens) * m.cost_input_per_mtok
                  + Decimal(r.uncosted_output_tokens) * m.cost_output_per_mtok) / PER_MILLION
    return total


llm_cost = _cost  # the same rule for lines priced outside this module (billing.contracts)


@dataclass(frozen=True)
class Execution:
    """One recorded execution, as the close reads it (``aggregate_usage``)."""

    event_id: str
    occurred_at: datetime
    model: str
    byok: bool = False
    sandbox: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None


def aggregate_usage(executions: Iterable[Execution], start: datetime, end: datetime,
                    segments: Sequence[TermsSegment], versions: Sequence[tuple[str, datetime, datetime]],
                    included: int) -> list[UsageRow]:
    """Reference rule for one account's usage rows of ``[start, end)``: what the close's SQL
    (``repositories.usage.usage_rows``) computes, one execution at a time. Executions before the
    first segment are left out; the others are ranked (``split_at_quota``, sandbox tries never
    counted), then those inside a segment and a catalog version window are grouped by segment,
    version, model, BYOK, sandbox and billable. Rows come back sorted by that key."""
    first = segments[0].start if segments else start
    seen = [e for e in executions if start <= e.occurred_at < end and e.occurred_at >= first]
    _, past = split_at_quota([e for e in seen if not e.sandbox], included, key=lambda e: (e.occurred_at, e.event_id))
    billable = {id(e) for e in past}
    groups: dict[tuple, UsageRow] = {}
    for e in seen:
        seg = next((i for i, s in enumerate(segments) if s.start <= e.occurred_at < s.end), None)
        ver = next((name for name, lo, hi in versions if lo <= e.occurred_at < hi), None)
        if seg is None or ver is None:
            continue
        key = (seg, ver, e.model, e.byok, e.sandbox, id(e) in billable)
        g = groups.get(key) or UsageRow(segment=seg, version=ver, model=e.model, byok=e.byok, sandbox=e.sandbox,
                                        billable=key[-1])
        uncosted = e.cost_usd is None and not e.byok
        groups[key] = replace(
            g, executions=g.executions + 1, input_tokens=g.input_tokens + e.input_tokens,
            output_tokens=g.output_tokens + e.output_tokens,
            cost=g.cost + (e.cost_usd if e.cost_usd is not None and not e.byok else ZERO),
            uncosted_input_tokens=g.uncosted_input_tokens + (e.input_tokens if uncosted else 0),
            uncosted_output_tokens=g.uncosted_output_tokens + (e.output_tokens if uncosted else 0))
    return [groups[k] for k in sorted(groups)]


# ---- late usage: prior-period lines ---------------------------------------------------------------
PRIOR_KINDS = frozenset({"usage", "token_usage", "blocked_usage", "cap_adjustment", "contract_overage",
                         "enterprise_usage"})


@dataclass(frozen=True)
class BilledLine:
    """What was already billed for a period under one line key (its own invoice plus earlier
    prior-period lines on later invoices)."""

    key: str
    quantity: Decimal
    amount: Decimal


def prior_period_lines(source_period: str, rerated: RatedInvoice, billed: Sequence[BilledLine]) -> list[RatedLine]:
    """Lines for usage of an already-invoiced period that arrived late.

    The period is re-rated with everything known now, at the rates in force when the executions
    occurred; each line key contributes the difference to what was billed. So over all invoices
    the period is billed exactly as if rated once with all its usage: nothing lost, nothing twice.
    """
    with localcontext(_RATING_CONTEXT):
        done: dict[str, tuple[Decimal, Decimal]] = {}
        for b in billed:
            q, a = done.get(b.key, (ZERO, ZERO))
            done[b.key] = (q + b.quantity, a + b.amount)
        out = []
        for line in rerated.lines:
            if line.kind.value not in PRIOR_KINDS:
                continue
            q, a = done.get(line.key, (ZERO, ZERO))
            dq, da = line.quantity - q, line.amount - a
            if dq == 0 and da == 0:
                continue
            out.append(RatedLine(
                LineKind.prior_period_usage,
                f"Prior-period usage {source_period} — {line.description} (+{dq.normalize():f} late)",
                dq, line.unit_price, da, line.model, key=line.key, version=line.version,
                direction=line.direction, source_period=source_period,
            ))
        return out


def with_lines(rated: RatedInvoice, extra: Sequence[RatedLine]) -> RatedInvoice:
    """The invoice with ``extra`` lines (prior-period usage) appended and its totals moved by their
    amounts; everything else (plan, counts, platform cost) is this period's."""
    amount = sum((line.amount for line in extra), ZERO)
    return replace(rated, lines=rated.lines + tuple(extra), subtotal=rated.subtotal + amount,
                   total=rated.total + amount)


__all__ = [
    "ModelUsage",
    "AccountTerms",
    "LineKind",
    "RatedLine",
    "RatedInvoice",
    "included_executions",
    "split_billable",
    "rate_period",
    "TermsSegment",
    "UsageRow",
    "BilledLine",
    "rate_account",
    "pooled_included",
    "prior_period_lines",
    "split_at_quota",
    "Execution",
    "aggregate_usage",
    "with_lines",
    "llm_cost",
]
