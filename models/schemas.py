"""Pydantic contracts crossing process boundaries: workflow and activity inputs/outputs, CLI JSON.

Workflow/activity payloads stay small (periods, account-id ranges, counters), never lists of rows.
They travel through Temporal with the pydantic data converter, so Decimal and datetime survive intact.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from billing.contracts import TermSummary


# ---- usage recorded (what usage observers hear, capabilities.observe_usage) -----------------------
class RecordedUsage(BaseModel):
    """A committed batch of executions: the accounts that got new ones, and when it was recorded."""

    account_ids: tuple[str, ...]
    recorded_at: datetime


# ---- monthly close ------------------------------------------------------------------------------
class AccountRange(BaseModel):
    """Accounts with ``after < id <= upto`` in id order (``after`` None: from the first)."""

    after: str | None
    upto: str
    count: int


class ListChunksInput(BaseModel):
    period: str
    after: str | None = None
    chunk_size: int
    max_chunks: int = 50


class ChunkPage(BaseModel):
    chunks: list[AccountRange]
    next_cursor: str | None


class PeriodCheck(BaseModel):
    period: str
    period_start: datetime
    period_end: datetime
    accounts: int
    catalog_version: str


class CloseChunkInput(BaseModel):
    period: str
    index: int
    accounts: AccountRange
    push_to_stripe: bool = True
    push_heartbeat_seconds: int = Field(default=30, ge=1, le=600)
    rate_heartbeat_seconds: int = Field(default=30, ge=1, le=600)


class RateChunkResult(BaseModel):
    account_ids: list[str] = Field(default_factory=list)
    rated: int = 0  # invoices written or rewritten (draft / no_charge)
    frozen: int = 0  # invoices already pushed or final: left exactly as they were
    no_charge: int = 0
    total: Decimal = Decimal("0.00")


class InvoiceFailure(BaseModel):
    invoice_id: int
    account_id: str
    error: str
    kind: str = "InvoiceRejected"  # a ``models.failures.Failure`` value, e.g. CustomerMismatch


class PushChunkResult(BaseModel):
    pushed: int = 0
    already_pushed: int = 0
    failed: list[InvoiceFailure] = Field(default_factory=list)
    stripe_calls: int = 0


class ChunkResult(BaseModel):
    index: int
    rate: RateChunkResult
    push: PushChunkResult | None = None


class CloseProgress(BaseModel):
    period: str | None = None
    accounts_total: int = 0
    accounts_done: int = 0
    chunks_started: int = 0
    chunks_done: int = 0
    invoices_pushed: int = 0
    failures: int = 0
    finished: bool = False


class ClosePeriodResult(BaseModel):
    """What a period's close did, summed over all its chunks (and all runs of a continued chain)."""

    period: str
    accounts: int = 0
    chunks: int = 0
    invoices_rated: int = 0
    invoices_frozen: int = 0
    no_charge: int = 0
    pushed: int = 0
    already_pushed: int = 0
    failed: list[InvoiceFailure] = Field(default_factory=list)
    stripe_calls: int = 0
    total: Decimal = Decimal("0.00")
    # Tally's meter totals against Stripe's summaries (usage reporting), when the close reconciled them.
    meters: MeterDriftSummary | None = None

    @classmethod
    def empty(cls, period: str) -> ClosePeriodResult:
        return cls(period=period)

    def add_chunk(self, res: ChunkResult) -> None:
        self.accounts += len(res.rate.account_ids)
        self.chunks += 1
        self.invoices_rated += res.rate.rated
        self.invoices_frozen += res.rate.frozen
        self.no_charge += res.rate.no_charge
        self.total += res.rate.total
        if res.push:
            self.pushed += res.push.pushed
            self.already_pushed += res.push.already_pushed
            self.stripe_calls += res.push.stripe_calls
            self.failed = sorted([*self.failed, *res.push.failed], key=lambda f: f.invoice_id)


class ClosePeriodInput(BaseModel):
    # None: the month before the workflow's start time (what the monthly schedule sends).
    period: str | None = None
    chunk_size: int = Field(default=100, ge=1, le=1000)
    parallel_chunks: int = Field(default=4, ge=1, le=64)
    push_to_stripe: bool = True
    # How long a Stripe push may go silent before Temporal retries it elsewhere (a worker that died).
    push_heartbeat_seconds: int = Field(default=30, ge=1, le=600)
    # The same for the rating of a chunk (one transaction: a retry rates it again from the start).
    rate_heartbeat_seconds: int = Field(default=30, ge=1, le=600)
    # Continue as new after this many chunks in one run (None: when Temporal suggests it). Tests lower it.
    chunks_per_run: int | None = Field(default=None, ge=1)
    # Set only by continue-as-new: where the previous run of the chain stopped and what it had done.
    cursor: str | None = None
    next_index: int = 0
    carry: ClosePeriodResult | None = None
    progress: CloseProgress | None = None
    # After the chunks, compare Tally's meter totals with Stripe's summaries (child meters-reconcile-P).
    reconcile_meters: bool = False
    meters_settle_minutes: int = Field(default=60, ge=0, le=24 * 60)


class ScheduledCloseResult(BaseModel):
    period: str
    close_workflow_id: str
    started: bool  # False: the month's close already existed (started by hand or by an earlier run)
    result: ClosePeriodResult | None = None
    note: str = ""


class PushInvoiceInput(BaseModel):
    invoice_id: int


class PushInvoiceResult(BaseModel):
    invoice_id: int
    status: str
    stripe_invoice_id: str | None = None
    stripe_calls: int = 0
    already_pushed: bool = False


# ---- invoices as shown to people (CLI --json, later the HTTP API) -------------------------------
class InvoiceLineView(BaseModel):
    kind: str
    model: str | None
    description: str
    quantity: str
    unit_price: str
    amount: str


class InvoiceView(BaseModel):
    account_id: str
    period: str
    status: str
    plan: str
    catalog_version: str
    lines: list[InvoiceLineView]
    subtotal: str
    total: str
    stripe_invoice_id: str | None


class InvoicePreview(InvoiceView):
    """The open period's invoice as it would be if the month closed at ``as_of``, plus a linear
    month-end projection of the usage so far."""

    as_of: datetime
    executions: int
    projected_executions: int
    projected_total: str
    platform_cost: str


class LineExplanation(BaseModel):
    position: int
    kind: str
    description: str
    arithmetic: str
    rate_version: str | None
    executions: int
    first_events: list[str]
    last_events: list[str]
    selection: str


class InvoiceExplanation(BaseModel):
    account_id: str
    period: str
    status: str
    terms: list[str]
    included: int
    lines: list[LineExplanation]
    total: str
    platform_cost: str


# ---- committed-use contracts (workflow ``contract-<id>``, `tally contracts`, the API) -------------------
class ContractAmendmentRecord(BaseModel):
    kind: str  # raise_commitment | extend_term | terminate
    requested_at: datetime
    effective: datetime
    commitment: int | None = None
    extra_months: int | None = None


class ContractRecord(BaseModel):
    """A stored contract and its accepted amendments (``billing.contracts.ContractHistory``)."""

    id: str
    account_id: str
    commitment: int
    start: datetime
    months: int
    catalog_version: str
    amendments: list[ContractAmendmentRecord] = Field(default_factory=list)


class ScheduledMonth(BaseModel):
    """A contract month as the contract stands (``billing.contracts.term_months``)."""

    period: str
    number: int
    start: datetime
    end: datetime
    committed: int
    last: bool = False


class ContractMonthRecord(BaseModel):
    """A contract month's reconciliation as the close recorded it with the invoice."""

    period: str
    number: int
    start: datetime
    end: datetime
    committed: int
    used: int
    overage: int
    shortfall: int
    utilisation: Decimal
    committed_charge: Decimal
    overage_charge: Decimal
    termination_fee: Decimal
    total: Decimal
    invoice_status: str
    reconciled: bool  # the term workflow took it as final


class ContractSummaryRecord(BaseModel):
    """The contract summary at term end (``billing.contracts.TermSummary``) and its text."""

    summary: TermSummary
    text: str = ""


class ContractLoad(BaseModel):
    """What the term workflow holds of its contract (reloaded at the start of every run)."""

    contract: ContractRecord
    schedule: list[ScheduledMonth]
    reconciled: list[ContractMonthRecord] = Field(default_factory=list)
    grace_hours: int = 48


class ContractTermInput(BaseModel):
    contract_id: str
    # How often the workflow checks whether the month's close has finished, once it may have run.
    poll_seconds: int = Field(default=3600, ge=1, le=86_400)
    # The contract as the starter knew it (each run reloads it); lets the update validator judge an
    # amendment from the first instant.
    contract: ContractRecord | None = None


class ContractMonthCheck(BaseModel):
    contract_id: str
    period: str


class ContractMonthStatus(BaseModel):
    period: str
    final: bool
    reason: str
    month: ContractMonthRecord | None = None


class AmendRequest(BaseModel):
    """An ops amendment (the workflow's ``amend`` update): raise the commitment, extend the term, or
    terminate early. Requested at the workflow's current time."""

    kind: str  # raise_commitment | extend_term | terminate
    commitment: int | None = None
    extra_months: int | None = None


class RecordAmendmentInput(BaseModel):
    contract_id: str
    request_id: str  # the update's id: recording it twice records it once
    requested_at: datetime
    request: AmendRequest


class ContractTermState(BaseModel):
    """The ``state`` query of ``contract-<id>``: what ops see in the Temporal UI."""

    contract: ContractRecord | None = None
    commitment_now: int | None = None
    end: datetime | None = None
    terminated: bool = False
    schedule: list[ScheduledMonth] = Field(default_factory=list)
    reconciled: list[ContractMonthRecord] = Field(default_factory=list)
    waiting_for: str | None = None  # the month whose close it waits for
    next_check_at: datetime | None = None
    checks: int = 0  # checks of the waited month so far
    last_check: str | None = None
    summary: ContractSummaryRecord | None = None
    finished: bool = False


class ContractView(BaseModel):
    """A contract as `tally contracts show --json` prints it and the API returns it."""

    id: str
    account_id: str
    workflow_id: str
    catalog_version: str
    start: datetime
    end: datetime
    months: int
    commitment: int  # as signed
    commitment_now: int
    discount: Decimal
    rate: Decimal  # per committed execution, now
    standard_rate: Decimal
    terminated: bool
    amendments: list[ContractAmendmentRecord]
    schedule: list[ScheduledMonth]
    recorded: list[ContractMonthRecord]
    summary: ContractSummaryRecord | None = None


def contract_history(record: ContractRecord):
    """The record as the rules see it (``billing.contracts.ContractHistory``; amendments re-checked)."""
    from billing.contracts import Amendment, Contract, ContractHistory

    return ContractHistory(
        Contract(record.account_id, record.commitment, record.start, record.months, record.catalog_version,
                 record.id),
        tuple(Amendment(a.kind, a.requested_at, a.effective, commitment=a.commitment, extra_months=a.extra_months)
              for a in record.amendments))


def contract_record(history) -> ContractRecord:
    """A ``billing.contracts.ContractHistory`` as a record that crosses process boundaries."""
    c = history.contract
    return ContractRecord(
        id=c.id, account_id=c.account, commitment=c.commitment, start=c.start, months=c.months,
        catalog_version=c.catalog_version,
        amendments=[ContractAmendmentRecord(kind=a.kind.value, requested_at=a.requested_at, effective=a.effective,
                                            commitment=a.commitment, extra_months=a.extra_months)
                    for a in history.amendments])


# ---- usage reporting to Stripe Billing Meters ---------------------------------------------------------
class MeterEventFailure(BaseModel):
    account_id: str
    meter: str  # the meter's key, e.g. input_tokens:claude-haiku
    hour: str
    error: str


MAX_LISTED = 50  # failures / drift lines a result carries (the rest are in the database)


class UsageChunkInput(BaseModel):
    hour: str  # YYYY-MM-DDTHH (UTC)
    index: int
    accounts: AccountRange


class ListUsageChunksInput(BaseModel):
    hour: str
    after: str | None = None
    chunk_size: int
    max_chunks: int = 50


class UsageChunkResult(BaseModel):
    accounts: int = 0
    events: int = 0  # meter events Stripe accepted in this run
    already: int = 0  # revisions found reported before (an earlier attempt, or Stripe: duplicate identifier)
    customers_created: int = 0
    stripe_calls: int = 0
    failed: list[MeterEventFailure] = Field(default_factory=list)
    failed_count: int = 0


class BeginUsageHourInput(BaseModel):
    hour: str
    chunk_size: int
    parallel_chunks: int
    max_chunks: int = 50


class UsageHourCheck(BaseModel):
    hour: str
    accounts: int
    meters: int
    # min(chunk_size, accounts / parallel_chunks): a small hour still uses every parallel chunk
    chunk_size: int
    first_page: ChunkPage


class UsageHourProgress(BaseModel):
    hour: str | None = None
    accounts_total: int = 0
    accounts_done: int = 0
    chunks_started: int = 0
    chunks_done: int = 0
    events: int = 0
    failed: int = 0
    finished: bool = False


class UsageHourResult(BaseModel):
    """What one hour's report did, over all its chunks."""

    hour: str
    state: str = "running"  # reported | partial | late (after the run: what meter_report_hours says)
    accounts: int = 0
    chunks: int = 0
    events: int = 0
    already: int = 0
    customers_created: int = 0
    stripe_calls: int = 0
    failed: list[MeterEventFailure] = Field(default_factory=list)
    failed_count: int = 0

    def add_chunk(self, res: UsageChunkResult) -> None:
        self.chunks += 1
        self.accounts += res.accounts
        self.events += res.events
        self.already += res.already
        self.customers_created += res.customers_created
        self.stripe_calls += res.stripe_calls
        self.failed_count += res.failed_count
        self.failed = (self.failed + res.failed)[:MAX_LISTED]


class UsageHourInput(BaseModel):
    hour: str
    chunk_size: int = Field(default=200, ge=1, le=10_000)
    parallel_chunks: int = Field(default=2, ge=1, le=64)
    # Continue as new after this many chunks in one run (None: when Temporal suggests it). Tests lower it.
    chunks_per_run: int | None = Field(default=None, ge=1)
    # Set only by continue-as-new.
    cursor: str | None = None
    next_index: int = 0
    carry: UsageHourResult | None = None
    progress: UsageHourProgress | None = None


class HourError(BaseModel):
    hour: str
    error: str


class UsagePlanInput(BaseModel):
    target: str  # the last hour to report
    after: str | None = None  # the hours after this one (None: the first page, which also scans for late usage)
    max_hours: int = Field(default=24, ge=1, le=24 * 40)


class UsagePlan(BaseModel):
    target: str
    hours: list[str] = Field(default_factory=list)  # to report, oldest first
    expired: list[HourError] = Field(default_factory=list)  # usage past Stripe's window: refused
    late: list[str] = Field(default_factory=list)  # reported hours that got executions since
    empty: int = 0  # hours without usage, settled without a Stripe call
    more: bool = False
    note: str | None = None  # why nothing can be reported (no meters yet)


class UsageScheduleProgress(BaseModel):
    target: str | None = None
    hours_planned: int = 0
    hours_done: int = 0
    current: str | None = None
    events: int = 0
    failed: int = 0
    finished: bool = False


class ScheduledUsageReportResult(BaseModel):
    """What a scheduled run did: every hour it reported (oldest first), the hours it refused."""

    target: str
    hours: int = 0
    first_hour: str | None = None
    last_hour: str | None = None
    events: int = 0
    already: int = 0
    stripe_calls: int = 0
    failed_count: int = 0
    failed: list[MeterEventFailure] = Field(default_factory=list)
    partial_hours: list[str] = Field(default_factory=list)
    expired: list[HourError] = Field(default_factory=list)
    late: list[str] = Field(default_factory=list)
    empty: int = 0
    skipped: list[str] = Field(default_factory=list)  # already being reported by another run
    note: str | None = None

    def add_plan(self, plan: UsagePlan) -> None:
        self.expired = (self.expired + plan.expired)[:MAX_LISTED]
        self.late = (self.late + plan.late)[:MAX_LISTED]
        self.empty += plan.empty
        self.note = plan.note

    def add_hour(self, res: UsageHourResult) -> None:
        self.hours += 1
        self.first_hour = self.first_hour or res.hour
        self.last_hour = res.hour
        self.events += res.events
        self.already += res.already
        self.stripe_calls += res.stripe_calls
        self.failed_count += res.failed_count
        self.failed = (self.failed + res.failed)[:MAX_LISTED]
        if res.state != "reported":
            self.partial_hours = (self.partial_hours + [res.hour])[:MAX_LISTED]


class UsageReportScheduleInput(BaseModel):
    lag_minutes: int = Field(default=15, ge=0, le=24 * 60)
    chunk_size: int = Field(default=200, ge=1, le=10_000)
    parallel_chunks: int = Field(default=2, ge=1, le=64)
    hours_per_plan: int = Field(default=24, ge=1, le=24 * 40)
    # None: the last hour that ended ``lag_minutes`` before the workflow started (what the schedule sends).
    target: str | None = None
    # Set only by continue-as-new.
    cursor: str | None = None
    carry: ScheduledUsageReportResult | None = None


class MeterReconcileInput(BaseModel):
    period: str
    chunk_size: int = Field(default=100, ge=1, le=10_000)
    parallel_chunks: int = Field(default=4, ge=1, le=64)
    # Stripe's summaries lag: what was reported within this long and is missing from them is not drift
    # yet; chunks with such pairs are checked again after this long, at most ``rechecks`` times.
    settle_minutes: int = Field(default=60, ge=0, le=24 * 60)
    rechecks: int = Field(default=3, ge=0, le=24)


class ReconcileCheck(BaseModel):
    period: str
    accounts: int
    meters: int


class ReconcileChunkInput(BaseModel):
    period: str
    index: int
    accounts: AccountRange
    settle_minutes: int = 60


class MeterDriftLine(BaseModel):
    account_id: str
    meter: str
    tally: int
    reported: int
    stripe: int | None
    drift: int  # stripe - tally
    unexplained: int  # stripe - reported
    explanation: str
    unsettled: int = 0  # sent within the settle time, not in Stripe's (lagging) summary yet: not drift


class ReconcileChunkResult(BaseModel):
    pairs: int = 0
    drifting: int = 0
    unexplained: int = 0
    unsettled: int = 0  # pairs whose Stripe summary does not show recent reports yet
    stripe_calls: int = 0
    lines: list[MeterDriftLine] = Field(default_factory=list)


class MeterDriftSummary(BaseModel):
    """A period's comparison of Tally's totals with Stripe's meter summaries, per account and meter."""

    period: str
    pairs: int = 0  # account-meter pairs compared
    drifting: int = 0  # pairs where Stripe's total differs from Tally's
    unexplained: int = 0  # pairs where Stripe's total differs from what Tally reported
    # pairs whose Stripe summary does not show yet what Tally sent within the settle time (not drift; still
    # so after the re-checks: run `tally meters reconcile` later)
    unsettled: int = 0
    rechecks: int = 0  # times the unsettled pairs' chunks were checked again after the settle time
    stripe_calls: int = 0
    lines: list[MeterDriftLine] = Field(default_factory=list)  # the largest drifts
    note: str | None = None  # why nothing was compared
    error: str | None = None  # the reconciliation failed (the close still completed)

    def add_chunk(self, res: ReconcileChunkResult) -> None:
        self.pairs += res.pairs
        self.drifting += res.drifting
        self.unexplained += res.unexplained
        self.unsettled += res.unsettled
        self.stripe_calls += res.stripe_calls
        self.lines = sorted(self.lines + res.lines, key=lambda d: (-abs(d.drift), d.account_id, d.meter))[:MAX_LISTED]

    def headline(self) -> str:
        if self.error:
            return f"meter reconciliation of {self.period} failed: {self.error}"
        if self.note:
            return f"meters {self.period}: {self.note}"
        head = (f"meters {self.period}: {self.drifting} of {self.pairs} account-meter totals drift from Stripe "
                f"({self.unexplained} unexplained)")
        if self.unsettled:
            head += (f"; {self.unsettled} not settled yet (Stripe's summaries lag behind recent reports: "
                     f"`tally meters reconcile --period {self.period}` later)")
        return head


ClosePeriodResult.model_rebuild()
ClosePeriodInput.model_rebuild()


class AppliedMeter(BaseModel):
    key: str
    event_name: str
    stripe_meter_id: str
    how: str  # created | found (already in Stripe) | recorded (already known to Tally)


class HourState(BaseModel):
    hour: str
    state: str
    failed: int = 0
    error: str | None = None


class ReconciliationState(BaseModel):
    period: str
    pairs: int
    drifting: int
    unexplained: int
    checked_at: datetime
    unsettled: int = 0


class MetersStatus(BaseModel):
    """``tally meters status``: how far reporting got and what needs a look."""

    meters: int
    reporting_since: str | None = None
    last_reported_hour: str | None = None
    due_through: str  # the last hour that ended before the lag: what should be reported by now
    gaps: int = 0  # hours up to due_through never looked at (an outage the next run catches up)
    first_gaps: list[str] = Field(default_factory=list)
    hours_by_state: dict[str, int] = Field(default_factory=dict)
    attention: list[HourState] = Field(default_factory=list)  # partial, late, running, expired hours
    unsettled_events: int = 0
    failures: list[MeterEventFailure] = Field(default_factory=list)
    reconciliations: list[ReconciliationState] = Field(default_factory=list)

# ---- alerts and anomalies (workflows/alerts.py) --------------------------------------------------
class AnomalyReviewInput(BaseModel):
    anomaly_id: int
    account_id: str
    workflow_id: str
    window_start: datetime


class AnomalyDecision(BaseModel):
    """A person's decision on a paused account: who decides and why (both required)."""

    by: str
    reason: str


class AnomalyDecisionInput(BaseModel):
    anomaly_id: int
    decision: str  # resume | confirm
    by: str
    reason: str


class AnomalyView(BaseModel):
    anomaly_id: int
    account_id: str
    workflow_id: str
    state: str  # open | confirmed | resumed
    window_start: datetime
    window_end: datetime
    opened_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    evidence: dict = Field(default_factory=dict)


class ReviewsToStart(BaseModel):
    reviews: list[AnomalyReviewInput] = Field(default_factory=list)


class DeliverNotificationsInput(BaseModel):
    max_messages: int = Field(default=500, ge=1, le=10_000)
    lease_seconds: int = Field(default=300, ge=10, le=3600)


class DeliveryResult(BaseModel):
    sent: int = 0
    failed: int = 0  # refused for good (a bad address): never attempted again
    pending: int = 0  # still waiting after this run (more than max_messages)


class OutboxDispatchResult(BaseModel):
    reviews_started: int = 0
    delivery: DeliveryResult = Field(default_factory=DeliveryResult)


class TrendCheckInput(BaseModel):
    period: str  # YYYY-MM
    at: datetime  # the instant the month is projected from
    chunk_size: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None  # set by continue-as-new
    carry: TrendCheckResult | None = None


class TrendChunkInput(BaseModel):
    period: str
    at: datetime
    accounts: AccountRange


class TrendChunkResult(BaseModel):
    checked: int = 0
    warned: list[str] = Field(default_factory=list)


class TrendCheckResult(BaseModel):
    period: str
    at: datetime
    checked: int = 0
    warned: list[str] = Field(default_factory=list)


class ScheduledTrendResult(BaseModel):
    workflow_id: str
    started: bool
    result: TrendCheckResult | None = None


TrendCheckInput.model_rebuild()


# ---- month partitions of executions (issue 15; repositories/partitions.py) -------------------------
class PartitionsInput(BaseModel):
    months_ahead: int = Field(default=3, ge=1, le=24)


class PartitionsResult(BaseModel):
    created: list[str] = Field(default_factory=list)  # YYYY-MM of each partition created
    from_default: list[str] = Field(default_factory=list)  # months moved out of the default partition


# ---- creator payouts (workflows/payouts.py) ----------------------------------------------------------
class PayoutRunInput(BaseModel):
    """``payouts-YYYY-MM``: decide every creator's payout for ``period`` and pay those due, a page of
    creators at a time (``page_size``), ``concurrency`` transfers at once."""

    period: str | None = None  # the schedule's launcher: the previous month of its start
    page_size: int = Field(default=1000, ge=1, le=10000)
    concurrency: int = Field(default=16, ge=1, le=256)
    cursor: str | None = None  # set by continue-as-new
    carry: PayoutRunResult | None = None


class PayoutRunResult(BaseModel):
    period: str
    creators: int = 0
    paid: int = 0
    carried: int = 0
    failed: list[str] = Field(default_factory=list)
    amount_paid: Decimal = Decimal("0.00")
    credit_earnings: int = 0


class ScheduledPayoutsResult(BaseModel):
    workflow_id: str
    started: bool
    result: PayoutRunResult | None = None


class DecidePayoutsInput(BaseModel):
    period: str
    after: str | None = None
    limit: int = 1000


class DecidedPage(BaseModel):
    """A page of creators decided: the payouts due (``to_pay``, still pending), counts, and the cursor."""

    creators: int = 0
    to_pay: list[str] = Field(default_factory=list)
    carried: int = 0
    next_cursor: str | None = None


class PayPayoutsInput(BaseModel):
    period: str
    payout_ids: list[str]
    concurrency: int = 16


class PayPayoutsResult(BaseModel):
    paid: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    amount_paid: Decimal = Decimal("0.00")


class PayoutInput(BaseModel):
    """``payout-<creator>-<YYYY-MM>``: one payout waiting for ops (started when it failed)."""

    payout_id: str
    creator_id: str
    period: str
    status: str
    reason: str | None = None
    linger_seconds: int = 3600  # after it ends, how long a late retry is refused by the validator


class PayoutRetry(BaseModel):
    by: str


class PayoutCancel(BaseModel):
    by: str
    reason: str


class PayoutActionInput(BaseModel):
    payout_id: str
    by: str
    reason: str | None = None


class PayoutView(BaseModel):
    id: str
    creator_id: str
    period: str
    status: str
    amount: Decimal
    carried_in: Decimal
    earnings: Decimal
    adjustments: Decimal
    balance: Decimal
    carried_out: Decimal
    message: str
    destination: str | None = None
    stripe_transfer_id: str | None = None
    failure_reason: str | None = None
    cancel_reason: str | None = None
    attempts: int = 0


PayoutRunInput.model_rebuild()
# ---- prepaid credits (workflows/credits.py) -------------------------------------------------------------
class CreditGrantInput(BaseModel):
    """The expiry of one grant (workflow ``credit-grant-<grant id>``)."""

    grant_id: str
    grace_hours: int = 48  # late-usage grace after expires_at before the remainder is expired


class CreditGrantTimes(BaseModel):
    grant_id: str
    account_id: str
    expires_at: datetime
    notice_at: datetime
    expired: bool


class CreditGrantResult(BaseModel):
    grant_id: str
    notice_queued: bool = False
    expired: Decimal = Decimal("0")
    already_expired: bool = False


class CreditPollResult(BaseModel):
    checked: int = 0
    failed: int = 0
    granted: list[str] = Field(default_factory=list)
    grants_to_watch: list[str] = Field(default_factory=list)  # new grants (webhook or poll): their workflows


class CreditSweepInput(BaseModel):
    grace_hours: int = 48
    page_size: int = Field(default=500, ge=1, le=5000)
    cursor: str | None = None  # set by continue-as-new
    started: int = 0
    overdue_expired: int = 0


class CreditSweepPage(BaseModel):
    grant_ids: list[str] = Field(default_factory=list)
    next_cursor: str | None = None
    overdue_expired: int = 0


class CreditSweepResult(BaseModel):
    checked: int = 0
    started: int = 0
    overdue_expired: int = 0
