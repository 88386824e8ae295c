"""A hand-built August-October 2026 of eight accounts whose usage analytics are known (see
tests/integration/test_analytics.py for every answer; the analytics page test reuses it)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg

from billing.catalog import load_catalog
from models.db import get_engine, libpq_url
from services.accounts import change_account
from services.routing import set_skill
from tests.factories import create_account, event, ingest

D = Decimal
UTC = timezone.utc
CATALOG = load_catalog()
INGEST_NOW = datetime(2026, 11, 5, tzinfo=UTC)
AUG, SEP, OCT = (datetime(2026, m, 3, 12, tzinfo=UTC) for m in (8, 9, 10))


def when(month_start: datetime, i: int) -> datetime:
    return month_start + timedelta(minutes=7 * i)


class Month:
    """Executions of one hand-built dataset (event ids unique across the whole test)."""

    def __init__(self):
        self.docs: list[dict] = []

    def add(self, account: str, at: datetime, count: int, model: str = "claude-haiku", **extra) -> None:
        for _ in range(count):
            n = len(self.docs)
            doc = event(account, n, when(at, n), model, **extra)
            doc["event_id"] = f"ev-{n}"
            self.docs.append(doc)


def change(engine, account: str, plan: str, day: datetime) -> None:
    change_account(engine, account, plan=plan, effective=day, now=day, catalog=CATALOG)


def invoice(url: str, account: str, plan: str, total: str, status: str = "open") -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        version_id = conn.execute(
            "INSERT INTO catalog_versions (version, effective_from, digest, document) VALUES "
            "('test', '2026-01-01', 'x', '{}') ON CONFLICT (version) DO UPDATE SET digest = 'x' RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO invoices (account_id, period, period_start, period_end, status, plan, seats, overage_opt_in, "
            "catalog_version_id, subtotal, total) VALUES (%s, '2026-10', '2026-10-01', '2026-11-01', %s, %s, 1, "
            "false, %s, %s, %s)", (account, status, plan, version_id, D(total), D(total)))


def build_month(url: str):
    """Eight accounts over August to October 2026 (see each line); returns the engine."""
    engine = get_engine(url)
    for account, plan in (("a1", "free"), ("a2", "free"), ("a3", "pro"), ("a4", "free"), ("a5", "team"),
                          ("a6", "pro"), ("a7", "free"), ("a8", "payg")):
        create_account(url, account, plan)
    change(engine, "a4", "pro", datetime(2026, 8, 1, tzinfo=UTC))  # free -> pro -> team
    change(engine, "a2", "pro", datetime(2026, 9, 15, tzinfo=UTC))  # free -> pro
    change(engine, "a4", "team", datetime(2026, 10, 1, tzinfo=UTC))
    change(engine, "a3", "team", datetime(2026, 10, 10, tzinfo=UTC))  # pro -> team (never free)
    change(engine, "a5", "pro", datetime(2026, 10, 20, tzinfo=UTC))  # team -> pro: a downgrade
    set_skill(engine, CATALOG, "review", category="coding")
    set_skill(engine, CATALOG, "summarise", category="writing")

    m = Month()
    m.add("a3", AUG, 7, "claude-sonnet")
    # September: a1 1, a4 2, a3 3, a6 4, a2 5, a8 6, a5 10 (7 users)
    for account, n in (("a1", 1), ("a4", 2), ("a3", 3), ("a6", 4), ("a2", 5), ("a8", 6), ("a5", 10)):
        m.add(account, SEP, n, "gpt-4o-mini", skill_id="misc")
    # October: a1 1, a2 2, a3 3, a4 4, a5 100 (5 users); a6 stopped; a8 only sandbox tries (stopped)
    m.add("a1", OCT, 1, "claude-haiku", cost_usd="0.001", skill_id="misc")
    m.add("a1", OCT, 3, "claude-opus", sandbox=True, skill_id="misc")  # sandbox tries count nowhere
    m.add("a8", OCT, 2, "claude-opus", sandbox=True)
    m.add("a2", OCT, 2, "gpt-4o-mini", cost_usd="0.002", skill_id="misc")
    m.add("a3", OCT, 2, "claude-sonnet", cost_usd="0.01", skill_id="misc")
    m.add("a3", OCT, 1, "claude-sonnet", cost_usd="0.5", byok=True, skill_id="misc")  # BYOK costs us nothing
    for tokens in (100, 200, 300, 1000):  # uncosted: the rate card's cost, haiku $0.25 per 1M in
        m.add("a4", OCT, 1, "claude-haiku", input_tokens=tokens, output_tokens=0, skill_id="summarise")
    m.add("a5", OCT, 50, "gpt-4o-mini", input_tokens=1000, output_tokens=200, skill_id="review")
    m.add("a5", OCT, 40, "claude-sonnet", cost_usd="0.02", skill_id="review")
    m.add("a5", OCT, 10, "claude-sonnet", byok=True, skill_id="review")
    assert ingest(url, m.docs, now=INGEST_NOW).rejected == 0

    for account, plan, total in (("a1", "free", "0.00"), ("a2", "pro", "29.00"), ("a3", "team", "79.00"),
                                 ("a4", "team", "79.00"), ("a5", "pro", "29.00"), ("a6", "pro", "29.00")):
        invoice(url, account, plan, total, "no_charge" if total == "0.00" else "open")
    return engine


