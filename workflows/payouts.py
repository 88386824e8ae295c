"""Creator payouts, as ops read them in the Temporal UI.

ScheduledPayoutsWorkflow (schedule ``monthly-payouts``, the 5th at 06:00 UTC; id ``monthly-payouts-<time>``)
  starts ``payouts-YYYY-MM`` for the previous month (after its close on the 3rd), unless it exists.
PayoutRunWorkflow (id ``payouts-YYYY-MM``)
  1. ``accrue_credit_earnings``: the month's credit-funded premium executions become earnings, payable
     at once;
  2. per page of creators (id order): ``decide_payouts`` (balance = carried in + earnings paid for in
     the month + adjustments; >= $25.00: pay the whole balance, else carry it: "$24.99 carried to
     2026-12"), then ``pay_payouts``: one Stripe transfer per payout due (key from the payout id,
     recorded before the call; ``transfer_group`` = payout id);
  3. every payout that failed (no connected account, transfers capability not active,
     ``balance_insufficient``, Stripe down past ``PayoutBudget``) gets its own workflow
     ``payout-<creator>-<YYYY-MM>`` (an abandoned child) that waits for ops;
  continue-as-new when suggested, carrying the cursor and the totals.
PayoutWorkflow (id ``payout-<creator>-<YYYY-MM>``): one failed payout waiting for a person.
  - update ``retry`` (by): pay it now, through the same recorded transfer step (never a second transfer);
  - update ``cancel`` (by, reason): give up; the amount returns to the creator's balance next month
    (unless Stripe has a transfer for it after all: then it is marked paid).
  Validators refuse a retry or cancel of a paid or cancelled payout, and empty fields, before anything
  is written to history. Two updates at once are handled one after the other. Search attribute
  ``PayoutStatus`` (failed / paid / cancelled): ``PayoutStatus = 'failed'`` lists what waits for ops.
  A payout that ends stays open ``linger_seconds`` (an hour) so a late retry is refused with the reason.
Workflows only orchestrate: no database, no Stripe, no wall clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.payouts import PayoutActivities
    from models.failures import Failure, PayoutBudget
    from models.schemas import (
        DecidedPage,
        DecidePayoutsInput,
        PayoutActionInput,
        PayoutCancel,
        PayoutInput,
        PayoutRetry,
        PayoutRunInput,
        PayoutRunResult,
        PayoutView,
        PayPayoutsInput,
        PayPayoutsResult,
        ScheduledPayoutsResult,
    )
    from workflows.search_attributes import BILLING_PERIOD, PAYOUT_STATUS

DECIDE = dict(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                             non_retryable_error_types=[Failure.INVALID_PERIOD]),
)
PAY = dict(
    start_to_close_timeout=timedelta(minutes=30),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                             maximum_interval=timedelta(minutes=1), maximum_attempts=PayoutBudget.MAX_ATTEMPTS),
)
OPS = dict(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                             maximum_attempts=PayoutBudget.RETRY_ATTEMPTS + 5,
                             non_retryable_error_types=[Failure.PAYOUT_DECIDED, Failure.NOT_FOUND]),
)
FINAL = ("paid", "cancelled")
MAX_FIELD = 500


def payouts_workflow_id(period: str) -> str:
    return f"payouts-{period}"


def _previous_month(now: datetime) -> str:
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def _creator_and_period(payout_id: str) -> tuple[str, str]:
    """``payout-<creator>-<YYYY-MM>`` -> (creator, period)."""
    body = payout_id.removeprefix("payout-")
    return body[:-8], body[-7:]


@workflow.defn(name="ScheduledPayouts")
class ScheduledPayoutsWorkflow:
    """What the ``monthly-payouts`` schedule starts: ``payouts-YYYY-MM`` for the previous month."""

    @workflow.run
    async def run(self, inp: PayoutRunInput) -> ScheduledPayoutsResult:
        period = inp.period or _previous_month(workflow.now())
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(period)])
        wid = payouts_workflow_id(period)
        try:
            handle = await workflow.start_child_workflow(
                PayoutRunWorkflow.run, inp.model_copy(update={"period": period}), id=wid,
                task_queue=workflow.info().task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, period)]),
            )
        except WorkflowAlreadyStartedError:
            return ScheduledPayoutsResult(workflow_id=wid, started=False)
        return ScheduledPayoutsResult(workflow_id=wid, started=True, result=await handle)


@workflow.defn(name="PayoutRun")
class PayoutRunWorkflow:
    """``payouts-YYYY-MM``: every creator's payout for the month."""

    def __init__(self) -> None:
        self._result: PayoutRunResult | None = None

    @workflow.query(name="progress")
    def progress(self) -> PayoutRunResult | None:
        return self._result

    @workflow.run
    async def run(self, inp: PayoutRunInput) -> PayoutRunResult:
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(inp.period)])
        result = self._result = inp.carry or PayoutRunResult(period=inp.period)
        if inp.carry is None:
            result.credit_earnings = await workflow.execute_activity_method(
                PayoutActivities.accrue_credit_earnings, inp.period, **DECIDE)
        cursor = inp.cursor
        while True:
            page: DecidedPage = await workflow.execute_activity_method(
                PayoutActivities.decide_payouts, DecidePayoutsInput(period=inp.period, after=cursor, limit=inp.page_size),
                **DECIDE)
            result.creators += page.creators
            result.carried += page.carried
            if page.to_pay:
                paid: PayPayoutsResult = await workflow.execute_activity_method(
                    PayoutActivities.pay_payouts,
                    PayPayoutsInput(period=inp.period, payout_ids=page.to_pay, concurrency=inp.concurrency), **PAY)
                result.paid += len(paid.paid)
                result.amount_paid += paid.amount_paid
                for payout_id in paid.failed:
                    await self._wait_for_ops(payout_id)
                    result.failed.append(payout_id)
            if page.next_cursor is None:
                return result
            cursor = page.next_cursor
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(inp.model_copy(update={"cursor": cursor, "carry": result}))

    async def _wait_for_ops(self, payout_id: str) -> None:
        creator, period = _creator_and_period(payout_id)
        try:
            await workflow.start_child_workflow(
                PayoutWorkflow.run, PayoutInput(payout_id=payout_id, creator_id=creator, period=period, status="failed"),
                id=payout_id, task_queue=workflow.info().task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes([SearchAttributePair(PAYOUT_STATUS, "failed"),
                                                         SearchAttributePair(BILLING_PERIOD, period)]),
            )
        except WorkflowAlreadyStartedError:
            pass  # already waiting for ops (a re-run, or an ops action started it)


def _check_text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApplicationError(f"{field}: required", type="InvalidPayoutAction")
    if len(value) > MAX_FIELD:
        raise ApplicationError(f"{field}: at most {MAX_FIELD} characters", type="InvalidPayoutAction")
    return value.strip()


@workflow.defn(name="Payout")
class PayoutWorkflow:
    """``payout-<creator>-<YYYY-MM>``: a failed payout waiting for ops (updates ``retry`` / ``cancel``)."""

    def __init__(self) -> None:
        self._status = "failed"
        self._view: PayoutView | None = None
        self._acting = asyncio.Lock()

    @workflow.run
    async def run(self, inp: PayoutInput) -> PayoutView | None:
        self._input = inp
        self._status = inp.status
        workflow.upsert_search_attributes([PAYOUT_STATUS.value_set(inp.status), BILLING_PERIOD.value_set(inp.period)])
        await workflow.wait_condition(lambda: self._status in FINAL)
        await workflow.wait_condition(workflow.all_handlers_finished)
        try:  # a late retry is refused by the validator with the reason, rather than "workflow completed"
            await workflow.wait_condition(lambda: False, timeout=timedelta(seconds=inp.linger_seconds))
        except asyncio.TimeoutError:
            pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    @workflow.query(name="status")
    def status(self) -> str:
        return self._status

    @workflow.update(name="retry")
    async def retry(self, r: PayoutRetry) -> PayoutView:
        """Pay the failed payout now (the same recorded transfer: never a second one)."""
        return await self._act("retry", PayoutActionInput(payout_id=self._input.payout_id, by=r.by.strip()))

    @retry.validator
    def _validate_retry(self, r: PayoutRetry) -> None:
        _check_text("by", r.by)
        if self._status in FINAL:
            raise ApplicationError(f"{self._input.payout_id} is {self._status}: a retry is refused",
                                   type=Failure.PAYOUT_DECIDED)

    @workflow.update(name="cancel")
    async def cancel(self, c: PayoutCancel) -> PayoutView:
        """Give the failed payout up; its amount returns to the creator's balance next month."""
        return await self._act("cancel", PayoutActionInput(payout_id=self._input.payout_id, by=c.by.strip(),
                                                           reason=c.reason.strip()))

    @cancel.validator
    def _validate_cancel(self, c: PayoutCancel) -> None:
        _check_text("by", c.by)
        _check_text("reason", c.reason)
        if self._status in FINAL:
            raise ApplicationError(f"{self._input.payout_id} is {self._status}: nothing to cancel",
                                   type=Failure.PAYOUT_DECIDED)

    async def _act(self, action: str, inp: PayoutActionInput) -> PayoutView:
        async with self._acting:  # two updates accepted together run one after the other
            if self._status in FINAL and self._view is not None:
                return self._view  # the other update settled it: nothing to do twice
            fn = PayoutActivities.retry_payout if action == "retry" else PayoutActivities.cancel_payout
            view: PayoutView = await workflow.execute_activity_method(fn, inp, **OPS)
            self._view = view
            self._status = view.status
            workflow.upsert_search_attributes([PAYOUT_STATUS.value_set(view.status)])
            return view


WORKFLOWS = (ScheduledPayoutsWorkflow, PayoutRunWorkflow, PayoutWorkflow)
