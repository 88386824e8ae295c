"""The ``tally`` command line: what ops and developers type.

Every command reads the one Settings object (environment, then the local stack file). Errors are
printed as one line that names what is wrong, never as a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from decimal import Decimal

import click

from models.settings import ConfigError, get_settings

ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class UserError(click.ClickException):
    pass


def friendly(fn):
    """Turn the errors a person can act on into one clear line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from activities.repository import NotFound
        from billing.catalog import CatalogError
        from billing.periods import PeriodError
        from sqlalchemy.exc import OperationalError, ProgrammingError
        from temporalio.service import RPCError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, NotFound, PeriodError, CatalogError, ValueError) as err:
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


def _engine():
    from models.db import get_engine

    return get_engine(get_settings().effective_database_url())


def _catalog():
    from billing.catalog import load_catalog

    return load_catalog(get_settings().catalog_path)


def _run(coro):
    return asyncio.run(coro)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Tally: meters, prices, invoices (Stripe) and pays out for the agent platform.

    Connection settings come from the environment (DATABASE_URL, TEMPORAL_ADDRESS, STRIPE_API_KEY,
    TALLY_*) or, when unset, from the local stack that `tally dev up` starts.
    """


# ---- worker / database ------------------------------------------------------------------------------
@cli.command()
def worker() -> None:
    """Run a Tally worker (all workflows and activities) until interrupted."""
    from workers.worker import main as worker_main

    worker_main()


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("migrate")
@friendly
def db_migrate() -> None:
    """Apply the Alembic migrations (idempotent)."""
    from models.db import migrate

    migrate(get_settings().effective_database_url())
    click.echo("schema is up to date")


# ---- accounts ---------------------------------------------------------------------------------------
@cli.group()
def accounts() -> None:
    """Customer accounts and their plans."""


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
    from activities import repository as repo

    if not ACCOUNT_ID.match(account_id):
        raise UserError("account_id: 1-64 characters of letters, digits, '_', '.', ':' or '-'")
    version = _catalog().at(datetime.now(timezone.utc))
    plan_def = version.plan(plan)  # unknown plan -> CatalogError naming the known ones
    if plan_def.contract:
        raise UserError(f"plan: {plan} accounts are billed by contract; create them with a contract")
    if seats < 1:
        raise UserError("seats: must be at least 1")
    if seats > 1 and not plan_def.fee_per_seat:
        raise UserError(f"seats: only per-seat plans take seats; {plan} is billed per account")
    start = None
    if billing_start:
        try:
            start = datetime.strptime(billing_start, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        except ValueError:
            raise UserError("billing-start: expected YYYY-MM-DD") from None
    with _engine().begin() as conn:
        created = repo.create_account(conn, account_id=account_id, plan=plan, seats=seats,
                                      overage_opt_in=overage, email=email, billing_starts_at=start,
                                      pricing=pricing)
    click.echo(f"{'created' if created else 'exists'}: {account_id} ({plan}, seats={seats}, "
               f"overage={'on' if overage else 'off'}, pricing={pricing})")


def _parse_day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise UserError(f"{name}: expected YYYY-MM-DD, got {value!r}") from None


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
    from activities import repository as repo

    if plan is None and seats is None and overage is None and pricing is None:
        raise UserError("nothing to change: give --plan, --seats, --overage/--no-overage or --pricing")
    when = _parse_day(effective, "effective") or datetime.now(timezone.utc)
    version = _catalog().at(when)
    with _engine().begin() as conn:
        current = repo.get_account(conn, account_id)
        plan_def = version.plan(plan or current.plan)
        if plan_def.contract:
            raise UserError(f"plan: {plan_def.code} accounts are billed by contract")
        new_seats = seats if seats is not None else (current.seats if plan_def.code == current.plan else 1)
        if new_seats < 1:
            raise UserError("seats: must be at least 1")
        if new_seats > 1 and not plan_def.fee_per_seat:
            raise UserError(f"seats: only per-seat plans take seats; {plan_def.code} is billed per account")
        terms = repo.change_terms(conn, account_id=account_id, effective_from=when, reason=reason, plan=plan,
                                  seats=new_seats, overage_opt_in=overage, pricing=pricing)
    click.echo(f"{account_id}: from {when:%Y-%m-%d} {terms['plan']}, seats={terms['seats']}, "
               f"overage={'on' if terms['overage_opt_in'] else 'off'}, pricing={terms['pricing']}")


@accounts.command("history")
@click.argument("account_id")
@friendly
def accounts_history(account_id: str) -> None:
    """An account's terms over time (plan, seats, overage, pricing) and why each changed."""
    from activities import repository as repo

    with _engine().begin() as conn:
        repo.get_account(conn, account_id)
        rows = repo.terms_history(conn, account_id)
    for r in rows:
        click.echo(f"{r.effective_from:%Y-%m-%d}  {r.plan:<6} seats={r.seats} "
                   f"overage={'on' if r.overage_opt_in else 'off'} pricing={r.pricing}  — {r.reason}")


@accounts.command("list")
@click.option("--plan", default=None)
@click.option("--limit", type=int, default=1000, show_default=True)
@friendly
def accounts_list(plan: str | None, limit: int) -> None:
    """List accounts."""
    from activities import repository as repo

    with _engine().begin() as conn:
        rows = repo.list_accounts(conn, plan=plan, limit=limit)
    click.echo(f"{'account':<24} {'plan':<8} {'seats':>5} {'overage':<7} {'stripe customer':<20} email")
    for r in rows:
        click.echo(f"{r.id:<24} {r.plan:<8} {r.seats:>5} {('on' if r.overage_opt_in else 'off'):<7} "
                   f"{(r.stripe_customer_id or '-'):<20} {r.email or '-'}")


# ---- usage ------------------------------------------------------------------------------------------
@cli.group()
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
    from activities.ingest import ingest_file, known_models

    settings = get_settings()
    source = sys.stdin.buffer if file == "-" else file
    report = ingest_file(settings.effective_database_url(), source, known_models(_catalog()))
    rate = report.lines / report.seconds if report.seconds else 0
    click.echo(f"accepted {report.accepted:,}  duplicate {report.duplicates:,}  rejected {report.rejected:,}"
               f"  ({report.lines:,} lines in {report.seconds:.2f} s, {rate:,.0f}/s)")
    for rej in report.rejections[:show_rejections]:
        click.echo(f"  line {rej.line}: {rej.reason}")
    if report.rejected > show_rejections:
        click.echo(f"  … and {report.rejected - show_rejections:,} more rejected lines")


# ---- the close --------------------------------------------------------------------------------------
def _check_period_now(period_text: str):
    from billing.periods import Period

    period = Period.parse(period_text)
    settings = get_settings()
    now = datetime.now(timezone.utc)
    closes_at = period.closes_at(settings.late_usage_grace_hours)
    if now < closes_at:
        state = "has not started" if now < period.start else "is still open"
        raise UserError(
            f"period: {period} {state}; it can be closed from {closes_at:%Y-%m-%d %H:%M} UTC "
            f"(period end + {settings.late_usage_grace_hours} h late-usage grace)"
        )
    return period


@cli.command("close")
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
    from workers.operations import run_close

    p = _check_period_now(period)
    settings = get_settings()
    result = _run(run_close(settings, str(p), wait=wait, chunk_size=chunk_size, parallel=parallel,
                            push=not no_stripe, progress=True))
    if result is None:
        click.echo(f"started close-{p}; follow it at {settings.temporal_ui_url}")
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
               f"/workflows/close-{result.period}")


# ---- invoices ---------------------------------------------------------------------------------------
@cli.group()
def invoices() -> None:
    """Invoices produced by the close."""


@invoices.command("list")
@click.option("--period", required=True, metavar="YYYY-MM")
@click.option("--status", default=None, help="Only invoices in this status.")
@friendly
def invoices_list(period: str, status: str | None) -> None:
    """List the period's invoices."""
    from activities import repository as repo
    from billing.periods import Period

    p = Period.parse(period)
    with _engine().begin() as conn:
        rows = repo.list_invoices(conn, p, status)
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
    from workers.operations import invoice_view

    view = invoice_view(_engine(), account_id, period)
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
    from workers.operations import invoice_preview

    at = None
    if at_text:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise UserError(f"at: {at_text!r} is not an ISO 8601 timestamp") from None
        if at.tzinfo is None:
            raise UserError("at: add a time zone (Z or +00:00)")
    view = invoice_preview(_engine(), account_id, at, _catalog())
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
    from workers.operations import explain_invoice

    ex = explain_invoice(_engine(), account_id, period, _catalog())
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
    from workers.operations import retry_invoice

    res = _run(retry_invoice(get_settings(), _engine(), account_id, period))
    what = "was already in Stripe" if res.already_pushed else f"is now {res.status}"
    click.echo(f"invoice {res.invoice_id} ({account_id} {period}) {what}: {res.stripe_invoice_id or '-'}")


# ---- reports ----------------------------------------------------------------------------------------
@cli.group()
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
    from activities import repository as repo
    from billing.periods import Period

    with _engine().begin() as conn:
        rows = repo.margin_report(conn, Period.parse(period), by)
    click.echo(f"{by:<24} {'invoices':>8} {'executions':>12} {'revenue':>12} {'LLM cost':>12} {'margin':>12} {'%':>7}")
    for r in rows:
        revenue = r.revenue if r.revenue is not None else Decimal("0.00")
        cost = (r.cost or Decimal(0)).quantize(Decimal("0.01"))
        pct = f"{(revenue - cost) / revenue * 100:.1f}" if revenue else "-"
        click.echo(f"{str(r.key):<24} {r.invoices:>8,} {int(r.executions or 0):>12,} {revenue:>12,} {cost:>12,} "
                   f"{revenue - cost:>12,} {pct:>7}")


# ---- schedules --------------------------------------------------------------------------------------
@cli.group()
def schedules() -> None:
    """Temporal Schedules that start the recurring jobs."""


@schedules.command("apply")
@friendly
def schedules_apply() -> None:
    """Create or update the schedules (idempotent)."""
    from workers.schedules import apply_schedules

    for line in _run(apply_schedules(get_settings())):
        click.echo(line)


# ---- demo -------------------------------------------------------------------------------------------
@cli.command()
@click.option("--accounts", "n_accounts", type=int, default=300, show_default=True)
@click.option("--executions", "n_executions", type=int, default=300_000, show_default=True)
@click.option("--period", default=None, metavar="YYYY-MM", help="Default: the latest closable month.")
@friendly
def demo(n_accounts: int, n_executions: int, period: str | None) -> None:
    """Start the local stack, seed a realistic month, close it through Temporal, print a summary."""
    from workers.demo import run_demo

    run_demo(get_settings(), n_accounts=n_accounts, n_executions=n_executions, period=period)


# ---- metering API -----------------------------------------------------------------------------------
@cli.command("api")
@click.option("--host", default=None, help="Interface to bind (default: TALLY_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: TALLY_API_PORT, 8000).")
@click.option("--workers", type=int, default=None, help="uvicorn worker processes (default: TALLY_API_WORKERS, 1).")
@friendly
def api_command(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the metering HTTP API until interrupted (OpenAPI document at /openapi.json)."""
    from api.server import serve

    serve(host, port, workers)


@cli.group()
def platforms() -> None:
    """Platforms that call the API, and their API keys."""


@platforms.command("create")
@click.argument("name")
@friendly
def platforms_create(name: str) -> None:
    """Create a platform and print its API key (shown once; only its hash is stored)."""
    from activities import metering
    from api.auth import hash_key, new_api_key

    if not ACCOUNT_ID.match(name):
        raise UserError("name: 1-64 characters of letters, digits, '_', '.', ':' or '-'")
    key = new_api_key()
    with _engine().begin() as conn:
        metering.create_platform(conn, name, hash_key(key))
    click.echo(f"created platform {name}; its API key (shown only now, keep it secret):")
    click.echo(key)


@platforms.command("rotate-key")
@click.argument("name")
@friendly
def platforms_rotate_key(name: str) -> None:
    """Replace a platform's API key; the old one stops working within 30 s."""
    from activities import metering
    from api.auth import hash_key, new_api_key

    key = new_api_key()
    with _engine().begin() as conn:
        if not metering.rotate_platform_key(conn, name, hash_key(key)):
            raise UserError(f"name: no platform {name!r}")
    click.echo(f"new API key of {name} (shown only now):")
    click.echo(key)


@platforms.command("list")
@friendly
def platforms_list() -> None:
    """List platforms and how many accounts each has."""
    from activities import metering

    with _engine().begin() as conn:
        rows = metering.list_platforms(conn)
    click.echo(f"{'platform':<24} {'accounts':>8}  created")
    for r in rows:
        click.echo(f"{r.name:<24} {r.accounts:>8,}  {r.created_at:%Y-%m-%d %H:%M}")


@platforms.command("attach")
@click.argument("name")
@click.argument("account_ids", nargs=-1, required=True)
@friendly
def platforms_attach(name: str, account_ids: tuple[str, ...]) -> None:
    """Attach accounts to a platform (its key then reaches them through the API)."""
    from activities import metering

    with _engine().begin() as conn:
        platform = metering.platform_by_name(conn, name)
        if platform is None:
            raise UserError(f"name: no platform {name!r}")
        for account_id in account_ids:
            try:
                metering.assign_platform(conn, account_id, platform.id)
            except LookupError as err:
                raise UserError(str(err)) from None
    click.echo(f"attached {len(account_ids):,} account(s) to {name}")


@accounts.command("billing-link")
@click.argument("account_id")
@click.option("--hours", type=int, default=None, help="Validity (default: TALLY_BILLING_LINK_HOURS, 24).")
@click.option("--base-url", default=None, help="API base URL users reach (default: TALLY_API_PUBLIC_URL).")
@friendly
def accounts_billing_link(account_id: str, hours: int | None, base_url: str | None) -> None:
    """Print a signed link to the account's billing page (anyone holding it can view the page)."""
    from activities import repository as repo
    from api.auth import billing_link

    settings = get_settings()
    with _engine().begin() as conn:
        repo.get_account(conn, account_id)
    click.echo(billing_link(base_url or settings.api_url, settings.effective_api_secret(), account_id,
                            hours or settings.billing_link_hours))


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
