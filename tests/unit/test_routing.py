"""Dynamic model routing (billing/routing.py): the seed's table, ties, no qualifying model, the slider,
BYOK, superseded scores, token mixes, the savings report, and properties (hypothesis)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import load_catalog
from billing.errors import CatalogError
from billing.routing import (
    QualityScore,
    RoutedExecution,
    RoutingError,
    TokenMix,
    current_scores,
    effective_threshold,
    expected_cost,
    route,
    routing_savings,
    skill_scores,
    token_mix,
)

D = Decimal
UTC = timezone.utc
CATALOG = load_catalog()
V1 = CATALOG.versions[0]
MODELS = sorted(V1.models)
MIX = TokenMix(1500, 400)
SETTINGS = settings(max_examples=200, deadline=None)

# The seed's F-040 table: Haiku, Sonnet, GPT-4o-mini quality per skill.
SEED = {
    "Code reviewer": {"claude-haiku": D(62), "claude-sonnet": D(91), "gpt-4o-mini": D(78)},
    "Research agent": {"claude-haiku": D(45), "claude-sonnet": D(88), "gpt-4o-mini": D(71)},
    "Commit message": {"claude-haiku": D(89), "claude-sonnet": D(95), "gpt-4o-mini": D(87)},
}

mixes = st.builds(TokenMix, st.integers(0, 2_000_000), st.integers(0, 2_000_000))
nonzero_mixes = mixes.filter(lambda m: m.input_tokens + m.output_tokens > 0)
score_st = st.integers(0, 100).map(D) | st.decimals(0, 100, places=1, allow_nan=False)
score_tables = st.dictionaries(st.sampled_from(MODELS), score_st, min_size=1)
sliders = st.decimals(0, 1, places=3, allow_nan=False)


# ---- the seed's table -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("skill", "model", "reason"), [
    ("Code reviewer", "gpt-4o-mini", "cheapest of 2 models at or above 75"),
    ("Research agent", "claude-sonnet", "cheapest of 1 model at or above 75"),
    # The seed says Haiku; by its own rate card GPT-4o-mini is cheaper, and the rate card wins.
    ("Commit message", "gpt-4o-mini", "cheapest of 3 models at or above 75"),
])
def test_seed_table(skill, model, reason):
    d = route(V1, skill, SEED[skill], MIX)
    assert (d.model, d.reason, d.below_threshold) == (model, reason, False)
    assert d.expected_cost == expected_cost(V1, model, MIX)
    assert {a.model for a in d.alternatives} == set(SEED[skill]) - {model}


@SETTINGS
@given(mix=nonzero_mixes)
def test_commit_message_goes_to_gpt_4o_mini_at_any_token_mix(mix):
    assert expected_cost(V1, "gpt-4o-mini", mix) < expected_cost(V1, "claude-haiku", mix)
    assert route(V1, "Commit message", SEED["Commit message"], mix).model == "gpt-4o-mini"


def test_expected_cost_is_the_user_price_for_the_mix():
    # gpt-4o-mini: 1,500 x $0.30 + 400 x $1.20 per 1M = 0.00045 + 0.00048
    assert expected_cost(V1, "gpt-4o-mini", MIX) == D("0.00093")
    # deepseek-r1 costs us nothing but has an explicit user price
    assert expected_cost(V1, "deepseek-r1", TokenMix(1_000_000, 1_000_000)) == D("0.15")
    with pytest.raises(CatalogError, match="model: unknown model 'gpt-9'"):
        expected_cost(V1, "gpt-9", MIX)


# ---- ties, no qualifying model, alternatives --------------------------------------------------------------
def test_equal_cost_goes_to_the_higher_score_then_the_model_code():
    zero = TokenMix(0, 0)  # every model costs $0 for no tokens
    d = route(V1, "s", {"claude-haiku": D(80), "gpt-4o-mini": D(90), "groq-llama": D(90)}, zero)
    assert d.model == "gpt-4o-mini"  # 90 beats 80; between the two 90s, "gpt-4o-mini" < "groq-llama"
    assert [a.model for a in d.alternatives] == ["groq-llama", "claude-haiku"]


def test_no_qualifying_model_takes_the_best_score_and_is_flagged():
    d = route(V1, "Research", {"claude-haiku": D(45), "gpt-4o-mini": D(71), "groq-llama": D(71)}, MIX)
    assert d.model == "groq-llama"  # 71 tie: groq-llama is the cheaper of the two
    assert d.below_threshold
    assert d.reason == "no model reaches 75; the best score is 71"
    assert not any(a.qualifies for a in d.alternatives)


def test_alternatives_are_cheapest_first_with_their_scores_and_costs():
    d = route(V1, "Code reviewer", SEED["Code reviewer"], MIX)
    assert [(a.model, a.score, a.qualifies) for a in d.alternatives] == [
        ("claude-haiku", D(62), False), ("claude-sonnet", D(91), True)]
    assert d.alternatives[1].expected_cost == D("0.021")  # 1,500 x 6 + 400 x 30 per 1M


def test_models_the_catalog_does_not_list_are_skipped_and_no_candidate_is_an_error():
    d = route(V1, "s", {"gpt-9": D(99), "claude-haiku": D(80)}, MIX)
    assert d.model == "claude-haiku" and d.alternatives == ()
    with pytest.raises(RoutingError, match="scores: no model with a quality score for skill 's'"):
        route(V1, "s", {}, MIX)


def test_threshold_defaults_to_the_catalog_and_can_be_given():
    assert V1.routing_settings().quality_threshold == 75
    assert route(V1, "Code reviewer", SEED["Code reviewer"], MIX, threshold=D(60)).model == "gpt-4o-mini"
    # at 80 only Sonnet (91) qualifies; mini (78) is 2 short
    assert route(V1, "Code reviewer", SEED["Code reviewer"], MIX, threshold=D(80)).model == "claude-sonnet"
    # exactly at the threshold qualifies
    assert route(V1, "Code reviewer", SEED["Code reviewer"], MIX, threshold=D(78)).model == "gpt-4o-mini"


# ---- the slider -----------------------------------------------------------------------------------------
def test_slider_formula():
    assert effective_threshold(D(75), D(95), D(0)) == 75
    assert effective_threshold(D(75), D(95), D("0.5")) == 85
    assert effective_threshold(D(75), D(95), D(1)) == 95
    assert effective_threshold(D(75), D(70), D(1)) == 75  # nobody qualifies: the bar does not move


FOUR = {"claude-haiku": D(89), "claude-sonnet": D(95), "gpt-4o-mini": D(80), "gpt-4o": D(92)}


@pytest.mark.parametrize(("slider", "model", "reason"), [
    ("0", "gpt-4o-mini", "cheapest of 4 models at or above 75"),
    ("0.5", "claude-haiku", "cheapest of 3 models at or above 85 (threshold 75 raised by the quality slider at 0.5)"),
    ("0.85", "gpt-4o", "cheapest of 2 models at or above 92 (threshold 75 raised by the quality slider at 0.85)"),
    ("1", "claude-sonnet", "cheapest of 1 model at or above 95 (threshold 75 raised by the quality slider at 1)"),
])
def test_slider_from_cheapest_through_the_middle_to_best_quality(slider, model, reason):
    d = route(V1, "s", FOUR, MIX, slider=D(slider))
    assert (d.model, d.reason, d.below_threshold) == (model, reason, False)


def test_slider_out_of_range_or_float_is_refused():
    with pytest.raises(RoutingError, match="slider: must be at most 1"):
        route(V1, "s", FOUR, MIX, slider=D("1.1"))
    with pytest.raises(RoutingError, match="slider: must be at least 0"):
        route(V1, "s", FOUR, MIX, slider=D("-0.1"))
    with pytest.raises(RoutingError, match="slider: must be a Decimal, not float"):
        route(V1, "s", FOUR, MIX, slider=0.5)  # type: ignore[arg-type]


# ---- BYOK -----------------------------------------------------------------------------------------------
def test_byok_routes_by_quality_among_the_providers_held():
    d = route(V1, "Code reviewer", SEED["Code reviewer"], MIX, byok_providers={"openai"})
    assert (d.model, d.byok, d.below_threshold) == ("gpt-4o-mini", True, False)
    assert d.reason == "BYOK: best quality among 1 model of openai (score 78)"
    # anthropic keys: Sonnet (91) over the cheaper Haiku (62): quality only, and the slider plays no part
    d = route(V1, "Code reviewer", SEED["Code reviewer"], MIX, byok_providers={"anthropic"}, slider=D(0))
    assert d.model == "claude-sonnet" and [a.model for a in d.alternatives] == ["claude-haiku"]
    both = route(V1, "Commit message", SEED["Commit message"], MIX, byok_providers={"anthropic", "openai"})
    assert both.model == "claude-sonnet"
    # the slider does not move a BYOK account's threshold: Haiku (89) still counts as qualifying at 75
    d = route(V1, "Commit message", SEED["Commit message"], MIX, byok_providers={"anthropic"}, slider=D(1))
    assert d.model == "claude-sonnet" and d.threshold == 75
    assert [(a.model, a.qualifies) for a in d.alternatives] == [("claude-haiku", True)]


def test_byok_without_a_scored_model_of_its_providers_is_an_error():
    with pytest.raises(RoutingError, match="byok_providers: no model with a quality score for skill 'Code reviewer' "
                                           "among the providers groq"):
        route(V1, "Code reviewer", SEED["Code reviewer"], MIX, byok_providers={"groq"})


def test_byok_best_model_below_the_threshold_is_flagged():
    d = route(V1, "Research agent", SEED["Research agent"], MIX, byok_providers={"openai"})
    assert d.model == "gpt-4o-mini" and d.below_threshold
    assert d.reason.endswith("; below the threshold 75")


def test_every_model_has_a_provider():
    assert {m.provider for m in V1.models.values()} == {"anthropic", "openai", "groq", "openrouter", "ollama"}


# ---- properties -----------------------------------------------------------------------------------------
@SETTINGS
@given(scores=score_tables, mix=mixes, slider=sliders)
def test_the_chosen_model_qualifies_whenever_any_does_and_nothing_qualifying_is_cheaper(scores, mix, slider):
    d = route(V1, "s", scores, mix, slider=slider)
    if any(s >= 75 for s in scores.values()):
        assert not d.below_threshold and d.score >= d.threshold >= 75
        for a in d.alternatives:
            if a.qualifies:
                assert (a.expected_cost, -a.score, a.model) > (d.expected_cost, -d.score, d.model)
    else:
        assert d.below_threshold and d.score == max(scores.values())


@SETTINGS
@given(scores=score_tables, mix=mixes, a=sliders, b=sliders)
def test_raising_the_slider_never_lowers_the_chosen_score(scores, mix, a, b):
    lo, hi = sorted((a, b))
    assert route(V1, "s", scores, mix, slider=hi).score >= route(V1, "s", scores, mix, slider=lo).score


@SETTINGS
@given(scores=score_tables, mix=mixes, slider=sliders, seed=st.integers(0, 2**32))
def test_the_decision_does_not_depend_on_the_order_of_the_scores(scores, mix, slider, seed):
    items = list(scores.items())
    random.Random(seed).shuffle(items)
    assert route(V1, "s", dict(items), mix, slider=slider) == route(V1, "s", scores, mix, slider=slider)


@SETTINGS
@given(scores=score_tables, mix=mixes, providers=st.sets(st.sampled_from(["anthropic", "openai", "groq"]),
                                                         min_size=1))
def test_byok_never_leaves_the_providers_held(scores, mix, providers):
    eligible = {m: s for m, s in scores.items() if V1.models[m].provider in providers}
    if not eligible:
        with pytest.raises(RoutingError):
            route(V1, "s", scores, mix, byok_providers=providers)
        return
    d = route(V1, "s", scores, mix, byok_providers=providers)
    assert V1.models[d.model].provider in providers and d.score == max(eligible.values())
    assert all(V1.models[a.model].provider in providers for a in d.alternatives)


@SETTINGS
@given(model=st.sampled_from(MODELS), mix=mixes, more_in=st.integers(0, 10**6), more_out=st.integers(0, 10**6))
def test_expected_cost_never_falls_when_tokens_grow(model, mix, more_in, more_out):
    bigger = TokenMix(mix.input_tokens + more_in, mix.output_tokens + more_out)
    assert expected_cost(V1, model, bigger) >= expected_cost(V1, model, mix) >= 0


# ---- quality scores: newer runs supersede older ones ----------------------------------------------------
T = datetime(2026, 9, 1, tzinfo=UTC)


def qs(skill, model, score, days=0, suite="suite-1"):
    return QualityScore(skill, model, D(score), T + timedelta(days=days), suite)


def test_a_newer_run_supersedes_an_older_one_per_skill_and_model():
    rows = [qs("review", "claude-haiku", 62), qs("review", "gpt-4o-mini", 78),
            qs("review", "claude-haiku", 80, days=7, suite="suite-2"), qs("commit", "claude-haiku", 89)]
    cur = current_scores(rows)
    assert skill_scores(cur, "review") == {"claude-haiku": D(80), "gpt-4o-mini": D(78)}
    assert cur[("review", "claude-haiku")].suite_id == "suite-2"
    assert skill_scores(cur, "commit") == {"claude-haiku": D(89)}
    # an older run imported later changes nothing
    assert current_scores([*rows, qs("review", "claude-haiku", 10, days=-30, suite="suite-0")]) == cur


def test_superseded_scores_change_the_route():
    rows = [qs("review", m, s) for m, s in SEED["Code reviewer"].items()]
    assert route(V1, "review", skill_scores(current_scores(rows), "review"), MIX).model == "gpt-4o-mini"
    rows.append(qs("review", "gpt-4o-mini", 70, days=1, suite="suite-2"))  # mini regressed
    assert route(V1, "review", skill_scores(current_scores(rows), "review"), MIX).model == "claude-sonnet"


def test_re_importing_a_run_is_harmless_and_a_conflicting_duplicate_is_refused():
    row = qs("review", "claude-haiku", 62)
    assert current_scores([row, row]) == {("review", "claude-haiku"): row}
    with pytest.raises(RoutingError, match="score: suite 'suite-1' measured 'review' on 'claude-haiku'"):
        current_scores([row, qs("review", "claude-haiku", 63)])


def test_same_instant_runs_are_ordered_by_suite_id():
    a, b = qs("review", "claude-haiku", 62, suite="a"), qs("review", "claude-haiku", 70, suite="b")
    assert current_scores([a, b]) == current_scores([b, a]) == {("review", "claude-haiku"): b}


def test_bad_score_rows_name_their_field():
    with pytest.raises(RoutingError, match="score: must be at most 100"):
        qs("review", "claude-haiku", 101)
    with pytest.raises(RoutingError, match="score: must be a Decimal, not float"):
        QualityScore("review", "claude-haiku", 62.5, T, "s")  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="measured_at: must be a timezone-aware"):
        QualityScore("review", "claude-haiku", D(62), datetime(2026, 9, 1), "s")
    with pytest.raises(RoutingError, match="suite_id: must be a non-empty string"):
        QualityScore("review", "claude-haiku", D(62), T, "")


@SETTINGS
@given(rows=st.lists(st.builds(qs, st.sampled_from(["a", "b"]), st.sampled_from(MODELS[:3]), st.integers(0, 100),
                               st.integers(0, 30), st.sampled_from(["s1", "s2", "s3"])), max_size=30),
       seed=st.integers(0, 2**32))
def test_current_scores_are_the_newest_whatever_the_import_order(rows, seed):
    # keep one score per run (a conflicting duplicate is refused, tested above)
    runs = {(r.skill, r.model, r.measured_at, r.suite_id): r for r in rows}
    rows = list(runs.values())
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    cur = current_scores(rows)
    assert current_scores(shuffled) == cur
    for (skill, model), s in cur.items():
        assert all((r.measured_at, r.suite_id) <= (s.measured_at, s.suite_id)
                   for r in rows if (r.skill, r.model) == (skill, model))


# ---- token mix ------------------------------------------------------------------------------------------
def test_token_mix_is_the_estimate_else_the_medians_else_the_default():
    recent = [(1000, 100), (3000, 300), (2000, 900), (100_000, 50)]  # one outlier
    assert token_mix(recent, estimate=(500, 50)) == TokenMix(500, 50, "estimate")
    # medians taken separately: inputs 1000, 2000, 3000, 100000 -> 2500; outputs 50, 100, 300, 900 -> 200
    assert token_mix(recent) == TokenMix(2500, 200, "history")
    assert token_mix([(1, 2), (2, 3)]) == TokenMix(2, 3, "history")  # 1.5 -> 2, 2.5 -> 3: half up
    assert token_mix([]) == TokenMix(2000, 500, "default")
    with pytest.raises(RoutingError, match="input_tokens: must be an integer >= 0"):
        token_mix([(-1, 2)])


# ---- savings --------------------------------------------------------------------------------------------
OCT14 = datetime(2026, 10, 14, 9, 30, tzinfo=UTC)


def ex(model, default="claude-sonnet", account="acme", skill="review", at=OCT14, tokens=(100_000, 20_000),
       byok=False):
    return RoutedExecution(account, skill, at, model, default, tokens[0], tokens[1], byok)


def test_savings_on_a_hand_built_month():
    executions = [
        ex("gpt-4o-mini"), ex("gpt-4o-mini"), ex("gpt-4o-mini"),
        ex("claude-sonnet", byok=True),  # BYOK: counted, not priced
        ex("claude-sonnet"),  # routed to the default: saves nothing
        ex("gpt-4o-mini", at=datetime(2026, 11, 2, tzinfo=UTC)),  # November: its own line
        ex("claude-sonnet", default="claude-haiku", skill="research"),  # the default did not qualify: negative
    ]
    lines = {(ln.period, ln.skill): ln for ln in routing_savings(CATALOG, executions)}
    assert list(lines) == [("2026-10", "research"), ("2026-10", "review"), ("2026-11", "review")]
    oct_review = lines[("2026-10", "review")]
    # Per execution, sonnet: 100k x $6 + 20k x $30 per 1M = $1.20 (cost $0.60); mini: $0.054 (cost $0.027).
    # 4 priced executions: default 4 x 1.20 = 4.80; routed 3 x 0.054 + 1.20 = 1.362 -> 1.36.
    assert (oct_review.executions, oct_review.byok_executions) == (5, 1)
    assert (oct_review.default_price, oct_review.routed_price, oct_review.saved_price) == (
        D("4.80"), D("1.36"), D("3.44"))
    # cost: default 4 x 0.60 = 2.40; routed 3 x 0.027 + 0.60 = 0.681 -> 0.68
    assert (oct_review.default_cost, oct_review.routed_cost, oct_review.saved_cost) == (
        D("2.40"), D("0.68"), D("1.72"))
    assert lines[("2026-11", "review")].saved_price == D("1.15")  # 1.20 - 0.054 -> 1.20 - 0.05
    research = lines[("2026-10", "research")]
    # haiku: 100k x 0.50 + 20k x 2.50 per 1M = 0.10; sonnet 1.20: routing cost 1.10 more
    assert (research.default_price, research.routed_price, research.saved_price) == (
        D("0.10"), D("1.20"), D("-1.10"))


def test_savings_lines_per_account_and_the_rate_card_in_force():
    lines = routing_savings(CATALOG, [ex("gpt-4o-mini", account="b"), ex("gpt-4o-mini", account="a")])
    assert [ln.account_id for ln in lines] == ["a", "b"]
    with pytest.raises(CatalogError, match="default_model: unknown model 'gpt-9'"):
        routing_savings(CATALOG, [ex("gpt-4o-mini", default="gpt-9")])
    with pytest.raises(CatalogError, match="no catalog version in force"):
        routing_savings(CATALOG, [ex("gpt-4o-mini", at=datetime(2025, 1, 1, tzinfo=UTC))])


@SETTINGS
@given(st.lists(st.builds(ex, st.sampled_from(MODELS), st.sampled_from(MODELS), st.sampled_from(["a", "b"]),
                          tokens=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), byok=st.booleans()),
                max_size=20))
def test_savings_add_up_and_routing_to_the_default_saves_nothing(executions):
    for ln in routing_savings(CATALOG, executions):
        assert ln.saved_price == ln.default_price - ln.routed_price
        assert ln.saved_cost == ln.default_cost - ln.routed_cost
    same = [ex(e.default_model, e.default_model, e.account_id, tokens=(e.input_tokens, e.output_tokens))
            for e in executions]
    assert all(ln.saved_price == 0 and ln.saved_cost == 0 for ln in routing_savings(CATALOG, same))
    assert sum(ln.executions for ln in routing_savings(CATALOG, executions)) == len(executions)


@SETTINGS
@given(st.lists(st.builds(ex, st.sampled_from(MODELS), st.sampled_from(MODELS), st.sampled_from(["a", "b"]),
                          tokens=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), byok=st.booleans()),
                min_size=1, max_size=20))
def test_a_group_of_executions_saves_exactly_what_its_executions_save_one_by_one(executions):
    """The shell aggregates a month in SQL (tokens summed per account, skill, models, BYOK, month and
    version) and hands the groups over: the lines must equal those of the executions one by one."""
    groups: dict[tuple, list] = {}
    for e in executions:
        g = groups.setdefault((e.account_id, e.skill, e.model, e.default_model, e.byok), [0, 0, 0, e.occurred_at])
        g[0] += 1
        g[1] += e.input_tokens
        g[2] += e.output_tokens
    grouped = [RoutedExecution(a, s, at, m, d, i, o, b, n) for (a, s, m, d, b), (n, i, o, at) in groups.items()]
    assert routing_savings(CATALOG, grouped) == routing_savings(CATALOG, executions)


def test_a_group_counts_its_executions_and_refuses_a_negative_count():
    lines = routing_savings(CATALOG, [RoutedExecution("a", "s", OCT14, "gpt-4o-mini", "claude-sonnet", 300_000,
                                                      60_000, False, 3)])
    assert (lines[0].executions, lines[0].default_price) == (3, D("3.60"))  # 3 x $1.20 at 100k/20k each
    with pytest.raises(RoutingError, match="executions"):
        routing_savings(CATALOG, [RoutedExecution("a", "s", OCT14, "gpt-4o-mini", "gpt-4o", 1, 1, False, -1)])
