"""The monthly close of one period, started through Temporal: workflow ``close-YYYY-MM`` (a second start
while it runs attaches to that run; re-running a finished close changes nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from billing.periods import Period
from models.schemas import ClosePeriodInput, ClosePeriodResult, CloseProgress
from models.settings import Settings
from services.errors import InvalidInput, OperationFailed, root_cause
from services.inputs import parse_period
from services.temporal import TemporalClient
from workflows.close import BILLING_PERIOD, ClosePeriodWorkflow

PROGRESS_POLL_SECONDS = 0.5


def close_workflow_id(period: Period | str) -> str:
    return f"close-{period}"


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
                      push: bool = True) -> WorkflowHandle:
    """Start the close of ``period`` (or attach to the one running)."""
    client = await temporal()
    inp = ClosePeriodInput(
        period=str(period),
        chunk_size=chunk_size or settings.close_chunk_size,
        parallel_chunks=parallel or settings.close_parallel_chunks,
        push_to_stripe=push,
    )
    return await client.start_workflow(
        ClosePeriodWorkflow.run,
        inp,
        id=close_workflow_id(period),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, str(period))]),
        execution_timeout=timedelta(hours=24),
    )


async def wait_for_close(handle: WorkflowHandle, period: Period | str,
                         on_progress: Callable[[CloseProgress], None] | None = None) -> ClosePeriodResult:
    """The close's result; ``on_progress`` is called with its progress (the workflow's query) about
    twice a second while it runs. A failed close raises OperationFailed with the root cause."""
    result_task = asyncio.ensure_future(handle.result())
    if on_progress is not None:
        while not result_task.done():
            try:
                p = await handle.query(ClosePeriodWorkflow.progress, result_type=CloseProgress)
            except Exception:  # not started yet, or finished between checks
                p = None
            if p is not None:
                on_progress(p)
            await asyncio.wait({result_task}, timeout=PROGRESS_POLL_SECONDS)
    try:
        return await result_task
    except WorkflowFailureError as err:
        raise OperationFailed(f"close {period} failed: {root_cause(err)}") from None


async def run_close(temporal: TemporalClient, settings: Settings, period: Period | str, *, wait: bool = True,
                    chunk_size: int | None = None, parallel: int | None = None, push: bool = True,
                    on_progress: Callable[[CloseProgress], None] | None = None) -> ClosePeriodResult | None:
    """Start (or attach to) the close and, with ``wait``, return its result (None without)."""
    handle = await start_close(temporal, settings, period, chunk_size=chunk_size, parallel=parallel, push=push)
    if not wait:
        return None
    return await wait_for_close(handle, period, on_progress)
