"""Record the workflow histories that the replay test (test_replay.py) runs through today's code.

    .venv/bin/python -m tests.integration.record_histories

Run it when a workflow gains a new shape ON PURPOSE (a new workflow, or a change guarded by
``workflow.patched``), never to make a failing replay test pass: a failing replay means running
workflows of the old shape would break on deploy. Histories are recorded with stand-in activities
(tests/integration/close_mocks.py) on the time-skipping server and written to histories/<name>.json.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models.schemas import ClosePeriodInput, PushInvoiceInput
from tests.integration.close_mocks import MockClose, account_ids, worker_for
import capabilities as registry
from workflows.close import (
    ClosePeriodWorkflow,
    PushInvoiceWorkflow,
    ScheduledCloseWorkflow,
    chunk_workflow_id,
    close_workflow_id,
)

HISTORIES = Path(__file__).parent / "histories"


async def record() -> list[Path]:
    from tests.conftest import venv_binary

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=pydantic_data_converter)
    written = []
    try:
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace="default",
            search_attributes={n: k.indexed_value_type for n, k in registry.search_attributes().items()}))
        client = env.client
        mock = MockClose(account_ids(7), failed_push_accounts={"acct-0003"})
        queue = "record-histories"

        async def save(name: str, workflow_id: str, run_id: str | None = None) -> None:
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
            path = HISTORIES / f"{name}.json"
            path.write_text(history.to_json())
            written.append(path)

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
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    for path in asyncio.run(record()):
        print(f"wrote {path}")
