"""The metering API under test: a real uvicorn server on a free port (in a thread of the test
process, so its clock can be set) against the session's real Postgres database."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.fast_path import EntitlementFastPath
from models.db import get_engine
from models.settings import Settings
from repositories import platforms
from services.platforms import assign_platform, hash_key, new_api_key
from tests.factories import create_account

NOW = datetime(2026, 10, 25, 12, 0, tzinfo=timezone.utc)  # "now" for the API in these tests


class Clock:
    def __init__(self, now: datetime = NOW):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveApi:
    url: str
    app: object
    clock: Clock
    settings: Settings
    database_url: str
    fast: object = None  # the entitlement fast path the server runs in front of ``app`` (api/fast_path.py)
    clients: list = field(default_factory=list)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self.clients.append(c)
        return c

    def platform(self, name: str) -> str:
        """Create a platform; returns its API key."""
        key = new_api_key()
        with get_engine(self.database_url).begin() as conn:
            platforms.create_platform(conn, name, hash_key(key))
        return key

    def account(self, account_id: str, plan: str, platform: str | None = None, **kw) -> str:
        create_account(self.database_url, account_id, plan, **kw)
        if platform:
            with get_engine(self.database_url).begin() as conn:
                assign_platform(conn, account_id, platforms.platform_by_name(conn, platform).id)
        return account_id


class _NoWorkflows:
    """A Temporal client with no workflows: starting one does nothing, reaching one finds none (the API
    tests never dial a Temporal server; tests/integration/test_contracts_api.py runs the real one)."""

    async def start_workflow(self, *args, **kwargs):
        return None

    def get_workflow_handle_for(self, *args, **kwargs):
        return self

    async def execute_update(self, *args, **kwargs):
        from temporalio.service import RPCError, RPCStatusCode

        raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")


async def no_temporal():
    return _NoWorkflows()


@pytest.fixture(scope="session")
def api_server(database_url, tmp_path_factory):
    clock = Clock()
    settings = Settings(home=tmp_path_factory.mktemp("tally-api-home"), database_url=database_url,
                        api_secret="test-secret-for-billing-links")
    app = create_app(settings, clock=clock, temporal=no_temporal)
    # As `tally api` serves it: checks the view answers never reach the framework. Every check of the
    # API tests goes through it; with no view (the tests' default) it hands each to the application.
    fast = EntitlementFastPath(app)
    with serving(fast) as url:
        yield LiveApi(url, app, clock, settings, database_url, fast)


@contextlib.contextmanager
def serving(app, lifespan: str = "off"):
    """``app`` served by uvicorn in a thread of this process; yields its base URL. ``lifespan="on"``
    runs its start-up and shutdown hooks (the entitlement view's refresher)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def api(api_server, clean_db):
    """The live API with an empty database and the clock at NOW."""
    api_server.clock.now = NOW
    yield api_server
    # The API evaluates alerts in a background thread: let it finish before the next test empties the
    # database (services/alerts.py, EvaluationQueue).
    from services.alerts import evaluator

    evaluator(api_server.app.state.service.engine, api_server.app.state.service.catalog).queue.settle()
    for c in api_server.clients:
        c.close()
    api_server.clients.clear()
