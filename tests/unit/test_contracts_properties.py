"""Property tests of committed-use contracts (hypothesis)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from billing.catalog import load_catalog
from billing.contracts import (
    Amendment,
    ContractError,
    ContractHistory,
    ContractLineKind,
    create_contract,
    extend_term,
    raise_commitment,
    reconcile_month,
    summarize_term,
    term_months,
    terminate_early,
    utc_day,
)
from billing.money import from_cents, round_money, to_cents
from billing.periods import Period
from billing.rating import ModelUsage

CATALOG = load_catalog()
V1 = CATALOG.versions[0]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

commitments = st.one_of(st.integers(100_000, 2_000_000), st.sampled_from([100_000, 499_999, 500_000, 999_999,
                                                                           1_000_000]))
starts = st.dates(date(2026, 1, 1), date(2030, 12, 31))
term_lengths = st.integers(12, 40)


def contract(commitment: int, start: date, months: int) -> ContractHistory:
    return ContractHistory(create_contract(
        CATALOG, account="acme", commitment=commitment, start=utc_day(start), months=months,
        earliest_open_period=Period(2026, 1), contract_id="ctr-p"))


def split(used: int, committed: int, weights: list[int]) -> list[ModelUsage]:
    """``used`` executions across models, with the overage attributed to them in some order."""
    models = [f"m{i}" for i in range(len(weights))]
    total = sum(weights) or 1
    counts = [used * w // total for w in weights]
    counts[0] += used - sum(counts)
    over = max(0, used - committed)
    rows = []
    for m, n in zip(models, counts):
        b = min(n, over)
        over -= b
        rows.append(ModelUsage(m, n, b))
    return rows


@SETTINGS
@given(commitments, starts.map(lambda d: d.replace(day=1)), term_lengths)
def test_a_term_starting_on_the_1st_commits_exactly_commitment_times_months(commitment, start, months):
    ms = term_months(contract(commitment, start, months), V1)
    assert len(ms) == months
    assert sum(m.committed for m in ms) == commitment * months
    assert all(not m.prorated for m in ms)


@SETTINGS
@given(commitments, starts, term_lengths)
def test_term_months_tile_the_term_without_gaps_and_prorate_only_the_ends(commitment, start, months):
    h = contract(commitment, start, months)
    ms = term_months(h, V1)
    assert len(ms) == months + (start.day != 1)
    assert ms[0].start == h.start and ms[-1].end == h.end
    assert all(a.end == b.start for a, b in zip(ms, ms[1:]))
    assert sum(m.days for m in ms) == (h.end - h.start).days
    for m in ms:
        assert m.period.start <= m.start < m.end <= m.period.end
        assert 0 < m.committed <= commitment
        assert (m.committed == commitment) or m.prorated
        assert m.prorated == (m is ms[0] and start.day != 1 or m is ms[-1] and m.end != m.period.end)
    # The prorated first and last months add up to about one month (exactly, but for rounding, when
    # the two calendar months have the same length).
    total = sum(m.committed for m in ms)
    assert abs(total - commitment * months) <= commitment * 3 // 28 + 1
    if start.day != 1 and ms[-1].prorated and ms[0].period.days == ms[-1].period.days:
        assert abs(total - commitment * months) <= 1


@SETTINGS
@given(commitments, starts, term_lengths, st.integers(0, 3_000_000), st.lists(st.integers(0, 9), min_size=1,
                                                                              max_size=4), st.data())
def test_reconciliation_charges_are_never_negative_and_overage_and_shortfall_exclude_each_other(
        commitment, start, months, used, weights, data):
    h = contract(commitment, start, months)
    month = data.draw(st.sampled_from(term_months(h, V1)))
    r = reconcile_month(h, V1, month.period, split(used, month.committed, weights))
    assert r.committed_charge >= 0 and r.overage_charge >= 0 and r.total >= 0
    assert not (r.overage > 0 and r.shortfall > 0)
    assert r.used == r.committed + r.overage - r.shortfall
    assert r.total == sum(ln.amount for ln in r.lines) == r.committed_charge + r.overage_charge
    assert r.utilisation == (Decimal(r.used) / Decimal(r.committed)).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    for ln in r.lines:
        assert ln.amount == round_money(ln.quantity * ln.unit_price)  # rounded once per line
        assert from_cents(to_cents(ln.amount)) == ln.amount
    over = [ln for ln in r.lines if ln.kind is ContractLineKind.contract_overage]
    assert sum(ln.quantity for ln in over) == r.overage
    assert len({ln.key for ln in r.lines}) == len(r.lines)


@SETTINGS
@given(commitments, starts, term_lengths, st.data())
def test_termination_fee_plus_served_commitment_is_the_scheduled_commitment(commitment, start, months, data):
    h = contract(commitment, start, months)
    last_request = h.end - timedelta(days=2)
    when = data.draw(st.datetimes(h.start.replace(tzinfo=None), last_request.replace(tzinfo=None)))
    scheduled = sum(m.committed for m in term_months(h, V1))
    t = h.amend(terminate_early(h, when.replace(tzinfo=h.start.tzinfo)))
    ms = term_months(t, V1)
    fee = ms[-1].termination_fee
    served = sum(m.committed for m in ms)
    assert served + fee.committed == scheduled
    assert fee.amount == round_money(fee.committed * fee.rate) >= 0
    assert all(m.termination_fee is None for m in ms[:-1])


@SETTINGS
@given(commitments, starts, term_lengths, st.one_of(st.integers(1, 40), st.integers(1, 3_000_000)), st.data())
def test_a_raise_never_lowers_a_months_commitment_and_splits_its_month_between_the_two(
        commitment, start, months, extra, data):
    h = contract(commitment, start, months)
    when = data.draw(st.datetimes(h.start.replace(tzinfo=None), (h.end - timedelta(days=2)).replace(tzinfo=None)))
    raised = h.amend(raise_commitment(h, commitment + extra, when.replace(tzinfo=h.start.tzinfo)))
    eff = raised.amendments[0].effective
    higher = contract(commitment + extra, start, months)
    for before, after, top in zip(term_months(h, V1), term_months(raised, V1), term_months(higher, V1)):
        assert (before.period, before.days) == (after.period, after.days)
        assert before.committed <= after.committed <= top.committed
        assert sum(s.days for s in after.segments) == after.days
        if after.end <= eff:
            assert after == before
        if after.start >= eff:
            assert after.committed == top.committed
        if after.start < eff < after.end:
            assert [s.commitment for s in after.segments] == [commitment, commitment + extra]


amendment_steps = st.lists(st.tuples(st.sampled_from(["raise", "extend", "terminate"]), st.integers(1, 400),
                                     st.integers(1, 500_000)), max_size=6)


@SETTINGS
@given(commitments, starts, term_lengths, amendment_steps)
def test_any_accepted_amendment_sequence_rebuilds_from_its_stored_fields(commitment, start, months, steps):
    h = contract(commitment, start, months)
    when = h.start
    for kind, days_later, amount in steps:
        when = when + timedelta(days=days_later, hours=7)
        try:
            if kind == "raise":
                a = raise_commitment(h, h.current_commitment + amount, when)
            elif kind == "extend":
                a = extend_term(h, 1 + amount % 12, when)
            else:
                a = terminate_early(h, when)
        except ContractError:
            continue  # refused: nothing changes
        h = h.amend(a)
    stored = [(a.kind.value, a.requested_at, a.effective, a.commitment, a.extra_months) for a in h.amendments]
    rebuilt = ContractHistory(h.contract, tuple(Amendment(*row) for row in stored))
    assert rebuilt == h
    ms = term_months(rebuilt, V1)
    assert ms[0].start == h.start and ms[-1].end == h.end
    assert [m.committed for m in ms] == [m.committed for m in term_months(h, V1)]


@SETTINGS
@given(commitments, starts, term_lengths, st.lists(st.integers(0, 2_500_000), min_size=60, max_size=60))
def test_term_summary_is_the_sum_of_its_months(commitment, start, months, used):
    h = contract(commitment, start, months)
    rs = [reconcile_month(h, V1, m.period, split(used[i], m.committed, [1]))
          for i, m in enumerate(term_months(h, V1))]
    s = summarize_term(h, V1, rs)
    assert s.months == len(rs)
    assert (s.committed, s.used, s.overage, s.shortfall) == (
        sum(r.committed for r in rs), sum(r.used for r in rs), sum(r.overage for r in rs),
        sum(r.shortfall for r in rs))
    assert s.total_charges == sum(r.total for r in rs) == s.committed_charges + s.overage_charges
    assert min(r.utilisation for r in rs) <= s.average_utilisation <= max(r.utilisation for r in rs)
    assert s.months_under_commitment == sum(1 for r in rs if r.used < r.committed)


@settings(max_examples=400, deadline=None)
@given(st.integers(100_000, 100_100), starts, st.integers(1, 3), st.data())
def test_a_small_raise_in_a_prorated_last_month_never_lowers_its_committed_executions(commitment, start, extra,
                                                                                      data):
    # Per-segment rounding could lose an execution here (two halves each rounded down).
    h = contract(commitment, start, 12)
    last = term_months(h, V1)[-1]
    assume(last.days >= 2)  # a raise needs a day left after the request day
    offset = data.draw(st.integers(0, last.days - 2))
    when = last.start + timedelta(days=offset, hours=12)
    raised = h.amend(raise_commitment(h, commitment + extra, when))
    after = term_months(raised, V1)[-1]
    top = term_months(contract(commitment + extra, start, 12), V1)[-1]
    assert last.committed <= after.committed <= top.committed
