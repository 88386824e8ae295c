"""The activity of the ``execution-partitions`` schedule (workflows/partitions.py)."""

from __future__ import annotations

from temporalio import activity

from activities.deps import Deps
from models.schemas import PartitionsInput, PartitionsResult
from services import partitions


class PartitionActivities:
    def __init__(self, deps: Deps):
        self.deps = deps

    @activity.defn(name="ensure_execution_partitions")
    def ensure_execution_partitions(self, inp: PartitionsInput) -> PartitionsResult:
        """Partitions of executions for this month and the next ``months_ahead`` (idempotent)."""
        done = partitions.ensure(self.deps.settings.effective_database_url(), self.deps.clock(), inp.months_ahead)
        return PartitionsResult(created=done.created, from_default=done.from_default)
