"""Property tests of the rating core (hypothesis). Each runs well under a few seconds."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.catalog import CatalogVersion, load_catalog
from billing.money import from_cents, round_money, to_cents
from billing.rating import AccountTerms, LineKind, ModelUsage, included_executions, rate_period, split_billable

UTC = timezone.utc
T0 = datetime(2026, 10, 1, tzinfo=UTC)
CAT = load_catalog().at(T0)
MODELS = sorted(CAT.models)
PLANS = ["free", "pro", "team", "payg"]

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def with_small_quota(cat: CatalogVersion, plan: str, included: int) -> CatalogVersion:
    """Same catalog, but ``plan`` includes only ``included`` executions (so small event lists cross it)."""
    p = cat.plan(plan).model_copy(update={"included_executions": included})
    return cat.model_copy(update={"plans": {**cat.plans, plan: p}})


event_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=6)
events_st = st.lists(
    st.tuples(st.integers(0, 40), event_ids, st.sampled_from(MODELS)),
    max_size=60,
    unique_by=lambda e: e[1],
).map(lambda evs: [(T0 + timedelta(seconds=s), eid, m) for s, eid, m in evs])

terms_st = st.builds(
    lambda plan, seats, opt_in: AccountTerms(plan, seats if plan == "team" else 1, opt_in),
    st.sampled_from(PLANS), st.integers(1, 4), st.booleans(),
)


def check_invariants(inv, cat: CatalogVersion, terms: AccountTerms) -> None:
    assert inv.total == inv.subtotal == sum((line.amount for line in inv.lines), Decimal(0))
    assert inv.total >= 0
    for line in inv.lines:
        assert line.amount == round_money(line.quantity * line.unit_price)  # rounded exactly once
        assert from_cents(to_cents(line.amount)) == line.amount  # a whole number of cents
        assert line.quantity >= 0
    plan = cat.plan(terms.plan)
    if plan.usage_cap is not None:
        usage_charge = sum(
            (line.amount for line in inv.lines if line.kind in (LineKind.usage, LineKind.cap_adjustment)), Decimal(0))
        assert usage_charge <= plan.usage_cap
    order = [line.kind for line in inv.lines]
    rank = list(LineKind)
    assert order == sorted(order, key=rank.index)


@SETTINGS
@given(events=events_st, terms=terms_st, quota=st.integers(0, 30))
def test_rating_invariants_and_monotone(events, terms, quota):
    cat = CAT if terms.plan == "payg" else with_small_quota(CAT, terms.plan, quota)
    included = included_executions(cat.plan(terms.plan), terms.seats)
    inv = rate_period(cat, terms, list(split_billable(events, included).values()))
    check_invariants(inv, cat, terms)
    assert inv.executions == len(events)
    assert inv.billable_executions == max(0, len(events) - included)

    # one more execution, later than every other: the bill never goes down
    later = max((e[0] for e in events), default=T0) + timedelta(seconds=1)
    for model in (MODELS[0], MODELS[-1]):
        more = events + [(later, "zz-new-event", model)]
        inv2 = rate_period(cat, terms, list(split_billable(more, included).values()))
        check_invariants(inv2, cat, terms)
        assert inv2.total >= inv.total


@st.composite
def usage_st(draw):
    """Large, consistent per-model counts for the real catalog quotas (no events needed)."""
    terms = draw(terms_st)
    included = included_executions(CAT.plan(terms.plan), terms.seats)
    models = draw(st.lists(st.sampled_from(MODELS), unique=True, max_size=len(MODELS)))
    execs = [draw(st.integers(0, 40_000)) for _ in models]
    need = max(0, sum(execs) - included)
    billable = []
    for e in execs:  # hand out the billable executions greedily in a random model order
        take = min(e, need) if draw(st.booleans()) else 0
        billable.append(take)
        need -= take
    for i, e in enumerate(execs):  # anything left over goes wherever there is room
        extra = min(e - billable[i], need)
        billable[i] += extra
        need -= extra
    assert need == 0
    return terms, [ModelUsage(m, e, b) for m, e, b in zip(models, execs, billable)]


@SETTINGS
@given(usage_st())
def test_rating_invariants_large_counts(case):
    terms, usage = case
    inv = rate_period(CAT, terms, usage)
    check_invariants(inv, CAT, terms)
    plan = CAT.plan(terms.plan)
    billed = plan.overage_rate is not None and (terms.overage_opt_in or not plan.overage_requires_opt_in)
    expected = plan.monthly_fee * terms.seats
    if billed:
        usage_total = sum((round_money(u.billable * plan.overage_rate) for u in usage), Decimal(0))
        expected += min(usage_total, plan.usage_cap) if plan.usage_cap is not None else usage_total
    assert inv.total == round_money(expected)
    # the rating is independent of the order the usage rows come in
    assert rate_period(CAT, terms, list(reversed(usage))) == inv


@SETTINGS
@given(events=events_st, included=st.integers(0, 70), rnd=st.randoms(use_true_random=False))
def test_split_billable_properties(events, included, rnd):
    split = split_billable(events, included)
    assert sum(u.billable for u in split.values()) == max(0, len(events) - included)
    assert sum(u.executions for u in split.values()) == len(events)
    for model, u in split.items():
        assert u.model == model
        assert 0 <= u.billable <= u.executions
        assert u.executions == sum(1 for e in events if e[2] == model)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert split_billable(shuffled, included) == split
    # the billable ones are exactly the latest in (occurred_at, event_id) order
    tail = sorted(events, key=lambda e: (e[0], e[1]))[included:]
    for model, u in split.items():
        assert u.billable == sum(1 for e in tail if e[2] == model)


@SETTINGS
@given(st.decimals(min_value=-10**9, max_value=10**9, allow_nan=False, allow_infinity=False, places=6))
def test_round_money_properties(x):
    r = round_money(x)
    assert abs(r - x) <= Decimal("0.005")
    assert round_money(r) == r
    assert from_cents(to_cents(r)) == r
