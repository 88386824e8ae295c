"""``tally close``: the monthly close through Temporal, with a progress bar."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from models.settings import Settings, get_settings
from workers.cli.common import engine, friendly, run, temporal


class CloseProgressBar:
    """A progress bar on stderr fed by the close's progress query; appears once the close knows how
    many accounts it bills. (Any progress with ``accounts_total``/``accounts_done``: ``label`` names it.)"""

    def __init__(self, label=lambda p: f"closing {p.period}"):
        self.bar = None
        self.last = 0
        self.label = label

    def update(self, p) -> None:
        if p.accounts_total and self.bar is None:
            self.bar = click.progressbar(length=p.accounts_total, label=self.label(p),
                                         show_pos=True, file=click.get_text_stream("stderr"))
            self.bar.__enter__()
        if self.bar is not None and p.accounts_done > self.last:
            self.bar.update(p.accounts_done - self.last)
            self.last = p.accounts_done

    def complete(self) -> None:
        if self.bar is not None:
            self.bar.update(max(0, self.bar.length - self.last))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


async def close_with_progress(settings: Settings, period, **options):
    """The close of ``period`` (``services.close.run_close``) with a progress bar while it runs."""
    from services.close import run_close

    bar = CloseProgressBar()
    try:
        result = await run_close(temporal(settings), settings, period, on_progress=bar.update,
                                 on_start=_say_how, on_notice=lambda m: click.echo(f"\n{m}", err=True), **options)
        bar.complete()
        return result
    finally:
        bar.close()


def _say_how(start) -> None:
    wid = start.handle.id
    if start.how == "attached":
        click.echo(f"{wid} is already running (started by the schedule or another caller): following it", err=True)
    elif start.how == "finished":
        click.echo(f"{wid} already finished: showing what it did (--rerun starts a new run)", err=True)


@click.command("close")
@click.option("--period", required=True, metavar="YYYY-MM", help="The calendar month (UTC) to close.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the close to finish.")
@click.option("--chunk-size", type=int, default=None, help="Accounts per chunk workflow.")
@click.option("--parallel", type=int, default=None, help="Chunk workflows running at once.")
@click.option("--no-stripe", is_flag=True, help="Rate and write invoices, but do not push them to Stripe.")
@click.option("--rerun", is_flag=True,
              help="Start a new run of a close that already finished (changes nothing already invoiced).")
@friendly
def close(period: str, wait: bool, chunk_size: int | None, parallel: int | None, no_stripe: bool,
          rerun: bool) -> None:
    """Run the monthly close for a period through Temporal and wait, with a progress bar.

    A month has one close, workflow close-YYYY-MM, whoever starts it: while it runs (e.g. started by the
    schedule) this attaches to it; after it finished this shows what it did. A failed close runs again.
    """
    from services.close import closable_period, close_workflow_id, period_outcome

    settings = get_settings()
    p = closable_period(period, datetime.now(timezone.utc), settings.late_usage_grace_hours)
    result = run(close_with_progress(settings, p, wait=wait, chunk_size=chunk_size, parallel=parallel,
                                     push=not no_stripe, rerun=rerun))
    if result is None:
        click.echo(f"started {close_workflow_id(p)}; follow it at {settings.temporal_ui_url}")
        return
    click.echo(
        f"closed {result.period}: {result.accounts:,} accounts in {result.chunks} chunks; "
        f"{result.invoices_rated:,} rated ({result.no_charge:,} no charge), "
        f"{result.invoices_frozen:,} already final; pushed {result.pushed:,}, "
        f"already in Stripe {result.already_pushed:,}; total ${result.total:,}"
    )
    click.echo(period_outcome(engine(), result.period))  # the period's, not only this run's
    for f in result.failed:
        click.echo(f"  FAILED {f.account_id} (invoice {f.invoice_id}) {f.kind}: {f.error}")
    if result.meters is not None:  # usage reporting: Tally's meter totals against Stripe's
        click.echo(result.meters.headline())
        for d in result.meters.lines[:10]:
            click.echo(f"  DRIFT {d.account_id} {d.meter}: tally {d.tally:,}, stripe "
                       f"{'-' if d.stripe is None else format(d.stripe, ',')} ({d.drift:+,}): {d.explanation}")
        if result.meters.drifting > 10:
            click.echo(f"  ... tally meters reconcile --period {result.period} lists all {result.meters.drifting:,}")
    click.echo(f"Temporal UI: {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}"
               f"/workflows/{close_workflow_id(result.period)}")
