"""The monthly close on real Postgres, the time-skipping Temporal server and the Stripe emulator."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import stripe
from temporalio.client import WorkflowFailureError

from activities.close import CloseActivities
from activities.deps import Deps
from billing.periods import Period
from models.db import get_engine
from models.schemas import ClosePeriodInput, ClosePeriodResult
from models.settings import EMULATOR_API_KEY
from repositories import invoices
from tests.factories import OCT_START, create_account, event, events, ingest
from workers.worker import build_worker
from workflows.close import ClosePeriodWorkflow

OCT = Period.parse("2026-10")

# account -> expected total for October (hand-computed from the brief's tables)
EXPECTED = {
    "free-1": Decimal("0.00"),  # 101 executions: the 101st is blocked, shown, not billed
    "payg-1": Decimal("1.20"),  # 120 x $0.01
    # 5,010 executions with opt-in: 10 past the quota, over 4 models (3+3+2+2), each model's line
    # rounded once: $0.015->0.02, $0.015->0.02, $0.01, $0.01 = $0.06
    "pro-optin": Decimal("29.06"),
    "pro-blocked": Decimal("29.00"),  # 5,003 executions without opt-in: 3 blocked
    "team-2": Decimal("158.00"),  # 2 seats x $79, 10 executions
    "payg-idle": Decimal("0.00"),  # no usage, no charge
}


def seed(url: str) -> None:
    create_account(url, "free-1", "free")
    create_account(url, "payg-1", "payg", email="payg@example.com")
    create_account(url, "pro-optin", "pro", overage=True)
    create_account(url, "pro-blocked", "pro")
    create_account(url, "team-2", "team", seats=2, overage=True)
    create_account(url, "payg-idle", "payg")
    docs = []
    docs += events("free-1", 101)
    docs += events("payg-1", 120)
    docs += events("pro-optin", 5010, step=timedelta(minutes=8))
    docs += events("pro-blocked", 5003, step=timedelta(minutes=8))
    docs += events("team-2", 10)
    report = ingest(url, docs)
    assert report.rejected == 0, report.rejections[:3]


def stripe_client(emulator) -> stripe.StripeClient:
    return stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url})


def stripe_invoices(emulator) -> list:
    return list(stripe_client(emulator).v1.invoices.list(params={"limit": 100}).auto_paging_iter())


async def run_close(env, settings, period: str = "2026-10", deps=None,
                    workflow_id: str | None = None) -> ClosePeriodResult:
    async with build_worker(env.client, settings, deps, fail_fast=True):
        return await env.client.execute_workflow(
            ClosePeriodWorkflow.run,
            ClosePeriodInput(period=period, chunk_size=settings.close_chunk_size,
                             parallel_chunks=settings.close_parallel_chunks),
            id=workflow_id or f"close-{period}-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )


def db_invoices(url: str) -> dict:
    with get_engine(url).begin() as conn:
        return {r.account_id: r for r in invoices.list_invoices(conn, OCT)}


def assert_one_stripe_invoice_per_charged_account(settings, emulator) -> None:
    invs = db_invoices(settings.database_url)
    charged = {a for a, total in EXPECTED.items() if total > 0}
    by_account: dict[str, list] = {}
    for s in stripe_invoices(emulator):
        by_account.setdefault(s.metadata["tally_account_id"], []).append(s)
    assert set(by_account) == charged
    for account_id, found in by_account.items():
        assert len(found) == 1, f"{account_id} has {len(found)} Stripe invoices"
        s = found[0]
        assert s.status == "open"
        assert s.total == int(EXPECTED[account_id] * 100)
        assert invs[account_id].stripe_invoice_id == s.id
        assert invs[account_id].status == "open"


async def test_close_bills_every_plan_and_pushes_one_stripe_invoice_per_charged_account(
        temporal_env, settings, emulator):
    seed(settings.database_url)
    result = await run_close(temporal_env, settings)

    invs = db_invoices(settings.database_url)
    assert {a: r.total for a, r in invs.items()} == EXPECTED
    assert invs["free-1"].status == "no_charge" and invs["payg-idle"].status == "no_charge"
    assert result.accounts == len(EXPECTED)
    assert result.pushed == 4 and not result.failed
    assert result.total == sum(EXPECTED.values())
    assert_one_stripe_invoice_per_charged_account(settings, emulator)
    # Stripe holds exactly our lines, amount by amount.
    with get_engine(settings.database_url).begin() as conn:
        ours = [str(line.amount) for line in invoices.invoice_lines_of(conn, invs["pro-optin"].id)]
    lines = stripe_client(emulator).v1.invoices.line_items.list(invs["pro-optin"].stripe_invoice_id,
                                                             params={"limit": 100})
    assert [f"{Decimal(line.amount) / 100:.2f}" for line in lines.data] == ours


async def test_at_most_three_stripe_writes_per_invoice_plus_one_per_new_customer(
        temporal_env, settings, emulator):
    seed(settings.database_url)
    result = await run_close(temporal_env, settings)
    posts = [r for r in emulator.requests() if r["method"] == "POST"]
    customers = [r for r in posts if r["path"] == "/v1/customers"]
    invoice_writes = [r for r in posts if r["path"].startswith("/v1/invoices")]
    assert len(customers) == 4
    assert len(invoice_writes) == 3 * result.pushed
    assert result.stripe_calls == 4 * result.pushed  # what Tally counted: no look-ups on the happy path


async def test_rerunning_a_close_changes_nothing(temporal_env, settings, emulator):
    seed(settings.database_url)
    await run_close(temporal_env, settings)
    first = {a: (r.id, r.total, r.status, r.stripe_invoice_id) for a, r in db_invoices(settings.database_url).items()}
    posts_before = len([r for r in emulator.requests() if r["method"] == "POST"])

    again = await run_close(temporal_env, settings)

    assert {a: (r.id, r.total, r.status, r.stripe_invoice_id)
            for a, r in db_invoices(settings.database_url).items()} == first
    assert again.invoices_rated == 0 and again.pushed == 0
    assert again.invoices_frozen == len(EXPECTED)
    assert len([r for r in emulator.requests() if r["method"] == "POST"]) == posts_before
    assert_one_stripe_invoice_per_charged_account(settings, emulator)


async def test_event_at_midnight_on_the_first_belongs_to_the_new_month(temporal_env, settings, emulator):
    create_account(settings.database_url, "edge", "payg")
    nov_first = datetime(2026, 11, 1, tzinfo=timezone.utc)
    ingest(settings.database_url, [
        event("edge", 1, nov_first - timedelta(microseconds=1)),  # last instant of October
        event("edge", 2, nov_first),  # 00:00:00 UTC on the 1st: November
        event("edge", 3, OCT_START),  # first instant of October
    ])
    await run_close(temporal_env, settings)
    inv = db_invoices(settings.database_url)["edge"]
    assert inv.executions == 2
    assert inv.total == Decimal("0.02")


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/invoices", "/v1/invoices/*/add_lines",
                                  "/v1/invoices/*/finalize"])
async def test_stripe_500_before_commit_still_ends_with_one_invoice_per_account(
        temporal_env, settings, emulator, path):
    seed(settings.database_url)
    emulator.add_fault(method="POST", path=path, kind="error_500", count=1)
    result = await run_close(temporal_env, settings)
    assert not result.failed
    assert_one_stripe_invoice_per_charged_account(settings, emulator)
    # The 500 was saved under its key; Tally looked the object up and used the next attempt's key.
    with get_engine(settings.database_url).begin() as conn:
        failed = conn.exec_driver_sql(
            "SELECT count(*) FROM stripe_requests WHERE state = 'failed' AND http_status = 500").scalar()
        second = conn.exec_driver_sql("SELECT count(*) FROM stripe_requests WHERE attempt = 2").scalar()
    assert failed == 1 and second == 1


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/invoices", "/v1/invoices/*/add_lines",
                                  "/v1/invoices/*/finalize"])
async def test_lost_response_after_commit_does_not_create_a_second_object(
        temporal_env, settings, emulator, path):
    seed(settings.database_url)
    settings = settings.model_copy(update={"stripe_max_network_retries": 0})  # Temporal retries instead
    emulator.add_fault(method="POST", path=path, kind="drop_after_commit", count=2)
    result = await run_close(temporal_env, settings)
    assert not result.failed
    assert_one_stripe_invoice_per_charged_account(settings, emulator)
    replays = [r for r in emulator.requests() if r.get("replayed")]
    assert len(replays) == 2
    customers = list(stripe_client(emulator).v1.customers.list(params={"limit": 100}).auto_paging_iter())
    assert len(customers) == 4


async def test_rate_limited_stripe_calls_are_retried_with_the_same_key(temporal_env, settings, emulator):
    seed(settings.database_url)
    emulator.add_fault(method="POST", path="/v1/invoices/*/finalize", kind="rate_limit_429", count=3,
                       retry_after=1)
    result = await run_close(temporal_env, settings)
    assert not result.failed
    assert_one_stripe_invoice_per_charged_account(settings, emulator)
    limited = [r for r in emulator.requests() if r["status"] == 429]
    assert len(limited) == 3
    with get_engine(settings.database_url).begin() as conn:
        keys = conn.exec_driver_sql("SELECT count(*) FROM stripe_requests WHERE step = 'finalize'").scalar()
    assert keys == 4  # one key per invoice: the 429s reused it


def test_stripe_key_older_than_a_day_is_not_trusted_blindly(settings, emulator):
    """A push died after Stripe committed; 25 h later Stripe has forgotten the key: Tally looks the
    invoice up by metadata instead of creating a second one."""
    from activities.push import InvoicePusher
    from gateways.stripe import StripeUnreachable
    from models.schemas import AccountRange, CloseChunkInput

    seed(settings.database_url)
    acts = CloseActivities(Deps(settings.model_copy(update={"stripe_max_network_retries": 0})))
    acts.rate_accounts(CloseChunkInput(period="2026-10", index=0,
                                       accounts=AccountRange(after=None, upto="zzz", count=6)))
    target = db_invoices(settings.database_url)["pro-optin"]
    emulator.add_fault(method="POST", path="/v1/invoices", kind="drop_after_commit", count=1)
    with pytest.raises(StripeUnreachable):
        InvoicePusher(acts.engine, acts.gateway).push(target.id)
    assert len(stripe_invoices(emulator)) == 1  # Stripe did create it

    emulator.advance_clock(25 * 3600)
    later = InvoicePusher(acts.engine, acts.gateway,
                          clock=lambda: datetime.now(timezone.utc) + timedelta(hours=25))
    outcome = later.push(target.id)

    assert outcome.status == "open"
    mine = stripe_invoices(emulator)
    assert len(mine) == 1 and mine[0].id == outcome.stripe_invoice_id
    assert mine[0].status == "open"


async def test_future_period_is_refused_and_writes_nothing(temporal_env, settings, emulator):
    seed(settings.database_url)
    nxt = Period.of(datetime.now(timezone.utc)).next()
    with pytest.raises(WorkflowFailureError) as info:
        await run_close(temporal_env, settings, period=str(nxt))
    assert "has not started" in str(info.value.cause.cause)
    with get_engine(settings.database_url).begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM invoices").scalar() == 0
    assert stripe_invoices(emulator) == []


async def test_malformed_period_is_refused(temporal_env, settings):
    with pytest.raises(WorkflowFailureError) as info:
        await run_close(temporal_env, settings, period="2026-13")
    assert "period" in str(info.value.cause.cause)
