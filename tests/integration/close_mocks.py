"""Stand-ins for the close's activities, registered under the real activity names, so the close
workflows' own branches (fan-out bound, child ids, failures, continue-as-new) can be driven without a
database or Stripe. Each records what it saw."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.failures import Failure
from models.schemas import (
    AccountRange,
    ChunkPage,
    CloseChunkInput,
    InvoiceFailure,
    ListChunksInput,
    PeriodCheck,
    PushChunkResult,
    PushInvoiceInput,
    PushInvoiceResult,
    RateChunkResult,
)
import capabilities as registry


def account_ids(n: int) -> list[str]:
    return [f"acct-{i:04d}" for i in range(n)]


@dataclass
class MockClose:
    """``accounts`` billable accounts; each account's invoice totals $1.00 and is pushed with 3 calls."""

    accounts: list[str]
    rate_delay: float = 0.0
    # With ``gate`` > 0 (the bound under test) a chunk's rating waits until ``gate`` ratings run at once
    # (then one more second, time for the workflow to start one too many if it would), until one more
    # than ``gate`` runs, or until every one of the ``gate_chunks`` chunks has started (20 s at most):
    # the bound is reached whatever the machine's load, instead of by the luck of overlapping sleeps.
    gate: int = 0
    gate_chunks: int = 0
    started: int = 0
    fail_rate_chunk: int | None = None  # chunk index whose rating fails for good
    failed_push_accounts: set[str] = field(default_factory=set)  # reported push_failed by the chunk
    running: int = 0
    max_running: int = 0
    chunk_workflow_ids: list[str] = field(default_factory=list)
    rated_accounts: list[str] = field(default_factory=list)
    pages: int = 0

    @activity.defn(name="check_period")
    async def check_period(self, period: str) -> PeriodCheck:
        start = datetime(int(period[:4]), int(period[5:]), 1, tzinfo=timezone.utc)
        return PeriodCheck(period=period, period_start=start, period_end=start, accounts=len(self.accounts),
                           catalog_version="test")

    @activity.defn(name="list_account_chunks")
    async def list_account_chunks(self, inp: ListChunksInput) -> ChunkPage:
        self.pages += 1
        rest = [a for a in self.accounts if inp.after is None or a > inp.after]
        chunks = []
        while rest and len(chunks) < inp.max_chunks:
            part, rest = rest[:inp.chunk_size], rest[inp.chunk_size:]
            after = inp.after if not chunks else chunks[-1].upto
            chunks.append(AccountRange(after=after, upto=part[-1], count=len(part)))
        return ChunkPage(chunks=chunks, next_cursor=chunks[-1].upto if rest else None)

    def _in(self, rng: AccountRange) -> list[str]:
        return [a for a in self.accounts if (rng.after is None or a > rng.after) and a <= rng.upto]

    @activity.defn(name="rate_accounts")
    async def rate_accounts(self, inp: CloseChunkInput) -> RateChunkResult:
        self.chunk_workflow_ids.append(activity.info().workflow_id)
        if inp.index == self.fail_rate_chunk:
            raise ApplicationError(f"chunk {inp.index} cannot be rated", type=Failure.RATING_ERROR,
                                   non_retryable=True)
        self.running += 1
        self.started += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.rate_delay)
            loop = asyncio.get_running_loop()
            deadline, full_since = loop.time() + 20, None
            while self.gate and self.started < self.gate_chunks and loop.time() < deadline:
                if self.running > self.gate:
                    break
                if self.running == self.gate:
                    full_since = full_since or loop.time()
                    if loop.time() - full_since >= 1.0:
                        break
                await asyncio.sleep(0.01)
        finally:
            self.running -= 1
        ids = self._in(inp.accounts)
        self.rated_accounts += ids
        return RateChunkResult(account_ids=ids, rated=len(ids), total=Decimal("1.00") * len(ids))

    @activity.defn(name="push_invoices")
    async def push_invoices(self, inp: CloseChunkInput) -> PushChunkResult:
        ids = self._in(inp.accounts)
        failed = [InvoiceFailure(invoice_id=self.accounts.index(a), account_id=a, error="card_declined")
                  for a in ids if a in self.failed_push_accounts]
        pushed = len(ids) - len(failed)
        return PushChunkResult(pushed=pushed, failed=failed, stripe_calls=3 * pushed)

    @activity.defn(name="push_invoice")
    async def push_invoice(self, inp: PushInvoiceInput) -> PushInvoiceResult:
        return PushInvoiceResult(invoice_id=inp.invoice_id, status="open", stripe_invoice_id="in_test",
                                 stripe_calls=3)

    def all(self) -> list:
        return [self.check_period, self.list_account_chunks, self.rate_accounts, self.push_invoices,
                self.push_invoice]


def task_queue() -> str:
    return f"close-wf-{uuid.uuid4().hex[:8]}"


def worker_for(client, queue: str, mock: MockClose):
    import os

    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    # Under mutation testing (tests/mutation/run.py) the mutated workflow code reads mutmut's switch from
    # os.environ, which Temporal's sandbox refuses: run the workflows unsandboxed there.
    runner = {"workflow_runner": UnsandboxedWorkflowRunner()} if "MUTANT_UNDER_TEST" in os.environ else {}
    return Worker(client, task_queue=queue, workflows=registry.workflows(), activities=mock.all(),
                  workflow_failure_exception_types=[Exception], **runner)
