"""Property tests of the credits ledger (hypothesis): random grants, executions arriving in any order,
adjustments, usd applied to invoices and expiries, checked after every step."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.credits import (
    CreditCharge,
    EntryKind,
    Unit,
    adjust,
    apply_usd_to_invoice,
    balance,
    consume,
    consume_from_remainders,
    expire,
    grant_entry,
    ops_grant,
    remaining,
    spendable,
    summarize,
)

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def grants_st(draw):
    n = draw(st.integers(1, 5))
    out = []
    for i in range(n):
        unit = draw(st.sampled_from([Unit.credits, Unit.credits, Unit.usd]))
        amount = Decimal(draw(st.integers(1, 40))) if unit is Unit.credits else Decimal(draw(st.integers(1, 5000))) / 100
        start = T0 + timedelta(hours=draw(st.integers(0, 60 * 24)))
        # coarse hours so that expiries and grants often tie (the FEFO tie-breaks are exercised)
        end = start + timedelta(hours=draw(st.sampled_from([1, 24, 240, 24 * 30, 24 * 90])))
        out.append(ops_grant(grant_id=f"g{i}", account_id="acme", unit=unit, amount=amount, granted_at=start,
                             expires_at=end, reason="prop", expiry_months=12))
    return out


hours = st.integers(0, 150 * 24).map(lambda h: T0 + timedelta(hours=h))
op_st = st.one_of(
    st.tuples(st.just("consume"), st.lists(st.tuples(hours, st.integers(0, 30)), min_size=1, max_size=4)),
    st.tuples(st.just("adjust"), st.integers(0, 4), st.integers(1, 20), hours),
    st.tuples(st.just("invoice"), st.integers(0, 3), st.integers(0, 6000), hours),
    st.tuples(st.just("expire"), st.integers(0, 4), st.one_of(st.none(), hours)),
)


def check_ledger(grants, entries):
    """Invariants that must hold after every step."""
    times = sorted({e.occurred_at for e in entries})
    for unit in Unit:
        # balance is the sum of the ledger, and equals the sum of what is left on each grant
        total = sum((e.amount for e in entries if e.unit is unit), Decimal(0))
        assert balance(entries, unit) == total == sum((remaining(g, entries) for g in grants if g.unit is unit), Decimal(0))
        # no balance is ever negative, at any instant
        for t in times:
            assert balance(entries, unit, at=t) >= 0
            assert balance(entries, unit, at=t - timedelta(microseconds=1)) >= 0
    for g in grants:
        own = [e for e in entries if e.grant_id == g.id]
        for t in times:  # no grant is overdrawn at any instant
            assert balance(own, g.unit, at=t) >= 0
        s = summarize(g, entries)
        assert min(s.consumed, s.applied, s.adjusted, s.expired, s.remaining) >= 0
        if s.granted:
            # expiry + consumption (+ applications + adjustments) + remaining == granted
            assert s.expired + s.consumed + s.applied + s.adjusted + s.remaining == s.granted == g.amount
        assert len([e for e in own if e.kind is EntryKind.expire]) <= 1


def fefo(g):
    """The brief's order, stated here independently: expires first, then oldest (then id)."""
    return (g.expires_at, g.granted_at, g.id)


def check_fefo(grants, before, charge, result):
    """The charge was paid whole from the grants valid at its time, first-expiring first, or not at all."""
    valid = sorted((g for g in grants if g.unit is Unit.credits and g.valid_at(charge.occurred_at)
                    and remaining(g, before) > 0), key=fefo)
    if not result.funded:
        assert charge.credits == 0 or sum(remaining(g, before) for g in valid) < charge.credits
        assert result.entries == ()
        return
    taken = {e.grant_id: -e.amount for e in result.entries}
    assert sum(taken.values()) == charge.credits
    assert set(taken) <= {g.id for g in valid}
    after = before + list(result.entries)
    used = [g for g in valid if g.id in taken]
    last = max(fefo(g) for g in used)
    for g in valid:
        if fefo(g) < last:  # every grant ahead of the last one used is drained
            assert remaining(g, after) == 0, (g.id, taken)


@SETTINGS
@given(grants=grants_st(), ops=st.lists(op_st, max_size=14), data=st.data())
def test_random_histories_keep_every_ledger_invariant(grants, ops, data):
    entries = [grant_entry(g) for g in grants]
    n_event = 0
    applied: dict[str, Decimal] = {}
    invoices: dict[str, tuple[Decimal, datetime]] = {}
    for op in ops:
        kind = op[0]
        if kind == "consume":
            # a batch that arrived together, in a random order; booked one call per batch
            charges = []
            for when, credits in op[1]:
                charges.append(CreditCharge(f"e{n_event}", when, credits))
                n_event += 1
            charges = data.draw(st.permutations(charges))
            batch = consume(grants, entries, charges)
            # the hot path, from per-grant remainders and the already-booked ids, decides the same
            remainders = {g.id: remaining(g, entries) for g in grants}
            booked = {e.reference for e in entries if e.kind is EntryKind.consume}
            assert consume_from_remainders(grants, remainders, booked, charges) == batch
            # the batch equals booking each charge alone in (occurred_at, event_id) order, and each is FEFO
            seq = list(entries)
            for charge, result in zip(sorted(charges, key=lambda c: (c.occurred_at, c.event_id)), batch):
                assert result.event_id == charge.event_id
                alone = consume(grants, seq, [charge])[0]
                assert alone == result
                check_fefo(grants, seq, charge, result)
                seq += list(result.entries)
            entries = seq
            # booking the same batch again writes nothing
            assert all(r.already_booked and not r.entries for r in consume(grants, entries, charges) if r.funded)
        elif kind == "adjust":
            g = grants[op[1] % len(grants)]
            at = max(op[3], g.granted_at)
            amount = min(Decimal(op[2]) if g.unit is Unit.credits else Decimal(op[2]) / 10, remaining(g, entries))
            if amount > 0:
                entries.append(adjust(g, entries, amount, at=at, entry_id=f"adj{len(entries)}", reason="prop"))
        elif kind == "invoice":
            # a re-run of a close sees the same invoice total and the same instant
            invoice_id = f"inv{op[1]}"
            total, at = invoices.setdefault(invoice_id, (Decimal(op[2]) / 100, op[3]))
            can = spendable(grants, entries, Unit.usd, at)
            credit = apply_usd_to_invoice(grants, entries, invoice_id=invoice_id, total=total, at=at)
            if invoice_id in applied:
                assert credit.entries == () and credit.applied == applied[invoice_id]
            else:
                assert credit.applied == min(can, total) >= 0
                entries += credit.entries
                if credit.entries:  # applying $0 leaves no record (see the function's docstring)
                    applied[invoice_id] = credit.applied
            if invoice_id in applied:  # applying it twice applies it once
                again = apply_usd_to_invoice(grants, entries, invoice_id=invoice_id, total=total, at=at)
                assert again.entries == () and again.applied == applied[invoice_id]
        else:
            g = grants[op[1] % len(grants)]
            x = expire(g, entries, at=op[2])
            if x is not None:
                assert x.amount == -remaining(g, entries) < 0
                entries.append(x)
            # expired exactly once: nothing is left, and a second call writes nothing
            assert remaining(g, entries) == 0
            assert expire(g, entries, at=op[2]) is None
        check_ledger(grants, entries)
    # at the end every grant expires exactly once what is left of it
    for g in grants:
        x = expire(g, entries)
        if x is not None:
            entries.append(x)
        assert expire(g, entries) is None and remaining(g, entries) == 0
    check_ledger(grants, entries)
    assert balance(entries, Unit.credits) == balance(entries, Unit.usd) == 0
