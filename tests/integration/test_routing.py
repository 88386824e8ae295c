"""Model routing on real Postgres: quality-score imports, routes (the seed's table, ties, no qualifying
model, the slider, BYOK, superseded scores, the token mix), decisions recorded and carried by
executions, and the savings report on a hand-built month."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest

from billing.catalog import load_catalog
from models.db import get_engine, libpq_url
from services.errors import InvalidInput
from services.routing import (
    AccountNotFound,
    RoutingService,
    import_scores,
    savings_report,
    set_account_routing,
    set_skill,
)
from tests.factories import create_account, event, ingest

D = Decimal
UTC = timezone.utc
CATALOG = load_catalog()
NOW = datetime(2026, 10, 25, 12, tzinfo=UTC)
RUN1 = "2026-10-01T09:00:00Z"
RUN2 = "2026-10-08T09:00:00Z"

# The seed's F-040 table, as a behavioural test run would export it.
SEED_CSV = f"""skill,model,score,measured_at,suite_id
code-reviewer,claude-haiku,62,{RUN1},suite-7
code-reviewer,claude-sonnet,91,{RUN1},suite-7
code-reviewer,gpt-4o-mini,78,{RUN1},suite-7
research-agent,claude-haiku,45,{RUN1},suite-7
research-agent,claude-sonnet,88,{RUN1},suite-7
research-agent,gpt-4o-mini,71,{RUN1},suite-7
commit-message,claude-haiku,89,{RUN1},suite-7
commit-message,claude-sonnet,95,{RUN1},suite-7
commit-message,gpt-4o-mini,87,{RUN1},suite-7
"""


def csv_lines(text: str) -> io.StringIO:
    return io.StringIO(text, newline="")


@pytest.fixture
def db(clean_db):
    engine = get_engine(clean_db)
    create_account(clean_db, "acme", "pro", overage=True)
    return engine


@pytest.fixture
def router(db):
    return RoutingService(db, CATALOG, clock=lambda: NOW, mix_cache_seconds=0)


def seed(db) -> None:
    report = import_scores(db, CATALOG, csv_lines(SEED_CSV), now=NOW)
    assert (report.accepted, report.rejected) == (9, 0)


def ask(router, skill: str, account: str = "acme", **extra) -> dict:
    return router.route(None, {"account_id": account, "skill_id": skill, "expected_input_tokens": 1500,
                               "expected_output_tokens": 400, **extra})


# ---- the seed's table ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("skill", "model", "reason"), [
    ("code-reviewer", "gpt-4o-mini", "cheapest of 2 models at or above 75"),
    ("research-agent", "claude-sonnet", "cheapest of 1 model at or above 75"),
    # The seed says Haiku; by the rate card GPT-4o-mini is cheaper at any token mix, and the rate card wins.
    ("commit-message", "gpt-4o-mini", "cheapest of 3 models at or above 75"),
])
def test_the_seed_table_routes_through_the_database(db, router, clean_db, skill, model, reason):
    seed(db)
    d = ask(router, skill)
    assert (d["model"], d["reason"], d["below_threshold"]) == (model, reason, False)
    # gpt-4o-mini at 1,500 in / 400 out: 1,500 x $0.30 + 400 x $1.20 per 1M
    if model == "gpt-4o-mini":
        assert d["expected_cost"] == "0.00093"
    assert {a["model"] for a in d["alternatives"]} == {"claude-haiku", "claude-sonnet", "gpt-4o-mini"} - {model}
    with psycopg.connect(libpq_url(clean_db)) as conn:
        row = conn.execute("SELECT account_id, skill, model, reason, token_mix_source, input_tokens "
                           "FROM routing_decisions WHERE id = %s", (d["decision_id"],)).fetchone()
    assert row == ("acme", skill, model, reason, "estimate", 1500)


def test_every_route_is_recorded_with_its_own_decision_id(db, router):
    seed(db)
    ids = [ask(router, "code-reviewer")["decision_id"] for _ in range(3)]
    assert len(set(ids)) == 3


# ---- ties, no qualifying model, the slider, BYOK ---------------------------------------------------------------
def test_equal_cost_goes_to_the_higher_score_then_the_model_code(db, router):
    import_scores(db, CATALOG, csv_lines(f"""skill,model,score,measured_at,suite_id
tie,gpt-4o,80,{RUN1},s1
tie,claude-haiku,80,{RUN1},s1
tie,groq-llama,70,{RUN1},s1
tie,deepseek-r1,90,{RUN1},s1
"""), now=NOW)
    # No tokens: every model costs $0, so the higher score wins ...
    d = ask(router, "tie", expected_input_tokens=0, expected_output_tokens=0)
    assert (d["model"], d["expected_cost"]) == ("deepseek-r1", "0")
    # ... and between equal scores at equal cost, the lower model code.
    import_scores(db, CATALOG, csv_lines(f"skill,model,score,measured_at,suite_id\ntie,deepseek-r1,79,{RUN2},s2\n"),
                  now=NOW)
    d = ask(router, "tie", expected_input_tokens=0, expected_output_tokens=0)
    assert d["model"] == "claude-haiku"


def test_no_qualifying_model_takes_the_best_score_and_is_flagged(db, router):
    import_scores(db, CATALOG, csv_lines(f"""skill,model,score,measured_at,suite_id
hard,claude-haiku,40,{RUN1},s1
hard,claude-opus,70,{RUN1},s1
hard,gpt-4o-mini,55,{RUN1},s1
"""), now=NOW)
    d = ask(router, "hard")
    assert (d["model"], d["below_threshold"]) == ("claude-opus", True)
    assert d["reason"] == "no model reaches 75; the best score is 70"


def test_slider_from_cheapest_through_the_middle_to_best_quality(db, router):
    seed(db)  # code-reviewer: gpt-4o-mini 78, sonnet 91 (haiku 62)
    assert ask(router, "code-reviewer")["model"] == "gpt-4o-mini"  # no setting: slider 0
    set_account_routing(db, CATALOG, "acme", slider="0.5")
    middle = ask(router, "code-reviewer")  # 75 + 0.5 x (91 - 75) = 83: only sonnet
    assert (middle["model"], middle["threshold"], middle["slider"]) == ("claude-sonnet", "83", "0.5")
    set_account_routing(db, CATALOG, "acme", slider="0.187")  # 77.992: mini (78) qualifies
    assert ask(router, "code-reviewer")["model"] == "gpt-4o-mini"
    set_account_routing(db, CATALOG, "acme", slider=1)
    best = ask(router, "code-reviewer")
    assert (best["model"], best["threshold"]) == ("claude-sonnet", "91")
    # A request may override the account's slider.
    assert ask(router, "code-reviewer", slider=0)["model"] == "gpt-4o-mini"


def test_a_slider_outside_0_to_1_is_refused_naming_the_field(db, router):
    seed(db)
    with pytest.raises(InvalidInput, match=r"slider: 1.5 is not between 0 \(cheapest\) and 1"):
        set_account_routing(db, CATALOG, "acme", slider="1.5")
    with pytest.raises(InvalidInput, match="slider: 0.1875 has more than 3 decimal places"):
        set_account_routing(db, CATALOG, "acme", slider="0.1875")
    with pytest.raises(InvalidInput, match="slider"):
        ask(router, "code-reviewer", slider=-0.1)


def test_byok_accounts_get_the_best_score_among_the_providers_they_hold_keys_for(db, router):
    seed(db)
    set_account_routing(db, CATALOG, "acme", byok_providers=["openai"])
    d = ask(router, "code-reviewer")  # only gpt-4o-mini is of openai
    assert (d["model"], d["byok"], d["provider"]) == ("gpt-4o-mini", True, "openai")
    assert d["reason"] == "BYOK: best quality among 1 model of openai (score 78)"
    set_account_routing(db, CATALOG, "acme", byok_providers=["openai", "anthropic"])
    assert ask(router, "commit-message")["model"] == "claude-sonnet"  # 95: price plays no part
    set_account_routing(db, CATALOG, "acme", byok_providers=["groq"])
    with pytest.raises(InvalidInput, match="byok_providers: no model with a quality score for skill "
                                           "'code-reviewer' among the providers groq"):
        ask(router, "code-reviewer")
    with pytest.raises(InvalidInput, match="byok_providers: unknown provider 'acme-llm'"):
        set_account_routing(db, CATALOG, "acme", byok_providers=["acme-llm"])
    set_account_routing(db, CATALOG, "acme", byok_providers=[])  # back to platform keys
    assert ask(router, "commit-message")["model"] == "gpt-4o-mini"


def test_unknown_accounts_and_skills_without_scores_are_refused(db, router):
    seed(db)
    with pytest.raises(AccountNotFound):
        ask(router, "code-reviewer", account="nobody")
    with pytest.raises(InvalidInput, match="skill_id: no quality scores for skill 'unscored'"):
        ask(router, "unscored")
    with pytest.raises(InvalidInput, match="expected_output_tokens: required when the other"):
        router.route(None, {"account_id": "acme", "skill_id": "code-reviewer", "expected_input_tokens": 5})
    with pytest.raises(InvalidInput, match="default_model: unknown model 'gpt-9'"):
        ask(router, "code-reviewer", default_model="gpt-9")


# ---- quality scores: import -----------------------------------------------------------------------------------
def test_bad_score_rows_are_rejected_with_line_and_reason_and_good_rows_load(db):
    text = f"""skill,model,score,measured_at,suite_id
ok,gpt-4o-mini,80,{RUN1},s1
ok,gpt-9,80,{RUN1},s1
ok,claude-haiku,101,{RUN1},s1
ok,claude-haiku,abc,{RUN1},s1
ok,claude-haiku,80.125,{RUN1},s1
ok,claude-haiku,80,2026-10-01T09:00:00,s1
ok,claude-haiku,80,2026-11-30T00:00:00Z,s1
ok,claude-haiku,80,{RUN1},
,claude-haiku,80,{RUN1},s1
ok,claude-haiku,80

ok,claude-sonnet,90.5,{RUN1},s1
ok,gpt-4o-mini,81,{RUN1},s1
"""
    report = import_scores(db, CATALOG, csv_lines(text), now=NOW)
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, 10)
    assert [(r.line, r.reason) for r in report.rejections] == [
        (3, "model: unknown model 'gpt-9'"),
        (4, "score: 101 is not between 0 and 100"),
        (5, "score: 'abc' is not a number"),
        (6, "score: 80.125 has more than 2 decimal places"),
        (7, "measured_at: '2026-10-01T09:00:00' has no time zone (add Z or +00:00)"),
        (8, "measured_at: 2026-11-30T00:00:00Z is in the future"),
        (9, "suite_id: must be a non-empty string"),
        (10, "skill: must be a non-empty string"),
        (11, "expected 5 fields as in the header, got 3"),
        (14, "score: suite 's1' measuring 'ok' on 'gpt-4o-mini' at 2026-10-01T09:00:00+00:00 is on line 2 "
             "with score 80; a run has one score"),
    ]


def test_a_header_without_the_columns_refuses_the_file(db):
    with pytest.raises(InvalidInput, match="header: missing columns measured_at, suite_id"):
        import_scores(db, CATALOG, csv_lines("skill,model,score\na,gpt-4o,1\n"), now=NOW)


def test_re_importing_a_run_changes_nothing_and_another_score_for_it_is_refused(db):
    seed(db)
    again = import_scores(db, CATALOG, csv_lines(SEED_CSV), now=NOW)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 9, 0)
    changed = import_scores(db, CATALOG, csv_lines(SEED_CSV.replace("claude-haiku,62", "claude-haiku,63")), now=NOW)
    assert (changed.accepted, changed.duplicates, changed.rejected) == (0, 8, 1)
    assert changed.rejections[0].line == 2
    assert "is recorded with score 62; a run's score never changes" in changed.rejections[0].reason
    with db.connect() as conn:
        assert tuple(conn.exec_driver_sql("SELECT count(*), sum(score) FROM quality_scores").one()) == (9, D(706))


def test_a_newer_run_supersedes_the_older_one_and_changes_the_route(db, router):
    seed(db)
    assert ask(router, "research-agent")["model"] == "claude-sonnet"
    newer = f"skill,model,score,measured_at,suite_id\nresearch-agent,gpt-4o-mini,76,{RUN2},suite-8\n"
    assert import_scores(db, CATALOG, csv_lines(newer), now=NOW).accepted == 1
    d = ask(router, "research-agent")
    assert (d["model"], d["score"]) == ("gpt-4o-mini", "76")
    # An older run imported afterwards supersedes nothing: the newest measured_at is in force.
    older = "skill,model,score,measured_at,suite_id\nresearch-agent,gpt-4o-mini,10,2026-09-01T00:00:00Z,suite-6\n"
    assert import_scores(db, CATALOG, csv_lines(older), now=NOW).accepted == 1
    assert ask(router, "research-agent")["model"] == "gpt-4o-mini"
    # Two runs at the same instant: the greater suite id (C order) is in force.
    same = f"skill,model,score,measured_at,suite_id\nresearch-agent,gpt-4o-mini,50,{RUN2},suite-9\n"
    import_scores(db, CATALOG, csv_lines(same), now=NOW)
    assert ask(router, "research-agent")["model"] == "claude-sonnet"


# ---- the token mix ----------------------------------------------------------------------------------------------
def test_the_token_mix_is_the_median_of_the_skills_recent_executions_else_the_default(db, router, clean_db):
    seed(db)
    d = router.route(None, {"account_id": "acme", "skill_id": "code-reviewer"})
    assert d["token_mix"] == {"input_tokens": 2000, "output_tokens": 500, "source": "default"}
    start = datetime(2026, 10, 2, tzinfo=UTC)
    docs = [event("acme", i, start + timedelta(minutes=i), skill_id="code-reviewer",
                  input_tokens=1000 + 10 * i, output_tokens=100 + i) for i in range(4)]
    # An older execution beyond the latest 100 would not count; other skills never do.
    docs.append(event("acme", 99, start, skill_id="other", input_tokens=9_999_999, output_tokens=9_999_999))
    assert ingest(clean_db, docs, now=NOW).accepted == 5
    d = router.route(None, {"account_id": "acme", "skill_id": "code-reviewer"})
    # inputs 1000, 1010, 1020, 1030 -> 1015; outputs 100..103 -> 101.5 -> 102 (half up)
    assert d["token_mix"] == {"input_tokens": 1015, "output_tokens": 102, "source": "history"}


def test_the_token_mix_takes_only_the_latest_executions(db, clean_db):
    seed(db)
    router = RoutingService(db, CATALOG, clock=lambda: NOW, mix_cache_seconds=0)
    start = datetime(2026, 10, 2, tzinfo=UTC)
    old = [event("acme", i, start + timedelta(minutes=i), skill_id="code-reviewer", input_tokens=5, output_tokens=5)
           for i in range(50)]
    new = [event("acme", 100 + i, start + timedelta(days=1, minutes=i), skill_id="code-reviewer",
                 input_tokens=700, output_tokens=70) for i in range(100)]
    assert ingest(clean_db, old + new, now=NOW).accepted == 150
    d = router.route(None, {"account_id": "acme", "skill_id": "code-reviewer"})
    assert (d["token_mix"]["input_tokens"], d["token_mix"]["output_tokens"]) == (700, 70)


# ---- executions carry the routed model and the decision id ---------------------------------------------------------
def test_executions_carry_the_routed_model_and_the_decision_id(db, router, clean_db):
    seed(db)
    d = ask(router, "code-reviewer")
    at = datetime(2026, 10, 3, tzinfo=UTC)
    good = event("acme", 1, at, d["model"], skill_id="code-reviewer", routed_model=d["model"],
                 routing_decision_id=d["decision_id"])
    half = event("acme", 2, at, "gpt-4o", routing_decision_id=d["decision_id"])
    bad_id = event("acme", 3, at, "gpt-4o", routed_model="gpt-4o", routing_decision_id="7")
    report = ingest(clean_db, [good, half, bad_id], now=NOW)
    assert report.accepted == 1
    assert [(r.line, r.reason) for r in report.rejections] == [
        (2, "routed_model: required with routing_decision_id (the model the route chose)"),
        (3, "routing_decision_id: must be a positive whole number (the id POST /v1/route answered)"),
    ]
    with psycopg.connect(libpq_url(clean_db)) as conn:
        row = conn.execute("SELECT model, routed_model, routing_decision_id FROM executions").fetchone()
    assert row == ("gpt-4o-mini", "gpt-4o-mini", d["decision_id"])


# ---- the savings report ---------------------------------------------------------------------------------------------
def test_savings_on_a_hand_built_month(db, router, clean_db):
    seed(db)
    create_account(clean_db, "beta", "pro")
    set_skill(db, CATALOG, "code-reviewer", category="coding", default_model="claude-sonnet")
    reviewer = ask(router, "code-reviewer")  # -> gpt-4o-mini; default: the skill's (sonnet)
    research = ask(router, "research-agent", default_model="claude-haiku")  # -> sonnet; default haiku (dearer!)
    commit = ask(router, "commit-message")  # -> gpt-4o-mini; no default known
    beta = ask(router, "code-reviewer", account="beta")
    at = datetime(2026, 10, 10, tzinfo=UTC)
    tokens = {"input_tokens": 100_000, "output_tokens": 20_000}
    n = iter(range(1000))

    def run(account, decision, model=None, **extra):
        doc = event(account, next(n), at, model or decision["model"], skill_id=decision["skill_id"],
                    routed_model=decision["model"], routing_decision_id=decision["decision_id"], **tokens)
        doc.update(extra)
        return doc

    docs = [run("acme", reviewer) for _ in range(3)]
    docs += [run("acme", reviewer, model="gpt-4o")]  # fell back to gpt-4o
    docs += [run("acme", reviewer, byok=True)]  # BYOK: counted, not priced
    docs += [run("acme", reviewer, sandbox=True)]  # a sandbox try: never charged, not counted
    docs += [run("acme", research)]
    docs += [run("acme", commit) for _ in range(2)]
    docs += [run("beta", beta)]
    docs += [run("beta", reviewer)]  # another account's decision id: its default is not trusted
    docs += [event("acme", next(n), at, "claude-sonnet", skill_id="code-reviewer", **tokens)]  # not routed
    docs += [run("acme", reviewer, occurred_at="2026-09-30T23:59:59Z")]  # September
    assert ingest(clean_db, docs, now=NOW).accepted == len(docs)

    rows = {(r.account_id, r.skill): r for r in savings_report(db, CATALOG, "2026-10")}
    assert list(rows) == [("acme", "code-reviewer"), ("acme", "commit-message"), ("acme", "research-agent"),
                          ("beta", "code-reviewer")]
    # Per execution at 100k in / 20k out: sonnet $1.20 (cost $0.60), gpt-4o $0.90 ($0.45),
    # gpt-4o-mini $0.054 ($0.027), haiku $0.10 ($0.05).
    r = rows[("acme", "code-reviewer")]
    assert (r.executions, r.byok_executions, r.followed, r.without_default) == (5, 1, 4, 0)
    # default 4 x 1.20 = 4.80; routed 3 x 0.054 + 0.90 = 1.062 -> 1.06
    assert (r.default_price, r.routed_price, r.saved_price) == (D("4.80"), D("1.06"), D("3.74"))
    assert (r.default_cost, r.routed_cost, r.saved_cost) == (D("2.40"), D("0.53"), D("1.87"))
    r = rows[("acme", "research-agent")]  # routing chose dearer than the default: negative
    assert (r.default_price, r.routed_price, r.saved_price) == (D("0.10"), D("1.20"), D("-1.10"))
    r = rows[("acme", "commit-message")]  # no default named: priced at the model run, saves nothing
    assert (r.executions, r.without_default, r.saved_price, r.routed_price) == (2, 2, D("0.00"), D("0.11"))
    r = rows[("beta", "code-reviewer")]
    # default 1.20 + 0.054 (the foreign decision's execution, at its own model) = 1.254 -> 1.25;
    # routed 2 x 0.054 = 0.108 -> 0.11; each side rounded once
    assert (r.executions, r.without_default, r.default_price, r.saved_price) == (2, 1, D("1.25"), D("1.14"))


def test_an_empty_month_saves_nothing(db):
    assert savings_report(db, CATALOG, "2026-10") == []
    with pytest.raises(InvalidInput, match="period"):
        savings_report(db, CATALOG, "2026-13")
