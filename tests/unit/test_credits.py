"""Hand-computed ledgers for the prepaid-credits core (billing/credits.py)."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from billing.catalog import load_catalog
from billing.credits import (
    CreditCharge,
    CreditsError,
    EntryKind,
    Unit,
    add_months,
    adjust,
    apply_usd_to_invoice,
    balance,
    consume,
    consume_from_remainders,
    credit_cost,
    credit_value,
    credits_pay_for,
    entitlement_with_credits,
    expire,
    expiry_notice_at,
    funded_value,
    grant_entry,
    ops_grant,
    purchase_grant,
    remaining,
    spendable,
    summarize,
)
from billing.entitlements import Reason

D = Decimal
UTC = timezone.utc
CAT = load_catalog().latest


def ts(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def grant(gid, amount, start, end, unit=Unit.credits, price=D("0")):
    return ops_grant(grant_id=gid, account_id="acme", unit=unit, amount=D(amount), granted_at=start,
                     expires_at=end, reason="test", price=price, expiry_months=12)


def book(grants, entries, *charges):
    """Book charges as the shell would (one call), return (entries after, consumptions)."""
    result = consume(grants, entries, [CreditCharge(e, t, c) for e, t, c in charges])
    return entries + [x for r in result for x in r.entries], result


def by_grant(consumption):
    return {e.grant_id: -e.amount for e in consumption.entries}


# ---- catalog, costs, which executions --------------------------------------------------------------
def test_catalog_sells_the_brief_packages_with_12_month_expiry():
    credits = CAT.credits
    assert credits.expiry_months == 12
    got = {code: (p.price, p.unit, p.amount) for code, p in credits.packages.items()}
    assert got == {
        "starter": (D("10"), "credits", D("1100")),
        "growth": (D("50"), "credits", D("6000")),
        "scale": (D("200"), "credits", D("26000")),
        "prepaid-50": (D("50"), "usd", D("55")),
    }


def test_credit_cost_by_class_sandbox_and_byok():
    assert credit_cost(CAT, "claude-haiku", byok=False, sandbox=False) == 1
    assert credit_cost(CAT, "claude-sonnet", byok=False, sandbox=False) == 5
    assert credit_cost(CAT, "claude-opus", byok=False, sandbox=False) == 25
    assert credit_cost(CAT, "claude-opus", byok=True, sandbox=False) == 1
    assert credit_cost(CAT, "claude-opus", byok=True, sandbox=True) == 2  # a sandbox try is a sandbox try


def test_credits_pay_only_for_what_would_be_charged_unless_credits_only():
    plan = dict(credits_only=False, sandbox=False, byok=False, pricing="executions")
    assert credits_pay_for(**{**plan, "billable": True})
    assert not credits_pay_for(**{**plan, "billable": False})  # inside the included quota
    assert not credits_pay_for(**{**plan, "billable": True, "sandbox": True})
    assert credits_pay_for(**{**plan, "billable": True, "byok": True})  # charged overage per execution
    assert not credits_pay_for(**{**plan, "billable": True, "byok": True, "pricing": "tokens"})
    assert credits_pay_for(credits_only=True, billable=False, sandbox=True, byok=False, pricing="executions")


# ---- grants --------------------------------------------------------------------------------------
def test_purchase_grant_id_comes_from_the_payment_and_expires_12_months_later():
    g = purchase_grant(CAT.credit_package("growth"), account_id="acme", purchase_id="pi_123",
                       paid_at=ts(2026, 1, 31, 9, 30), expiry_months=12)
    assert (g.id, g.unit, g.amount, g.price, g.package) == ("grant-pi_123", Unit.credits, D(6000), D(50), "growth")
    assert g.expires_at == ts(2027, 1, 31, 9, 30)
    assert add_months(ts(2028, 2, 29), 12) == ts(2029, 2, 28)
    assert add_months(ts(2026, 1, 31), 1) == ts(2026, 2, 28)
    assert expiry_notice_at(g) == ts(2027, 1, 24, 9, 30)


def test_ops_grant_needs_a_reason():
    with pytest.raises(CreditsError) as e:
        ops_grant(grant_id="g", account_id="acme", unit=Unit.credits, amount=D(5), granted_at=ts(2026, 1, 1),
                  reason=" ", expiry_months=12)
    assert e.value.field == "reason"


def test_grant_amounts_must_fit_their_unit():
    with pytest.raises(CreditsError) as e:
        grant("g", "1.5", ts(2026, 1, 1), ts(2026, 2, 1))
    assert e.value.field == "amount" and "whole numbers" in str(e.value)
    with pytest.raises(CreditsError) as e:
        grant("g", "1.005", ts(2026, 1, 1), ts(2026, 2, 1), unit=Unit.usd)
    assert e.value.field == "amount"
    with pytest.raises(CreditsError) as e:
        grant("g", "5", ts(2026, 2, 1), ts(2026, 2, 1))
    assert e.value.field == "expires_at"


# ---- overlapping grants with different expiries -----------------------------------------------------
def test_overlapping_grants_are_consumed_first_expiring_then_oldest_and_split_when_needed():
    a = grant("A", 10, ts(2026, 1, 1), ts(2026, 7, 1))
    b = grant("B", 8, ts(2026, 2, 1), ts(2026, 4, 1))    # expires first
    c = grant("C", 30, ts(2026, 3, 1), ts(2026, 7, 1))   # same expiry as A, younger
    grants = [a, b, c]
    entries = [grant_entry(g) for g in grants]
    std, heavy, fast = 5, 25, 1
    entries, r = book(grants, entries,
                      ("e1", ts(2026, 1, 15), std),     # only A valid          -> A 10-5 = 5
                      ("e2", ts(2026, 2, 10), std),     # B expires first       -> B 8-5 = 3
                      ("e3", ts(2026, 3, 10), std),     # B 3 + A 2 (A older than C) -> B 0, A 3
                      ("e4", ts(2026, 3, 15), heavy),   # A 3 + C 22            -> A 0, C 8
                      ("e5", ts(2026, 3, 20), heavy),   # only C 8 < 25: not credit-funded at all
                      ("e6", ts(2026, 3, 21), fast),    # C 7
                      ("e7", ts(2026, 4, 1), fast))     # B has expired (and is empty): C 6
    assert [by_grant(x) for x in r] == [
        {"A": 5}, {"B": 5}, {"B": 3, "A": 2}, {"A": 3, "C": 22}, {}, {"C": 1}, {"C": 1}]
    assert [x.funded for x in r] == [True, True, True, True, False, True, True]
    assert [remaining(g, entries) for g in grants] == [0, 0, 6]
    assert balance(entries, Unit.credits) == 6
    assert balance(entries, Unit.credits, at=ts(2026, 3, 9)) == 10 - 5 + 8 - 5 + 30
    assert spendable(grants, entries, Unit.credits, ts(2026, 3, 21, 12)) == 7 - 1  # e7 already booked
    # expiry: A and B have nothing left; C expires its 6, exactly once, on its expiry date
    assert expire(a, entries) is None and expire(b, entries) is None
    x = expire(c, entries)
    assert (x.id, x.kind, x.amount, x.occurred_at) == ("expire:C", EntryKind.expire, D(-6), ts(2026, 7, 1))
    entries.append(x)
    assert expire(c, entries) is None
    assert balance(entries, Unit.credits) == 0
    s = summarize(c, entries)
    assert (s.granted, s.consumed, s.expired, s.remaining) == (30, 24, 6, 0)


def test_consumption_takes_executions_in_time_order_whatever_order_they_come_in():
    g = grant("G", 6, ts(2026, 1, 1), ts(2027, 1, 1))
    entries = [grant_entry(g)]
    _, r = book([g], entries, ("late", ts(2026, 5, 2), 5), ("early", ts(2026, 5, 1), 5))
    assert [(x.event_id, x.funded) for x in r] == [("early", True), ("late", False)]


def test_a_retried_booking_writes_nothing_twice():
    g = grant("G", 20, ts(2026, 1, 1), ts(2027, 1, 1))
    entries, first = book([g], [grant_entry(g)], ("e1", ts(2026, 2, 1), 5))
    entries2, again = book([g], entries, ("e1", ts(2026, 2, 1), 5), ("e2", ts(2026, 2, 2), 5))
    assert again[0].already_booked and again[0].funded and again[0].entries == ()
    assert [e.id for e in entries2[len(entries):]] == ["consume:e2:G"]
    assert balance(entries2, Unit.credits) == 10


# ---- expiry at 23:59:59 with a late event inside the grace -----------------------------------------
def test_expiry_at_235959_counts_a_late_event_that_occurred_before_it():
    old = grant("OLD", 100, ts(2026, 1, 1), ts(2026, 12, 31, 23, 59, 59))
    new = grant("NEW", 1100, ts(2026, 6, 1), ts(2027, 6, 1), price=D("10.00"))
    grants = [old, new]
    entries = [grant_entry(old), grant_entry(new)]
    # arrives 2027-01-01 01:00: an execution after the expiry instant -> NEW
    entries, r1 = book(grants, entries, ("after", ts(2027, 1, 1, 0, 30), 5))
    # arrives 2027-01-01 20:00 (inside the 48 h grace): one second before expiry -> OLD; at the instant -> NEW
    entries, r2 = book(grants, entries, ("late", ts(2026, 12, 31, 23, 59, 58), 25),
                       ("on-the-dot", ts(2026, 12, 31, 23, 59, 59), 1))
    assert by_grant(r1[0]) == {"NEW": 5}
    assert [by_grant(x) for x in r2] == [{"OLD": 25}, {"NEW": 1}]
    # the expiry workflow wakes at expires_at + grace: it expires 100 - 25 = 75, dated the expiry instant
    x = expire(old, entries)
    assert (x.amount, x.occurred_at) == (D(-75), ts(2026, 12, 31, 23, 59, 59))
    entries.append(x)
    assert expire(old, entries) is None
    assert balance(entries, Unit.credits, at=ts(2026, 12, 31, 23, 59, 58)) == 75 + 1100
    assert balance(entries, Unit.credits, at=ts(2026, 12, 31, 23, 59, 59)) == 0 + 1100 - 1
    assert balance(entries, Unit.credits) == 1100 - 1 - 5
    # an event that occurred before the expiry but arrives after it finds OLD empty: NEW pays
    entries, r3 = book(grants, entries, ("very-late", ts(2026, 12, 31, 12), 1))
    assert by_grant(r3[0]) == {"NEW": 1}
    s = summarize(old, entries)
    assert (s.granted, s.consumed, s.expired, s.remaining) == (100, 25, 75, 0)


def test_ops_expire_now_expires_the_remainder_once_and_stops_consumption():
    g = grant("G", 50, ts(2026, 1, 1), ts(2027, 1, 1))
    entries, _ = book([g], [grant_entry(g)], ("e1", ts(2026, 3, 1), 5))
    x = expire(g, entries, at=ts(2026, 3, 2), reason="support #42")
    assert (x.amount, x.occurred_at, x.reference) == (D(-45), ts(2026, 3, 2), "support #42")
    entries.append(x)
    _, r = book([g], entries, ("e2", ts(2026, 3, 3), 1))
    assert not r[0].funded
    assert expire(g, entries) is None


def test_adjustments_only_take_away_and_never_overdraw():
    g = grant("G", 10, ts(2026, 1, 1), ts(2027, 1, 1))
    entries = [grant_entry(g)]
    a = adjust(g, entries, D(4), at=ts(2026, 2, 1), entry_id="adj-1", reason="chargeback")
    assert (a.kind, a.amount) == (EntryKind.adjust, D(-4))
    entries.append(a)
    with pytest.raises(CreditsError) as e:
        adjust(g, entries, D(7), at=ts(2026, 2, 1), entry_id="adj-2", reason="chargeback")
    assert e.value.field == "amount" and "only 6" in str(e.value)
    with pytest.raises(CreditsError) as e:
        adjust(g, entries, D(-1), at=ts(2026, 2, 1), entry_id="adj-2", reason="refund")
    assert e.value.field == "amount"
    with pytest.raises(CreditsError) as e:
        adjust(g, entries, D(1), at=ts(2025, 12, 31), entry_id="adj-2", reason="x")
    assert e.value.field == "at"


def test_an_overdrawn_or_orphan_ledger_is_refused():
    g = grant("G", 5, ts(2026, 1, 1), ts(2027, 1, 1))
    entries, _ = book([g], [grant_entry(g)], ("e1", ts(2026, 2, 1), 5))
    overdrawn = entries + [entries[-1].__class__(**{**entries[-1].__dict__, "id": "consume:e2:G", "reference": "e2"})]
    with pytest.raises(CreditsError, match="overdrawn"):
        consume([g], overdrawn, [])
    with pytest.raises(CreditsError, match="unknown grant"):
        consume([], entries, [])


# ---- entitlement -----------------------------------------------------------------------------------
def test_a_credits_only_account_is_refused_no_credits_when_it_cannot_pay_the_next_execution():
    ok = (True, Reason.ok)
    assert entitlement_with_credits(ok, credits_only=True, credits_pay=True, cost=1,
                                    spendable_credits=D(0)) == (False, Reason.no_credits)
    assert entitlement_with_credits(ok, credits_only=True, credits_pay=True, cost=5,
                                    spendable_credits=D(4)) == (False, Reason.no_credits)
    assert entitlement_with_credits(ok, credits_only=True, credits_pay=True, cost=1,
                                    spendable_credits=D(4)) == (True, Reason.ok)
    paused = (False, Reason.account_paused)
    assert entitlement_with_credits(paused, credits_only=True, credits_pay=True, cost=1,
                                    spendable_credits=D(100)) == paused


def test_credits_let_a_plan_account_run_past_its_blocked_quota():
    blocked = (False, Reason.plan_cap_reached_no_overage)
    assert entitlement_with_credits(blocked, credits_only=False, credits_pay=True, cost=5,
                                    spendable_credits=D(5)) == (True, Reason.ok)
    assert entitlement_with_credits(blocked, credits_only=False, credits_pay=True, cost=5,
                                    spendable_credits=D(4)) == blocked
    assert entitlement_with_credits(blocked, credits_only=False, credits_pay=False, cost=5,
                                    spendable_credits=D(50)) == blocked


# ---- the usd balance on an invoice -----------------------------------------------------------------
def test_usd_balance_pays_invoices_first_expiring_first_never_below_zero_and_once():
    bought = purchase_grant(CAT.credit_package("prepaid-50"), account_id="acme", purchase_id="pi_9",
                            paid_at=ts(2026, 9, 15), expiry_months=12)
    goodwill = grant("GW", "10.00", ts(2026, 10, 1), ts(2026, 12, 1), unit=Unit.usd)
    grants = [bought, goodwill]
    entries = [grant_entry(bought), grant_entry(goodwill)]
    close = ts(2026, 11, 3, 2)
    credit = apply_usd_to_invoice(grants, entries, invoice_id="inv-oct", total=D("29.00"), at=close)
    assert credit.applied == D("29.00")
    assert [(e.id, e.amount) for e in credit.entries] == [
        ("invoice:inv-oct:GW", D("-10.00")), ("invoice:inv-oct:grant-pi_9", D("-19.00"))]
    entries += credit.entries
    again = apply_usd_to_invoice(grants, entries, invoice_id="inv-oct", total=D("29.00"), at=close)
    assert (again.applied, again.entries, again.already_applied) == (D("29.00"), (), True)
    with pytest.raises(CreditsError) as e:  # a re-rated total below what was applied would go negative
        apply_usd_to_invoice(grants, entries, invoice_id="inv-oct", total=D("20.00"), at=close)
    assert e.value.field == "total"
    nov = apply_usd_to_invoice(grants, entries, invoice_id="inv-nov", total=D("40.00"), at=ts(2026, 12, 3, 2))
    assert nov.applied == D("36.00")  # 55 - 19: the invoice keeps $4.00 to pay
    entries += nov.entries
    assert balance(entries, Unit.usd) == 0
    assert apply_usd_to_invoice(grants, entries, invoice_id="inv-dec", total=D("0.00"), at=ts(2027, 1, 3)).applied == 0


# ---- what credits are worth ------------------------------------------------------------------------
def test_credit_value_is_the_purchase_price_of_the_grants_that_paid():
    starter = purchase_grant(CAT.credit_package("starter"), account_id="acme", purchase_id="p1",
                             paid_at=ts(2026, 1, 1), expiry_months=12)
    growth = purchase_grant(CAT.credit_package("growth"), account_id="acme", purchase_id="p2",
                            paid_at=ts(2026, 2, 1), expiry_months=12)
    gift = grant("GIFT", 100, ts(2026, 1, 1), ts(2026, 2, 1))
    assert round(credit_value(growth), 12) == D("0.008333333333")
    assert round(credit_value(starter), 12) == D("0.009090909091")
    assert credit_value(gift) == 0
    entries = [grant_entry(starter), grant_entry(growth),
               adjust(starter, [grant_entry(starter)], D(1097), at=ts(2026, 2, 2), entry_id="a", reason="r")]
    entries, r = book([starter, growth], entries, ("e1", ts(2026, 3, 1), 5))
    assert by_grant(r[0]) == {"grant-p1": 3, "grant-p2": 2}
    value = funded_value([starter, growth], r[0].entries)
    # 3 x $10/1,100 + 2 x $50/6,000 = 0.027272... + 0.016666... = 0.043939...
    assert round(value, 12) == D("0.043939393939")


def test_the_hot_path_refuses_a_remainder_its_grant_cannot_hold():
    g = grant("G", 10, ts(2026, 1, 1), ts(2027, 1, 1))
    with pytest.raises(CreditsError) as e:
        consume_from_remainders([g], {"G": D(11)}, set(), [])
    assert e.value.field == "remainders"
    [r] = consume_from_remainders([g], {"G": D(4)}, set(), [CreditCharge("e1", ts(2026, 2, 1), 5)])
    assert not r.funded
