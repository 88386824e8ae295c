"""How a service reaches Temporal: the caller hands it a function that connects (the CLI's and the
API's own ``connect``), so a command that fails on its input never dials Temporal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from models.settings import Settings
from services.errors import OperationFailed, root_cause

TemporalClient = Callable[[], Awaitable[Client]]

PROGRESS_POLL_SECONDS = 0.5


STALL_CHECK_SECONDS = 5.0  # how often a waiting caller looks for activities being retried
OUTAGE_RETRY_SECONDS = 2.0
# A Temporal frontend that is down or restarting: the caller keeps waiting (the workflow is durable).
_OUTAGE_CODES = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNKNOWN}


def _is_outage(err: BaseException) -> bool:
    return isinstance(err, RPCError) and (err.status in _OUTAGE_CODES or "connect" in err.message.lower())


async def retrying_steps(handle: WorkflowHandle, depth: int = 1) -> list[str]:
    """``"<activity> attempt N: <last error>"`` for every activity of the workflow (and of its running
    children) past its first attempt: what a caller waiting on a stuck workflow needs to see."""
    raw = (await handle.describe()).raw_description
    lines = []
    for pa in raw.pending_activities:
        if pa.attempt > 1:
            error = pa.last_failure.message.strip().splitlines()[0] if pa.last_failure.message.strip() else "?"
            lines.append(f"{pa.activity_type.name} attempt {pa.attempt}: {error}")
    if depth > 0:
        for child in list(raw.pending_children)[:8]:
            try:
                lines += await retrying_steps(handle._client.get_workflow_handle(child.workflow_id), depth - 1)
            except RPCError:
                pass  # finished meanwhile
    return lines


async def follow(handle: WorkflowHandle, what: str, *, query: Any = None, progress_type: type | None = None,
                 on_progress: Callable[[Any], None] | None = None,
                 on_notice: Callable[[str], None] | None = None) -> Any:
    """The workflow's result; with ``on_progress``, its ``query`` answered about twice a second while it
    runs. ``on_notice`` hears, while it waits, each step being retried with its last error
    ("rate_accounts attempt 7: ...") and Temporal being unreachable: the caller keeps waiting through
    a Temporal outage and reconnects. A failed workflow raises OperationFailed("<what> failed: <root cause>")."""
    notice = on_notice or (lambda _msg: None)
    said: set[str] = set()
    loop = asyncio.get_running_loop()
    while True:
        result_task = asyncio.ensure_future(handle.result())
        next_check = loop.time() + STALL_CHECK_SECONDS
        while not result_task.done():
            if on_progress is not None:
                try:
                    p = await handle.query(query, result_type=progress_type)
                except Exception:  # not started yet, finished between checks, or Temporal away
                    p = None
                if p is not None:
                    on_progress(p)
            if on_notice is not None and loop.time() >= next_check:
                next_check = loop.time() + STALL_CHECK_SECONDS
                try:
                    steps = await retrying_steps(handle)
                except Exception:  # noqa: BLE001 - only a hint; the result decides
                    steps = []
                for line in steps:
                    if line not in said:
                        said.add(line)
                        notice(f"{what}: {line}")
            await asyncio.wait({result_task}, timeout=PROGRESS_POLL_SECONDS)
        try:
            return await result_task
        except WorkflowFailureError as err:
            raise OperationFailed(f"{what} failed: {root_cause(err)}") from None
        except RPCError as err:
            if not _is_outage(err):
                raise
            notice(f"Temporal unreachable ({err.message.strip().splitlines()[0] if err.message else err.status}); "
                   f"{what} goes on durably, still waiting")
            await asyncio.sleep(OUTAGE_RETRY_SECONDS)


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

