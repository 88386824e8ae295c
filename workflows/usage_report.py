"""Usage reporting to Stripe Billing Meters, as ops read it in the Temporal UI.

ScheduledUsageReportWorkflow (started by the ``usage-report`` schedule, hourly or daily, ``lag`` minutes
after the hour; id ``scheduled-usage-report-<time>``):
  1. target = the last hour that ended ``lag`` minutes before the run started;
  2. plan (``plan_usage_hours``): mark the reported hours that got executions since the last scan as
     late; list every hour up to the target not reported yet (an outage of N hours is N hours here),
     the partial and late ones too, oldest first, a page of ``hours_per_plan`` at a time; settle the
     hours without usage; refuse (mark expired, with the error) the hours past Stripe's 35-day window;
  3. report each hour in turn as the child ``usage-report-<YYYY-MM-DDTHH>`` (one hour at a time, oldest
     first: Stripe allows one call per customer and meter at once); an hour already being reported by
     someone else (`tally meters report`) is skipped and said so;
  4. continue as new when Temporal suggests it, carrying the cursor and the totals.
UsageReportWorkflow (id ``usage-report-<YYYY-MM-DDTHH>``, whoever starts it: the schedule's run, `tally
  meters report --hour`, a re-run): refuse an hour not ended or past the window, then page through the
  accounts with usage in the hour in id ranges of ``chunk_size`` and run ``report_usage`` on each, at
  most ``parallel_chunks`` at a time; record the hour reported, or partial (the next run retries what
  failed), or late (executions arrived meanwhile: the next run sends the corrections). Running it again
  sends only what is not reported yet: nothing, after a complete run.
MetersReconcileWorkflow (id ``meters-reconcile-YYYY-MM``, started by the close after its chunks, or by
  `tally meters reconcile`): per account and meter, Tally's total for the month against Stripe's
  summary; the drift is the result, the search attribute ``MeterDrift`` and the memo ``meter_drift``.
  Stripe's summaries lag behind ingestion: a pair whose summary lacks what was reported within the
  settle time (``settle_minutes``) is "not settled yet", not drift; its chunk is compared again after the
  settle time (a durable timer, at most ``rechecks`` times), when a shortfall left is drift.

Progress: the ``progress`` query of each. Search attributes: ``BillingPeriod`` (the month of the hour),
``MeterFailures`` (events not sent) and ``MeterDrift``. Workflows only orchestrate: no database, no
Stripe, no wall clock (the target hour comes from the workflow's own start time).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.meters import MeterActivities
    from billing.meters import format_hour, last_ended_hour
    from models.failures import Failure, ReportBudget
    from models.schemas import (
        BeginUsageHourInput,
        ChunkPage,
        ListChunksInput,
        ListUsageChunksInput,
        MeterDriftSummary,
        MeterEventFailure,
        MeterReconcileInput,
        ReconcileCheck,
        ReconcileChunkInput,
        ReconcileChunkResult,
        ScheduledUsageReportResult,
        UsageChunkInput,
        UsageChunkResult,
        UsageHourCheck,
        UsageHourInput,
        UsageHourProgress,
        UsageHourResult,
        UsagePlan,
        UsagePlanInput,
        UsageReportScheduleInput,
        UsageScheduleProgress,
    )
    from workflows.search_attributes import BILLING_PERIOD, METER_DRIFT, METER_FAILURES

NOT_RETRYABLE = [Failure.INVALID_PERIOD, Failure.HOUR_NOT_REPORTABLE, Failure.METERS_NOT_SET_UP]
QUICK = dict(
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                             non_retryable_error_types=NOT_RETRYABLE),
)
REPORT = dict(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=2),
        # From ReportBudget.GIVE_UP_AT the activity returns what failed instead of raising.
        maximum_attempts=ReportBudget.MAX_ATTEMPTS, non_retryable_error_types=NOT_RETRYABLE),
)
RECONCILE = dict(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1),
                             maximum_attempts=10, non_retryable_error_types=NOT_RETRYABLE),
)
PAGE_CHUNKS = 50


def usage_report_workflow_id(hour: str) -> str:
    """The one workflow id of an hour's report, whoever starts it."""
    return f"usage-report-{hour}"


def reconcile_workflow_id(period: str) -> str:
    return f"meters-reconcile-{period}"


def _cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return getattr(err, "message", None) or str(err)


async def fan_out(pages, work, parallel: int) -> None:
    """Run ``work(index, range)`` for every range ``pages()`` yields, at most ``parallel`` at once; a
    failure surfaces once the others have finished."""
    running = 0
    tasks: list[asyncio.Task] = []

    async def one(index, rng) -> None:
        nonlocal running
        try:
            await work(index, rng)
        finally:
            running -= 1

    async for index, rng in pages():
        await workflow.wait_condition(lambda: running < parallel)
        running += 1
        tasks.append(asyncio.create_task(one(index, rng)))
    await workflow.wait_condition(lambda: running == 0)
    for t in tasks:
        await t


@workflow.defn(name="UsageReport")
class UsageReportWorkflow:
    def __init__(self) -> None:
        self._progress = UsageHourProgress()

    @workflow.query(name="progress")
    def progress(self) -> UsageHourProgress:
        return self._progress

    @workflow.run
    async def run(self, inp: UsageHourInput) -> UsageHourResult:
        result = inp.carry or UsageHourResult(hour=inp.hour)
        self._progress = inp.progress or UsageHourProgress(hour=inp.hour)
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(inp.hour[:7])])
        first: ChunkPage | None = None
        if inp.carry is None:
            check: UsageHourCheck = await workflow.execute_activity_method(
                MeterActivities.begin_usage_hour,
                BeginUsageHourInput(hour=inp.hour, chunk_size=inp.chunk_size, parallel_chunks=inp.parallel_chunks,
                                    max_chunks=PAGE_CHUNKS), **QUICK)
            self._progress.accounts_total = check.accounts
            inp = inp.model_copy(update={"chunk_size": check.chunk_size})
            first = check.first_page
        started = 0
        state = {"cursor": inp.cursor, "index": inp.next_index, "continue": False}

        async def pages():
            nonlocal started, first
            while True:
                page: ChunkPage = first or await workflow.execute_activity_method(
                    MeterActivities.list_usage_chunks,
                    ListUsageChunksInput(hour=inp.hour, after=state["cursor"], chunk_size=inp.chunk_size,
                                         max_chunks=PAGE_CHUNKS), **QUICK)
                first = None
                for chunk in page.chunks:
                    yield state["index"], chunk
                    state["index"] += 1
                    state["cursor"] = chunk.upto
                    started += 1
                    if self._should_continue_as_new(inp, started):
                        state["continue"] = True
                        return
                if page.next_cursor is None:
                    return

        async def work(index, chunk) -> None:
            self._progress.chunks_started += 1
            try:
                res: UsageChunkResult = await workflow.execute_activity_method(
                    MeterActivities.report_usage, UsageChunkInput(hour=inp.hour, index=index, accounts=chunk),
                    **REPORT)
            except ActivityError as err:  # a bug or a refusal: the other chunks still report
                res = UsageChunkResult(accounts=chunk.count, failed_count=chunk.count, failed=[MeterEventFailure(
                    account_id=f"{chunk.after or ''}..{chunk.upto}", meter="*", hour=inp.hour, error=_cause(err))])
            result.add_chunk(res)
            self._progress.chunks_done += 1
            self._progress.accounts_done += chunk.count
            self._progress.events += res.events
            self._progress.failed += res.failed_count

        await fan_out(pages, work, inp.parallel_chunks)
        if state["continue"]:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(inp.model_copy(update=dict(
                cursor=state["cursor"], next_index=state["index"], carry=result, progress=self._progress)))
        result.state = await workflow.execute_activity_method(MeterActivities.finish_usage_hour, result, **QUICK)
        workflow.upsert_search_attributes([METER_FAILURES.value_set(result.failed_count)])
        self._progress.finished = True
        return result

    @staticmethod
    def _should_continue_as_new(inp: UsageHourInput, started: int) -> bool:
        if inp.chunks_per_run is not None and started >= inp.chunks_per_run:
            return True
        return workflow.info().is_continue_as_new_suggested()


@workflow.defn(name="ScheduledUsageReport")
class ScheduledUsageReportWorkflow:
    """What the usage-report schedule starts: every hour not reported yet, up to the last that ended."""

    def __init__(self) -> None:
        self._progress = UsageScheduleProgress()

    @workflow.query(name="progress")
    def progress(self) -> UsageScheduleProgress:
        return self._progress

    @workflow.run
    async def run(self, inp: UsageReportScheduleInput) -> ScheduledUsageReportResult:
        target = inp.target or format_hour(last_ended_hour(workflow.now(), timedelta(minutes=inp.lag_minutes)))
        result = inp.carry or ScheduledUsageReportResult(target=target)
        self._progress = UsageScheduleProgress(target=target, hours_done=result.hours, events=result.events,
                                               failed=result.failed_count)
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(target[:7])])
        after = inp.cursor
        while True:
            plan: UsagePlan = await workflow.execute_activity_method(
                MeterActivities.plan_usage_hours,
                UsagePlanInput(target=target, after=after, max_hours=inp.hours_per_plan), **QUICK)
            result.add_plan(plan)
            self._progress.hours_planned += len(plan.hours)
            for hour in plan.hours:
                self._progress.current = hour
                await self._report(hour, inp, result)
                after = hour
            if not plan.more or not plan.hours:
                break
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(inp.model_copy(update=dict(target=target, cursor=after, carry=result)))
        workflow.upsert_search_attributes([METER_FAILURES.value_set(result.failed_count)])
        self._progress.current = None
        self._progress.finished = True
        return result

    async def _report(self, hour: str, inp: UsageReportScheduleInput, result: ScheduledUsageReportResult) -> None:
        try:
            res: UsageHourResult = await workflow.execute_child_workflow(
                UsageReportWorkflow.run,
                UsageHourInput(hour=hour, chunk_size=inp.chunk_size, parallel_chunks=inp.parallel_chunks),
                id=usage_report_workflow_id(hour),
                task_queue=workflow.info().task_queue,
                # A finished hour may run again (it sends only what is missing); a running one is left be.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            result.skipped.append(hour)
            return
        except ChildWorkflowError as err:  # refused (e.g. past the window since the plan) or failed
            res = UsageHourResult(hour=hour, state="partial", failed_count=1, failed=[
                MeterEventFailure(account_id="*", meter="*", hour=hour, error=_cause(err))])
        result.add_hour(res)
        self._progress.hours_done += 1
        self._progress.events += res.events
        self._progress.failed += res.failed_count


@workflow.defn(name="MetersReconcile")
class MetersReconcileWorkflow:
    def __init__(self) -> None:
        self._summary: MeterDriftSummary | None = None

    @workflow.query(name="progress")
    def progress(self) -> MeterDriftSummary | None:
        return self._summary

    @workflow.run
    async def run(self, inp: MeterReconcileInput) -> MeterDriftSummary:
        summary = self._summary = MeterDriftSummary(period=inp.period)
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(inp.period)])
        check: ReconcileCheck = await workflow.execute_activity_method(
            MeterActivities.check_meters_reconcile, inp.period, **QUICK)
        if not check.meters:
            summary.note = "no Stripe meters recorded (tally meters apply): nothing to compare"
        else:
            cursor = {"after": None}
            done: dict[int, tuple] = {}  # chunk index -> (range, its latest result)

            async def pages():
                index = 0
                while True:
                    page: ChunkPage = await workflow.execute_activity_method(
                        MeterActivities.list_reconcile_chunks,
                        ListChunksInput(period=inp.period, after=cursor["after"], chunk_size=inp.chunk_size,
                                        max_chunks=PAGE_CHUNKS), **QUICK)
                    for chunk in page.chunks:
                        yield index, chunk
                        index += 1
                    if page.next_cursor is None:
                        return
                    cursor["after"] = page.next_cursor

            async def work(index, chunk) -> None:
                res: ReconcileChunkResult = await workflow.execute_activity_method(
                    MeterActivities.reconcile_meters,
                    ReconcileChunkInput(period=inp.period, index=index, accounts=chunk,
                                        settle_minutes=inp.settle_minutes), **RECONCILE)
                done[index] = (chunk, res)
                summary.add_chunk(res)

            await fan_out(pages, work, inp.parallel_chunks)
            # Stripe's summaries lag: a pair short of what was reported within the settle time is not drift
            # yet. Wait that long and compare its chunk again (then the shortfall is drift, or gone).
            while summary.unsettled and summary.rechecks < inp.rechecks:
                await workflow.sleep(timedelta(minutes=max(inp.settle_minutes, 1)))
                summary.rechecks += 1
                again = [(i, chunk) for i, (chunk, res) in sorted(done.items()) if res.unsettled]

                async def pending():
                    for item in again:
                        yield item

                await fan_out(pending, work, inp.parallel_chunks)
                self._summary = summary = _resum(summary, [res for _, res in done.values()])
        workflow.upsert_search_attributes([METER_DRIFT.value_set(summary.drifting)])
        workflow.upsert_memo({"meter_drift": summary.headline()})
        return summary


def _resum(old: MeterDriftSummary, results: list[ReconcileChunkResult]) -> MeterDriftSummary:
    """The summary again from each chunk's latest result (a re-checked chunk replaces its first answer)."""
    summary = MeterDriftSummary(period=old.period, rechecks=old.rechecks)
    for res in results:
        summary.add_chunk(res)
    summary.stripe_calls = old.stripe_calls  # every call made, first answers included
    return summary


async def reconcile_at_close(period: str, chunk_size: int, parallel_chunks: int,
                             settle_minutes: int = 60) -> MeterDriftSummary:
    """What the close runs after its chunks: the month's reconciliation as a child. A failure or a
    reconciliation already running by hand never fails the close; the summary says what happened."""
    wid = reconcile_workflow_id(period)
    try:
        summary: MeterDriftSummary = await workflow.execute_child_workflow(
            MetersReconcileWorkflow.run,
            MeterReconcileInput(period=period, chunk_size=chunk_size, parallel_chunks=parallel_chunks,
                                settle_minutes=settle_minutes),
            id=wid, task_queue=workflow.info().task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    except WorkflowAlreadyStartedError:
        summary = MeterDriftSummary(period=period, note=f"{wid} is already running (started by hand): "
                                                        f"see `tally meters reconcile --period {period}`")
    except Exception as err:  # noqa: BLE001 - the close's invoices are done; report, do not fail
        summary = MeterDriftSummary(period=period, error=_cause(err))
    workflow.upsert_search_attributes([METER_DRIFT.value_set(summary.drifting)])
    workflow.upsert_memo({"meter_drift": summary.headline()})
    return summary


WORKFLOWS = (UsageReportWorkflow, ScheduledUsageReportWorkflow, MetersReconcileWorkflow)
