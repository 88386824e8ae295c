"""Amendments are Temporal updates of ``contract-<id>``, tested on the Temporal dev server (the
time-skipping server does not advance time while a client waits on an update) with the real worker,
activities and Postgres: the validator refuses what the rules refuse before anything is written, the
handler records what it accepts once, and a refusal only the database can see (an extension into the
account's next contract) fails the update, not the term."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType

import capabilities as registry
from activities.deps import Deps
from billing import contracts as rules
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from models.schemas import ContractTermState
from services import contracts as service
from services.errors import InvalidInput
from workers.worker import build_worker
from workflows.contracts import ContractTermWorkflow, contract_workflow_id

CATALOG = load_catalog()


def month_start(months_back: int) -> date:
    p = Period.of(datetime.now(timezone.utc))
    for _ in range(months_back):
        p = p.previous()
    return date(p.year, p.month, 1)


async def started(env, settings, account: str, start: date, months: int = 12) -> str:
    created = service.create_contract(get_engine(settings.database_url), CATALOG, account_id=account,
                                      commitment=100_000, start=start, months=months)

    async def temporal():
        return env.client

    await service.start_term(temporal, settings, created, poll_seconds=6 * 3600)
    return created.contract_id


def amendments(url: str) -> list:
    with get_engine(url).begin() as conn:
        return conn.execute(text("SELECT kind, commitment, extra_months, effective FROM contract_amendments "
                                 "ORDER BY contract_id, seq")).all()


async def accepted_updates(handle) -> int:
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_amendments_in_month_5_raise_extend_and_terminate_and_refuse_with_the_reason(dev_server, settings,
                                                                                            contract_terms):
    env, url = dev_server, settings.database_url

    async def temporal():
        return env.client

    async def amend(cid, kind, **kw):
        return await service.amend_contract(temporal, get_engine(url), CATALOG, cid, kind, **kw)

    async with build_worker(env.client, settings, Deps(settings), fail_fast=True):
        cid = await started(env, settings, "acme", month_start(4))  # this month is its 5th
        # lowering is refused by the validator, with the reason; nothing is recorded
        with pytest.raises(InvalidInput) as low:
            await amend(cid, "raise_commitment", commitment=90_000)
        assert low.value.field == "commitment" and "cannot be lowered mid-term" in str(low.value)
        assert amendments(url) == []
        handle = env.client.get_workflow_handle(contract_workflow_id(cid))
        assert await accepted_updates(handle) == 0  # rejected by the validator: not even in the history

        view = await amend(cid, "raise_commitment", commitment=150_000)
        assert await accepted_updates(handle) == 1
        tomorrow = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        assert view.commitment_now == 150_000 and view.discount == rules.contract_pricing(
            CATALOG.version(view.catalog_version)).tier(150_000).discount
        assert amendments(url) == [("raise_commitment", 150_000, None, tomorrow)]
        # requested in month 5; the month it takes effect in is prorated between the two commitments by
        # days, rounded once for the month (billing.contracts); the months after it are whole at 150,000
        raised = next(i for i, m in enumerate(view.schedule) if m.start <= tomorrow < m.end)
        m, days = view.schedule[raised], Period.parse(view.schedule[raised].period).days
        exact = 100_000 * (tomorrow - m.start).days + 150_000 * (m.end - tomorrow).days
        assert m.committed == (2 * exact + days) // (2 * days)
        assert all(x.committed == 150_000 for x in view.schedule[raised + 1:-1])
        assert raised in (4, 5) and view.schedule[3].committed == 100_000

        view = await amend(cid, "extend_term", extra_months=6)
        assert view.months == 18 and view.end == rules.anniversary(view.start, 18)

        # an extension into the account's next contract: only the activity (under the account's lock)
        # can see it; the update fails with the reason and the term goes on
        nxt = await started(env, settings, "acme", view.end.date() + timedelta(days=31))
        with pytest.raises(InvalidInput) as overlap:
            await amend(cid, "extend_term", extra_months=3)
        assert overlap.value.field == "extra_months" and f"overlaps contract {nxt}" in str(overlap.value)

        view = await amend(cid, "terminate")
        assert view.terminated and view.end == tomorrow
        assert view.schedule[-1].period == str(Period.of(tomorrow - timedelta(days=1)))  # the last month served
        with pytest.raises(InvalidInput) as after:
            await amend(cid, "raise_commitment", commitment=200_000)
        assert after.value.field == "contract" and "terminated" in str(after.value)

        state = await handle.query(ContractTermWorkflow.state, result_type=ContractTermState)
        assert state.terminated and state.commitment_now == 150_000 and not state.finished
        assert [a.kind for a in state.contract.amendments] == ["raise_commitment", "extend_term", "terminate"]
        assert state.waiting_for == str(Period.parse(str(month_start(4))[:7]))  # its first month: not closed yet
        assert [k for k, *_ in amendments(url)] == ["raise_commitment", "extend_term", "terminate"]
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(registry.search_attributes()["BillingAccountIds"]) == ["acme"]
