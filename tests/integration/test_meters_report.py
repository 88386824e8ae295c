"""Usage reported to Stripe meters, end to end: real Postgres, the time-skipping Temporal server with a real
worker, and the Stripe emulator over HTTP. Every test counts exactly what the emulator holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError

from billing.meters import HOUR, format_hour, identifier
from models.db import get_engine
from repositories.stripe_requests import stripe_requests_for
from services.errors import InvalidInput
from services.meters import meters_status, reportable_hour
from tests.integration.meters_env import MetersEnv, recent_hour
from tests.integration.own_temporal import own_temporal_env  # noqa: F401 - this module's own server

UTC = timezone.utc
HAIKU_IN, HAIKU_OUT = "tally_input_tokens__claude_haiku", "tally_output_tokens__claude_haiku"


@pytest.fixture
def meters_env(settings, emulator, temporal_env) -> MetersEnv:
    m = MetersEnv(settings, emulator, temporal_env)
    m.apply_meters()
    return m


def by_event(events: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e["event_name"]] = out.get(e["event_name"], 0) + e["value"]
    return out


async def test_an_hour_is_one_event_per_account_and_meter_with_usage(meters_env):
    m, h = meters_env, recent_hour(2)
    m.account("a1")
    m.account("a2", "payg")
    a1 = m.use("a1", h, 3) + m.use("a1", h, 2, model="gpt-4o")
    m.use("a1", h, 1, byok=True)  # counts as an execution, carries no token charge
    m.use("a1", h, 1, sandbox=True)  # a sandbox try: nothing to report
    a2 = m.use("a2", h, 1)
    m.use("a2", h + HOUR, 4)  # the next hour: not this report's

    result = await m.report(h)

    assert (result.state, result.accounts, result.events, result.failed_count) == ("reported", 2, 8, 0)
    assert result.customers_created == 2 and len(m.customer_posts()) == 2
    haiku = [d for d in a1 if d["model"] == "claude-haiku"]
    gpt = [d for d in a1 if d["model"] == "gpt-4o"]
    assert by_event(m.events("a1")) == {
        "tally_executions": 6,
        HAIKU_IN: sum(d["input_tokens"] for d in haiku), HAIKU_OUT: sum(d["output_tokens"] for d in haiku),
        "tally_input_tokens__gpt_4o": sum(d["input_tokens"] for d in gpt),
        "tally_output_tokens__gpt_4o": sum(d["output_tokens"] for d in gpt)}
    assert by_event(m.events("a2")) == {"tally_executions": 1, HAIKU_IN: a2[0]["input_tokens"],
                                        HAIKU_OUT: a2[0]["output_tokens"]}
    assert {e["timestamp"] for e in m.events()} == {int(h.timestamp())}  # stamped with the hour's start
    assert len(m.meter_posts()) == 8  # one Stripe call per account, meter and hour with usage
    assert result.stripe_calls == 8 + 2


async def test_rerunning_an_hour_sends_nothing(meters_env):
    m, h = meters_env, recent_hour(2)
    m.account("a1")
    m.use("a1", h, 2)
    await m.report(h)
    posts = len(m.meter_posts())

    again = await m.report(h)

    assert (again.state, again.failed_count, again.events, again.already, again.stripe_calls) == (
        "reported", 0, 0, 0, 0)
    assert len(m.meter_posts()) == posts == 3 and len(m.events()) == 3


async def test_a_duplicate_identifier_is_read_as_already_reported_and_counted_once(meters_env):
    """Stripe already holds revision 1 of a1's executions (say Tally's record of it was lost): Stripe
    refuses the identifier, Tally records it as reported and moves on."""
    from activities.push import ensure_customer
    from gateways.stripe import StripeGateway

    m, h = meters_env, recent_hour(2)
    m.account("a1")
    m.use("a1", h, 2)
    customer = ensure_customer(m.engine, StripeGateway(m.settings), lambda: datetime.now(UTC), "a1", None)
    ident = identifier("a1", m.meter_id("executions"), h, 1)
    m.client.v1.billing.meter_events.create(params={
        "event_name": "tally_executions", "identifier": ident, "timestamp": int(h.timestamp()),
        "payload": {"stripe_customer_id": customer, "value": "2"}})

    result = await m.report(h)

    assert (result.events, result.already, result.failed_count) == (2, 1, 0)
    assert [e["identifier"] for e in m.events() if e["event_name"] == "tally_executions"] == [ident]
    rejected = [r for r in m.meter_posts() if r["status"] == 400]
    assert len(rejected) == 1  # asked once, never retried
    with m.engine.begin() as conn:
        rec = stripe_requests_for(conn, f"usage:a1:m{m.meter_id('executions')}:{format_hour(h)}")
        state = conn.execute(text("SELECT state FROM meter_reports WHERE account_id = 'a1' AND meter_id = :m"),
                             {"m": m.meter_id("executions")}).scalar_one()
    assert [(r.state, r.http_status) for r in rec] == [("succeeded", 400)] and "[already done]" in rec[0].error
    assert state == "reported"


async def test_a_429_storm_is_waited_out_and_every_event_is_sent_once(meters_env):
    m, h = meters_env, recent_hour(2)
    for a in ("a1", "a2", "a3"):
        m.account(a)
        m.use(a, h, 1)
    # more 429s than one request re-sends (8): some events fail the activity, Temporal retries it
    m.emulator.add_fault(method="POST", path="/v1/billing/meter_events", kind="rate_limit_429", count=40,
                         retry_after=0)

    result = await m.report(h, chunk_size=3)

    limited = [r for r in m.meter_posts() if r["status"] == 429]
    assert len(limited) == 40
    assert (result.state, result.failed_count) == ("reported", 0)
    assert len(m.events()) == 9 and len({e["identifier"] for e in m.events()}) == 9
    assert by_event(m.events("a2"))["tally_executions"] == 1


async def test_a_lost_response_after_commit_is_answered_by_the_same_key_and_not_sent_twice(meters_env):
    m, h = meters_env, recent_hour(2)
    m.account("a1")
    m.use("a1", h, 3)
    m.emulator.add_fault(method="POST", path="/v1/billing/meter_events", kind="drop_after_commit", count=1)

    result = await m.report(h, deps=m.without_sdk_retries())

    assert (result.state, result.failed_count) == ("reported", 0)
    assert len(m.events()) == 3  # the dropped one was committed once and replayed, not sent again
    posts = m.meter_posts()
    dropped = [r for r in posts if r["fault"] == "drop_after_commit"]
    assert len(dropped) == 1
    assert [r["replayed"] for r in posts if r["idempotency_key"] == dropped[0]["idempotency_key"]] == [False, True]


async def test_an_hour_not_ended_or_past_the_window_is_refused_before_anything_is_sent(meters_env):
    m = meters_env
    now = datetime.now(UTC)
    with pytest.raises(InvalidInput, match="has not ended"):
        reportable_hour(format_hour(now), now)
    with pytest.raises(InvalidInput, match="older than Stripe's 35-day"):
        reportable_hour(format_hour(now - timedelta(days=36)), now)
    with pytest.raises(WorkflowFailureError) as err:
        await m.report(now - timedelta(days=36))
    assert "older than Stripe's 35-day meter event window" in str(err.value.cause.cause)
    assert m.meter_posts() == []


async def test_status_lists_failures_and_hours_that_need_a_look(meters_env):
    m, h = meters_env, recent_hour(2)
    m.account("a1")
    m.use("a1", h, 1)
    m.emulator.add_fault(method="POST", path="/v1/billing/meter_events", kind="error_500", count=100)
    result = await m.report(h, deps=m.without_sdk_retries())
    assert result.state == "partial" and result.failed_count == 3
    s = meters_status(get_engine(m.settings.database_url), m.settings, datetime.now(UTC))
    assert s.unsettled_events == 3
    assert [(a.hour, a.state) for a in s.attention] == [(format_hour(h), "partial")]
    assert all("500" in f.error for f in s.failures)


async def test_a_saved_customer_that_names_another_account_gets_no_usage(meters_env):
    """Issue 14: the customer saved on a1 is b1's in Stripe (a repeated id). a1's usage is refused with
    the reason; b1 and a2 are reported as usual."""
    m, h = meters_env, recent_hour(2)
    m.account("a1")
    m.account("a2")
    m.account("b1")
    b1_customer = m.client.v1.customers.create(params={"metadata": {"tally_account_id": "b1"}}).id
    with m.engine.begin() as conn:
        conn.execute(text("UPDATE accounts SET stripe_customer_id = :c WHERE id IN ('a1', 'b1')"),
                     {"c": b1_customer})
    m.use("a1", h, 2)
    m.use("a2", h, 1)
    m.use("b1", h, 1)

    result = await m.report(h)

    assert result.failed_count == 3  # a1's three meters
    assert {f.account_id for f in result.failed} == {"a1"}
    assert all("names account 'b1'" in f.error for f in result.failed)
    assert by_event(m.events("b1"))["tally_executions"] == 1  # b1's own usage only, never a1's
    assert by_event(m.events("a2"))["tally_executions"] == 1
