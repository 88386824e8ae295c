"""The monthly close of one period, started through Temporal: ONE workflow ``close-YYYY-MM`` whoever
starts it (the schedule, `tally close`, ops). A start while it runs attaches to that run; a start after
it finished reports what it did instead of closing again (``rerun`` starts a new run on purpose, which
changes nothing already invoiced); a failed or terminated close may simply be started again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from dataclasses import dataclass

from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from billing.periods import Period
from models.schemas import ClosePeriodInput, ClosePeriodResult, CloseProgress
from models.settings import Settings
from services.errors import InvalidInput
from services.inputs import parse_period
from services.temporal import TemporalClient, follow
from workflows.close import ClosePeriodWorkflow, close_workflow_id
from workflows.search_attributes import BILLING_PERIOD

__all__ = ["CloseStart", "close_workflow_id", "closable_period", "start_close", "wait_for_close", "run_close",
           "period_outcome"]


@dataclass(frozen=True)
class CloseStart:
    """A handle on the period's one close and how this caller reached it."""

    handle: WorkflowHandle
    how: str  # "started" (a new run), "attached" (it was running) or "finished" (it had already run)


def closable_period(period_text: str, now: datetime, grace_hours: int) -> Period:
    """The period, if it may be closed at ``now``: ended, plus the late-usage grace."""
    period = parse_period(period_text)
    closes_at = period.closes_at(grace_hours)
    if now < closes_at:
        state = "has not started" if now < period.start else "is still open"
        raise InvalidInput("period", f"{period} {state}; it can be closed from {closes_at:%Y-%m-%d %H:%M} UTC "
                                     f"(period end + {grace_hours} h late-usage grace)")
    return period


async def start_close(temporal: TemporalClient, settings: Settings, period: Period | str, *,
                      chunk_size: int | None = None, parallel: int | None = None,
                      push: bool = True, rerun: bool = False) -> CloseStart:
    """Start the close of ``period``, attach to the one running, or find the one that finished."""
    client = await temporal()
    workflow_id = close_workflow_id(str(period))
    inp = ClosePeriodInput(
        period=str(period),
        chunk_size=chunk_size or settings.close_chunk_size,
        parallel_chunks=parallel or settings.close_parallel_chunks,
        push_to_stripe=push,
        reconcile_meters=settings.meters_reconcile_at_close,
        meters_settle_minutes=settings.meters_settle_minutes,
    )
    running = await _status(client.get_workflow_handle(workflow_id)) == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
    try:
        handle = await client.start_workflow(
            ClosePeriodWorkflow.run,
            inp,
            id=workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=(WorkflowIDReusePolicy.ALLOW_DUPLICATE if rerun
                             else WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY),
            search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, str(period))]),
            execution_timeout=timedelta(hours=24),
        )
    except WorkflowAlreadyStartedError:
        # It completed before: that run (followed through its continue-as-new chain) is the close.
        return CloseStart(client.get_workflow_handle_for(ClosePeriodWorkflow.run, workflow_id), "finished")
    return CloseStart(handle, "attached" if running else "started")


async def _status(handle: WorkflowHandle):
    try:
        return (await handle.describe()).status
    except Exception:  # no such workflow yet
        return None


async def wait_for_close(handle: WorkflowHandle, period: Period | str,
                         on_progress: Callable[[CloseProgress], None] | None = None,
                         on_notice: Callable[[str], None] | None = None) -> ClosePeriodResult:
    """The close's result; ``on_progress`` is called with its progress (the workflow's query) about
    twice a second while it runs, ``on_notice`` with each step being retried and its last error and
    with Temporal being unreachable (it keeps waiting). A failed close raises OperationFailed with the
    root cause."""
    return await follow(handle, f"close {period}", query=ClosePeriodWorkflow.progress, progress_type=CloseProgress,
                        on_progress=on_progress, on_notice=on_notice)


async def run_close(temporal: TemporalClient, settings: Settings, period: Period | str, *, wait: bool = True,
                    chunk_size: int | None = None, parallel: int | None = None, push: bool = True,
                    rerun: bool = False,
                    on_progress: Callable[[CloseProgress], None] | None = None,
                    on_start: Callable[[CloseStart], None] | None = None,
                    on_notice: Callable[[str], None] | None = None) -> ClosePeriodResult | None:
    """Start (or attach to, or find) the period's close and, with ``wait``, return what that close did
    (None without). ``on_start`` hears how the close was reached."""
    start = await start_close(temporal, settings, period, chunk_size=chunk_size, parallel=parallel, push=push,
                              rerun=rerun)
    if on_start is not None:
        on_start(start)
    if not wait:
        return None
    return await wait_for_close(start.handle, period, on_progress, on_notice)


def period_outcome(engine, period: Period | str) -> str:
    """One line on what the period's close did, read from the invoices (whichever run or caller did
    it: a re-run or an attached caller sees the same line as the first)."""
    from repositories import invoices

    with engine.begin() as conn:
        by_status, total = invoices.period_summary(conn, parse_period(str(period)))
    in_stripe = by_status.get("open", 0) + by_status.get("paid", 0) + by_status.get("void", 0)
    waiting = by_status.get("draft", 0) + by_status.get("pushing", 0)
    return (f"period {period} in all: {sum(by_status.values()):,} invoices: {in_stripe:,} in Stripe, "
            f"{by_status.get('no_charge', 0):,} no charge, {by_status.get('push_failed', 0):,} push failed, "
            f"{waiting:,} not pushed yet; total ${total:,}")
