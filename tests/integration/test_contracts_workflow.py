"""The contract term workflow's own guarantees, with stand-in activities on the time-skipping server:
across a whole 13-month term it sleeps until each month may be closed, checks until the close is final,
continues as new once a month, and writes the summary once."""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timedelta, timezone

from temporalio.api.enums.v1 import EventType

from activities.contracts import ContractActivities
from billing.periods import Period
from models.schemas import ContractTermInput, ContractTermState
from tests.integration.contract_mocks import MockContracts, new_history, task_queue, worker_for
from workflows.contracts import ContractTermWorkflow, contract_workflow_id

POLL = 3600


def _names(objs) -> set[str]:
    return {m.__temporal_activity_definition.name for m in objs}


def test_stand_ins_carry_the_real_activity_names():
    real = [m for _, m in inspect.getmembers(ContractActivities, inspect.isfunction)
            if hasattr(m, "__temporal_activity_definition")]
    assert _names(MockContracts(new_history("1", datetime(2026, 1, 1, tzinfo=timezone.utc))).all()) == _names(real)


async def next_17th(env) -> datetime:
    """The 17th of the next 31-day month on the server's clock (the time-skipping server's clock is shared
    by the session, so "next month" depends on the tests before): 15/31 + 16/31 of a month at the ends."""
    now = await env.get_current_time()
    p = Period.of(now).next()
    while (p.end - p.start).days != 31:
        p = p.next()
    return datetime(p.year, p.month, 17, tzinfo=timezone.utc)


async def runs_of(client, workflow_id: str, first_run_id: str) -> list[int]:
    """Event counts of each run of the continue-as-new chain, in order."""
    counts, run_id = [], first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        counts.append(len(history.events))
        last = history.events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW else None)
    return counts


async def test_a_12_month_term_from_the_17th_reconciles_13_months_one_run_each_then_summarises_once(temporal_env):
    start = await next_17th(temporal_env)
    mock = MockContracts(new_history("t13", start))
    third = str(Period.of(start).next().next())
    mock.checks_before_final[third] = 3  # that month's close is still running at the first three checks
    queue = task_queue()
    wid = f"{contract_workflow_id('t13')}-{queue}"
    async with worker_for(temporal_env.client, queue, mock):
        handle = await temporal_env.client.start_workflow(
            ContractTermWorkflow.run, ContractTermInput(contract_id="t13", poll_seconds=POLL), id=wid,
            task_queue=queue)
        summary = await handle.result()
        state = await handle.query(ContractTermWorkflow.state, result_type=ContractTermState)
        runs = await runs_of(temporal_env.client, wid, handle.first_execution_run_id)

    months = [m.period for m in state.schedule]
    assert len(months) == 13 and months[0] == str(Period.of(start))
    assert [m.period for m in state.reconciled] == months  # every month, in order, once
    finals = [(p, when) for p, when, final in mock.checks if final]
    assert [p for p, _ in finals] == months
    for p, when in finals:  # never checked before the month ended plus the 48 h late-usage grace
        assert when >= Period.parse(p).end + timedelta(hours=48)
    waited = [when for p, when, final in mock.checks if p == third]
    assert len(waited) == 4 and all(b - a >= timedelta(seconds=POLL) for a, b in zip(waited, waited[1:]))
    assert len(runs) == 13 and max(runs) < 80  # one run per month: a small history however long the term
    assert mock.summaries == 1 and state.finished and state.summary == summary
    s = summary.summary
    assert (s.months, s.committed) == (13, 1_200_000)  # 15/31 + 11 whole months + 16/31 = 12 x 100,000
    assert s.used == sum(m.used for m in state.reconciled) and s.months_under_commitment == 13
    assert s.committed_charges == sum(m.committed_charge for m in state.reconciled)
    assert "average utilisation 80.0%" in summary.text


async def test_the_state_query_shows_the_month_it_waits_for_and_when_it_checks_next(temporal_env):
    start = await next_17th(temporal_env)
    mock = MockContracts(new_history("q1", start))
    queue = task_queue()
    async with worker_for(temporal_env.client, queue, mock):
        handle = await temporal_env.client.start_workflow(
            ContractTermWorkflow.run, ContractTermInput(contract_id="q1"), id=f"contract-q1-{queue}",
            task_queue=queue)
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the first workflow task has to run before the state is there
            state = await handle.query(ContractTermWorkflow.state, result_type=ContractTermState)
            if state.waiting_for or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        await handle.terminate("test over")
    first = Period.of(start)
    assert state.waiting_for == str(first) and state.next_check_at == first.end + timedelta(hours=48)
    assert state.contract.account_id == "acme" and state.commitment_now == 100_000 and not state.finished
    assert mock.checks == []  # nothing checked before the month could be closed
