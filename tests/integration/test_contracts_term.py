"""A whole contract term on real components: Postgres, the real activities and close rating, and the
term workflow on the time-skipping server across 13 contract months (a 12-month term from the 17th).
Each month's invoice is rated by the close and made final; the workflow sleeps until each month may be
closed, takes its reconciliation, continues as new, and at the end writes the summary and queues the
notice, once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import text

from activities.close import CloseActivities
from activities.deps import Deps
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from models.schemas import AccountRange, CloseChunkInput, ContractTermInput
from services import contracts as service
from tests.factories import event, ingest
from workers.worker import build_worker
from workflows.contracts import ContractTermWorkflow


async def test_a_12_month_term_from_the_17th_is_reconciled_month_by_month_and_summarised(temporal_env, settings):
    url = settings.database_url
    now = await temporal_env.get_current_time()
    first = Period.of(now).next()
    start = datetime(first.year, first.month, 17, tzinfo=timezone.utc)
    created = service.create_contract(get_engine(url), load_catalog(), account_id="acme", commitment=100_000,
                                      start=start.date(), months=12, now=now)
    periods = [first]
    while len(periods) < 13:
        periods.append(periods[-1].next())
    far = periods[-1].end + timedelta(days=60)
    for i, p in enumerate(periods):  # ten executions a month, none in the third, each month's as it ends
        docs = [event("acme", 10 * i + k, max(p.start, start) + timedelta(hours=k)) for k in range(10) if i != 2]
        assert ingest(url, docs, now=p.end).rejected == 0
    close = CloseActivities(Deps(settings, clock=lambda: far))
    for p in periods:  # the monthly closes, done beforehand: each invoice rated, then final
        close.rate_accounts(CloseChunkInput(period=str(p), index=0, accounts=AccountRange(after=None, upto="~",
                                                                                        count=0)))
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE invoices SET status = 'open'"))

    async with build_worker(temporal_env.client, settings, Deps(settings), fail_fast=True):
        handle = await temporal_env.client.start_workflow(
            ContractTermWorkflow.run, ContractTermInput(contract_id=created.contract_id, contract=created.record),
            id=f"{created.workflow_id}-{uuid.uuid4().hex[:6]}", task_queue=settings.task_queue)
        result = await handle.result()
    s = result.summary
    # 15/31 + eleven whole months + 16/31 of 100,000 = 1,200,000 committed: exactly twelve months of $640.00
    assert (s.months, s.committed, s.used, s.shortfall, s.overage) == (13, 1_200_000, 120, 1_199_880, 0)
    assert (s.committed_charges, s.total_charges, s.months_under_commitment) == (
        Decimal("7680.00"), Decimal("7680.00"), 13)
    assert s.average_utilisation == Decimal("0.0001")  # 120 / 1,200,000 = 0.0001
    with get_engine(url).begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM contract_months WHERE reconciled_at IS NOT NULL")).scalar() == 13
        assert conn.execute(text("SELECT months, total_charges FROM contract_summaries")).one() == (13, Decimal("7680.00"))
        notes = conn.execute(text("SELECT kind, subject, body FROM notifications")).all()
    assert len(notes) == 1 and notes[0].kind == "contract_term_summary"
    assert "13 contract months" in notes[0].body and "$7,680.00" in notes[0].body
