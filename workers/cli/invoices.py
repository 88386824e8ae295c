"""``tally invoices``: list, show, preview, explain, retry, verify."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import click

from models.settings import get_settings
from workers.cli.common import UserError, catalog, engine, friendly, run, temporal


@click.group()
def invoices() -> None:
    """Invoices produced by the close."""


@invoices.command("list")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--status", default=None, help="Only invoices in this status.")
@friendly
def invoices_list(period: str, status: str | None) -> None:
    """List the period's invoices."""
    from services.invoices import list_invoices

    rows = list_invoices(engine(), period, status)
    click.echo(f"{'account':<24} {'plan':<6} {'status':<12} {'executions':>10} {'total':>12}  stripe invoice")
    for r in rows:
        click.echo(f"{r.account_id:<24} {r.plan:<6} {r.status:<12} {r.executions:>10,} {r.total:>12,}  "
                   f"{r.stripe_invoice_id or '-'}")
    click.echo(f"{len(rows):,} invoices, total ${sum((r.total for r in rows), Decimal('0.00')):,}")


@invoices.command("show")
@click.argument("account_id")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (amounts as decimal strings).")
@friendly
def invoices_show(account_id: str, period: str, as_json: bool) -> None:
    """Show one invoice with its lines."""
    from services.invoices import invoice_view

    view = invoice_view(engine(), account_id, period)
    if as_json:
        click.echo(json.dumps(view.model_dump(), indent=2))
        return
    click.echo(f"Invoice {view.account_id} {view.period}  plan={view.plan}  status={view.status}  "
               f"catalog={view.catalog_version}  stripe={view.stripe_invoice_id or '-'}")
    for line in view.lines:
        click.echo(f"  {line.description:<72} {line.amount:>12}")
    click.echo(f"  {'Subtotal':<72} {view.subtotal:>12}")
    click.echo(f"  {'Total (USD)':<72} {view.total:>12}")


@invoices.command("preview")
@click.argument("account_id")
@click.option("--at", "at_text", default=None, metavar="TIMESTAMP",
              help="ISO 8601 instant (default: now); the preview covers usage before it.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (same shape as `show`, plus projection).")
@friendly
def invoices_preview(account_id: str, at_text: str | None, as_json: bool) -> None:
    """The open period's invoice as it would be if the month closed now, with a month-end projection."""
    from services.invoices import invoice_preview

    at = None
    if at_text:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise UserError(f"at: {at_text!r} is not an ISO 8601 timestamp") from None
        if at.tzinfo is None:
            raise UserError("at: add a time zone (Z or +00:00)")
    view = invoice_preview(engine(), account_id, at, catalog())
    if as_json:
        click.echo(view.model_dump_json(indent=2))
        return
    click.echo(f"Preview {view.account_id} {view.period} as of {view.as_of:%Y-%m-%d %H:%M} UTC  plan={view.plan}")
    for line in view.lines:
        click.echo(f"  {line.description:<80} {line.amount:>12}")
    click.echo(f"  {'Total so far (USD)':<80} {view.total:>12}")
    click.echo(f"  {'Projected at month end (' + format(view.projected_executions, ',') + ' executions)':<80} "
               f"{view.projected_total:>12}")


@invoices.command("explain")
@click.argument("account_id")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--json", "as_json", is_flag=True)
@friendly
def invoices_explain(account_id: str, period: str, as_json: bool) -> None:
    """Each line with the executions, rate card version and arithmetic behind it."""
    from services.invoices import explain_invoice

    ex = explain_invoice(engine(), account_id, period, catalog())
    if as_json:
        click.echo(ex.model_dump_json(indent=2))
        return
    click.echo(f"Invoice {ex.account_id} {ex.period} ({ex.status}); included executions: {ex.included:,}")
    for t in ex.terms:
        click.echo(f"  terms {t}")
    for line in ex.lines:
        click.echo(f"{line.position:>3}. {line.description}")
        click.echo(f"     {line.arithmetic}" + (f"   [rates {line.rate_version}]" if line.rate_version else ""))
        if line.executions:
            tail = f" … {', '.join(line.last_events)}" if line.last_events else ""
            click.echo(f"     {line.executions:,} executions: {line.selection}; e.g. {', '.join(line.first_events)}{tail}")
    click.echo(f"Total {ex.total}; our LLM cost {ex.platform_cost}")


@invoices.command("retry")
@click.argument("account_id")
@click.option("--period", required=True, metavar="YYYY-MM")
@friendly
def invoices_retry(account_id: str, period: str) -> None:
    """Retry pushing one invoice to Stripe (never creates a second Stripe invoice)."""
    from services.invoices import retry_invoice

    settings = get_settings()
    res = run(retry_invoice(temporal(settings), settings, engine(), account_id, period))
    what = "was already in Stripe" if res.already_pushed else f"is now {res.status}"
    click.echo(f"invoice {res.invoice_id} ({account_id} {period}) {what}: {res.stripe_invoice_id or '-'}")


@invoices.command("verify")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def invoices_verify(period: str, as_json: bool) -> None:
    """Re-rate a closed period with today's code and list every invoice whose lines would differ.

    Uses the catalog versions that were in force and the usage known when each invoice was rated; reads
    only. None is expected after a refactor; exit code 1 when any invoice differs. Refused for a month
    whose executions are archived (tally usage restore FILE first).
    """
    from services.invoices import verify_period

    report = verify_period(engine(), period, catalog())
    if as_json:
        click.echo(json.dumps({"period": report.period, "checked": report.checked, "differing": [
            {"account_id": d.account_id, "invoice_id": d.invoice_id, "status": d.status,
             "differences": [vars(x) for x in d.differences]} for d in report.differing]}, indent=2))
    else:
        for d in report.differing:
            click.echo(f"{d.account_id} (invoice {d.invoice_id}, {d.status}):")
            for x in d.differences:
                click.echo(f"  {x}")
        click.echo(f"{report.checked:,} invoices of {report.period} re-rated; "
                   f"{len(report.differing):,} would differ")
    if report.differing:
        raise SystemExit(1)
