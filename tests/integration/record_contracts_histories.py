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

from datetime import datetime, timezone


from billing.periods import Period
from models.schemas import AmendRequest, ContractTermInput, contract_record
from tests.integration.contract_mocks import MockContracts, new_history, worker_for
from tests.integration.histories_recorder import Recording, main, record
from workflows.contracts import ContractTermWorkflow, contract_workflow_id

async def contract_term_scenario(rec: Recording) -> None:
    """A contract's term to its summary, on the time-skipping server (months pass in no time)."""
    client = rec.client
    now = await rec.env.get_current_time()
    nxt = Period.of(now).next()
    history = new_history("7", datetime(nxt.year, nxt.month, 17, tzinfo=timezone.utc))
    mock = MockContracts(history, checks_before_final={str(nxt): 1})
    async with worker_for(client, "record-contracts", mock):
        handle = await client.start_workflow(
            ContractTermWorkflow.run, ContractTermInput(contract_id="7", contract=contract_record(history)),
            id=contract_workflow_id("7"), task_queue="record-contracts")
        await handle.result()
        await rec.save("contract_term_month", contract_workflow_id("7"), handle.first_execution_run_id)
        await rec.save("contract_term_last_month_and_summary", contract_workflow_id("7"))


async def contract_amendments_scenario(rec: Recording) -> None:
    """Amendments (updates) to a running term, on the dev server."""
    client = rec.client
    history = new_history("8", datetime(2026, 8, 1, tzinfo=timezone.utc))
    mock = MockContracts(history, checks_before_final={"2026-08": 10_000})  # its first close never ends
    async with worker_for(client, "record-contracts", mock):
        handle = await client.start_workflow(
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
        await rec.save("contract_term_amendments", contract_workflow_id("8"))


if __name__ == "__main__":
    main(record(contract_term_scenario), record(contract_amendments_scenario, dev_server=True))
