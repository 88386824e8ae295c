"""Record the histories of the credits workflows that test_replay.py runs through today's code.

    .venv/bin/python -m tests.integration.record_credits_histories

Run it when one of these workflows gains a new shape ON PURPOSE (guarded by ``workflow.patched``), never
to make a failing replay pass. Stand-in activities under the real names (no database, no Stripe), on the
time-skipping server (a grant's workflow sleeps for a year).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.worker import Worker

import capabilities as registry
from models.schemas import (
    CreditGrantInput,
    CreditGrantTimes,
    CreditPollResult,
    CreditSweepInput,
    CreditSweepPage,
)
from tests.integration.histories_recorder import Recording, main, record
from workflows.credits import CreditGrantsSweepWorkflow, CreditGrantWorkflow, CreditPurchasesPollWorkflow

class MockCredits:
    """A grant bought now that expires in a year with 95 credits left; one purchase granted by the poll;
    two pages of grants for the sweep."""

    def __init__(self, start) -> None:
        self.start = start

    @activity.defn(name="credit_grant_times")
    async def credit_grant_times(self, grant_id: str) -> CreditGrantTimes:
        expires = self.start + timedelta(days=365)
        return CreditGrantTimes(grant_id=grant_id, account_id="acct-1", expires_at=expires,
                                notice_at=expires - timedelta(days=7), expired=False)

    @activity.defn(name="credit_expiry_notice")
    async def credit_expiry_notice(self, grant_id: str) -> bool:
        return True

    @activity.defn(name="credit_expire_grant")
    async def credit_expire_grant(self, grant_id: str) -> str:
        return "95"

    @activity.defn(name="credit_poll_purchases")
    async def credit_poll_purchases(self) -> CreditPollResult:
        return CreditPollResult(checked=1, granted=["grant-cp_polled"], grants_to_watch=["grant-cp_polled"])

    @activity.defn(name="credit_sweep_page")
    async def credit_sweep_page(self, inp: CreditSweepInput) -> CreditSweepPage:
        if inp.cursor is None:
            return CreditSweepPage(grant_ids=["grant-a"], next_cursor="grant-a")
        return CreditSweepPage(grant_ids=["grant-b"], next_cursor=None, overdue_expired=1)

    def all(self) -> list:
        return [self.credit_grant_times, self.credit_expiry_notice, self.credit_expire_grant,
                self.credit_poll_purchases, self.credit_sweep_page]


async def credits_scenario(rec: Recording) -> None:
    client, save = rec.client, rec.save
    queue = "record-credits-histories"


    mock = MockCredits(await rec.env.get_current_time())
    async with Worker(client, task_queue=queue, workflows=registry.workflows(), activities=mock.all(),
                      workflow_failure_exception_types=[Exception]):
        await client.execute_workflow(CreditGrantWorkflow.run, CreditGrantInput(grant_id="grant-cp_1"),
                                      id="credit-grant-grant-cp_1", task_queue=queue)
        await save("credit_grant_notice_then_expiry", "credit-grant-grant-cp_1")
        await client.execute_workflow(CreditPurchasesPollWorkflow.run, 48, id="credit-purchases-poll-a",
                                      task_queue=queue)
        await save("credit_purchases_poll", "credit-purchases-poll-a")
        await client.execute_workflow(CreditGrantsSweepWorkflow.run, CreditSweepInput(), id="credit-grants-sweep-a",
                                      task_queue=queue)
        await save("credit_grants_sweep", "credit-grants-sweep-a")


if __name__ == "__main__":
    main(record(credits_scenario))
