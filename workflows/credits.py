"""Prepaid credits, as ops read them in the Temporal UI.

Purchases are granted where Stripe's signed webhook lands (services/credits.py); these workflows do
what must outlive a request:

CreditGrantWorkflow (id ``credit-grant-<grant id>``; one per grant, for its whole life)
  1. read the grant's dates (``credit_grant_times``); an already expired grant ends here;
  2. sleep until 7 days before ``expires_at`` and queue the "credits expire soon" notice in the
     notifications outbox (once per grant, only when something is left);
  3. sleep until ``expires_at`` + the late-usage grace (late executions from before ``expires_at`` still
     consume), then expire exactly the remainder once (``credit_expire_grant``: an entry dated
     ``expires_at``; nothing when nothing is left). Ops' ``tally credits expire-now`` may have done it
     already: the workflow then finds nothing to expire.
  Durable timers, not polling: 12 months are two timers in the history. Search attribute
  ``BillingAccountIds`` names the account.
CreditPurchasesPollWorkflow (schedule ``credit-purchases-poll``, every TALLY_CREDITS_POLL_MINUTES)
  asks Stripe about purchases pending for more than TALLY_CREDITS_PENDING_MINUTES (the webhook may
  never come): a paid session grants, an expired one settles without a grant. Then it starts the
  workflow of every grant created in the last two hours (a webhook's grant included); one that
  exists is left as it is.
CreditGrantsSweepWorkflow (schedule ``credit-grants-sweep``, daily at 04:00 UTC)
  pages through every grant not expired yet and starts ``credit-grant-<id>`` under the same id where it
  is missing (a restored database, a terminated run); a grant past its expiry and grace is expired on
  the spot. Continues as new when the history grows.
Workflows only orchestrate: no database, no Stripe, no wall clock.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.credits import CreditActivities
    from models.failures import Failure
    from models.schemas import (
        CreditGrantInput,
        CreditGrantResult,
        CreditGrantTimes,
        CreditPollResult,
        CreditSweepInput,
        CreditSweepPage,
        CreditSweepResult,
    )
    from services.credits import grant_workflow_id
    from workflows.search_attributes import BILLING_ACCOUNT_IDS

QUICK = dict(
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5),
                             non_retryable_error_types=[Failure.GRANT_NOT_FOUND]),
)
POLL = dict(
    start_to_close_timeout=timedelta(minutes=20),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=2),
                             maximum_attempts=5),
)


@workflow.defn(name="CreditGrant")
class CreditGrantWorkflow:
    def __init__(self) -> None:
        self.state = "starting"

    @workflow.query
    def progress(self) -> str:
        return self.state

    @workflow.run
    async def run(self, inp: CreditGrantInput) -> CreditGrantResult:
        times: CreditGrantTimes = await workflow.execute_activity_method(
            CreditActivities.credit_grant_times, inp.grant_id, **QUICK)
        if times.expired:
            self.state = "already expired"
            return CreditGrantResult(grant_id=inp.grant_id, already_expired=True)
        result = CreditGrantResult(grant_id=inp.grant_id)
        if workflow.now() < times.expires_at:
            if workflow.now() < times.notice_at:
                self.state = f"waiting for the notice at {times.notice_at.isoformat()}"
                await workflow.sleep(times.notice_at - workflow.now())
            self.state = "queueing the expiry notice"
            result.notice_queued = await workflow.execute_activity_method(
                CreditActivities.credit_expiry_notice, inp.grant_id, **QUICK)
        expire_after = times.expires_at + timedelta(hours=inp.grace_hours)
        if workflow.now() < expire_after:
            self.state = f"waiting for expiry plus grace at {expire_after.isoformat()}"
            await workflow.sleep(expire_after - workflow.now())
        self.state = "expiring the remainder"
        result.expired = Decimal(await workflow.execute_activity_method(
            CreditActivities.credit_expire_grant, inp.grant_id, **QUICK))
        self.state = "done"
        return result


async def _start_grant_workflow(grant_id: str, grace_hours: int, account_id: str | None = None) -> bool:
    """Start ``credit-grant-<id>`` as an abandoned child; False when it runs already or finished
    (a terminated or failed run is started again under the same id)."""
    attrs = [SearchAttributePair(BILLING_ACCOUNT_IDS, [account_id])] if account_id else []
    try:
        await workflow.start_child_workflow(
            CreditGrantWorkflow.run, CreditGrantInput(grant_id=grant_id, grace_hours=grace_hours),
            id=grant_workflow_id(grant_id), task_queue=workflow.info().task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes(attrs) if attrs else None,
        )
        return True
    except WorkflowAlreadyStartedError:
        return False


@workflow.defn(name="CreditPurchasesPoll")
class CreditPurchasesPollWorkflow:
    @workflow.run
    async def run(self, grace_hours: int) -> CreditPollResult:
        res: CreditPollResult = await workflow.execute_activity_method(CreditActivities.credit_poll_purchases, **POLL)
        for grant_id in res.grants_to_watch:
            await _start_grant_workflow(grant_id, grace_hours)
        return res


@workflow.defn(name="CreditGrantsSweep")
class CreditGrantsSweepWorkflow:
    @workflow.run
    async def run(self, inp: CreditSweepInput) -> CreditSweepResult:
        checked, started, overdue = 0, inp.started, inp.overdue_expired
        cursor = inp.cursor
        while True:
            page: CreditSweepPage = await workflow.execute_activity_method(
                CreditActivities.credit_sweep_page, inp.model_copy(update={"cursor": cursor}), **QUICK)
            overdue += page.overdue_expired
            for grant_id in page.grant_ids:
                checked += 1
                started += await _start_grant_workflow(grant_id, inp.grace_hours)
            cursor = page.next_cursor
            if cursor is None:
                return CreditSweepResult(checked=checked, started=started, overdue_expired=overdue)
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(inp.model_copy(update={"cursor": cursor, "started": started,
                                                                "overdue_expired": overdue}))


WORKFLOWS = (CreditGrantWorkflow, CreditPurchasesPollWorkflow, CreditGrantsSweepWorkflow)
