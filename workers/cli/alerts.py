"""``tally anomalies`` (paused accounts, decisions, kills, the trend check), ``tally notifications`` (the
outbox and its e-mail delivery) and ``tally accounts budget``."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from models.settings import get_settings
from workers.cli.accounts import accounts
from workers.cli.common import UserError, catalog, engine, friendly, run, temporal


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{name}: {value!r} is not an ISO 8601 timestamp") from None
    if ts.tzinfo is None:
        raise UserError(f"{name}: {value!r} has no time zone (add Z or +00:00)")
    return ts.astimezone(timezone.utc)


def _when(ts: datetime | None) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


# ---- tally accounts budget ----------------------------------------------------------------------------
@accounts.command("budget")
@click.argument("account_id")
@click.option("--set", "amount", default=None, metavar="USD", help="Set the monthly budget, e.g. 250.00.")
@click.option("--default", "use_default", is_flag=True, help="Go back to the plan's default budget.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def accounts_budget(account_id: str, amount: str | None, use_default: bool, as_json: bool) -> None:
    """Show or set the account's monthly budget (e-mails at 50%, 80% and 100% of it, once a month each).

    The budget watches usage charges on top of the plan's fee; by default it is the plan's own
    monthly charge (its fee, or the PAYG cap).
    """
    from services.alerts import BudgetService

    if amount is not None and use_default:
        raise UserError("--set and --default: give one of them")
    service = BudgetService(engine(), catalog())
    if amount is not None or use_default:
        view = service.set_budget(account_id, None if use_default else amount)
    else:
        view = service.budget(account_id)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    budget = f"${view['budget']}" if view["budget"] else "none"
    source = {"set": "set by the user", "plan": "the plan's default", "none": "no budget"}[view["source"]]
    click.echo(f"{account_id} {view['period']}: budget {budget} ({source}); usage charges so far "
               f"${view['charges'] or '0.00'}" + (f" = {view['percent_used']}%" if view["percent_used"] else ""))
    for t in view["thresholds"]:
        click.echo(f"  {t['percent']:>3}%  {'noticed ' + t['crossed_at'][:16].replace('T', ' ') if t['crossed_at'] else '-'}")


# ---- tally anomalies ----------------------------------------------------------------------------------
@click.group()
def anomalies() -> None:
    """Accounts paused by a spike, the decisions on them, killed executions, the trend check.

    In the Temporal UI: AnomalyState = 'open' lists the anomalies waiting for a decision.
    """


@anomalies.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include resumed anomalies.")
@click.option("--account", default=None, help="Only this account.")
@friendly
def anomalies_list(include_resolved: bool, account: str | None) -> None:
    """Anomalies pausing an account (open: waiting for a decision; confirmed: kept paused)."""
    from services.anomalies import list_anomalies

    rows = list_anomalies(engine(), include_resolved=include_resolved, account_id=account)
    if not rows:
        click.echo("no anomalies" + ("" if include_resolved else " pausing an account"))
        return
    click.echo(f"{'workflow':<48} {'state':<10} {'opened':<21} {'executions':>10} {'above':>8}  decided")
    for a in rows:
        ev = a.evidence
        decided = f"{a.decided_by}: {a.decision_reason}" if a.decided_by else "-"
        click.echo(f"{a.workflow_id:<48} {a.state:<10} {_when(a.opened_at):<21} {ev.get('window_executions', '-'):>10} "
                   f"{str(ev.get('threshold', '-'))[:8]:>8}  {decided}")


@anomalies.command("show")
@click.argument("anomaly")
@friendly
def anomalies_show(anomaly: str) -> None:
    """One anomaly (by workflow id or number) with its evidence."""
    from services.anomalies import find_anomaly

    click.echo(find_anomaly(engine(), anomaly).model_dump_json(indent=2))


def _decide(anomaly: str, decision: str, by: str | None, reason: str | None) -> None:
    from services.anomalies import decide

    settings = get_settings()
    view = run(decide(temporal(settings), settings, engine(), anomaly, decision, by, reason))
    click.echo(f"{view.workflow_id}: {view.state} by {view.decided_by} ({view.decision_reason})")


@anomalies.command("resume")
@click.argument("anomaly")
@click.option("--by", required=True, help="Who decides (recorded).")
@click.option("--reason", required=True, help="Why (recorded and told to the user).")
@friendly
def anomalies_resume(anomaly: str, by: str, reason: str) -> None:
    """Lift the pause: the account may run executions again (a Temporal update of the review)."""
    _decide(anomaly, "resume", by, reason)


@anomalies.command("confirm")
@click.argument("anomaly")
@click.option("--by", required=True, help="Who decides (recorded).")
@click.option("--reason", required=True, help="Why, e.g. 'leaked key' (recorded and told to the user).")
@friendly
def anomalies_confirm(anomaly: str, by: str, reason: str) -> None:
    """Keep the account paused (e.g. a compromised key) until someone resumes it."""
    _decide(anomaly, "confirm", by, reason)


@anomalies.command("kills")
@click.argument("account_id")
@click.option("--limit", type=int, default=50, show_default=True)
@friendly
def anomalies_kills(account_id: str, limit: int) -> None:
    """Executions the loop rule killed on an account, with the evidence of each verdict."""
    from services.alerts import account_kills

    rows = account_kills(engine(), account_id, limit=limit)
    if not rows:
        click.echo(f"no killed executions on {account_id}")
    for k in rows:
        click.echo(f"{k['killed_at'][:19].replace('T', ' ')}  {k['execution_id']}  agent {k['agent_id']}: cost "
                   f"${k['cost']} > {k['multiplier']} x median ${k['baseline']} of {k['history_size']} executions")


@anomalies.command("trend-check")
@click.option("--period", default=None, metavar="YYYY-MM", help="Default: the month of --at.")
@click.option("--at", default=None, metavar="TIMESTAMP", help="Project the month from this instant (default now).")
@friendly
def anomalies_trend_check(period: str | None, at: str | None) -> None:
    """Run the mid-month spend trend check now (the 16th's schedule does it by itself)."""
    from services.anomalies import run_trend_check

    settings = get_settings()
    res = run(run_trend_check(temporal(settings), settings, period, _instant(at, "at")))
    click.echo(f"trend {res.period} at {_when(res.at)}: {res.checked} accounts checked, "
               f"{len(res.warned)} warned{': ' + ', '.join(res.warned) if res.warned else ''}")


# ---- tally notifications ------------------------------------------------------------------------------------
@click.group()
def notifications() -> None:
    """The outbox of customer and ops messages, and its e-mail delivery (SMTP_URL)."""


@notifications.command("list")
@click.option("--account", default=None)
@click.option("--pending", is_flag=True, help="Only those not delivered yet.")
@click.option("--limit", type=int, default=50, show_default=True)
@friendly
def notifications_list(account: str | None, pending: bool, limit: int) -> None:
    """Newest first: kind, recipient side, subject and delivery state."""
    from services.anomalies import list_notifications

    rows = list_notifications(engine(), account_id=account, pending_only=pending, limit=limit)
    if not rows:
        click.echo("no notifications")
    for r in rows:
        state = (f"sent {_when(r.sent_at)} to {r.delivered_to}" if r.sent_at else
                 f"FAILED: {r.last_error}" if r.failed_at else
                 f"pending ({r.attempts} attempts{'; ' + r.last_error if r.last_error else ''})")
        click.echo(f"{r.id:>6}  {r.account_id:<20} {r.kind:<22} {r.audience:<7} {r.subject[:60]:<60}  {state}")


@notifications.command("deliver")
@click.option("--max", "max_messages", type=int, default=500, show_default=True)
@friendly
def notifications_deliver(max_messages: int) -> None:
    """Deliver the outbox now through the worker (the notifications-outbox schedule does it every minute)."""
    from services.anomalies import deliver_now

    settings = get_settings()
    res = run(deliver_now(temporal(settings), settings, max_messages))
    click.echo(f"sent {res.delivery.sent}, failed {res.delivery.failed}, still pending {res.delivery.pending}; "
               f"anomaly reviews started {res.reviews_started}")
