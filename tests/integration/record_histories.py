"""Record the workflow histories that the replay test (test_replay.py) runs through today's code.

    .venv/bin/python -m tests.integration.record_histories

Run it when a workflow gains a new shape ON PURPOSE (a new workflow, or a change guarded by
``workflow.patched``), never to make a failing replay test pass: a failing replay means running
workflows of the old shape would break on deploy. Histories are recorded with stand-in activities
(tests/integration/close_mocks.py) on the time-skipping server and written to histories/<name>.json.
"""

from __future__ import annotations

from models.schemas import ClosePeriodInput, PushInvoiceInput
from tests.integration.close_mocks import MockClose, account_ids, worker_for
from tests.integration.histories_recorder import Recording, main, record
from workflows.close import (
    ClosePeriodWorkflow,
    PushInvoiceWorkflow,
    ScheduledCloseWorkflow,
    chunk_workflow_id,
    close_workflow_id,
)


async def close_scenario(rec: Recording) -> None:
    client = rec.client
    mock = MockClose(account_ids(7), failed_push_accounts={"acct-0003"})
    queue = "record-histories"
    save = rec.save
    async with worker_for(client, queue, mock):
        p = "2026-10"
        handle = await client.start_workflow(
            ClosePeriodWorkflow.run, ClosePeriodInput(period=p, chunk_size=2, parallel_chunks=2),
            id=close_workflow_id(p), task_queue=queue)
        await handle.result()
        await save("close_period", close_workflow_id(p))
        await save("close_chunk", chunk_workflow_id(p, 0))

        p = "2026-09"
        handle = await client.start_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=p, chunk_size=2, parallel_chunks=2, chunks_per_run=2),
            id=close_workflow_id(p), task_queue=queue)
        await handle.result()
        await save("close_period_continued_as_new", close_workflow_id(p), handle.first_execution_run_id)

        inp = ClosePeriodInput(period="2026-08", chunk_size=4, parallel_chunks=2)
        await client.execute_workflow(ScheduledCloseWorkflow.run, inp, id="monthly-close-a", task_queue=queue)
        await save("scheduled_close_started", "monthly-close-a")
        await client.execute_workflow(ScheduledCloseWorkflow.run, inp, id="monthly-close-b", task_queue=queue)
        await save("scheduled_close_found_existing", "monthly-close-b")

        await client.execute_workflow(PushInvoiceWorkflow.run, PushInvoiceInput(invoice_id=42),
                                      id="push-invoice-42", task_queue=queue)
        await save("push_invoice", "push-invoice-42")


if __name__ == "__main__":
    main(record(close_scenario))
