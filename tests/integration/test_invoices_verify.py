"""`tally invoices verify`: a closed demo-sized month re-rated with today's code bills the same, late
usage included; a pricing change that would alter history is listed invoice by invoice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from activities.close import CloseActivities
from activities.deps import Deps
from billing.catalog import load_catalog, parse_catalog
from billing.periods import Period
from models.db import get_engine
from models.schemas import AccountRange, CloseChunkInput
from repositories import invoices
from services.invoices import verify_period
from tests.conftest import ROOT
from tests.factories import event, ingest
from workers.demo import demo_accounts, demo_events, seed_month
from activities.ingest import ingest_lines, known_models

SEP, OCT, NOV = Period.parse("2026-09"), Period.parse("2026-10"), Period.parse("2026-11")


def close_without_stripe(settings, period: Period) -> None:
    """Rate every account in one chunk, then mark the invoices final as a push would."""
    acts = CloseActivities(Deps(settings))
    acts.rate_accounts(CloseChunkInput(period=str(period), index=0, accounts=AccountRange(after=None, upto="~", count=0)))
    with get_engine(settings.database_url).begin() as conn:
        for inv in invoices.list_invoices(conn, period):
            if inv.status == "draft":
                invoices.set_invoice_status(conn, inv.id, "open", from_statuses=("draft",))


@pytest.fixture
def closed_months(settings):
    """September closed with a demo month's accounts and usage, then late September usage arriving,
    October closed (billing it as prior-period lines), more late September usage, November closed."""
    seed_month(settings, SEP, n_accounts=300, n_executions=60_000)
    close_without_stripe(settings, SEP)
    accts = demo_accounts(300)
    late = [event(a["id"], 9_000_000 + i, SEP.end - timedelta(hours=1 + i)) for i, a in enumerate(accts[:40])]
    assert ingest(settings.database_url, late).accepted == 40
    ingest_lines(settings.database_url, demo_events(accts, OCT, 30_000, seed=5), known_models(load_catalog()))
    close_without_stripe(settings, OCT)
    later = [event(a["id"], 9_100_000 + i, SEP.end - timedelta(minutes=5 + i)) for i, a in enumerate(accts[:20])]
    assert ingest(settings.database_url, later).accepted == 20
    close_without_stripe(settings, NOV)
    return settings


def test_a_closed_month_rerated_with_todays_code_bills_the_same(closed_months):
    engine = get_engine(closed_months.database_url)
    reports = [verify_period(engine, p) for p in ("2026-09", "2026-10", "2026-11")]
    assert [r.checked for r in reports] == [300, 300, 300]
    assert [r.differing for r in reports] == [[], [], []]
    with engine.begin() as conn:  # October really carries prior-period lines for the late usage
        prior = dict(conn.exec_driver_sql(
            "SELECT i.period, count(DISTINCT i.account_id) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
            "WHERE l.source_period = '2026-09' GROUP BY i.period").all())
    assert prior.get("2026-10", 0) > 0 and prior.get("2026-11", 0) > 0


def test_a_pricing_change_that_alters_history_is_listed_per_invoice(closed_months):
    text = (ROOT / "billing" / "catalog.toml").read_text()
    assert "overage_rate = 0.01\n" in text  # pay-as-you-go's rate, in the version that priced September
    changed = parse_catalog(text.replace("overage_rate = 0.01\n", "overage_rate = 0.011\n", 1))
    report = verify_period(get_engine(closed_months.database_url), "2026-09", catalog=changed)
    with get_engine(closed_months.database_url).begin() as conn:
        payg_usage = {r[0] for r in conn.exec_driver_sql(
            "SELECT DISTINCT i.account_id FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id "
            "WHERE i.period = '2026-09' AND i.plan = 'payg' AND l.kind = 'usage' AND l.quantity > 0").all()}
    assert payg_usage, "the demo month has pay-as-you-go usage"
    assert {d.account_id for d in report.differing} == payg_usage
    for d in report.differing:  # the usage lines at the old rate are gone, new ones appear (keys carry the rate)
        assert any(x.line.startswith("usage ") and "|0.01|" in x.line and x.now == "-" for x in d.differences), d


def test_a_month_whose_executions_are_archived_is_refused_by_name_until_restored(closed_months, tmp_path):
    from datetime import datetime, timezone

    from services import partitions
    from services.errors import Conflict

    engine = get_engine(closed_months.database_url)
    archived = partitions.archive(closed_months.database_url, OCT, tmp_path, datetime(2027, 6, 1, tzinfo=timezone.utc))
    sep = next(m for m in archived if m.period == "2026-09")
    assert sep.rows > 60_000
    with pytest.raises(Conflict, match=r"executions of 2026-09 are archived in .*executions-2026-09\.copy\.gz"):
        verify_period(engine, "2026-09")
    # October's invoices carry September's late usage: re-rating those needs September's executions too
    with pytest.raises(Conflict, match=r"executions of 2026-09 are archived .*carries its late usage"):
        verify_period(engine, "2026-10")

    partitions.restore(closed_months.database_url, sep.path)
    reports = [verify_period(engine, p) for p in ("2026-09", "2026-10")]
    assert [(r.checked, r.differing) for r in reports] == [(300, []), (300, [])]
