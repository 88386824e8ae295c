"""The API's in-memory entitlement view (services/entitlement_view.py): what it holds, for how long,
for whom, and its refresher thread. That its answers equal Postgres's at every boundary is proven by
tests/api/test_entitlements.py, which runs each test through the view too."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from activities import pricing
from api.app import create_app
from billing.periods import Period
from models.db import get_engine
from repositories import platforms, usage
from services.accounts import change_terms
from services.entitlement_view import EntitlementView
from tests.api.conftest import NOW, no_temporal, serving
from tests.factories import OCT_START, event

OCTOBER = Period(2026, 10)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def view(api):
    """The session API's service with a view the test refreshes itself (no thread), on a clock it moves."""
    service = api.app.state.service
    ticks = Ticks()
    service.view = EntitlementView(service.engine, 0.25, service.clock, warm=service._warm_segments,
                                   monotonic=ticks)
    service.view.ticks = ticks
    try:
        yield service.view
    finally:
        service.view = None


def ask(api, key: str, account_id: str):
    return api.client(key).get(f"/v1/accounts/{account_id}/entitlement", params={"model": "claude-haiku"})


def post(api, key: str, account_id: str, first: int, n: int = 1) -> None:
    docs = [event(account_id, i, OCT_START + timedelta(days=20, seconds=i)) for i in range(first, first + n)]
    assert api.client(key).post("/v1/executions", json={"executions": docs}).json()["accepted"] == n


def test_a_held_account_is_answered_from_memory_without_reading_postgres(api, view, monkeypatch):
    key = api.platform("p")
    api.account("f", "free", platform="p")
    post(api, key, "f", 0, 3)
    assert ask(api, key, "f").json()["used"] == 3  # read from Postgres, kept
    assert len(view) == 1 and view.answered == 0

    def no_reads(*args, **kwargs):
        raise AssertionError("the check read Postgres")

    monkeypatch.setattr(usage, "account_with_counters", no_reads)
    monkeypatch.setattr(pricing, "terms_segments", no_reads)
    for _ in range(3):
        assert ask(api, key, "f").json()["used"] == 3
    assert view.answered == 3


def test_what_was_recorded_since_shows_after_the_next_refresh_not_before(api, view):
    key = api.platform("p")
    api.account("f", "free", platform="p")
    post(api, key, "f", 0, 99)
    ask(api, key, "f")
    post(api, key, "f", 99)  # the 100th
    assert ask(api, key, "f").json()["allowed"] is True  # the view's last read: 99
    assert view.refresh() == 1
    e = ask(api, key, "f").json()
    assert (e["allowed"], e["reason"], e["used"]) == (False, "free_cap_reached", 100)


def test_a_plan_change_and_a_pause_show_after_the_next_refresh(api, view, monkeypatch):
    key = api.platform("p")
    api.account("f", "free", platform="p")
    post(api, key, "f", 0, 100)
    assert ask(api, key, "f").json()["reason"] == "free_cap_reached"
    with get_engine(api.database_url).begin() as conn:
        change_terms(conn, account_id="f", effective_from=datetime(2026, 10, 1, tzinfo=timezone.utc),
                     reason="upgrade", plan="pro", overage_opt_in=False, now=NOW)
    assert ask(api, key, "f").json()["plan"] == "free"  # not refreshed yet
    view.refresh()  # reads the new terms segments too: the check itself reads nothing

    def no_reads(*args, **kwargs):
        raise AssertionError("the check read Postgres")

    with monkeypatch.context() as m:
        m.setattr(usage, "account_with_counters", no_reads)
        m.setattr(pricing, "terms_segments", no_reads)
        e = ask(api, key, "f").json()
    assert (e["plan"], e["allowed"]) == ("pro", True)
    with get_engine(api.database_url).begin() as conn:
        conn.exec_driver_sql("UPDATE accounts SET status = 'paused' WHERE id = 'f'")
    view.refresh()
    assert ask(api, key, "f").json()["reason"] == "account_paused"
    assert view.answered == 3


def test_another_platforms_key_never_sees_a_held_account(api, view):
    key = api.platform("p")
    other = api.platform("q")
    api.account("f", "free", platform="p")
    assert ask(api, key, "f").status_code == 200
    assert len(view) == 1
    resp = ask(api, other, "f")
    assert resp.status_code == 404 and "no account 'f'" in resp.text


def test_an_entry_older_than_max_age_is_read_from_postgres_again(api, view, monkeypatch):
    """The refresher stuck (or Postgres away for it): after max_age the check reads Postgres itself
    and sees what was recorded, instead of answering from an ever older read."""
    key = api.platform("p")
    api.account("f", "free", platform="p")
    ask(api, key, "f")
    post(api, key, "f", 0, 100)

    class Away:  # the refresher's connection fails; the checks' own pool still works
        def connect(self):
            raise RuntimeError("Postgres away")

    monkeypatch.setattr(view, "engine", Away())
    with pytest.raises(RuntimeError):
        view.refresh()
    view.ticks.t += view.max_age - 0.01
    assert ask(api, key, "f").json()["used"] == 0  # still the view's (stale but within max_age)
    view.ticks.t += 0.02
    e = ask(api, key, "f").json()
    assert (e["used"], e["reason"]) == (100, "free_cap_reached")
    assert view.answered == 1


def test_accounts_not_checked_for_keep_seconds_and_deleted_ones_leave_the_view(api, view):
    key = api.platform("p")
    for acct in ("a", "b", "c"):
        api.account(acct, "free", platform="p")
        ask(api, key, acct)
    assert len(view) == 3
    view.ticks.t += view.keep - 1
    ask(api, key, "a")
    with get_engine(api.database_url).begin() as conn:
        for table in ("account_terms", "accounts"):
            conn.exec_driver_sql(f"DELETE FROM {table} WHERE {'account_id' if table == 'account_terms' else 'id'} = 'a'")
    view.ticks.t += 2  # b and c: last checked keep + 1 s ago
    assert view.refresh() == 0  # a is gone, b and c were dropped before the read
    assert len(view) == 0


def test_a_slower_older_read_never_replaces_a_newer_one(api, view):
    key = api.platform("p")
    api.account("f", "free", platform="p")
    ask(api, key, "f")
    with get_engine(api.database_url).connect() as conn:
        pid = platforms.platform_by_name(conn, "p").id
        account, counters = usage.account_with_counters(conn, "f", pid, OCTOBER, NOW)
    newer = view._entries["f"].read_at
    view.put(account, [], OCTOBER, newer - 1)
    assert view._entries["f"].read_at == newer
    view.put(account, counters, OCTOBER, newer + 1)
    assert view._entries["f"].read_at == newer + 1


def test_a_full_view_keeps_what_it_holds_and_reads_the_rest_from_postgres(api, view):
    key = api.platform("p")
    view.capacity = 1
    for acct in ("a", "b"):
        api.account(acct, "free", platform="p")
        assert ask(api, key, acct).status_code == 200
    assert list(view._entries) == ["a"]
    assert ask(api, key, "b").json()["used"] == 0 and view.answered == 0


def test_the_refresher_shows_a_recorded_batch_within_a_few_intervals(api):
    """Served as `tally api` serves it (the refresher started with the app, every
    TALLY_API_ENTITLEMENT_VIEW_MS, here 50 ms): a batch recorded after the account's first check is
    seen a few intervals later by checks answered from memory."""
    app = create_app(api.settings, clock=api.clock, temporal=no_temporal, entitlement_view_ms=50)
    service = app.state.service
    key = api.platform("p")
    api.account("f", "free", platform="p")
    try:
        with serving(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=30,
                                                               headers={"Authorization": f"Bearer {key}"}) as c:
            ask_ = lambda: c.get("/v1/accounts/f/entitlement", params={"model": "claude-haiku"})  # noqa: E731
            assert ask_().json()["used"] == 0
            docs = [event("f", i, OCT_START + timedelta(days=20, seconds=i)) for i in range(7)]
            assert c.post("/v1/executions", json={"executions": docs}).json()["accepted"] == 7
            deadline = time.monotonic() + 10
            while (resp := ask_()).json()["used"] != 7:
                assert time.monotonic() < deadline, "the view never showed the batch"
                time.sleep(0.02)
            assert resp.headers["Server-Timing"].endswith("desc=view")
            assert service.view.refreshes >= 1 and service.view.answered >= 1
    finally:
        from services.alerts import evaluator

        evaluator(service.engine, service.catalog).queue.settle()
        service.engine.dispose()


def test_a_snapshot_row_makes_the_same_snapshot_as_the_checks_own_read(api):
    """The view's folded text (repositories.usage.snapshot_rows) and the check's own query read the same
    account: credits, pause, platform, instants to the microsecond, every counter."""
    key = api.platform("p")
    api.account("g", "payg", platform="p", pricing="tokens")
    post(api, key, "g", 0, 5)
    docs = [{**event("g", i, OCT_START + timedelta(days=3, seconds=i), model="gpt-4o"), "byok": True}
            for i in range(5, 8)]
    assert api.client(key).post("/v1/executions", json={"executions": docs}).json()["accepted"] == 3
    api.account("lonely", "free")  # no platform, no counters
    with get_engine(api.database_url).begin() as conn:
        conn.exec_driver_sql("UPDATE accounts SET status = 'paused' WHERE id = 'lonely'")
    with get_engine(api.database_url).connect() as conn:
        pid = platforms.platform_by_name(conn, "p").id
        rows = dict(usage.snapshot_rows(conn, ["g", "lonely", "nobody"], OCTOBER, NOW))
        assert set(rows) == {"g", "lonely"}
        for account_id, platform_id in (("g", pid), ("lonely", None)):
            direct, counters = usage.account_with_counters(conn, account_id, platform_id, OCTOBER, NOW) \
                if platform_id else (None, None)
            account, folded = usage.snapshot_from_row((account_id, rows[account_id]))
            if direct is not None:
                assert account == direct
                assert sorted(folded, key=repr) == sorted(counters, key=repr) and len(folded) == 2
            else:
                assert (account.platform_id, account.status, folded) == (None, "paused", [])


def rated_in_the_background(api, view, calls: list | None = None):
    """Account "over": past its quota with overage on several models, so its month to date depends on the
    time order of its executions; the view rates it in the background here, in this process (recording
    each call's accounts in ``calls``). Returns (the platform's key, the close's total of it now)."""
    from billing.catalog import load_catalog
    from services.entitlement_view import exact_months
    from tests.factories import events, ingest

    service = api.app.state.service

    async def rate(account_ids, period):
        if calls is not None:
            calls.append(list(account_ids))
        return exact_months(service.engine, service.catalog, account_ids, period)

    view._rate_exact = rate
    key = api.platform("p")
    api.account("over", "pro", platform="p", overage=True)
    docs = list(events("over", 5_100, step=timedelta(seconds=47), models=("claude-haiku", "gpt-4o", "claude-sonnet")))
    assert ingest(api.database_url, docs, now=NOW).accepted == 5_100

    def close_total() -> str:
        with get_engine(api.database_url).connect() as conn:
            return str(pricing.rate_accounts(conn, load_catalog(), OCTOBER, ["over"])["over"].total)

    return key, close_total


def test_an_account_rated_from_the_executions_table_is_answered_from_its_background_rating(api, view):
    """Past its quota with overage on several models, an account's charges depend on the time order of its
    executions: the view answers it from a rating of the executions table done in the background (here
    in this process; `tally api` does it in a process of its own), re-done after new usage, with the
    decision from the fresh counters; without a rating younger than max_age the check reads Postgres."""
    import asyncio

    from services.entitlement_view import EXACT_MAX_AGE

    key, close_total = rated_in_the_background(api, view)
    first = ask(api, key, "over")
    assert first.headers["Server-Timing"].endswith("desc=postgres") and first.json()["used"] == 5_100
    assert ask(api, key, "over").headers["Server-Timing"].endswith("desc=view")  # the check's own exact rating
    post(api, key, "over", 5_100, 40)
    view.refresh()
    stale = ask(api, key, "over").json()  # fresh counters, charges of the last rating
    assert stale["used"] == 5_140 and stale["month_to_date_charges"] == first.json()["month_to_date_charges"]
    view.ticks.t += 3  # past EXACT_EVERY
    assert asyncio.run(view.rate_exact_due(OCTOBER)) == 1
    e = ask(api, key, "over")
    assert e.headers["Server-Timing"].endswith("desc=view")
    assert (e.json()["used"], e.json()["month_to_date_charges"]) == (5_140, close_total())
    assert e.json()["month_to_date_charges"] != first.json()["month_to_date_charges"]
    view.ticks.t += EXACT_MAX_AGE + 0.1  # no rating since: the check reads Postgres again
    view.refresh()
    assert ask(api, key, "over").headers["Server-Timing"].endswith("desc=postgres")


def test_the_exact_rater_of_tally_api_rates_in_a_process_of_its_own_as_the_close_does(api):
    import asyncio

    from services.entitlement_view import ExactRater, exact_months

    key = api.platform("p")
    api.account("g", "payg", platform="p")
    api.account("later", "pro", billing_start=datetime(2027, 1, 1, tzinfo=timezone.utc))
    post(api, key, "g", 0, 12)
    rater = ExactRater(api.database_url, None, nice=0)
    try:
        rated = asyncio.run(rater(["g", "later"], OCTOBER))
    finally:
        rater.close()
    service = api.app.state.service
    assert rated == exact_months(service.engine, service.catalog, ["g", "later"], OCTOBER)
    assert set(rated) == {"g"} and rated["g"][1] > 0  # "later" is not billed in October


def test_the_exact_rater_starts_a_new_process_when_its_process_dies(api):
    import asyncio
    import os
    import signal
    from concurrent.futures.process import BrokenProcessPool

    from services.entitlement_view import ExactRater

    api.account("g", "payg")
    rater = ExactRater(api.database_url, None, nice=0)
    try:
        assert set(asyncio.run(rater(["g"], OCTOBER))) == {"g"}
        for pid in list(rater._pool._processes):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            asyncio.run(rater(["g"], OCTOBER))
        assert set(asyncio.run(rater(["g"], OCTOBER))) == {"g"}  # the view's next refresh rates again
    finally:
        rater.close()


def test_a_slow_background_rating_does_not_hold_up_the_refreshes(api, view):
    """The exact rating of many accounts takes seconds; the refreshes of the counters go on meanwhile
    (one rating in flight at a time)."""
    import asyncio

    import psycopg

    from models.db import libpq_url

    key = api.platform("p")
    api.account("f", "free", platform="p")
    ask(api, key, "f")
    calls = []

    async def slow(account_ids, period):
        calls.append(account_ids)
        await asyncio.sleep(3)
        return {}

    view._rate_exact = slow
    view._want_exact.add("f")

    async def refresh_twice() -> float:
        async with await psycopg.AsyncConnection.connect(libpq_url(api.database_url), autocommit=True) as conn:
            started = time.monotonic()
            await view.refresh_async(conn)
            await view.refresh_async(conn)
            took = time.monotonic() - started
            view._rating.cancel()
            return took

    took = asyncio.run(refresh_twice())
    assert took < 2.5 and view.refreshes == 2 and calls == [["f"]]


def test_an_exact_rated_account_is_rated_again_only_when_its_row_in_the_view_changed(api, view):
    """A background rating of an account whose counters, row, credit facts and pause read the same as when
    its last rating began would give the same month to date: it is not done, and the last rating counts
    as of that read (so it stays in use past EXACT_MAX_AGE while nothing changes). New usage rates it again."""
    import asyncio

    from services.entitlement_view import EXACT_MAX_AGE

    calls = []
    key, close_total = rated_in_the_background(api, view, calls)
    assert ask(api, key, "over").headers["Server-Timing"].endswith("desc=postgres")  # seeds its exact rating
    view.refresh()
    view.ticks.t += 3
    assert asyncio.run(view.rate_exact_due(OCTOBER)) == 1 and len(calls) == 1  # its first background rating
    for _ in range(3):
        view.ticks.t += 3
        view.refresh()
        assert asyncio.run(view.rate_exact_due(OCTOBER)) == 0  # nothing changed: not rated again
    assert len(calls) == 1 and view.exact_unchanged == 3
    view.ticks.t += EXACT_MAX_AGE + 1
    view.refresh()
    asyncio.run(view.rate_exact_due(OCTOBER))
    held = ask(api, key, "over")
    assert held.headers["Server-Timing"].endswith("desc=view") and held.json()["month_to_date_charges"] == close_total()
    post(api, key, "over", 5_100, 40)
    view.refresh()
    view.ticks.t += 3
    assert asyncio.run(view.rate_exact_due(OCTOBER)) == 1 and len(calls) == 2
    fresh = ask(api, key, "over")
    assert fresh.headers["Server-Timing"].endswith("desc=view")
    assert (fresh.json()["used"], fresh.json()["month_to_date_charges"]) == (5_140, close_total())
    assert fresh.json()["month_to_date_charges"] != held.json()["month_to_date_charges"]


def test_background_ratings_keep_their_process_busy_at_most_their_share_of_the_time(api, view):
    """A rating that took d seconds is followed by the next no sooner than d * (1 / EXACT_SHARE - 1) later,
    and a rating is used for 1.5 times the longest spacing of two ratings' starts then."""
    import asyncio
    from decimal import Decimal

    from services.entitlement_view import EXACT_EVERY, EXACT_MAX_AGE, EXACT_SHARE

    key = api.platform("p")
    api.account("f", "free", platform="p")
    ask(api, key, "f")  # held (read by the check itself: its row is not the refresher's, so it is always due)
    took = 4.0

    async def slow(account_ids, period):
        view.ticks.t += took
        return {a: (100, Decimal("0")) for a in account_ids}

    view._rate_exact = slow
    view._want_exact.add("f")
    assert asyncio.run(view.rate_exact_due(OCTOBER)) == 1
    rest = took * (1 / EXACT_SHARE - 1)
    assert rest > EXACT_EVERY
    view.ticks.t += rest - 0.1
    assert asyncio.run(view.rate_exact_due(OCTOBER)) == 0  # within the rating's share
    assert view.exact_month("f", OCTOBER) == (100, Decimal("0"))  # older than EXACT_MAX_AGE, still used
    assert view.exact_max_age() == 1.5 * (2 * took + rest) > EXACT_MAX_AGE
    view.ticks.t += 0.2
    assert asyncio.run(view.rate_exact_due(OCTOBER)) == 1
    assert view.exact_ratings == 2
