"""Fault family: a close that cannot make progress, and Temporal going away while a caller waits
(issue 14, defects 4 and 6): the waiting caller hears which step is retried and its last error, and
keeps waiting through a Temporal outage instead of exiting with "tcp connect error"."""

from __future__ import annotations

import pytest
from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from models.schemas import CloseChunkInput, ClosePeriodInput, RateChunkResult
from services import temporal as temporal_service
from services.temporal import follow
from tests.integration.close_mocks import MockClose, account_ids, task_queue, worker_for
from workflows.close import ClosePeriodWorkflow, close_workflow_id

PERIOD = "2026-10"


class FlakyRating(MockClose):
    """Rating fails twice (as with a database refusing connections), then works."""

    attempts = 0

    @activity.defn(name="rate_accounts")
    async def rate_accounts(self, inp: CloseChunkInput) -> RateChunkResult:
        FlakyRating.attempts += 1
        if activity.info().attempt < 3:
            raise RuntimeError("connection refused: is Postgres up? (DATABASE_URL)")
        return await MockClose.rate_accounts(self, inp)


async def test_a_waiting_close_shows_the_failing_step_and_its_last_error(dev_server, monkeypatch):
    monkeypatch.setattr(temporal_service, "STALL_CHECK_SECONDS", 0.2)
    mock = FlakyRating(account_ids(2))
    queue = task_queue()
    notices: list[str] = []
    async with worker_for(dev_server.client, queue, mock):
        handle = await dev_server.client.start_workflow(
            ClosePeriodWorkflow.run, ClosePeriodInput(period=PERIOD, chunk_size=10, parallel_chunks=1),
            id=f"{close_workflow_id(PERIOD)}-{queue}", task_queue=queue)
        result = await follow(handle, f"close {PERIOD}", on_notice=notices.append)
    assert result.accounts == 2
    assert "close 2026-10: rate_accounts attempt 2: connection refused: is Postgres up? (DATABASE_URL)" in notices


class _Handle:
    """A workflow handle whose server is away for the first ``outages`` waits."""

    def __init__(self, outages: int):
        self.outages = outages

    async def result(self):
        if self.outages:
            self.outages -= 1
            raise RPCError("tcp connect error: Connection refused (os error 111)", RPCStatusCode.UNAVAILABLE, b"")
        return "the close's result"


async def test_a_temporal_outage_while_waiting_is_waited_out_with_a_notice(monkeypatch):
    monkeypatch.setattr(temporal_service, "OUTAGE_RETRY_SECONDS", 0.01)
    notices: list[str] = []
    assert await follow(_Handle(outages=2), "close 2026-10", on_notice=notices.append) == "the close's result"
    assert notices == ["Temporal unreachable (tcp connect error: Connection refused (os error 111)); "
                       "close 2026-10 goes on durably, still waiting"] * 2


async def test_other_rpc_errors_still_fail_the_wait():
    class Denied(_Handle):
        async def result(self):
            raise RPCError("permission denied", RPCStatusCode.PERMISSION_DENIED, b"")

    with pytest.raises(RPCError):
        await follow(Denied(0), "close 2026-10")
