"""Record the contract term workflow's histories that the replay test (test_replay.py) runs through
today's code.

    .venv/bin/python -m tests.integration.record_contracts_histories

Run it when the workflow gains a new shape ON PURPOSE, never to make a failing replay test pass (see
record_histories.py). Recorded with stand-in activities (tests/integration/contract_mocks.py): a month on
the time-skipping server (it waits for the month's close, checks twice, reconciles, continues as new),
the last run of a term (the summary), and on the dev server a run that takes amendments (the
time-skipping server does not advance time while a client waits on an update).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import capabilities as registry
from billing.periods import Period
from models.schemas import AmendRequest, ContractTermInput, contract_record
from tests.integration.contract_mocks import MockContracts, new_history, worker_for
from workflows.contracts import ContractTermWorkflow, contract_workflow_id

HISTORIES = Path(__file__).parent / "histories"


async def _save(client, name: str, workflow_id: str, run_id: str | None, written: list[Path]) -> None:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json())
    written.append(path)


async def record() -> list[Path]:
    from tests.conftest import venv_binary

    written: list[Path] = []
    attributes = {n: k.indexed_value_type for n, k in registry.search_attributes().items()}
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=pydantic_data_converter)
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace="default", search_attributes=attributes))
        now = await env.get_current_time()
        nxt = Period.of(now).next()
        history = new_history("7", datetime(nxt.year, nxt.month, 17, tzinfo=timezone.utc))
        mock = MockContracts(history, checks_before_final={str(nxt): 1})
        async with worker_for(env.client, "record-contracts", mock):
            handle = await env.client.start_workflow(
                ContractTermWorkflow.run, ContractTermInput(contract_id="7", contract=contract_record(history)),
                id=contract_workflow_id("7"), task_queue="record-contracts")
            await handle.result()
            await _save(env.client, "contract_term_month", contract_workflow_id("7"),
                        handle.first_execution_run_id, written)
            await _save(env.client, "contract_term_last_month_and_summary", contract_workflow_id("7"), None, written)
    finally:
        await env.shutdown()

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"), data_converter=pydantic_data_converter,
        search_attributes=list(registry.search_attributes().values()))
    try:
        history = new_history("8", datetime(2026, 8, 1, tzinfo=timezone.utc))
        mock = MockContracts(history, checks_before_final={"2026-08": 10_000})  # its first close never ends
        async with worker_for(env.client, "record-contracts", mock):
            handle = await env.client.start_workflow(
                ContractTermWorkflow.run, ContractTermInput(contract_id="8", contract=contract_record(history)),
                id=contract_workflow_id("8"), task_queue="record-contracts")
            try:
                await handle.execute_update(ContractTermWorkflow.amend, AmendRequest(kind="raise_commitment",
                                                                                     commitment=90_000))
            except Exception:  # noqa: BLE001 - rejected by the validator, as it should be
                pass
            await handle.execute_update(ContractTermWorkflow.amend,
                                        AmendRequest(kind="raise_commitment", commitment=150_000))
            await handle.execute_update(ContractTermWorkflow.amend, AmendRequest(kind="terminate"))
            await handle.terminate("recorded")
            await _save(env.client, "contract_term_amendments", contract_workflow_id("8"), None, written)
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    for path in asyncio.run(record()):
        print(f"wrote {path}")
