"""Building blocks for tests: accounts and executions written through Tally's real code paths."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator

from activities.ingest import IngestReport, ingest_lines, known_models
from billing.catalog import load_catalog
from models.db import get_engine
from services import accounts

OCT_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
MODELS = ("claude-haiku", "gpt-4o-mini", "claude-sonnet", "gpt-4o")
# What usage_counters must hold (COUNTERS, in key order): the executions summed per account, UTC month,
# model, BYOK and sandbox (COUNTED_EXECUTIONS), the tokens of those without a recorded cost apart.
COUNTED_EXECUTIONS = (
    "SELECT account_id, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'), model, byok, sandbox, "
    "count(*), sum(input_tokens), sum(output_tokens), coalesce(sum(cost_usd), 0), "
    "coalesce(sum(input_tokens) FILTER (WHERE cost_usd IS NULL), 0), "
    "coalesce(sum(output_tokens) FILTER (WHERE cost_usd IS NULL), 0) "
    "FROM executions GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5")
COUNTERS = ("SELECT account_id, period, model, byok, sandbox, executions, input_tokens, output_tokens, cost_usd, "
            "uncosted_input_tokens, uncosted_output_tokens FROM usage_counters ORDER BY 1, 2, 3, 4, 5")


def create_account(url: str, account_id: str, plan: str, *, seats: int = 1, overage: bool = False,
                   email: str | None = None, billing_start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc),
                   pricing: str = "executions"):
    accounts.create_account(get_engine(url), account_id=account_id, plan=plan, seats=seats, overage_opt_in=overage,
                            email=email, billing_start=billing_start, pricing=pricing)


def event(account_id: str, n: int, occurred_at: datetime, model: str = "claude-haiku", **extra) -> dict:
    doc = {
        "event_id": f"{account_id}-{n}",
        "account_id": account_id,
        "agent_id": f"agent-{n % 3}",
        "skill_id": f"skill-{n % 5}",
        "model": model,
        "input_tokens": 1000 + n % 700,
        "output_tokens": 200 + n % 300,
        "byok": False,
        "sandbox": False,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
    }
    doc.update(extra)
    return doc


def events(account_id: str, count: int, *, start: datetime = OCT_START, step: timedelta = timedelta(minutes=7),
           models: tuple[str, ...] = MODELS, first: int = 0) -> Iterator[dict]:
    for i in range(first, first + count):
        yield event(account_id, i, start + step * i, models[i % len(models)])


def to_lines(docs: Iterable[dict]) -> Iterator[bytes]:
    for d in docs:
        yield json.dumps(d).encode()


def ingest(url: str, docs: Iterable[dict], now: datetime | None = None) -> IngestReport:
    """Ingest the docs; by default "now" is just after the latest event (never later than the real
    clock), so fixed-date data stays inside what billing sees (the late-usage look-back) whenever the
    suite runs."""
    docs = list(docs)
    if now is None:
        now = datetime.now(timezone.utc)
        stamps = []
        for d in docs:
            try:
                stamps.append(datetime.fromisoformat(d["occurred_at"]).astimezone(timezone.utc))
            except (KeyError, TypeError, ValueError):
                pass
        if stamps:
            now = min(now, max(stamps) + timedelta(minutes=1))
    return ingest_lines(url, to_lines(docs), known_models(load_catalog()), now=now)
