"""Usage analytics (the seed's "data to collect") on hand-built months with known answers: executions
per user (median, p95, p99, histogram), tokens per execution by skill category and model, model mix,
BYOK adoption, the conversion funnel and plan changes, churn by usage decile, and cost, revenue and
margin per tier. Every figure comes from SQL (services.analytics over repositories.analytics)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from billing.catalog import load_catalog
from models.db import get_engine
from services.analytics import to_json, usage_analytics
from services.errors import InvalidInput
from tests.analytics_month import INGEST_NOW, OCT, SEP, Month, build_month, change
from tests.factories import create_account, ingest

D = Decimal
UTC = timezone.utc
CATALOG = load_catalog()


@pytest.fixture
def month(clean_db):
    return build_month(clean_db)


@pytest.fixture
def report(month):
    return usage_analytics(month, CATALOG, "2026-10", months=3)


def test_executions_per_user_median_p95_p99_per_month(report):
    assert report["months"] == ["2026-08", "2026-09", "2026-10"]
    rows = {r["month"]: r for r in report["executions_per_user"]}
    # October: 1, 2, 3, 4, 100. percentile_cont: p95 at 3.8 -> 4 + 0.8 x 96; p99 at 3.96 -> 4 + 0.96 x 96
    assert rows["2026-10"] == {"month": "2026-10", "users": 5, "executions": 110, "mean": D("22.00"),
                               "median": D("3.00"), "p95": D("80.80"), "p99": D("96.16"), "max": 100}
    # September: 1, 2, 3, 4, 5, 6, 10 -> median 4; p95 at 5.7 -> 6 + 0.7 x 4 = 8.8; p99 at 5.94 -> 9.76
    sep = rows["2026-09"]
    assert (sep["users"], sep["median"], sep["p95"], sep["p99"]) == (7, D("4.00"), D("8.80"), D("9.76"))
    assert (rows["2026-08"]["users"], rows["2026-08"]["median"]) == (1, D("7.00"))


def test_executions_per_user_histogram_of_the_month(report):
    users = {b["bucket"]: b["users"] for b in report["executions_histogram"]}
    assert users == {"1–10": 4, "11–100": 1, "101–1,000": 0, "1,001–5,000": 0, "5,001–25,000": 0,
                     "25,001–100,000": 0, "100,001+": 0}


def test_tokens_per_execution_by_skill_category_and_model(report):
    rows = {(r["category"], r["model"]): r for r in report["tokens_per_execution"]}
    assert set(rows) == {("coding", "claude-sonnet"), ("coding", "gpt-4o-mini"), ("uncategorised", "claude-haiku"),
                         ("uncategorised", "claude-sonnet"), ("uncategorised", "gpt-4o-mini"),
                         ("writing", "claude-haiku")}
    # 100, 200, 300, 1000 tokens: median 250; p95 at 2.85 -> 300 + 0.85 x 700 = 895
    w = rows[("writing", "claude-haiku")]
    assert (w["executions"], w["mean_input"], w["mean_output"], w["median"], w["p95"]) == (
        4, D("400.00"), D("0.00"), D("250.00"), D("895.00"))
    c = rows[("coding", "gpt-4o-mini")]
    assert (c["executions"], c["mean_input"], c["mean_output"], c["median"], c["p95"]) == (
        50, D("1000.00"), D("200.00"), D("1200.00"), D("1200.00"))


def test_model_mix_per_month_and_per_week(report):
    october = {r["model"]: (r["executions"], r["share_percent"]) for r in report["model_mix"]["months"]
               if r["month"] == "2026-10"}
    # haiku 1 + 4, gpt-4o-mini 2 + 50, sonnet 3 + 50 of 110
    assert october == {"claude-haiku": (5, D("4.5")), "gpt-4o-mini": (52, D("47.3")), "claude-sonnet": (53, D("48.2"))}
    weeks = report["model_mix"]["weeks"]
    assert all(datetime.fromisoformat(w["week"]).weekday() == 0 for w in weeks)
    assert sum(w["executions"] for w in weeks) == 7 + 31 + 110


def test_byok_adoption_per_month(report):
    rows = {r["month"]: r for r in report["byok"]}
    assert rows["2026-10"] == {"month": "2026-10", "users": 5, "byok_users": 2, "byok_users_percent": D("40.0"),
                               "executions": 110, "byok_executions": 11, "byok_executions_percent": D("10.0")}
    assert (rows["2026-09"]["byok_users"], rows["2026-09"]["byok_users_percent"]) == (0, D("0.0"))


def test_tier_conversion_funnel_and_plan_changes_from_the_terms_history(report):
    # Ever free: a1, a2, a4, a7; then pro: a2, a4; then team: a4. a3 went pro -> team but was never free.
    assert report["funnel"]["stages"] == [
        {"plan": "free", "accounts": 4, "percent_of_previous": None},
        {"plan": "pro", "accounts": 2, "percent_of_previous": D("50.0")},
        {"plan": "team", "accounts": 1, "percent_of_previous": D("50.0")},
    ]
    assert report["funnel"]["plan_changes"] == [
        {"month": "2026-08", "from": "free", "to": "pro", "accounts": 1},
        {"month": "2026-09", "from": "free", "to": "pro", "accounts": 1},
        {"month": "2026-10", "from": "pro", "to": "team", "accounts": 2},
        {"month": "2026-10", "from": "team", "to": "pro", "accounts": 1},
    ]


def test_churn_by_usage_decile_of_the_month_before(report):
    churn = report["churn"]
    assert (churn["base_month"], churn["month"]) == ("2026-09", "2026-10")
    # Seven September users, one per decile in usage order: a1 1, a4 2, a3 3, a6 4, a2 5, a8 6, a5 10.
    # a6 and a8 stopped (a8 ran only sandbox tries); a5 went from team to pro (a downgrade).
    assert [(d["decile"], d["min_executions"], d["stopped"], d["downgraded"], d["churned"]) for d in churn["deciles"]] \
        == [(1, 1, 0, 0, 0), (2, 2, 0, 0, 0), (3, 3, 0, 0, 0), (4, 4, 1, 0, 1), (5, 5, 0, 0, 0), (6, 6, 1, 0, 1),
            (7, 10, 0, 1, 1)]


def test_platform_cost_revenue_and_margin_per_tier(report):
    tiers = {t["plan"]: t for t in report["tiers"]}
    assert set(tiers) == {"free", "pro", "team"}  # a8 has neither an October execution nor an invoice
    assert tiers["free"] == {"plan": "free", "accounts": 1, "executions": 1, "invoices": 1, "revenue": D("0.00"),
                             "llm_cost": D("0.00"), "margin": D("0.00"), "margin_percent": None}
    # pro: a2 2 x 0.002, a5 50 x (1000 x 0.15 + 200 x 0.60)/1M + 40 x 0.02 (BYOK free), a6 no usage
    # = 0.004 + 0.0135 + 0.80 = 0.8175 -> 0.82; revenue 3 x 29.00
    assert tiers["pro"] == {"plan": "pro", "accounts": 3, "executions": 102, "invoices": 3, "revenue": D("87.00"),
                            "llm_cost": D("0.82"), "margin": D("86.18"), "margin_percent": D("99.1")}
    # team: a3 2 x 0.01 (its BYOK execution's 0.5 is not ours), a4 1,600 haiku input tokens x $0.25/1M = 0.0004
    assert tiers["team"] == {"plan": "team", "accounts": 2, "executions": 7, "invoices": 2, "revenue": D("158.00"),
                             "llm_cost": D("0.02"), "margin": D("157.98"), "margin_percent": D("100.0")}


def test_the_json_has_no_floats(report):
    def walk(v):
        if isinstance(v, dict):
            return all(walk(x) for x in v.values())
        if isinstance(v, list):
            return all(walk(x) for x in v)
        return not isinstance(v, float)

    assert walk(to_json(report))


def test_deciles_group_ten_percent_of_the_users_each(clean_db):
    url, engine = clean_db, get_engine(clean_db)
    m = Month()
    for i in range(1, 21):  # 20 September users with 1..20 executions; the two heaviest stop in October
        create_account(url, f"u{i:02d}", "pro")
        m.add(f"u{i:02d}", SEP, i, "gpt-4o-mini")
        if i < 19:
            m.add(f"u{i:02d}", OCT, 1, "gpt-4o-mini")
    change(engine, "u01", "free", datetime(2026, 10, 5, tzinfo=UTC))  # the lightest user downgrades
    assert ingest(url, m.docs, now=INGEST_NOW).rejected == 0
    deciles = usage_analytics(engine, CATALOG, "2026-10", months=1)["churn"]["deciles"]
    assert [(d["accounts"], d["min_executions"], d["max_executions"], d["churned"], d["churn_percent"])
            for d in deciles] == [(2, 1, 2, 1, D("50.0"))] + [(2, 2 * k + 1, 2 * k + 2, 0, D("0.0")) for k in range(1, 9)] \
        + [(2, 19, 20, 2, D("100.0"))]


def test_one_month_and_bad_input(month):
    one = usage_analytics(month, CATALOG, "2026-10", months=1)
    assert one["months"] == ["2026-10"] and [r["month"] for r in one["executions_per_user"]] == ["2026-10"]
    assert all(w["week"] >= "2026-09-28" for w in one["model_mix"]["weeks"])
    with pytest.raises(InvalidInput, match="months: must be a whole number from 1 to 24"):
        usage_analytics(month, CATALOG, "2026-10", months=0)
    with pytest.raises(InvalidInput, match="period"):
        usage_analytics(month, CATALOG, "October")


def test_a_platforms_view_holds_only_its_accounts(month, clean_db):
    from repositories import platforms
    from services.platforms import assign_platform, hash_key

    with month.begin() as conn:
        pid = platforms.create_platform(conn, "p", hash_key("tk_x"))
        assign_platform(conn, "a5", pid)
    mine = usage_analytics(month, CATALOG, "2026-10", months=1, platform_id=pid)
    assert [(r["users"], r["executions"]) for r in mine["executions_per_user"]] == [(1, 100)]
    assert [t["plan"] for t in mine["tiers"]] == ["pro"]
    assert mine["funnel"]["stages"][0]["accounts"] == 0  # a5 was never free
