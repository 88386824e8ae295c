"""Entitlements (pure): who may start an execution now, and rating input from month-to-date counters
only where the time order cannot change the money."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.catalog import load_catalog
from billing.entitlements import MonthCounter, Reason, bills_overage, decide, non_sandbox_executions, \
    usage_rows_from_counters
from billing.rating import UsageRow

D = Decimal
V = load_catalog().versions[0]
FREE, PRO, TEAM, PAYG, ENTERPRISE = (V.plan(p) for p in ("free", "pro", "team", "payg", "enterprise"))


def ask(plan=PRO, *, status="active", model_known=True, sandbox=False, overage_opt_in=False, included=5000,
        used=0):
    return decide(status=status, model_known=model_known, sandbox=sandbox, plan=plan,
                  overage_opt_in=overage_opt_in, included=included, used=used)


# ---- decide -----------------------------------------------------------------------------------------
def test_reason_values_are_the_api_codes():
    assert [r.value for r in Reason] == ["ok", "free_cap_reached", "plan_cap_reached_no_overage",
                                         "account_paused", "no_credits", "unknown_model", "paused_anomaly"]


def test_paused_account_is_refused_even_for_a_sandbox_try_or_an_unknown_model():
    assert ask(status="paused") == (False, Reason.account_paused)
    assert ask(status="paused", sandbox=True, model_known=False) == (False, Reason.account_paused)


def test_unknown_model_is_refused_before_any_quota_question():
    assert ask(model_known=False) == (False, Reason.unknown_model)
    assert ask(model_known=False, sandbox=True) == (False, Reason.unknown_model)


@pytest.mark.parametrize("used", [0, 99])
def test_free_account_under_its_quota_may_run(used):
    assert ask(FREE, included=100, used=used) == (True, Reason.ok)


@pytest.mark.parametrize("used", [100, 150])
def test_free_account_at_its_quota_is_blocked_even_with_overage_opt_in(used):
    assert ask(FREE, included=100, used=used) == (False, Reason.free_cap_reached)
    assert ask(FREE, included=100, used=used, overage_opt_in=True) == (False, Reason.free_cap_reached)


def test_pro_at_its_quota_is_blocked_without_overage_and_allowed_with_it():
    assert ask(PRO, used=4999) == (True, Reason.ok)
    assert ask(PRO, used=5000) == (False, Reason.plan_cap_reached_no_overage)
    assert ask(PRO, used=5000, overage_opt_in=True) == (True, Reason.ok)


def test_payg_bills_overage_without_opting_in():
    assert ask(PAYG, included=0, used=10_000) == (True, Reason.ok)


def test_sandbox_tries_never_count_against_the_quota():
    assert ask(FREE, included=100, used=100, sandbox=True) == (True, Reason.ok)


def test_account_not_billed_yet_or_on_contract_is_never_blocked():
    assert ask(None, included=0, used=10**6) == (True, Reason.ok)
    assert ask(ENTERPRISE, included=0, used=10**6) == (True, Reason.ok)


def test_bills_overage_needs_a_rate_and_the_opt_in_where_the_plan_asks_for_it():
    assert not bills_overage(FREE, True)
    assert not bills_overage(PRO, False) and bills_overage(PRO, True)
    assert bills_overage(PAYG, False)


def test_non_sandbox_executions_sums_platform_and_byok_but_not_sandbox():
    counters = [MonthCounter("gpt-4o", False, False, 7, 0, 0, D(0)), MonthCounter("gpt-4o", True, False, 2, 0, 0, D(0)),
                MonthCounter("gpt-4o", False, True, 50, 0, 0, D(0))]
    assert non_sandbox_executions(counters) == 9
    assert non_sandbox_executions([]) == 0


# ---- usage_rows_from_counters ---------------------------------------------------------------------
HAIKU = MonthCounter("claude-haiku", byok=False, sandbox=False, executions=3, input_tokens=30, output_tokens=15,
                     cost_usd=D("0.03"))
HAIKU_BYOK = MonthCounter("claude-haiku", byok=True, sandbox=False, executions=2, input_tokens=20, output_tokens=10,
                          cost_usd=D("0.9"))
GPT = MonthCounter("gpt-4o", byok=False, sandbox=False, executions=10, input_tokens=1000, output_tokens=500,
                   cost_usd=D("1.5"))
GPT_SANDBOX = MonthCounter("gpt-4o", byok=False, sandbox=True, executions=4, input_tokens=40, output_tokens=20,
                           cost_usd=D("0.4"))
EMPTY = MonthCounter("groq-llama", byok=False, sandbox=False, executions=0, input_tokens=0, output_tokens=0,
                     cost_usd=D(0))
COUNTERS = [GPT_SANDBOX, EMPTY, GPT, HAIKU_BYOK, HAIKU]


def row(model, *, byok=False, sandbox=False, billable=False, executions, tin=0, tout=0, cost=D(0)):
    return UsageRow(segment=0, version="v1", model=model, byok=byok, sandbox=sandbox, billable=billable,
                    executions=executions, input_tokens=tin, output_tokens=tout, cost=cost)


def test_counters_past_the_quota_under_blocked_terms_split_in_a_fixed_order_with_tokens_on_one_part():
    # 15 platform executions, 8 included: 7 billable (blocked, $0), handed out in (sandbox, model, byok)
    # order; a counter split in two keeps all its tokens and cost on the included part; BYOK costs us
    # nothing; sandbox tries are never billable; empty counters vanish.
    rows = usage_rows_from_counters(COUNTERS, version="v1", included=8, billed=False, pricing="executions")
    assert rows == [
        row("claude-haiku", billable=True, executions=3, tin=30, tout=15, cost=D("0.03")),
        row("claude-haiku", byok=True, billable=True, executions=2, tin=20, tout=10),
        row("gpt-4o", executions=8, tin=1000, tout=500, cost=D("1.5")),
        row("gpt-4o", billable=True, executions=2),
        row("gpt-4o", sandbox=True, executions=4, tin=40, tout=20, cost=D("0.4")),
    ]


def test_counters_under_the_quota_are_all_included():
    rows = usage_rows_from_counters([GPT, HAIKU], version="v1", included=13, billed=True, pricing="executions")
    assert rows == [row("claude-haiku", executions=3, tin=30, tout=15, cost=D("0.03")),
                    row("gpt-4o", executions=10, tin=1000, tout=500, cost=D("1.5"))]


def test_without_a_quota_every_platform_execution_is_billable_whatever_the_models():
    rows = usage_rows_from_counters([GPT, HAIKU, GPT_SANDBOX], version="v1", included=0, billed=True,
                                    pricing="executions")
    assert rows == [row("claude-haiku", billable=True, executions=3, tin=30, tout=15, cost=D("0.03")),
                    row("gpt-4o", billable=True, executions=10, tin=1000, tout=500, cost=D("1.5")),
                    row("gpt-4o", sandbox=True, executions=4, tin=40, tout=20, cost=D("0.4"))]


def test_billed_overage_over_one_model_needs_no_time_order():
    rows = usage_rows_from_counters([GPT, GPT_SANDBOX], version="v1", included=4, billed=True, pricing="executions")
    assert rows == [row("gpt-4o", executions=4, tin=1000, tout=500, cost=D("1.5")),
                    row("gpt-4o", billable=True, executions=6),
                    row("gpt-4o", sandbox=True, executions=4, tin=40, tout=20, cost=D("0.4"))]


def test_billed_overage_over_several_models_needs_the_time_order():
    assert usage_rows_from_counters([GPT, HAIKU], version="v1", included=4, billed=True,
                                    pricing="executions") is None


def test_token_pricing_charges_every_execution_so_the_order_matters_only_when_blocked():
    billed = usage_rows_from_counters([GPT, HAIKU], version="v1", included=4, billed=True, pricing="tokens")
    assert billed is not None and sum(r.executions for r in billed if r.billable) == 9
    assert usage_rows_from_counters([GPT, HAIKU], version="v1", included=4, billed=False, pricing="tokens") is None


def test_exactly_at_the_quota_nothing_is_billable_and_order_cannot_matter():
    rows = usage_rows_from_counters([GPT, HAIKU], version="v1", included=13, billed=True, pricing="tokens")
    assert rows is not None and not any(r.billable for r in rows)
