"""``tally api``: serve the metering HTTP API."""

from __future__ import annotations

import click

from workers.cli.common import friendly


@click.command("api")
@click.option("--host", default=None, help="Interface to bind (default: TALLY_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: TALLY_API_PORT, 8000).")
@click.option("--workers", type=int, default=None, help="uvicorn worker processes (default: TALLY_API_WORKERS, 1).")
@friendly
def api_command(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the metering HTTP API until interrupted (OpenAPI document at /openapi.json)."""
    from api.server import serve

    serve(host, port, workers)
