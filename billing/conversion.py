"""PAYG auto-convert (pure): a pay-as-you-go account whose period would have cost less on Pro with
overage moves to Pro from the next period, and is told why, unless it already changed terms from
then on (the customer's choice wins).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.catalog import Catalog
from billing.periods import Period
from billing.projection import reallocate_billable
from billing.rating import TermsSegment, UsageRow, pooled_included, rate_account
from billing.terms import TermsChange

FROM_PLAN = "payg"
TO_PLAN = "pro"
NOTIFICATION_KIND = "plan_auto_converted"
REASON_PREFIX = "auto-convert"


@dataclass(frozen=True)
class PlanComparison:
    current_total: Decimal
    alternative_total: Decimal
    alternative_plan: str

    @property
    def saving(self) -> Decimal:
        return self.current_total - self.alternative_total


@dataclass(frozen=True)
class Notification:
    """A customer message, queued once per ``dedupe_key``."""

    kind: str
    dedupe_key: str
    subject: str
    body: str
    payload: dict


@dataclass(frozen=True)
class AutoConversion:
    account_id: str
    effective_from: datetime  # the next period's start
    change: TermsChange
    reason: str  # recorded with the new terms (``account_terms.reason``)
    notification: Notification


def eligible(period: Period, segments: Sequence[TermsSegment]) -> bool:
    """Only accounts on pay-as-you-go for the whole period are compared."""
    return len(segments) == 1 and segments[0].plan == FROM_PLAN and segments[0].start == period.start


def compare_with_pro(catalog: Catalog, period: Period, segments: Sequence[TermsSegment],
                     usage: Sequence[UsageRow], current_total: Decimal) -> PlanComparison | None:
    """What a pay-as-you-go account's period would have cost on Pro with overage (same usage); None
    when the account is not eligible.

    The billable split under Pro's quota is re-allocated across models in proportion (per-line
    rounding is all that depends on the exact time order: under a cent per model line).
    """
    if not eligible(period, segments):
        return None
    pro = TermsSegment(period.start, period.end, TO_PLAN, 1, True, segments[0].pricing)
    included = pooled_included(catalog, period.start, period.end, [pro])
    rows = reallocate_billable(usage, included)
    alt = rate_account(catalog, period.start, period.end, [pro], rows)
    return PlanComparison(current_total=current_total, alternative_total=alt.total, alternative_plan=TO_PLAN)


def decide_auto_convert(catalog: Catalog, period: Period, account_id: str, segments: Sequence[TermsSegment],
                        usage: Sequence[UsageRow], current_total: Decimal,
                        terms_changed_from_next: bool) -> AutoConversion | None:
    """Move the account to Pro (one seat, overage on) from the next period when Pro would have cost
    less for this period's usage, with the message that tells the customer; None otherwise.
    ``terms_changed_from_next``: the account already has terms from the next period on."""
    cmp = compare_with_pro(catalog, period, segments, usage, current_total)
    if cmp is None or cmp.alternative_total >= cmp.current_total or terms_changed_from_next:
        return None
    nxt = period.next()
    return AutoConversion(
        account_id=account_id,
        effective_from=nxt.start,
        change=TermsChange(plan=TO_PLAN, seats=1, overage_opt_in=True),
        reason=(f"{REASON_PREFIX}: {period} would have cost ${cmp.alternative_total} on Pro "
                f"(overage on) instead of ${cmp.current_total} on pay-as-you-go"),
        notification=Notification(
            kind=NOTIFICATION_KIND,
            dedupe_key=f"payg-to-pro:{account_id}:{period}",
            subject="You're moving to Pro: it would have saved you money",
            body=(f"Your pay-as-you-go usage in {period} cost ${cmp.current_total}. The same usage on Pro "
                  f"(with overage) would have cost ${cmp.alternative_total}, so from {nxt} your account is on "
                  "Pro with overage enabled. You can change plans at any time."),
            payload={"period": str(period), "payg_total": str(cmp.current_total),
                     "pro_total": str(cmp.alternative_total), "effective": nxt.start.isoformat()},
        ),
    )


__all__ = ["PlanComparison", "Notification", "AutoConversion", "eligible", "compare_with_pro",
           "decide_auto_convert"]
