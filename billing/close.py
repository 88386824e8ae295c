"""What the monthly close decides for one account (pure), from facts loaded beforehand in one place
(``activities.pricing.load_facts``): its invoice, rated segment by segment at the rate cards in force,
plus prior-period lines for usage that arrived after an earlier invoice was final; and whether it
moves from pay-as-you-go to Pro from the next period.

The preview, ``invoices explain``'s totals and the API's month-to-date charges rate through
``rate`` too, so none of them can disagree with the close on the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from billing import contracts
from billing.catalog import Catalog
from billing.conversion import AutoConversion, decide_auto_convert
from billing.payouts import FixedPriceLine, PremiumSkill, PremiumUsage, premium_lines
from billing.periods import Period
from billing.rating import (
    BilledLine,
    LineKind,
    RatedLine,
    RatedInvoice,
    TermsSegment,
    UsageRow,
    prior_period_lines,
    rate_account,
    with_lines,
)
from billing.terms import Terms, decide_change, terms_of


@dataclass(frozen=True)
class LateUsage:
    """Executions of an earlier, already invoiced period that arrived after its invoice was final."""

    period: Period
    executions: int  # not billed yet
    segments: Sequence[TermsSegment]  # that period's terms
    usage: Sequence[UsageRow]  # all of that period's usage known now
    billed: Sequence[BilledLine]  # what its own and later invoices billed for it
    enterprise: EnterpriseFacts | None = None  # that period's enterprise days, if any


@dataclass(frozen=True)
class EnterpriseFacts:
    """An account's enterprise days in the period (``billing.contracts``): how the period splits
    between the rater and the contracts, and the executions of each span (``span_usage[i]``)."""

    split: contracts.EnterpriseSplit
    span_usage: Sequence[Sequence[UsageRow]]


@dataclass(frozen=True)
class ConversionFacts:
    """What the PAYG auto-convert decision needs beyond the rating (loaded for eligible accounts)."""

    billing_starts_at: datetime
    terms_changed_from_next: bool  # the account has terms from the next period on
    invoiced_from_next: bool  # an invoice of the next period (or later) is already final


@dataclass(frozen=True)
class PremiumFacts:
    """The account's executions of premium skills in the period (``billing.payouts.PremiumUsage``) and
    the premium skills in force: fixed-price skills add their own invoice line."""

    usage: Sequence[PremiumUsage]
    skills: Mapping[str, PremiumSkill]


@dataclass(frozen=True)
class AccountFacts:
    account_id: str
    segments: Sequence[TermsSegment]
    usage: Sequence[UsageRow]
    included: int  # the pooled quota the usage was ranked against
    late: Sequence[LateUsage] = ()
    conversion: ConversionFacts | None = None
    enterprise: EnterpriseFacts | None = None  # segments/usage/included then cover only the rated days
    premium: PremiumFacts | None = None  # premium skills run in the period (fixed-price lines, earnings)


@dataclass
class AccountRating:
    account_id: str
    segments: list[TermsSegment]
    usage: list[UsageRow]
    rated: RatedInvoice
    included: int
    prior: dict[str, int] = field(default_factory=dict)  # source period -> late executions billed
    reconciliations: tuple[contracts.MonthReconciliation, ...] = ()  # contract months billed

    @property
    def total(self) -> Decimal:
        return self.rated.total


@dataclass(frozen=True)
class Conversion:
    auto: AutoConversion
    terms: Terms  # the account's terms from ``auto.effective_from``


@dataclass(frozen=True)
class AccountOutcome:
    rating: AccountRating
    conversion: Conversion | None


def rate(catalog: Catalog, period: Period, facts: AccountFacts) -> AccountRating:
    """The account's invoice for the period, with a prior-period line per line key whose late usage
    changed what an earlier period should have billed (billed by difference: never twice)."""
    rated, recs = _rate_own(catalog, period, facts.segments, facts.usage, facts.enterprise)
    prior: dict[str, int] = {}
    for late in facts.late:
        again, _ = _rate_own(catalog, late.period, late.segments, late.usage, late.enterprise)
        rated = with_lines(rated, prior_period_lines(str(late.period), again, late.billed))
        prior[str(late.period)] = late.executions
    if facts.premium is not None:
        rated = with_lines(rated, [_premium_line(f) for f in premium_lines(facts.premium.usage, facts.premium.skills,
                                                                          rated.lines)])
    return AccountRating(facts.account_id, list(facts.segments), list(facts.usage), rated, facts.included, prior,
                         recs)


def _premium_line(f: FixedPriceLine) -> RatedLine:
    return RatedLine(LineKind.premium_skill, f.description, Decimal(f.quantity), f.unit_price, f.amount,
                     key=f.line_id, executions=f.quantity)


def _rate_own(catalog: Catalog, period: Period, segments: Sequence[TermsSegment], usage: Sequence[UsageRow],
              enterprise: EnterpriseFacts | None) -> tuple[RatedInvoice, tuple]:
    """The period's own lines: the rater's, then (enterprise days) the contracts' (billing.contracts)."""
    if enterprise is None:
        return rate_account(catalog, period.start, period.end, segments, usage), ()
    rated = rate_account(catalog, period.start, period.end, segments, usage) if segments else None
    return contracts.rate_enterprise_account(catalog, period, enterprise.split, rated, enterprise.span_usage)


def decide(catalog: Catalog, period: Period, facts: AccountFacts) -> AccountOutcome:
    """Rate the account and decide its PAYG auto-convert (checked like any change of terms: a next
    period whose invoice is final refuses it with ``TermsError``)."""
    rating = rate(catalog, period, facts)
    conv = facts.conversion
    if conv is None or facts.enterprise is not None:
        return AccountOutcome(rating, None)
    auto = decide_auto_convert(catalog, period, facts.account_id, rating.segments, rating.usage, rating.total,
                               conv.terms_changed_from_next)
    if auto is None:
        return AccountOutcome(rating, None)
    terms = decide_change(version=catalog.at(auto.effective_from), account_id=facts.account_id,
                          billing_starts_at=conv.billing_starts_at, effective_from=auto.effective_from,
                          current=terms_of(rating.segments[-1]), change=auto.change,
                          invoiced=conv.invoiced_from_next)
    return AccountOutcome(rating, Conversion(auto, terms))


__all__ = ["LateUsage", "EnterpriseFacts", "PremiumFacts", "ConversionFacts", "AccountFacts", "AccountRating", "Conversion", "AccountOutcome",
           "rate", "decide"]
