"""The monthly close, as ops read it in the Temporal UI.

ClosePeriodWorkflow (id ``close-YYYY-MM``, whoever starts it: the schedule, `tally close`, ops, a re-run)
  1. check the period may be closed (ended + late-usage grace) and pin the catalog version;
  2. page through the billable accounts in id ranges of ``chunk_size``;
  3. run one CloseChunkWorkflow per range (id ``close-YYYY-MM-c00000``: from the period and the chunk's
     position, so a re-run finds the same children), at most ``parallel_chunks`` at a time;
  4. when Temporal suggests it (history near its limits) or after ``chunks_per_run`` chunks, wait for
     the running chunks and continue as new with the cursor and the totals so far: a month with a
     million accounts is a chain of runs of the same workflow id, never one oversized history;
  5. with ``reconcile_meters`` (and Stripe): compare Tally's meter totals with Stripe's meter summaries
     in the child ``meters-reconcile-YYYY-MM`` (workflows/usage_report.py); the drift is in the result
     (``meters``), the search attribute ``MeterDrift`` and the memo ``meter_drift``; it never fails the
     close. Guarded by ``workflow.patched("meters-reconcile-at-close")``.
CloseChunkWorkflow: rate the range (one activity, one transaction), then push its invoices to Stripe.
ScheduledCloseWorkflow (started by the ``monthly-close`` schedule, id ``monthly-close-<time>``): starts
  ``close-YYYY-MM`` as a child for the month before; if that close already runs or has finished (someone
  closed the month by hand), it starts nothing and says so. So a month has one close, never two.
PushInvoiceWorkflow (id ``push-invoice-<id>``): ops' retry of one invoice.

Search attributes: ``BillingPeriod`` on all of them, ``BillingAccountIds`` on chunks and pushes, so the
UI query ``BillingAccountIds = 'acct_42' AND BillingPeriod = '2026-10'`` finds the run that billed it.
Workflows only orchestrate: no database, no Stripe, no wall clock.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.close import CloseActivities
    from models.failures import Failure, PushBudget
    from models.schemas import (
        ChunkPage,
        ChunkResult,
        CloseChunkInput,
        ClosePeriodInput,
        ClosePeriodResult,
        CloseProgress,
        ListChunksInput,
        PeriodCheck,
        PushChunkResult,
        PushInvoiceInput,
        PushInvoiceResult,
        RateChunkResult,
        ScheduledCloseResult,
    )
    from workflows.search_attributes import BILLING_ACCOUNT_IDS, BILLING_PERIOD

from workflows.usage_report import reconcile_at_close

METERS_RECONCILE_PATCH = "meters-reconcile-at-close"

QUICK = dict(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                             non_retryable_error_types=[Failure.INVALID_PERIOD, Failure.PERIOD_NOT_CLOSABLE]),
)
RATE = dict(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1),
                             non_retryable_error_types=[Failure.INVALID_PERIOD, Failure.RATING_ERROR]),
)
PUSH = dict(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=2),
        # The activity stops raising at attempt PushBudget.GIVE_UP_AT and leaves push_failed invoices.
        maximum_attempts=PushBudget.MAX_ATTEMPTS,
        non_retryable_error_types=[Failure.INVALID_PERIOD, Failure.INVOICE_REJECTED, Failure.NOT_FOUND],
    ),
)
PUSH_ONE = dict(
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1),
                             maximum_attempts=5,
                             non_retryable_error_types=[Failure.INVOICE_REJECTED, Failure.NOT_FOUND]),
)
PAGE_CHUNKS = 50  # chunk ranges listed per activity call


def close_workflow_id(period: str) -> str:
    """The one workflow id of a month's close, whoever starts it."""
    return f"close-{period}"


def chunk_workflow_id(period: str, index: int) -> str:
    return f"{close_workflow_id(period)}-c{index:05d}"


def push_invoice_workflow_id(invoice_id: int) -> str:
    return f"push-invoice-{invoice_id}"


def previous_period(now) -> str:
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"


@workflow.defn(name="ClosePeriod")
class ClosePeriodWorkflow:
    def __init__(self) -> None:
        self._progress = CloseProgress()

    @workflow.query(name="progress")
    def progress(self) -> CloseProgress:
        return self._progress

    @workflow.run
    async def run(self, inp: ClosePeriodInput) -> ClosePeriodResult:
        period = inp.period or previous_period(workflow.now())
        carry = inp.carry or ClosePeriodResult.empty(period)
        self._progress = inp.progress or CloseProgress(period=period)
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(period)])
        if inp.carry is None:  # the first run of the chain checks; continued runs trust it
            check: PeriodCheck = await workflow.execute_activity_method(
                CloseActivities.check_period, period, **QUICK)
            self._progress.accounts_total = check.accounts

        running = 0
        started_this_run = 0
        index = inp.next_index
        cursor = inp.cursor
        tasks: list[asyncio.Task] = []

        async def run_chunk(chunk_input: CloseChunkInput) -> None:
            nonlocal running
            try:
                res: ChunkResult = await workflow.execute_child_workflow(
                    CloseChunkWorkflow.run,
                    chunk_input,
                    id=chunk_workflow_id(period, chunk_input.index),
                    task_queue=workflow.info().task_queue,
                )
                carry.add_chunk(res)
                self._progress.accounts_done += chunk_input.accounts.count
                self._progress.chunks_done += 1
                if res.push:
                    self._progress.invoices_pushed += res.push.pushed
                    self._progress.failures += len(res.push.failed)
            finally:
                running -= 1

        async def drain() -> None:
            await workflow.wait_condition(lambda: running == 0)
            for t in tasks:  # surface a chunk's failure instead of reporting a partial close as done
                await t
            tasks.clear()

        while True:
            page: ChunkPage = await workflow.execute_activity_method(
                CloseActivities.list_account_chunks,
                ListChunksInput(period=period, after=cursor, chunk_size=inp.chunk_size, max_chunks=PAGE_CHUNKS),
                **QUICK,
            )
            for pos, chunk in enumerate(page.chunks):
                await workflow.wait_condition(lambda: running < inp.parallel_chunks)
                running += 1
                started_this_run += 1
                self._progress.chunks_started += 1
                tasks.append(asyncio.create_task(run_chunk(
                    CloseChunkInput(period=period, index=index, accounts=chunk,
                                    push_to_stripe=inp.push_to_stripe,
                                    push_heartbeat_seconds=inp.push_heartbeat_seconds,
                                    rate_heartbeat_seconds=inp.rate_heartbeat_seconds))))
                index += 1
                more = pos + 1 < len(page.chunks) or page.next_cursor is not None
                if more and self._should_continue_as_new(inp, started_this_run):
                    await drain()
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(inp.model_copy(update=dict(
                        period=period, cursor=chunk.upto, next_index=index, carry=carry,
                        progress=self._progress)))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        await drain()
        if inp.reconcile_meters and inp.push_to_stripe and workflow.patched(METERS_RECONCILE_PATCH):
            # 5. compare Tally's meter totals with Stripe's summaries (child meters-reconcile-YYYY-MM)
            carry.meters = await reconcile_at_close(period, inp.chunk_size, inp.parallel_chunks,
                                                    inp.meters_settle_minutes)
        self._progress.finished = True
        return carry

    @staticmethod
    def _should_continue_as_new(inp: ClosePeriodInput, started_this_run: int) -> bool:
        if inp.chunks_per_run is not None and started_this_run >= inp.chunks_per_run:
            return True
        return workflow.info().is_continue_as_new_suggested()


@workflow.defn(name="CloseChunk")
class CloseChunkWorkflow:
    @workflow.run
    async def run(self, inp: CloseChunkInput) -> ChunkResult:
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(inp.period)])
        rate: RateChunkResult = await workflow.execute_activity_method(
            CloseActivities.rate_accounts, inp,
            **{**RATE, "heartbeat_timeout": timedelta(seconds=inp.rate_heartbeat_seconds)})
        if rate.account_ids:
            workflow.upsert_search_attributes([BILLING_ACCOUNT_IDS.value_set(rate.account_ids)])
        push: PushChunkResult | None = None
        if inp.push_to_stripe:
            push = await workflow.execute_activity_method(
                CloseActivities.push_invoices, inp,
                **{**PUSH, "heartbeat_timeout": timedelta(seconds=inp.push_heartbeat_seconds)},
            )
        return ChunkResult(index=inp.index, rate=rate, push=push)


@workflow.defn(name="ScheduledClose")
class ScheduledCloseWorkflow:
    """What the monthly schedule starts: the close of the month before, unless it already exists."""

    @workflow.run
    async def run(self, inp: ClosePeriodInput) -> ScheduledCloseResult:
        period = inp.period or previous_period(workflow.now())
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(period)])
        close_id = close_workflow_id(period)
        try:
            handle = await workflow.start_child_workflow(
                ClosePeriodWorkflow.run,
                inp.model_copy(update={"period": period}),
                id=close_id,
                task_queue=workflow.info().task_queue,
                # A finished (or running) close of the month is THE close: never start a second one.
                # A failed or terminated one may be run again.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                # The close outlives this launcher if ops terminate the launcher.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            return ScheduledCloseResult(
                period=period, close_workflow_id=close_id, started=False,
                note=f"{close_id} was already started (by hand or an earlier schedule run); nothing started")
        result: ClosePeriodResult = await handle
        return ScheduledCloseResult(period=period, close_workflow_id=close_id, started=True, result=result,
                                    note=f"{close_id} started by the schedule")


@workflow.defn(name="PushInvoice")
class PushInvoiceWorkflow:
    @workflow.run
    async def run(self, inp: PushInvoiceInput) -> PushInvoiceResult:
        return await workflow.execute_activity_method(CloseActivities.push_invoice, inp, **PUSH_ONE)


WORKFLOWS = (ClosePeriodWorkflow, CloseChunkWorkflow, ScheduledCloseWorkflow, PushInvoiceWorkflow)
