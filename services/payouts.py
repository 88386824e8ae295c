"""Creator revenue share and payouts: the operations behind ``tally creators``, ``tally skills premium``,
``tally payouts`` and ``tally invoices mark-paid``, and the Stripe webhook handlers of the capability.

Each operation loads through ``repositories.payouts``, decides with ``billing.payouts`` and writes in one
transaction. The webhook handlers run in the transaction that records the event once
(``services/webhooks.py``); Stripe redelivers and reorders, so each acts on the state the event names:
- ``invoice.paid``: the invoice's earnings become payable from its paid time (first report wins);
- ``charge.refunded``: cumulative refunded / charged of each creator's earnings on that invoice is taken
  back as a negative adjustment (the difference from what earlier refunds took);
- ``charge.dispute.created``: the disputed fraction is taken back the same way (once per dispute);
- ``charge.dispute.closed``: a dispute won (or an inquiry closed without a chargeback) gives back what
  its ``created`` took, once; a dispute lost keeps it;
- ``account.updated``: the creator's Connect account state (charges, payouts, ``transfers``), ignoring
  an event older than the one applied.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import Connection, Engine
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from activities.payouts import payout_view
from billing.catalog import Catalog
from billing.payouts import CreatorAdjustment, Earning, PayoutError, SkillRevenue, premium_skill, refund_adjustments
from billing.periods import Period
from gateways.stripe.connect import account_state
from gateways.stripe.ledger import StripeLedger
from models.schemas import PayoutCancel, PayoutInput, PayoutRetry, PayoutRunInput, PayoutRunResult, PayoutView
from models.settings import Settings
from repositories import payouts as repo
from repositories import stripe_events
from repositories.invoices import get_invoice
from services.errors import Conflict, InvalidInput, NotFound, root_cause
from services.inputs import check_id, parse_period
from services.temporal import TemporalClient, follow
from workflows.payouts import PayoutRunWorkflow, PayoutWorkflow, payouts_workflow_id
from workflows.search_attributes import BILLING_PERIOD, PAYOUT_STATUS

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PAYOUT_ID = re.compile(r"^payout-(?P<creator>.+)-(?P<period>\d{4}-\d{2})$")


def _cents(value) -> Decimal:
    return (Decimal(int(value or 0)) / 100).quantize(Decimal("0.01"))


def _ts(epoch) -> datetime | None:
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc) if epoch else None


# ---- creators and premium skills ----------------------------------------------------------------------
def create_creator(engine: Engine, creator_id: str, email: str) -> dict:
    check_id(creator_id, "creator_id")
    if not EMAIL.match(email or ""):
        raise InvalidInput("email", f"must be an e-mail address, got {email!r}")
    with engine.begin() as conn:
        if not repo.insert_creator(conn, creator_id, email):
            existing = repo.get_creator(conn, creator_id)
            if existing.email != email:
                raise Conflict(f"creator {creator_id} exists with another e-mail ({existing.email})")
        return creator_view(repo.get_creator(conn, creator_id))


def creator_view(row) -> dict:
    return {"creator_id": row.id, "email": row.email, "stripe_account_id": row.stripe_account_id,
            "charges_enabled": row.charges_enabled, "payouts_enabled": row.payouts_enabled,
            "details_submitted": row.details_submitted, "transfers": row.transfers_capability}


def onboard_creator(engine: Engine, gateway, settings: Settings, creator_id: str, clock=None) -> dict:
    """The creator's Express account (created once: a recorded Stripe call keyed by the creator, found by
    metadata if its key was forgotten) and a fresh onboarding link."""
    with engine.begin() as conn:
        row = repo.get_creator(conn, creator_id)
    if row is None:
        raise NotFound(f"no creator {creator_id} (tally creators create {creator_id} --email E)")
    account_id = row.stripe_account_id
    if account_id is None:
        account_id = StripeLedger(engine, clock).perform(
            subject=f"creator:{creator_id}", step="connect-account", identity=f"creator:{creator_id}",
            call=lambda key: gateway.connect.create_account(creator_id, row.email, key),
            lookup=lambda: gateway.connect.find_account(creator_id))
        with engine.begin() as conn:
            repo.set_stripe_account(conn, creator_id, account_id)
    url = gateway.connect.onboarding_link(account_id, settings.connect_refresh_url, settings.connect_return_url)
    with engine.begin() as conn:
        view = creator_view(repo.get_creator(conn, creator_id))
    return view | {"onboarding_url": url}


def mark_premium(engine: Engine, catalog: Catalog, skill_id: str, creator_id: str, *, share: bool,
                 fixed_price: str | None, at: datetime) -> dict:
    """Mark a skill premium (``share`` or a fixed price checked against the catalog's range). The close
    applies the terms in force when it rates."""
    terms = catalog.at(at).creator_terms()
    try:
        skill = premium_skill(skill_id, creator_id, terms, share=share, fixed_price=fixed_price)
    except PayoutError as err:
        raise InvalidInput.of(err) from None
    with engine.begin() as conn:
        if repo.get_creator(conn, creator_id) is None:
            raise NotFound(f"no creator {creator_id} (tally creators create {creator_id} --email E)")
        repo.upsert_premium_skill(conn, skill)
    return {"skill_id": skill.skill_id, "creator_id": skill.creator_id, "model": skill.model.value,
            "fixed_price": None if skill.fixed_price is None else str(skill.fixed_price)}


# ---- invoices paid (webhook or ops), refunds and disputes ----------------------------------------------
def mark_invoice_paid(engine: Engine, invoice_id: int, now: datetime, paid_at: datetime | None = None) -> dict:
    """Ops: the invoice was paid out of band. Its creators' earnings become payable from ``paid_at``."""
    with engine.begin() as conn:
        inv = get_invoice(conn, invoice_id)
        if inv is None:
            raise NotFound(f"no invoice {invoice_id}")
        if inv.status not in ("open", "paid"):
            raise Conflict(f"invoice {invoice_id} is {inv.status}: only an open (pushed, final) invoice can be paid")
        new = repo.record_invoice_payment(conn, invoice_id, paid_at=paid_at or now, source="ops",
                                          stripe_charge_id=None, amount=inv.total)
        pay = repo.invoice_payment(conn, invoice_id)
    return {"invoice_id": invoice_id, "paid_at": pay.paid_at.isoformat(), "source": pay.source, "recorded_now": new}


def on_invoice_paid(conn: Connection, event: dict, now: datetime) -> None:
    obj = event["data"]["object"]
    inv = repo.invoice_by_stripe_id(conn, obj.get("id") or "")
    if inv is None:
        return  # not an invoice Tally pushed
    paid_at = _ts((obj.get("status_transitions") or {}).get("paid_at")) or _ts(event.get("created")) or now
    repo.record_invoice_payment(conn, inv.id, paid_at=paid_at, source="webhook", stripe_charge_id=obj.get("charge"),
                                amount=_cents(obj.get("amount_paid", 0)))


def _earnings(rows) -> list[Earning]:
    return [Earning(r.id, r.creator_id, r.source, r.amount, r.revenue, r.executions,
                    tuple(SkillRevenue(s["skill_id"], s["executions"], Decimal(s["revenue"])) for s in r.skills),
                    invoice_id=str(r.invoice_id)) for r in rows]


def _take_back(conn: Connection, inv, *, charged: Decimal, refunded: Decimal, label: str, cumulative_prefix: str | None,
               at: datetime, cumulative_labels: tuple[str, ...] = ()) -> None:
    """``refunded`` of ``charged`` taken back from the invoice's earnings, less what earlier adjustments
    already took: those whose label (``refund:<invoice>:<label>:<creator>``) starts with
    ``cumulative_prefix`` or is one of ``cumulative_labels``."""
    earnings = _earnings(repo.invoice_earnings_of(conn, inv.id))
    if not earnings or charged <= 0:
        return
    exact = tuple(f"refund:{inv.id}:{x}:" for x in cumulative_labels)
    previous = [a for a in repo.adjustments_of_invoice(conn, inv.id)
                if (cumulative_prefix is not None and f":{cumulative_prefix}" in a.id) or (bool(exact) and a.id.startswith(exact))]
    prev = [CreatorAdjustment(a.id, a.creator_id, a.amount, a.occurred_at, a.reason, str(inv.id)) for a in previous]
    adjustments = refund_adjustments(str(inv.id), earnings, charged=charged, refunded=min(refunded, charged),
                                     previous=prev, refund_id=label, at=at)
    repo.insert_adjustments(conn, [dict(id=a.id, creator_id=a.creator_id, invoice_id=inv.id, amount=a.amount,
                                        occurred_at=a.occurred_at, reason=a.reason) for a in adjustments])


def _invoice_of(conn: Connection, stripe_invoice_id: str | None, charge_id: str | None):
    inv = repo.invoice_by_stripe_id(conn, stripe_invoice_id) if stripe_invoice_id else None
    return inv if inv is not None or not charge_id else repo.invoice_of_charge(conn, charge_id)


def on_charge_refunded(conn: Connection, event: dict, now: datetime) -> None:
    """Refunds are cumulative on a charge (``amount_refunded``): take back the difference."""
    obj = event["data"]["object"]
    inv = _invoice_of(conn, obj.get("invoice"), obj.get("id"))
    if inv is None:
        return
    _take_back(conn, inv, charged=_cents(obj.get("amount")), refunded=_cents(obj.get("amount_refunded")),
               label=f"refund-{event['id']}", cumulative_prefix="refund-", at=_ts(event.get("created")) or now)


def on_dispute_created(conn: Connection, event: dict, now: datetime) -> None:
    """A dispute takes back its fraction of the charge at once (``charge.dispute.closed`` gives it back
    when the dispute is won)."""
    obj = event["data"]["object"]
    inv = _invoice_of(conn, None, obj.get("charge"))
    if inv is None:
        return
    if stripe_events.dispute_closed_status(conn, obj.get("id") or "") in _DISPUTE_GIVEN_BACK:
        return  # delivered after the dispute was closed in the merchant's favour: nothing to take back
    pay = repo.invoice_payment(conn, inv.id)
    charged = pay.amount if pay is not None and pay.amount > 0 else inv.total
    _take_back(conn, inv, charged=charged, refunded=_cents(obj.get("amount")), label=f"dispute-{obj.get('id')}",
               cumulative_prefix=None, at=_ts(event.get("created")) or now)


# Dispute outcomes after which the funds return to the merchant (Stripe's dispute statuses): ``won``, and
# ``warning_closed`` (an inquiry closed without becoming a chargeback). ``lost`` keeps what was taken back.
_DISPUTE_GIVEN_BACK = ("won", "warning_closed")


def on_dispute_closed(conn: Connection, event: dict, now: datetime) -> None:
    """A dispute won gives back to each creator what its ``charge.dispute.created`` took: the cumulative
    take-back of this dispute goes to zero (``refund_adjustments`` against the dispute's own earlier
    adjustments), so a replayed or second ``closed`` event gives nothing more, and a dispute that took
    nothing (created before the invoice's earnings, or never seen) gives nothing back."""
    obj = event["data"]["object"]
    if obj.get("status") not in _DISPUTE_GIVEN_BACK:
        return
    inv = _invoice_of(conn, None, obj.get("charge"))
    if inv is None:
        return
    pay = repo.invoice_payment(conn, inv.id)
    charged = pay.amount if pay is not None and pay.amount > 0 else inv.total
    dispute = f"dispute-{obj.get('id')}"
    _take_back(conn, inv, charged=charged, refunded=Decimal(0), label=f"{dispute}-won", cumulative_prefix=None,
               cumulative_labels=(dispute, f"{dispute}-won"), at=_ts(event.get("created")) or now)


def on_account_updated(conn: Connection, event: dict, now: datetime) -> None:
    state = account_state(event["data"]["object"])
    repo.update_account_state(conn, state.account_id, charges_enabled=state.charges_enabled,
                              payouts_enabled=state.payouts_enabled, details_submitted=state.details_submitted,
                              transfers=state.transfers if state.transfers in ("active", "inactive", "pending")
                              else "inactive", at=_ts(event.get("created")) or now)


# ---- payouts ---------------------------------------------------------------------------------------------
def list_payouts(engine: Engine, period_text: str | None = None, status: str | None = None,
                 creator_id: str | None = None) -> list[PayoutView]:
    from models.tables import PAYOUT_STATUSES

    if status is not None and status not in PAYOUT_STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(PAYOUT_STATUSES)}")
    period = parse_period(period_text) if period_text else None
    with engine.begin() as conn:
        return [payout_view(r) for r in repo.list_payouts(conn, period, status, creator_id)]


def show_payout(engine: Engine, payout_id: str) -> PayoutView:
    with engine.begin() as conn:
        row = repo.get_payout(conn, payout_id)
    if row is None:
        raise NotFound(f"no payout {payout_id}")
    return payout_view(row)


def statement(engine: Engine, creator_id: str, period_text: str) -> dict:
    """A creator's month: what became payable in it (per skill: executions, revenue, earned), the
    adjustments, the balance carried in and out, and the payout."""
    period = parse_period(period_text)
    with engine.begin() as conn:
        creator = repo.get_creator(conn, creator_id)
        if creator is None:
            raise NotFound(f"no creator {creator_id}")
        rows = repo.statement_rows(conn, creator_id, period)
        adjustments = repo.adjustments_in(conn, creator_id, period)
        payout = repo.get_payout(conn, f"payout-{creator_id}-{period}")
        unpaid = repo.pending_earnings(conn, creator_id)
    skills: dict[str, dict] = {}
    for r in rows:
        for s in r.skills:
            share = Decimal(s["revenue"])
            entry = skills.setdefault(s["skill_id"], {"executions": 0, "revenue": Decimal("0")})
            entry["executions"] += s["executions"]
            entry["revenue"] += share
    return {
        "creator_id": creator_id, "period": str(period),
        "skills": [{"skill_id": k, "executions": v["executions"], "revenue": str(v["revenue"].quantize(Decimal("0.01")))}
                   for k, v in sorted(skills.items())],
        "earnings": [{"source": r.source, "executions": r.executions, "revenue": str(Decimal(r.revenue).quantize(Decimal("0.01"))),
                      "earned": str(r.amount), "payable_at": r.payable_at.isoformat()} for r in rows],
        "earned": str(sum((r.amount for r in rows), Decimal("0.00"))),
        "adjustments": [{"amount": str(a.amount), "reason": a.reason, "at": a.occurred_at.isoformat()} for a in adjustments],
        "not_payable_yet": str(sum((e.amount for e in unpaid), Decimal("0.00"))),
        "payout": None if payout is None else payout_view(payout).model_dump(mode="json"),
    }


async def run_payouts(temporal: TemporalClient, settings: Settings, period_text: str) -> PayoutRunResult:
    """``payouts-YYYY-MM`` now (a running one is joined; a finished one is reported, not run again)."""
    period = parse_period(period_text)
    client = await temporal()
    wid = payouts_workflow_id(str(period))
    try:
        handle = await client.start_workflow(
            PayoutRunWorkflow.run, PayoutRunInput(period=str(period), page_size=settings.payouts_page_size,
                                                  concurrency=settings.payouts_concurrency),
            id=wid, task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, str(period))]))
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle_for(PayoutRunWorkflow.run, wid)  # finished: its result, not a new run
    return await follow(handle, wid)


def _check_payout_id(payout_id: str) -> re.Match:
    m = PAYOUT_ID.match(payout_id or "")
    if m is None:
        raise InvalidInput("payout_id", f"must be payout-<creator>-<YYYY-MM>, got {payout_id!r}")
    return m


async def _update(temporal: TemporalClient, settings: Settings, engine: Engine, payout_id: str, update, body) -> PayoutView:
    """Send an ops update to the payout's workflow, starting it (with the payout's current status) if it
    is not running: its validator, not this function, decides whether the action is allowed."""
    m = _check_payout_id(payout_id)
    row_view = show_payout(engine, payout_id)
    if row_view.status == "carried":
        raise Conflict(f"{payout_id} carried its balance ({row_view.message}): there is no transfer to retry or cancel")
    if row_view.status == "pending":
        raise Conflict(f"{payout_id} is pending: payouts-{m['period']} is paying it")
    client = await temporal()
    handle = await client.start_workflow(
        PayoutWorkflow.run,
        PayoutInput(payout_id=payout_id, creator_id=m["creator"], period=m["period"],
                    status=row_view.status,
                    reason=row_view.failure_reason),
        id=payout_id, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes([SearchAttributePair(PAYOUT_STATUS, row_view.status),
                                                 SearchAttributePair(BILLING_PERIOD, m["period"])]))
    try:
        return await handle.execute_update(update, body)
    except WorkflowUpdateFailedError as err:
        raise Conflict(f"{payout_id}: {root_cause(err)}") from None


async def retry_payout(temporal: TemporalClient, settings: Settings, engine: Engine, payout_id: str, by: str) -> PayoutView:
    if not (by or "").strip():
        raise InvalidInput("by", "required (who retries)")
    return await _update(temporal, settings, engine, payout_id, PayoutWorkflow.retry, PayoutRetry(by=by))


async def cancel_payout(temporal: TemporalClient, settings: Settings, engine: Engine, payout_id: str, by: str,
                        reason: str) -> PayoutView:
    for field, value in (("by", by), ("reason", reason)):
        if not (value or "").strip():
            raise InvalidInput(field, "required")
    return await _update(temporal, settings, engine, payout_id, PayoutWorkflow.cancel, PayoutCancel(by=by, reason=reason))


__all__ = ["create_creator", "onboard_creator", "mark_premium", "mark_invoice_paid", "on_invoice_paid",
           "on_charge_refunded", "on_dispute_created", "on_dispute_closed", "on_account_updated", "list_payouts", "show_payout",
           "statement", "run_payouts", "retry_payout", "cancel_payout", "Period"]
