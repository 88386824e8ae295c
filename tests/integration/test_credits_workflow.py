"""A grant's expiry workflow on the time-skipping server with the real activities (Postgres): 12 months
pass in seconds, the notice is queued 7 days before, exactly the remainder expires once; the daily sweep
restarts a grant's workflow that was terminated, under the same id."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from temporalio.client import WorkflowExecutionStatus

from activities.deps import Deps
from billing.catalog import load_catalog
from models.db import get_engine
from models.schemas import CreditGrantInput, CreditSweepInput
from repositories import credits as repo
from services import credits as service
from tests.factories import create_account, event, ingest
from workers.worker import build_worker
from workflows.credits import CreditGrantsSweepWorkflow, CreditGrantWorkflow

CATALOG = load_catalog()


def deps(settings) -> Deps:
    return Deps(settings, engine=get_engine(settings.database_url), catalog=CATALOG)


async def test_twelve_months_pass_the_notice_is_queued_and_the_remainder_expires_once(temporal_env, settings):
    url = settings.database_url
    now = (await temporal_env.get_current_time()).replace(microsecond=0)  # the shared server's clock may be years ahead
    create_account(url, "ts-1", "free", billing_start=now - timedelta(days=40))
    engine = get_engine(url)
    service.set_credits_only(engine, "ts-1", True)
    g = service.ops_grant(engine, CATALOG, account_id="ts-1", credits="100", usd=None, reason="trial",
                          granted_by="ana", now=now - timedelta(minutes=5))
    ingest(url, [event("ts-1", 1, now - timedelta(minutes=1), "claude-sonnet")], now=now)
    service.consume_for(engine, CATALOG, ["ts-1"], now, 48)
    async with build_worker(temporal_env.client, settings, deps(settings), fail_fast=True):
        result = await temporal_env.client.execute_workflow(
            CreditGrantWorkflow.run, CreditGrantInput(grant_id=g["grant_id"], grace_hours=48),
            id=service.grant_workflow_id(g["grant_id"]), task_queue=settings.task_queue)
        again = await temporal_env.client.execute_workflow(
            CreditGrantWorkflow.run, CreditGrantInput(grant_id=g["grant_id"], grace_hours=48),
            id=f"{service.grant_workflow_id(g['grant_id'])}-again", task_queue=settings.task_queue)
    assert (result.notice_queued, result.expired, result.already_expired) == (True, Decimal("95"), False)
    assert again.already_expired and again.expired == 0
    with engine.begin() as conn:
        entries = repo.ledger_of(conn, "ts-1")
        notices = conn.exec_driver_sql("SELECT dedupe_key, kind FROM notifications").all()
        grant = repo.get_grant(conn, g["grant_id"])
    assert [(e.kind.value, e.amount) for e in entries] == [("grant", Decimal("100.00")), ("consume", Decimal("-5.00")),
                                                           ("expire", Decimal("-95.00"))]
    assert entries[-1].occurred_at == grant.expires_at
    assert grant.expires_at.year == (now - timedelta(minutes=5)).year + 1
    assert notices == [(f"credits-expiring:{g['grant_id']}", "credits_expiring")]


async def test_the_sweep_restarts_a_terminated_grant_workflow_under_the_same_id(temporal_env, settings):
    url = settings.database_url
    now = datetime.now(timezone.utc)
    create_account(url, "ts-2", "pro")
    engine = get_engine(url)
    first = service.ops_grant(engine, CATALOG, account_id="ts-2", credits="10", usd=None, reason="a", granted_by="ana",
                              now=now)
    second = service.ops_grant(engine, CATALOG, account_id="ts-2", credits=None, usd="5.00", reason="b",
                               granted_by="ana", now=now)
    client = temporal_env.client
    async with build_worker(client, settings, deps(settings), fail_fast=True):
        handle = await client.start_workflow(
            CreditGrantWorkflow.run, CreditGrantInput(grant_id=first["grant_id"]),
            id=service.grant_workflow_id(first["grant_id"]), task_queue=settings.task_queue)
        await handle.terminate("restored from an old backup")
        swept = await client.execute_workflow(CreditGrantsSweepWorkflow.run, CreditSweepInput(page_size=1),
                                              id=f"credit-grants-sweep-{uuid.uuid4().hex[:6]}",
                                              task_queue=settings.task_queue)
        assert (swept.checked, swept.started) == (2, 2)
        for g in (first, second):
            latest = await client.get_workflow_handle(service.grant_workflow_id(g["grant_id"])).describe()
            assert latest.status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED)
        restarted = await client.get_workflow_handle(service.grant_workflow_id(first["grant_id"])).describe()
        assert restarted.run_id != handle.result_run_id
