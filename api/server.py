"""Serving the API with uvicorn (``tally api``, ``python -m api``, the dev stack)."""

from __future__ import annotations

import argparse
import gc
import os
import sys

from models.settings import get_settings


def serve(host: str | None = None, port: int | None = None, workers: int | None = None,
          log_level: str = "info") -> None:
    import uvicorn

    settings = get_settings()
    settings.check_production()  # one line naming what a production deployment lacks
    settings.effective_database_url()  # fail early with the one-line message when there is no database
    settings.effective_api_secret()  # create the link secret once, before workers start
    workers = workers or settings.api_workers
    # Each worker divides the host's cores among the workers for its ingest processes (unless
    # TALLY_API_INGEST_PROCESSES says how many): it must know how many there are, --workers included.
    os.environ["TALLY_API_WORKERS"] = str(workers)
    get_settings.cache_clear()  # one worker runs here: its app_factory reads the settings again
    uvicorn.run(
        "api.server:app_factory",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        proxy_headers=True,
    )


def app_factory():
    """What each uvicorn worker process builds."""
    from api.app import create_app
    from api.fast_path import EntitlementFastPath

    # Short GIL slices: a small request (an entitlement check) is not held up for 5 ms at a time by
    # the thread validating a 1,000-item batch.
    sys.setswitchinterval(0.001)
    settings = get_settings()
    # Batches are recorded in child processes of their own: this process serves the small requests,
    # and answers entitlement checks from its in-memory view of the checked accounts.
    app = create_app(settings, ingest_processes=settings.effective_api_ingest_processes(),
                     entitlement_view_ms=settings.api_entitlement_view_ms)
    # The framework's and the catalog's objects live as long as the process: keep them out of the
    # collector's full passes, which otherwise stall every request for tens of ms now and then.
    gc.collect()
    gc.freeze()
    # Checks the view answers skip the framework (api/fast_path.py); everything else goes to the app.
    return EntitlementFastPath(app) if settings.api_entitlement_view_ms else app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api", description="Serve the Tally metering API.")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.workers)
