"""The payout workflows on the Temporal dev server (updates: the time-skipping server does not advance
time while a client waits on one), with real activities on Postgres and the emulator."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import capabilities as registry
from models.db import get_engine
from repositories.stripe_requests import stripe_requests_for
from services import payouts as service
from services.errors import Conflict, root_cause
from temporalio.client import WorkflowUpdateFailedError
from tests.conftest import venv_binary
from tests.payouts_support import creator, deps, earn, transfers, utc
from workers.worker import build_worker


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_server():
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=list(registry.search_attributes().values()),
        data_converter=pydantic_data_converter,
    )
    yield env
    await env.shutdown()


async def poll(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def names() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"paid{tag}", f"small{tag}", f"broken{tag}"


async def test_the_run_pays_carries_and_leaves_a_failed_payout_waiting_for_ops_whose_retries_pay_once(
        dev_server, settings, emulator):
    env = dev_server
    settings = settings.model_copy(update={"payouts_page_size": 2, "stripe_max_network_retries": 0})
    engine = get_engine(settings.database_url)
    paid, small, broken = names()
    creator(settings, emulator, paid)
    creator(settings, emulator, small)
    creator(settings, emulator, broken, enable=False)  # onboarding not finished: no transfers capability
    earn(settings, paid, "40.00", utc(2026, 10, 20))
    earn(settings, small, "24.99", utc(2026, 10, 20))
    earn(settings, broken, "30.00", utc(2026, 10, 20))

    async def temporal():
        return env.client

    async with build_worker(env.client, settings, deps(settings), fail_fast=True):
        result = await service.run_payouts(temporal, settings, "2026-10")
        assert (result.creators, result.paid, result.carried, result.amount_paid) == (3, 1, 1, Decimal("40.00"))
        failed_id = f"payout-{broken}-2026-10"
        assert result.failed == [failed_id]
        assert "transfers" in service.show_payout(engine, failed_id).failure_reason
        assert [p.id for p in service.list_payouts(engine, "2026-10", "failed")] == [failed_id]

        async def listed(query: str):
            return [w.id async for w in env.client.list_workflows(query)]
        assert await poll(lambda: listed(f"PayoutStatus = 'failed' AND WorkflowId = '{failed_id}'"),
                          what="the failed payout in the UI query") == [failed_id]

        # the creator finishes onboarding; two ops retries at once pay exactly once
        account = service.show_payout(engine, failed_id).destination
        emulator.enable_account(account)
        a, b = await asyncio.gather(service.retry_payout(temporal, settings, engine, failed_id, "ana"),
                                    service.retry_payout(temporal, settings, engine, failed_id, "bo"))
        assert a.status == b.status == "paid" and a.stripe_transfer_id == b.stripe_transfer_id
        assert len(transfers(emulator, group=failed_id)) == 1
        assert await poll(lambda: listed(f"PayoutStatus = 'paid' AND WorkflowId = '{failed_id}'"), what="paid")

        # a retry of a paid payout is refused by the validator, before anything is written
        with get_engine(settings.database_url).begin() as conn:
            recorded = len(stripe_requests_for(conn, failed_id))
        history_before = len((await env.client.get_workflow_handle(failed_id).fetch_history()).events)
        with pytest.raises(Conflict, match="is paid: a retry is refused"):
            await service.retry_payout(temporal, settings, engine, failed_id, "cy")
        with pytest.raises(Conflict, match="is paid: nothing to cancel"):
            await service.cancel_payout(temporal, settings, engine, failed_id, "cy", "too late")
        assert len((await env.client.get_workflow_handle(failed_id).fetch_history()).events) == history_before
        with get_engine(settings.database_url).begin() as conn:
            assert len(stripe_requests_for(conn, failed_id)) == recorded
        assert len(transfers(emulator)) == 2  # the paid creator's and this one: nothing twice

        # asking for the month again reports the finished run: nobody is paid again
        again = await service.run_payouts(temporal, settings, "2026-10")
        assert again == result and len(transfers(emulator)) == 2


async def test_a_cancelled_payout_returns_its_amount_to_next_months_balance(dev_server, settings, emulator):
    env = dev_server  # September: each test's month has its own payouts-YYYY-MM on the shared server
    settings = settings.model_copy(update={"stripe_max_network_retries": 0})
    engine = get_engine(settings.database_url)
    _, _, broken = names()
    creator(settings, emulator, broken, onboard=False)
    earn(settings, broken, "30.00", utc(2026, 9, 20))

    async def temporal():
        return env.client

    async with build_worker(env.client, settings, deps(settings), fail_fast=True):
        result = await service.run_payouts(temporal, settings, "2026-09")
        failed_id = f"payout-{broken}-2026-09"
        assert result.failed == [failed_id]
        with pytest.raises(WorkflowUpdateFailedError) as err:  # the validator: nothing is written
            await env.client.get_workflow_handle(failed_id).execute_update(
                "cancel", {"by": "ana", "reason": " "}, result_type=dict)
        assert root_cause(err.value) == "reason: required"
        view = await service.cancel_payout(temporal, settings, engine, failed_id, "ana", "creator left the platform")
        assert view.status == "cancelled" and "creator left" in view.cancel_reason
        with pytest.raises(Conflict, match="is cancelled: a retry is refused"):
            await service.retry_payout(temporal, settings, engine, failed_id, "bo")
    from tests.payouts_support import decide

    decide(deps(settings), "2026-10")
    nov = service.show_payout(engine, f"payout-{broken}-2026-10")
    assert nov.carried_in == Decimal("30.00") and nov.status == "pending"
    assert transfers(emulator) == []
