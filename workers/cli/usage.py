"""``tally usage``: metered executions."""

from __future__ import annotations

import sys

import click

from models.settings import get_settings
from workers.cli.common import UserError, catalog, friendly


@click.group()
def usage() -> None:
    """Metered executions."""


@usage.command("ingest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--show-rejections", type=int, default=20, show_default=True,
              help="How many rejected lines to list.")
@friendly
def usage_ingest(file: str, show_rejections: int) -> None:
    """Load executions from a JSON Lines file (one execution per line).

    Fields: event_id, account_id, agent_id, skill_id, model, input_tokens, output_tokens, byok,
    sandbox, cost_usd, occurred_at (ISO 8601 with time zone), and for a routed execution routed_model
    and routing_decision_id (both, from POST /v1/route). Event ids are unique per platform (the
    account's): a replay with the same content is counted and skipped, the same id with other content
    rejected; bad lines (and events billing will never see) are rejected with their line number and
    reason while good lines load.
    """
    from services.ingest import ingest_jsonl

    source = sys.stdin.buffer if file == "-" else file
    settings = get_settings()
    report = ingest_jsonl(settings.effective_database_url(), source, catalog(),
                          grace_hours=settings.late_usage_grace_hours)
    rate = report.lines / report.seconds if report.seconds else 0
    click.echo(f"accepted {report.accepted:,}  duplicate {report.duplicates:,}  rejected {report.rejected:,}"
               f"  ({report.lines:,} lines in {report.seconds:.2f} s, {rate:,.0f}/s)")
    for rej in report.rejections[:show_rejections]:
        click.echo(f"  line {rej.line}: {rej.reason}")
    if report.rejected > show_rejections:
        click.echo(f"  … and {report.rejected - show_rejections:,} more rejected lines")


@usage.command("partitions")
@click.option("--months-ahead", type=click.IntRange(1, 24), default=3, show_default=True,
              help="Create partitions for this month and this many more.")
@friendly
def usage_partitions(months_ahead: int) -> None:
    """Create the month partitions of executions ahead (what the daily `execution-partitions` schedule
    does); a month found in the default partition gets its own. Lists the archived months too."""
    from datetime import datetime, timezone

    from services import partitions

    url = get_settings().effective_database_url()
    done = partitions.ensure(url, datetime.now(timezone.utc), months_ahead)
    click.echo(f"created {', '.join(done.created) or 'none'}"
               + (f"; moved out of the default partition: {', '.join(done.from_default)}" if done.from_default else ""))
    for month, rows, file in partitions.archived(url):
        click.echo(f"archived {month}: {rows:,} executions in {file}")


@usage.command("archive")
@click.option("--before", required=True, metavar="YYYY-MM", help="Archive every month before this one.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="archive", show_default=True,
              help="Where the files go (executions-YYYY-MM.copy.gz, one per month).")
@friendly
def usage_archive(before: str, directory: str) -> None:
    """Archive old months of executions: each month before --before is written to a file and its
    partition dropped. Months a close may still read (late usage) are refused. Restore a month with
    `tally usage restore FILE`. Counters, invoices and the event ids (deduplication) stay."""
    from datetime import datetime, timezone
    from pathlib import Path

    from billing.periods import Period
    from services import partitions

    month = Period.parse(before)
    settings = get_settings()
    try:
        done = partitions.archive(settings.effective_database_url(), month, Path(directory),
                                  datetime.now(timezone.utc), settings.late_usage_grace_hours)
    except FileExistsError as err:
        raise UserError(str(err)) from None
    for month in done:
        click.echo(f"{month.period}: {month.rows:,} executions -> {month.path}")
    if not done:
        click.echo(f"no month before {before} to archive")


@usage.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@friendly
def usage_restore(file: str) -> None:
    """Load a month archived by `tally usage archive` back into executions (its partition is re-created)."""
    from pathlib import Path

    from services import partitions

    try:
        month = partitions.restore(get_settings().effective_database_url(), Path(file))
    except FileExistsError as err:
        raise UserError(str(err)) from None
    click.echo(f"{month.period}: {month.rows:,} executions restored from {month.path}")
