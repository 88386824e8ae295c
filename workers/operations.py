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
from billing.catalog import Catalog, default_catalog
from billing.periods import Period
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
    from billing.projection import project_usage
    from billing.rating import rate_account

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
    elapsed = (at - period.start).total_seconds()
    factor = Decimal(str((period.end - period.start).total_seconds())) / Decimal(str(elapsed)) if elapsed > 0 else Decimal(1)
    projected_rows = project_usage(r.usage, max(factor, Decimal(1)), r.included)
    projected = rate_account(catalog, period.start, period.end, r.segments, projected_rows)
    prior = sum((ln.amount for ln in r.rated.lines if ln.source_period), Decimal("0.00"))
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
        projected_total=str(projected.total + prior),
        platform_cost=str(rated.platform_cost.quantize(Decimal("0.0001"))),
    )


def explain_invoice(engine: Engine, account_id: str, period_text: str,
                    catalog: Catalog | None = None) -> InvoiceExplanation:
    """Each line of an invoice with the executions, rate card version and arithmetic behind it."""
    from billing.money import round_money

    catalog = catalog or default_catalog()
    period = Period.parse(period_text)
    with engine.begin() as conn:
        inv = repo.find_invoice(conn, account_id, period)
        lines = repo.invoice_lines_of(conn, inv.id)
        segments = repo.terms_segments(conn, [account_id], period).get(account_id, [])
        included = pricing.pooled_included(catalog, period.start, period.end, segments) if segments else 0
        ranked = repo.ranked_executions(conn, account_id, period.start, period.end)
    windows = pricing.version_windows(catalog, period.start, period.end)
    billing_start = segments[0].start if segments else period.end

    def version_of(ts):
        return next((v for v, lo, hi in windows if lo <= ts < hi), None)

    def segment_of(ts):
        return next((i for i, sg in enumerate(segments) if sg.start <= ts < sg.end), None)

    evs = [e for e in ranked if e.occurred_at >= billing_start]

    def matching(line):
        kind = line.kind
        if kind == "included_usage":
            return [e for e in evs if not e.sandbox and e.rn <= included], f"non-sandbox executions ranked 1..{included:,}"
        if kind == "sandbox":
            return [e for e in evs if e.sandbox], "sandbox tries"
        if kind in ("usage", "blocked_usage", "token_usage") and line.model:
            sel = [e for e in evs if not e.sandbox and e.model == line.model]
            what = [f"model {line.model}"]
            if kind in ("usage", "blocked_usage"):
                sel = [e for e in sel if e.rn > included]
                what.append(f"ranked past the {included:,} included (occurred_at, event id)")
            if kind == "token_usage":
                sel = [e for e in sel if not e.byok]
                what.append("platform key (not BYOK)")
            if line.rate_version and len(windows) > 1:
                sel = [e for e in sel if version_of(e.occurred_at) == line.rate_version]
                what.append(f"occurred while {line.rate_version} was in force")
            seg_idx = _segment_from_key(line.key)
            if seg_idx is not None and seg_idx < len(segments):
                sel = [e for e in sel if segment_of(e.occurred_at) == seg_idx]
                what.append(f"during {segments[seg_idx].start:%Y-%m-%d}..{segments[seg_idx].end:%Y-%m-%d}")
            return sel, ", ".join(what)
        return [], "—"

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


def _segment_from_key(key: str) -> int | None:
    parts = key.split("|")
    try:
        if parts[0] == "usage" and len(parts) >= 5 and parts[4]:
            return int(parts[4])
        if parts[0] == "token_usage" and len(parts) >= 5 and parts[4]:
            return int(parts[4])
    except ValueError:
        return None
    return None


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
