"""``tally schedules apply``: create or update every schedule the registered capabilities declare
(``capabilities/schedules.py``); applying twice updates in place."""

from __future__ import annotations

from temporalio.client import Client, ScheduleAlreadyRunningError, ScheduleUpdate, ScheduleUpdateInput

import capabilities as registry
from models.settings import Settings
from workers.worker import connect


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
