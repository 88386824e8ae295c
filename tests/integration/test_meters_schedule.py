"""The scheduled usage report (catch-up after an outage, corrections for late events, hours past Stripe's
window) and the reconciliation at close, on real Postgres, the time-skipping server and the emulator."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from billing.meters import HOUR, floor_hour, format_hour
from billing.periods import Period
from models.schemas import ClosePeriodInput, MeterReconcileInput
from services.errors import InvalidInput
from services.meters import drift_lines, meters_status, reportable_hour
from tests.integration.meters_env import MetersEnv, recent_hour
from workflows.close import ClosePeriodWorkflow
from workflows.search_attributes import METER_DRIFT
from workflows.usage_report import MetersReconcileWorkflow
from tests.integration.own_temporal import own_temporal_env  # noqa: F401 - this module's own server

UTC = timezone.utc


@pytest.fixture
def meters_env(settings, emulator, temporal_env) -> MetersEnv:
    m = MetersEnv(settings, emulator, temporal_env)
    m.apply_meters()
    return m


def executions_of(events: list[dict]) -> list[tuple[int, int]]:
    """(timestamp, value) of the executions meter's events, in arrival order."""
    return [(e["timestamp"], e["value"]) for e in events if e["event_name"] == "tally_executions"]


async def test_a_6_hour_outage_is_caught_up_by_the_next_run_oldest_first(meters_env):
    m = meters_env
    first = recent_hour(8)
    m.account("a1")
    for i in range(8):
        m.use("a1", first + i * HOUR, i + 1)
    before = await m.scheduled(first)  # reporting begins: the first hour
    assert (before.hours, before.events) == (1, 3)
    # no run for 6 hours (Temporal or the worker down); then the schedule fires again
    after = await m.scheduled(first + 7 * HOUR)

    # 6 missed hours and the new one; the first hour is looked at again (its executions were ingested
    # within the scan margin of the first run, so they might have been in flight) and sends nothing
    assert after.late == [format_hour(first)]
    assert (after.hours, after.first_hour, after.last_hour) == (8, format_hour(first), format_hour(first + 7 * HOUR))
    assert after.failed_count == 0 and after.events == 21
    stamps = executions_of(m.events())
    assert stamps == [(int((first + i * HOUR).timestamp()), i + 1) for i in range(8)]  # oldest first, once each
    again = await m.scheduled(first + 7 * HOUR)  # (hours ingested within the scan margin are re-checked)
    assert again.events == 0 and len(m.meter_posts()) == 24


async def test_a_late_event_after_its_hour_was_reported_is_one_correction_not_a_repeat(meters_env):
    m, h = meters_env, recent_hour(3)
    m.account("a1")
    m.use("a1", h, 4)
    await m.scheduled(h)
    assert executions_of(m.events()) == [(int(h.timestamp()), 4)]

    m.use("a1", h, 1, minute=50)  # arrives after the hour was reported
    run = await m.scheduled(h + HOUR)

    assert format_hour(h) in run.late
    assert executions_of(m.events()) == [(int(h.timestamp()), 4), (int(h.timestamp()), 1)]
    idents = [e["identifier"] for e in m.events() if e["event_name"] == "tally_executions"]
    assert idents[0].endswith(":r1") and idents[1].endswith(":r2")  # a new revision, not a repeat
    with m.engine.begin() as conn:
        revs = conn.execute(text("SELECT revision, quantity, state FROM meter_reports WHERE account_id = 'a1' "
                                 "AND meter_id = :m ORDER BY revision"), {"m": m.meter_id("executions")}).all()
    assert [tuple(r) for r in revs] == [(1, 4, "reported"), (2, 1, "reported")]
    # and Stripe's summary for the hour holds the truth, once it has caught up
    m.let_stripe_settle()
    summary = m.client.v1.billing.meters.event_summaries.list(
        _stripe_meter(m, "executions"), params={"customer": m.customer("a1"), "start_time": int(h.timestamp()),
                                                "end_time": int((h + HOUR).timestamp())})
    assert summary.data[0].aggregated_value == 5


def _stripe_meter(m: MetersEnv, key: str) -> str:
    with m.engine.begin() as conn:
        return conn.execute(text("SELECT stripe_meter_id FROM meters WHERE key = :k"), {"k": key}).scalar_one()


async def test_a_partial_hour_is_retried_by_a_later_run_with_back_off_not_by_every_run(meters_env):
    m, h = meters_env, recent_hour(3)
    m.account("a1")
    m.use("a1", h, 2)
    m.emulator.add_fault(method="POST", path="/v1/billing/meter_events", kind="error_500", count=100)
    partial = await m.report(h, deps=m.without_sdk_retries())
    assert partial.state == "partial" and m.events() == []
    m.emulator.clear_faults()
    m.start_reporting(h)

    soon = await m.scheduled(h)  # right after: the hour waits (1 h after its first run)
    assert soon.hours == 0 and m.events() == []
    with m.engine.begin() as conn:
        conn.execute(text("UPDATE meter_report_hours SET updated_at = now() - interval '61 minutes'"))
    later = await m.scheduled(h)

    assert (later.hours, later.events, later.failed_count) == (1, 3, 0)
    assert executions_of(m.events()) == [(int(h.timestamp()), 2)]


async def test_a_36_day_old_gap_is_refused_with_its_error_and_explained_at_reconciliation(meters_env):
    m = meters_env
    now = datetime.now(UTC)
    old = floor_hour(now - timedelta(days=36))
    recent = recent_hour(2)
    m.account("a1")
    m.use("a1", old, 2)
    m.use("a1", recent, 1)
    m.start_reporting(old - HOUR)  # reporting began before the gap; no run since

    run = await m.scheduled(recent)

    assert [e.hour for e in run.expired] == [format_hour(old)]
    assert "older than Stripe's 35-day meter event window" in run.expired[0].error
    assert executions_of(m.events()) == [(int(recent.timestamp()), 1)]  # nothing sent for the old hour
    status = meters_status(m.engine, m.settings, datetime.now(UTC))
    expired = [a for a in status.attention if a.state == "expired"]
    assert [a.hour for a in expired] == [format_hour(old)] and "35-day" in expired[0].error
    assert all(g > format_hour(recent) for g in status.first_gaps)  # only hours after this run's target
    assert status.gaps == len(status.first_gaps)
    with pytest.raises(InvalidInput, match="older than Stripe's 35-day"):
        reportable_hour(format_hour(old), datetime.now(UTC))

    period = str(Period.of(old))
    summary, _ = await m.reconcile(period)
    lines = {d.meter: d for d in drift_lines(m.engine, period)}
    assert lines["executions"].drift == -2 and lines["executions"].unexplained == 0
    assert "1 hour(s) older than Stripe's 35-day window" in lines["executions"].explanation
    assert summary.drifting >= 1 and summary.unexplained == 0


# ---- reconciliation at close ----------------------------------------------------------------------------
def latest_closable_period(now: datetime) -> Period:
    p = Period.of(now)
    while p.closes_at(48) > now:
        p = Period.of(p.start - timedelta(days=1))
    return p


async def close_with_meters(m: MetersEnv, period: Period):
    async with m.worker():
        handle = await m.env.client.start_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=str(period), chunk_size=2, parallel_chunks=2, reconcile_meters=True),
            id=f"close-{period}-{uuid.uuid4().hex[:8]}", task_queue=m.settings.task_queue)
        return await handle.result(), handle


async def report_last_hours(m: MetersEnv, period: Period, accounts: dict[str, int]) -> list[datetime]:
    """Usage in the period's last 6 hours (within Stripe's window at any date), reported by the schedule."""
    hours = [period.end - (6 - i) * HOUR for i in range(6)]
    for account, n in accounts.items():
        for h in hours:
            m.use(account, h, n)
    m.start_reporting(hours[0])
    run = await m.scheduled(hours[-1])
    assert run.hours == 6 and run.failed_count == 0
    return hours


async def test_close_reconciliation_finds_no_drift_and_an_account_created_mid_month_keeps_one_customer(
        meters_env):
    m = meters_env
    period = latest_closable_period(datetime.now(UTC))
    m.account("old-1", "payg")
    m.account("mid-1", "payg", billing_start=period.start + timedelta(days=14))  # created mid-month
    await report_last_hours(m, period, {"old-1": 2, "mid-1": 3})
    assert m.customer("mid-1") is not None  # created by the usage report, before any invoice
    customers_before = len(m.customer_posts())
    m.let_stripe_settle()  # the close runs 48 h after the period: Stripe's summaries have caught up

    result, handle = await close_with_meters(m, period)

    assert result.pushed == 2
    assert len(m.customer_posts()) == customers_before == 2  # the push found the report's customers
    assert result.meters is not None and result.meters.error is None
    assert (result.meters.pairs, result.meters.drifting, result.meters.unexplained) == (6, 0, 0)
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(METER_DRIFT) == 0
    memo = await desc.memo_value("meter_drift")
    assert "0 of 6 account-meter totals drift" in memo


async def test_close_reconciliation_finds_a_planted_drift(meters_env):
    m = meters_env
    period = latest_closable_period(datetime.now(UTC))
    m.account("p1", "payg")
    hours = await report_last_hours(m, period, {"p1": 1})
    # someone else sends an event for p1's executions meter: Stripe now holds 7 where Tally counted 6
    m.client.v1.billing.meter_events.create(params={
        "event_name": "tally_executions", "timestamp": int(hours[2].timestamp()),
        "payload": {"stripe_customer_id": m.customer("p1"), "value": "1"}})
    m.let_stripe_settle()

    result, handle = await close_with_meters(m, period)

    assert (result.meters.pairs, result.meters.drifting, result.meters.unexplained) == (3, 1, 1)
    [line] = result.meters.lines
    assert (line.account_id, line.meter, line.tally, line.reported, line.stripe, line.drift) == (
        "p1", "executions", 6, 6, 7, 1)
    assert "+1 unexplained" in line.explanation
    assert (await handle.describe()).typed_search_attributes.get(METER_DRIFT) == 1
    stored = drift_lines(m.engine, str(period))
    assert [(d.account_id, d.meter, d.drift) for d in stored] == [("p1", "executions", 1)]


async def test_a_reconciliation_right_after_reporting_says_not_settled_and_finds_no_drift_once_settled(
        meters_env):
    m = meters_env
    period = latest_closable_period(datetime.now(UTC))
    m.account("s1", "payg")
    await report_last_hours(m, period, {"s1": 2})
    async with m.worker():
        handle = await m.env.client.start_workflow(
            MetersReconcileWorkflow.run, MeterReconcileInput(period=str(period), chunk_size=2, parallel_chunks=2),
            id=f"meters-reconcile-{period}-{uuid.uuid4().hex[:6]}", task_queue=m.settings.task_queue)
        # Stripe's summaries lag: the first answer is "not settled yet", not drift (time does not skip
        # until the test waits for the result: the workflow waits on its settle timer meanwhile)
        first = None
        for _ in range(200):
            first = await handle.query(MetersReconcileWorkflow.progress)
            if first is not None and first.pairs == 3:
                break
            await asyncio.sleep(0.05)
        assert (first.pairs, first.drifting, first.unexplained, first.unsettled, first.rechecks) == (3, 0, 0, 3, 0)
        m.let_stripe_settle()  # while the workflow waits the settle time, Stripe catches up
        summary = await handle.result()
    assert (summary.pairs, summary.drifting, summary.unexplained, summary.unsettled, summary.rechecks) == (
        3, 0, 0, 0, 1)
    assert drift_lines(m.engine, str(period)) == []


async def test_an_event_stripe_lost_is_not_settled_at_first_and_drift_once_the_settle_time_passed(meters_env):
    m = meters_env
    period = latest_closable_period(datetime.now(UTC))
    m.account("l1", "payg")
    hours = await report_last_hours(m, period, {"l1": 1})
    [lost] = [e for e in m.events("l1") if e["event_name"] == "tally_executions"
              and e["timestamp"] == int(hours[2].timestamp())]
    m.lose_event(lost["identifier"])
    m.let_stripe_settle()  # Stripe shows 5 of the 6 executions Tally reported, and never will show more

    soon, _ = await m.reconcile(str(period))  # sent a moment ago: may still be Stripe's lag
    assert (soon.drifting, soon.unsettled) == (0, 1)
    [line] = drift_lines(m.engine, str(period))
    assert (line.meter, line.stripe, line.reported, line.unsettled, line.drift) == ("executions", 5, 6, 1, 0)
    assert "1 sent within the settle time not in Stripe's summary yet" in line.explanation

    later, _ = await m.reconcile(str(period), m.later(m.settings.meters_settle_minutes + 1))

    assert (later.pairs, later.drifting, later.unexplained, later.unsettled) == (3, 1, 1, 0)
    [line] = later.lines
    assert (line.account_id, line.meter, line.tally, line.reported, line.stripe, line.drift) == (
        "l1", "executions", 6, 6, 5, -1)
    assert "-1 unexplained" in line.explanation
