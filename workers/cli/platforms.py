"""``tally platforms``: the platforms that call the API, and their API keys."""

from __future__ import annotations

import click

from workers.cli.common import engine, friendly


@click.group()
def platforms() -> None:
    """Platforms that call the API, and their API keys."""


@platforms.command("create")
@click.argument("name")
@friendly
def platforms_create(name: str) -> None:
    """Create a platform and print its API key (shown once; only its hash is stored)."""
    from services.platforms import create_platform

    key = create_platform(engine(), name)
    click.echo(f"created platform {name}; its API key (shown only now, keep it secret):")
    click.echo(key)


@platforms.command("rotate-key")
@click.argument("name")
@friendly
def platforms_rotate_key(name: str) -> None:
    """Replace a platform's API key; the old one stops working within 30 s."""
    from services.platforms import rotate_key

    key = rotate_key(engine(), name)
    click.echo(f"new API key of {name} (shown only now):")
    click.echo(key)


@platforms.command("list")
@friendly
def platforms_list() -> None:
    """List platforms and how many accounts each has."""
    from services.platforms import list_platforms

    rows = list_platforms(engine())
    click.echo(f"{'platform':<24} {'accounts':>8}  created")
    for r in rows:
        click.echo(f"{r.name:<24} {r.accounts:>8,}  {r.created_at:%Y-%m-%d %H:%M}")


@platforms.command("attach")
@click.argument("name")
@click.argument("account_ids", nargs=-1, required=True)
@friendly
def platforms_attach(name: str, account_ids: tuple[str, ...]) -> None:
    """Attach accounts to a platform (its key then reaches them through the API)."""
    from services.platforms import attach_accounts

    n = attach_accounts(engine(), name, list(account_ids))
    click.echo(f"attached {n:,} account(s) to {name}")
