"""The ``tally`` command line: what ops and developers type.

Each command parses its options, calls one service function (``services/``) and prints. Every
command reads the one Settings object (environment, then the local stack file). Errors are printed as
one line that names what is wrong, never as a traceback (``friendly``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
from datetime import datetime, timezone
from decimal import Decimal

import click

from models.settings import ConfigError, Settings, get_settings


# ---- common ------------------------------------------------------------------------------------------
class UserError(click.ClickException):
    pass


def friendly(fn):
    """Turn the errors a person can act on into one clear line: the services' domain errors, bad
    input, an unreachable database or Temporal. The one place the CLI maps errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from sqlalchemy.exc import OperationalError, ProgrammingError
        from temporalio.service import RPCError

        from services.errors import ServiceError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, ServiceError, ValueError) as err:
            raise UserError(str(err)) from None
        except OperationalError as err:
            raise UserError(f"cannot reach the database: {str(err.orig).strip().splitlines()[0]}") from None
        except ProgrammingError as err:
            raise UserError(f"database error (is the schema migrated? `tally db migrate`): "
                            f"{str(err.orig).strip().splitlines()[0]}") from None
        except RPCError as err:
            raise UserError(f"Temporal: {err.message} (is it running? `tally dev status`)") from None
        except (ConnectionError, OSError) as err:
            raise UserError(f"cannot reach a service: {err}") from None

    return wrapper


def engine():
    from models.db import get_engine

    return get_engine(get_settings().effective_database_url())


def catalog():
    from billing.catalog import load_catalog

    return load_catalog(get_settings().catalog_path)


def temporal(settings):
    """What services call to reach Temporal (they connect only once the input is checked)."""
    from workers.worker import connect

    return lambda: connect(settings)


def run(coro):
    return asyncio.run(coro)


def on_off(flag: bool) -> str:
    return "on" if flag else "off"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Tally: meters, prices, invoices (Stripe) and pays out for the agent platform.

    Connection settings come from the environment (DATABASE_URL, TEMPORAL_ADDRESS, STRIPE_API_KEY,
    TALLY_*) or, when unset, from the local stack that `tally dev up` starts.
    """


# ---- accounts ----------------------------------------------------------------------------------------
@click.group()
def accounts() -> None:
    """Customer accounts and their plans."""


def _parse_day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise UserError(f"{name}: expected YYYY-MM-DD, got {value!r}") from None


@accounts.command("create")
@click.argument("account_id")
@click.option("--plan", required=True, help="free, pro, team or payg (from the catalog).")
@click.option("--seats", type=int, default=1, show_default=True, help="Seats (team plan only).")
@click.option("--overage/--no-overage", default=False, help="Opt in to overage beyond the included executions.")
@click.option("--email", default=None, help="Billing e-mail (passed to Stripe).")
@click.option("--billing-start", default=None, metavar="YYYY-MM-DD",
              help="First day billed (UTC); default: today.")
@click.option("--pricing", type=click.Choice(["executions", "tokens"]), default="executions", show_default=True,
              help="Charge usage per execution, or per token at the rate card's user prices.")
@friendly
def accounts_create(account_id: str, plan: str, seats: int, overage: bool, email: str | None,
                    billing_start: str | None, pricing: str) -> None:
    """Create an account (idempotent: the same command twice is fine)."""
    from services.accounts import create_account

    start = None
    if billing_start:
        try:
            start = datetime.strptime(billing_start, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        except ValueError:
            raise UserError("billing-start: expected YYYY-MM-DD") from None
    created = create_account(engine(), account_id=account_id, plan=plan, seats=seats, overage_opt_in=overage,
                             email=email, billing_start=start, pricing=pricing, catalog=catalog())
    click.echo(f"{'created' if created else 'exists'}: {account_id} ({plan}, seats={seats}, "
               f"overage={on_off(overage)}, pricing={pricing})")


@accounts.command("change")
@click.argument("account_id")
@click.option("--plan", default=None, help="New plan.")
@click.option("--seats", type=int, default=None, help="New seat count (per-seat plans).")
@click.option("--overage/--no-overage", default=None, help="Switch overage opt-in on or off.")
@click.option("--pricing", type=click.Choice(["executions", "tokens"]), default=None)
@click.option("--effective", default=None, metavar="YYYY-MM-DD",
              help="Day the change takes effect, at 00:00 UTC; default: today.")
@click.option("--reason", default="changed by ops", show_default=True)
@friendly
def accounts_change(account_id: str, plan: str | None, seats: int | None, overage: bool | None,
                    pricing: str | None, effective: str | None, reason: str) -> None:
    """Change an account's plan, seats, overage opt-in or pricing from a given day.

    The month is then billed in segments: each priced under its own terms, the fee and the
    included executions prorated by days.
    """
    from services.accounts import change_account

    changed = change_account(engine(), account_id, plan=plan, seats=seats, overage_opt_in=overage, pricing=pricing,
                             effective=_parse_day(effective, "effective"), reason=reason, catalog=catalog())
    t = changed.terms
    click.echo(f"{account_id}: from {changed.effective_from:%Y-%m-%d} {t.plan}, seats={t.seats}, "
               f"overage={on_off(t.overage_opt_in)}, pricing={t.pricing}")


@accounts.command("history")
@click.argument("account_id")
@friendly
def accounts_history(account_id: str) -> None:
    """An account's terms over time (plan, seats, overage, pricing) and why each changed."""
    from services.accounts import terms_history

    for r in terms_history(engine(), account_id):
        click.echo(f"{r.effective_from:%Y-%m-%d}  {r.plan:<6} seats={r.seats} "
                   f"overage={on_off(r.overage_opt_in)} pricing={r.pricing}  — {r.reason}")


@accounts.command("list")
@click.option("--plan", default=None)
@click.option("--limit", type=int, default=1000, show_default=True)
@friendly
def accounts_list(plan: str | None, limit: int) -> None:
    """List accounts."""
    from services.accounts import list_accounts

    rows = list_accounts(engine(), plan=plan, limit=limit)
    click.echo(f"{'account':<24} {'plan':<8} {'seats':>5} {'overage':<7} {'stripe customer':<20} email")
    for r in rows:
        click.echo(f"{r.id:<24} {r.plan:<8} {r.seats:>5} {on_off(r.overage_opt_in):<7} "
                   f"{(r.stripe_customer_id or '-'):<20} {r.email or '-'}")


@accounts.command("billing-link")
@click.argument("account_id")
@click.option("--hours", type=int, default=None, help="Validity (default: TALLY_BILLING_LINK_HOURS, 24).")
@click.option("--base-url", default=None, help="API base URL users reach (default: TALLY_API_PUBLIC_URL).")
@friendly
def accounts_billing_link(account_id: str, hours: int | None, base_url: str | None) -> None:
    """Print a signed link to the account's billing page (anyone holding it can view the page)."""
    from services.accounts import account_billing_link

    click.echo(account_billing_link(engine(), get_settings(), account_id, hours=hours, base_url=base_url))


# ---- usage -------------------------------------------------------------------------------------------
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
    sandbox, cost_usd, occurred_at (ISO 8601 with time zone). Duplicate event ids are counted and
    skipped; bad lines are rejected with their line number and reason while good lines load.
    """
    from services.ingest import ingest_jsonl

    source = sys.stdin.buffer if file == "-" else file
    report = ingest_jsonl(get_settings().effective_database_url(), source, catalog())
    rate = report.lines / report.seconds if report.seconds else 0
    click.echo(f"accepted {report.accepted:,}  duplicate {report.duplicates:,}  rejected {report.rejected:,}"
               f"  ({report.lines:,} lines in {report.seconds:.2f} s, {rate:,.0f}/s)")
    for rej in report.rejections[:show_rejections]:
        click.echo(f"  line {rej.line}: {rej.reason}")
    if report.rejected > show_rejections:
        click.echo(f"  … and {report.rejected - show_rejections:,} more rejected lines")


# ---- close -------------------------------------------------------------------------------------------
class CloseProgressBar:
    """A progress bar on stderr fed by the close's progress query; appears once the close knows how
    many accounts it bills."""

    def __init__(self):
        self.bar = None
        self.last = 0

    def update(self, p) -> None:
        if p.accounts_total and self.bar is None:
            self.bar = click.progressbar(length=p.accounts_total, label=f"closing {p.period}",
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
        result = await run_close(temporal(settings), settings, period, on_progress=bar.update, **options)
        bar.complete()
        return result
    finally:
        bar.close()


@click.command("close")
@click.option("--period", required=True, metavar="YYYY-MM", help="The calendar month (UTC) to close.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the close to finish.")
@click.option("--chunk-size", type=int, default=None, help="Accounts per chunk workflow.")
@click.option("--parallel", type=int, default=None, help="Chunk workflows running at once.")
@click.option("--no-stripe", is_flag=True, help="Rate and write invoices, but do not push them to Stripe.")
@friendly
def close(period: str, wait: bool, chunk_size: int | None, parallel: int | None, no_stripe: bool) -> None:
    """Run the monthly close for a period through Temporal and wait, with a progress bar.

    Re-running a finished close changes nothing; running it while it runs attaches to that run.
    """
    from services.close import closable_period, close_workflow_id

    settings = get_settings()
    p = closable_period(period, datetime.now(timezone.utc), settings.late_usage_grace_hours)
    result = run(close_with_progress(settings, p, wait=wait, chunk_size=chunk_size, parallel=parallel,
                                     push=not no_stripe))
    if result is None:
        click.echo(f"started {close_workflow_id(p)}; follow it at {settings.temporal_ui_url}")
        return
    click.echo(
        f"closed {result.period}: {result.accounts:,} accounts in {result.chunks} chunks; "
        f"{result.invoices_rated:,} rated ({result.no_charge:,} no charge), "
        f"{result.invoices_frozen:,} already final; pushed {result.pushed:,}, "
        f"already in Stripe {result.already_pushed:,}; total ${result.total:,}"
    )
    for f in result.failed:
        click.echo(f"  FAILED {f.account_id} (invoice {f.invoice_id}): {f.error}")
    click.echo(f"Temporal UI: {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}"
               f"/workflows/{close_workflow_id(result.period)}")


# ---- invoices ----------------------------------------------------------------------------------------
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


# ---- reports -----------------------------------------------------------------------------------------
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


# ---- schedules ---------------------------------------------------------------------------------------
@click.group()
def schedules() -> None:
    """Temporal Schedules that start the recurring jobs."""


@schedules.command("apply")
@friendly
def schedules_apply() -> None:
    """Create or update the schedules (idempotent)."""
    from workers.schedules import apply_schedules

    for line in run(apply_schedules(get_settings())):
        click.echo(line)


# ---- demo --------------------------------------------------------------------------------------------
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
    from services.close import close_workflow_id
    from services.reports import period_summary
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
    click.echo(f"this run: {result.invoices_rated:,} invoices rated, {result.pushed:,} pushed to Stripe, "
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


# ---- api ---------------------------------------------------------------------------------------------
@click.command("api")
@click.option("--host", default=None, help="Interface to bind (default: TALLY_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: TALLY_API_PORT, 8000).")
@click.option("--workers", type=int, default=None, help="uvicorn worker processes (default: TALLY_API_WORKERS, 1).")
@friendly
def api_command(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the metering HTTP API until interrupted (OpenAPI document at /openapi.json)."""
    from api.server import serve

    serve(host, port, workers)


# ---- platforms ---------------------------------------------------------------------------------------
@click.group()
def platforms() -> None:
    """Platforms that call the API, and their API keys."""


@platforms.command("create")
@click.argument("name")
@friendly
def platforms_create(name: str) -> None:
    """Create a platform and print its API key (shown once; only its hash is stored)."""
    from services.platforms import create_platform

    key = create_platform(engine(), name)
    click.echo(f"created platform {name}; its API key (shown only now, keep it secret):")
    click.echo(key)


@platforms.command("rotate-key")
@click.argument("name")
@friendly
def platforms_rotate_key(name: str) -> None:
    """Replace a platform's API key; the old one stops working within 30 s."""
    from services.platforms import rotate_key

    key = rotate_key(engine(), name)
    click.echo(f"new API key of {name} (shown only now):")
    click.echo(key)


@platforms.command("list")
@friendly
def platforms_list() -> None:
    """List platforms and how many accounts each has."""
    from services.platforms import list_platforms

    rows = list_platforms(engine())
    click.echo(f"{'platform':<24} {'accounts':>8}  created")
    for r in rows:
        click.echo(f"{r.name:<24} {r.accounts:>8,}  {r.created_at:%Y-%m-%d %H:%M}")


@platforms.command("attach")
@click.argument("name")
@click.argument("account_ids", nargs=-1, required=True)
@friendly
def platforms_attach(name: str, account_ids: tuple[str, ...]) -> None:
    """Attach accounts to a platform (its key then reaches them through the API)."""
    from services.platforms import attach_accounts

    n = attach_accounts(engine(), name, list(account_ids))
    click.echo(f"attached {n:,} account(s) to {name}")


# ---- db ----------------------------------------------------------------------------------------------
@click.command()
def worker() -> None:
    """Run a Tally worker (all workflows and activities) until interrupted."""
    from workers.worker import main as worker_main

    worker_main()


@click.group()
def db() -> None:
    """Database schema."""


@db.command("migrate")
@friendly
def db_migrate() -> None:
    """Apply the Alembic migrations (idempotent)."""
    from models.db import migrate

    migrate(get_settings().effective_database_url())
    click.echo("schema is up to date")


for _command in (worker, db, accounts, usage, close, invoices, report, schedules, demo, api_command, platforms):
    cli.add_command(_command)


def _mount_optional_groups() -> None:
    try:
        from workers.cli_dev import dev
    except ImportError:  # pragma: no cover - only while the dev stack module is missing
        return
    cli.add_command(dev)


_mount_optional_groups()


def main() -> None:
    """Run the CLI, then leave without interpreter finalisation.

    The Temporal client's Rust runtime keeps threads that can abort the interpreter while it
    finalises ("PyGILState_Release ... must be current"), turning a finished command into exit -6.
    Everything a command prints is flushed first; nothing of ours relies on atexit handlers.
    """
    try:
        cli(prog_name="tally")
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
