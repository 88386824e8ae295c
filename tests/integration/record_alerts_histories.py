"""Record the histories of the alerts workflows that test_replay.py runs through today's code.

    .venv/bin/python -m tests.integration.record_alerts_histories

Run it when one of these workflows gains a new shape ON PURPOSE (guarded by ``workflow.patched``), never
to make a failing replay pass. Stand-in activities under the real names (no database, no SMTP), on the
Temporal dev server (the time-skipping server does not take updates); the review's updates are sent as
ops would send them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from temporalio import activity
from temporalio.worker import Worker

import capabilities as registry
from models.schemas import (
    AccountRange,
    AnomalyDecision,
    AnomalyDecisionInput,
    AnomalyReviewInput,
    AnomalyView,
    ChunkPage,
    DeliverNotificationsInput,
    DeliveryResult,
    ListChunksInput,
    ReviewsToStart,
    TrendChunkInput,
    TrendChunkResult,
)
from tests.integration.histories_recorder import Recording, main, record
from workflows.alerts import AnomalyReviewWorkflow, OutboxDispatchWorkflow, ScheduledTrendCheckWorkflow

WINDOW = datetime(2026, 10, 25, 11, 55, tzinfo=timezone.utc)


class MockAlerts:
    """One new anomaly to review, two notices to deliver, two chunks of accounts for the trend."""

    def __init__(self) -> None:
        self.state = "open"
        self.reviewed = False

    @activity.defn(name="anomalies_to_review")
    async def anomalies_to_review(self) -> ReviewsToStart:
        if self.reviewed:
            return ReviewsToStart()
        return ReviewsToStart(reviews=[AnomalyReviewInput(anomaly_id=1, account_id="acct-1",
                                                          workflow_id="anomaly-acct-1-20261025T115500Z",
                                                          window_start=WINDOW)])

    @activity.defn(name="mark_reviews_started")
    async def mark_reviews_started(self, ids: list[int]) -> int:
        self.reviewed = True
        return len(ids)

    @activity.defn(name="deliver_notifications")
    async def deliver_notifications(self, inp: DeliverNotificationsInput) -> DeliveryResult:
        return DeliveryResult(sent=2)

    @activity.defn(name="decide_anomaly")
    async def decide_anomaly(self, inp: AnomalyDecisionInput) -> AnomalyView:
        self.state = {"resume": "resumed", "confirm": "confirmed"}[inp.decision]
        return AnomalyView(anomaly_id=inp.anomaly_id, account_id="acct-1", workflow_id="anomaly-acct-1-20261025T115500Z",
                           state=self.state, window_start=WINDOW, window_end=WINDOW, opened_at=WINDOW,
                           decided_at=WINDOW, decided_by=inp.by, decision_reason=inp.reason)

    @activity.defn(name="trend_account_chunks")
    async def trend_account_chunks(self, inp: ListChunksInput) -> ChunkPage:
        return ChunkPage(chunks=[AccountRange(after=None, upto="acct-2", count=2),
                                 AccountRange(after="acct-2", upto="acct-3", count=1)], next_cursor=None)

    @activity.defn(name="check_trend_chunk")
    async def check_trend_chunk(self, inp: TrendChunkInput) -> TrendChunkResult:
        return TrendChunkResult(checked=inp.accounts.count, warned=["acct-3"] if inp.accounts.upto == "acct-3" else [])

    def all(self) -> list:
        return [self.anomalies_to_review, self.mark_reviews_started, self.deliver_notifications, self.decide_anomaly,
                self.trend_account_chunks, self.check_trend_chunk]


async def alerts_scenario(rec: Recording) -> None:
    client, save = rec.client, rec.save
    queue = "record-alerts-histories"


    mock = MockAlerts()
    async with Worker(client, task_queue=queue, workflows=registry.workflows(), activities=mock.all(),
                      workflow_failure_exception_types=[Exception]):
        await client.execute_workflow(OutboxDispatchWorkflow.run, DeliverNotificationsInput(),
                                      id="notifications-outbox-a", task_queue=queue)
        await save("outbox_dispatch_started_review", "notifications-outbox-a")
        review = client.get_workflow_handle_for(AnomalyReviewWorkflow.run, "anomaly-acct-1-20261025T115500Z")
        await review.execute_update(AnomalyReviewWorkflow.confirm, AnomalyDecision(by="ana", reason="leaked key"))
        await review.execute_update(AnomalyReviewWorkflow.resume, AnomalyDecision(by="ana", reason="key rotated"))
        await review.result()
        await save("anomaly_review_confirmed_then_resumed", "anomaly-acct-1-20261025T115500Z")

        await client.execute_workflow(ScheduledTrendCheckWorkflow.run, 100, id="mid-month-trend-a", task_queue=queue)
        await save("scheduled_trend_check_started", "mid-month-trend-a")
        await save("trend_check", f"trend-{datetime.now(timezone.utc):%Y-%m}")
        await client.execute_workflow(ScheduledTrendCheckWorkflow.run, 100, id="mid-month-trend-b", task_queue=queue)
        await save("scheduled_trend_check_found_existing", "mid-month-trend-b")


if __name__ == "__main__":
    main(record(alerts_scenario, dev_server=True))
