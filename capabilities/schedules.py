"""The Temporal Schedules of each capability (nobody has to remember to run anything). The registry
(``capabilities/__init__.py``) names which capability declares which; ``tally schedules apply``
(workers/schedules.py) creates or updates them.

``monthly-close``: on the 3rd of each month at 02:00 UTC (after the 48 h late-usage grace) start
``ScheduledClose``, which starts the month's one close ``close-YYYY-MM`` (or finds it already started by
hand). The workflow derives the month from its own start time, so the schedule's action never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
)

from models.schemas import ClosePeriodInput
from models.settings import Settings
from workflows.close import ScheduledCloseWorkflow


@dataclass(frozen=True)
class ScheduleDef:
    schedule_id: str
    description: str
    schedule: Schedule


def monthly_close_schedule(settings: Settings) -> ScheduleDef:
    close = Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledCloseWorkflow.run,
            ClosePeriodInput(
                period=None,
                chunk_size=settings.close_chunk_size,
                parallel_chunks=settings.close_parallel_chunks,
            ),
            id="monthly-close",  # Temporal appends the scheduled time: monthly-close-<time>
            task_queue=settings.task_queue,
            execution_timeout=timedelta(hours=24),
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    day_of_month=[ScheduleRange(3)],
                    hour=[ScheduleRange(2)],
                    minute=[ScheduleRange(0)],
                    second=[ScheduleRange(0)],
                    comment="previous month, after the 48 h late-usage grace",
                )
            ],
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=7)),
    )
    return ScheduleDef("monthly-close", "close of the previous month, 3rd 02:00 UTC", close)


