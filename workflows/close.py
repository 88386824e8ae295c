"""The monthly close, as ops read it in the Temporal UI.

ClosePeriodWorkflow (id ``close-YYYY-MM``)
  1. check the period may be closed (ended + late-usage grace) and pin the catalog version;
  2. page through the billable accounts in id ranges of ``chunk_size``;
  3. run one CloseChunkWorkflow per range (id ``<parent id>-c00000``, deterministic, so a re-run
     finds the same children), at most ``parallel_chunks`` at a time.
CloseChunkWorkflow: rate the range (one activity, one transaction), then push its invoices to Stripe.
PushInvoiceWorkflow (id ``push-invoice-<id>``): ops' retry of one invoice.

Search attributes: ``BillingPeriod`` on all three, ``BillingAccountIds`` on chunks and pushes, so the
UI query ``BillingAccountIds = 'acct_42' AND BillingPeriod = '2026-10'`` finds the run that billed it.
Workflows only orchestrate: no database, no Stripe, no wall clock.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
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
    )

BILLING_PERIOD = SearchAttributeKey.for_keyword("BillingPeriod")
BILLING_ACCOUNT_IDS = SearchAttributeKey.for_keyword_list("BillingAccountIds")

QUICK = dict(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                             non_retryable_error_types=["InvalidPeriod", "PeriodNotClosable"]),
)
RATE = dict(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1),
                             non_retryable_error_types=["InvalidPeriod", "RatingError"]),
)
PUSH = dict(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=2),
        # The activity stops raising at its 8th attempt (see PUSH_ATTEMPTS_BEFORE_GIVING_UP).
        maximum_attempts=10,
        non_retryable_error_types=["InvalidPeriod", "InvoiceRejected", "NotFound"],
    ),
)


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
        self._progress.period = period
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(period)])
        check: PeriodCheck = await workflow.execute_activity(
            "check_period", period, result_type=PeriodCheck, **QUICK
        )
        self._progress.accounts_total = check.accounts

        results: list[ChunkResult] = []
        running = 0
        index = 0
        cursor: str | None = None
        tasks = []

        async def run_chunk(chunk_input: CloseChunkInput) -> None:
            nonlocal running
            try:
                res: ChunkResult = await workflow.execute_child_workflow(
                    CloseChunkWorkflow.run,
                    chunk_input,
                    id=f"{workflow.info().workflow_id}-c{chunk_input.index:05d}",
                    task_queue=workflow.info().task_queue,
                )
                results.append(res)
                self._progress.accounts_done += chunk_input.accounts.count
                self._progress.chunks_done += 1
                if res.push:
                    self._progress.invoices_pushed += res.push.pushed
                    self._progress.failures += len(res.push.failed)
            finally:
                running -= 1

        while True:
            page: ChunkPage = await workflow.execute_activity(
                "list_account_chunks",
                ListChunksInput(period=period, after=cursor, chunk_size=inp.chunk_size, max_chunks=50),
                result_type=ChunkPage,
                **QUICK,
            )
            for chunk in page.chunks:
                await workflow.wait_condition(lambda: running < inp.parallel_chunks)
                running += 1
                self._progress.chunks_started += 1
                tasks.append(asyncio.create_task(run_chunk(
                    CloseChunkInput(period=period, index=index, accounts=chunk,
                                    push_to_stripe=inp.push_to_stripe,
                                    push_heartbeat_seconds=inp.push_heartbeat_seconds))))
                index += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        await workflow.wait_condition(lambda: running == 0)
        for t in tasks:  # surface a child failure instead of reporting a partial close as done
            await t
        self._progress.finished = True

        results.sort(key=lambda r: r.index)
        pushes = [r.push for r in results if r.push]
        return ClosePeriodResult(
            period=period,
            accounts=sum(len(r.rate.account_ids) for r in results),
            chunks=len(results),
            invoices_rated=sum(r.rate.rated for r in results),
            invoices_frozen=sum(r.rate.frozen for r in results),
            no_charge=sum(r.rate.no_charge for r in results),
            pushed=sum(p.pushed for p in pushes),
            already_pushed=sum(p.already_pushed for p in pushes),
            failed=[f for p in pushes for f in p.failed],
            stripe_calls=sum(p.stripe_calls for p in pushes),
            total=sum((r.rate.total for r in results), start=RateChunkResult().total),
        )


@workflow.defn(name="CloseChunk")
class CloseChunkWorkflow:
    @workflow.run
    async def run(self, inp: CloseChunkInput) -> ChunkResult:
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(inp.period)])
        rate: RateChunkResult = await workflow.execute_activity(
            "rate_accounts", inp, result_type=RateChunkResult, **RATE
        )
        if rate.account_ids:
            workflow.upsert_search_attributes([BILLING_ACCOUNT_IDS.value_set(rate.account_ids)])
        push = None
        if inp.push_to_stripe:
            push = await workflow.execute_activity(
                "push_invoices", inp, result_type=PushChunkResult,
                **{**PUSH, "heartbeat_timeout": timedelta(seconds=inp.push_heartbeat_seconds)},
            )
        return ChunkResult(index=inp.index, rate=rate, push=push)


@workflow.defn(name="PushInvoice")
class PushInvoiceWorkflow:
    @workflow.run
    async def run(self, inp: PushInvoiceInput) -> PushInvoiceResult:
        return await workflow.execute_activity(
            "push_invoice", inp, result_type=PushInvoiceResult,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2),
                                     maximum_interval=timedelta(minutes=1), maximum_attempts=5,
                                     non_retryable_error_types=["InvoiceRejected", "NotFound"]),
        )


ALL_WORKFLOWS = [ClosePeriodWorkflow, CloseChunkWorkflow, PushInvoiceWorkflow]
__all__ = ["ALL_WORKFLOWS", "ActivityError", "ApplicationError", "ChildWorkflowError"]
