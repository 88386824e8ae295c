"""``tally demo``: the main job end to end on embedded defaults.

Starts the local stack, seeds a realistic month (deterministic: the same accounts and event ids every
time, so a second run adds nothing and bills nothing twice), closes it through Temporal and prints a
summary with the Temporal UI address of the run.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterator

import click
import orjson

from activities import repository as repo
from activities.ingest import ingest_lines, known_models
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from models.settings import Settings, get_settings

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
    billing_start = period.start - timedelta(days=31)
    created = 0
    with get_engine(url).begin() as conn:
        # Accounts already there keep their terms (a close may have moved one from PAYG to Pro).
        existing = repo.existing_account_ids(conn, [a["id"] for a in accts])
        for a in accts:
            if a["id"] in existing:
                continue
            created += repo.create_account(conn, account_id=a["id"], plan=a["plan"], seats=a["seats"],
                                           overage_opt_in=a["overage"], email=a["email"],
                                           billing_starts_at=billing_start)
    report = ingest_lines(url, demo_events(accts, period, n_executions), known_models(load_catalog()))
    return created, len(accts), report


def stripe_invoice_count(settings: Settings, period: Period) -> int:
    from gateways.stripe import StripeGateway

    return StripeGateway(settings).invoices.count_for_period(str(period))


def run_demo(settings: Settings, *, n_accounts: int, n_executions: int, period: str | None) -> None:
    from workers.devstack import stack_up
    from workers.operations import run_close
    from workers.schedules import apply_schedules

    click.echo("== local stack")
    stack_up(settings, echo=lambda m: click.echo(f"   {m}"))
    get_settings.cache_clear()
    settings = get_settings()  # now with the stack's addresses

    p = Period.parse(period) if period else latest_closable_period(
        datetime.now(timezone.utc), settings.late_usage_grace_hours)
    click.echo(f"== seeding {p}: {n_accounts:,} accounts, {n_executions:,} executions")
    created, total_accounts, report = seed_month(settings, p, n_accounts, n_executions)
    click.echo(f"   accounts: {created} new, {total_accounts - created} already there")
    click.echo(f"   executions: accepted {report.accepted:,}, duplicate {report.duplicates:,}, "
               f"rejected {report.rejected:,} ({report.lines / max(report.seconds, 1e-9):,.0f} lines/s)")

    click.echo("== schedules")
    for line in asyncio.run(apply_schedules(settings)):
        click.echo(f"   {line}")

    click.echo(f"== monthly close {p} (Temporal workflow close-{p})")
    result = asyncio.run(run_close(settings, str(p), progress=True))

    with get_engine(settings.effective_database_url()).begin() as conn:
        totals = repo.period_totals(conn, p)
        converted = repo.auto_conversions(conn, p)
    click.echo("")
    click.echo(f"{'plan':<8} {'accounts':>8} {'charged':>8} {'executions':>12} {'total':>14} {'in Stripe':>9}")
    grand = Decimal("0.00")
    for t in totals:
        grand += t.total
        click.echo(f"{t.plan:<8} {t.accounts:>8,} {t.invoices:>8,} {t.executions:>12,} "
                   f"{'$' + format(t.total, ',.2f'):>14} {t.pushed:>9,}")
    click.echo(f"{'all':<8} {sum(t.accounts for t in totals):>8,} {sum(t.invoices for t in totals):>8,} "
               f"{sum(t.executions for t in totals):>12,} {'$' + format(grand, ',.2f'):>14} "
               f"{sum(t.pushed for t in totals):>9,}")
    click.echo("")
    click.echo(f"this run: {result.invoices_rated:,} invoices rated, {result.pushed:,} pushed to Stripe, "
               f"{result.already_pushed:,} already there, {result.invoices_frozen:,} left as they were, "
               f"{len(result.failed)} failed, {result.stripe_calls:,} Stripe calls")
    click.echo(f"pay-as-you-go accounts moved to Pro from {p.next()} (Pro would have been cheaper): {converted}")
    click.echo(f"Stripe invoices for {p}: {stripe_invoice_count(settings, p):,} "
               f"({'emulator ' + settings.effective_stripe()[1] if not settings.stripe_api_key else 'Stripe test mode'})")
    ui = settings.temporal_ui_url
    click.echo(f"Temporal UI: {ui}/namespaces/{settings.temporal_namespace}/workflows/close-{p}")
    click.echo(f"   find one account's run: {ui}/namespaces/{settings.temporal_namespace}/workflows"
               f"?query=BillingPeriod%3D%27{p}%27")
    click.echo("Try: tally invoices list --period " + str(p) + " | tally invoices show demo-0001 --period " + str(p))
