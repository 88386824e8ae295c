"""The usage-reporting workflows' own guarantees, with stand-in activities on the time-skipping server:
the fan-out bound, a failing chunk not stopping the others, continue-as-new keeping the totals, the
launcher's target from its own start time, hours one at a time oldest first, an hour already being
reported left alone, and the close's reconciliation step (result, search attribute, memo; never
failing the close)."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta

from activities.meters import MeterActivities
from billing.meters import format_hour, last_ended_hour
from models.schemas import (
    ClosePeriodInput,
    MeterReconcileInput,
    UsageHourInput,
    UsageHourProgress,
    UsageReportScheduleInput,
)
from tests.integration.close_mocks import MockClose, account_ids
from tests.integration.meters_mocks import MockMeters, task_queue, worker_for
from workflows.close import ClosePeriodWorkflow
from workflows.search_attributes import METER_DRIFT, METER_FAILURES
from workflows.usage_report import (
    MetersReconcileWorkflow,
    ScheduledUsageReportWorkflow,
    UsageReportWorkflow,
    usage_report_workflow_id,
)
from tests.integration.own_temporal import own_temporal_env  # noqa: F401 - this module's own server

HOUR = "2031-03-04T05"


def _names(objs) -> set[str]:
    return {m.__temporal_activity_definition.name for m in objs}


def test_stand_ins_carry_the_real_activity_names():
    real = [m for _, m in inspect.getmembers(MeterActivities, inspect.isfunction)
            if hasattr(m, "__temporal_activity_definition")]
    assert _names(MockMeters([]).all()) == _names(real)


async def report(env, mock: MockMeters, hour: str = HOUR, **inp):
    queue = task_queue()
    async with worker_for(env.client, queue, mock):
        handle = await env.client.start_workflow(
            UsageReportWorkflow.run, UsageHourInput(hour=hour, **{"chunk_size": 2, "parallel_chunks": 2, **inp}),
            id=f"{usage_report_workflow_id(hour)}-{queue}", task_queue=queue)
        result = await handle.result()
        handle.progress = await handle.query(UsageReportWorkflow.progress, result_type=UsageHourProgress)
        return result, handle


async def test_no_more_chunks_report_at_once_than_parallel_chunks(temporal_env):
    mock = MockMeters(account_ids(20), report_delay=0.05)
    result, _ = await report(temporal_env, mock, parallel_chunks=3)
    assert (result.chunks, result.accounts, result.events) == (10, 20, 60)
    assert mock.max_running == 3


async def test_a_chunk_that_fails_for_good_leaves_the_hour_partial_and_the_others_reported(temporal_env):
    mock = MockMeters(account_ids(10), fail_chunk=2, failed_accounts={"acct-0007"})
    result, handle = await report(temporal_env, mock)
    assert len(mock.reported) == 8  # every other chunk still reported
    assert result.state == "partial" and result.failed_count == 2 + 1
    # Listed in the order the chunks finished (chunks 2 and 3 run side by side): found by what failed.
    by_meter = {f.meter: f for f in result.failed}
    assert "chunk 2 cannot be reported" in by_meter["*"].error  # the whole chunk
    assert (by_meter["executions"].account_id, by_meter["executions"].error) == ("acct-0007", "429")
    assert (await handle.describe()).typed_search_attributes.get(METER_FAILURES) == 3


async def test_continue_as_new_keeps_every_total_and_reports_each_account_once(temporal_env):
    mock = MockMeters(account_ids(13))
    result, handle = await report(temporal_env, mock, chunks_per_run=2)
    progress = handle.progress
    desc = await handle.describe()
    assert sorted(a for _, a in mock.reported) == mock.accounts
    assert (result.chunks, result.accounts, result.events) == (7, 13, 39)
    assert progress.finished and progress.accounts_done == 13 and progress.accounts_total == 13
    assert desc.run_id != handle.first_execution_run_id
    assert mock.finished == [HOUR]  # the hour is settled once, by the last run of the chain


async def scheduled(env, mock: MockMeters, *, close: MockClose | None = None, **inp):
    queue = task_queue()
    async with worker_for(env.client, queue, mock, close):
        handle = await env.client.start_workflow(
            ScheduledUsageReportWorkflow.run, UsageReportScheduleInput(**{"chunk_size": 5, **inp}),
            id=f"scheduled-usage-report-{queue}", task_queue=queue)
        return await handle.result(), handle


async def test_the_launcher_reports_the_hour_that_ended_before_the_lag_of_its_own_start(temporal_env):
    mock = MockMeters(account_ids(2))
    result, handle = await scheduled(temporal_env, mock, lag_minutes=15)
    started = (await handle.describe()).start_time
    expected = format_hour(last_ended_hour(started, timedelta(minutes=15)))
    assert [p.target for p in mock.plan_inputs] == [expected] and result.target == expected


async def test_the_launcher_reports_every_planned_hour_one_at_a_time_oldest_first_page_by_page(temporal_env):
    hours = [f"2031-03-0{d}T{h:02d}" for d in (4, 5) for h in (22, 23)]
    mock = MockMeters(account_ids(3), hours=hours, expired=["2031-01-01T00"], report_delay=0.01)
    result, _ = await scheduled(temporal_env, mock, target=hours[-1], hours_per_plan=3)
    order = []
    for h, _ in mock.reported:
        if h not in order:
            order.append(h)
    assert order == hours and mock.finished == hours
    assert [h for h, _ in mock.reported] == sorted(h for h, _ in mock.reported)  # never two hours at once
    assert [p.after for p in mock.plan_inputs] == [None, hours[2]]
    assert (result.hours, result.events, result.first_hour, result.last_hour) == (4, 36, hours[0], hours[-1])
    assert [e.hour for e in result.expired] == ["2031-01-01T00"]


async def test_the_launcher_leaves_an_hour_that_is_already_being_reported_alone(temporal_env):
    hour = "2031-03-06T01"
    mock = MockMeters(account_ids(2), hours=[hour], block=asyncio.Event())
    queue = task_queue()
    async with worker_for(temporal_env.client, queue, mock):
        by_hand = await temporal_env.client.start_workflow(
            UsageReportWorkflow.run, UsageHourInput(hour=hour, chunk_size=5),
            id=usage_report_workflow_id(hour), task_queue=queue)
        result = await temporal_env.client.execute_workflow(
            ScheduledUsageReportWorkflow.run, UsageReportScheduleInput(target=hour),
            id=f"scheduled-usage-report-{queue}", task_queue=queue)
        mock.block.set()
        await by_hand.result()
    assert result.skipped == [hour] and result.hours == 0
    assert mock.finished == [hour]  # reported once, by the run started by hand


async def test_reconciliation_sums_the_chunks_and_sets_the_drift_for_the_ui(temporal_env):
    mock = MockMeters(account_ids(5), drift_accounts={"acct-0001", "acct-0003"})
    queue = task_queue()
    async with worker_for(temporal_env.client, queue, mock):
        handle = await temporal_env.client.start_workflow(
            MetersReconcileWorkflow.run, MeterReconcileInput(period="2031-02", chunk_size=2, parallel_chunks=2),
            id=f"meters-reconcile-2031-02-{queue}", task_queue=queue)
        summary = await handle.result()
    desc = await handle.describe()
    assert sorted(mock.reconciled) == mock.accounts
    assert (summary.pairs, summary.drifting, summary.unexplained) == (15, 2, 2)
    assert [d.account_id for d in summary.lines] == ["acct-0001", "acct-0003"]
    assert desc.typed_search_attributes.get(METER_DRIFT) == 2
    assert "2 of 15 account-meter totals drift" in await desc.memo_value("meter_drift")


async def reconcile_with(env, mock: MockMeters, **inp):
    queue = task_queue()
    async with worker_for(env.client, queue, mock):
        handle = await env.client.start_workflow(
            MetersReconcileWorkflow.run,
            MeterReconcileInput(period="2031-02", chunk_size=2, parallel_chunks=2, **inp),
            id=f"meters-reconcile-2031-02-{queue}", task_queue=queue)
        return await handle.result(), handle


async def test_a_lagging_summary_is_not_settled_yet_and_only_its_chunk_is_checked_again(temporal_env):
    mock = MockMeters(account_ids(5), lagging={"acct-0003": 1})

    summary, handle = await reconcile_with(temporal_env, mock)

    # chunks [0000, 0001], [0002, 0003], [0004]: the second one again, after the settle time
    assert sorted(mock.reconciled) == sorted(account_ids(5) + ["acct-0002", "acct-0003"])
    assert (summary.pairs, summary.drifting, summary.unsettled, summary.rechecks) == (15, 0, 0, 1)
    assert summary.lines == []
    assert "0 of 15 account-meter totals drift" in await (await handle.describe()).memo_value("meter_drift")


async def test_a_shortfall_left_after_the_settle_time_is_drift(temporal_env):
    mock = MockMeters(account_ids(3), lagging={"acct-0001": 1}, settled_drift={"acct-0001": -1})

    summary, handle = await reconcile_with(temporal_env, mock)

    assert (summary.drifting, summary.unexplained, summary.unsettled, summary.rechecks) == (1, 1, 0, 1)
    assert [(d.account_id, d.drift) for d in summary.lines] == [("acct-0001", -1)]
    assert (await handle.describe()).typed_search_attributes.get(METER_DRIFT) == 1


async def test_a_summary_that_never_settles_is_reported_as_not_settled_after_the_rechecks(temporal_env):
    mock = MockMeters(account_ids(3), lagging={"acct-0002": 99})

    summary, handle = await reconcile_with(temporal_env, mock, rechecks=2)

    assert (summary.drifting, summary.unsettled, summary.rechecks) == (0, 1, 2)
    memo = await (await handle.describe()).memo_value("meter_drift")
    assert "1 not settled yet" in memo and "tally meters reconcile --period 2031-02" in memo


async def close(env, meters: MockMeters, **inp):
    closing = MockClose(account_ids(4))
    queue = task_queue()
    async with worker_for(env.client, queue, meters, closing):
        handle = await env.client.start_workflow(
            ClosePeriodWorkflow.run, ClosePeriodInput(period="2031-02", chunk_size=2, parallel_chunks=2, **inp),
            id=f"close-2031-02-{queue}", task_queue=queue)
        return await handle.result(), handle


async def test_the_close_reconciles_after_its_chunks_and_reports_the_drift(temporal_env):
    result, handle = await close(temporal_env, MockMeters(account_ids(4), drift_accounts={"acct-0002"}),
                                 reconcile_meters=True)
    assert result.pushed == 4 and result.meters is not None
    assert (result.meters.pairs, result.meters.drifting) == (12, 1)
    assert (await handle.describe()).typed_search_attributes.get(METER_DRIFT) == 1


async def test_a_failing_reconciliation_is_reported_and_never_fails_the_close(temporal_env):
    result, _ = await close(temporal_env, MockMeters(account_ids(4), fail_reconcile=True), reconcile_meters=True)
    assert result.pushed == 4
    assert "Stripe is down for good" in result.meters.error


async def test_the_close_without_the_setting_or_without_stripe_does_not_reconcile(temporal_env):
    mock = MockMeters(account_ids(4))
    off, _ = await close(temporal_env, mock)
    no_stripe, _ = await close(temporal_env, mock, reconcile_meters=True, push_to_stripe=False)
    assert off.meters is None and no_stripe.meters is None and mock.reconciled == []
