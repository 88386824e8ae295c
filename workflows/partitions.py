"""The month partitions of executions, created ahead (repositories/partitions.py).

ExecutionPartitionsWorkflow (schedule ``execution-partitions``, daily at 00:30 UTC; id
``execution-partitions-<time>``): one activity creates the partitions of this month and the next
three that do not exist yet (and gives a month found in the default partition its own). Idempotent:
a run that fails is simply the next day's work too. No database and no clock here.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.partitions import PartitionActivities
    from models.schemas import PartitionsInput, PartitionsResult


@workflow.defn(name="ExecutionPartitions")
class ExecutionPartitionsWorkflow:
    @workflow.run
    async def run(self, inp: PartitionsInput) -> PartitionsResult:
        return await workflow.execute_activity_method(
            PartitionActivities.ensure_execution_partitions, inp, start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5),
                                     maximum_attempts=20))


WORKFLOWS = (ExecutionPartitionsWorkflow,)
