"""How a service reaches Temporal: the caller hands it a function that connects (the CLI's and the
API's own ``connect``), so a command that fails on its input never dials Temporal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from models.settings import Settings
from services.errors import OperationFailed, root_cause

TemporalClient = Callable[[], Awaitable[Client]]

PROGRESS_POLL_SECONDS = 0.5


async def follow(handle: WorkflowHandle, what: str, *, query: Any = None, progress_type: type | None = None,
                 on_progress: Callable[[Any], None] | None = None) -> Any:
    """The workflow's result; with ``on_progress``, its ``query`` answered about twice a second while it
    runs. A failed workflow raises OperationFailed("<what> failed: <root cause>")."""
    result_task = asyncio.ensure_future(handle.result())
    if on_progress is not None:
        while not result_task.done():
            try:
                p = await handle.query(query, result_type=progress_type)
            except Exception:  # not started yet, or finished between checks
                p = None
            if p is not None:
                on_progress(p)
            await asyncio.wait({result_task}, timeout=PROGRESS_POLL_SECONDS)
    try:
        return await result_task
    except WorkflowFailureError as err:
        raise OperationFailed(f"{what} failed: {root_cause(err)}") from None


class TemporalUnreachable(ConnectionError):
    """No Temporal frontend answers at the configured address."""


async def connect(settings: Settings) -> Client:
    address = settings.effective_temporal_address()
    try:
        return await Client.connect(
            address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as err:
        if "connect" not in str(err).lower():
            raise
        raise TemporalUnreachable(
            f"cannot reach Temporal at {address} (set TEMPORAL_ADDRESS, or start the local stack "
            "with `tally dev up`)"
        ) from None

