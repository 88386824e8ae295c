"""Invoices: list, view, preview (the open month as if it closed now), explain, retry a failed push."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import Connection, Engine
from temporalio.client import WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from dataclasses import dataclass

from activities import pricing
from billing.catalog import Catalog, default_catalog, version_windows
from billing.explain import PeriodExecutions
from billing.money import round_money
from billing.periods import Period
from billing.close import rate
from billing.contracts import CONTRACT_LINE_KINDS
from billing.projection import MonthProjection, project_month
from billing.rating import pooled_included, prior_period_lines, rate_account
from billing.verify import LineDifference, compare_lines
from models.schemas import (
    InvoiceExplanation,
    InvoiceLineView,
    InvoicePreview,
    InvoiceView,
    LineExplanation,
    PushInvoiceInput,
    PushInvoiceResult,
)
from models.settings import Settings
from repositories import catalog_versions, invoices, partitions, usage
from services.accounts import require_account
from services.errors import Conflict, NotFound, OperationFailed, refused_input, root_cause
from services.inputs import parse_period
from services.temporal import TemporalClient
from workflows.close import PushInvoiceWorkflow, push_invoice_workflow_id
from workflows.search_attributes import BILLING_ACCOUNT_IDS, BILLING_PERIOD


def require_invoice(conn: Connection, account_id: str, period: Period):
    inv = invoices.find_invoice(conn, account_id, period)
    if inv is None:
        require_account(conn, account_id)  # a missing account is the better message
        raise NotFound(f"no invoice for account {account_id!r} in {period} (has the close run?)")
    return inv


def list_invoices(engine: Engine, period_text: str, status: str | None = None) -> list:
    """The period's invoices by account (rows of ``invoices``)."""
    period = parse_period(period_text)
    with engine.begin() as conn:
        return invoices.list_invoices(conn, period, status)


def _plain(d: Decimal) -> str:
    """A Decimal without trailing zeros beyond what it means (5000.0000 -> 5000, 0.00500000 -> 0.005)."""
    return format(d.normalize(), "f")


def _line_view(kind, model, description, quantity, unit_price, amount) -> InvoiceLineView:
    return InvoiceLineView(kind=kind, model=model, description=description, quantity=_plain(quantity),
                           unit_price=_plain(unit_price), amount=str(amount))


def invoice_view(engine: Engine, account_id: str, period_text: str) -> InvoiceView:
    """One invoice with its lines: what `tally invoices show --json` prints and the API returns."""
    period = parse_period(period_text)
    with engine.begin() as conn:
        inv = require_invoice(conn, account_id, period)
        lines = invoices.invoice_lines_of(conn, inv.id)
        version = catalog_versions.catalog_version_name(conn, inv.catalog_version_id)
    return InvoiceView(
        account_id=inv.account_id,
        period=inv.period,
        status=inv.status,
        plan=inv.plan,
        catalog_version=version,
        lines=[_line_view(line.kind, line.model, line.description, line.quantity, line.unit_price, line.amount)
               for line in lines],
        subtotal=str(inv.subtotal),
        total=str(inv.total),
        stripe_invoice_id=inv.stripe_invoice_id,
    )


def account_invoices(engine: Engine, account_id: str) -> list[InvoiceView]:
    """Every invoice of the account, newest first."""
    with engine.begin() as conn:
        periods = invoices.invoice_periods(conn, account_id)
    return [invoice_view(engine, account_id, p) for p in periods]


def invoice_preview(engine: Engine, account_id: str, at: datetime | None = None,
                    catalog: Catalog | None = None) -> InvoicePreview:
    """The open period's invoice if the month closed at ``at`` (default now), priced by exactly the
    code the close uses, with a linear month-end projection."""
    catalog = catalog or default_catalog()
    at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    with refused_input("at"):
        period = Period.of(at)
        with engine.begin() as conn:
            require_account(conn, account_id)
            ratings = pricing.rate_accounts(conn, catalog, period, [account_id], usage_end=at, late_usage=True)
            if account_id not in ratings:
                raise NotFound(f"account {account_id!r} is not billed in {period} (billing starts later)")
        r = ratings[account_id]
        # a contract's lines (billing.contracts) are not scaled: the committed use is the whole month's already
        kept = sum((ln.amount for ln in r.rated.lines if ln.kind.value in CONTRACT_LINE_KINDS), Decimal(0))
        projected = project_month(catalog, period.start, period.end, at, r.segments, r.usage, r.included, r.rated) \
            if r.segments else MonthProjection(r.rated.executions, Decimal(0))
        projected = MonthProjection(max(projected.executions, r.rated.executions), projected.total + kept)
    rated = r.rated
    return InvoicePreview(
        account_id=account_id,
        period=str(period),
        status="preview",
        plan=rated.plan,
        catalog_version=rated.catalog_version,
        lines=[_line_view(ln.kind.value, ln.model, ln.description, ln.quantity, ln.unit_price, ln.amount)
               for ln in rated.lines],
        subtotal=str(rated.subtotal),
        total=str(rated.total),
        stripe_invoice_id=None,
        as_of=at,
        executions=rated.executions,
        projected_executions=projected.executions,
        projected_total=str(projected.total),
        platform_cost=str(rated.platform_cost.quantize(Decimal("0.0001"))),
    )


def explain_invoice(engine: Engine, account_id: str, period_text: str,
                    catalog: Catalog | None = None) -> InvoiceExplanation:
    """Each line of an invoice with the executions, rate card version and arithmetic behind it; the
    executions are selected by the rating's own rule (``billing.explain``)."""
    catalog = catalog or default_catalog()
    period = parse_period(period_text)
    with engine.begin() as conn:
        inv = require_invoice(conn, account_id, period)
        lines = invoices.invoice_lines_of(conn, inv.id)
        segments = pricing.terms_segments(conn, [account_id], period).get(account_id, [])
        executions = usage.period_executions(conn, account_id, period.start, period.end)
    with refused_input():
        included = pooled_included(catalog, period.start, period.end, segments) if segments else 0
        behind = PeriodExecutions(executions, segments, version_windows(catalog, period.start, period.end), included)
    out = []
    for line in lines:
        exact = line.quantity * line.unit_price
        arithmetic = (f"{_plain(line.quantity)} × {_plain(line.unit_price)} = {_plain(exact)}"
                      f" → {line.amount} (rounded half-up to the cent)")
        if line.source_period:
            arithmetic = f"re-rated {line.source_period} minus what was billed for it: {line.amount}"
            sel, selection = [], "late executions of " + line.source_period
        else:
            if line.kind == "base_fee" and round_money(exact) != line.amount:
                arithmetic += " (prorated)"
            found = behind.for_line(line.kind, line.model, line.rate_version, line.key)
            sel, selection = found.executions, found.description
        out.append(LineExplanation(
            position=line.position, kind=line.kind, description=line.description, arithmetic=arithmetic,
            rate_version=line.rate_version, executions=len(sel),
            first_events=[e.event_id for e in sel[:3]], last_events=[e.event_id for e in sel[-3:]] if len(sel) > 3 else [],
            selection=selection,
        ))
    return InvoiceExplanation(
        account_id=account_id, period=str(period), status=inv.status,
        terms=[f"{s.start:%Y-%m-%d}..{s.end:%Y-%m-%d}: {s.plan} seats={s.seats} overage={'on' if s.overage_opt_in else 'off'} "
               f"pricing={s.pricing}" for s in segments],
        included=included, lines=out, total=str(inv.total),
        platform_cost=str(inv.platform_cost.quantize(Decimal("0.0001"))),
    )


async def retry_invoice(temporal: TemporalClient, settings: Settings, engine: Engine, account_id: str,
                        period_text: str) -> PushInvoiceResult:
    """Push one invoice to Stripe again (``push-invoice-<id>``; a running retry is joined). Never
    creates a second Stripe invoice. ``temporal`` connects to Temporal once the invoice is found."""
    period = parse_period(period_text)
    with engine.begin() as conn:
        inv = require_invoice(conn, account_id, period)
    if inv.status == "no_charge":
        raise Conflict(f"invoice {inv.id} ({account_id} {period}) has nothing to charge; "
                       "it is never sent to Stripe")
    client = await temporal()
    handle = await client.start_workflow(
        PushInvoiceWorkflow.run,
        PushInvoiceInput(invoice_id=inv.id),
        id=push_invoice_workflow_id(inv.id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(BILLING_PERIOD, str(period)),
            SearchAttributePair(BILLING_ACCOUNT_IDS, [account_id]),
        ]),
    )
    try:
        return await handle.result()
    except WorkflowFailureError as err:
        raise OperationFailed(f"retry of invoice {inv.id} failed: {root_cause(err)}") from None


# ---- verify: would today's code bill a closed period the same? -------------------------------------
@dataclass(frozen=True)
class InvoiceDifferences:
    account_id: str
    invoice_id: int
    status: str
    differences: list[LineDifference]


@dataclass(frozen=True)
class VerifyReport:
    period: str
    checked: int
    differing: list[InvoiceDifferences]


def verify_period(engine: Engine, period_text: str, catalog: Catalog | None = None) -> VerifyReport:
    """Re-rate every invoice of the period with today's code, the catalog versions that were in force
    and the usage known when it was rated (executions ingested by its ``rated_at``), its prior-period
    lines included, and list each invoice whose lines would differ. Reads only; changes nothing.

    Usage ingested concurrently with the close's rating can show as a difference (its transaction began
    before the rating and committed after): such usage is billed as late usage on the next invoice.

    Refused (``Conflict``) when the executions it would re-rate are archived (``tally usage archive``):
    the period's own, or those of an earlier month whose late usage one of its invoices carries."""
    catalog = catalog or default_catalog()
    period = parse_period(period_text)
    differing: list[InvoiceDifferences] = []
    with engine.begin() as conn:
        invs = invoices.list_invoices(conn, period)
        by_rating: dict[datetime, list] = {}
        for inv in invs:
            by_rating.setdefault(inv.rated_at, []).append(inv)
        sources = [period.previous()]
        for _ in range(pricing.LATE_USAGE_LOOKBACK_PERIODS - 1):
            sources.append(sources[-1].previous())
        archived = {m: file for m, _, file in partitions.archived_months(conn.connection.driver_connection,
                                                                         [period, *sources])} if invs else {}
        if str(period) in archived:
            raise _archived(period, archived)
        ids = [inv.account_id for inv in invs]
        late = {s: usage.arrived_between_invoices(conn, ids, s, period) for s in sources}
        for rated_at, group in by_rating.items():
            facts = pricing.load_facts(conn, catalog, period, [i.account_id for i in group], known_at=rated_at)
            for inv in group:
                recorded = invoices.invoice_lines_of(conn, inv.id)
                expected = list(rate(catalog, period, facts[inv.account_id]).rated.lines) \
                    if inv.account_id in facts else []
                recorded_sources = {ln.source_period for ln in recorded if ln.source_period}
                for source in sources:
                    if str(source) in recorded_sources and str(source) in archived:
                        raise _archived(source, archived, carried_by=inv)
                    if str(source) in recorded_sources or inv.account_id in late[source]:
                        expected += _prior_lines(conn, catalog, inv, source, period)
                diffs = compare_lines(recorded, expected)
                if diffs:
                    differing.append(InvoiceDifferences(inv.account_id, inv.id, inv.status, diffs))
    return VerifyReport(str(period), len(invs), differing)


def _archived(month: Period, archived: dict[str, str], carried_by=None) -> Conflict:
    why = "" if carried_by is None else f" (invoice {carried_by.id} of {carried_by.account_id} carries its late usage)"
    return Conflict(f"period: the executions of {month} are archived in {archived[str(month)]}{why}; restore them "
                    "with `tally usage restore FILE` to verify, then archive them again")


def _prior_lines(conn: Connection, catalog: Catalog, inv, source: Period, period: Period) -> list:
    """The prior-period lines the invoice should carry for ``source``, as its close saw things."""
    own = invoices.find_invoice(conn, inv.account_id, source)
    if own is None or own.rated_at >= inv.rated_at or own.status not in ("open", "paid", "void", "no_charge"):
        return []
    facts = pricing.load_facts(conn, catalog, source, [inv.account_id], known_at=inv.rated_at).get(inv.account_id)
    if facts is None:
        return []
    again = rate_account(catalog, source.start, source.end, facts.segments, facts.usage)
    billed = invoices.billed_lines(conn, inv.account_id, source, excluding_period=period, rated_before=inv.rated_at)
    return prior_period_lines(str(source), again, billed)
