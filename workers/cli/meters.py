"""``tally meters``: usage reported to Stripe Billing Meters (apply, report, status, reconcile)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from models.settings import get_settings
from workers.cli.common import catalog, engine, friendly, run, temporal


@click.group()
def meters() -> None:
    """Usage reported to Stripe Billing Meters, hourly by the usage-report schedule."""


@meters.command("apply")
@friendly
def meters_apply() -> None:
    """Create (or find) the Stripe meters Tally reports to, idempotently: executions, and input and
    output tokens per model (one meter each)."""
    from activities.deps import utc_now
    from gateways.stripe import StripeGateway
    from services.meters import apply_meters

    settings = get_settings()
    applied = apply_meters(engine(), StripeGateway(settings), catalog(), utc_now)
    for m in applied:
        click.echo(f"{m.how:<9} {m.key:<36} {m.event_name:<44} {m.stripe_meter_id}")
    created = sum(1 for m in applied if m.how == "created")
    click.echo(f"{len(applied)} meters ({created} created)")


@meters.command("report")
@click.option("--hour", required=True, metavar="YYYY-MM-DDTHH", help="The UTC hour to report, e.g. 2026-10-14T09.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the report to finish.")
@friendly
def meters_report(hour: str, wait: bool) -> None:
    """Report one hour's usage now (workflow usage-report-<hour>).

    Sends only what is not reported yet: running it again after it finished sends nothing, and after
    late executions sends the difference as a correction. The schedule does this every hour by itself.
    """
    from services.meters import report_hour, reportable_hour
    from workers.cli.close import CloseProgressBar

    settings = get_settings()
    h = reportable_hour(hour, datetime.now(timezone.utc))
    bar = CloseProgressBar(label=lambda p: f"reporting {p.hour}")
    try:
        result = run(report_hour(temporal(settings), settings, h, wait=wait, on_progress=bar.update,
                                 on_start=lambda wid: click.echo(f"reporting {wid}", err=True)))
    finally:
        bar.close()
    if result is None:
        click.echo(f"started usage-report-{h}; follow it at {settings.temporal_ui_url}")
        return
    click.echo(f"hour {result.hour}: {result.state}; {result.accounts:,} accounts, {result.events:,} meter events "
               f"sent, {result.already:,} already reported, {result.customers_created:,} Stripe customers created, "
               f"{result.stripe_calls:,} Stripe calls")
    for f in result.failed:
        click.echo(f"  FAILED {f.account_id} {f.meter}: {f.error}")
    if result.failed_count > len(result.failed):
        click.echo(f"  ... and {result.failed_count - len(result.failed)} more (tally meters status)")


@meters.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def meters_status(as_json: bool) -> None:
    """The last reported hour, gaps, hours that need a look (partial, late, expired), failed events
    and the drift found by the latest reconciliations."""
    from services.meters import meters_status as status_of

    s = status_of(engine(), get_settings(), datetime.now(timezone.utc))
    if as_json:
        click.echo(json.dumps(s.model_dump(mode="json"), indent=2))
        return
    if not s.meters:
        click.echo("no Stripe meters yet: run `tally meters apply`")
    click.echo(f"meters: {s.meters}; reporting since {s.reporting_since or '-'}; last reported hour "
               f"{s.last_reported_hour or '-'}; due through {s.due_through}")
    states = ", ".join(f"{n:,} {k}" for k, n in sorted(s.hours_by_state.items())) or "none"
    click.echo(f"hours: {states}; gaps (not looked at yet): {s.gaps:,}"
               + (f" (first: {', '.join(s.first_gaps)})" if s.first_gaps else ""))
    for h in s.attention:
        click.echo(f"  {h.state.upper():<8} {h.hour}" + (f"  {h.error}" if h.error else ""))
    click.echo(f"events not settled: {s.unsettled_events:,}")
    for f in s.failures:
        click.echo(f"  {f.hour} {f.account_id} {f.meter}: {f.error}")
    for r in s.reconciliations:
        click.echo(f"drift {r.period}: {r.drifting:,} of {r.pairs:,} account-meter totals differ from Stripe "
                   f"({r.unexplained:,} unexplained), checked {r.checked_at:%Y-%m-%d %H:%M} UTC"
                   + (f"; {r.unsettled:,} not settled yet (Stripe's summaries lag)" if r.unsettled else ""))


@meters.command("reconcile")
@click.option("--period", required=True, metavar="YYYY-MM", help="The calendar month (UTC) to compare.")
@click.option("--all", "everything", is_flag=True, help="List every account-meter pair, not only the drift.")
@click.option("--wait-to-settle", is_flag=True,
              help="When Stripe's summaries do not show recent reports yet, wait the settle time "
                   "(TALLY_METERS_SETTLE_MINUTES) and check those again, as the close does; without it the "
                   "answer comes at once and says what is not settled yet.")
@friendly
def meters_reconcile(period: str, everything: bool, wait_to_settle: bool) -> None:
    """Compare Tally's totals per account and meter with Stripe's meter summaries for the month
    (workflow meters-reconcile-YYYY-MM; the close runs it too) and list the drift with its reasons.
    Stripe's summaries lag behind ingestion: what was reported within the settle time and is missing
    from them is listed as not settled yet, not as drift."""
    from services.meters import drift_lines, reconcile

    settings = get_settings()
    summary = run(reconcile(temporal(settings), settings, period, rechecks=3 if wait_to_settle else 0,
                            on_start=lambda wid: click.echo(f"reconciling {wid}", err=True)))
    click.echo(summary.headline())
    for d in drift_lines(engine(), period, everything=everything, limit=None if everything else 100):
        stripe = "-" if d.stripe is None else f"{d.stripe:,}"
        click.echo(f"  {d.account_id:<24} {d.meter:<34} tally {d.tally:>12,}  reported {d.reported:>12,}  "
                   f"stripe {stripe:>12}  drift {d.drift:>+10,}  {d.explanation}")
