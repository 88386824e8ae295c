"""Record the history of the execution-partitions workflow that test_replay.py runs through today's code.

    .venv/bin/python -m tests.integration.record_partitions_histories

Run it when the workflow gains a new shape ON PURPOSE (guarded by ``workflow.patched``), never to make
a failing replay pass. A stand-in activity under the real name (no database), on the Temporal dev server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import capabilities as registry
from models.schemas import PartitionsInput, PartitionsResult
from workflows.partitions import ExecutionPartitionsWorkflow

HISTORIES = Path(__file__).parent / "histories"


@activity.defn(name="ensure_execution_partitions")
async def ensure_execution_partitions(inp: PartitionsInput) -> PartitionsResult:
    return PartitionsResult(created=["2027-02"], from_default=[])


async def record() -> list[Path]:
    from tests.conftest import venv_binary

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"), data_converter=pydantic_data_converter,
        search_attributes=list(registry.search_attributes().values()))
    try:
        queue = "record-partitions-histories"
        async with Worker(env.client, task_queue=queue, workflows=registry.workflows(),
                          activities=[ensure_execution_partitions]):
            await env.client.execute_workflow(ExecutionPartitionsWorkflow.run, PartitionsInput(),
                                              id="execution-partitions-a", task_queue=queue)
        history = await env.client.get_workflow_handle("execution-partitions-a").fetch_history()
        path = HISTORIES / "execution_partitions.json"
        path.write_text(history.to_json())
        return [path]
    finally:
        await env.shutdown()


if __name__ == "__main__":
    for path in asyncio.run(record()):
        print(f"wrote {path}")
