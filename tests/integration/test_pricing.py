"""Complete pricing on real Postgres: token pricing, BYOK, sandbox, rate-card changes, plan and seat
changes mid-month, late usage, PAYG auto-convert, preview == close."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from activities.close import CloseActivities
from activities.deps import Deps
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from models.schemas import AccountRange, CloseChunkInput
from repositories import accounts, invoices, notifications, reports
from services.accounts import change_terms
from services.invoices import explain_invoice, invoice_preview
from tests.factories import OCT_START, create_account, event, events, ingest

OCT = Period.parse("2026-10")
SEP = Period.parse("2026-09")
ALL = AccountRange(after=None, upto="~", count=0)
EIGHT = ("claude-haiku", "claude-sonnet", "gpt-4o-mini", "gpt-4o", "groq-llama", "deepseek-r1",
         "ollama-local", "claude-opus")
BASE_CATALOG = Path(__file__).resolve().parents[2] / "billing" / "catalog.toml"


def cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def close(acts: CloseActivities, period: Period = OCT, push: bool = False):
    inp = CloseChunkInput(period=str(period), index=0, accounts=ALL)
    res = acts.rate_accounts(inp)
    if push:
        acts.push_invoices(inp)
    return res


def invoice(url: str, account_id: str, period: Period = OCT):
    with get_engine(url).begin() as conn:
        inv = invoices.find_invoice(conn, account_id, period)
        return inv, invoices.invoice_lines_of(conn, inv.id)


@pytest.fixture
def acts(settings):
    return CloseActivities(Deps(settings))


def test_token_pricing_charges_every_platform_key_execution_per_model_and_direction(settings, acts):
    url = settings.database_url
    create_account(url, "tok", "pro", pricing="tokens")
    docs = []
    for i, model in enumerate(EIGHT):
        docs.append(event("tok", i, OCT_START + timedelta(hours=i), model,
                          input_tokens=1_000_000 + i, output_tokens=250_000 * (i + 1)))
    docs.append(event("tok", 100, OCT_START + timedelta(days=2), "claude-opus", byok=True,
                      input_tokens=9_000_000, output_tokens=9_000_000))  # BYOK: no token charge
    docs.append(event("tok", 101, OCT_START + timedelta(days=3), "claude-opus", sandbox=True,
                      input_tokens=5_000_000, output_tokens=5_000_000))  # sandbox: never charged
    ingest(url, docs)
    close(acts)
    inv, lines = invoice(url, "tok")

    version = load_catalog().at(OCT_START)
    expected = Decimal("29.00")
    by_key = {(ln.model, ln.direction): ln for ln in lines if ln.kind == "token_usage"}
    assert len(by_key) == 16  # eight models x input/output
    for i, model in enumerate(EIGHT):
        m = version.model(model)
        for direction, tokens, per_m in (("input", 1_000_000 + i, m.user_price_input(version.markup)),
                                         ("output", 250_000 * (i + 1), m.user_price_output(version.markup))):
            line = by_key[(model, direction)]
            assert line.quantity == tokens
            assert line.amount == cents(Decimal(tokens) * per_m / 1_000_000)
            expected += line.amount
    assert inv.total == expected
    assert inv.executions == 9 and inv.byok_executions == 1 and inv.sandbox_executions == 1
    kinds = [ln.kind for ln in lines]
    assert "sandbox" in kinds
    # Our cost: rate-card cost of the eight platform-key executions; BYOK and sandbox cost nothing.
    cost = sum(Decimal(1_000_000 + i) * version.model(m).cost_input_per_mtok / 1_000_000
               + Decimal(250_000 * (i + 1)) * version.model(m).cost_output_per_mtok / 1_000_000
               for i, m in enumerate(EIGHT))
    assert inv.platform_cost == cost


def test_byok_executions_count_against_the_quota_and_pay_overage_per_execution(settings, acts):
    url = settings.database_url
    create_account(url, "byok", "pro", overage=True)
    ingest(url, events("byok", 5_004, step=timedelta(minutes=8)))
    ingest(url, [event("byok", 9_000 + i, OCT_START + timedelta(days=29, minutes=i), byok=True) for i in range(6)])
    close(acts)
    inv, _ = invoice(url, "byok")
    assert inv.executions == 5_010 and inv.billable_executions == 10 and inv.byok_executions == 6
    # Past the quota: 4 platform-key (one per model) + 6 BYOK claude-haiku executions. Per model
    # line: claude-haiku 7 x $0.005 = $0.035 -> $0.04, three lines of 1 x $0.005 -> $0.01 each.
    assert inv.total == Decimal("29.00") + Decimal("0.04") + 3 * Decimal("0.01")


def write_catalog_with_price_change(tmp_path: Path) -> Path:
    text = BASE_CATALOG.read_text()
    v2 = text[text.index("\n[[versions]]"):]
    v2 = v2.replace('version = "2026-01-01.1"', 'version = "2026-10-15.1"', 1)
    v2 = v2.replace("effective_from = 2026-01-01T00:00:00Z", "effective_from = 2026-10-15T00:00:00Z", 1)
    v2 = v2.replace("overage_rate = 0.005", "overage_rate = 0.006", 1)
    path = tmp_path / "catalog.toml"
    path.write_text(text + "\n" + v2)
    return path


def test_price_change_on_the_15th_prices_each_execution_at_the_rate_in_force_on_separate_lines(settings, tmp_path):
    url = settings.database_url
    s = settings.model_copy(update={"catalog_path": write_catalog_with_price_change(tmp_path)})
    acts = CloseActivities(Deps(s))
    create_account(url, "pc", "pro", overage=True)
    # 5,000 included in the first days, then 10 billable before the 15th and 20 after it.
    ingest(url, events("pc", 5_000, step=timedelta(seconds=30), models=("gpt-4o-mini",)))
    ingest(url, [event("pc", 10_000 + i, datetime(2026, 10, 10, tzinfo=timezone.utc) + timedelta(minutes=i),
                       "gpt-4o-mini") for i in range(10)])
    ingest(url, [event("pc", 20_000 + i, datetime(2026, 10, 20, tzinfo=timezone.utc) + timedelta(minutes=i),
                       "gpt-4o-mini") for i in range(20)])
    close(acts)
    inv, lines = invoice(url, "pc")
    usage = {ln.rate_version: ln for ln in lines if ln.kind == "usage"}
    assert set(usage) == {"2026-01-01.1", "2026-10-15.1"}
    assert (usage["2026-01-01.1"].quantity, usage["2026-01-01.1"].unit_price) == (10, Decimal("0.005"))
    assert (usage["2026-10-15.1"].quantity, usage["2026-10-15.1"].unit_price) == (20, Decimal("0.006"))
    assert inv.total == Decimal("29.00") + Decimal("0.05") + Decimal("0.12")
    explained = explain_invoice(get_engine(url), "pc", "2026-10", s.catalog_path and load_catalog(s.catalog_path))
    after = next(ln for ln in explained.lines if ln.rate_version == "2026-10-15.1" and ln.kind == "usage")
    assert after.executions == 20 and after.first_events[0] == "pc-20000"


def test_plan_change_on_the_10th_prorates_fee_and_quota_and_prices_each_segment_under_its_plan(settings, acts):
    url = settings.database_url
    create_account(url, "up", "free")
    with get_engine(url).begin() as conn:
        change_terms(conn, account_id="up", effective_from=datetime(2026, 10, 10, tzinfo=timezone.utc),
                     reason="upgrade", plan="pro", overage_opt_in=True)
    # 150 executions on the free days (1st-9th), 3,500 on the pro days.
    ingest(url, events("up", 150, step=timedelta(minutes=60), models=("claude-haiku",)))
    ingest(url, events("up", 3_500, start=datetime(2026, 10, 10, tzinfo=timezone.utc), step=timedelta(minutes=6),
                       models=("claude-haiku",), first=1_000))
    close(acts)
    inv, lines = invoice(url, "up")
    fee = next(ln for ln in lines if ln.kind == "base_fee")
    assert fee.unit_price == Decimal("20.58")  # $29 x 22/31 days, rounded to the cent
    assert "22/31 days" in fee.description
    # pooled quota: round(100 x 9/31) + round(5,000 x 22/31) = 29 + 3,548 = 3,577; 3,650 ran.
    included = next(ln for ln in lines if ln.kind == "included_usage")
    assert "of 3,577" in included.description
    overage = [ln for ln in lines if ln.kind == "usage"]
    assert sum(ln.quantity for ln in overage) == 73  # past the pooled quota, all on pro days
    assert inv.total == Decimal("20.58") + cents(Decimal(73) * Decimal("0.005"))


def test_execution_at_the_exact_instant_of_a_plan_change_is_priced_by_the_new_terms(settings, acts):
    """Terms segments are [start, end): the change's first instant belongs to the new terms, the
    instant before it to the old ones."""
    url = settings.database_url
    change = datetime(2026, 10, 10, tzinfo=timezone.utc)
    create_account(url, "switch", "pro", overage=True)
    with get_engine(url).begin() as conn:
        change_terms(conn, account_id="switch", effective_from=change, reason="to payg", plan="payg")
    # pooled quota: round(5,000 x 9/31) = 1,452 on the Pro days + 0 on the PAYG days: fill it first
    ingest(url, events("switch", 1_452, step=timedelta(minutes=8), models=("claude-haiku",)))
    ingest(url, [event("switch", 9_001, change - timedelta(microseconds=1), "gpt-4o"),
                 event("switch", 9_002, change, "claude-opus")])
    close(acts)
    _, lines = invoice(url, "switch")
    usage = {ln.model: ln for ln in lines if ln.kind == "usage"}
    assert set(usage) == {"gpt-4o", "claude-opus"}
    assert (usage["gpt-4o"].quantity, usage["gpt-4o"].unit_price) == (1, Decimal("0.005"))  # Pro overage
    assert "Oct 1–9" in usage["gpt-4o"].description
    assert (usage["claude-opus"].quantity, usage["claude-opus"].unit_price) == (1, Decimal("0.01"))  # PAYG
    assert "Oct 10–31" in usage["claude-opus"].description


def test_team_seat_change_mid_month_prorates_seat_fee_and_quota(settings, acts):
    url = settings.database_url
    create_account(url, "tm", "team", seats=2)
    with get_engine(url).begin() as conn:
        change_terms(conn, account_id="tm", effective_from=datetime(2026, 10, 16, tzinfo=timezone.utc),
                     reason="more seats", seats=4)
    ingest(url, events("tm", 10))
    close(acts)
    inv, lines = invoice(url, "tm")
    fees = [ln for ln in lines if ln.kind == "base_fee"]
    assert [(f.quantity, f.unit_price) for f in fees] == [(2, Decimal("38.23")), (4, Decimal("40.77"))]
    assert inv.total == Decimal("76.46") + Decimal("163.08")
    included = next(ln for ln in lines if ln.kind == "included_usage")
    # round(50,000 x 15/31) + round(100,000 x 16/31) = 24,194 + 51,613
    assert "of 75,807" in included.description


def test_late_event_after_close_is_billed_once_on_the_next_invoice_as_prior_period_usage(settings, acts):
    url = settings.database_url
    create_account(url, "late", "payg", billing_start=datetime(2026, 9, 1, tzinfo=timezone.utc))
    ingest(url, events("late", 30, start=datetime(2026, 9, 1, tzinfo=timezone.utc), models=("gpt-4o",)))
    close(acts, SEP, push=True)
    sep, _ = invoice(url, "late", SEP)
    assert sep.total == Decimal("0.30") and sep.status == "open"

    # Five September executions arrive after September was invoiced; October has its own ten.
    ingest(url, events("late", 5, start=datetime(2026, 9, 20, tzinfo=timezone.utc), models=("gpt-4o",), first=500))
    ingest(url, events("late", 10, models=("gpt-4o",), first=900))
    close(acts)
    oct_inv, lines = invoice(url, "late")
    prior = [ln for ln in lines if ln.kind == "prior_period_usage"]
    assert len(prior) == 1 and prior[0].source_period == "2026-09"
    assert (prior[0].quantity, prior[0].amount) == (5, Decimal("0.05"))
    assert oct_inv.total == Decimal("0.10") + Decimal("0.05")
    sep_again, _ = invoice(url, "late", SEP)
    assert sep_again.total == Decimal("0.30")  # the final invoice never changes

    close(acts)  # rating the draft again bills the late usage once, not twice
    again, lines = invoice(url, "late")
    assert again.total == Decimal("0.15")
    assert len([ln for ln in lines if ln.kind == "prior_period_usage"]) == 1


def test_usage_within_the_grace_window_is_billed_in_its_own_period(settings, acts):
    url = settings.database_url
    create_account(url, "grace", "payg")
    # Ingested on Nov 2nd (within 48 h) but occurred in October: October's invoice carries it.
    ingest(url, [event("grace", 1, datetime(2026, 10, 31, 23, 0, tzinfo=timezone.utc))],
           now=datetime(2026, 11, 2, tzinfo=timezone.utc))
    close(acts)
    inv, _ = invoice(url, "grace")
    assert inv.executions == 1 and inv.total == Decimal("0.01")


def test_payg_account_that_would_have_paid_less_on_pro_moves_to_pro_next_period_and_is_told(settings, acts):
    url = settings.database_url
    create_account(url, "heavy", "payg")
    create_account(url, "light", "payg")
    ingest(url, events("heavy", 8_000, step=timedelta(minutes=5)))  # PAYG: $80 capped at $50; Pro: $44
    ingest(url, events("light", 300))  # PAYG: $3; Pro would be $29
    close(acts)
    with get_engine(url).begin() as conn:
        heavy = accounts.terms_history(conn, "heavy")
        light = accounts.terms_history(conn, "light")
        notes = notifications.notifications_for(conn, "heavy")
        acct = accounts.get_account(conn, "heavy")
    assert [(t.plan, t.overage_opt_in, t.effective_from) for t in heavy][-1] == (
        "pro", True, datetime(2026, 11, 1, tzinfo=timezone.utc))
    assert "auto-convert" in heavy[-1].reason and "$44.00" in heavy[-1].reason
    assert acct.plan == "pro"
    assert len(light) == 1
    assert len(notes) == 1 and notes[0].kind == "plan_auto_converted"
    assert notes[0].payload["pro_total"] == "44.00" and notes[0].payload["payg_total"] == "50.00"
    inv, _ = invoice(url, "heavy")
    assert inv.total == Decimal("50.00") and inv.plan == "payg"


def test_preview_at_period_end_equals_the_close(settings, acts):
    url = settings.database_url
    create_account(url, "pv", "pro", overage=True)
    create_account(url, "pvt", "team", seats=1, overage=True, pricing="tokens")
    ingest(url, events("pv", 5_200, step=timedelta(minutes=8)))
    ingest(url, events("pvt", 400, step=timedelta(minutes=90), models=EIGHT))
    end = OCT.end - timedelta(microseconds=1)
    previews = {a: invoice_preview(get_engine(url), a, end) for a in ("pv", "pvt")}
    close(acts)
    for a, pv in previews.items():
        inv, lines = invoice(url, a)
        assert pv.total == str(inv.total)
        assert [(ln.kind, ln.description, ln.amount) for ln in pv.lines] == [
            (ln.kind, ln.description, str(ln.amount)) for ln in lines]


def test_preview_mid_month_projects_usage_to_month_end(settings):
    url = settings.database_url
    create_account(url, "proj", "payg")
    ingest(url, events("proj", 100, step=timedelta(hours=1)))  # 100 in the first ~4 days
    at = OCT_START + timedelta(days=10)
    pv = invoice_preview(get_engine(url), "proj", at)
    assert pv.total == "1.00" and pv.executions == 100
    assert pv.projected_executions == 310  # 100 x 31/10
    assert pv.projected_total == "3.10"


def test_margin_report_sets_llm_cost_beside_revenue_by_plan_and_model(settings, acts):
    url = settings.database_url
    create_account(url, "m1", "payg")
    ingest(url, [event("m1", i, OCT_START + timedelta(hours=i), "claude-opus", cost_usd="0.10") for i in range(10)])
    ingest(url, [event("m1", 100 + i, OCT_START + timedelta(days=1, hours=i), "claude-haiku", byok=True,
                       cost_usd="0.50") for i in range(5)])  # BYOK: the customer's key, not our cost
    close(acts)
    with get_engine(url).begin() as conn:
        by_plan = {r.key: r for r in reports.margin_report(conn, OCT, "plan")}
        by_model = {r.key: r for r in reports.margin_report(conn, OCT, "model")}
    assert by_plan["payg"].revenue == Decimal("0.15") and by_plan["payg"].cost == Decimal("1.00")
    assert by_model["claude-opus"].revenue == Decimal("0.10") and by_model["claude-opus"].cost == Decimal("1.00")
    assert by_model["claude-haiku"].revenue == Decimal("0.05") and by_model["claude-haiku"].cost == 0
