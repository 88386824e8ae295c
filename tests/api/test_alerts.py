"""Alerts that act, through the live API: budgets (50/80/100 %), the spike pause, the loop kill verdict and
fallback notices, each evaluated after every committed batch by the usage observer, written to the
outbox with its record, and delivered over SMTP to a real sink whose received mail the tests read."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest

import capabilities
from models.db import get_engine
from models.schemas import RecordedUsage
from services.alerts import AlertEvaluator, evaluator
from tests.alerts_support import deliver, payg_with_budget, smtp_sink, subjects, with_alert_settings  # noqa: F401 - fixture
from tests.api.conftest import NOW
from tests.factories import event

PERIOD = "2026-10"


def rows(api, sql: str, **params):
    with get_engine(api.database_url).begin() as conn:
        return conn.exec_driver_sql(sql, params or None).all()


def executions(account: str, n: int, *, first: int = 0, at=NOW - timedelta(hours=2), step=timedelta(seconds=1),
               **extra) -> list[dict]:
    return [event(account, i, at + step * (i - first), **extra) for i in range(first, first + n)]


def settle(api) -> None:
    """The API evaluates alerts in a background thread: wait until every batch posted is evaluated."""
    assert evaluator(api.app.state.service.engine, api.app.state.service.catalog).queue.settle()


def post(client, docs: list[dict], api=None) -> dict:
    out = {"accepted": 0, "duplicates": 0, "rejected": 0}
    for i in range(0, len(docs), 1000):
        r = client.post("/v1/executions", json={"executions": docs[i:i + 1000]})
        assert r.status_code == 200, r.text
        for k in out:
            out[k] += r.json()[k]
    if api is not None:
        settle(api)
    return out


@pytest.fixture
def payg(api):
    return payg_with_budget(api)


def crossings(api, account: str) -> list[tuple[int, bool]]:
    return [(t, n) for t, n in rows(api, "SELECT threshold, notified FROM budget_crossings WHERE account_id = "
                                         f"'{account}' ORDER BY threshold")]


# ---- budgets ----------------------------------------------------------------------------------------
def test_budget_alerts_at_just_below_and_just_above_each_threshold(api, payg, smtp_sink, tmp_path):
    post(payg, executions("payg-1", 49), api=api)  # $0.49: just below 50 %
    assert crossings(api, "payg-1") == []
    post(payg, executions("payg-1", 1, first=49), api=api)  # $0.50: exactly 50 % counts
    assert crossings(api, "payg-1") == [(50, True)]
    post(payg, executions("payg-1", 29, first=50), api=api)  # $0.79: just below 80 %
    assert crossings(api, "payg-1") == [(50, True)]
    post(payg, executions("payg-1", 2, first=79), api=api)  # $0.81: just above 80 %
    assert crossings(api, "payg-1") == [(50, True), (80, True)]

    assert deliver(api.database_url, smtp_sink, tmp_path).sent == 2
    mail = smtp_sink.messages()
    assert subjects(mail) == ["You have used 50% of your 2026-10 budget", "You have used 80% of your 2026-10 budget"]
    assert {m.to for m in mail} == {"owner@payg.example"}
    assert "$0.81, 81% of your monthly budget of $1.00" in mail[1].part("plain")
    assert "<table>" in mail[1].part("html") and "$0.81" in mail[1].part("html")


def test_a_jump_past_every_threshold_records_each_and_mails_only_the_highest(api, payg, smtp_sink, tmp_path):
    post(payg, executions("payg-1", 120), api=api)
    assert crossings(api, "payg-1") == [(50, False), (80, False), (100, True)]
    deliver(api.database_url, smtp_sink, tmp_path)
    assert subjects(smtp_sink.messages()) == ["You have used 100% of your 2026-10 budget"]


def test_each_threshold_is_mailed_once_under_retries_reingest_and_8_concurrent_clients(api, smtp_sink, tmp_path):
    key = api.platform("p1")
    accounts = [api.account(f"busy-{i}", "payg", platform="p1", email=f"busy{i}@example.com") for i in range(3)]
    setup = api.client(key)
    for a in accounts:
        setup.put(f"/v1/accounts/{a}/budget", json={"amount": "1.00"})
    # 8 clients, each 8 batches of 2 executions per account, interleaved: 128 executions per account.
    batches = [[d for a in accounts for d in executions(a, 2, first=2 * (8 * c + b))] for c in range(8) for b in range(8)]
    errors: list[str] = []

    def client_posts(c: int) -> None:
        client = api.client(key)
        for b in range(8):
            r = client.post("/v1/executions", json={"executions": batches[8 * c + b]})
            if r.status_code != 200 or r.json()["accepted"] != len(batches[8 * c + b]):
                errors.append(r.text)

    threads = [threading.Thread(target=client_posts, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    settle(api)
    # Re-ingest everything, and hear every batch again (an observer retried): nothing is new.
    assert post(setup, [d for b in batches for d in b], api=api)["duplicates"] == 128 * 3
    for _ in range(2):
        capabilities.observe_usage(api.app.state.service.engine, api.app.state.service.catalog,
                                   RecordedUsage(account_ids=tuple(accounts), recorded_at=NOW))
    assert deliver(api.database_url, smtp_sink, tmp_path).sent >= 3
    assert deliver(api.database_url, smtp_sink, tmp_path).sent == 0  # a second run sends nothing again

    mail = smtp_sink.messages()
    for a in accounts:
        assert [t for t, _ in crossings(api, a)] == [50, 80, 100]
        mine = [m for m in mail if m.to == f"busy{a[-1]}@example.com"]
        got = [int(m.subject.split("%")[0].split()[-1]) for m in mine]
        assert len(got) == len(set(got)) and 100 in got, got  # no threshold twice; the last one always mailed
        assert sorted(got) == [t for t, notified in crossings(api, a) if notified]
    assert len({m.message_id for m in mail}) == len(mail)


def test_a_budget_is_set_shown_and_refused_with_the_field_named(api, payg):
    view = payg.get("/v1/accounts/payg-1/budget").json()
    assert (view["budget"], view["source"], view["plan_default"]) == ("1.00", "set", "50.00")
    for bad, reason in (("0", "more than 0"), ("-5", "more than 0"), ("1.001", "whole cents"), ("abc", "decimal")):
        r = payg.put("/v1/accounts/payg-1/budget", json={"amount": bad})
        assert r.status_code == 422 and r.json()["error"]["field"] == "amount" and reason in r.json()["error"]["message"]
    assert payg.put("/v1/accounts/payg-1/budget", json={"amount": None}).json()["source"] == "plan"
    assert payg.put("/v1/accounts/nobody/budget", json={"amount": "5"}).status_code == 404


def test_lowering_the_budget_below_this_months_charges_notices_at_once(api, payg):
    payg.put("/v1/accounts/payg-1/budget", json={"amount": "10.00"})
    post(payg, executions("payg-1", 60), api=api)  # $0.60 of $10: nothing
    assert crossings(api, "payg-1") == []
    view = payg.put("/v1/accounts/payg-1/budget", json={"amount": "0.70"}).json()
    assert view["percent_used"] == "85.7"
    assert crossings(api, "payg-1") == [(50, False), (80, True)]


def test_the_plans_default_budget_watches_usage_charges_not_the_fee(api):
    key = api.platform("p1")
    api.account("pro-1", "pro", platform="p1", overage=True, email="pro@example.com")
    client = api.client(key)
    view = client.get("/v1/accounts/pro-1/budget").json()
    assert (view["budget"], view["source"], view["charges"]) == ("29.00", "plan", "0.00")  # the $29 fee is not counted
    # 5,000 included, then $0.005 each, the line rounded half-up: 2,898 overage executions are $14.49,
    # 2,899 are $14.495 -> $14.50 = 50 % of $29.
    post(client, executions("pro-1", 7898, step=timedelta(milliseconds=10)), api=api)
    assert crossings(api, "pro-1") == []
    post(client, executions("pro-1", 1, first=7898), api=api)
    assert crossings(api, "pro-1") == [(50, True)]


# ---- spikes ------------------------------------------------------------------------------------------
def test_a_spike_above_the_floor_pauses_the_account_and_entitlements_refuse_it(api, smtp_sink, tmp_path):
    key = api.platform("p1")
    api.account("calm", "payg", platform="p1", email="calm@example.com")
    api.account("burst", "payg", platform="p1", email="burst@example.com")
    client = api.client(key)
    window = NOW - timedelta(minutes=5)
    post(client, executions("calm", 300, at=window, step=timedelta(milliseconds=900)), api=api)  # exactly the floor: no pause
    post(client, executions("burst", 301, at=window, step=timedelta(milliseconds=900)), api=api)  # just above it
    assert rows(api, "SELECT account_id, state, workflow_id FROM anomalies") == [
        ("burst", "open", "anomaly-burst-20261025T115500Z")]
    for account, allowed, reason in (("calm", True, "ok"), ("burst", False, "paused_anomaly")):
        for sandbox in ("false", "true"):
            e = client.get(f"/v1/accounts/{account}/entitlement?model=claude-haiku&sandbox={sandbox}").json()
            assert (e["allowed"], e["reason"]) == (allowed, reason)
    post(client, executions("burst", 400, first=301, at=window, step=timedelta(milliseconds=700)), api=api)
    assert len(rows(api, "SELECT id FROM anomalies")) == 1  # paused once, however many batches see the burst

    deliver(api.database_url, smtp_sink, tmp_path)
    mail = {m.to: m for m in smtp_sink.messages()}
    assert set(mail) == {"burst@example.com", "ops@example.com"}
    assert "301 executions in the 5 minutes" in mail["burst@example.com"].part("plain")
    assert "tally anomalies resume anomaly-burst-20261025T115500Z" in mail["ops@example.com"].part("plain")
    page = api.client(key).get("/accounts/burst/billing").text
    assert 'id="paused"' in page and "301" in page


def test_a_spike_is_measured_against_the_accounts_own_week(api):
    """10 x the account's mean per 5 minutes over the 7 days before the window, when that is above the
    floor: with a floor of 20 and 2,016 executions in the week (1 per window), 20 + 1 pauses above
    max(10 x 1, 20) = 20; with 8,064 in the week (4 per window) the bar is 40."""
    catalog = with_alert_settings(spike_floor_executions=20)
    for account in ("quiet", "busy"):
        api.account(account, "payg")
    engine = get_engine(api.database_url)
    week_start = NOW - timedelta(minutes=5) - timedelta(days=7)
    from tests.factories import ingest

    ingest(api.database_url, executions("busy", 8064, at=week_start, step=timedelta(seconds=75)), now=NOW)
    ingest(api.database_url, executions("quiet", 2016, at=week_start, step=timedelta(minutes=5)), now=NOW)
    window = NOW - timedelta(minutes=5)
    ingest(api.database_url, executions("quiet", 21, first=10_000, at=window), now=NOW)
    ingest(api.database_url, executions("busy", 40, first=10_000, at=window), now=NOW)  # at the bar: no pause
    out = AlertEvaluator(engine, catalog).evaluate(["busy", "quiet"], NOW)
    assert out.paused == ["quiet"]
    ingest(api.database_url, executions("busy", 1, first=10_040, at=window), now=NOW)  # 41: above it
    assert AlertEvaluator(engine, catalog).evaluate(["busy", "quiet"], NOW).paused == ["busy"]
    evidence = dict(rows(api, "SELECT account_id, evidence->>'threshold' FROM anomalies"))
    assert Decimal(evidence["busy"]) == 40 and Decimal(evidence["quiet"]) == 20


# ---- the loop kill verdict ----------------------------------------------------------------------------
def test_kill_verdict_at_just_below_and_above_three_medians_with_its_evidence(api, smtp_sink, tmp_path):
    key = api.platform("p1")
    api.account("loop", "payg", platform="p1", email="loop@example.com")
    client = api.client(key)
    history = [event("loop", i, NOW - timedelta(hours=1, seconds=i), agent_id="ag", cost_usd="0.01") for i in range(20)]
    history[0]["cost_usd"] = "5.00"  # a past runaway does not move the median
    post(client, history, api=api)

    def verdict(execution: str, cost: str, agent: str = "ag") -> dict:
        r = client.post(f"/v1/executions/{execution}/cost", json={"account_id": "loop", "agent_id": agent, "cost_usd": cost})
        assert r.status_code == 200, r.text
        return r.json()

    at = verdict("run-1", "0.03")  # exactly 3 x the $0.01 median: continues
    assert (at["verdict"], at["baseline"], at["threshold"], at["history_size"]) == ("continue", "0.01000000", "0.03000000", 20)
    assert verdict("run-1", "0.029")["verdict"] == "continue"
    killed = verdict("run-1", "0.030001")
    assert killed["verdict"] == "kill" and killed["killed_at"]
    assert (killed["cost"], killed["baseline"], killed["threshold"], killed["multiplier"]) == (
        "0.03000100", "0.01000000", "0.030000000000", "3")
    again = verdict("run-1", "0.05")  # reported again: the recorded kill, its first evidence
    assert (again["verdict"], again["killed_at"], again["cost"]) == ("kill", killed["killed_at"], "0.03000100")
    assert verdict("run-2", "9.99", agent="new-agent")["verdict"] == "continue"  # no history yet: no norm

    listed = client.get("/v1/accounts/loop/kills").json()["kills"]
    assert [(k["execution_id"], k["baseline"], k["history_size"]) for k in listed] == [("run-1", "0.01000000", 20)]
    assert "run-1" in client.get("/accounts/loop/billing").text
    deliver(api.database_url, smtp_sink, tmp_path)
    assert subjects(smtp_sink.messages()) == ["We stopped a runaway execution of agent ag"]


def test_a_cost_report_names_the_bad_field_and_an_unknown_account_is_404(api):
    key = api.platform("p1")
    client = api.client(key)
    api.account("loop", "payg", platform="p1")
    r = client.post("/v1/executions/x/cost", json={"account_id": "loop", "agent_id": "a", "cost_usd": "-1"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "cost_usd"
    r = client.post("/v1/executions/x/cost", json={"account_id": "ghost", "agent_id": "a", "cost_usd": "1"})
    assert r.status_code == 404


# ---- fallbacks ---------------------------------------------------------------------------------------------
def test_a_fallback_to_a_dearer_model_is_noticed_once_per_agent_and_day(api, smtp_sink, tmp_path):
    key = api.platform("p1")
    api.account("fb", "payg", platform="p1", email="fb@example.com")
    client = api.client(key)
    day1, day2 = NOW - timedelta(days=1), NOW - timedelta(hours=1)
    dearer = dict(model="claude-sonnet", requested_model="claude-haiku")
    post(client, [event("fb", 1, day1, agent_id="a1", **dearer)], api=api)
    post(client, [event("fb", 2, day1 + timedelta(minutes=5), agent_id="a1", **dearer),  # same agent, same day
                  event("fb", 3, day1, agent_id="a2", model="gpt-4o-mini", requested_model="claude-haiku"),  # cheaper
                  event("fb", 4, day1, agent_id="a3", model="claude-haiku", requested_model="claude-haiku")],  # same
         api=api)
    post(client, [event("fb", 5, day2, agent_id="a1", **dearer)], api=api)  # the next day
    keys = [k for (k,) in rows(api, "SELECT dedupe_key FROM notifications WHERE kind = 'model_fallback' ORDER BY id")]
    assert keys == ["fallback:fb:a1:2026-10-24", "fallback:fb:a1:2026-10-25"]
    deliver(api.database_url, smtp_sink, tmp_path)
    mail = smtp_sink.messages()
    assert subjects(mail) == ["Agent a1 fell back to a more expensive model"] * 2
    assert "asked for claude-haiku but ran on claude-sonnet" in mail[0].part("plain")


def test_requested_model_must_be_a_catalog_model(api):
    key = api.platform("p1")
    api.account("fb", "payg", platform="p1")
    r = api.client(key).post("/v1/executions", json=event("fb", 1, NOW, requested_model="gpt-9"))
    assert r.json()["results"][0]["errors"] == [{"field": "requested_model", "reason": "unknown model 'gpt-9'"}]


def test_requested_model_is_stored_by_both_ways_of_the_file_import(api):
    from tests.factories import ingest

    api.account("fb", "payg")
    first = event("fb", 1, NOW - timedelta(hours=1), model="claude-sonnet", requested_model="claude-haiku")
    assert ingest(api.database_url, [first], now=NOW).accepted == 1  # fresh ids: COPY straight into executions
    again = [first, event("fb", 2, NOW - timedelta(hours=1), requested_model="gpt-4o-mini"), event("fb", 3, NOW)]
    assert ingest(api.database_url, again, now=NOW).accepted == 2  # a known id: staging and merge
    assert rows(api, "SELECT event_id, requested_model FROM executions ORDER BY event_id") == [
        ("fb-1", "claude-haiku"), ("fb-2", "gpt-4o-mini"), ("fb-3", None)]
