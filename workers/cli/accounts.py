"""``tally accounts``: create, change, list, history, billing-link."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from models.settings import get_settings
from workers.cli.common import UserError, catalog, engine, friendly, on_off


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
@click.option("--hours", type=int, default=None, help="Validity in hours, 1 to 720 (30 days) (default: TALLY_BILLING_LINK_HOURS, 24).")
@click.option("--base-url", default=None, help="API base URL users reach (default: TALLY_API_PUBLIC_URL).")
@friendly
def accounts_billing_link(account_id: str, hours: int | None, base_url: str | None) -> None:
    """Print a signed link to the account's billing page (anyone holding it can view the page)."""
    from services.accounts import account_billing_link

    click.echo(account_billing_link(engine(), get_settings(), account_id, hours=hours, base_url=base_url))
