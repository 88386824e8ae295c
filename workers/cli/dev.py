"""`tally dev up|down|status`: the local dev stack (see workers/devstack.py).

Mounted into the main CLI (``workers.cli``); without an installed ``tally``: ``python -m workers.cli dev``.
"""

from __future__ import annotations

import json

import click

from models.settings import Settings
from workers import devstack
from workers.devstack import DevStackError


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _print_status(statuses: list[devstack.ComponentStatus]) -> None:
    click.echo(devstack.format_table(devstack.status_rows(statuses)))


@click.group("dev")
def dev() -> None:
    """Local dev stack: embedded Postgres, Temporal dev server, Stripe emulator, an SMTP sink and a worker."""


@dev.command("up")
def up() -> None:
    """Start whatever is not configured externally and not running yet (idempotent)."""
    settings = Settings()
    try:
        state = devstack.stack_up(settings, echo=_progress)
        statuses = devstack.stack_status(settings)
    except DevStackError as err:
        raise click.ClickException(str(err)) from err
    _print_status(statuses)
    click.echo(f"stack file: {settings.stack_file.resolve()}")
    if state.get("temporal_ui_url"):
        click.echo(f"Temporal UI: {state['temporal_ui_url']}")
    if not all(s.ok for s in statuses):
        raise click.ClickException("the stack started but some components are not up; see the table above")


@dev.command("down")
@click.option("--purge", is_flag=True, help="Also delete the state folder (TALLY_HOME) and all its data.")
@click.option("--timeout", default=devstack.STOP_TIMEOUT, show_default=True, help="Seconds before SIGKILL.")
def down(purge: bool, timeout: float) -> None:
    """Stop the processes `up` started (data is kept unless --purge)."""
    try:
        devstack.stack_down(Settings(), purge=purge, timeout=timeout, echo=_progress)
    except DevStackError as err:
        raise click.ClickException(str(err)) from err


@dev.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(as_json: bool) -> None:
    """Show the components; exit code 0 if everything expected is up, 1 otherwise."""
    try:
        statuses = devstack.stack_status(Settings())
    except DevStackError as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(devstack.status_json(statuses), indent=2))
    else:
        _print_status(statuses)
    raise SystemExit(0 if all(s.ok for s in statuses) else 1)


@dev.command("mail")
@click.option("--show", "show", type=int, default=None, metavar="N", help="Print message N (1 = the oldest) whole.")
@click.option("--html", is_flag=True, help="With --show: the HTML part instead of the plain text.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per message).")
def mail(show: int | None, html: bool, as_json: bool) -> None:
    """What the local SMTP sink received (oldest first): every e-mail Tally sent in dev."""
    from workers.devstack.smtp_sink import read_mail

    settings = Settings()
    maildir = settings.stack_state().get("mail_dir") or str(settings.home / "mail")
    messages = read_mail(maildir)
    if show is not None:
        if not 1 <= show <= len(messages):
            raise click.ClickException(f"--show: there are {len(messages)} messages; give 1 to {len(messages)}")
        m = messages[show - 1]
        for header in ("Date", "From", "To", "Subject", "Message-ID"):
            click.echo(f"{header}: {m.message[header]}")
        click.echo("")
        click.echo(m.part("html" if html else "plain"))
        return
    if as_json:
        click.echo(json.dumps([{"n": i, "to": m.to, "subject": m.subject, "message_id": m.message_id,
                                "date": str(m.message["Date"]), "kind": str(m.message.get("X-Tally-Kind", ""))}
                               for i, m in enumerate(messages, 1)], indent=2))
        return
    if not messages:
        click.echo(f"no mail in {maildir}")
        return
    for i, m in enumerate(messages, 1):
        click.echo(f"{i:>4}  {str(m.message['Date'])[:25]:<25}  {m.to:<32}  {m.subject}")
