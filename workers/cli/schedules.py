"""``tally schedules``: the Temporal Schedules that start the recurring jobs."""

from __future__ import annotations

import click

from models.settings import get_settings
from workers.cli.common import friendly, run


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
