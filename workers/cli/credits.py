"""``tally credits``: buy a package, balances and history, ops grants and expiry, credits-only accounts."""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone

import click

from models.settings import get_settings
from workers.cli.common import UserError, catalog, engine, friendly, run, temporal


@click.group()
def credits() -> None:
    """Prepaid credits: packages bought through Stripe Checkout, one append-only ledger per account,
    expiry by one workflow per grant (credit-grant-<id>)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


@credits.command("buy")
@click.argument("account_id")
@click.option("--package", required=True, help="A catalog package: starter, growth, scale, prepaid-50.")
@friendly
def credits_buy(account_id: str, package: str) -> None:
    """Start buying PACKAGE for ACCOUNT: a Stripe Checkout Session; the purchase stays pending until
    Stripe confirms the payment (webhook, or the poll), which grants the credits once."""
    from gateways.stripe import StripeGateway
    from services.credits import buy, fmt

    settings = get_settings()
    p = buy(engine(), catalog(), StripeGateway(settings), account_id=account_id, package=package, now=_now(),
            success_url=settings.credits_checkout_success_url, cancel_url=settings.credits_checkout_cancel_url)
    click.echo(f"purchase {p.purchase_id} ({p.package}: {fmt(p.unit, p.amount)} {p.unit} for ${p.price}) {p.status}")
    click.echo(f"  pay at: {p.checkout_url or '-'}  (checkout session {p.checkout_session_id})")


def _print_view(view: dict) -> None:
    only = " (credits-only)" if view["credits_only"] else ""
    click.echo(f"{view['account_id']}{only}")
    for unit, b in view["balances"].items():
        click.echo(f"  {unit:<8} balance {b['balance']:>12}   spendable now {b['spendable']:>12}")
    if view["grants"]:
        click.echo(f"  {'grant':<34} {'unit':<7} {'amount':>10} {'remaining':>10}  expires")
        for g in view["grants"]:
            click.echo(f"  {g['grant_id']:<34} {g['unit']:<7} {g['amount']:>10} {g['remaining']:>10}  "
                       f"{g['expires_at'][:19]}")


@credits.command("balance")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (amounts as decimal strings).")
@friendly
def credits_balance(account_id: str, as_json: bool) -> None:
    """Balances per unit (sums of the ledger) and each grant with its remainder and expiry."""
    from services.credits import credits_view

    view = credits_view(engine(), account_id, _now())
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    _print_view(view)


@credits.command("history")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def credits_history(account_id: str, as_json: bool) -> None:
    """Every ledger entry of ACCOUNT, oldest first (grants, consumption, applications, adjustments, expiry)."""
    from services.credits import history

    entries = history(engine(), account_id)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        click.echo(f"{e['occurred_at'][:19]}  {e['kind']:<20} {e['amount']:>12} {e['unit']:<7} {e['grant_id']}  "
                   f"{e['reference']}")


def _date(value: str | None):
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise UserError(f"expires: expected YYYY-MM-DD, got {value!r}") from None


@credits.command("grant")
@click.argument("account_id")
@click.option("--credits", "n_credits", default=None, metavar="N", help="Credits to give (a whole number).")
@click.option("--usd", default=None, metavar="X", help="Or a prepaid usd balance to give (whole cents).")
@click.option("--reason", required=True, help="Why (required; recorded with the grant).")
@click.option("--expires", default=None, metavar="YYYY-MM-DD", help="Expiry (00:00 UTC); default 12 months.")
@click.option("--by", "granted_by", default=None, help="Who gives it (default: the OS user).")
@friendly
def credits_grant(account_id: str, n_credits: str | None, usd: str | None, reason: str, expires: str | None,
                  granted_by: str | None) -> None:
    """Give credits by hand (support, goodwill): audited with who and why, expires like a purchase."""
    from services.credits import ops_grant, start_grant_workflow

    settings = get_settings()
    g = ops_grant(engine(), catalog(), account_id=account_id, credits=n_credits, usd=usd, reason=reason,
                  granted_by=granted_by or getpass.getuser(), now=_now(), expires=_date(expires))
    wid = run(start_grant_workflow(temporal(settings), settings, g["grant_id"], account_id))
    click.echo(f"granted {g['amount']} {g['unit']} to {account_id}: {g['grant_id']}, expires {g['expires_at'][:19]}")
    click.echo(f"  expiry workflow: {wid}")


@credits.command("expire-now")
@click.argument("grant_id")
@click.option("--reason", default="support", help="Why (recorded with the expiry entry).")
@click.option("--by", default=None, help="Who (default: the OS user).")
@friendly
def credits_expire_now(grant_id: str, reason: str, by: str | None) -> None:
    """Expire what is left of GRANT at once (support cases); its workflow then finds nothing left."""
    from services.credits import expire_now

    res = expire_now(engine(), grant_id, by=by or getpass.getuser(), reason=reason, now=_now())
    click.echo(f"expired {res['expired']} {res['unit']} of {grant_id} at {res['occurred_at'][:19]}")


@credits.command("only")
@click.argument("account_id")
@click.option("--off", is_flag=True, help="Back to the plan's rules.")
@friendly
def credits_only(account_id: str, off: bool) -> None:
    """Make ACCOUNT credits-only (on the free plan): every execution is paid with credits, and the
    entitlement check refuses it with no_credits when its credits cannot pay for the next one."""
    from services.credits import set_credits_only

    res = set_credits_only(engine(), account_id, not off)
    click.echo(f"{account_id}: credits-only {'on' if res['credits_only'] else 'off'}")
