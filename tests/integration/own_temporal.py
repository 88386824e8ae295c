"""``temporal_env`` for a module whose workflows sleep: a time-skipping server of its own (module scope).

Import it into such a test module (``from tests.integration.own_temporal import own_temporal_env``): it
takes the place of the session's shared server there. On the shared server, a workflow an earlier
module left behind (e.g. a credit grant whose timer fired after its test's worker was gone) holds a
task no worker will ever take, and the test server then never skips time again: a test waiting on a
durable timer (the meters reconciliation's settle time) would wait forever."""

from __future__ import annotations

import pytest_asyncio

from tests.integration.conftest import time_skipping_server


@pytest_asyncio.fixture(scope="module", loop_scope="session", name="temporal_env")
async def own_temporal_env():
    async with time_skipping_server() as env:
        yield env
