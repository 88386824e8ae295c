"""The close workflows' own guarantees, with stand-in activities on the time-skipping server: the
fan-out bound, child ids from the period, a failing chunk failing the close, partial push failures
reported, continue-as-new keeping the totals, and one close per month whoever starts it."""

from __future__ import annotations

import inspect
from decimal import Decimal

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from activities.close import CloseActivities
from models.schemas import ClosePeriodInput, CloseProgress
from tests.integration.close_mocks import MockClose, account_ids, task_queue, worker_for
from workflows.close import (
    ClosePeriodWorkflow,
    ScheduledCloseWorkflow,
    chunk_workflow_id,
    close_workflow_id,
)

PERIOD = "2026-10"


def _names(objs) -> set[str]:
    return {m.__temporal_activity_definition.name for m in objs}


def test_stand_ins_carry_the_real_activity_names():
    real = [m for _, m in inspect.getmembers(CloseActivities, inspect.isfunction)
            if hasattr(m, "__temporal_activity_definition")]
    assert _names(MockClose([]).all()) == _names(real)


async def close(env, mock: MockClose, *, workflow_id: str | None = None, **inp):
    queue = task_queue()
    async with worker_for(env.client, queue, mock):
        return await env.client.execute_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=PERIOD, **{"chunk_size": 2, "parallel_chunks": 2, **inp}),
            id=workflow_id or f"{close_workflow_id(PERIOD)}-{queue}",
            task_queue=queue,
        )


async def test_no_more_chunks_run_at_once_than_parallel_chunks(temporal_env):
    mock = MockClose(account_ids(20), gate=3, gate_chunks=10)
    result = await close(temporal_env, mock, chunk_size=2, parallel_chunks=3)
    assert result.chunks == 10 and result.accounts == 20
    assert mock.max_running == 3  # the bound is reached, never passed


async def test_chunk_ids_come_from_the_period_and_repeat_on_a_rerun(temporal_env):
    mock = MockClose(account_ids(5))
    wid = close_workflow_id(PERIOD) + "-rerun-" + task_queue()
    await close(temporal_env, mock, workflow_id=wid)
    first = sorted(mock.chunk_workflow_ids)
    assert first == [chunk_workflow_id(PERIOD, i) for i in range(3)]
    mock.chunk_workflow_ids.clear()
    await close(temporal_env, mock, workflow_id=wid)  # a second run of the same close
    assert sorted(mock.chunk_workflow_ids) == first


async def test_a_chunk_that_cannot_be_rated_fails_the_close_after_the_others_finish(temporal_env):
    mock = MockClose(account_ids(10), fail_rate_chunk=2)
    with pytest.raises(WorkflowFailureError) as info:
        await close(temporal_env, mock)
    assert "chunk 2 cannot be rated" in str(info.value.cause.cause.cause)
    assert len(mock.rated_accounts) == 8  # every other chunk was still rated


async def test_partial_push_failures_are_reported_and_the_close_completes(temporal_env):
    mock = MockClose(account_ids(6), failed_push_accounts={"acct-0001", "acct-0004"})
    result = await close(temporal_env, mock)
    assert [f.account_id for f in result.failed] == ["acct-0001", "acct-0004"]
    assert result.pushed == 4 and result.stripe_calls == 12
    assert result.total == Decimal("6.00")


async def test_continue_as_new_keeps_every_total_and_bills_each_account_once(temporal_env):
    mock = MockClose(account_ids(13), failed_push_accounts={"acct-0012"})
    queue = task_queue()
    wid = f"{close_workflow_id(PERIOD)}-can-{queue}"
    async with worker_for(temporal_env.client, queue, mock):
        handle = await temporal_env.client.start_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=PERIOD, chunk_size=2, parallel_chunks=2, chunks_per_run=2),
            id=wid, task_queue=queue)
        result = await handle.result()
        progress = await handle.query(ClosePeriodWorkflow.progress, result_type=CloseProgress)
        desc = await handle.describe()
    assert sorted(mock.rated_accounts) == mock.accounts  # each account once, none skipped
    assert (result.accounts, result.chunks, result.pushed) == (13, 7, 12)
    assert [f.account_id for f in result.failed] == ["acct-0012"]
    assert result.total == Decimal("13.00")
    assert progress.accounts_done == 13 and progress.chunks_done == 7 and progress.finished
    assert progress.accounts_total == 13  # checked once, carried through the chain
    assert desc.run_id != handle.first_execution_run_id  # it did continue as new (4 runs of 2 chunks)
    assert mock.chunk_workflow_ids.count(chunk_workflow_id(PERIOD, 6)) == 1


async def test_schedule_launcher_starts_the_months_close_once_and_then_finds_it(temporal_env):
    mock = MockClose(account_ids(4))
    queue = task_queue()
    period = "2031-05"  # a month no other test closes: the close id is the real one
    client = temporal_env.client
    inp = ClosePeriodInput(period=period, chunk_size=2, parallel_chunks=2)
    async with worker_for(client, queue, mock):
        first = await client.execute_workflow(ScheduledCloseWorkflow.run, inp, id=f"monthly-close-a-{queue}",
                                              task_queue=queue)
        again = await client.execute_workflow(ScheduledCloseWorkflow.run, inp, id=f"monthly-close-b-{queue}",
                                              task_queue=queue)
        # a manual start of the same month attaches to / reports the same close, never a second one
        with pytest.raises(Exception) as info:
            await client.start_workflow(
                ClosePeriodWorkflow.run, inp, id=close_workflow_id(period), task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
    assert first.started and first.close_workflow_id == close_workflow_id(period)
    assert first.result.accounts == 4
    assert not again.started and "already started" in again.note
    assert "already" in str(info.value).lower()
    assert len(mock.rated_accounts) == 4  # rated by one close only
