"""A committed-use contract's term, as ops read it in the Temporal UI.

ContractTermWorkflow (id ``contract-<contract id>``, one per contract term, started when the contract is
created; find it with ``BillingAccountIds = '<account>' AND WorkflowType = 'ContractTerm'``)
  1. load the contract, its months as it stands and the months already reconciled;
  2. take the first month not reconciled yet; sleep until its close may run (month end + the
     late-usage grace), then check every ``poll_seconds`` whether the close has billed it for good (its
     invoice is no longer a draft): the close rates the month and records its reconciliation with the
     invoice, so this workflow never computes money and a close re-run can never reconcile twice;
  3. once final, take the month's reconciliation (committed, used, shortfall, overage, utilisation)
     and continue as new for the next month: one run per month, so the history stays small however
     long the term;
  4. after the last month, write the contract summary and queue the notice (once), and finish.
Amendments are the ``amend`` update (raise the commitment, extend the term, terminate early): the
validator refuses what the rules refuse before anything is written to history (a lowered commitment,
an ended term); the handler records it through an activity that checks again under the account's lock
with the account's other contracts (an extension must not overlap the next contract). An accepted
amendment wakes the workflow, which recomputes which month it waits for.
The ``state`` query shows the contract, its months, what it waits for and the summary.
Why poll instead of a signal from the close: the close then needs to know nothing about contracts'
workflows (a close re-run, a close started by hand, a contract created after its month's chunk ran are
all the same to it), the invoice status is the system of record, and a check is one cheap query an hour
for the few hours between the grace's end and the close's end.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.contracts import ContractActivities, decide_amendment
    from billing.contracts import ContractError
    from billing.periods import Period
    from models.failures import Failure
    from models.schemas import (
        AmendRequest,
        ContractLoad,
        ContractMonthCheck,
        ContractMonthStatus,
        ContractSummaryRecord,
        ContractTermInput,
        ContractTermState,
        RecordAmendmentInput,
        contract_history,
    )
    from workflows.search_attributes import BILLING_ACCOUNT_IDS, BILLING_PERIOD

QUICK = dict(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1),
                             non_retryable_error_types=[Failure.NOT_FOUND, Failure.CONTRACT_REFUSED,
                                                        Failure.INVALID_PERIOD]),
)


def contract_workflow_id(contract_id: str | int) -> str:
    """The one workflow id of a contract's term, whoever starts it."""
    return f"contract-{contract_id}"


@workflow.defn(name="ContractTerm")
class ContractTermWorkflow:
    @workflow.init
    def __init__(self, inp: ContractTermInput) -> None:
        # The contract as the starter (or the previous run) knew it, so the update validator can judge
        # an amendment that arrives before the first load finishes.
        self._state = ContractTermState(contract=inp.contract)
        self._amended = False

    @workflow.query(name="state")
    def state(self) -> ContractTermState:
        return self._state

    @workflow.run
    async def run(self, inp: ContractTermInput) -> ContractSummaryRecord:
        load: ContractLoad = await workflow.execute_activity_method(
            ContractActivities.load_contract, inp.contract_id, **QUICK)
        self._take(load)
        workflow.upsert_search_attributes([BILLING_ACCOUNT_IDS.value_set([load.contract.account_id])])
        while True:
            month = self._next_month()
            if month is None:
                summary: ContractSummaryRecord = await workflow.execute_activity_method(
                    ContractActivities.finish_contract_term, inp.contract_id, **QUICK)
                self._state.summary, self._state.finished = summary, True
                self._state.waiting_for = self._state.next_check_at = None
                await workflow.wait_condition(workflow.all_handlers_finished)
                return summary
            workflow.upsert_search_attributes([BILLING_PERIOD.value_set(month.period)])
            if await self._wait_for_close(inp, month.period, load.grace_hours):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._next_month() is not None:
                    workflow.continue_as_new(inp.model_copy(update={"contract": self._state.contract}))

    async def _wait_for_close(self, inp: ContractTermInput, period_text: str, grace_hours: int) -> bool:
        """Wait until the month is reconciled (True), or until an amendment changes which month is
        next (False)."""
        self._state.waiting_for, self._state.checks = period_text, 0
        self._amended = False
        check_at = Period.parse(period_text).end + timedelta(hours=grace_hours)
        while True:
            self._state.next_check_at = check_at
            if await self._sleep_until(check_at):
                return False
            status: ContractMonthStatus = await workflow.execute_activity_method(
                ContractActivities.contract_month_status,
                ContractMonthCheck(contract_id=inp.contract_id, period=period_text), **QUICK)
            self._state.checks += 1
            self._state.last_check = status.reason
            if status.final:
                self._state.reconciled = [*[m for m in self._state.reconciled if m.period != period_text],
                                          status.month]
                return True
            check_at = workflow.now() + timedelta(seconds=inp.poll_seconds)

    async def _sleep_until(self, at: datetime) -> bool:
        """Durable timer to ``at``; True when an amendment came first."""
        delay = at - workflow.now()
        if delay <= timedelta(0):
            return self._amended
        try:
            await workflow.wait_condition(lambda: self._amended, timeout=delay)
        except TimeoutError:
            return False
        return True

    def _take(self, load: ContractLoad) -> None:
        history = contract_history(load.contract)
        self._state.contract = load.contract
        self._state.commitment_now = history.current_commitment
        self._state.end = history.end
        self._state.terminated = history.termination is not None
        self._state.schedule = load.schedule
        self._state.reconciled = load.reconciled

    def _next_month(self):
        done = {m.period for m in self._state.reconciled}
        return next((m for m in self._state.schedule if m.period not in done), None)

    # ---- amendments ---------------------------------------------------------------------------------
    @workflow.update(name="amend")
    async def amend(self, req: AmendRequest) -> ContractLoad:
        info = workflow.current_update_info()
        await workflow.wait_condition(lambda: self._state.contract is not None)  # started without it
        self._validate_amend(req)
        try:
            load: ContractLoad = await workflow.execute_activity_method(
                ContractActivities.record_contract_amendment,
                RecordAmendmentInput(contract_id=self._state.contract.id,
                                     request_id=f"{workflow.info().workflow_id}:{info.id if info else ''}",
                                     requested_at=workflow.now(), request=req),
                **QUICK)
        except ActivityError as err:  # refused under the lock (e.g. overlapping the next contract)
            cause = err.cause
            raise ApplicationError(cause.message if isinstance(cause, ApplicationError) else str(err),
                                   type=Failure.CONTRACT_REFUSED, non_retryable=True) from None
        self._take(load)
        self._amended = True
        return load

    @amend.validator
    def _validate_amend(self, req: AmendRequest) -> None:
        if self._state.contract is None:  # not loaded yet: the handler checks once it is
            return
        try:
            decide_amendment(contract_history(self._state.contract), req, workflow.now())
        except ContractError as err:
            raise ApplicationError(str(err), type=Failure.CONTRACT_REFUSED, non_retryable=True) from None


WORKFLOWS = (ContractTermWorkflow,)
