"""Operations the CLI (and later the HTTP API) start: a close, an invoice retry, invoice views."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import click
from sqlalchemy import Engine
from temporalio.client import WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from activities import pricing
from activities import repository as repo
from billing.catalog import Catalog, default_catalog, version_windows
from billing.explain import PeriodExecutions
from billing.money import round_money
from billing.periods import Period
from billing.projection import project_month
from billing.rating import pooled_included
from models.schemas import (
    ClosePeriodInput,
    ClosePeriodResult,
    CloseProgress,
    InvoiceExplanation,
    InvoiceLineView,
    InvoicePreview,
    InvoiceView,
    LineExplanation,
    PushInvoiceInput,
    PushInvoiceResult,
)
from models.settings import Settings
from workers.worker import connect
from workflows.close import (
    BILLING_ACCOUNT_IDS,
    BILLING_PERIOD,
    ClosePeriodWorkflow,
    PushInvoiceWorkflow,
)


class OperationFailed(click.ClickException):
    pass


def _root_cause(err: BaseException) -> str:
    msgs = []
    while err is not None:
        msg = getattr(err, "message", None) or str(err)
        if msg and msg not in msgs:
            msgs.append(msg)
        err = err.__cause__
    return msgs[-1] if msgs else "unknown error"


async def run_close(settings: Settings, period: str, *, wait: bool = True, chunk_size: int | None = None,
                    parallel: int | None = None, push: bool = True,
                    progress: bool = False) -> ClosePeriodResult | None:
    client = await connect(settings)
    inp = ClosePeriodInput(
        period=period,
        chunk_size=chunk_size or settings.close_chunk_size,
        parallel_chunks=parallel or settings.close_parallel_chunks,
        push_to_stripe=push,
    )
    handle = await client.start_workflow(
        ClosePeriodWorkflow.run,
        inp,
        id=f"close-{period}",
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, period)]),
        execution_timeout=timedelta(hours=24),
    )
    if not wait:
        return None
    result_task = asyncio.ensure_future(handle.result())
    if progress:
        await _show_progress(handle, result_task)
    try:
        return await result_task
    except WorkflowFailureError as err:
        raise OperationFailed(f"close {period} failed: {_root_cause(err)}") from None


async def _show_progress(handle, result_task) -> None:
    bar = None
    last = 0
    try:
        while not result_task.done():
            try:
                p: CloseProgress = await handle.query(ClosePeriodWorkflow.progress, result_type=CloseProgress)
            except Exception:  # not started yet, or finished between checks
                p = None
            if p and p.accounts_total and bar is None:
                bar = click.progressbar(length=p.accounts_total, label=f"closing {p.period}",
                                        show_pos=True, file=click.get_text_stream("stderr"))
                bar.__enter__()
            if p and bar is not None and p.accounts_done > last:
                bar.update(p.accounts_done - last)
                last = p.accounts_done
            await asyncio.wait({result_task}, timeout=0.5)
    finally:
        if bar is not None:
            if not result_task.cancelled() and result_task.done() and result_task.exception() is None:
                bar.update(max(0, bar.length - last))
            bar.__exit__(None, None, None)


def invoice_view(engine: Engine, account_id: str, period_text: str) -> InvoiceView:
    period = Period.parse(period_text)
    with engine.begin() as conn:
        inv = repo.find_invoice(conn, account_id, period)
        lines = repo.invoice_lines_of(conn, inv.id)
        version = repo.catalog_version_name(conn, inv.catalog_version_id)
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


def _line_view(kind, model, description, quantity, unit_price, amount) -> InvoiceLineView:
    return InvoiceLineView(kind=kind, model=model, description=description, quantity=_plain(quantity),
                           unit_price=_plain(unit_price), amount=str(amount))


def invoice_preview(engine: Engine, account_id: str, at: datetime | None = None,
                    catalog: Catalog | None = None) -> InvoicePreview:
    """The open period's invoice if the month closed at ``at`` (default now), priced by exactly the
    code the close uses, with a linear month-end projection. Serves the CLI and the HTTP API."""
    catalog = catalog or default_catalog()
    at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    period = Period.of(at)
    with engine.begin() as conn:
        repo.get_account(conn, account_id)
        ratings = pricing.rate_accounts(conn, catalog, period, [account_id], usage_end=at)
        if account_id not in ratings:
            raise repo.NotFound(f"account {account_id!r} is not billed in {period} (billing starts later)")
        pricing.add_prior_period_usage(conn, catalog, period, ratings)
    r = ratings[account_id]
    projected = project_month(catalog, period.start, period.end, at, r.segments, r.usage, r.included, r.rated)
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
    """Each line of an invoice with the executions, rate card version and arithmetic behind it."""
    catalog = catalog or default_catalog()
    period = Period.parse(period_text)
    with engine.begin() as conn:
        inv = repo.find_invoice(conn, account_id, period)
        lines = repo.invoice_lines_of(conn, inv.id)
        segments = repo.terms_segments(conn, [account_id], period).get(account_id, [])
        included = pooled_included(catalog, period.start, period.end, segments) if segments else 0
        ranked = repo.ranked_executions(conn, account_id, period.start, period.end)
    behind = PeriodExecutions(ranked, segments, version_windows(catalog, period.start, period.end), included)

    def matching(line):
        found = behind.for_line(line.kind, line.model, line.rate_version, line.key)
        return found.executions, found.description

    out = []
    for line in lines:
        exact = line.quantity * line.unit_price
        arithmetic = (f"{_plain(line.quantity)} × {_plain(line.unit_price)} = {_plain(exact)}"
                      f" → {line.amount} (rounded half-up to the cent)")
        if line.source_period:
            arithmetic = (f"re-rated {line.source_period} minus what was billed for it: {line.amount}")
        elif line.kind == "base_fee" and round_money(exact) != line.amount:
            arithmetic += " (prorated)"
        sel, selection = ([], "late executions of " + line.source_period) if line.source_period else matching(line)
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


def _plain(d) -> str:
    """A Decimal without trailing zeros beyond what it means (5000.0000 -> 5000, 0.00500000 -> 0.005)."""
    text = format(d.normalize(), "f")
    return text


async def retry_invoice(settings: Settings, engine: Engine, account_id: str, period_text: str) -> PushInvoiceResult:
    period = Period.parse(period_text)
    with engine.begin() as conn:
        inv = repo.find_invoice(conn, account_id, period)
    if inv.status == "no_charge":
        raise OperationFailed(f"invoice {inv.id} ({account_id} {period}) has nothing to charge; "
                              "it is never sent to Stripe")
    client = await connect(settings)
    handle = await client.start_workflow(
        PushInvoiceWorkflow.run,
        PushInvoiceInput(invoice_id=inv.id),
        id=f"push-invoice-{inv.id}",
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
        raise OperationFailed(f"retry of invoice {inv.id} failed: {_root_cause(err)}") from None
