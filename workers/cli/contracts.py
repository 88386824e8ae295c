"""``tally contracts``: create, show, list, amend (enterprise committed-use contracts)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import click

from models.settings import get_settings
from workers.cli.common import UserError, catalog, engine, friendly, run, temporal


@click.group()
def contracts() -> None:
    """Enterprise committed-use contracts (one workflow contract-<id> per term)."""


def _day(value: str, name: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise UserError(f"{name}: expected YYYY-MM-DD, got {value!r}") from None


def _pct(fraction) -> str:
    return f"{fraction * 100:.1f}%"


def _last_day(end: datetime) -> str:
    return f"{end - timedelta(days=1):%Y-%m-%d}"


@contracts.command("create")
@click.argument("account_id")
@click.option("--commit", "commitment", type=int, required=True, metavar="EXECUTIONS",
              help="Executions committed per month (at least 100,000; the discount tier comes from the catalog).")
@click.option("--start", required=True, metavar="YYYY-MM-DD", help="First day of the term (00:00 UTC).")
@click.option("--months", type=int, required=True, help="Length of the term (at least 12).")
@click.option("--email", default=None, help="Billing e-mail, for an account created by the contract.")
@friendly
def contracts_create(account_id: str, commitment: int, start: str, months: int, email: str | None) -> None:
    """Create an enterprise account's contract and start its term workflow.

    An account that does not exist yet is created as an enterprise account billed from START; an
    existing account moves to enterprise on START (the days before are billed on its plan). The same
    command twice finds the contract instead of creating a second one.
    """
    from services.contracts import create_contract, start_term

    settings = get_settings()
    created = create_contract(engine(), catalog(), account_id=account_id, commitment=commitment,
                              start=_day(start, "start"), months=months, email=email)
    workflow_id = run(start_term(temporal(settings), settings, created))
    _print_created(created, workflow_id)


def _print_created(created, workflow_id: str) -> None:
    from services.contracts import contract_view

    view = contract_view(engine(), catalog(), created.contract_id)
    verb = "created" if created.created else "exists:"
    click.echo(f"{verb} contract {view.id} for {view.account_id}: {view.commitment:,} executions a month "
               f"({_pct(view.discount)} off, ${view.rate.normalize():f} each) from {view.start:%Y-%m-%d} for "
               f"{view.months} months (through {_last_day(view.end)})")
    if created.account_created:
        click.echo(f"  created enterprise account {view.account_id}, billed from {view.start:%Y-%m-%d}")
    click.echo(f"  term workflow: {workflow_id}")


@contracts.command("show")
@click.argument("contract_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (amounts as decimal strings).")
@friendly
def contracts_show(contract_id: str, as_json: bool) -> None:
    """A contract: its terms, amendments, and each month's commitment and utilisation."""
    from services.contracts import contract_view

    view = contract_view(engine(), catalog(), contract_id)
    if as_json:
        click.echo(json.dumps(view.model_dump(mode="json"), indent=2))
        return
    state = "terminated early" if view.terminated else ("ended" if view.summary else "in force")
    click.echo(f"Contract {view.id}  account={view.account_id}  {view.start:%Y-%m-%d} to {_last_day(view.end)}  "
               f"({view.months} months, {state})  catalog={view.catalog_version}  workflow={view.workflow_id}")
    click.echo(f"  commitment {view.commitment_now:,}/month ({_pct(view.discount)} off: ${view.rate.normalize():f} "
               f"each; above it ${view.standard_rate.normalize():f})"
               + (f", signed at {view.commitment:,}" if view.commitment != view.commitment_now else ""))
    for a in view.amendments:
        what = {"raise_commitment": f"raised to {a.commitment:,}", "extend_term": f"extended by {a.extra_months} months",
                "terminate": "terminated early"}[a.kind]
        click.echo(f"  amendment {a.requested_at:%Y-%m-%d %H:%M} UTC: {what}, from {a.effective:%Y-%m-%d}")
    recorded = {m.period: m for m in view.recorded}
    click.echo(f"  {'month':<8} {'days':>5} {'committed':>11} {'used':>11} {'above':>9} {'short':>9} "
               f"{'utilisation':>11} {'total':>11}  invoice")
    for m in view.schedule:
        r = recorded.get(m.period)
        days = (m.end - m.start).days
        if r is None:
            click.echo(f"  {m.period:<8} {days:>5} {m.committed:>11,} {'':>11} {'':>9} {'':>9} {'':>11} {'':>11}  "
                       "not billed yet")
            continue
        click.echo(f"  {m.period:<8} {days:>5} {r.committed:>11,} {r.used:>11,} {r.overage:>9,} {r.shortfall:>9,} "
                   f"{_pct(r.utilisation):>11} {r.total:>11,}  {r.invoice_status}"
                   + ("" if r.reconciled else " (reconciliation pending)"))
    if view.summary:
        click.echo(view.summary.text)


@contracts.command("list")
@click.argument("account_id")
@friendly
def contracts_list(account_id: str) -> None:
    """An account's contracts, oldest first."""
    from services.contracts import account_contracts

    for v in account_contracts(engine(), catalog(), account_id):
        click.echo(f"{v.id:>6}  {v.start:%Y-%m-%d} to {_last_day(v.end)}  {v.commitment_now:>11,}/month  "
                   f"{'terminated early' if v.terminated else ('ended' if v.summary else 'in force')}")


@contracts.command("amend")
@click.argument("contract_id")
@click.option("--raise-to", "raise_to", type=int, default=None, metavar="EXECUTIONS",
              help="Raise the monthly commitment from tomorrow (UTC); a lower one is refused.")
@click.option("--extend", "extend", type=int, default=None, metavar="MONTHS", help="Add months to the term.")
@click.option("--terminate", is_flag=True,
              help="End the term early, after today (UTC); the fee is the rest of the term's committed use.")
@friendly
def contracts_amend(contract_id: str, raise_to: int | None, extend: int | None, terminate: bool) -> None:
    """Amend a contract through its term workflow (a Temporal update, validated before it is recorded)."""
    from services.contracts import amend_contract

    chosen = [name for name, v in (("--raise-to", raise_to), ("--extend", extend), ("--terminate", terminate or None))
              if v is not None]
    if len(chosen) != 1:
        raise UserError("amendment: give exactly one of --raise-to, --extend or --terminate")
    kind = "raise_commitment" if raise_to is not None else "extend_term" if extend is not None else "terminate"
    view = run(amend_contract(temporal(get_settings()), engine(), catalog(), contract_id, kind,
                              commitment=raise_to, extra_months=extend))
    a = view.amendments[-1]
    if kind == "raise_commitment":
        click.echo(f"contract {view.id}: commitment {view.commitment_now:,}/month ({_pct(view.discount)} off) "
                   f"from {a.effective:%Y-%m-%d}")
    elif kind == "extend_term":
        click.echo(f"contract {view.id}: {view.months} months, through {_last_day(view.end)}")
    else:
        fee = view.schedule[-1].period
        click.echo(f"contract {view.id}: terminated; the last day is {_last_day(view.end)}, and the {fee} invoice "
                   "carries the early-termination fee")
