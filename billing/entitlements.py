"""Entitlements: may an account start another execution now? Pure rules, no I/O.

The answer must agree with what the close bills. The close ranks the period's non-sandbox executions
in time order against the account's (pooled) included quota; those past it are *billable*, and a
billable execution under terms without overage (free; pro/team without the opt-in) is *blocked*:
shown on the invoice at $0. So an execution is refused exactly when it would be blocked: the
quota is used up and the terms in force now do not bill overage. Sandbox tries never count
against the quota and are always allowed unless the account is paused.

Month-to-date charges come from the same rater the close uses (``billing.rating.rate_account``).
The counters hold usage per model, BYOK and sandbox but not the time order, so
``usage_rows_from_counters`` builds rating input from them only when the time order cannot change
the money; otherwise the caller rates the period from the executions table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from billing.catalog import Plan
from billing.rating import UsageRow


class Reason(str, Enum):
    ok = "ok"
    free_cap_reached = "free_cap_reached"
    plan_cap_reached_no_overage = "plan_cap_reached_no_overage"
    account_paused = "account_paused"
    no_credits = "no_credits"  # credits-only accounts: arrives with prepaid credits
    unknown_model = "unknown_model"
    paused_anomaly = "paused_anomaly"  # a spike paused the account until a person resumes it (billing/alerts)


@dataclass(frozen=True)
class MonthCounter:
    """One row of an account's month-to-date counters."""

    model: str
    byok: bool
    sandbox: bool
    executions: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


def bills_overage(plan: Plan, overage_opt_in: bool) -> bool:
    """Are executions past the included quota charged (else they are blocked)?"""
    return plan.overage_rate is not None and (overage_opt_in or not plan.overage_requires_opt_in)


def decide(*, status: str, model_known: bool, sandbox: bool, plan: Plan | None, overage_opt_in: bool,
           included: int, used: int, paused_anomaly: bool = False) -> tuple[bool, Reason]:
    """``plan``: the plan in force now (None: the account is not billed yet, so nothing is blocked).
    ``used``: non-sandbox executions of the period so far; the next one is number ``used + 1``.
    ``paused_anomaly``: a spike paused the account and nobody has resumed it (sandbox tries too)."""
    if status != "active":
        return False, Reason.account_paused
    if paused_anomaly:
        return False, Reason.paused_anomaly
    if not model_known:
        return False, Reason.unknown_model
    if sandbox or plan is None or plan.contract or used < included:
        return True, Reason.ok
    if bills_overage(plan, overage_opt_in):
        return True, Reason.ok
    if plan.overage_rate is None:
        return False, Reason.free_cap_reached
    return False, Reason.plan_cap_reached_no_overage


def non_sandbox_executions(counters: Sequence[MonthCounter]) -> int:
    return sum(c.executions for c in counters if not c.sandbox)


def usage_rows_from_counters(counters: Sequence[MonthCounter], *, version: str, included: int,
                             billed: bool, pricing: str) -> list[UsageRow] | None:
    """Rating input for one whole-period terms segment under one catalog version, or None when
    which executions are billable (their time order) could change the money.

    It cannot when nothing is billable, when everything is (no included quota), when billable
    executions are blocked under per-execution pricing ($0 lines), when they are all of one model
    (one overage line), or when per-token pricing charges every platform-key execution anyway.
    Within those cases the billable executions are assigned to rows arbitrarily: only the
    informational counts of lines depend on it, never an amount.
    """
    platform = [c for c in counters if not c.sandbox and c.executions]
    used = sum(c.executions for c in platform)
    billable = max(0, used - included)
    if billable and not (
        included == 0
        or (pricing == "executions" and (not billed or len({c.model for c in platform}) == 1))
        or (pricing == "tokens" and billed)
    ):
        return None
    rows: list[UsageRow] = []
    left = billable
    for c in sorted(counters, key=lambda c: (c.sandbox, c.model, c.byok)):
        if not c.executions:
            continue
        cost = Decimal(0) if c.byok else c.cost_usd
        common = dict(segment=0, version=version, model=c.model, byok=c.byok, sandbox=c.sandbox)
        part = 0 if c.sandbox else min(left, c.executions)
        left -= part
        rest = c.executions - part
        if rest:  # carries the tokens and cost of the whole counter row
            rows.append(UsageRow(**common, billable=False, executions=rest, input_tokens=c.input_tokens,
                                 output_tokens=c.output_tokens, cost=cost))
        if part:
            rows.append(UsageRow(**common, billable=True, executions=part,
                                 input_tokens=0 if rest else c.input_tokens,
                                 output_tokens=0 if rest else c.output_tokens, cost=Decimal(0) if rest else cost))
    return rows


__all__ = ["Reason", "MonthCounter", "bills_overage", "decide", "non_sandbox_executions",
           "usage_rows_from_counters"]
