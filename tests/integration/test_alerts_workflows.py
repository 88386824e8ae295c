"""The alerts workflows on real Postgres and a real SMTP sink:

- on the Temporal dev server (updates need it): a spike pauses an account, the outbox run starts its
  review ``anomaly-<account>-<start>`` (found by the ``AnomalyState`` search attribute), the entitlement
  refuses ``paused_anomaly`` until a person resumes it through the update; validators refuse what the
  state does not allow before anything is recorded;
- on the time-skipping server: the outbox delivered after the SMTP server was down for a while, and
  the mid-month trend rule on a hand-built history of invoices;
- the delivery activity itself: a crash between the send and its record resends the same message
  (same Message-ID, same bytes), never a new one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import pytest_asyncio
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import capabilities as registry
from activities.alerts import AlertsActivities
from activities.deps import Deps
from billing.catalog import default_catalog
from billing.periods import Period
from models.db import get_engine
from models.schemas import AnomalyDecision, DeliverNotificationsInput, TrendCheckInput
from repositories import catalog_versions, notifications, platforms
from services import anomalies
from services.alerts import AlertEvaluator
from services.errors import Conflict, InvalidInput
from services.metering import MeteringService
from services.platforms import assign_platform
from tests.alerts_support import deliver, free_port, smtp_sink, subjects  # noqa: F401 - fixture
from tests.conftest import venv_binary
from tests.factories import create_account, event, ingest
from workers.devstack.smtp_sink import SmtpSink
from workers.worker import build_worker
from workflows.alerts import AnomalyReviewWorkflow, OutboxDispatchWorkflow, TrendCheckWorkflow

UTC = timezone.utc


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_server():
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=list(registry.search_attributes().values()),
        data_converter=pydantic_data_converter,
    )
    yield env
    await env.shutdown()


def mail_ready(settings, sink: SmtpSink):
    return settings.model_copy(update={"smtp_url": sink.url, "ops_email": "ops@example.com",
                                       "smtp_timeout_seconds": 5})


def worker(env, settings):
    deps = Deps(settings, engine=get_engine(settings.database_url), catalog=default_catalog())
    return build_worker(env.client, settings, deps, fail_fast=True)


async def poll(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def entitlement(url: str, platform_id: int, account: str, now: datetime) -> tuple[bool, str]:
    e = MeteringService(get_engine(url), default_catalog(), clock=lambda: now).entitlement(
        platform_id, account, "claude-haiku", False)
    return e["allowed"], e["reason"]


async def test_a_paused_account_is_refused_and_then_resumed_through_the_update(dev_server, settings, smtp_sink):
    settings = mail_ready(settings, smtp_sink)
    url, env = settings.database_url, dev_server
    now = datetime.now(UTC).replace(microsecond=0)
    create_account(url, "burst", "payg", email="burst@example.com")
    with get_engine(url).begin() as conn:
        platform_id = platforms.create_platform(conn, "p", uuid.uuid4().hex)
        assign_platform(conn, "burst", platform_id)
    ingest(url, [event("burst", i, now - timedelta(minutes=4) + timedelta(milliseconds=500 * i)) for i in range(301)],
           now=now)
    evaluator = AlertEvaluator(get_engine(url), default_catalog())
    assert evaluator.evaluate(["burst"], now).paused == ["burst"]
    assert entitlement(url, platform_id, "burst", now) == (False, "paused_anomaly")
    [anomaly] = anomalies.list_anomalies(get_engine(url))
    assert anomaly.workflow_id == f"anomaly-burst-{(now - timedelta(minutes=5)):%Y%m%dT%H%M%SZ}"

    async def temporal():
        return env.client

    async with worker(env, settings):
        run = await env.client.execute_workflow(OutboxDispatchWorkflow.run, DeliverNotificationsInput(),
                                                id=f"outbox-{uuid.uuid4().hex[:6]}", task_queue=settings.task_queue)
        assert (run.reviews_started, run.delivery.sent) == (1, 2)  # the review, and the user's and ops' e-mails

        async def listed(query: str):
            return [w.id async for w in env.client.list_workflows(query)]
        assert await poll(lambda: listed("AnomalyState = 'open'"), what="the open anomaly in the UI query") == [
            anomaly.workflow_id]

        # The validators refuse, before anything is recorded: no one named, and a state that forbids it.
        handle = env.client.get_workflow_handle_for(AnomalyReviewWorkflow.run, anomaly.workflow_id)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(AnomalyReviewWorkflow.resume, AnomalyDecision(by=" ", reason="fine"))
        with pytest.raises(InvalidInput, match="by: required"):
            await anomalies.decide(temporal, settings, get_engine(url), anomaly.workflow_id, "resume", "", "x")

        confirmed = await anomalies.decide(temporal, settings, get_engine(url), anomaly.workflow_id, "confirm",
                                           "ana@ops", "leaked key, rotating it")
        assert (confirmed.state, confirmed.decided_by) == ("confirmed", "ana@ops")
        assert entitlement(url, platform_id, "burst", now) == (False, "paused_anomaly")
        with pytest.raises(Conflict, match="only an open one can be confirmed"):
            await anomalies.decide(temporal, settings, get_engine(url), anomaly.workflow_id, "confirm", "bo", "again")
        assert await poll(lambda: listed("AnomalyState = 'confirmed'"), what="confirmed") == [anomaly.workflow_id]

        resumed = await anomalies.decide(temporal, settings, get_engine(url), str(anomaly.anomaly_id), "resume",
                                         "ana@ops", "key rotated")
        assert resumed.state == "resumed"
        assert (await handle.result()).state == "resumed"
        assert entitlement(url, platform_id, "burst", now) == (True, "ok")
        with pytest.raises(Conflict, match="was resumed"):
            await anomalies.decide(temporal, settings, get_engine(url), anomaly.workflow_id, "resume", "bo", "again")
        # The burst the anomaly covered never pauses the account again.
        assert evaluator.evaluate(["burst"], now + timedelta(minutes=1)).paused == []

        run = await env.client.execute_workflow(OutboxDispatchWorkflow.run, DeliverNotificationsInput(),
                                                id=f"outbox-{uuid.uuid4().hex[:6]}", task_queue=settings.task_queue)
        assert (run.reviews_started, run.delivery.sent) == (0, 2)
    got = subjects(smtp_sink.messages())
    assert got == ["Account burst paused: unusual burst of executions",
                   "[ops] Account burst paused by a spike: decision needed",
                   "Account burst stays paused", "Account burst is running again"]
    assert "ana@ops reviewed" in smtp_sink.messages()[3].part("plain") and "key rotated" in smtp_sink.messages()[3].part("plain")


# ---- time-skipping server --------------------------------------------------------------------------------
async def test_the_outbox_is_delivered_after_the_smtp_server_was_down_for_a_while(temporal_env, settings, tmp_path):
    sink = SmtpSink(tmp_path / "mail", free_port())  # not started: SMTP is down
    settings = mail_ready(settings, sink)
    url = settings.database_url
    create_account(url, "acct-1", "payg", email="one@example.com")
    with get_engine(url).begin() as conn:  # a notice of another capability, queued before the outage
        notifications.notify(conn, account_id="acct-1", kind="plan_auto_converted", dedupe_key="payg-to-pro:acct-1:2026-10",
                             subject="Your plan changes to Pro", body="You would have paid less on Pro.", payload={})
        notifications.notify(conn, account_id="acct-1", kind="credits_expiring", dedupe_key="credits:acct-1:g1",
                             subject="Credits expire soon", body="100 credits expire on 2027-01-01.", payload={})

    def attempts() -> list[tuple[int, str | None]]:
        with get_engine(url).begin() as conn:
            return [(r.attempts, r.last_error) for r in notifications.notifications_for(conn, "acct-1")]

    async with worker(temporal_env, settings):
        handle = await temporal_env.client.start_workflow(
            OutboxDispatchWorkflow.run, DeliverNotificationsInput(), id="outbox-outage", task_queue=settings.task_queue)
        deadline = time.monotonic() + 60
        while min(a for a, _ in attempts()) < 3:  # three failed attempts, back-off between them
            assert time.monotonic() < deadline, attempts()
            await temporal_env.sleep(timedelta(seconds=30))
        assert all("Connection refused" in (e or "") or "ConnectionRefused" in (e or "") for _, e in attempts())
        assert sink.messages() == []
        sink.start()
        try:
            result = await handle.result()
        finally:
            sink.stop()
    assert result.delivery.sent == 2
    mail = sink.messages()
    assert subjects(mail) == ["Your plan changes to Pro", "Credits expire soon"]
    assert len({m.message_id for m in mail}) == 2
    with get_engine(url).begin() as conn:
        rows = notifications.notifications_for(conn, "acct-1")
    assert [(r.sent_at is not None, r.last_error, r.delivered_to) for r in rows] == [(True, None, "one@example.com")] * 2


def test_a_crash_after_sending_resends_the_same_message_id_never_a_new_one(settings, smtp_sink, tmp_path, monkeypatch):
    url = settings.database_url
    create_account(url, "acct-1", "pro", email="one@example.com")
    with get_engine(url).begin() as conn:
        notifications.notify(conn, account_id="acct-1", kind="plan_auto_converted", dedupe_key="k1",
                             subject="Hello", body="Once.", payload={})
    real = notifications.mark_sent
    crashed = []

    def crash_once(conn, notification_id, delivered_to):
        if not crashed:
            crashed.append(notification_id)
            raise ConnectionError("worker lost its database connection after the SMTP server took the message")
        real(conn, notification_id, delivered_to)

    monkeypatch.setattr(notifications, "mark_sent", crash_once)
    with pytest.raises(ConnectionError):
        deliver(url, smtp_sink, tmp_path)
    assert deliver(url, smtp_sink, tmp_path).sent == 0  # still claimed by the crashed attempt (its lease)
    with get_engine(url).begin() as conn:  # the lease runs out
        conn.exec_driver_sql("UPDATE notifications SET claimed_until = now() - interval '1 second'")
    assert deliver(url, smtp_sink, tmp_path).sent == 1
    assert deliver(url, smtp_sink, tmp_path).sent == 0
    first, second = smtp_sink.messages()
    assert first.message_id == second.message_id
    strip = lambda m: m.message.as_bytes().split(b"\n", 2)[2]  # noqa: E731 - the sink's own two headers
    assert strip(first) == strip(second)
    with get_engine(url).begin() as conn:
        [row] = notifications.notifications_for(conn, "acct-1")
    assert (row.attempts, row.message_id, row.sent_at is not None) == (2, first.message_id, True)


def test_a_permanent_refusal_or_a_missing_address_fails_that_notice_only(settings, smtp_sink, tmp_path):
    url = settings.database_url
    create_account(url, "no-mail", "pro")
    create_account(url, "has-mail", "pro", email="ok@example.com")
    with get_engine(url).begin() as conn:
        notifications.notify(conn, account_id="no-mail", kind="k", dedupe_key="k1", subject="A", body="a", payload={})
        notifications.notify(conn, account_id="has-mail", kind="k", dedupe_key="k2", subject="B", body="b", payload={})
    res = deliver(url, smtp_sink, tmp_path)
    assert (res.sent, res.failed, res.pending) == (1, 1, 0)
    with get_engine(url).begin() as conn:
        [row] = notifications.notifications_for(conn, "no-mail")
    assert row.failed_at is not None and "no e-mail address" in row.last_error
    assert subjects(smtp_sink.messages()) == ["B"]


# ---- the trend rule on a hand-built history -----------------------------------------------------------------
def paid_invoice(conn, account: str, period: str, total: str) -> None:
    p = Period.parse(period)
    version_id = catalog_versions.ensure_catalog_version(conn, default_catalog().at(p.start))
    conn.exec_driver_sql(
        "INSERT INTO invoices (account_id, period, period_start, period_end, status, plan, seats, overage_opt_in, "
        "catalog_version_id, subtotal, total) VALUES (%(a)s, %(p)s, %(s)s, %(e)s, 'paid', 'payg', 1, false, %(v)s, "
        "%(t)s, %(t)s)", {"a": account, "p": period, "s": p.start, "e": p.end, "v": version_id, "t": Decimal(total)})


async def test_the_mid_month_trend_warns_at_twice_the_trailing_average_on_a_hand_built_history(
        temporal_env, settings, smtp_sink, tmp_path):
    """November has 30 days: at 00:00 UTC on the 16th the month so far is doubled. Each account was
    billed $10.00, $12.00 and $8.00 (average $10.00) in August to October; PAYG charges $0.01 an
    execution. 1,000 executions so far project $20.00 = 2 x $10.00: a warning; 999 project $19.98: none;
    an account with only two months of history is not judged."""
    settings = mail_ready(settings, smtp_sink)
    url = settings.database_url
    at = datetime(2026, 11, 16, tzinfo=UTC)
    for account, n, months in (("at-2x", 1000, 3), ("below-2x", 999, 3), ("young", 5000, 2)):
        create_account(url, account, "payg", email=f"{account}@example.com",
                       billing_start=datetime(2026, 8, 1, tzinfo=UTC))
        with get_engine(url).begin() as conn:
            for period, total in (("2026-10", "10.00"), ("2026-09", "12.00"), ("2026-08", "8.00"))[:months]:
                paid_invoice(conn, account, period, total)
        ingest(url, [event(account, i, datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=10 * i)) for i in range(n)],
               now=at)
    async with worker(temporal_env, settings):
        result = await temporal_env.client.execute_workflow(
            TrendCheckWorkflow.run, TrendCheckInput(period="2026-11", at=at, chunk_size=2), id="trend-2026-11",
            task_queue=settings.task_queue)
        again = await temporal_env.client.execute_workflow(
            TrendCheckWorkflow.run, TrendCheckInput(period="2026-11", at=at, chunk_size=2), id="trend-2026-11-again",
            task_queue=settings.task_queue)
    assert (result.checked, result.warned, again.warned) == (3, ["at-2x"], [])  # once a month
    deliver(url, smtp_sink, tmp_path)
    [mail] = smtp_sink.messages()
    assert (mail.to, mail.subject) == ("at-2x@example.com", "Your 2026-11 spend is on track for $20.00")
    assert "average of $10.00 over the last 3 months" in mail.part("plain")
