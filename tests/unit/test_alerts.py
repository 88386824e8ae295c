"""The alert and anomaly rules (billing/alerts.py): each at, just below and just above its threshold,
hand-computed cases, and properties (hypothesis)."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.alerts import (
    AlertError,
    budget_charges,
    budget_notice,
    check_budget,
    check_spike,
    check_trend,
    dedupe_key,
    default_budget,
    detect_fallback,
    fallback_notice,
    loop_kill_notice,
    loop_verdict,
    month_projection_factor,
    spike_notice,
    spike_windows,
    trend_notice,
)
from billing.catalog import AlertSettings, load_catalog
from billing.errors import CatalogError
from billing.periods import Period
from billing.projection import project_usage
from billing.rating import AccountTerms, ModelUsage, TermsSegment, UsageRow, rate_account, rate_period

D = Decimal
UTC = timezone.utc
CATALOG = load_catalog()
V1 = CATALOG.versions[0]
OCT = Period.parse("2026-10")
NOV = Period.parse("2026-11")
SETTINGS = settings(max_examples=200, deadline=None)
money = st.decimals(min_value=0, max_value=10_000, places=6, allow_nan=False, allow_infinity=False)


# ---- budget: default per plan -----------------------------------------------------------------------------
def test_default_budget_is_the_plans_own_monthly_charge():
    assert default_budget(V1, "pro") == D("29.00")
    assert default_budget(V1, "team", seats=3) == D("237.00")  # per seat
    assert default_budget(V1, "payg") == D("50.00")  # its cap
    assert default_budget(V1, "free") is None  # blocked beyond its quota: nothing to run away
    assert default_budget(V1, "enterprise") is None  # the contract is the budget


def test_default_budget_rejects_unknown_plan_and_bad_seats():
    with pytest.raises(CatalogError, match="plan: unknown plan 'gold'"):
        default_budget(V1, "gold")
    with pytest.raises(AlertError, match="seats: must be an integer >= 1"):
        default_budget(V1, "team", seats=0)


def test_budget_charges_leave_out_the_plan_fee():
    # Pro with overage: 29 fee + 100 billable x 0.005 = 0.50; the budget sees only the 0.50.
    inv = rate_period(V1, AccountTerms("pro", 1, True), [ModelUsage("claude-haiku", 5100, 100)])
    assert inv.total == D("29.50")
    assert budget_charges(inv) == D("0.50")
    # PAYG: 6,000 x 0.01 = 60, capped at 50: the cap adjustment counts.
    payg = rate_period(V1, AccountTerms("payg"), [ModelUsage("gpt-4o", 6000, 6000)])
    assert budget_charges(payg) == D("50.00")


# ---- budget: thresholds ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("charges", "noticed", "crossed"), [
    ("14.49", (), ()),
    ("14.499999", (), ()),
    ("14.50", (), (50,)),  # exactly at 50% of $29.00 counts
    ("14.51", (), (50,)),
    ("23.19", (50,), ()),
    ("23.20", (50,), (80,)),
    ("23.21", (50,), (80,)),
    ("28.99", (50, 80), ()),
    ("29.00", (50, 80), (100,)),
    ("29.01", (50, 80), (100,)),
])
def test_budget_threshold_at_just_below_and_just_above(charges, noticed, crossed):
    check = check_budget(D(charges), D("29.00"), noticed)
    assert check.newly_crossed == crossed
    assert check.notify == (crossed[-1] if crossed else None)


def test_a_threshold_already_noticed_is_never_returned_again():
    assert check_budget(D("100"), D("29.00"), {50, 80, 100}).newly_crossed == ()


def test_a_jump_past_several_thresholds_records_all_and_mails_the_highest():
    check = check_budget(D("35.00"), D("29.00"))
    assert check.newly_crossed == (50, 80, 100)
    assert check.notify == 100
    assert check.percent_used == D("120.6")  # 120.689..., floored: never overstated


def test_a_lowered_budget_crosses_the_thresholds_not_yet_noticed():
    assert check_budget(D("20.00"), D("29.00"), {50}).newly_crossed == ()
    assert check_budget(D("20.00"), D("25.00"), {50}).newly_crossed == (80,)


def test_budget_thresholds_come_from_the_settings():
    s = AlertSettings(budget_thresholds_percent=(25, 150))
    assert check_budget(D("25"), D("100"), settings=s).newly_crossed == (25,)
    assert check_budget(D("149.99"), D("100"), settings=s).newly_crossed == (25,)
    assert check_budget(D("150"), D("100"), settings=s).newly_crossed == (25, 150)


def test_budget_rejects_a_zero_budget_and_floats():
    with pytest.raises(AlertError, match="budget: must be greater than 0"):
        check_budget(D("1"), D("0"))
    with pytest.raises(AlertError, match="charges: must be a Decimal, not float"):
        check_budget(1.5, D("29"))  # type: ignore[arg-type]


@SETTINGS
@given(charges=money, budget=money.filter(lambda b: b > 0),
       noticed=st.sets(st.sampled_from((50, 80, 100))))
def test_budget_newly_crossed_is_exactly_the_crossed_ones_not_yet_noticed(charges, budget, noticed):
    check = check_budget(charges, budget, noticed)
    crossed = {p for p in (50, 80, 100) if charges * 100 >= budget * p}
    assert set(check.newly_crossed) == crossed - noticed
    assert list(check.newly_crossed) == sorted(check.newly_crossed)


@SETTINGS
@given(a=money, b=money, budget=money.filter(lambda b: b > 0))
def test_more_charges_never_cross_fewer_thresholds(a, b, budget):
    lo, hi = sorted((a, b))
    assert set(check_budget(lo, budget).newly_crossed) <= set(check_budget(hi, budget).newly_crossed)


# ---- runaway loop ---------------------------------------------------------------------------------------
HISTORY = [D("0.01")] * 20


@pytest.mark.parametrize(("cost", "verdict"), [
    ("0.0299", "continue"),
    ("0.03", "continue"),  # exactly 3x is not past 3x
    ("0.030001", "kill"),
    ("0.05", "kill"),
])
def test_loop_kill_at_just_below_and_just_above_three_times_the_median(cost, verdict):
    v = loop_verdict(D(cost), HISTORY)
    assert v.verdict == verdict
    assert (v.baseline, v.threshold, v.history_size) == (D("0.01"), D("0.03"), 20)


def test_kill_verdict_carries_its_evidence():
    v = loop_verdict(D("0.05"), HISTORY)
    assert v.kill
    assert v.evidence() == {
        "verdict": "kill", "reason": "running cost $0.05 against 3 × the median $0.01 of 20 executions = $0.03: "
                                     "passed",
        "cost": "0.05", "baseline": "0.01", "threshold": "0.03", "multiplier": "3", "history_size": 20,
        "min_history": 20,
    }


def test_loop_rule_waits_for_the_minimum_history():
    v = loop_verdict(D("1000"), HISTORY[:19])
    assert v.verdict == "continue"
    assert (v.baseline, v.threshold, v.history_size) == (None, None, 19)
    assert "only 19 completed executions" in v.reason
    assert loop_verdict(D("1000"), HISTORY[:20]).kill


def test_loop_baseline_is_the_median_so_outliers_do_not_move_it():
    history = [D("0.01")] * 11 + [D("5.00")] * 9  # nine runaway executions in the history
    v = loop_verdict(D("0.04"), history)
    assert v.baseline == D("0.01") and v.kill
    even = [D("0.01")] * 10 + [D("0.02")] * 10  # even count: mean of the middle two
    assert loop_verdict(D("0"), even).baseline == D("0.015")


def test_loop_rule_does_not_act_on_a_zero_baseline():
    v = loop_verdict(D("0.0001"), [D(0)] * 30)
    assert v.verdict == "continue" and v.baseline == 0 and v.threshold is None


def test_loop_rule_rejects_negative_costs_and_floats():
    with pytest.raises(AlertError, match="running_cost: must be at least 0"):
        loop_verdict(D("-0.01"), HISTORY)
    with pytest.raises(AlertError, match="recent_costs: must be a Decimal, not float"):
        loop_verdict(D("0.01"), [0.01] * 20)  # type: ignore[list-item]


@SETTINGS
@given(cost=money, history=st.lists(money, max_size=40), seed=st.integers(0, 2**32))
def test_loop_kills_exactly_when_cost_passes_three_medians_with_enough_history(cost, history, seed):
    v = loop_verdict(cost, history)
    ordered = sorted(history)
    n = len(ordered)
    med = None if n == 0 else (ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2)
    assert v.kill == (n >= 20 and med > 0 and cost > 3 * med)
    shuffled = history[:]
    random.Random(seed).shuffle(shuffled)
    assert loop_verdict(cost, shuffled) == v  # the order of the history does not matter


# ---- spike ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("window", "pause"), [(299, False), (300, False), (301, True)])
def test_spike_floor_for_an_account_without_history(window, pause):
    v = check_spike(window, 0)
    assert v.pause is pause
    assert v.threshold == 300 and v.typical_per_window == 0


@pytest.mark.parametrize(("window", "pause"), [(499, False), (500, False), (501, True)])
def test_spike_ten_times_the_accounts_own_rate_above_the_floor(window, pause):
    # 100,800 executions in 7 days = 50 per 5-minute window on average; 10 x 50 = 500 > floor 300.
    v = check_spike(window, 100_800)
    assert (v.typical_per_window, v.threshold) == (D(50), D(500))
    assert v.pause is pause


def test_spike_evidence_and_reason():
    v = check_spike(501, 100_800)
    assert v.reason == ("501 executions in 5 minutes is above max(10 × the usual 50 per 5 minutes over 7 days, "
                        "300) = 500")
    assert v.evidence()["threshold"] == "500" and v.evidence()["pause"] is True


def test_spike_spans_end_where_the_baseline_begins():
    at = datetime(2026, 10, 14, 9, 30, tzinfo=UTC)
    spans = spike_windows(at)
    assert (spans.window_start, spans.window_end) == (datetime(2026, 10, 14, 9, 25, tzinfo=UTC), at)
    assert (spans.baseline_start, spans.baseline_end) == (datetime(2026, 10, 7, 9, 25, tzinfo=UTC),
                                                          spans.window_start)
    with pytest.raises(AlertError, match="at: must be a timezone-aware datetime"):
        spike_windows(datetime(2026, 10, 14))


@SETTINGS
@given(a=st.integers(0, 5000), b=st.integers(0, 5000), baseline=st.integers(0, 2_000_000))
def test_spike_more_executions_never_unpause_and_the_floor_holds(a, b, baseline):
    lo, hi = sorted((a, b))
    assert check_spike(lo, baseline).pause <= check_spike(hi, baseline).pause
    v = check_spike(a, baseline)
    assert v.threshold >= 300
    assert v.pause == (a > max(10 * D(baseline) / 2016, 300))


# ---- fallback -------------------------------------------------------------------------------------------
AT = datetime(2026, 10, 14, 9, 30, tzinfo=UTC)


def test_fallback_to_a_dearer_model_is_detected_with_both_costs():
    f = detect_fallback(V1, "claude-haiku", "claude-sonnet", 1000, 500, AT)
    assert f is not None
    # haiku 1000 x 0.50 + 500 x 2.50 per 1M = 0.00175; sonnet 1000 x 6 + 500 x 30 per 1M = 0.021
    assert (f.requested_cost, f.used_cost, f.compared_at) == (D("0.00175"), D("0.021"), "execution tokens")
    assert f.day == date(2026, 10, 14) and f.increase == D("0.01925")


def test_no_fallback_for_a_cheaper_or_the_same_or_no_requested_model():
    assert detect_fallback(V1, "claude-sonnet", "claude-haiku", 1000, 500, AT) is None
    assert detect_fallback(V1, "claude-haiku", "claude-haiku", 1000, 500, AT) is None
    assert detect_fallback(V1, None, "claude-opus", 1000, 500, AT) is None


def test_a_fallback_to_a_model_of_the_same_price_is_not_noticed():
    twin = V1.models["claude-haiku"].model_copy(update={"code": "haiku-twin"})
    v = V1.model_copy(update={"models": {**V1.models, "haiku-twin": twin}})
    assert detect_fallback(v, "claude-haiku", "haiku-twin", 1000, 500, AT) is None


def test_fallback_is_compared_at_the_executions_own_tokens():
    # A model cheap on input and dear on output: dearer than haiku only for output-heavy executions.
    odd = V1.models["claude-haiku"].model_copy(update={"code": "odd", "price_input_per_mtok": D("0.10"),
                                                       "price_output_per_mtok": D("5.00")})
    v = V1.model_copy(update={"models": {**V1.models, "odd": odd}})
    assert detect_fallback(v, "claude-haiku", "odd", 100_000, 100, AT) is None
    assert detect_fallback(v, "claude-haiku", "odd", 100, 100_000, AT) is not None


def test_fallback_without_tokens_is_compared_at_list_price():
    f = detect_fallback(V1, "gpt-4o-mini", "gpt-4o", 0, 0, AT)
    assert (f.requested_cost, f.used_cost, f.compared_at) == (D("1.50"), D("25.00"), "list price")


def test_fallback_names_the_unknown_model_field():
    with pytest.raises(CatalogError, match="requested_model: unknown model 'gpt-9'"):
        detect_fallback(V1, "gpt-9", "gpt-4o", 1, 1, AT)
    with pytest.raises(CatalogError, match="model: unknown model 'gpt-9'"):
        detect_fallback(V1, "gpt-4o", "gpt-9", 1, 1, AT)


def test_fallback_notice_once_per_account_agent_and_utc_day():
    def key(ts, agent="a1"):
        return fallback_notice("acme", agent, detect_fallback(V1, "claude-haiku", "gpt-4o", 10, 10, ts)).dedupe_key

    morning, evening = datetime(2026, 10, 14, 0, 0, tzinfo=UTC), datetime(2026, 10, 14, 23, 59, 59, tzinfo=UTC)
    assert key(morning) == key(evening) == "fallback:acme:a1:2026-10-14"
    assert key(datetime(2026, 10, 15, tzinfo=UTC)) != key(evening)
    assert key(morning, "a2") != key(morning)
    # 22:30 at UTC-02:00 is 00:30 UTC the next day
    assert key(datetime(2026, 10, 14, 22, 30, tzinfo=timezone(timedelta(hours=-2)))) == "fallback:acme:a1:2026-10-15"


# ---- trend ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("projected", "warn"), [("199.99", False), ("200.00", True), ("200.01", True)])
def test_trend_warns_at_twice_the_trailing_three_month_average(projected, warn):
    v = check_trend(D(projected), [D("90"), D("100"), D("110")])
    assert (v.average, v.threshold) == (D(100), D(200))
    assert v.warn is warn


def test_trend_needs_three_complete_months_and_uses_only_the_latest_three():
    assert not check_trend(D("10000"), [D("10"), D("10")]).warn
    assert "only 2 complete months" in check_trend(D("10000"), [D("10"), D("10")]).reason
    # most recent first: the fourth month (1,000) is not part of the average
    v = check_trend(D("20"), [D("10"), D("10"), D("10"), D("1000")])
    assert v.average == 10 and v.warn and v.trailing == (D("10"), D("10"), D("10"))


def test_trend_does_not_warn_over_a_zero_average():
    v = check_trend(D("5"), [D(0)] * 3)
    assert not v.warn and v.average == 0


def test_month_projection_factor_is_exact():
    assert month_projection_factor(NOV, datetime(2026, 11, 16, tzinfo=UTC)) == 2
    assert abs(month_projection_factor(OCT, datetime(2026, 10, 16, tzinfo=UTC)) * 15 - 31) < D("1e-50")  # 31/15
    assert month_projection_factor(OCT, OCT.end) == 1
    with pytest.raises(AlertError, match="at: must be after the start of 2026-10"):
        month_projection_factor(OCT, OCT.start)
    with pytest.raises(AlertError, match="at: must be a timezone-aware"):
        month_projection_factor(OCT, datetime(2026, 10, 16))


def test_trend_on_a_hand_built_history_through_the_preview_projection():
    # A Pro account with overage that paid $29.00, $31.00 and $30.00 (average $30, warning from $60).
    # By 00:00 on 16 November it ran 9,000 executions: projected 18,000 = 13,000 billable x 0.005
    # = $65.00 + $29.00 fee (counted once) = $94.00 -> warning.
    at = datetime(2026, 11, 16, tzinfo=UTC)
    segments = [TermsSegment(NOV.start, NOV.end, "pro", overage_opt_in=True)]
    rows = [UsageRow(0, V1.version, "claude-haiku", executions=5000),
            UsageRow(0, V1.version, "claude-haiku", billable=True, executions=4000)]
    projected = rate_account(CATALOG, NOV.start, NOV.end, segments,
                             project_usage(rows, month_projection_factor(NOV, at), 5000))
    assert projected.total == D("94.00")
    v = check_trend(projected.total, [D("30.00"), D("31.00"), D("29.00")])
    assert v.warn and v.threshold == D(60)
    # The same pace without overage beyond the fee stays quiet: 4,000 by mid-month -> 8,000 -> $44.00.
    quiet = [UsageRow(0, V1.version, "claude-haiku", executions=4000)]
    total = rate_account(CATALOG, NOV.start, NOV.end, segments, project_usage(quiet, D(2), 5000)).total
    assert total == D("44.00") and not check_trend(total, [D("30.00"), D("31.00"), D("29.00")]).warn


# ---- notices --------------------------------------------------------------------------------------------
def test_budget_notice_has_the_figures_in_text_and_html():
    n = budget_notice("acme", OCT, check_budget(D("23.20"), D("29.00"), {50}))
    assert n.kind == "budget_threshold"
    assert n.dedupe_key == "budget:acme:2026-10:80"
    assert n.subject == "You have used 80% of your 2026-10 budget"
    for body in (n.text, n.html):
        assert "$23.20" in body and "$29.00" in body and "80%" in body
    assert n.html.startswith("<!DOCTYPE html>") and "<table>" in n.html
    assert n.payload["charges"] == "23.20" and n.payload["threshold"] == 80


def test_notices_escape_html_and_keep_keys_within_the_outbox_column():
    n = budget_notice("<b>acme</b>", OCT, check_budget(D("30"), D("29")))
    assert "<b>acme</b>" in n.text and "&lt;b&gt;acme&lt;/b&gt;" in n.html and "<b>acme" not in n.html
    long_key = dedupe_key("fallback", "a" * 64, "b" * 120, "2026-10-14")
    assert len(long_key) <= 160 and long_key.startswith("fallback:sha256:")
    assert long_key == dedupe_key("fallback", "a" * 64, "b" * 120, "2026-10-14")


def test_kill_spike_fallback_and_trend_notices_carry_their_figures():
    kill = loop_kill_notice("acme", "agent-7", "ex-1", loop_verdict(D("0.05"), HISTORY))
    assert kill.dedupe_key == "loop-kill:acme:ex-1"
    assert "$0.05" in kill.text and "$0.01" in kill.text and "20" in kill.text
    assert kill.payload["baseline"] == "0.01"

    start = datetime(2026, 10, 14, 9, 25, tzinfo=UTC)
    spike = spike_notice("acme", start, check_spike(900, 0))
    assert spike.dedupe_key == "spike:acme:20261014T092500Z"
    assert "900 executions" in spike.text and "2026-10-14 09:25 UTC" in spike.text

    fb = fallback_notice("acme", "agent-7", detect_fallback(V1, "claude-haiku", "claude-sonnet", 1000, 500, AT))
    assert "claude-haiku" in fb.text and "claude-sonnet" in fb.text and "$0.021" in fb.text
    assert "$0.00175" in fb.html

    trend = trend_notice("acme", NOV, check_trend(D("94.00"), [D("30"), D("31"), D("29")]))
    assert trend.dedupe_key == "trend:acme:2026-11"
    assert "$94.00" in trend.text and "$30.00" in trend.text and "$60.00" in trend.text


def test_a_notice_for_a_verdict_that_does_not_act_is_refused():
    with pytest.raises(AlertError, match="check: no threshold newly crossed"):
        budget_notice("acme", OCT, check_budget(D("1"), D("29")))
    with pytest.raises(AlertError, match="verdict: the verdict is 'continue'"):
        loop_kill_notice("acme", "a", "e", loop_verdict(D("0.01"), HISTORY))
    with pytest.raises(AlertError, match="verdict: the verdict does not pause"):
        spike_notice("acme", AT, check_spike(1, 0))
    with pytest.raises(AlertError, match="verdict: the verdict does not warn"):
        trend_notice("acme", NOV, check_trend(D("1"), [D("30")] * 3))
