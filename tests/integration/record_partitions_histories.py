"""Record the history of the execution-partitions workflow that test_replay.py runs through today's code.

    .venv/bin/python -m tests.integration.record_partitions_histories

Run it when the workflow gains a new shape ON PURPOSE (guarded by ``workflow.patched``), never to make
a failing replay pass. A stand-in activity under the real name (no database), on the Temporal dev server.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.worker import Worker

import capabilities as registry
from models.schemas import PartitionsInput, PartitionsResult
from tests.integration.histories_recorder import Recording, main, record
from workflows.partitions import ExecutionPartitionsWorkflow

@activity.defn(name="ensure_execution_partitions")
async def ensure_execution_partitions(inp: PartitionsInput) -> PartitionsResult:
    return PartitionsResult(created=["2027-02"], from_default=[])


async def partitions_scenario(rec: Recording) -> None:
    queue = "record-partitions-histories"
    async with Worker(rec.client, task_queue=queue, workflows=registry.workflows(),
                      activities=[ensure_execution_partitions]):
        await rec.client.execute_workflow(ExecutionPartitionsWorkflow.run, PartitionsInput(),
                                          id="execution-partitions-a", task_queue=queue)
    await rec.save("execution_partitions", "execution-partitions-a")


if __name__ == "__main__":
    main(record(partitions_scenario, dev_server=True))
