"""The ``tally`` command line: what ops and developers type.

One module per command group; each command parses its options, calls one service function
(``services/``) and prints. Every command reads the one Settings object (environment, then the local
stack file). Errors are printed as one line that names what is wrong, never as a traceback
(``common.friendly``).
"""

from __future__ import annotations

import logging
import os
import sys

import click

from models.settings import ConfigError, get_settings
import capabilities as registry
from workers.cli.accounts import accounts
from workers.cli.api import api_command
from workers.cli.db import db, worker
from workers.cli.demo import demo
from workers.cli.dev import dev
from workers.cli.platforms import platforms
from workers.cli.reports import report
from workers.cli.schedules import schedules
from workers.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Tally: meters, prices, invoices (Stripe) and pays out for the agent platform.

    Connection settings come from the environment (DATABASE_URL, TEMPORAL_ADDRESS, STRIPE_API_KEY,
    TALLY_*) or, when unset, from the local stack that `tally dev up` starts.
    """
    try:
        get_settings().check_production()
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


for _command in (worker, db, accounts, usage, report, schedules, demo, api_command, platforms, dev):
    cli.add_command(_command)
for _command in registry.cli_groups():  # each capability's own groups (close, invoices, ...)
    cli.add_command(_command)


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
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `tally ... | head`: the reader left; nothing to say
            code = code or 141
    os._exit(code)
