"""A chunk's invoices pushed together (``InvoicePusher.push_many``): each stage's keys recorded in one
commit before its calls, a crash anywhere in a stage ending with one Stripe object per step, and the
bookkeeping's commits independent of how many invoices the chunk holds."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import stripe
from sqlalchemy import event as sa_event

from activities.close import CloseActivities
from activities.deps import Deps
from activities.push import InvoicePusher
from gateways.stripe import StripeUnreachable
from models.db import get_engine
from models.schemas import AccountRange, CloseChunkInput
from models.settings import EMULATOR_API_KEY
from repositories import invoices
from tests.factories import create_account, events, ingest
from billing.periods import Period

OCT = Period.parse("2026-10")


def rated(settings, n: int) -> tuple[CloseActivities, list[int]]:
    """``n`` PAYG accounts with 3 + i executions each, rated for October (nothing pushed yet)."""
    docs = []
    for i in range(n):
        create_account(settings.database_url, f"acct-{i:02d}", "payg")
        docs += events(f"acct-{i:02d}", 3 + i)
    assert ingest(settings.database_url, docs).rejected == 0
    acts = CloseActivities(Deps(settings.model_copy(update={"stripe_max_network_retries": 0})))
    acts.rate_accounts(CloseChunkInput(period=str(OCT), index=0, accounts=AccountRange(after=None, upto="zzz", count=n)))
    with acts.engine.begin() as conn:
        ids = [r.id for r in invoices.list_invoices(conn, OCT)]
    return acts, ids


def stripe_invoices(emulator) -> dict[str, list]:
    client = stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator.url})
    out: dict[str, list] = {}
    for inv in client.v1.invoices.list(params={"limit": 100}).auto_paging_iter():
        out.setdefault(inv.metadata["tally_account_id"], []).append(inv)
    return out


def committed_keys(url: str) -> dict[str, str]:
    """idempotency key -> state, as another connection sees it (committed only)."""
    with get_engine(url).begin() as conn:
        return dict(conn.exec_driver_sql("SELECT idempotency_key, state FROM stripe_requests").all())


def test_every_call_of_a_stage_finds_its_key_committed_and_the_whole_stage_recorded_before_it(settings, emulator):
    acts, ids = rated(settings, 4)
    seen: list[tuple[str, dict]] = []
    lock = threading.Lock()
    gw = acts.gateway
    real_create, real_finalize = gw.invoices.create, gw.invoices.finalize

    def create(customer_id, ref, account_id, period, key):
        with lock:
            seen.append((key, committed_keys(settings.database_url)))
        return real_create(customer_id, ref, account_id, period, key)

    def finalize(stripe_invoice_id, key):
        with lock:
            seen.append((key, committed_keys(settings.database_url)))
        return real_finalize(stripe_invoice_id, key)

    gw.invoices.create, gw.invoices.finalize = create, finalize
    batch = InvoicePusher(acts.engine, gw).push_many(ids, workers=2)

    assert not batch.errors and {o.status for o in batch.outcomes.values()} == {"open"}
    creates = [(k, c) for k, c in seen if k.endswith(":create:a1")]
    finals = [(k, c) for k, c in seen if k.endswith(":finalize:a1")]
    assert len(creates) == 4 and len(finals) == 4
    for key, committed in creates:
        assert committed[key] == "started"
        # the stage's other keys were committed with it, before this call
        assert sum(1 for k in committed if k.endswith(":create:a1")) == 4
    for key, committed in finals:
        assert committed[key] == "started"
        assert sum(1 for k in committed if k.endswith(":finalize:a1")) == 4


def test_a_crash_or_a_lost_response_in_the_middle_of_a_stage_ends_with_one_stripe_invoice_each(settings, emulator):
    """The worker dies (an exception that is no Stripe error) right after Stripe created an invoice and
    before the stage recorded its outcome; then a response is lost after Stripe added an invoice's
    lines: each next push replays under the recorded key, so nothing exists twice."""
    acts, ids = rated(settings, 5)
    gw = acts.gateway
    real_create = gw.invoices.create
    made = []

    def create_then_die(customer_id, ref, account_id, period, key):
        made.append(real_create(customer_id, ref, account_id, period, key))
        if len(made) == 2:
            raise SystemError("worker killed")  # after Stripe committed the invoice
        return made[-1]

    gw.invoices.create = create_then_die
    with pytest.raises(SystemError):
        InvoicePusher(acts.engine, gw).push_many(ids, workers=1)
    assert len(stripe_invoices(emulator)) == 2

    gw.invoices.create = real_create
    emulator.add_fault(method="POST", path="/v1/invoices/*/add_lines", kind="drop_after_commit", count=1)
    again = InvoicePusher(acts.engine, gw).push_many(ids, workers=2)
    assert [type(e) for e in again.errors.values()] == [StripeUnreachable]  # the lost response
    final = InvoicePusher(acts.engine, gw).push_many(ids, workers=2)

    assert not final.errors
    found = stripe_invoices(emulator)
    assert sorted(found) == [f"acct-{i:02d}" for i in range(5)]
    with acts.engine.begin() as conn:
        ours = {r.account_id: r for r in invoices.list_invoices(conn, OCT)}
    for account_id, objs in found.items():
        assert len(objs) == 1, f"{account_id} has {len(objs)} Stripe invoices"
        assert objs[0].status == "open"
        assert Decimal(objs[0].total) / 100 == ours[account_id].total  # its lines once, not twice
        assert ours[account_id].status == "open" and ours[account_id].stripe_invoice_id == objs[0].id


def count_commits(engine) -> list[int]:
    n = [0]

    def on_commit(_conn) -> None:
        n[0] += 1

    sa_event.listen(engine, "commit", on_commit)
    return n


def test_the_bookkeeping_commits_do_not_grow_with_the_invoices_of_a_chunk(settings, emulator):
    acts, ids = rated(settings, 12)
    engine = acts.engine
    commits = count_commits(engine)
    InvoicePusher(engine, acts.gateway).push_many(ids[:3], workers=2)
    few = commits[0]
    commits[0] = 0
    InvoicePusher(engine, acts.gateway).push_many(ids[3:], workers=2)
    many = commits[0]

    assert few == many  # 3 invoices or 9: the same stages, each a fixed number of commits
    with engine.begin() as conn:
        assert {r.status for r in invoices.list_invoices(conn, OCT)} == {"open"}
