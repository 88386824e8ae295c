"""Stand-ins for the contract term's activities, registered under the real activity names, so the term
workflow's own branches (sleeping until a month may be closed, checking until its close is final,
continue-as-new per month, amendments, the summary once) run without a database. The contract and
its months are computed by the real rules (billing.contracts) on the packaged catalog; each month
"uses" ``used_fraction`` of its commitment. Each stand-in records what it saw."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import decide_amendment, refused, schedule_of, summary_record
from billing import contracts as rules
from billing.catalog import load_catalog
from billing.contracts import ContractError, ContractHistory
from billing.periods import Period
from billing.rating import ModelUsage
from models.failures import Failure
from models.schemas import (
    ContractLoad,
    ContractMonthCheck,
    ContractMonthRecord,
    ContractMonthStatus,
    ContractSummaryRecord,
    RecordAmendmentInput,
    contract_record,
)
import capabilities as registry

CATALOG = load_catalog()


def new_history(contract_id: str, start: datetime, months: int = 12, commitment: int = 100_000) -> ContractHistory:
    version = CATALOG.at(start)
    return ContractHistory(rules.Contract("acme", commitment, start, months, version.version, contract_id))


@dataclass
class MockContracts:
    history: ContractHistory
    used_fraction: Decimal = Decimal("0.8")
    checks_before_final: dict[str, int] = field(default_factory=dict)  # period -> "not final" answers first
    reconciled: dict[str, ContractMonthRecord] = field(default_factory=dict)
    checks: list[tuple[str, datetime, bool]] = field(default_factory=list)  # (period, when, final)
    loads: int = 0
    summaries: int = 0
    recorded_requests: list[str] = field(default_factory=list)

    @property
    def version(self):
        return CATALOG.version(self.history.contract.catalog_version)

    def _load(self) -> ContractLoad:
        return ContractLoad(contract=contract_record(self.history), schedule=schedule_of(self.history, CATALOG),
                            reconciled=list(self.reconciled.values()), grace_hours=48)

    def _reconcile(self, period: Period) -> rules.MonthReconciliation:
        month = rules.contract_month(self.history, self.version, period)
        used = int(month.committed * self.used_fraction)
        return rules.reconcile_month(self.history, self.version, period,
                                     [ModelUsage("claude-haiku", used, max(0, used - month.committed))])

    @activity.defn(name="load_contract")
    async def load_contract(self, contract_id: str) -> ContractLoad:
        self.loads += 1
        return self._load()

    @activity.defn(name="contract_month_status")
    async def contract_month_status(self, inp: ContractMonthCheck) -> ContractMonthStatus:
        when = activity.info().current_attempt_scheduled_time
        left = self.checks_before_final.get(inp.period, 0)
        if left:
            self.checks_before_final[inp.period] = left - 1
            self.checks.append((inp.period, when, False))
            return ContractMonthStatus(period=inp.period, final=False, reason="close still running")
        self.checks.append((inp.period, when, True))
        r = self._reconcile(Period.parse(inp.period))
        rec = self.reconciled.setdefault(inp.period, ContractMonthRecord(
            period=inp.period, number=r.number, start=r.start, end=r.end, committed=r.committed, used=r.used,
            overage=r.overage, shortfall=r.shortfall, utilisation=r.utilisation, committed_charge=r.committed_charge,
            overage_charge=r.overage_charge, termination_fee=r.termination_fee, total=r.total,
            invoice_status="open", reconciled=True))
        return ContractMonthStatus(period=inp.period, final=True, reason="invoice open", month=rec)

    @activity.defn(name="record_contract_amendment")
    async def record_contract_amendment(self, inp: RecordAmendmentInput) -> ContractLoad:
        if inp.request_id not in self.recorded_requests:
            try:
                self.history = self.history.amend(decide_amendment(self.history, inp.request, inp.requested_at))
            except ContractError as err:
                raise refused(err) from err
            self.recorded_requests.append(inp.request_id)
        return self._load()

    @activity.defn(name="finish_contract_term")
    async def finish_contract_term(self, contract_id: str) -> ContractSummaryRecord:
        self.summaries += 1
        recs = [self._reconcile(Period.parse(p)) for p in self.reconciled]
        return summary_record(rules.summarize_term(self.history, self.version, recs))

    def all(self) -> list:
        return [self.load_contract, self.contract_month_status, self.record_contract_amendment,
                self.finish_contract_term]


def task_queue() -> str:
    return f"contract-wf-{uuid.uuid4().hex[:8]}"


def worker_for(client, queue: str, mock: MockContracts):
    from temporalio.worker import Worker

    return Worker(client, task_queue=queue, workflows=registry.workflows(), activities=mock.all(),
                  workflow_failure_exception_types=[Exception])


__all__ = ["MockContracts", "new_history", "task_queue", "worker_for", "ApplicationError", "Failure"]
