"""``tally report``: reports over closed periods."""

from __future__ import annotations

import click

from workers.cli.common import engine, friendly


@click.group()
def report() -> None:
    """Reports over closed periods."""


@report.command("margin")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--by", type=click.Choice(["plan", "account", "model"]), default="plan", show_default=True)
@friendly
def report_margin(period: str, by: str) -> None:
    """Revenue beside our LLM cost (platform keys; BYOK costs us nothing) and the margin.

    By model, revenue is what usage and token lines charged for that model, and cost is the LLM cost
    of the executions behind those lines.
    """
    from services.reports import margin

    rows = margin(engine(), period, by)
    click.echo(f"{by:<24} {'invoices':>8} {'executions':>12} {'revenue':>12} {'LLM cost':>12} {'margin':>12} {'%':>7}")
    for r in rows:
        pct = "-" if r.margin_percent is None else f"{r.margin_percent:.1f}"
        click.echo(f"{str(r.key):<24} {r.invoices:>8,} {r.executions:>12,} {r.revenue:>12,} {r.cost:>12,} "
                   f"{r.margin:>12,} {pct:>7}")
