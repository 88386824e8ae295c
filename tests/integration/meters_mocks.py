"""Stand-ins for usage reporting's activities, registered under the real activity names, so the
workflows' own branches (fan-out bound, paging, failures, continue-as-new, the launcher's plan, the
close's reconciliation) run without a database or Stripe. Each records what it saw."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.failures import Failure
from models.schemas import (
    AccountRange,
    BeginUsageHourInput,
    ChunkPage,
    HourError,
    ListChunksInput,
    ListUsageChunksInput,
    MeterDriftLine,
    MeterEventFailure,
    ReconcileCheck,
    ReconcileChunkInput,
    ReconcileChunkResult,
    UsageChunkInput,
    UsageChunkResult,
    UsageHourCheck,
    UsageHourResult,
    UsagePlan,
    UsagePlanInput,
)
import capabilities as registry
from tests.integration.close_mocks import MockClose


def _ranges(accounts: list[str], after: str | None, size: int, max_chunks: int) -> ChunkPage:
    rest = [a for a in accounts if after is None or a > after]
    chunks = []
    while rest and len(chunks) < max_chunks:
        part, rest = rest[:size], rest[size:]
        chunks.append(AccountRange(after=after if not chunks else chunks[-1].upto, upto=part[-1], count=len(part)))
    return ChunkPage(chunks=chunks, next_cursor=chunks[-1].upto if rest else None)


@dataclass
class MockMeters:
    """``accounts`` with usage in every hour; each account is 3 meter events (3 Stripe calls) an hour."""

    accounts: list[str]
    hours: list[str] = field(default_factory=list)  # what the plan returns, a page of ``max_hours`` at a time
    expired: list[str] = field(default_factory=list)
    report_delay: float = 0.0
    fail_chunk: int | None = None  # chunk index whose report fails for good
    failed_accounts: set[str] = field(default_factory=set)  # reported as failed events
    drift_accounts: set[str] = field(default_factory=set)
    fail_reconcile: bool = False
    # account -> how many more checks its Stripe summary lags (unsettled) before it shows what was sent
    lagging: dict[str, int] = field(default_factory=dict)
    # account -> the drift its summary shows once settled (a lost event: -1)
    settled_drift: dict[str, int] = field(default_factory=dict)
    block: asyncio.Event | None = None  # report_usage waits for it
    running: int = 0
    max_running: int = 0
    plan_inputs: list[UsagePlanInput] = field(default_factory=list)
    reported: list[tuple[str, str]] = field(default_factory=list)  # (hour, account) in order
    finished: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)

    def _in(self, rng: AccountRange) -> list[str]:
        return [a for a in self.accounts if (rng.after is None or a > rng.after) and a <= rng.upto]

    @activity.defn(name="plan_usage_hours")
    async def plan_usage_hours(self, inp: UsagePlanInput) -> UsagePlan:
        self.plan_inputs.append(inp)
        rest = [h for h in self.hours if inp.after is None or h > inp.after]
        return UsagePlan(target=inp.target, hours=rest[:inp.max_hours], more=len(rest) > inp.max_hours,
                         expired=[HourError(hour=h, error="older than Stripe's 35-day window")
                                  for h in self.expired] if inp.after is None else [])

    @activity.defn(name="begin_usage_hour")
    async def begin_usage_hour(self, inp: BeginUsageHourInput) -> UsageHourCheck:
        if inp.hour in self.expired:
            raise ApplicationError(f"hour {inp.hour} is older than Stripe's 35-day meter event window",
                                   type=Failure.HOUR_NOT_REPORTABLE, non_retryable=True)
        size = max(1, min(inp.chunk_size, -(-len(self.accounts) // inp.parallel_chunks)))
        return UsageHourCheck(hour=inp.hour, accounts=len(self.accounts), meters=3, chunk_size=size,
                              first_page=_ranges(self.accounts, None, size, inp.max_chunks))

    @activity.defn(name="list_usage_chunks")
    async def list_usage_chunks(self, inp: ListUsageChunksInput) -> ChunkPage:
        return _ranges(self.accounts, inp.after, inp.chunk_size, inp.max_chunks)

    @activity.defn(name="report_usage")
    async def report_usage(self, inp: UsageChunkInput) -> UsageChunkResult:
        if inp.index == self.fail_chunk:
            raise ApplicationError(f"chunk {inp.index} cannot be reported", type=Failure.METERS_NOT_SET_UP,
                                   non_retryable=True)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.block is not None:
                await self.block.wait()
            await asyncio.sleep(self.report_delay)
        finally:
            self.running -= 1
        ids = self._in(inp.accounts)
        self.reported += [(inp.hour, a) for a in ids]
        failed = [a for a in ids if a in self.failed_accounts]
        return UsageChunkResult(
            accounts=len(ids), events=3 * (len(ids) - len(failed)), stripe_calls=3 * len(ids),
            failed_count=len(failed),
            failed=[MeterEventFailure(account_id=a, meter="executions", hour=inp.hour, error="429") for a in failed])

    @activity.defn(name="finish_usage_hour")
    async def finish_usage_hour(self, res: UsageHourResult) -> str:
        self.finished.append(res.hour)
        return "reported" if res.failed_count == 0 else "partial"

    @activity.defn(name="check_meters_reconcile")
    async def check_meters_reconcile(self, period: str) -> ReconcileCheck:
        if self.fail_reconcile:
            raise ApplicationError("Stripe is down for good", type=Failure.METERS_NOT_SET_UP, non_retryable=True)
        return ReconcileCheck(period=period, accounts=len(self.accounts), meters=3)

    @activity.defn(name="list_reconcile_chunks")
    async def list_reconcile_chunks(self, inp: ListChunksInput) -> ChunkPage:
        return _ranges(self.accounts, inp.after, inp.chunk_size, inp.max_chunks)

    @activity.defn(name="reconcile_meters")
    async def reconcile_meters(self, inp: ReconcileChunkInput) -> ReconcileChunkResult:
        ids = self._in(inp.accounts)
        self.reconciled += ids
        lines = [MeterDriftLine(account_id=a, meter="executions", tally=10, reported=10, stripe=11, drift=1,
                                unexplained=1, explanation="+1 unexplained") for a in ids if a in self.drift_accounts]
        unsettled = 0
        for a in ids:
            if self.lagging.get(a, 0) > 0:
                self.lagging[a] -= 1
                unsettled += 1
                lines.append(MeterDriftLine(account_id=a, meter="executions", tally=10, reported=10, stripe=7,
                                            drift=0, unexplained=0, unsettled=3, explanation="3 not settled"))
            elif a in self.settled_drift:
                d = self.settled_drift[a]
                lines.append(MeterDriftLine(account_id=a, meter="executions", tally=10, reported=10, stripe=10 + d,
                                            drift=d, unexplained=d, explanation=f"{d:+d} unexplained"))
        drifting = sum(1 for x in lines if x.drift)
        return ReconcileChunkResult(pairs=3 * len(ids), drifting=drifting, unexplained=drifting,
                                    unsettled=unsettled, stripe_calls=3 * len(ids), lines=lines)

    def all(self) -> list:
        return [self.plan_usage_hours, self.begin_usage_hour, self.list_usage_chunks, self.report_usage,
                self.finish_usage_hour, self.check_meters_reconcile, self.list_reconcile_chunks,
                self.reconcile_meters]


def task_queue() -> str:
    return f"meters-wf-{uuid.uuid4().hex[:8]}"


def worker_for(client, queue: str, mock: MockMeters, close: MockClose | None = None):
    from temporalio.worker import Worker

    return Worker(client, task_queue=queue, workflows=registry.workflows(),
                  activities=mock.all() + (close.all() if close else []),
                  workflow_failure_exception_types=[Exception])
