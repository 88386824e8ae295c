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


@report.command("routing")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per account and skill.")
@friendly
def report_routing(period: str, as_json: bool) -> None:
    """What model routing saved per account and skill in a month.

    Against each decision's default model: the one the platform named in the route request, else the
    skill's recorded default (`tally routing skill`); executions without one are priced at the model they
    ran on (they save nothing) and counted as "no default". "price" is at the user price (what a
    token-priced bill saved), "cost" at our rate-card cost (what the platform's LLM bill saved). BYOK
    executions are counted, not priced; "fell back" ran another model than the routed one.
    """
    import json

    from services.routing import savings_report
    from workers.cli.common import catalog

    rows = savings_report(engine(), catalog(), period)
    if as_json:
        for r in rows:
            click.echo(json.dumps({k: str(v) if not isinstance(v, (int, str)) else v
                                   for k, v in r.as_dict().items()}))
        return
    click.echo(f"{'account':<20} {'skill':<20} {'executions':>10} {'BYOK':>6} {'fell back':>9} {'no default':>10} "
               f"{'default $':>10} {'routed $':>10} {'saved $':>10} {'saved cost':>10}")
    for r in rows:
        click.echo(f"{r.account_id:<20} {r.skill:<20} {r.executions:>10,} {r.byok_executions:>6,} "
                   f"{r.executions - r.followed:>9,} {r.without_default:>10,} {r.default_price:>10,} "
                   f"{r.routed_price:>10,} {r.saved_price:>10,} {r.saved_cost:>10,}")
    if rows:
        click.echo(f"{'total':<41} {sum(r.executions for r in rows):>10,} {'':>6} {'':>9} {'':>10} "
                   f"{sum(r.default_price for r in rows):>10,} {sum(r.routed_price for r in rows):>10,} "
                   f"{sum(r.saved_price for r in rows):>10,} {sum(r.saved_cost for r in rows):>10,}")
    else:
        click.echo(f"no routed executions in {period}")


@report.command("usage")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--months", type=int, default=3, show_default=True, help="This many months up to PERIOD (trends).")
@click.option("--json", "as_json", is_flag=True, help="Every figure as JSON.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the page with its charts (SVG, no JavaScript, works offline) to this file.")
@friendly
def report_usage(period: str, months: int, as_json: bool, html_file: str | None) -> None:
    """The seed's "data to collect": executions per user per month (median, p95, p99, histogram), tokens
    per execution by skill category and model, model mix, BYOK adoption, the tier conversion funnel,
    churn by usage decile, and platform cost, revenue and margin per tier. All accounts; every figure
    from SQL over the months' executions and the terms history (sandbox tries left out).
    """
    import json

    from services.analytics import to_json, usage_analytics
    from workers.cli.common import catalog

    if as_json and html_file:
        raise click.UsageError("--json and --html: choose one")
    data = usage_analytics(engine(), catalog(), period, months)
    if as_json:
        click.echo(json.dumps(to_json(data), indent=2))
        return
    if html_file:
        from pathlib import Path

        from api.analytics_page import render_analytics_page

        Path(html_file).write_text(render_analytics_page(data, "all accounts"), encoding="utf-8")
        click.echo(f"wrote {html_file}")
        return
    from api.analytics_page import TABLES, cell, table_rows

    for _tid, title, path, fields in TABLES:
        rows = table_rows(data, path)
        click.echo(f"\n{title}")
        widths = [max([len(f)] + [len(cell(r[f])) for r in rows]) for f in fields]
        click.echo("  ".join(f.replace("_", " ").ljust(w) for f, w in zip(fields, widths)))
        for r in rows:
            click.echo("  ".join(cell(r[f]).rjust(w) if isinstance(r[f], (int, float)) or r[f] is None
                                 or not isinstance(r[f], str) else cell(r[f]).ljust(w) for f, w in zip(fields, widths)))
