"""The Tally worker: hosts every capability's workflows and activities (capabilities/__init__.py) on one
task queue.

Run it with ``tally worker`` (or ``python -m workers.worker``); the dev stack starts one for you.
Activities are synchronous (SQLAlchemy, the Stripe SDK) and run on a thread pool, so one process uses
about one core (the GIL): with ``TALLY_WORKER_PROCESSES`` N > 1 (0: one per core, what ``tally dev up``
uses) this process supervises N worker processes on the same task queue, restarts one that dies, and
stops them all on SIGTERM. Several workers are safe because every activity is idempotent and each
invoice push holds its invoice's advisory lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from models.settings import ConfigError, Settings, get_settings

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from activities.deps import Deps

# Temporal, the activities and the capabilities are imported where they are used: a supervisor
# (TALLY_WORKER_PROCESSES > 1) starts its workers without loading them itself.

log = logging.getLogger("tally.worker")
SUPERVISOR_ENV = "TALLY_WORKER_SUPERVISOR_PID"  # set in the processes ``supervise`` starts


def __getattr__(name: str):
    if name in ("connect", "TemporalUnreachable"):  # also imported from here
        from services import temporal

        return getattr(temporal, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_worker(client: Client, settings: Settings, deps: Deps | None = None,
                 executor: ThreadPoolExecutor | None = None, fail_fast: bool = False) -> Worker:
    """Every registered capability's workflows and activities, the activities built from ``deps``
    (default: from ``settings``). ``fail_fast`` (tests): a bug in workflow code fails the workflow
    instead of retrying its task forever, which is what production wants (deploy a fix, it resumes)."""
    from temporalio.worker import Worker

    import capabilities as registry
    from activities.deps import Deps

    deps = deps or Deps(settings)
    executor = executor or ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity")
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=registry.workflows(),
        activities=registry.activities(deps),
        activity_executor=executor,
        max_concurrent_activities=16,
        workflow_failure_exception_types=[Exception] if fail_fast else [],
    )


def preflight(settings: Settings) -> None:
    """Refuse to start, with one line naming the setting, when Postgres (or the Stripe server this
    worker is configured for) cannot be reached: a worker that polls anyway retries every close
    silently. Raises ConfigError."""
    from urllib.parse import urlsplit

    import psycopg
    from sqlalchemy.engine import make_url

    from models.db import libpq_url, sqlalchemy_url
    from models.settings import EMULATOR_API_KEY

    url = settings.effective_database_url()
    shown = make_url(sqlalchemy_url(url)).render_as_string(hide_password=True)
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=5) as conn:
            conn.execute("SELECT 1 FROM alembic_version")
    except psycopg.errors.UndefinedTable:
        raise ConfigError(f"the database {shown} has no Tally schema: run `tally db migrate`") from None
    except psycopg.Error as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot reach the database {shown} (DATABASE_URL): {detail}; refusing to start") from None
    key, base = settings.effective_stripe()
    if base:  # real Stripe (no base URL) is not probed: it is the internet's
        parts = urlsplit(base)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=5).close()
        except OSError as err:
            why = (" (the local Stripe emulator, used because STRIPE_API_KEY is not set; start it with `tally dev up` "
                   "or set STRIPE_API_KEY)") if key == EMULATOR_API_KEY else ""
            raise ConfigError(f"cannot reach Stripe at {base}{why}: {err.strerror or err}; refusing to start") from None


async def run_worker(settings: Settings) -> None:
    from services.temporal import connect

    settings.check_production()
    preflight(settings)
    client = await connect(settings)
    worker = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %r on %s", settings.task_queue, settings.effective_temporal_address())
    watch = asyncio.create_task(_stop_when_orphaned(stop))
    async with worker:
        await stop.wait()
    watch.cancel()


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """Under a supervisor (``supervise``): stop when it is gone (killed, even by SIGKILL), so no worker
    outlives the process the dev stack records and stops."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if not parent:
        return
    while os.getppid() == int(parent):
        await asyncio.sleep(1.0)
    log.warning("supervisor %s is gone; stopping", parent)
    stop.set()


def worker_processes(settings: Settings) -> int:
    """How many worker processes to run: ``worker_processes``, or one per CPU core when it is 0."""
    return settings.worker_processes or os.cpu_count() or 1


def supervise(processes: int, stop_grace: float = 60.0) -> None:
    """Run ``processes`` single workers (``python -m workers.worker`` with TALLY_WORKER_PROCESSES=1);
    restart one that exits (after a second); on SIGTERM/SIGINT pass it on and wait for them to finish
    their tasks (``stop_grace`` s, then SIGKILL)."""
    env = {**os.environ, "TALLY_WORKER_PROCESSES": "1", SUPERVISOR_ENV: str(os.getpid())}
    env.pop("TALLY_DEVSTACK_COMPONENT", None)  # the dev stack finds (and stops) the supervisor, not these
    cmd = [sys.executable, "-m", "workers.worker"]
    stopping = False

    def stop(_sig, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [subprocess.Popen(cmd, env=env) for _ in range(processes)]
    log.info("supervising %d worker processes: pids %s", processes, [c.pid for c in children])
    while not stopping:
        time.sleep(0.5)
        for i, child in enumerate(children):
            if child.poll() is not None and not stopping:
                log.warning("worker pid %s exited with %s; starting another", child.pid, child.returncode)
                time.sleep(1.0)
                children[i] = subprocess.Popen(cmd, env=env)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # also sent to the group by `tally dev down`: harmless twice
    deadline = time.monotonic() + stop_grace
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("stripe").setLevel(logging.WARNING)  # the SDK logs two INFO lines per request
    try:
        settings = get_settings()
    except ConfigError as err:
        raise SystemExit(f"tally worker: {err}") from None
    if worker_processes(settings) > 1:
        supervise(worker_processes(settings))
        return
    from services.temporal import TemporalUnreachable

    try:
        asyncio.run(run_worker(settings))
    except (ConfigError, TemporalUnreachable) as err:
        raise SystemExit(f"tally worker: {err}") from None


if __name__ == "__main__":
    main()
