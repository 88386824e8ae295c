"""``tally db`` (the schema) and ``tally worker`` (a worker process)."""

from __future__ import annotations

import click

from models.settings import get_settings
from workers.cli.common import friendly


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
