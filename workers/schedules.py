"""Temporal Schedules for the recurring jobs (nobody has to remember to run anything).

Each capability declares its schedules in the registry (workers/registry.py); ``tally schedules apply``
creates or updates every one of them (applying twice updates in place).

``monthly-close``: on the 3rd of each month at 02:00 UTC (after the 48 h late-usage grace) start
``ScheduledClose``, which starts the month's one close ``close-YYYY-MM`` (or finds it already started by
hand). The workflow derives the month from its own start time, so the schedule's action never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from models.schemas import ClosePeriodInput
from models.settings import Settings
from workers import registry
from workers.worker import connect
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


async def apply_schedules(settings: Settings, client: Client | None = None) -> list[str]:
    client = client or await connect(settings)
    out = []
    for d in registry.schedules(settings):
        try:
            await client.create_schedule(d.schedule_id, d.schedule)
            verb = "created"
        except ScheduleAlreadyRunningError:
            handle = client.get_schedule_handle(d.schedule_id)

            def updater(_: ScheduleUpdateInput, new=d.schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await handle.update(updater)
            verb = "updated"
        handle = client.get_schedule_handle(d.schedule_id)
        desc = await handle.describe()
        nxt = desc.info.next_action_times[:2]
        when = ", ".join(t.strftime("%Y-%m-%d %H:%M UTC") for t in nxt) or "-"
        out.append(f"{verb} schedule {d.schedule_id}: {d.description}; next runs {when}")
    return out
