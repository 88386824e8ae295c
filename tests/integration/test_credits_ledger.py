"""Prepaid credits on real Postgres: consumption booked as executions arrive (FEFO, valid-at-the-time,
all or nothing), expiry of exactly the remainder, concurrency, and the close (credit-funded executions
not charged, the usd balance applied once)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from activities.close import CloseActivities
from activities.deps import Deps
from billing import credits as rules
from billing.catalog import load_catalog
from billing.credits import Unit
from models.db import get_engine
from models.schemas import AccountRange, CloseChunkInput
from repositories import credits as repo
from repositories import invoices as invoice_rows
from services import credits as service
from tests.factories import create_account, event, ingest

UTC = timezone.utc
CATALOG = load_catalog()
GRACE = 48


def t(day: int, hour: int = 12, minute: int = 0, second: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def give(url: str, account_id: str, grant_id: str, amount, granted_at: datetime, expires_at: datetime,
         unit: Unit = Unit.credits, price: Decimal = Decimal("0")) -> None:
    grant = rules.ops_grant(grant_id=grant_id, account_id=account_id, unit=unit, amount=Decimal(amount),
                            granted_at=granted_at, reason="test", expiry_months=12, expires_at=expires_at, price=price)
    with get_engine(url).begin() as conn:
        repo.ensure_credit_account(conn, account_id)
        repo.insert_grant(conn, grant, granted_by="test")
        repo.append_entries(conn, [rules.grant_entry(grant)])


def ledger(url: str, account_id: str) -> list[tuple[str, str, str]]:
    with get_engine(url).begin() as conn:
        return [(e.kind.value, e.grant_id, str(e.amount)) for e in repo.ledger_of(conn, account_id)]


def sums(url: str, account_id: str) -> dict[str, Decimal]:
    with get_engine(url).begin() as conn:
        out: dict[str, Decimal] = {}
        for e in repo.ledger_of(conn, account_id):
            out[e.grant_id] = out.get(e.grant_id, Decimal(0)) + e.amount
        return out


def consume(url: str, account_ids, now: datetime) -> int:
    return service.consume_for(get_engine(url), CATALOG, account_ids, now, GRACE)


def credits_only(url: str, account_id: str) -> None:
    create_account(url, account_id, "free")
    service.set_credits_only(get_engine(url), account_id, True)


def test_overlapping_grants_are_consumed_first_expiring_first_as_hand_computed(clean_db):
    url = clean_db
    credits_only(url, "cred-1")
    give(url, "cred-1", "g1", 10, t(1), t(20, 0))
    give(url, "cred-1", "g2", 8, t(2), t(1, 0, month=11))
    give(url, "cred-1", "g3", 100, t(10), t(15, 0))
    docs = [event("cred-1", 1, t(3), "claude-sonnet"),   # 5: g1 (expires before g2) -> g1 5
            event("cred-1", 2, t(11), "claude-sonnet"),  # 5: g3 expires first -> g3 95
            event("cred-1", 3, t(16), "claude-sonnet"),  # 5: g3 no longer valid; g1 -> 0
            event("cred-1", 4, t(17), "claude-sonnet"),  # 5: g2 -> 3
            event("cred-1", 5, t(18), "claude-sonnet"),  # 5 > 3 left: not paid at all
            event("cred-1", 6, t(19), "claude-haiku"),   # 1: g2 -> 2
            event("cred-1", 7, t(21), "claude-opus")]    # 25: nothing valid can pay
    ingest(url, docs)
    assert consume(url, ["cred-1"], t(25)) == 5
    assert consume(url, ["cred-1"], t(25)) == 0  # a second observer run books nothing twice
    assert ledger(url, "cred-1") == [
        ("grant", "g1", "10.00"), ("grant", "g2", "8.00"), ("consume", "g1", "-5.00"), ("grant", "g3", "100.00"),
        ("consume", "g3", "-5.00"), ("consume", "g1", "-5.00"), ("consume", "g2", "-5.00"), ("consume", "g2", "-1.00")]
    assert sums(url, "cred-1") == {"g1": Decimal("0.00"), "g2": Decimal("2.00"), "g3": Decimal("95.00")}
    engine = get_engine(url)
    assert service.expire_grant(engine, "g3") == Decimal("95.00")
    assert service.expire_grant(engine, "g3") == Decimal("0")  # once
    assert service.expire_grant(engine, "g1") == Decimal("0")  # nothing left: no entry
    assert service.expire_grant(engine, "g2") == Decimal("2.00")
    assert [k for k, g, _ in ledger(url, "cred-1") if k == "expire"] == ["expire", "expire"]
    with engine.begin() as conn:
        assert repo.balances(conn, "cred-1", t(25)) == {"credits": (Decimal("0.00"), Decimal("0"))}


def test_expiry_at_23_59_59_lets_a_late_event_from_before_it_consume_inside_the_grace(clean_db):
    url = clean_db
    credits_only(url, "late-1")
    expires = datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)
    give(url, "late-1", "g-late", 12, t(1), expires)
    ingest(url, [event("late-1", 1, t(30), "claude-sonnet")])
    consume(url, ["late-1"], t(30, 13))
    # arrive on Nov 1 (inside the 48 h grace), after the grant's expires_at: one a second before, one at it
    ingest(url, [event("late-1", 2, expires - timedelta(seconds=1), "claude-sonnet"),
                 event("late-1", 3, expires, "claude-haiku")])
    assert service.expire_grant(get_engine(url), "g-late") == Decimal("2.00")  # 12 - 5 - 5 (the late one)
    rows = ledger(url, "late-1")
    assert rows == [("grant", "g-late", "12.00"), ("consume", "g-late", "-5.00"), ("consume", "g-late", "-5.00"),
                    ("expire", "g-late", "-2.00")]
    with get_engine(url).begin() as conn:
        entries = repo.ledger_of(conn, "late-1")
        booked = dict(conn.exec_driver_sql(
            "SELECT event_id, funded FROM credit_bookings WHERE account_id = 'late-1'").all())
    assert entries[-1].occurred_at == expires  # dated at expiry: no earlier balance changes
    assert booked["late-1-1"] and booked["late-1-2"] and not booked.get("late-1-3", False)


def test_eight_concurrent_clients_never_drive_a_balance_negative_and_the_ledger_sums_match(clean_db):
    url = clean_db
    credits_only(url, "busy-1")
    give(url, "busy-1", "g-a", 60, t(1), t(1, 0, month=12))
    give(url, "busy-1", "g-b", 42, t(2), t(20, 0, month=11))
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def client(n: int) -> None:
        try:
            barrier.wait()
            for batch in range(4):
                docs = [event("busy-1", n * 1000 + batch * 10 + i, t(5, 10, n, batch * 10 + i), "claude-sonnet")
                        for i in range(5)]
                ingest(url, docs)
                consume(url, ["busy-1"], t(25))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    consume(url, ["busy-1"], t(25))
    per_grant = sums(url, "busy-1")
    assert all(v >= 0 for v in per_grant.values()), per_grant
    with get_engine(url).begin() as conn:
        funded, decided = conn.exec_driver_sql(
            "SELECT count(*) FILTER (WHERE funded), count(*) FROM credit_bookings WHERE account_id = 'busy-1'").one()
        consumed = conn.exec_driver_sql(
            "SELECT -sum(amount) FROM credit_ledger WHERE account_id = 'busy-1' AND kind = 'consume'").scalar()
        balance = repo.balances(conn, "busy-1", t(25))["credits"][0]
    assert decided == 160
    assert consumed == funded * 5 == Decimal(100)  # 102 credits pay 20 executions of 5; 2 are left
    assert balance == Decimal(102) - consumed == sum(per_grant.values())


def close_chunk(url: str, settings, now: datetime) -> None:
    deps = Deps(settings, clock=lambda: now, engine=get_engine(url), catalog=CATALOG)
    CloseActivities(deps).rate_accounts(CloseChunkInput(period="2026-10", index=0,
                                                        accounts=AccountRange(after=None, upto="zzzz", count=10)))


def invoice(url: str, account_id: str):
    with get_engine(url).begin() as conn:
        inv = conn.exec_driver_sql("SELECT id, status, subtotal, total FROM invoices WHERE account_id = %s "
                                   "AND period = '2026-10'", (account_id,)).one()
        lines = [(r.kind, str(r.amount)) for r in invoice_rows.invoice_lines_of(conn, inv.id)]
    return inv, lines


def test_the_usd_balance_is_its_own_line_never_negative_and_a_rerun_close_applies_nothing_twice(clean_db, settings):
    url = clean_db
    create_account(url, "pro-usd", "pro")
    create_account(url, "payg-usd", "payg")
    give(url, "pro-usd", "u-pro", Decimal("10.00"), t(1), t(1, 0, month=12), unit=Unit.usd, price=Decimal("9.00"))
    give(url, "payg-usd", "u-payg", Decimal("55.00"), t(1), t(1, 0, month=12), unit=Unit.usd, price=Decimal("50.00"))
    ingest(url, [event("payg-usd", i, t(3, 1 + i // 60, i % 60)) for i in range(120)])  # 120 x $0.01 = $1.20
    at = t(3, 2, month=11)
    close_chunk(url, settings, at)
    pro, pro_lines = invoice(url, "pro-usd")
    payg, payg_lines = invoice(url, "payg-usd")
    assert (pro.subtotal, pro.total, pro.status) == (Decimal("29.00"), Decimal("19.00"), "draft")
    assert pro_lines[-1] == ("prepaid_balance", "-10.00")
    assert (payg.subtotal, payg.total, payg.status) == (Decimal("1.20"), Decimal("0.00"), "paid")
    assert payg_lines[-1] == ("prepaid_balance", "-1.20")
    close_chunk(url, settings, at)  # a re-run rewrites the pro draft: the same line, nothing applied twice
    again, again_lines = invoice(url, "pro-usd")
    assert (again.total, again_lines) == (Decimal("19.00"), pro_lines)
    assert sums(url, "pro-usd") == {"u-pro": Decimal("0.00")}
    assert sums(url, "payg-usd") == {"u-payg": Decimal("53.80")}
    with get_engine(url).begin() as conn:
        tied = conn.exec_driver_sql("SELECT invoice_id, amount FROM credit_ledger WHERE kind = 'invoice_application' "
                                    "ORDER BY invoice_id").all()
    assert sorted(tied) == sorted([(pro.id, Decimal("-10.00")), (payg.id, Decimal("-1.20"))])


def test_credit_funded_executions_are_shown_and_not_charged_by_the_close(clean_db, settings):
    url = clean_db
    create_account(url, "payg-cr", "payg")
    create_account(url, "payg-plain", "payg")
    give(url, "payg-cr", "g-payg", 3, t(1), t(1, 0, month=12))
    ingest(url, [event("payg-cr", i, t(4, 1, i)) for i in range(10)] +
           [event("payg-plain", i, t(4, 1, i)) for i in range(10)])
    consume(url, ["payg-cr", "payg-plain"], t(5))
    close_chunk(url, settings, t(3, 2, month=11))
    funded, lines = invoice(url, "payg-cr")
    plain, plain_lines = invoice(url, "payg-plain")
    assert funded.total == Decimal("0.07")  # 7 x $0.01; 3 paid with credits
    assert ("credit_usage", "0.00") in lines
    assert plain.total == Decimal("0.10") and not any(k == "credit_usage" for k, _ in plain_lines)


@hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 25), st.integers(2, 40)), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(1, 28), st.sampled_from(["claude-haiku", "claude-sonnet", "claude-opus"])),
                min_size=0, max_size=25),
       st.sampled_from([None, 0, 1, 2, 3]))
def test_property_balance_is_the_sum_of_its_ledger_and_never_negative(clean_db_once, grants, runs, expire_one):
    url = clean_db_once
    account = f"prop-{abs(hash((tuple(grants), tuple(runs), expire_one))) % 10**9}"
    credits_only(url, account)
    for i, (start, days, amount) in enumerate(grants):
        give(url, account, f"{account}-g{i}", amount, t(start), t(start) + timedelta(days=days))
    ingest(url, [event(account, i, t(day, 3, i), model) for i, (day, model) in enumerate(runs)])
    consume(url, [account], t(28, 23))
    if expire_one is not None and expire_one < len(grants):
        service.expire_grant(get_engine(url), f"{account}-g{expire_one}")
    with get_engine(url).begin() as conn:
        entries = repo.ledger_of(conn, account)
        assert repo.append_entries(conn, entries) == 0  # a replayed write adds no entry, and nothing to a grant
        grants_ = repo.grants_of(conn, account)
        stored = repo.balances(conn, account, t(28, 23)).get("credits", (Decimal(0), Decimal(0)))[0]
        kept = dict(conn.exec_driver_sql("SELECT id, remaining FROM credit_grants WHERE account_id = %s",
                                         (account,)).all())
    assert stored == sum((e.amount for e in entries), Decimal(0)) == rules.balance(entries, Unit.credits)
    for g in grants_:
        assert rules.remaining(g, entries) >= 0
        assert kept[g.id] == rules.remaining(g, entries)  # the trigger's running sum is the ledger's sum
        # no balance at any instant is negative: every prefix of the grant's entries in time order
        running = Decimal(0)
        for e in sorted((e for e in entries if e.grant_id == g.id), key=lambda e: (e.occurred_at, e.amount < 0)):
            running += e.amount
            assert running >= 0


@pytest.fixture(scope="module")
def clean_db_once(database_url):
    """One clean database for the property test's examples (each uses its own account)."""
    import psycopg

    from models.db import libpq_url
    from tests.conftest import all_tables

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(all_tables(conn))} RESTART IDENTITY CASCADE")
    return database_url


def test_credit_funded_premium_executions_earn_their_creator_30_percent_of_what_the_credits_cost(clean_db, settings):
    """Payouts value credit-funded executions at their grants' purchase prices (an execution split across two
    grants at both prices): g1 12 credits for $2.40 ($0.20 each, expires first), g2 1,000 for $100 ($0.10).
    Three Sonnet runs of the premium skill at 5 credits: 5 x 0.20, 5 x 0.20, 2 x 0.20 + 3 x 0.10 = $2.70 of
    revenue, 30% = $0.81; a run of another skill earns nothing."""
    from activities.payouts import PayoutActivities
    from services import payouts as payout_service
    from tests.payouts_support import deps, run_activity

    url = clean_db
    credits_only(url, "cr-prem")
    give(url, "cr-prem", "g1", 12, t(1), t(20, 0), price=Decimal("2.40"))
    give(url, "cr-prem", "g2", 1000, t(1), t(1, 0, month=12), price=Decimal("100"))
    engine = get_engine(url)
    payout_service.create_creator(engine, "cre-1", "cre-1@example.com")
    payout_service.mark_premium(engine, CATALOG, "skill-prem", "cre-1", share=True, fixed_price=None, at=t(1))
    ingest(url, [event("cr-prem", i, t(3, 1, i), "claude-sonnet", skill_id="skill-prem") for i in range(3)] +
           [event("cr-prem", 9, t(3, 2), "claude-sonnet", skill_id="skill-other")])
    consume(url, ["cr-prem"], t(5))
    assert sums(url, "cr-prem") == {"g1": Decimal("0"), "g2": Decimal("992")}  # 15 + 5 credits consumed
    activities = PayoutActivities(deps(settings))
    assert run_activity(activities.accrue_credit_earnings, "2026-10") == 1
    assert run_activity(activities.accrue_credit_earnings, "2026-10") == 0  # written once
    with engine.begin() as conn:
        rows = conn.exec_driver_sql("SELECT creator_id, account_id, amount, revenue, executions FROM creator_earnings").all()
    assert [(c, a, m, r.normalize(), n) for c, a, m, r, n in rows] == [
        ("cre-1", "cr-prem", Decimal("0.81"), Decimal("2.7"), 3)]
def test_an_execution_whose_batch_was_still_open_during_a_booking_is_booked_by_the_next_one(clean_db):
    import psycopg

    from models.db import libpq_url

    url = clean_db
    credits_only(url, "open-1")
    give(url, "open-1", "g-open", 50, t(1), t(1, 0, month=12))
    ingest(url, [event("open-1", 1, t(3), "claude-sonnet")])
    slow = psycopg.connect(libpq_url(url))  # a batch whose transaction is still open
    slow.execute("INSERT INTO executions (event_id, account_id, agent_id, model, occurred_at) "
                 "VALUES ('open-1-slow', 'open-1', 'a', 'claude-sonnet', %s)", (t(4),))
    slow.execute("SELECT pg_sleep(0.5)")  # open for longer than the booking's 100 ms of slack
    consume(url, ["open-1"], t(25))  # cannot see it yet
    slow.commit()
    slow.close()
    ingest(url, [event("open-1", 2, t(5), "claude-haiku")])
    consume(url, ["open-1"], t(25))
    with get_engine(url).begin() as conn:
        booked = dict(conn.exec_driver_sql(
            "SELECT event_id, funded FROM credit_bookings WHERE account_id = 'open-1'").all())
    assert booked == {"open-1-1": True, "open-1-slow": True, "open-1-2": True}
    assert sums(url, "open-1") == {"g-open": Decimal("39.00")}


def test_on_a_plan_credits_pay_only_past_the_included_quota_in_time_order(clean_db, settings):
    url = clean_db
    create_account(url, "free-cr", "free")  # 100 included, then blocked: credits let it run on
    create_account(url, "payg-cr2", "payg")  # no quota: credits pay from the first execution
    give(url, "free-cr", "g-free", 10, t(1), t(1, 0, month=12))
    give(url, "payg-cr2", "g-payg2", 2, t(1), t(1, 0, month=12))
    ingest(url, [event("free-cr", i, t(2 + i // 60, 1, i % 60)) for i in range(60)]
           + [event("payg-cr2", i, t(2, 2, i)) for i in range(3)])
    consume(url, ["free-cr", "payg-cr2"], t(25))  # both accounts in one booking
    ingest(url, [event("free-cr", 100 + i, t(4, 1, i)) for i in range(45)]  # 105 in all: #101..#105 past the quota
           + [event("free-cr", 200, t(1, 23, 0), sandbox=True)])  # a sandbox try: never paid on a plan
    consume(url, ["free-cr"], t(25))
    with get_engine(url).begin() as conn:
        funded = sorted(r[0] for r in conn.exec_driver_sql(
            "SELECT event_id FROM credit_bookings WHERE funded ORDER BY 1").all())
    assert funded == ["free-cr-140", "free-cr-141", "free-cr-142", "free-cr-143", "free-cr-144",
                      "payg-cr2-0", "payg-cr2-1"]
    assert sums(url, "free-cr") == {"g-free": Decimal("5.00")}
    close_chunk(url, settings, t(3, 2, month=11))
    free, lines = invoice(url, "free-cr")
    assert free.total == Decimal("0.00") and ("credit_usage", "0.00") in lines
    assert not any(k == "blocked_usage" for k, _ in lines)  # the five past the quota were paid with credits


def test_plan_accounts_past_their_quota_in_one_booking_are_each_ranked_in_their_own_time_order(clean_db):
    url = clean_db
    for a in ("free-a", "free-b"):  # 100 included each; interleaved in time, booked together
        create_account(url, a, "free")
        give(url, a, f"g-{a}", 10, t(1), t(1, 0, month=12))
    ingest(url, [event("free-a", i, t(2, 1, i)) for i in range(60)] + [event("free-b", i, t(2, 1, i, 30)) for i in range(60)])
    consume(url, ["free-a", "free-b"], t(25))
    ingest(url, [event("free-a", 100 + i, t(4, 1, i)) for i in range(45)]  # 105: #101..#105 past the quota
           + [event("free-b", 100 + i, t(4, 1, i, 30)) for i in range(42)])  # 102: #101, #102
    consume(url, ["free-a", "free-b"], t(25))
    with get_engine(url).begin() as conn:
        funded = sorted(r[0] for r in conn.exec_driver_sql(
            "SELECT event_id FROM credit_bookings WHERE funded ORDER BY 1").all())
    assert funded == [f"free-a-{i}" for i in range(140, 145)] + ["free-b-140", "free-b-141"]
    assert (sums(url, "free-a"), sums(url, "free-b")) == ({"g-free-a": Decimal("5.00")}, {"g-free-b": Decimal("8.00")})


def test_an_account_booked_long_ago_is_caught_up_from_its_own_executions_beside_a_recently_booked_one(clean_db):
    url = clean_db
    for a in ("quiet", "busy"):
        credits_only(url, a)
        give(url, a, f"g-{a}", 50, t(1), t(1, 0, month=12))
    ingest(url, [event("quiet", 1, t(3), "claude-sonnet"), event("busy", 1, t(3), "claude-sonnet")])
    consume(url, ["quiet", "busy"], t(25))
    ingest(url, [event("quiet", 2, t(4), "claude-haiku")])  # its booking never ran (a recorder died)
    with get_engine(url).begin() as conn:  # and its last booking is long past: read from its own rows
        conn.exec_driver_sql("UPDATE credit_accounts SET booked_through = booked_through - interval '1 hour' "
                             "WHERE account_id = 'quiet'")
    ingest(url, [event("busy", 2, t(5), "claude-haiku")])
    consume(url, ["quiet", "busy"], t(25))  # one booking: busy from the last seconds' rows, quiet from its own
    with get_engine(url).begin() as conn:
        booked = sorted(r[0] for r in conn.exec_driver_sql("SELECT event_id FROM credit_bookings WHERE funded").all())
    assert booked == ["busy-1", "busy-2", "quiet-1", "quiet-2"]
    assert (sums(url, "quiet"), sums(url, "busy")) == ({"g-quiet": Decimal("44.00")}, {"g-busy": Decimal("44.00")})


def test_the_recent_read_starts_each_account_at_its_own_last_booking_and_skips_what_is_decided(clean_db):
    url = clean_db
    for a in ("early", "late"):
        credits_only(url, a)
    ingest(url, [event("early", 1, t(3)), event("late", 1, t(3))])
    with get_engine(url).begin() as conn:
        between = conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
        repo.record_bookings_many(conn, [("early", "early-1", 0, False)])  # decided already
    ingest(url, [event("early", 2, t(4)), event("late", 2, t(4))])
    with get_engine(url).begin() as conn:
        found = repo.unbooked_recent(conn, {"early": between - timedelta(hours=1), "late": between})
    assert {a: [u.event_id for u in rows] for a, rows in found.items()} == {
        "early": ["early-2"], "late": ["late-2"]}
