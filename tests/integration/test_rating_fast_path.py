"""The close's usage aggregation takes shortcuts; on generated months it answers what the pure rule
and the slow path do.

``repositories.usage.usage_rows`` (the fast path) hash-aggregates the accounts that stay under their
quota or have none in one pass, ranks in time order only the accounts past a positive quota, reads
the executions through the covering account index and is planned per chunk. It must give exactly
the usage rows of ``billing.rating.aggregate_usage`` (the pure rule, one execution at a time) and of
the ranked query applied to every account (the slow path, the close before the shortcuts), and so
the same invoice lines: accounts past their quota and under it, plan changes mid-month, billing that
starts mid-month, token pricing, sandbox tries, BYOK, recorded
and missing costs, and a price change mid-month (two catalog versions). Without the price change,
the accounts whose month is one stretch (no terms change or billing start inside it) and that do not
pass a positive quota are read from their month's counters instead of their executions: the same.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from activities import pricing
from billing import close
from billing.catalog import parse_catalog, version_windows
from billing.periods import Period
from billing.rating import Execution, aggregate_usage
from models.db import get_engine
from repositories import usage
from services import accounts as account_service
from tests.factories import OCT_START, create_account, event, ingest

OCT = Period.parse("2026-10")
BASE_CATALOG = Path(__file__).resolve().parents[2] / "billing" / "catalog.toml"
MODELS = ("claude-haiku", "gpt-4o", "claude-opus", "deepseek-r1")
_ids = itertools.count()


def _small_quotas(price_change: bool) -> object:
    """Quotas a few dozen executions cross, and with ``price_change`` a second version from Oct 20
    (other overage rates): executions on either side are priced by different versions."""
    text_ = (BASE_CATALOG.read_text()
             .replace("included_executions = 100\n", "included_executions = 3\n")
             .replace("included_executions = 5000\n", "included_executions = 5\n")
             .replace("included_executions = 25000 ", "included_executions = 2 "))
    if not price_change:
        return parse_catalog(text_, "small quotas")
    v2 = text_[text_.index("\n[[versions]]"):]
    v2 = v2.replace('version = "2026-01-01.1"', 'version = "2026-10-20.1"', 1)
    v2 = v2.replace("effective_from = 2026-01-01T00:00:00Z", "effective_from = 2026-10-20T00:00:00Z", 1)
    v2 = v2.replace("overage_rate = 0.005", "overage_rate = 0.006", 1)
    return parse_catalog(text_ + "\n" + v2, "small quotas, price change on the 20th")


CATALOG = _small_quotas(price_change=True)
ONE_PRICE = _small_quotas(price_change=False)  # one version all month: counters can answer
CHANGE = OCT_START + timedelta(days=12)  # terms change, when an account has one
LATE_START = OCT_START + timedelta(days=5)  # billing start of the accounts that start mid-month
# Few instants, so executions tie on occurred_at and the event id decides; some sit on either side of
# the late billing start, the terms change and the price change.
INSTANTS = (OCT_START, OCT_START + timedelta(days=2), LATE_START - timedelta(microseconds=1), LATE_START,
            CHANGE - timedelta(microseconds=1), CHANGE, OCT_START + timedelta(days=19, hours=23),
            OCT_START + timedelta(days=20), OCT.end - timedelta(microseconds=1))
EVENT_IDS = st.text(alphabet="aAbB09-_.", min_size=1, max_size=4)
executions = st.lists(
    st.tuples(EVENT_IDS, st.sampled_from(INSTANTS), st.sampled_from(MODELS),
              st.sampled_from([False, False, True]),  # BYOK
              st.sampled_from([False, False, False, True]),  # sandbox
              st.integers(0, 30_000), st.integers(0, 9_000),
              st.sampled_from([None, None, "0.0123", "0.5"])),  # recorded cost
    min_size=0, max_size=25, unique_by=lambda e: e[0],
)
account_terms = st.tuples(
    st.sampled_from([("free", 1), ("pro", 1), ("team", 1), ("team", 3), ("payg", 1)]),
    st.booleans(),  # overage opt-in
    st.sampled_from(["executions", "tokens"]),
    st.sampled_from([None, ("payg", 1, "tokens"), ("team", 2, "executions"), ("pro", 1, "tokens")]),  # from CHANGE
    st.booleans(),  # billing starts mid-month
)


def _stored_executions(conn, account: str) -> list[Execution]:
    """Every stored execution of the account, read back plainly (no index, no aggregation)."""
    rows = conn.execute(text("SELECT event_id, occurred_at, model, byok, sandbox, input_tokens, output_tokens, "
                             "cost_usd FROM executions WHERE account_id || '' = :a"), {"a": account})
    return [Execution(r.event_id, r.occurred_at, r.model, r.byok, r.sandbox, r.input_tokens, r.output_tokens,
                      r.cost_usd) for r in rows]


def _key(row):
    return (row.segment, row.version, row.model, row.byok, row.sandbox, row.billable)


# The fast path counts by the stretches between the chunk's boundaries (any account's terms change or
# billing start, a price change), then adds up an account's stretches of one segment and version:
# here the second account's recorded and missing costs and tokens on either side of the first
# account's billing start and terms change, under its quota (pro: 5) and without one (payg).
_STRETCHES = [
    ([], (("pro", 1), True, "executions", ("team", 2, "executions"), True)),
    ([("a", OCT_START + timedelta(days=2), "gpt-4o", False, False, 100, 10, "0.0123"),
      ("b", LATE_START, "gpt-4o", False, False, 200, 20, "0.5"),
      ("c", CHANGE, "gpt-4o", False, False, 300, 30, "0.0123"),
      ("d", CHANGE, "gpt-4o", False, False, 400, 40, None),
      ("e", OCT_START, "gpt-4o", False, False, 500, 50, None)], (("pro", 1), True, "tokens", None, False)),
    ([("a", OCT_START, "claude-haiku", False, False, 1, 2, "0.5"),
      ("b", CHANGE, "claude-haiku", False, False, 3, 4, "0.5"),
      ("c", CHANGE - timedelta(microseconds=1), "claude-haiku", True, False, 5, 6, None)],
     (("payg", 1), False, "tokens", None, False)),
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(executions, account_terms), min_size=3, max_size=3), st.sampled_from([CATALOG, ONE_PRICE]))
@example(accounts=_STRETCHES, catalog=CATALOG)
@example(accounts=_STRETCHES, catalog=ONE_PRICE)
def test_fast_usage_rows_equal_the_pure_rule_and_the_slow_path_and_rate_the_same_invoice(clean_db, accounts,
                                                                                         catalog):
    n = next(_ids)
    docs, ids = [], []
    for k, (specs, ((plan, seats), overage, mode, later, late_start)) in enumerate(accounts):
        account = f"fp{n}-{k}"
        ids.append(account)
        create_account(clean_db, account, plan, seats=seats, overage=overage, pricing=mode,
                       billing_start=LATE_START if late_start else OCT_START - timedelta(days=40))
        if later is not None:
            with get_engine(clean_db).begin() as conn:
                account_service.change_terms(conn, account_id=account, effective_from=CHANGE, reason="test",
                                             plan=later[0], seats=later[1], pricing=later[2], catalog=catalog)
        docs += [event(account, 0, when, model, event_id=f"{account}:{eid}", byok=byok, sandbox=sandbox,
                       input_tokens=tin, output_tokens=tout, **({} if cost is None else {"cost_usd": cost}))
                 for eid, when, model, byok, sandbox, tin, tout, cost in specs
                 if not late_start or when >= LATE_START]  # ingest refuses executions before billing starts
    if docs:
        report = ingest(clean_db, docs)
        assert report.rejected == 0, report.rejections
    windows = version_windows(catalog, OCT.start, OCT.end)
    with get_engine(clean_db).begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions WHERE account_id = ANY(:ids)"),
                            {"ids": ids}).scalar_one() == len(docs)
        facts = pricing.load_facts(conn, catalog, OCT, ids)
        segments = {a: f.segments for a, f in facts.items()}
        included = {a: f.included for a, f in facts.items()}
        # Past psycopg's prepare threshold on one connection: prepared statements answer the same.
        fast = [usage.usage_rows(conn, OCT.start, OCT.end, segments, included, windows) for _ in range(6)]
        slow = usage._aggregate(conn, usage._USAGE_ROWS_SQL, ids, OCT.start, OCT.end, segments, included, windows,
                                None)
        stored = {a: _stored_executions(conn, a) for a in ids}
    counted = usage.countable(ids, OCT.start, OCT.end, segments, windows, None)
    # The shortcut is taken exactly where the month is one stretch: with one catalog version, every
    # account that started billing before October and whose terms did not change (a change to the
    # same terms is none).
    assert counted == ([a for (_, ((plan, seats), _, mode, later, late_start)), a in zip(accounts, ids)
                        if later in (None, (plan, seats, mode)) and not late_start] if catalog is ONE_PRICE else [])
    assert all(f == fast[0] for f in fast)
    for a in ids:
        pure = aggregate_usage(stored[a], OCT.start, OCT.end, segments[a], windows, included[a])
        mine = sorted(fast[0].get(a, []), key=_key)
        assert mine == pure, f"{a}: included {included[a]}, fast path differs from the pure rule"
        assert mine == sorted(slow.get(a, []), key=_key), f"{a}: fast path differs from the ranked query"
        assert sorted(facts[a].usage, key=_key) == pure
        rated = close.rate(catalog, OCT, facts[a]).rated
        assert rated == close.rate(catalog, OCT, replace(facts[a], usage=pure)).rated
        assert rated.executions == sum(1 for e in stored[a] if not e.sandbox and e.occurred_at >= segments[a][0].start)



def test_an_account_counted_before_uncosted_tokens_were_is_rated_from_its_executions(clean_db):
    """A counter row from before migration 0015 (NULL uncosted tokens) cannot say what came without
    a cost: its account's month is read from its executions, never from its counters."""
    create_account(clean_db, "stale", "payg", billing_start=OCT_START - timedelta(days=40))
    ingest(clean_db, [event("stale", i, OCT_START + timedelta(days=i), ("gpt-4o", "claude-haiku")[i % 2],
                            input_tokens=100 * i, **({"cost_usd": "0.5"} if i % 3 else {})) for i in range(9)])
    windows = version_windows(ONE_PRICE, OCT.start, OCT.end)

    def rows() -> list:
        with get_engine(clean_db).begin() as conn:
            facts = pricing.load_facts(conn, ONE_PRICE, OCT, ["stale"])
            segments = {a: f.segments for a, f in facts.items()}
            assert usage.countable(["stale"], OCT.start, OCT.end, segments, windows, None) == ["stale"]
            return sorted(usage.usage_rows(conn, OCT.start, OCT.end, segments, {"stale": 0}, windows)["stale"],
                          key=_key)

    def counters(assignment: str) -> None:
        with get_engine(clean_db).begin() as conn:
            conn.execute(text(f"UPDATE usage_counters SET {assignment} WHERE account_id = 'stale' "
                              "AND model = 'gpt-4o'"))

    truth = rows()
    counters("executions = executions + 100")
    assert rows() != truth  # the counters are what is read...
    counters("uncosted_input_tokens = NULL")
    assert rows() == truth  # ...until one of them predates the uncosted tokens
