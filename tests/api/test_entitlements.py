"""GET /v1/accounts/{id}/entitlement at every boundary, and month-to-date charges equal to what the
close bills (the close's rater on the executions table, and the invoice preview).

Every test runs twice: with each check read from Postgres, and with each check answered by the API's
in-memory entitlement view (services/entitlement_view.py) refreshed just before, which must answer
exactly what Postgres answers."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from activities import pricing
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from repositories import platforms, usage
from services.accounts import change_terms
from services.invoices import invoice_preview
from services.entitlement_view import EntitlementView, exact_months
from services.metering import MeteringService
from tests.api.conftest import NOW
from tests.factories import OCT_START, event, events, ingest

OCTOBER = Period(2026, 10)


def load(api, account_id: str, n: int, *, first: int = 0, step=timedelta(seconds=20), models=("claude-haiku",),
         **extra) -> None:
    """Record ``n`` executions through the bulk path (what a big month looks like), in October."""
    docs = [event(account_id, i, OCT_START + step * i, models[i % len(models)], **extra)
            for i in range(first, first + n)]
    report = ingest(api.database_url, docs, now=NOW)
    assert report.accepted == n, report


def post(api, key: str, account_id: str, n: int, first: int, **extra) -> None:
    docs = [event(account_id, i, OCT_START + timedelta(days=20, seconds=i), **extra) for i in range(first, first + n)]
    body = api.client(key).post("/v1/executions", json={"executions": docs}).json()
    assert body["accepted"] == n, body


def in_process_rater(service):
    """The view's background rating of accounts rated from the executions table, here in this process."""
    async def rate(account_ids, period):
        return exact_months(service.engine, service.catalog, account_ids, period)
    return rate


def refresh(view, service) -> None:
    """What the view's task does every interval: read the held accounts, then rate those due."""
    view.refresh()
    asyncio.run(view.rate_exact_due(Period.of(service.clock())))


@pytest.fixture(params=["from Postgres", "from the view"])
def api(request, api):
    service = api.app.state.service
    if request.param == "from the view":  # refreshed by check() below, not by a task
        service.view = EntitlementView(service.engine, 3600, service.clock, warm=service._warm_segments,
                                       rate_exact=in_process_rater(service))
    try:
        yield api
    finally:
        service.view = None


def _ask(api, key: str, account_id: str, model: str, sandbox: bool) -> dict:
    resp = api.client(key).get(f"/v1/accounts/{account_id}/entitlement",
                               params={"model": model, "sandbox": str(sandbox).lower()})
    assert resp.status_code == 200, resp.text
    return resp.json()


def check(api, key: str, account_id: str, model: str = "claude-haiku", sandbox: bool = False) -> dict:
    """The check; with a view: refreshed first (what its thread reads every 250 ms), the view holds the
    account (after its first check) and answers exactly what Postgres answers."""
    service = api.app.state.service
    view = service.view
    if view is None:
        return _ask(api, key, account_id, model, sandbox)
    refresh(view, service)
    _ask(api, key, account_id, model, sandbox)  # the first check of an account reads Postgres; the view keeps it
    refresh(view, service)
    answered = view.answered
    answer = _ask(api, key, account_id, model, sandbox)
    assert view.answered == answered + 1, "the check was not answered from the view"
    service.view = None
    try:
        assert answer == _ask(api, key, account_id, model, sandbox)  # Postgres's answer
    finally:
        service.view = view
    return answer


def close_total(api, account_id: str) -> Decimal:
    """What the close's rater bills for October with everything recorded."""
    with get_engine(api.database_url).begin() as conn:
        return pricing.rate_accounts(conn, load_catalog(), OCTOBER, [account_id])[account_id].total


def test_free_plan_allows_the_100th_and_refuses_the_101st(api):
    key = api.platform("p")
    api.account("f", "free", platform="p")
    load(api, "f", 99)
    e = check(api, key, "f")
    assert (e["allowed"], e["reason"], e["used"], e["included"], e["remaining_included"]) == (True, "ok", 99, 100, 1)
    post(api, key, "f", 1, first=99)  # the 100th
    e = check(api, key, "f")
    assert (e["allowed"], e["reason"], e["used"], e["remaining_included"]) == (False, "free_cap_reached", 100, 0)
    assert e["plan"] == "free" and e["month_to_date_charges"] == "0.00" and e["period"] == "2026-10"
    sandbox = check(api, key, "f", sandbox=True)
    assert (sandbox["allowed"], sandbox["reason"]) == (True, "ok")


def test_sandbox_tries_do_not_count_against_the_quota(api):
    key = api.platform("p")
    api.account("f", "free", platform="p")
    load(api, "f", 50, sandbox=True)
    load(api, "f", 99, first=50)
    e = check(api, key, "f")
    assert (e["allowed"], e["used"]) == (True, 99)


def test_pro_without_overage_refuses_the_5001st_and_with_overage_allows_it(api):
    key = api.platform("p")
    api.account("pro", "pro", platform="p")
    api.account("pro-over", "pro", platform="p", overage=True)
    for acct in ("pro", "pro-over"):
        load(api, acct, 4_999)
        e = check(api, key, acct)
        assert (e["allowed"], e["used"], e["remaining_included"]) == (True, 4_999, 1)
        post(api, key, acct, 1, first=4_999)  # the 5,000th
    blocked = check(api, key, "pro")
    assert (blocked["allowed"], blocked["reason"], blocked["used"]) == (False, "plan_cap_reached_no_overage", 5_000)
    assert blocked["month_to_date_charges"] == "29.00"
    over = check(api, key, "pro-over")
    assert (over["allowed"], over["reason"], over["overage_opt_in"]) == (True, "ok", True)
    post(api, key, "pro-over", 3, first=5_000)
    assert check(api, key, "pro-over")["month_to_date_charges"] == "29.02"  # 3 x $0.005 = $0.015 -> $0.02
    assert close_total(api, "pro-over") == Decimal("29.02")


def test_team_quota_scales_with_seats(api):
    key = api.platform("p")
    api.account("team", "team", platform="p", seats=2)
    load(api, "team", 49_999, step=timedelta(seconds=30))
    e = check(api, key, "team")
    assert (e["allowed"], e["included"], e["remaining_included"]) == (True, 50_000, 1)
    assert e["month_to_date_charges"] == "158.00"
    post(api, key, "team", 1, first=49_999)
    e = check(api, key, "team")
    assert (e["allowed"], e["reason"], e["used"]) == (False, "plan_cap_reached_no_overage", 50_000)


def test_paused_accounts_are_refused_even_for_sandbox_tries(api):
    key = api.platform("p")
    api.account("p1", "payg", platform="p")
    with get_engine(api.database_url).begin() as conn:
        conn.exec_driver_sql("UPDATE accounts SET status = 'paused' WHERE id = 'p1'")
    for sandbox in (False, True):
        e = check(api, key, "p1", sandbox=sandbox)
        assert (e["allowed"], e["reason"]) == (False, "account_paused")


def test_payg_is_always_allowed_and_its_charge_capped(api):
    key = api.platform("p")
    api.account("g", "payg", platform="p")
    load(api, "g", 6_000, models=("claude-haiku", "gpt-4o"))
    e = check(api, key, "g")
    assert (e["allowed"], e["included"], e["used"]) == (True, 0, 6_000)
    assert e["month_to_date_charges"] == "50.00" == str(close_total(api, "g"))


def test_unknown_model_is_refused(api):
    key = api.platform("p")
    api.account("g", "payg", platform="p")
    e = check(api, key, "g", model="gpt-9")
    assert (e["allowed"], e["reason"]) == (False, "unknown_model")


def test_executions_past_a_block_are_counted_but_not_billed(api):
    key = api.platform("p")
    api.account("f", "free", platform="p")
    load(api, "f", 103)  # recorded beyond the block anyway (a race)
    e = check(api, key, "f")
    assert (e["allowed"], e["used"], e["remaining_included"], e["month_to_date_charges"]) == (False, 103, 0, "0.00")


SCENARIOS = [
    # (plan, seats, overage, pricing, executions, models, byok every nth, answered from the counters)
    ("pro", 1, True, "executions", 5_100, ("claude-haiku", "gpt-4o", "claude-sonnet"), 0, False),  # time order
    ("pro", 1, True, "executions", 5_100, ("gpt-4o",), 3, True),
    ("pro", 1, False, "executions", 5_100, ("claude-haiku", "gpt-4o"), 0, True),
    ("payg", 1, False, "executions", 777, ("claude-haiku", "gpt-4o-mini"), 4, True),
    ("payg", 1, False, "tokens", 900, ("claude-sonnet", "gpt-4o"), 5, True),
    ("pro", 1, True, "tokens", 5_100, ("claude-haiku", "claude-opus"), 2, True),
    ("pro", 1, False, "tokens", 5_100, ("claude-haiku", "claude-opus"), 2, False),  # blocked ones pay no tokens
    ("free", 1, False, "executions", 60, ("claude-haiku",), 0, True),
    ("team", 3, True, "executions", 1_000, ("gpt-4o",), 0, True),
]


@pytest.mark.parametrize("plan,seats,overage,pricing_mode,n,models,byok_every,from_counters", SCENARIOS)
def test_month_to_date_charges_equal_the_close_and_the_preview(api, plan, seats, overage, pricing_mode, n, models,
                                                               byok_every, from_counters):
    key = api.platform("p")
    api.account("acct", plan, platform="p", seats=seats, overage=overage, pricing=pricing_mode)
    docs = []
    for i, doc in enumerate(events("acct", n, step=timedelta(seconds=47), models=models)):
        doc["byok"] = bool(byok_every) and i % byok_every == 0
        doc["sandbox"] = i % 97 == 0
        docs.append(doc)
    docs.reverse()  # arrival order is not time order
    assert ingest(api.database_url, docs, now=NOW).accepted == n
    e = check(api, key, "acct")
    expected = close_total(api, "acct")
    assert Decimal(e["month_to_date_charges"]) == expected
    assert invoice_preview(get_engine(api.database_url), "acct", NOW).total == str(expected)
    service = MeteringService(get_engine(api.database_url), load_catalog(), clock=lambda: NOW)
    with get_engine(api.database_url).connect() as conn:
        account, counters = usage.account_with_counters(conn, "acct", platforms.platform_by_name(conn, "p").id,
                                                           OCTOBER)
        fast = service.month_to_date(conn, account, counters, NOW)
        exact = service.month_to_date(conn, account, counters, NOW, exact=True)
    assert exact.exact and fast.charges == exact.charges == expected
    assert fast.exact is not from_counters
    assert fast.used == exact.used == e["used"]


def test_a_mid_month_plan_change_is_rated_by_segments_like_the_close(api):
    key = api.platform("p")
    api.account("up", "free", platform="p")
    load(api, "up", 80)
    with get_engine(api.database_url).begin() as conn:
        change_terms(conn, account_id="up", effective_from=datetime(2026, 10, 16, tzinfo=timezone.utc),
                     reason="upgrade", plan="pro", overage_opt_in=False, now=NOW)
    e = check(api, key, "up")
    assert e["plan"] == "pro" and e["allowed"]
    assert Decimal(e["month_to_date_charges"]) == close_total(api, "up")
    assert e["included"] < 5_000  # the quota is pooled and prorated like the close's


def test_a_check_while_a_batch_is_uncommitted_answers_at_once_from_what_is_committed(api):
    """The read path never waits behind a batch: a batch holding the 100th execution, its rows and
    counter written but not committed (the counter row locked), does not hold the check up, which
    answers from what is committed; once the batch commits, the next check counts it."""
    import psycopg
    from concurrent.futures import ThreadPoolExecutor

    from activities.ingest import content_hash, copy_fresh, known_models, parse_execution
    from models.db import libpq_url

    key = api.platform("p")
    api.account("f", "free", platform="p")
    load(api, "f", 99)
    row = parse_execution(event("f", 99, OCT_START + timedelta(days=20)), known_models(load_catalog()), NOW)
    with get_engine(api.database_url).connect() as conn:
        platform_id = platforms.platform_by_name(conn, "p").id
    with psycopg.connect(libpq_url(api.database_url)) as batch, ThreadPoolExecutor(1) as pool:
        with batch.cursor() as cur:
            copy_fresh(cur, [row], [(platform_id, row[0], content_hash(row))])
        during = pool.submit(check, api, key, "f")
        try:
            e = during.result(timeout=20)
        finally:
            batch.commit()  # whatever happened, let a waiting check go
        assert (e["allowed"], e["used"], e["remaining_included"]) == (True, 99, 1)
    e = check(api, key, "f")
    assert (e["allowed"], e["reason"], e["used"]) == (False, "free_cap_reached", 100)
