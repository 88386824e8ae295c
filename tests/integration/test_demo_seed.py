"""The demo's seeding is repeatable: a second run adds nothing, even after a close changed terms."""

from __future__ import annotations

from datetime import datetime, timezone

from billing.periods import Period
from models.db import get_engine
from repositories import accounts
from services.accounts import change_terms
from workers.demo import seed_month


def test_seeding_twice_adds_nothing_even_after_an_account_changed_plan(settings):
    period = Period.parse("2026-10")
    created, total, report = seed_month(settings, period, 20, 2_000)
    assert (created, total, report.accepted, report.rejected) == (20, 20, 2_000, 0)
    with get_engine(settings.database_url).begin() as conn:
        payg = next(a for a in accounts.list_accounts(conn) if a.plan == "payg")
        change_terms(conn, account_id=payg.id, effective_from=datetime(2026, 11, 1, tzinfo=timezone.utc),
                     reason="auto-convert: test", plan="pro", overage_opt_in=True)
    created, total, report = seed_month(settings, period, 20, 2_000)
    assert (created, total, report.accepted, report.duplicates) == (0, 20, 0, 2_000)
