"""Operations the CLI (and later the HTTP API) start: a close, an invoice retry, invoice views."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import click
from sqlalchemy import Engine
from temporalio.client import WorkflowFailureError
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy

from activities import repository as repo
from billing.periods import Period
from models.schemas import (
    ClosePeriodInput,
    ClosePeriodResult,
    CloseProgress,
    InvoiceLineView,
    InvoiceView,
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
        search_attributes=TypedSearchAttributes([BILLING_PERIOD.value_set(period)]),
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
        lines=[
            InvoiceLineView(
                kind=line.kind,
                model=line.model,
                description=line.description,
                quantity=_plain(line.quantity),
                unit_price=_plain(line.unit_price),
                amount=str(line.amount),
            )
            for line in lines
        ],
        subtotal=str(inv.subtotal),
        total=str(inv.total),
        stripe_invoice_id=inv.stripe_invoice_id,
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
            BILLING_PERIOD.value_set(str(period)),
            BILLING_ACCOUNT_IDS.value_set([account_id]),
        ]),
    )
    try:
        return await handle.result()
    except WorkflowFailureError as err:
        raise OperationFailed(f"retry of invoice {inv.id} failed: {_root_cause(err)}") from None
