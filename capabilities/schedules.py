"""The Temporal Schedules of each capability (nobody has to remember to run anything). The registry
(``capabilities/__init__.py``) names which capability declares which; ``tally schedules apply``
(workers/schedules.py) creates or updates them.

``monthly-close``: on the 3rd of each month at 02:00 UTC (after the 48 h late-usage grace) start
``ScheduledClose``, which starts the month's one close ``close-YYYY-MM`` (or finds it already started by
hand). The workflow derives the month from its own start time, so the schedule's action never changes.

``usage-report``: every hour (``TALLY_METERS_REPORT_EVERY=day``: every day), ``TALLY_METERS_LAG_MINUTES``
after the hour, start ``ScheduledUsageReport``, which reports every hour up to the last that ended before
the lag and catches up whatever an outage left (workflows/usage_report.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
)

from models.schemas import ClosePeriodInput, UsageReportScheduleInput
from models.settings import Settings
from workflows.close import ScheduledCloseWorkflow
from workflows.usage_report import ScheduledUsageReportWorkflow


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
                reconcile_meters=settings.meters_reconcile_at_close,
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




def usage_report_schedule(settings: Settings) -> ScheduleDef:
    every = timedelta(days=1) if settings.meters_report_every == "day" else timedelta(hours=1)
    lag = timedelta(minutes=settings.meters_lag_minutes)
    report = Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledUsageReportWorkflow.run,
            UsageReportScheduleInput(
                lag_minutes=settings.meters_lag_minutes,
                chunk_size=settings.meters_chunk_size,
                parallel_chunks=settings.meters_parallel_chunks,
            ),
            id="scheduled-usage-report",  # Temporal appends the scheduled time
            task_queue=settings.task_queue,
            execution_timeout=timedelta(hours=24),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every, offset=lag)]),
        # One run at a time; a run catches up every hour an outage left, so missed runs are not replayed.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=1)),
    )
    when = "every day" if settings.meters_report_every == "day" else "every hour"
    return ScheduleDef("usage-report", f"usage reported to Stripe meters, {when} at +{settings.meters_lag_minutes} min",
                       report)

# ---- alerts and anomalies (workflows/alerts.py) ------------------------------------------------------
def notifications_outbox_schedule(settings: Settings) -> ScheduleDef:
    """``notifications-outbox``: every minute (TALLY_NOTIFICATIONS_INTERVAL_SECONDS), start the review
    of each new anomaly and deliver the outbox by e-mail. A run still retrying an SMTP outage makes the
    next ones skip (overlap SKIP): nothing piles up, and it all goes out once SMTP answers."""
    from models.schemas import DeliverNotificationsInput
    from temporalio.client import ScheduleIntervalSpec
    from workflows.alerts import OutboxDispatchWorkflow

    every = timedelta(seconds=settings.notifications_interval_seconds)
    outbox = Schedule(
        action=ScheduleActionStartWorkflow(
            OutboxDispatchWorkflow.run, DeliverNotificationsInput(),
            id="notifications-outbox",  # Temporal appends the scheduled time
            task_queue=settings.task_queue,
            execution_timeout=timedelta(hours=6),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
    )
    return ScheduleDef("notifications-outbox", f"anomaly reviews and e-mail delivery, every {every.seconds} s", outbox)


def mid_month_trend_schedule(settings: Settings) -> ScheduleDef:
    """``mid-month-trend``: on the 16th at 00:00 UTC (the middle of a 30-day month) project every
    account's month and warn those heading for at least 2x their usual spend (``trend-YYYY-MM``)."""
    from workflows.alerts import ScheduledTrendCheckWorkflow

    trend = Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledTrendCheckWorkflow.run, settings.close_chunk_size,
            id="mid-month-trend", task_queue=settings.task_queue, execution_timeout=timedelta(hours=24),
        ),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(
            day_of_month=[ScheduleRange(16)], hour=[ScheduleRange(0)], minute=[ScheduleRange(0)],
            second=[ScheduleRange(0)], comment="the middle of the month: projected spend against the usual")]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=2)),
    )
    return ScheduleDef("mid-month-trend", "spend trend warning, 16th 00:00 UTC", trend)


# ---- month partitions of executions (workflows/partitions.py) ---------------------------------------
def execution_partitions_schedule(settings: Settings) -> ScheduleDef:
    """``execution-partitions``: every day at 00:30 UTC create the partitions of executions for this
    month and the next three (a month is ready about three months before its first execution)."""
    from models.schemas import PartitionsInput
    from workflows.partitions import ExecutionPartitionsWorkflow

    daily = Schedule(
        action=ScheduleActionStartWorkflow(
            ExecutionPartitionsWorkflow.run, PartitionsInput(),
            id="execution-partitions", task_queue=settings.task_queue, execution_timeout=timedelta(hours=2),
        ),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(
            hour=[ScheduleRange(0)], minute=[ScheduleRange(30)], second=[ScheduleRange(0)],
            comment="partitions of executions for this month and the next three")]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=1)),
    )
    return ScheduleDef("execution-partitions", "month partitions of executions ahead, daily 00:30 UTC", daily)


# ---- creator payouts (workflows/payouts.py) ---------------------------------------------------------
def monthly_payouts_schedule(settings: Settings) -> ScheduleDef:
    """``monthly-payouts``: on the 5th at 06:00 UTC (after the close of the 3rd has pushed the invoices)
    start ``ScheduledPayouts``, which starts ``payouts-YYYY-MM`` for the previous month."""
    from models.schemas import PayoutRunInput
    from workflows.payouts import ScheduledPayoutsWorkflow

    run = Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledPayoutsWorkflow.run,
            PayoutRunInput(period=None, page_size=settings.payouts_page_size, concurrency=settings.payouts_concurrency),
            id="monthly-payouts",  # Temporal appends the scheduled time
            task_queue=settings.task_queue, execution_timeout=timedelta(hours=24)),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(
            day_of_month=[ScheduleRange(5)], hour=[ScheduleRange(6)], minute=[ScheduleRange(0)],
            second=[ScheduleRange(0)], comment="the previous month's creator payouts, after its close")]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=7)),
    )
    return ScheduleDef("monthly-payouts", "creator payouts of the previous month, 5th 06:00 UTC", run)

# ---- prepaid credits (workflows/credits.py) ------------------------------------------------------------
def credit_purchases_poll_schedule(settings: Settings) -> ScheduleDef:
    """``credit-purchases-poll``: every TALLY_CREDITS_POLL_MINUTES, ask Stripe about purchases pending too
    long (webhooks can be down) and start the expiry workflow of every new grant."""
    from workflows.credits import CreditPurchasesPollWorkflow

    every = timedelta(minutes=settings.credits_poll_minutes)
    poll = Schedule(
        action=ScheduleActionStartWorkflow(
            CreditPurchasesPollWorkflow.run, settings.late_usage_grace_hours,
            id="credit-purchases-poll",  # Temporal appends the scheduled time
            task_queue=settings.task_queue, execution_timeout=timedelta(hours=1),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
    )
    return ScheduleDef("credit-purchases-poll", f"pending credit purchases checked with Stripe, every "
                                                f"{settings.credits_poll_minutes} min", poll)


def credit_grants_sweep_schedule(settings: Settings) -> ScheduleDef:
    """``credit-grants-sweep``: daily at 04:00 UTC, start ``credit-grant-<id>`` under the same id for every
    grant not expired yet whose workflow is missing (restored database, terminated run)."""
    from models.schemas import CreditSweepInput
    from workflows.credits import CreditGrantsSweepWorkflow

    sweep = Schedule(
        action=ScheduleActionStartWorkflow(
            CreditGrantsSweepWorkflow.run, CreditSweepInput(grace_hours=settings.late_usage_grace_hours),
            id="credit-grants-sweep", task_queue=settings.task_queue, execution_timeout=timedelta(hours=6),
        ),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(
            hour=[ScheduleRange(4)], minute=[ScheduleRange(0)], second=[ScheduleRange(0)],
            comment="every grant has its expiry workflow")]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=1)),
    )
    return ScheduleDef("credit-grants-sweep", "missing credit-grant workflows restarted, daily 04:00 UTC", sweep)
