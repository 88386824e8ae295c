"""The demo's realistic month (``tally demo``, the benchmarks): deterministic accounts and executions
(the same ids every time, so a second run adds nothing and bills nothing twice)."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Iterator

import orjson

from activities.ingest import ingest_lines, known_models
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from models.settings import Settings
from services.accounts import NewAccount, create_missing_accounts

# model -> share of executions (the platform's observed mix is one of the things Tally reports)
MODEL_MIX = {
    "claude-haiku": 30, "gpt-4o-mini": 25, "claude-sonnet": 15, "gpt-4o": 10,
    "groq-llama": 8, "deepseek-r1": 5, "ollama-local": 4, "claude-opus": 3,
}
PLAN_MIX = (("free", 40), ("pro", 30), ("team", 12), ("payg", 18))


def latest_closable_period(now: datetime, grace_hours: int) -> Period:
    p = Period.of(now).previous()
    while p.closes_at(grace_hours) > now:
        p = p.previous()
    return p


def demo_accounts(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    out = []
    plans = [p for p, w in PLAN_MIX for _ in range(w)]
    for i in range(n):
        plan = plans[(i * 37) % len(plans)]
        seats = rng.randint(1, 5) if plan == "team" else 1
        overage = plan in ("pro", "team") and rng.random() < 0.5
        out.append(dict(id=f"demo-{i:04d}", plan=plan, seats=seats, overage=overage,
                        email=f"billing+{i:04d}@example.com"))
    return out


def _raw_volume(rng: random.Random, plan: str, seats: int) -> float:
    """Executions per month by plan, shaped so ~1,000 per account on average (the default demo):
    a quarter of free accounts hit their cap, ~7% of Pro go past 5,000, a few PAYG accounts
    would pay less on Pro (and get moved), team seats stay well inside their quota."""
    if plan == "free":
        return rng.uniform(10, 150)
    if plan == "pro":
        return rng.lognormvariate(math.log(1000), 1.1)
    if plan == "team":
        return rng.lognormvariate(math.log(700), 0.8) * seats
    return rng.lognormvariate(math.log(400), 1.2)


def demo_events(accounts: list[dict], period: Period, total: int, seed: int = 11) -> Iterator[bytes]:
    rng = random.Random(seed)
    raw = [_raw_volume(rng, a["plan"], a["seats"]) for a in accounts]
    scale = total / sum(raw)
    counts = [int(r * scale) for r in raw]
    counts[0] += total - sum(counts)
    models = list(MODEL_MIX)
    weights = list(MODEL_MIX.values())
    span = (period.end - period.start).total_seconds()
    for account, count in zip(accounts, counts):
        byok_share = 0.3 if account["plan"] == "team" else 0.05
        picks = rng.choices(models, weights, k=count)
        for k in range(count):
            at = period.start + timedelta(seconds=rng.random() * span)
            yield orjson.dumps({
                "event_id": f"demo-{period}-{account['id']}-{k:06d}",
                "account_id": account["id"],
                "agent_id": f"agent-{rng.randint(1, 6)}",
                "skill_id": f"skill-{rng.randint(1, 20)}",
                "model": picks[k],
                "input_tokens": int(rng.lognormvariate(7.5, 0.6)),
                "output_tokens": int(rng.lognormvariate(6.0, 0.7)),
                "byok": rng.random() < byok_share,
                "sandbox": rng.random() < 0.02,
                "occurred_at": at.isoformat(),
            })


def seed_month(settings: Settings, period: Period, n_accounts: int, n_executions: int):
    url = settings.effective_database_url()
    accts = demo_accounts(n_accounts)
    # Accounts already there keep their terms (a close may have moved one from PAYG to Pro).
    created = create_missing_accounts(
        get_engine(url),
        [NewAccount(a["id"], a["plan"], a["seats"], a["overage"], a["email"]) for a in accts],
        billing_start=period.start - timedelta(days=31))
    report = ingest_lines(url, demo_events(accts, period, n_executions), known_models(load_catalog()))
    return created, len(accts), report


def stripe_invoice_count(settings: Settings, period: Period) -> int:
    from gateways.stripe import StripeGateway

    return StripeGateway(settings).invoices.count_for_period(str(period))
