"""Activities of a committed-use contract's term (workflow ``contract-<id>``). Each may run twice: loading
reads, a month is taken as final once (``reconciled_at``), an amendment is recorded once per update id,
the summary and its notice are written once. What they return is small (one contract, at most a few
dozen months)."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from billing import contracts as rules
from billing.catalog import Catalog
from billing.contracts import AmendmentKind, ContractError, ContractHistory, MonthReconciliation, TermSummary
from billing.periods import Period, PeriodError
from models.failures import Failure
from models.schemas import (
    ContractLoad,
    ContractMonthCheck,
    ContractMonthRecord,
    ContractMonthStatus,
    ContractSummaryRecord,
    RecordAmendmentInput,
    ScheduledMonth,
    contract_history,
    contract_record,
)
from repositories import accounts, notifications
from repositories import contracts as rows

SUMMARY_NOTICE = "contract_term_summary"


def schedule_of(history: ContractHistory, catalog: Catalog) -> list[ScheduledMonth]:
    version = catalog.version(history.contract.catalog_version)
    return [ScheduledMonth(period=str(m.period), number=m.number, start=m.start, end=m.end, committed=m.committed,
                           last=m.last) for m in rules.term_months(history, version)]


def month_record(row) -> ContractMonthRecord:
    return ContractMonthRecord(
        period=row.period, number=row.number, start=row.starts_at, end=row.ends_at, committed=row.committed,
        used=row.used, overage=row.overage, shortfall=row.shortfall, utilisation=row.utilisation,
        committed_charge=row.committed_charge, overage_charge=row.overage_charge,
        termination_fee=row.termination_fee, total=row.total, invoice_status=row.invoice_status,
        reconciled=row.reconciled_at is not None)


def summary_record(s: TermSummary) -> ContractSummaryRecord:
    return ContractSummaryRecord(summary=s, text=rules.describe_summary(s))


def decide_amendment(history: ContractHistory, request, requested_at, others=()):
    """The amendment the rules make of an ops request (``ContractError`` when refused): the one
    function the workflow's update validator and the recording activity both call."""
    kind = request.kind
    if kind == AmendmentKind.raise_commitment.value:
        if request.commitment is None:
            raise ContractError("is required to raise the commitment", field="commitment")
        return rules.raise_commitment(history, request.commitment, requested_at)
    if kind == AmendmentKind.extend_term.value:
        if request.extra_months is None:
            raise ContractError("is required to extend the term", field="extra_months")
        return rules.extend_term(history, request.extra_months, requested_at, others)
    if kind == AmendmentKind.terminate.value:
        return rules.terminate_early(history, requested_at)
    raise ContractError(f"must be one of {', '.join(k.value for k in AmendmentKind)}, got {kind!r}", field="kind")


def refused(err: ContractError) -> ApplicationError:
    return ApplicationError(str(err), type=Failure.CONTRACT_REFUSED, non_retryable=True)


class ContractActivities:
    """The term workflow's activities, built from the worker's one dependency object."""

    def __init__(self, deps: Deps):
        self.deps = deps

    def _contract(self, conn, contract_id: str, lock: bool = False):
        row = rows.get_contract(conn, int(contract_id), lock=lock) if contract_id.isdigit() else None
        if row is None:
            raise ApplicationError(f"no contract {contract_id!r}", type=Failure.NOT_FOUND, non_retryable=True)
        try:
            return row, rows.histories(conn, [row])[0]
        except ContractError as err:
            raise refused(err) from err

    def _load(self, conn, contract_id: str, lock: bool = False) -> ContractLoad:
        _, history = self._contract(conn, contract_id, lock)
        return ContractLoad(contract=contract_record(history), schedule=schedule_of(history, self.deps.catalog),
                            reconciled=[month_record(r) for r in rows.months_of(conn, int(contract_id))
                                        if r.reconciled_at is not None],
                            grace_hours=self.deps.settings.late_usage_grace_hours)

    @activity.defn(name="load_contract")
    def load_contract(self, contract_id: str) -> ContractLoad:
        """The contract as stored, its months as it stands, and the months already reconciled."""
        with self.deps.engine.begin() as conn:
            return self._load(conn, contract_id)

    @activity.defn(name="contract_month_status")
    def contract_month_status(self, inp: ContractMonthCheck) -> ContractMonthStatus:
        """Has the close billed this contract month for good? It has once the month's invoice is no
        longer a draft (pushed to Stripe, or left for ops): then its reconciliation, recorded by the
        close with the invoice, is final and is marked reconciled (once; a second call reads it)."""
        try:
            period = Period.parse(inp.period)
        except PeriodError as err:
            raise ApplicationError(str(err), type=Failure.INVALID_PERIOD, non_retryable=True) from err
        with self.deps.engine.begin() as conn:
            row = rows.month_with_invoice(conn, int(inp.contract_id), period)
            if row is None:
                return ContractMonthStatus(period=inp.period, final=False,
                                           reason=f"the close of {period} has not billed it yet")
            if row.invoice_status == "draft":
                return ContractMonthStatus(period=inp.period, final=False, month=month_record(row),
                                           reason=f"rated; waiting for the close of {period} to finish its invoice")
            rows.mark_reconciled(conn, int(inp.contract_id), period, self.deps.clock())
            row = rows.month_with_invoice(conn, int(inp.contract_id), period)
        return ContractMonthStatus(period=inp.period, final=True, month=month_record(row),
                                   reason=f"invoice {row.invoice_id} is {row.invoice_status}")

    @activity.defn(name="record_contract_amendment")
    def record_contract_amendment(self, inp: RecordAmendmentInput) -> ContractLoad:
        """Record an amendment the workflow accepted, once per update id. Checked again here, under
        the account's lock, with what the validator could not see: the account's other contracts (an
        extension must not overlap the next one). Refused: a non-retryable ``ContractRefused``."""
        with self.deps.engine.begin() as conn:
            if rows.amendment_by_request(conn, inp.request_id) is not None:
                return self._load(conn, inp.contract_id)
            row, _ = self._contract(conn, inp.contract_id)
            accounts.lock_account(conn, row.account_id)  # one contract change of an account at a time
            row, history = self._contract(conn, inp.contract_id, lock=True)
            others = rows.histories(conn, [r for r in rows.contracts_of(conn, [row.account_id]) if r.id != row.id])
            try:
                amendment = decide_amendment(history, inp.request, inp.requested_at, others)
                amended = history.amend(amendment)
            except ContractError as err:
                raise refused(err) from err
            rows.append_amendment(conn, row.id, inp.request_id, amendment, amended.end)
            return self._load(conn, inp.contract_id)

    @activity.defn(name="finish_contract_term")
    def finish_contract_term(self, contract_id: str) -> ContractSummaryRecord:
        """Write the contract summary (totals, average utilisation, months under commitment) and queue
        the notice, in one transaction, once; a second call returns the same summary."""
        with self.deps.engine.begin() as conn:
            row, history = self._contract(conn, contract_id)
            recs: list[MonthReconciliation] = [rows.as_reconciliation(r, row.account_id)
                                               for r in rows.months_of(conn, row.id) if r.reconciled_at is not None]
            try:
                summary = rules.summarize_term(history, self.deps.catalog.version(row.catalog_version), recs)
            except ContractError as err:
                raise refused(err) from err
            out = summary_record(summary)
            rows.write_summary(conn, summary)
            notifications.notify(
                conn, account_id=row.account_id, kind=SUMMARY_NOTICE, dedupe_key=f"contract-{row.id}-summary",
                subject=f"Your committed-use contract {row.id} has {'ended early' if summary.terminated_early else 'ended'}",
                body=out.text, payload=out.model_dump(mode="json"))
        return out
