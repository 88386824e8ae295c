"""Committed-use contracts: create one (and start its term workflow), show one, amend one (a Temporal
update of ``contract-<id>``), and this month's commitment for the billing page.

A contract makes its account enterprise from the start day: an account that does not exist yet is
created as an enterprise account billed from that day; an existing account on another plan moves to
enterprise on that day (the days before it are rated as usual). The rules are ``billing.contracts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import Connection, Engine
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.contracts import month_record, schedule_of, summary_record
from billing import contracts as rules
from billing.catalog import Catalog
from billing.contracts import ENTERPRISE_PLAN, AmendmentKind, ContractHistory
from billing.periods import Period
from billing.terms import Terms
from models.schemas import (
    AmendRequest,
    ContractRecord,
    ContractTermInput,
    ContractTermState,
    ContractView,
    contract_record,
)
from models.settings import Settings
from repositories import accounts
from repositories import contracts as rows
from services.errors import Conflict, InvalidInput, NotFound, refused_input
from services.inputs import check_id
from services.temporal import TemporalClient
from workflows.contracts import ContractTermWorkflow, contract_workflow_id
from workflows.search_attributes import BILLING_ACCOUNT_IDS

__all__ = ["ContractCreated", "create_contract", "start_term", "contract_view", "account_contracts",
           "amend_contract", "term_state", "month_commitment", "AMEND_KINDS"]

AMEND_KINDS = tuple(k.value for k in AmendmentKind)


@dataclass(frozen=True)
class ContractCreated:
    contract_id: str
    account_id: str
    created: bool  # False: the same contract was already there (the command ran twice)
    account_created: bool = False
    record: ContractRecord | None = None

    @property
    def workflow_id(self) -> str:
        return contract_workflow_id(self.contract_id)


MAX_COUNT = 10**12  # far above any commitment, far inside the database's integers


def _whole(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"must be a whole number, got {value!r}")
    if abs(value) > MAX_COUNT:
        raise InvalidInput(field, f"must be at most {MAX_COUNT:,}, got {value:,}")
    return value


def create_contract(engine: Engine, catalog: Catalog, *, account_id: str, commitment: int, start: date,
                    months: int, email: str | None = None, now: datetime | None = None) -> ContractCreated:
    """Validate and store a contract (``billing.contracts.create_contract``: the tier comes from the
    catalog; at least the minimum commitment and term; a start in an open period, covered by the
    catalog, not overlapping the account's other contracts), in one transaction holding the account's
    lock. The same contract twice is found, not stored twice; another one starting that day is a
    Conflict. Refused input: ``InvalidInput`` naming the field and the rule."""
    check_id(account_id)
    commitment, months = _whole(commitment, "commitment"), _whole(months, "months")
    now = now or datetime.now(timezone.utc)
    with refused_input("start"):
        start_at = rules.utc_day(start)
    with engine.begin() as conn:
        account = accounts.lock_account(conn, account_id)
        mine = rows.contracts_of(conn, [account_id])
        same = next((r for r in mine if r.starts_at == start_at), None)
        if same is not None:
            if (same.commitment, same.months) == (commitment, months):
                return ContractCreated(str(same.id), account_id, created=False,
                                       record=contract_record(rows.histories(conn, [same])[0]))
            raise Conflict(f"account {account_id!r} already has contract {same.id} from {start_at:%Y-%m-%d} "
                           f"({same.commitment:,} a month for {same.months} months); amend it instead")
        if account is not None:
            _check_can_move_to_enterprise(conn, account, start_at)
        latest = rows.latest_final_period(conn)
        with refused_input():
            contract = rules.create_contract(
                catalog, account=account_id, commitment=commitment, start=start_at, months=months,
                earliest_open_period=latest.next() if latest else Period.of(start_at),
                others=rows.histories(conn, mine))
        account_created = account is None and accounts.create_account(
            conn, account_id=account_id, plan=ENTERPRISE_PLAN, seats=1, overage_opt_in=False, email=email,
            billing_starts_at=start_at)
        row, _ = rows.insert_contract(conn, contract, rules.anniversary(start_at, months))
        current = accounts.terms_at(conn, account_id, start_at)
        if current is None or current.plan != ENTERPRISE_PLAN:
            accounts.append_terms(conn, account_id=account_id, effective_from=start_at, terms=Terms(ENTERPRISE_PLAN),
                                  reason=f"contract {row.id}", now=now)
        record = contract_record(rows.histories(conn, [row])[0])
    return ContractCreated(str(row.id), account_id, created=True, account_created=bool(account_created),
                           record=record)


def _check_can_move_to_enterprise(conn: Connection, account, start_at: datetime) -> None:
    if start_at < account.billing_starts_at:
        raise InvalidInput("start", f"{start_at:%Y-%m-%d} is before the account's billing start "
                                    f"{account.billing_starts_at:%Y-%m-%d}")
    if accounts.accounts_with_terms_from(conn, [account.id], start_at + timedelta(days=1)):
        raise InvalidInput("start", f"account {account.id!r} has terms changes after {start_at:%Y-%m-%d}; a contract "
                                    "makes it enterprise from its start for the whole term")


async def start_term(temporal: TemporalClient, settings: Settings, created: ContractCreated,
                     poll_seconds: int | None = None) -> str:
    """Start the contract's term workflow ``contract-<id>`` (a running or finished one is left as it
    is: starting it again is harmless). Returns its id."""
    client = await temporal()
    inp = ContractTermInput(contract_id=created.contract_id, contract=created.record,
                            poll_seconds=poll_seconds or settings.contract_poll_seconds)
    try:
        await client.start_workflow(
            ContractTermWorkflow.run, inp, id=created.workflow_id, task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_ACCOUNT_IDS, [created.account_id])]),
        )
    except WorkflowAlreadyStartedError:  # it finished before: that run was the term
        pass
    return created.workflow_id


def _require(conn: Connection, contract_id: str):
    row = rows.get_contract(conn, int(contract_id)) if str(contract_id).isdigit() else None
    if row is None:
        raise NotFound(f"no contract {contract_id!r}")
    return row


def _view(conn: Connection, catalog: Catalog, row) -> ContractView:
    history: ContractHistory = rows.histories(conn, [row])[0]
    pricing = rules.contract_pricing(catalog.version(row.catalog_version))
    now_commitment = history.current_commitment
    summary = rows.summary_of(conn, row.id)
    return ContractView(
        id=str(row.id), account_id=row.account_id, workflow_id=contract_workflow_id(row.id),
        catalog_version=row.catalog_version, start=history.start, end=history.end, months=history.months,
        commitment=history.contract.commitment, commitment_now=now_commitment,
        discount=pricing.tier(now_commitment).discount, rate=pricing.discounted_rate(now_commitment),
        standard_rate=pricing.standard_rate, terminated=history.termination is not None,
        amendments=contract_record(history).amendments, schedule=schedule_of(history, catalog),
        recorded=[month_record(r) for r in rows.months_of(conn, row.id)],
        summary=None if summary is None else _summary(history, catalog, conn),
    )


def _summary(history: ContractHistory, catalog: Catalog, conn: Connection):
    recs = [rows.as_reconciliation(r, history.contract.account) for r in rows.months_of(conn, int(history.contract.id))
            if r.reconciled_at is not None]
    return summary_record(rules.summarize_term(history, catalog.version(history.contract.catalog_version), recs))


def contract_view(engine: Engine, catalog: Catalog, contract_id: str) -> ContractView:
    """The contract as it stands: terms, amendments, its months with each recorded reconciliation
    (utilisation per month), and the summary once the term is over."""
    with engine.begin() as conn:
        return _view(conn, catalog, _require(conn, contract_id))


def account_contracts(engine: Engine, catalog: Catalog, account_id: str) -> list[ContractView]:
    with engine.begin() as conn:
        if accounts.get_account(conn, account_id) is None:
            raise NotFound(f"no account {account_id!r}")
        return [_view(conn, catalog, r) for r in rows.contracts_of(conn, [account_id])]


def _amend_request(kind: str, commitment: int | None, extra_months: int | None) -> AmendRequest:
    if kind not in AMEND_KINDS:
        raise InvalidInput("kind", f"must be one of {', '.join(AMEND_KINDS)}, got {kind!r}")
    if kind == "raise_commitment" and (commitment is None or _whole(commitment, "commitment") <= 0):
        raise InvalidInput("commitment", "give the new monthly commitment (a whole number of executions)")
    if kind == "extend_term" and (extra_months is None or _whole(extra_months, "extra_months") <= 0):
        raise InvalidInput("extra_months", "give the number of months to add (at least 1)")
    return AmendRequest(kind=kind, commitment=commitment if kind == "raise_commitment" else None,
                        extra_months=extra_months if kind == "extend_term" else None)


async def amend_contract(temporal: TemporalClient, engine: Engine, catalog: Catalog, contract_id: str, kind: str,
                         commitment: int | None = None, extra_months: int | None = None) -> ContractView:
    """Amend the contract through its term workflow's ``amend`` update (validated there against the
    contract as it stands, recorded once). A refusal is ``InvalidInput`` naming the field and the rule."""
    req = _amend_request(kind, commitment, extra_months)
    with engine.begin() as conn:
        _require(conn, contract_id)
    client = await temporal()
    handle = client.get_workflow_handle_for(ContractTermWorkflow.run, contract_workflow_id(contract_id))
    try:
        await handle.execute_update(ContractTermWorkflow.amend, req)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(err)
        field, sep, reason = message.partition(": ")
        raise InvalidInput(field if sep and " " not in field else None, reason if sep else message, message) from None
    except RPCError as err:  # the term is over (workflow finished) or was never started
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        raise Conflict(f"contract {contract_id}: its term workflow {contract_workflow_id(contract_id)} is not "
                       "running (the term is over, or it was never started: `tally contracts create` again starts "
                       "it)") from None
    return contract_view(engine, catalog, contract_id)


async def term_state(temporal: TemporalClient, contract_id: str) -> ContractTermState:
    """The term workflow's ``state`` query (what it waits for, the months it reconciled)."""
    client = await temporal()
    handle = client.get_workflow_handle_for(ContractTermWorkflow.run, contract_workflow_id(contract_id))
    return await handle.query(ContractTermWorkflow.state)


# ---- the billing page ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MonthCommitment:
    """The contract month an instant falls in, for the billing page."""

    contract_id: str
    monthly_commitment: int  # in force at ``now``
    discount_percent: str
    committed: int  # this contract month's committed executions (prorated at the ends of the term)
    used: int  # executions of the contract month so far (sandbox tries excluded)
    start: datetime
    end: datetime
    term_end: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.committed - self.used)

    @property
    def overage(self) -> int:
        return max(0, self.used - self.committed)

    @property
    def percent_used(self) -> str:
        return f"{rules.utilisation(self.used, self.committed) * 100:.1f}%"


def month_commitment(conn: Connection, catalog: Catalog, account_id: str, now: datetime) -> MonthCommitment | None:
    """The commitment of the contract in force at ``now`` and how much of this contract month it
    has used so far; None when no contract is in force."""
    from repositories import usage

    day = datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
    for h in rows.histories(conn, rows.contracts_of(conn, [account_id], starting_before=now)):
        if not h.start <= now < h.end:
            continue
        version = catalog.version(h.contract.catalog_version)
        month = rules.contract_month(h, version, Period.of(now))
        commitment = h.commitment_on(day)
        used = usage.count_non_sandbox(conn, account_id, month.start, min(month.end, now))
        discount = rules.contract_pricing(version).tier(commitment).discount
        return MonthCommitment(h.contract.id, commitment, f"{(discount * 100).normalize():f}%", month.committed,
                               used, month.start, month.end, h.end)
    return None
