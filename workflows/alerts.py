"""Alerts and anomalies, as ops read them in the Temporal UI.

The rules run where usage arrives (the usage observer, services/alerts.py): a crossed budget, a
spike or a fallback is recorded in Postgres with its notice in the outbox, in one transaction, and a
spike pauses the account at once (entitlements answer ``paused_anomaly``). These workflows do what
must outlive a request:

OutboxDispatchWorkflow (schedule ``notifications-outbox``, every minute; id ``notifications-outbox-<time>``)
  1. start the review of each new anomaly: ``AnomalyReview`` with id ``anomaly-<account>-<window start>``
     as an abandoned child (one that already exists is left as it is);
  2. deliver the outbox by e-mail: pending notices are claimed, sent over SMTP with the Message-ID
     recorded before their first send, and marked sent. SMTP down: the activity fails and Temporal
     retries it with back-off; the schedule skips its runs meanwhile (overlap SKIP). A crash after a
     send resends that notice with the same Message-ID, never a new one.
AnomalyReviewWorkflow (id ``anomaly-<account>-<window start>``): waits for a person.
  - update ``confirm`` (by, reason): keep the account paused (a compromised key, say); it stays
    paused and the workflow keeps waiting for a ``resume``;
  - update ``resume`` (by, reason): lift the pause; the workflow ends.
  Validators reject an empty ``by``/``reason`` and a decision the state does not allow, before
  anything is written to history. Search attribute ``AnomalyState`` (open / confirmed / resumed):
  ``AnomalyState = 'open'`` lists the anomalies waiting for a decision; ``BillingAccountIds`` names
  the account.
ScheduledTrendCheckWorkflow (schedule ``mid-month-trend``, the 16th at 00:00 UTC): starts
  ``trend-YYYY-MM`` for the current month unless it exists.
TrendCheckWorkflow (id ``trend-YYYY-MM``): pages through the month's billable accounts; per chunk of
  accounts one activity projects each month like ``tally invoices preview`` does and queues a warning
  where the projection is at least 2x the average of the last three monthly invoices.
Workflows only orchestrate: no database, no SMTP, no wall clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.alerts import AlertsActivities
    from models.failures import Failure
    from models.schemas import (
        AnomalyDecision,
        AnomalyDecisionInput,
        AnomalyReviewInput,
        AnomalyView,
        ChunkPage,
        DeliverNotificationsInput,
        DeliveryResult,
        ListChunksInput,
        OutboxDispatchResult,
        ReviewsToStart,
        ScheduledTrendResult,
        TrendCheckInput,
        TrendCheckResult,
        TrendChunkInput,
        TrendChunkResult,
    )
    from workflows.search_attributes import ANOMALY_STATE, BILLING_ACCOUNT_IDS, BILLING_PERIOD

QUICK = dict(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                             non_retryable_error_types=[Failure.ANOMALY_DECIDED, Failure.NOT_FOUND]),
)
DELIVER = dict(
    start_to_close_timeout=timedelta(minutes=10),
    heartbeat_timeout=timedelta(minutes=1),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2.0,
                             maximum_interval=timedelta(minutes=2),
                             non_retryable_error_types=[Failure.MAIL_NOT_CONFIGURED]),
)
TREND = dict(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1),
                             non_retryable_error_types=[Failure.INVALID_PERIOD]),
)
MAX_FIELD = 500  # characters of a decision's by / reason


def anomaly_workflow_id(account_id: str, window_start: datetime) -> str:
    """The one workflow of an anomaly: the account and the start of the window that spiked (UTC, to the
    second), whoever starts it."""
    return f"anomaly-{account_id}-{window_start.strftime('%Y%m%dT%H%M%SZ')}"


def trend_workflow_id(period: str) -> str:
    return f"trend-{period}"


@workflow.defn(name="OutboxDispatch")
class OutboxDispatchWorkflow:
    """What the ``notifications-outbox`` schedule starts every minute (and ``tally notifications deliver``)."""

    @workflow.run
    async def run(self, inp: DeliverNotificationsInput) -> OutboxDispatchResult:
        todo: ReviewsToStart = await workflow.execute_activity_method(AlertsActivities.anomalies_to_review, **QUICK)
        started: list[int] = []
        for review in todo.reviews:
            try:
                await workflow.start_child_workflow(
                    AnomalyReviewWorkflow.run, review, id=review.workflow_id, task_queue=workflow.info().task_queue,
                    # An anomaly has one review, ever: a finished one is not started again.
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    # The review waits for a person; it outlives this run.
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    search_attributes=TypedSearchAttributes([
                        SearchAttributePair(ANOMALY_STATE, "open"),
                        SearchAttributePair(BILLING_ACCOUNT_IDS, [review.account_id]),
                    ]),
                )
            except WorkflowAlreadyStartedError:
                pass  # started by an earlier run that did not get to record it
            started.append(review.anomaly_id)
        if started:
            await workflow.execute_activity_method(AlertsActivities.mark_reviews_started, started, **QUICK)
        delivery: DeliveryResult = await workflow.execute_activity_method(
            AlertsActivities.deliver_notifications, inp, **DELIVER)
        return OutboxDispatchResult(reviews_started=len(started), delivery=delivery)


def _check_decision(d: AnomalyDecision) -> None:
    for field, value in (("by", d.by), ("reason", d.reason)):
        if not isinstance(value, str) or not value.strip():
            raise ApplicationError(f"{field}: required (who decides, and why)", type="InvalidDecision")
        if len(value) > MAX_FIELD:
            raise ApplicationError(f"{field}: at most {MAX_FIELD} characters", type="InvalidDecision")


@workflow.defn(name="AnomalyReview")
class AnomalyReviewWorkflow:
    """An account paused by a spike, waiting for a person's decision (updates ``resume`` / ``confirm``)."""

    def __init__(self) -> None:
        self._view: AnomalyView | None = None
        self._state = "open"
        self._deciding = asyncio.Lock()

    @workflow.run
    async def run(self, inp: AnomalyReviewInput) -> AnomalyView:
        self._input = inp
        workflow.upsert_search_attributes([ANOMALY_STATE.value_set("open"),
                                           BILLING_ACCOUNT_IDS.value_set([inp.account_id])])
        await workflow.wait_condition(lambda: self._state == "resumed")
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._view is not None
        return self._view

    @workflow.query(name="state")
    def state(self) -> str:
        return self._state

    @workflow.update(name="resume")
    async def resume(self, d: AnomalyDecision) -> AnomalyView:
        """Lift the pause (by whom, and why); the account may run executions again."""
        return await self._decide("resume", d, allowed=("open", "confirmed"))

    @resume.validator
    def _validate_resume(self, d: AnomalyDecision) -> None:
        _check_decision(d)
        if self._state == "resumed":
            raise ApplicationError("already resumed", type=Failure.ANOMALY_DECIDED)

    @workflow.update(name="confirm")
    async def confirm(self, d: AnomalyDecision) -> AnomalyView:
        """Keep the account paused (by whom, and why); it stays paused until someone resumes it."""
        return await self._decide("confirm", d, allowed=("open",))

    @confirm.validator
    def _validate_confirm(self, d: AnomalyDecision) -> None:
        _check_decision(d)
        if self._state != "open":
            raise ApplicationError(f"the anomaly is {self._state}: only an open one can be confirmed",
                                   type=Failure.ANOMALY_DECIDED)

    async def _decide(self, decision: str, d: AnomalyDecision, allowed: tuple[str, ...]) -> AnomalyView:
        async with self._deciding:  # two updates accepted together are decided one after the other
            if self._state not in allowed:
                raise ApplicationError(f"the anomaly is {self._state} now: cannot {decision}",
                                       type=Failure.ANOMALY_DECIDED)
            view: AnomalyView = await workflow.execute_activity_method(
                AlertsActivities.decide_anomaly,
                AnomalyDecisionInput(anomaly_id=self._input.anomaly_id, decision=decision, by=d.by.strip(),
                                     reason=d.reason.strip()),
                **QUICK)
            self._view = view
            self._state = view.state
            workflow.upsert_search_attributes([ANOMALY_STATE.value_set(view.state)])
            return view


def _period_of(now: datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


@workflow.defn(name="ScheduledTrendCheck")
class ScheduledTrendCheckWorkflow:
    """What the mid-month schedule starts: ``trend-YYYY-MM`` for this month, unless it exists."""

    @workflow.run
    async def run(self, chunk_size: int) -> ScheduledTrendResult:
        now = workflow.now()
        period = _period_of(now)
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(period)])
        wid = trend_workflow_id(period)
        try:
            handle = await workflow.start_child_workflow(
                TrendCheckWorkflow.run, TrendCheckInput(period=period, at=now, chunk_size=chunk_size), id=wid,
                task_queue=workflow.info().task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            return ScheduledTrendResult(workflow_id=wid, started=False)
        return ScheduledTrendResult(workflow_id=wid, started=True, result=await handle)


@workflow.defn(name="TrendCheck")
class TrendCheckWorkflow:
    @workflow.run
    async def run(self, inp: TrendCheckInput) -> TrendCheckResult:
        workflow.upsert_search_attributes([BILLING_PERIOD.value_set(inp.period)])
        result = inp.carry or TrendCheckResult(period=inp.period, at=inp.at)
        cursor = inp.cursor
        while True:
            page: ChunkPage = await workflow.execute_activity_method(
                AlertsActivities.trend_account_chunks,
                ListChunksInput(period=inp.period, after=cursor, chunk_size=inp.chunk_size), **TREND)
            for chunk in page.chunks:
                res: TrendChunkResult = await workflow.execute_activity_method(
                    AlertsActivities.check_trend_chunk, TrendChunkInput(period=inp.period, at=inp.at, accounts=chunk),
                    **TREND)
                result.checked += res.checked
                result.warned += res.warned
            if page.next_cursor is None:
                return result
            cursor = page.next_cursor
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(inp.model_copy(update={"cursor": cursor, "carry": result}))


WORKFLOWS = (OutboxDispatchWorkflow, AnomalyReviewWorkflow, ScheduledTrendCheckWorkflow, TrendCheckWorkflow)
