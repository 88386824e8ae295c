"""What every ``record_*_histories.py`` shares: a Temporal server, the search attributes, saving a
workflow's history to histories/<name>.json for test_replay.py, and the command-line entry.

A recorder module writes one scenario, ``async def scenario(rec: Recording) -> None``, that runs its
workflows on ``rec.client`` with stand-in activities and calls ``rec.save(name, workflow_id)``; then
``record(scenario)`` (the time-skipping test server) or ``record(scenario, dev_server=True)`` (the
Temporal dev server, for workflows that wait on real time or take updates) returns the files written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import capabilities as registry

HISTORIES = Path(__file__).parent / "histories"


@dataclass
class Recording:
    env: WorkflowEnvironment
    written: list[Path] = field(default_factory=list)

    @property
    def client(self) -> Client:
        return self.env.client

    async def save(self, name: str, workflow_id: str, run_id: str | None = None) -> None:
        """Write the workflow's history (one run: ``run_id``; None: the latest) to histories/<name>.json."""
        history = await self.client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        path = HISTORIES / f"{name}.json"
        path.write_text(history.to_json())
        self.written.append(path)


Scenario = Callable[[Recording], Awaitable[None]]


async def record(scenario: Scenario, *, dev_server: bool = False) -> list[Path]:
    """Run ``scenario`` on a fresh server with Tally's search attributes; the history files it wrote."""
    from tests.conftest import venv_binary

    if dev_server:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=venv_binary("temporal"), data_converter=pydantic_data_converter,
            search_attributes=list(registry.search_attributes().values()))
    else:
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=venv_binary("temporal-test-server"), data_converter=pydantic_data_converter)
    rec = Recording(env)
    try:
        if not dev_server:
            await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
                namespace="default",
                search_attributes={n: k.indexed_value_type for n, k in registry.search_attributes().items()}))
        await scenario(rec)
    finally:
        await env.shutdown()
    return rec.written


def main(*runs: Awaitable[list[Path]]) -> None:
    """``python -m tests.integration.record_..._histories``: run the recordings in turn, say what was written."""
    async def all_runs() -> list[Path]:
        return [path for run in runs for path in await run]

    for path in asyncio.run(all_runs()):
        print(f"wrote {path}")
