"""``tally creators`` (create, onboard, statement), ``tally skills premium``, ``tally payouts`` (run,
list, show, retry, cancel) and ``tally invoices mark-paid``: creator revenue share and payouts."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from models.settings import get_settings
from workers.cli.common import UserError, catalog, engine, friendly, run, temporal
from workers.cli.invoices import invoices


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ---- tally creators ------------------------------------------------------------------------------------
@click.group()
def creators() -> None:
    """Creators of premium skills: their Stripe Connect account and monthly statement."""


@creators.command("create")
@click.argument("creator_id")
@click.option("--email", required=True, help="Where Stripe and Tally write to the creator.")
@friendly
def creators_create(creator_id: str, email: str) -> None:
    """Record a creator (once; creating again with the same e-mail changes nothing)."""
    from services.payouts import create_creator

    view = create_creator(engine(), creator_id, email)
    click.echo(f"creator {view['creator_id']} <{view['email']}>; "
               f"{'account ' + view['stripe_account_id'] if view['stripe_account_id'] else 'not onboarded yet'}")


@creators.command("onboard")
@click.argument("creator_id")
@friendly
def creators_onboard(creator_id: str) -> None:
    """Create the creator's Stripe Connect Express account (once) and print a fresh onboarding link.

    The account's state (charges, payouts, the transfers capability) follows Stripe's account.updated
    webhooks; a payout to an account without an active transfers capability fails and waits for ops.
    """
    from gateways.stripe import StripeGateway
    from services.payouts import onboard_creator

    settings = get_settings()
    view = onboard_creator(engine(), StripeGateway(settings), settings, creator_id)
    click.echo(f"creator {creator_id}: account {view['stripe_account_id']} (transfers {view['transfers']}, "
               f"payouts {'enabled' if view['payouts_enabled'] else 'not enabled'})")
    click.echo(f"onboarding link (expires in minutes): {view['onboarding_url']}")


@creators.command("statement")
@click.argument("creator_id")
@click.option("--period", required=True, metavar="YYYY-MM", help="The payout month.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def creators_statement(creator_id: str, period: str, as_json: bool) -> None:
    """What became payable in the month (executions per skill, revenue, earned), adjustments, the balance
    carried and the payout."""
    from services.payouts import statement

    s = statement(engine(), creator_id, period)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(f"{creator_id} {s['period']}")
    for k in s["skills"]:
        click.echo(f"  {k['skill_id']:<32} {k['executions']:>10,} executions  revenue ${k['revenue']}")
    click.echo(f"  earned ${s['earned']} (invoices paid in the month); not payable yet ${s['not_payable_yet']}")
    for a in s["adjustments"]:
        click.echo(f"  adjustment ${a['amount']}: {a['reason']}")
    p = s["payout"]
    if p is None:
        click.echo("  no payout decided for this month")
    else:
        click.echo(f"  carried in ${p['balance']} total balance; {p['message']} [{p['status']}]"
                   + (f" transfer {p['stripe_transfer_id']}" if p["stripe_transfer_id"] else ""))


# ---- tally skills premium ------------------------------------------------------------------------------
@click.group()
def skills() -> None:
    """Premium skills: their creator and how the creator earns."""


@skills.command("premium")
@click.argument("skill_id")
@click.option("--creator", "creator_id", required=True, help="The creator who earns from the skill.")
@click.option("--share", is_flag=True, help="The creator earns 30% of the revenue the skill's executions were billed for.")
@click.option("--fixed", "fixed_price", default=None, metavar="USD",
              help="The user pays this per execution ($0.01 to $0.50) on its own invoice line; the creator earns 70%.")
@friendly
def skills_premium(skill_id: str, creator_id: str, share: bool, fixed_price: str | None) -> None:
    """Mark a skill premium: --share or --fixed PRICE (exactly one)."""
    from services.payouts import mark_premium

    if share == (fixed_price is not None):
        raise UserError("give exactly one of --share or --fixed PRICE")
    view = mark_premium(engine(), catalog(), skill_id, creator_id, share=share, fixed_price=fixed_price, at=_now())
    how = "30% share of its revenue" if view["model"] == "share" else f"${view['fixed_price']} per execution (70% to the creator)"
    click.echo(f"skill {skill_id}: premium, creator {creator_id}, {how}")


# ---- tally payouts -------------------------------------------------------------------------------------
@click.group()
def payouts() -> None:
    """Monthly creator payouts (payouts-YYYY-MM) and the failed ones waiting for ops.

    In the Temporal UI: PayoutStatus = 'failed' lists the payouts waiting for a retry or a cancel.
    """


def _line(p) -> str:
    extra = p.stripe_transfer_id or p.failure_reason or p.cancel_reason or ""
    return f"{p.id:<44} {p.status:<10} {('$' + str(p.amount)) if p.amount else '':>11}  {p.message}  {extra}".rstrip()


@payouts.command("run")
@click.option("--period", required=True, metavar="YYYY-MM")
@friendly
def payouts_run(period: str) -> None:
    """Run the month's payouts now (what the monthly-payouts schedule does on the 5th)."""
    from services.payouts import run_payouts

    settings = get_settings()
    r = run(run_payouts(temporal(settings), settings, period))
    click.echo(f"payouts-{r.period}: {r.creators:,} creators, {r.paid:,} paid (${r.amount_paid}), "
               f"{r.carried:,} carried, {len(r.failed):,} failed")
    for pid in r.failed:
        click.echo(f"  failed: {pid} (tally payouts show {pid})")


@payouts.command("list")
@click.option("--period", default=None, metavar="YYYY-MM")
@click.option("--status", default=None, help="carried | pending | paid | failed | cancelled")
@click.option("--creator", "creator_id", default=None)
@friendly
def payouts_list(period: str | None, status: str | None, creator_id: str | None) -> None:
    """Payouts of a month (or all), optionally only one status (e.g. --status failed)."""
    from services.payouts import list_payouts

    rows = list_payouts(engine(), period, status, creator_id)
    if not rows:
        click.echo("no payouts")
    for p in rows:
        click.echo(_line(p))


@payouts.command("show")
@click.argument("payout_id")
@friendly
def payouts_show(payout_id: str) -> None:
    """One payout: its decision (carried in, earnings, adjustments), status, transfer or failure."""
    from services.payouts import show_payout

    click.echo(show_payout(engine(), payout_id).model_dump_json(indent=2))


@payouts.command("retry")
@click.argument("payout_id")
@click.option("--by", default=None, help="Who retries (recorded); default $USER.")
@friendly
def payouts_retry(payout_id: str, by: str | None) -> None:
    """Pay a failed payout now (a Temporal update; never a second transfer)."""
    import os

    from services.payouts import retry_payout

    settings = get_settings()
    p = run(retry_payout(temporal(settings), settings, engine(), payout_id, by or os.environ.get("USER", "ops")))
    click.echo(_line(p))


@payouts.command("cancel")
@click.argument("payout_id")
@click.option("--reason", required=True, help="Why (recorded).")
@click.option("--by", default=None, help="Who cancels (recorded); default $USER.")
@friendly
def payouts_cancel(payout_id: str, reason: str, by: str | None) -> None:
    """Give a failed payout up: its amount returns to the creator's balance next month."""
    import os

    from services.payouts import cancel_payout

    settings = get_settings()
    p = run(cancel_payout(temporal(settings), settings, engine(), payout_id, by or os.environ.get("USER", "ops"), reason))
    click.echo(_line(p))


# ---- tally invoices mark-paid --------------------------------------------------------------------------
@invoices.command("mark-paid")
@click.argument("invoice_id", type=int)
@friendly
def invoices_mark_paid(invoice_id: int) -> None:
    """Record an open invoice as paid out of band (as Stripe's invoice.paid does): its creators'
    earnings become payable now."""
    from services.payouts import mark_invoice_paid

    r = mark_invoice_paid(engine(), invoice_id, _now())
    click.echo(f"invoice {invoice_id}: paid at {r['paid_at']} ({r['source']})"
               + ("" if r["recorded_now"] else " (already recorded)"))
