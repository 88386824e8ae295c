"""Contract accounts in the monthly close, on real Postgres (and, for the re-run, the time-skipping
Temporal server and the Stripe emulator): the committed-use line, the overage lines per model, a
contract starting mid-month after days on another plan, the higher tiers, and a re-run that changes
nothing. Amounts are hand-computed from the brief's tables (100,000 a month: 20% off $0.008 = $0.0064)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import text

from activities.close import CloseActivities
from activities.contracts import ContractActivities
from activities.deps import Deps
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from models.schemas import AccountRange, CloseChunkInput, ClosePeriodInput, ContractMonthCheck
from services import contracts as contract_service
from tests.factories import OCT_START, create_account, events, ingest
from workers.worker import build_worker
from workflows.close import ClosePeriodWorkflow

OCT = "2026-10"
NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)


def new_contract(url: str, account: str, commitment: int, start: date, months: int = 12) -> str:
    return contract_service.create_contract(get_engine(url), load_catalog(), account_id=account,
                                            commitment=commitment, start=start, months=months, now=NOW).contract_id


def rate_october(settings) -> None:
    CloseActivities(Deps(settings)).rate_accounts(
        CloseChunkInput(period=OCT, index=0, accounts=AccountRange(after=None, upto="~", count=0)))


def invoice_lines(url: str, account: str) -> list:
    with get_engine(url).begin() as conn:
        return conn.execute(text(
            "SELECT l.kind, l.model, l.quantity, l.unit_price, l.amount FROM invoice_lines l "
            "JOIN invoices i ON i.id = l.invoice_id WHERE i.account_id = :a AND i.period = :p ORDER BY l.position"),
            {"a": account, "p": OCT}).all()


def totals(url: str) -> dict[str, Decimal]:
    with get_engine(url).begin() as conn:
        return dict(conn.execute(text("SELECT account_id, total FROM invoices WHERE period = :p"), {"p": OCT}).all())


def months(url: str) -> dict:
    with get_engine(url).begin() as conn:
        rows = conn.execute(text(
            "SELECT c.account_id, m.committed, m.used, m.overage, m.shortfall, m.utilisation, m.total "
            "FROM contract_months m JOIN contracts c ON c.id = m.contract_id WHERE m.period = :p"), {"p": OCT}).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_whole_months_at_80000_100000_and_140000_used_against_100000_bill_640_640_and_960(settings):
    url = settings.database_url
    used = {"c-080k": 80_000, "c-100k": 100_000, "c-140k": 140_000}
    docs = []
    for account, n in used.items():
        new_contract(url, account, 100_000, date(2026, 10, 1))
        docs += events(account, n, step=timedelta(seconds=19))  # all inside October
    assert ingest(url, docs, now=NOW).rejected == 0
    rate_october(settings)

    assert totals(url) == {"c-080k": Decimal("640.00"), "c-100k": Decimal("640.00"), "c-140k": Decimal("960.00")}
    assert months(url) == {
        "c-080k": (100_000, 80_000, 0, 20_000, Decimal("0.8000"), Decimal("640.00")),
        "c-100k": (100_000, 100_000, 0, 0, Decimal("1.0000"), Decimal("640.00")),
        "c-140k": (100_000, 140_000, 40_000, 0, Decimal("1.4000"), Decimal("960.00")),
    }
    # 140,000: the committed-use line, the utilisation line, then the 40,000 executions past the first
    # 100,000 in time order, per model (the factory cycles four models): 10,000 x $0.008 = $80.00 each
    lines = invoice_lines(url, "c-140k")
    assert [(k, m, q, a) for k, m, q, _, a in lines] == [
        ("committed_use", None, Decimal("100000"), Decimal("640.00")),
        ("committed_usage", None, Decimal("140000"), Decimal("0.00")),
        *[("contract_overage", m, Decimal("10000"), Decimal("80.00"))
          for m in sorted(("claude-haiku", "gpt-4o-mini", "claude-sonnet", "gpt-4o"))],
    ]
    assert {u for _, _, _, u, _ in lines[2:]} == {Decimal("0.008")}
    assert [k for k, *_ in invoice_lines(url, "c-080k")] == ["committed_use", "committed_usage"]


@pytest.mark.parametrize("commitment, committed_use", [(500_000, "2600.00"), (1_000_000, "4400.00")])
def test_higher_tiers_bill_the_commitment_at_35_and_45_percent_off(settings, commitment, committed_use):
    url = settings.database_url
    new_contract(url, "big", commitment, date(2026, 10, 1))
    assert ingest(url, events("big", 1_000), now=NOW).rejected == 0
    rate_october(settings)
    # 500,000 x $0.0052 = $2,600.00; 1,000,000 x $0.0044 = $4,400.00; 1,000 used: no overage
    assert totals(url) == {"big": Decimal(committed_use)}
    (kind, _, quantity, unit, amount), _ = invoice_lines(url, "big")
    assert (kind, quantity, amount) == ("committed_use", Decimal(commitment), Decimal(committed_use))
    assert unit == Decimal("0.008") * (1 - Decimal("0.35" if commitment == 500_000 else "0.45"))


def test_a_contract_from_the_17th_bills_the_days_before_on_the_old_plan_and_15_31_of_the_commitment(settings):
    url = settings.database_url
    create_account(url, "mid", "pro", overage=True)  # Pro since January
    new_contract(url, "mid", 100_000, date(2026, 10, 17))
    before = list(events("mid", 3_000, step=timedelta(minutes=7)))  # Oct 1 - Oct 15: 3,000 on Pro
    step = timedelta(seconds=25)  # the factory places execution i at start + i x step: ids 3,000 on from Oct 17
    after = list(events("mid", 50_000, start=datetime(2026, 10, 17, tzinfo=timezone.utc) - 3_000 * step,
                        step=step, first=3_000))  # Oct 17 - Oct 31
    assert ingest(url, before + after, now=NOW).rejected == 0
    rate_october(settings)
    lines = invoice_lines(url, "mid")
    # Pro for Oct 1-16: $29 x 16/31 = $14.97 (unit rounded first); 5,000 x 16/31 = 2,581 included, so 419 of
    # the 3,000 are overage at $0.005 over four models (105+105+105+104: $0.53+0.53+0.53+0.52 = $2.11).
    # The contract, Oct 17-31: 100,000 x 15/31 = 48,387.097 -> 48,387 committed x $0.0064 = $309.6768 -> $309.68;
    # 50,000 used: 1,613 above it x $0.008 = $12.904 -> $12.90 (over four models, rounded per line).
    kinds = [k for k, *_ in lines]
    assert kinds == ["base_fee", "included_usage", "usage", "usage", "usage", "usage", "committed_use",
                     "committed_usage", "contract_overage", "contract_overage", "contract_overage",
                     "contract_overage"]
    assert lines[0][4] == Decimal("14.97")
    assert sum(a for k, *_, a in lines if k == "usage") == Decimal("2.11")
    assert lines[6][2:] == (Decimal("48387"), Decimal("0.0064"), Decimal("309.68"))
    overage = [(q, a) for k, _, q, _, a in lines if k == "contract_overage"]
    assert sum(q for q, _ in overage) == 1_613
    assert sum(a for _, a in overage) == Decimal("12.89")  # 404+403+403+403 executions: 3.23+3.22+3.22+3.22
    assert totals(url)["mid"] == Decimal("14.97") + Decimal("2.11") + Decimal("309.68") + Decimal("12.89")
    assert months(url)["mid"][:4] == (48_387, 50_000, 1_613, 0)


def test_enterprise_days_without_a_contract_are_billed_at_the_standard_rate(settings):
    url = settings.database_url
    new_contract(url, "gap", 100_000, date(2026, 10, 1))
    with get_engine(url).begin() as conn:  # the contract ended early on Oct 20 (a termination amendment)
        conn.execute(text(
            "INSERT INTO contract_amendments (contract_id, seq, request_id, kind, requested_at, effective) "
            "SELECT id, 1, 'test', 'terminate', '2026-10-19T10:00:00Z', '2026-10-20T00:00:00Z' FROM contracts"))
    assert ingest(url, events("gap", 1_000, step=timedelta(minutes=40)), now=NOW).rejected == 0  # Oct 1 - Oct 28
    rate_october(settings)
    lines = invoice_lines(url, "gap")
    no_contract = [(m, q, a) for k, m, q, _, a in lines if k == "enterprise_usage"]
    n_after = sum(1 for i in range(1_000) if OCT_START + timedelta(minutes=40 * i) >= datetime(2026, 10, 20, tzinfo=timezone.utc))
    assert sum(q for _, q, _ in no_contract) == n_after
    assert all(a == (q * Decimal("0.008")).quantize(Decimal("0.01")) for _, q, a in no_contract)
    assert "termination_fee" in [k for k, *_ in lines]


async def test_a_rerun_close_changes_nothing_and_a_month_is_reconciled_once(temporal_env, settings, emulator):
    url = settings.database_url
    cid = new_contract(url, "rerun", 100_000, date(2026, 10, 1))
    assert ingest(url, events("rerun", 120_000, step=timedelta(seconds=22)), now=NOW).rejected == 0
    deps = Deps(settings, clock=lambda: NOW)
    for _ in range(2):  # the close, then a re-run
        async with build_worker(temporal_env.client, settings, deps, fail_fast=True):
            result = await temporal_env.client.execute_workflow(
                ClosePeriodWorkflow.run, ClosePeriodInput(period=OCT, chunk_size=3, parallel_chunks=2),
                id=f"close-{OCT}-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue)
    assert result.invoices_frozen == 1 and result.invoices_rated == 0  # the re-run found it final
    assert totals(url) == {"rerun": Decimal("800.00")}  # $640.00 + 20,000 x $0.008
    ticks = iter(NOW + timedelta(minutes=m) for m in range(100))  # each check reads a later clock
    activities = ContractActivities(Deps(settings, clock=lambda: next(ticks)))
    first = activities.contract_month_status(ContractMonthCheck(contract_id=cid, period=OCT))
    again = activities.contract_month_status(ContractMonthCheck(contract_id=cid, period=OCT))
    assert first.final and again.final and first.month == again.month
    with get_engine(url).begin() as conn:
        assert conn.execute(text("SELECT count(*), min(reconciled_at) FROM contract_months")).one() == (1, NOW)
    assert months(url)["rerun"] == (100_000, 120_000, 20_000, 0, Decimal("1.2000"), Decimal("800.00"))
    assert Period.parse(OCT).end < NOW


def test_preview_of_a_contract_month_bills_the_whole_commitment_and_does_not_scale_it(settings):
    from services.invoices import invoice_preview

    url = settings.database_url
    new_contract(url, "pv", 100_000, date(2026, 10, 17))
    start = datetime(2026, 10, 17, tzinfo=timezone.utc)
    assert ingest(url, events("pv", 100, start=start), now=NOW).rejected == 0
    view = invoice_preview(get_engine(url), "pv", datetime(2026, 10, 25, tzinfo=timezone.utc), load_catalog())
    assert [ln.kind for ln in view.lines] == ["committed_use", "committed_usage"]
    assert view.total == view.projected_total == "309.68"  # 48,387 x $0.0064, whatever the pace
