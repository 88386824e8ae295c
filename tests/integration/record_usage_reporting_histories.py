"""Record the usage-reporting workflow histories that the replay test (test_replay.py) runs through
today's code, and the close's history with its meter reconciliation step (``workflow.patched``).

    .venv/bin/python -m tests.integration.record_usage_reporting_histories

Run it when one of these workflows gains a new shape ON PURPOSE, never to make a failing replay test
pass. Recorded with stand-in activities (meters_mocks.py, close_mocks.py) on the time-skipping server,
written to histories/<name>.json.
"""

from __future__ import annotations



from models.schemas import ClosePeriodInput, MeterReconcileInput, UsageHourInput, UsageReportScheduleInput
from tests.integration.close_mocks import MockClose, account_ids
from tests.integration.meters_mocks import MockMeters, worker_for
from tests.integration.histories_recorder import Recording, main, record
from workflows.close import ClosePeriodWorkflow, close_workflow_id
from workflows.usage_report import (
    MetersReconcileWorkflow,
    ScheduledUsageReportWorkflow,
    UsageReportWorkflow,
    reconcile_workflow_id,
    usage_report_workflow_id,
)

async def usage_reporting_scenario(rec: Recording) -> None:
    client, save = rec.client, rec.save
    hours = ["2026-10-14T08", "2026-10-14T09"]
    meters = MockMeters(account_ids(5), hours=hours, expired=["2026-09-01T00"], failed_accounts={"acct-0003"},
                        drift_accounts={"acct-0001"})
    queue = "record-usage-reporting-histories"


    async with worker_for(client, queue, meters, MockClose(account_ids(5))):
        h = "2026-10-14T07"
        await client.execute_workflow(UsageReportWorkflow.run, UsageHourInput(hour=h, chunk_size=2),
                                      id=usage_report_workflow_id(h), task_queue=queue)
        await save("usage_report", usage_report_workflow_id(h))

        h = "2026-10-14T06"
        handle = await client.start_workflow(
            UsageReportWorkflow.run, UsageHourInput(hour=h, chunk_size=2, chunks_per_run=2),
            id=usage_report_workflow_id(h), task_queue=queue)
        await handle.result()
        await save("usage_report_continued_as_new", usage_report_workflow_id(h), handle.first_execution_run_id)

        await client.execute_workflow(
            ScheduledUsageReportWorkflow.run, UsageReportScheduleInput(target=hours[-1], chunk_size=2),
            id="scheduled-usage-report-a", task_queue=queue)
        await save("scheduled_usage_report", "scheduled-usage-report-a")

        p = "2026-10"
        await client.execute_workflow(MetersReconcileWorkflow.run,
                                      MeterReconcileInput(period=p, chunk_size=2, parallel_chunks=2),
                                      id=reconcile_workflow_id(p), task_queue=queue)
        await save("meters_reconcile", reconcile_workflow_id(p))

        p = "2026-11"
        await client.execute_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=p, chunk_size=2, parallel_chunks=2, reconcile_meters=True),
            id=close_workflow_id(p), task_queue=queue)
        await save("close_period_meters_reconcile", close_workflow_id(p))

        # Stripe's summaries lag for one account: its chunk is checked again after the settle time
        meters.lagging = {"acct-0002": 1}
        p = "2026-12"
        await client.execute_workflow(MetersReconcileWorkflow.run,
                                      MeterReconcileInput(period=p, chunk_size=2, parallel_chunks=2),
                                      id=reconcile_workflow_id(p), task_queue=queue)
        await save("meters_reconcile_rechecked", reconcile_workflow_id(p))


if __name__ == "__main__":
    main(record(usage_reporting_scenario))
