"""Heartbeats for an activity whose work is one long step (a statement, a computation) that cannot
heartbeat itself: a thread beats while the step runs, so that a worker that dies mid-step is noticed
within the activity's heartbeat timeout instead of its start-to-close timeout (minutes)."""

from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from typing import Iterator

from temporalio import activity

EVERY_SECONDS = 1.0


@contextmanager
def beating(every: float = EVERY_SECONDS) -> Iterator[None]:
    """Heartbeat the running activity every ``every`` seconds while the block runs (nothing outside an
    activity). A beat carries no details: a retry starts the step over, as the activity is idempotent."""
    if not activity.in_activity():
        yield
        return
    context = contextvars.copy_context()  # the activity's context, for the beating thread
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            context.run(activity.heartbeat)

    thread = threading.Thread(target=beat, name="activity-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
