"""``tally usage``: metered executions."""

from __future__ import annotations

import sys

import click

from models.settings import get_settings
from workers.cli.common import catalog, friendly


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
