"""What the payout tests share: creators with (emulated) Connect accounts, earnings written directly,
the payout activities run as Temporal runs them (with the attempt number a retry would have)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from decimal import Decimal

import stripe
from temporalio.testing import ActivityEnvironment

from activities.deps import Deps
from activities.payouts import PayoutActivities
from billing.catalog import default_catalog
from gateways.stripe import StripeGateway
from models.db import get_engine
from models.schemas import DecidePayoutsInput, PayoutActionInput, PayPayoutsInput
from models.settings import EMULATOR_API_KEY
from models.tables import creator_earnings
from services import payouts as service


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def deps(settings, clock: Clock | None = None) -> Deps:
    """No SDK retries: each fault reaches the ledger, as a Temporal activity retry would see it."""
    gw = StripeGateway(settings.model_copy(update={"stripe_max_network_retries": 0}))
    return Deps(settings, engine=get_engine(settings.database_url), stripe=gw, catalog=default_catalog(),
                clock=clock or Clock(utc(2026, 12, 5, 6)))


def run_activity(fn, arg, attempt: int = 1):
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env.run(fn, arg)


def creator(settings, emulator, creator_id: str, *, onboard: bool = True, enable: bool = True) -> str | None:
    """A creator; with ``onboard`` an Express account in the emulator, enabled unless ``enable`` is False."""
    engine = get_engine(settings.database_url)
    service.create_creator(engine, creator_id, f"{creator_id}@example.com")
    if not onboard:
        return None
    view = service.onboard_creator(engine, StripeGateway(settings), settings, creator_id)
    if enable:
        emulator.enable_account(view["stripe_account_id"])
    return view["stripe_account_id"]


def earn(settings, creator_id: str, amount: str, payable_from: datetime, tag: str = "x") -> None:
    """An earning payable from ``payable_from`` (as credit-funded ones are), written directly."""
    with get_engine(settings.database_url).begin() as conn:
        conn.execute(creator_earnings.insert().values(
            id=f"test:{creator_id}:{tag}:{payable_from.isoformat()}", creator_id=creator_id, account_id="acct",
            period=f"{payable_from:%Y-%m}", source="test", amount=Decimal(amount), revenue=Decimal(amount),
            executions=1, skills=[], payable_from=payable_from))


def decide(d: Deps, period: str, attempt: int = 1):
    return run_activity(PayoutActivities(d).decide_payouts, DecidePayoutsInput(period=period), attempt)


def pay(d: Deps, period: str, ids: list[str], attempt: int = 1):
    return run_activity(PayoutActivities(d).pay_payouts, PayPayoutsInput(period=period, payout_ids=ids), attempt)


def retry(d: Deps, payout_id: str, attempt: int = 1):
    return run_activity(PayoutActivities(d).retry_payout, PayoutActionInput(payout_id=payout_id, by="ops"), attempt)


def stripe_client(emulator) -> stripe.StripeClient:
    return stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url})


def transfers(emulator, group: str | None = None) -> list:
    params = {"limit": 100} | ({"transfer_group": group} if group else {})
    return list(stripe_client(emulator).v1.transfers.list(params=params).auto_paging_iter())


def transfer_posts(emulator) -> list[dict]:
    return [r for r in emulator.requests() if r["method"] == "POST" and r["path"] == "/v1/transfers"]


# ---- Stripe webhook deliveries, signed as Stripe signs them ---------------------------------------------
def deliver_event(settings, event_type: str, obj: dict, created: datetime, event_id: str | None = None):
    """Deliver ``obj`` as a signed ``event_type`` event through the webhook service (which runs every
    registered handler in the transaction that records the event once)."""
    import json
    import time
    import uuid

    from gateways.stripe.webhooks import sign_payload
    from models.settings import EMULATOR_WEBHOOK_SECRET
    from services.webhooks import receive

    event = {"id": event_id or f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": event_type,
             "created": int(created.timestamp()), "livemode": False, "data": {"object": obj}}
    payload = json.dumps(event).encode()
    signature = sign_payload(payload, EMULATOR_WEBHOOK_SECRET, int(time.time()))
    return receive(get_engine(settings.database_url), payload, signature, EMULATOR_WEBHOOK_SECRET, created)


def invoice_paid(settings, stripe_invoice_id: str, paid_at: datetime, amount_cents: int, charge: str | None = None):
    return deliver_event(settings, "invoice.paid", {
        "id": stripe_invoice_id, "object": "invoice", "status": "paid", "amount_paid": amount_cents,
        "charge": charge, "status_transitions": {"paid_at": int(paid_at.timestamp())}}, paid_at)
