"""What ops do about alerts: list anomalies, decide on one (``resume`` / ``confirm``, sent to its review
workflow as a Temporal update), deliver the outbox now, run the mid-month trend check by hand, and
read the outbox. Workflows are reached through the ``temporal`` function the caller passes, and only
once the input is checked."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Engine
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.alerts import anomaly_view
from billing.periods import Period
from models.schemas import (
    AnomalyDecision,
    AnomalyReviewInput,
    AnomalyView,
    DeliverNotificationsInput,
    OutboxDispatchResult,
    TrendCheckInput,
    TrendCheckResult,
)
from models.settings import Settings
from repositories import alerts as repo
from repositories import notifications
from services.errors import Conflict, InvalidInput, NotFound, root_cause
from services.inputs import parse_period
from services.temporal import TemporalClient
from workflows.alerts import (
    AnomalyReviewWorkflow,
    OutboxDispatchWorkflow,
    TrendCheckWorkflow,
    trend_workflow_id,
)
from workflows.search_attributes import ANOMALY_STATE, BILLING_ACCOUNT_IDS, BILLING_PERIOD

DECISIONS = ("resume", "confirm")
MANUAL_DELIVERY_ID = "notifications-outbox-now"


def list_anomalies(engine: Engine, *, include_resolved: bool = False, account_id: str | None = None) -> list[AnomalyView]:
    """Anomalies still pausing an account (open: waiting for a decision; confirmed: kept paused),
    newest first; with ``include_resolved`` the resumed ones too."""
    states = ("open", "confirmed", "resumed") if include_resolved else ("open", "confirmed")
    with engine.begin() as conn:
        return [anomaly_view(r) for r in repo.list_anomalies(conn, states, account_id)]


def find_anomaly(engine: Engine, ref: str) -> AnomalyView:
    """By its workflow id (``anomaly-<account>-<start>``) or its number."""
    with engine.begin() as conn:
        row = repo.get_anomaly(conn, int(ref)) if ref.isdigit() else repo.anomaly_by_workflow(conn, ref)
    if row is None:
        raise NotFound(f"no anomaly {ref!r} (see `tally anomalies list`)")
    return anomaly_view(row)


def _check_decision(by: str | None, reason: str | None) -> AnomalyDecision:
    for field, value in (("by", by), ("reason", reason)):
        if not value or not value.strip():
            raise InvalidInput(field, "required: who decides, and why")
        if len(value) > 500:
            raise InvalidInput(field, "at most 500 characters")
    return AnomalyDecision(by=by.strip(), reason=reason.strip())


async def decide(temporal: TemporalClient, settings: Settings, engine: Engine, ref: str, decision: str,
                 by: str | None, reason: str | None) -> AnomalyView:
    """Send ``resume`` or ``confirm`` to the anomaly's review workflow and wait for it to be recorded.
    The review is started first if the outbox schedule has not started it yet."""
    if decision not in DECISIONS:
        raise InvalidInput("decision", f"must be one of {', '.join(DECISIONS)}")
    body = _check_decision(by, reason)
    anomaly = find_anomaly(engine, ref)
    if anomaly.state == "resumed":
        raise Conflict(f"{anomaly.workflow_id} was resumed by {anomaly.decided_by}: nothing to decide")
    client = await temporal()
    handle = await client.start_workflow(
        AnomalyReviewWorkflow.run,
        AnomalyReviewInput(anomaly_id=anomaly.anomaly_id, account_id=anomaly.account_id,
                           workflow_id=anomaly.workflow_id, window_start=anomaly.window_start),
        id=anomaly.workflow_id, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes([SearchAttributePair(ANOMALY_STATE, "open"),
                                                 SearchAttributePair(BILLING_ACCOUNT_IDS, [anomaly.account_id])]),
    )
    with engine.begin() as conn:
        repo.mark_reviews_started(conn, [anomaly.anomaly_id])
    update = AnomalyReviewWorkflow.resume if decision == "resume" else AnomalyReviewWorkflow.confirm
    try:
        return await handle.execute_update(update, body)
    except WorkflowUpdateFailedError as err:
        raise Conflict(f"{anomaly.workflow_id}: {decision} refused: {root_cause(err)}") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"{anomaly.workflow_id} has ended: nothing to decide") from None
        raise


async def deliver_now(temporal: TemporalClient, settings: Settings, max_messages: int = 500) -> OutboxDispatchResult:
    """What the outbox schedule does, now: start pending anomaly reviews and deliver the outbox
    (``notifications-outbox-now``; a delivery already running is joined)."""
    client = await temporal()
    handle = await client.start_workflow(
        OutboxDispatchWorkflow.run, DeliverNotificationsInput(max_messages=max_messages), id=MANUAL_DELIVERY_ID,
        task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    return await handle.result()


async def run_trend_check(temporal: TemporalClient, settings: Settings, period_text: str | None = None,
                          at: datetime | None = None) -> TrendCheckResult:
    """The mid-month trend check now (``trend-YYYY-MM``; a running one is joined). Warnings are queued
    once per account and month, so running it again sends nothing twice."""
    at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    period = parse_period(period_text) if period_text else Period.of(at)
    if not period.start < at <= period.end:
        raise InvalidInput("at", f"must lie in {period} (after its first instant, up to its end)")
    client = await temporal()
    handle = await client.start_workflow(
        TrendCheckWorkflow.run, TrendCheckInput(period=str(period), at=at, chunk_size=settings.close_chunk_size),
        id=trend_workflow_id(str(period)), task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, str(period))]))
    return await handle.result()


def list_notifications(engine: Engine, *, account_id: str | None = None, pending_only: bool = False,
                       limit: int = 100) -> list:
    with engine.begin() as conn:
        return notifications.list_notifications(conn, account_id=account_id, pending_only=pending_only, limit=limit)


__all__ = ["list_anomalies", "find_anomaly", "decide", "deliver_now", "run_trend_check", "list_notifications",
           "DECISIONS"]
