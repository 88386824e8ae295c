"""Record the histories of the payout workflows that test_replay.py runs through today's code.

    .venv/bin/python -m tests.integration.record_payouts_histories

Run it when one of these workflows gains a new shape ON PURPOSE (guarded by ``workflow.patched``), never
to make a failing replay pass. Stand-in activities under the real names (no database, no Stripe), on the
Temporal dev server (the payout's updates are sent as ops would send them).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from temporalio import activity
from temporalio.worker import Worker

import capabilities as registry
from models.schemas import (
    DecidedPage,
    DecidePayoutsInput,
    PayoutActionInput,
    PayoutCancel,
    PayoutInput,
    PayoutRetry,
    PayoutRunInput,
    PayoutView,
    PayPayoutsInput,
    PayPayoutsResult,
)
from tests.integration.histories_recorder import Recording, main, record
from workflows.payouts import PayoutRunWorkflow, PayoutWorkflow, ScheduledPayoutsWorkflow

def view(payout_id: str, status: str) -> PayoutView:
    return PayoutView(id=payout_id, creator_id=payout_id.split("-")[1], period=payout_id[-7:], status=status,
                      amount=Decimal("40.00"), carried_in=Decimal("0.00"), earnings=Decimal("40.00"),
                      adjustments=Decimal("0.00"), balance=Decimal("40.00"), carried_out=Decimal("0.00"),
                      message="$40.00 to pay", stripe_transfer_id="tr_1" if status == "paid" else None)


class MockPayouts:
    """Two pages of creators: the first pays one and fails one, the second carries one."""

    @activity.defn(name="accrue_credit_earnings")
    async def accrue_credit_earnings(self, period: str) -> int:
        return 0

    @activity.defn(name="decide_payouts")
    async def decide_payouts(self, inp: DecidePayoutsInput) -> DecidedPage:
        if inp.after is None:
            return DecidedPage(creators=2, to_pay=[f"payout-ann-{inp.period}", f"payout-bob-{inp.period}"],
                               next_cursor="bob")
        return DecidedPage(creators=1, carried=1)

    @activity.defn(name="pay_payouts")
    async def pay_payouts(self, inp: PayPayoutsInput) -> PayPayoutsResult:
        return PayPayoutsResult(paid=inp.payout_ids[:1], failed=inp.payout_ids[1:], amount_paid=Decimal("40.00"))

    @activity.defn(name="retry_payout")
    async def retry_payout(self, inp: PayoutActionInput) -> PayoutView:
        return view(inp.payout_id, "paid")

    @activity.defn(name="cancel_payout")
    async def cancel_payout(self, inp: PayoutActionInput) -> PayoutView:
        return view(inp.payout_id, "cancelled")

    def all(self) -> list:
        return [self.accrue_credit_earnings, self.decide_payouts, self.pay_payouts, self.retry_payout,
                self.cancel_payout]


async def payouts_scenario(rec: Recording) -> None:
    client, save = rec.client, rec.save
    queue = "record-payouts-histories"


    async with Worker(client, task_queue=queue, workflows=registry.workflows(), activities=MockPayouts().all(),
                      workflow_failure_exception_types=[Exception]):
        await client.execute_workflow(ScheduledPayoutsWorkflow.run, PayoutRunInput(period="2026-10", page_size=2),
                                      id="monthly-payouts-a", task_queue=queue)
        await save("scheduled_payouts_started", "monthly-payouts-a")
        await save("payout_run", "payouts-2026-10")

        retried = client.get_workflow_handle_for(PayoutWorkflow.run, "payout-bob-2026-10")
        await retried.terminate("the recorder starts its own, with a short linger")
        handle = await client.start_workflow(
            PayoutWorkflow.run, PayoutInput(payout_id="payout-cy-2026-10", creator_id="cy", period="2026-10",
                                            status="failed", reason="balance_insufficient", linger_seconds=1),
            id="payout-cy-2026-10", task_queue=queue)
        await asyncio.gather(handle.execute_update(PayoutWorkflow.retry, PayoutRetry(by="ana")),
                             handle.execute_update(PayoutWorkflow.retry, PayoutRetry(by="bo")))
        await handle.result()
        await save("payout_retried_twice_paid_once", "payout-cy-2026-10")

        handle = await client.start_workflow(
            PayoutWorkflow.run, PayoutInput(payout_id="payout-dan-2026-10", creator_id="dan", period="2026-10",
                                            status="failed", reason="no connected account", linger_seconds=1),
            id="payout-dan-2026-10", task_queue=queue)
        await handle.execute_update(PayoutWorkflow.cancel, PayoutCancel(by="ana", reason="creator left"))
        await handle.result()
        await save("payout_cancelled", "payout-dan-2026-10")


if __name__ == "__main__":
    main(record(payouts_scenario, dev_server=True))
