"""``tally demo``: the main job end to end on embedded defaults.

Starts the local stack, seeds a realistic month (``workers.demo``: a second run adds nothing and bills
nothing twice), closes it through Temporal and prints a summary with the Temporal UI address of the run.
"""

from __future__ import annotations

import click

from models.settings import Settings, get_settings
from workers.cli.common import friendly


@click.command()
@click.option("--accounts", "n_accounts", type=int, default=300, show_default=True)
@click.option("--executions", "n_executions", type=int, default=300_000, show_default=True)
@click.option("--period", default=None, metavar="YYYY-MM", help="Default: the latest closable month.")
@friendly
def demo(n_accounts: int, n_executions: int, period: str | None) -> None:
    """Start the local stack, seed a realistic month, close it through Temporal, print a summary."""
    run_demo(get_settings(), n_accounts=n_accounts, n_executions=n_executions, period=period)


def run_demo(settings: Settings, *, n_accounts: int, n_executions: int, period: str | None) -> None:
    import asyncio
    from datetime import datetime, timezone
    from decimal import Decimal

    from billing.periods import Period
    from models.db import get_engine
    from workflows.close import close_workflow_id
    from services.reports import period_summary
    from workers.cli.close import close_with_progress
    from workers.demo import latest_closable_period, seed_month, stripe_invoice_count
    from workers.devstack import stack_up
    from workers.schedules import apply_schedules

    click.echo("== local stack")
    stack_up(settings, echo=lambda m: click.echo(f"   {m}"))
    get_settings.cache_clear()
    settings = get_settings()  # now with the stack's addresses

    p = Period.parse(period) if period else latest_closable_period(
        datetime.now(timezone.utc), settings.late_usage_grace_hours)
    click.echo(f"== seeding {p}: {n_accounts:,} accounts, {n_executions:,} executions")
    created, total_accounts, report = seed_month(settings, p, n_accounts, n_executions)
    click.echo(f"   accounts: {created} new, {total_accounts - created} already there")
    click.echo(f"   executions: accepted {report.accepted:,}, duplicate {report.duplicates:,}, "
               f"rejected {report.rejected:,} ({report.lines / max(report.seconds, 1e-9):,.0f} lines/s)")

    click.echo("== schedules")
    for line in asyncio.run(apply_schedules(settings)):
        click.echo(f"   {line}")

    click.echo(f"== monthly close {p} (Temporal workflow {close_workflow_id(p)})")
    result = asyncio.run(close_with_progress(settings, p))

    summary = period_summary(get_engine(settings.effective_database_url()), p)
    totals, converted = summary.totals, summary.auto_conversions
    click.echo("")
    click.echo(f"{'plan':<8} {'accounts':>8} {'charged':>8} {'executions':>12} {'total':>14} {'in Stripe':>9}")
    grand = Decimal("0.00")
    for t in totals:
        grand += t.total
        click.echo(f"{t.plan:<8} {t.accounts:>8,} {t.invoices:>8,} {t.executions:>12,} "
                   f"{'$' + format(t.total, ',.2f'):>14} {t.pushed:>9,}")
    click.echo(f"{'all':<8} {sum(t.accounts for t in totals):>8,} {sum(t.invoices for t in totals):>8,} "
               f"{sum(t.executions for t in totals):>12,} {'$' + format(grand, ',.2f'):>14} "
               f"{sum(t.pushed for t in totals):>9,}")
    click.echo("")
    click.echo(f"the close of {p}: {result.invoices_rated:,} invoices rated, {result.pushed:,} pushed to Stripe, "
               f"{result.already_pushed:,} already there, {result.invoices_frozen:,} left as they were, "
               f"{len(result.failed)} failed, {result.stripe_calls:,} Stripe calls")
    click.echo(f"pay-as-you-go accounts moved to Pro from {p.next()} (Pro would have been cheaper): {converted}")
    click.echo(f"Stripe invoices for {p}: {stripe_invoice_count(settings, p):,} "
               f"({'emulator ' + settings.effective_stripe()[1] if not settings.stripe_api_key else 'Stripe test mode'})")
    ui = settings.temporal_ui_url
    click.echo(f"Temporal UI: {ui}/namespaces/{settings.temporal_namespace}/workflows/{close_workflow_id(p)}")
    click.echo(f"   find one account's run: {ui}/namespaces/{settings.temporal_namespace}/workflows"
               f"?query=BillingPeriod%3D%27{p}%27")
    click.echo("Try: tally invoices list --period " + str(p) + " | tally invoices show demo-0001 --period " + str(p))
