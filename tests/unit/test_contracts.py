"""Committed-use contracts (billing/contracts.py): hand-computed months, amendments, summaries, refusals.

Rates: standard $0.008; 20% off -> $0.0064, 35% off -> $0.0052, 45% off -> $0.0044.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from billing.catalog import CatalogVersion, load_catalog, parse_catalog
from billing.contracts import (
    Amendment,
    AmendmentKind,
    Contract,
    ContractError,
    ContractHistory,
    ContractLineKind,
    anniversary,
    contract_month,
    create_contract,
    describe_summary,
    extend_term,
    raise_commitment,
    reconcile_month,
    summarize_term,
    term_months,
    terminate_early,
    utc_day,
)
from billing.errors import BillingError, CatalogError
from billing.money import round_money
from billing.periods import Period
from billing.rating import ModelUsage

D = Decimal
UTC = timezone.utc
CATALOG = load_catalog()
V1 = CATALOG.versions[0]
OCT_2026 = Period.parse("2026-10")
CATALOG_TEXT = (Path(__file__).resolve().parents[2] / "billing" / "catalog.toml").read_text()


def day(text: str) -> datetime:
    return utc_day(date.fromisoformat(text))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def p(text: str) -> Period:
    return Period.parse(text)


def new(commitment: int = 100_000, start: str = "2026-10-17", months: int = 12, *, account: str = "acme",
        contract_id: str = "ctr-1", others=(), earliest: str = "2026-10") -> Contract:
    return create_contract(CATALOG, account=account, commitment=commitment, start=day(start), months=months,
                           earliest_open_period=p(earliest), others=others, contract_id=contract_id)


def usage(used: int, committed: int, model: str = "claude-haiku") -> list[ModelUsage]:
    return [ModelUsage(model, used, max(0, used - committed))]


def reconcile(history, period: str, used: int):
    h = history if isinstance(history, ContractHistory) else ContractHistory(history)
    month = contract_month(h, V1, p(period))
    return reconcile_month(h, V1, p(period), usage(used, month.committed))


def lines(r):
    return [(ln.kind, ln.quantity, ln.unit_price, ln.amount) for ln in r.lines]


# ---- the catalog section ----------------------------------------------------------------------------
@pytest.mark.parametrize("commitment, discount, rate", [
    (100_000, "0.20", "0.0064"), (499_999, "0.20", "0.0064"),
    (500_000, "0.35", "0.0052"), (999_999, "0.35", "0.0052"),
    (1_000_000, "0.45", "0.0044"), (25_000_000, "0.45", "0.0044"),
])
def test_catalog_tier_table_gives_the_briefs_discount_and_rate(commitment, discount, rate):
    cu = V1.contracts
    assert (cu.standard_rate, cu.minimum_commitment, cu.minimum_months) == (D("0.008"), 100_000, 12)
    assert cu.tier(commitment).discount == D(discount)
    assert cu.discounted_rate(commitment) == D(rate)


def test_catalog_tier_below_the_minimum_commitment_is_refused():
    with pytest.raises(CatalogError, match="^commitment: must be at least 100,000 executions a month, got 99,999$"):
        V1.contracts.tier(99_999)


def test_catalog_version_without_a_contracts_section_still_parses_and_prices_no_contract():
    bare = V1.model_copy(update={"contracts": None})
    again = CatalogVersion.model_validate(bare.model_dump())
    assert again.contracts is None
    text = CATALOG_TEXT.split("  # -- Enterprise committed use")[0] + "  # -- LLM models" + \
        CATALOG_TEXT.split("  # -- LLM models")[1]
    assert parse_catalog(text).versions[0].contracts is None
    with pytest.raises(ContractError, match="^catalog_version: catalog version '2026-01-01.1' does not price"):
        create_contract(parse_catalog(text), account="acme", commitment=100_000, start=day("2026-10-17"),
                        months=12, earliest_open_period=OCT_2026)


@pytest.mark.parametrize("edit, message", [
    (("{ min_commitment = 500000, discount = 0.35 }", "{ min_commitment = 50000, discount = 0.35 }"),
     "versions[0].contracts.tiers[1].min_commitment: must be greater than that of tiers[0]"),
    (("{ min_commitment = 100000, discount = 0.20 }", "{ min_commitment = 1000, discount = 0.20 }"),
     "versions[0].contracts.tiers[0].min_commitment: must equal minimum_commitment (100000)"),
    (("discount = 0.45", "discount = 1"), "versions[0].contracts.tiers[2].discount: must be a fraction"),
])
def test_catalog_refuses_a_malformed_tier_table_naming_the_field(edit, message):
    with pytest.raises(CatalogError) as ei:
        parse_catalog(CATALOG_TEXT.replace(*edit))
    assert message in str(ei.value)


# ---- creating a contract --------------------------------------------------------------------------
def test_create_contract_records_the_catalog_version_in_force_on_the_start_day():
    c = new()
    assert (c.account, c.commitment, c.start, c.months, c.catalog_version, c.id) == (
        "acme", 100_000, at("2026-10-17T00:00"), 12, "2026-01-01.1", "ctr-1")


@pytest.mark.parametrize("kwargs, message", [
    ({"commitment": 99_999}, "commitment: must be at least 100,000 executions a month (the minimum commitment), "
                             "got 99,999"),
    ({"months": 11}, "months: must be at least 12 (a contract runs at least 12 months), got 11"),
    ({"start": "2026-09-30"}, "start: 2026-09-30 falls in 2026-09, which is already closed; the earliest open "
                              "period is 2026-10"),
    ({"start": "2025-12-01", "earliest": "2025-12"}, "start: no catalog version in force at 2025-12-01"),
    ({"account": " "}, "account: must be a non-empty account id"),
])
def test_invalid_contract_is_refused_with_one_line_naming_field_and_rule(kwargs, message):
    with pytest.raises(ContractError) as ei:
        new(**kwargs)
    assert str(ei.value).startswith(message)
    assert "\n" not in str(ei.value)
    assert ei.value.field == message.split(":")[0]
    assert isinstance(ei.value, BillingError) and isinstance(ei.value, ValueError)


@pytest.mark.parametrize("field, value", [
    ("commitment", 100_000.0), ("commitment", True), ("commitment", "100000"), ("months", 12.0),
    ("start", datetime(2026, 10, 17)), ("start", at("2026-10-17T09:00")), ("start", date(2026, 10, 17)),
])
def test_contract_fields_of_the_wrong_type_or_not_a_utc_day_are_refused(field, value):
    kwargs = {"account": "acme", "commitment": 100_000, "start": day("2026-10-17"), "months": 12, field: value}
    with pytest.raises(ContractError) as ei:
        create_contract(CATALOG, earliest_open_period=OCT_2026, **kwargs)
    assert ei.value.field == field


def test_a_start_in_another_timezone_at_utc_midnight_is_the_same_utc_day():
    paris_midnight_utc = datetime(2026, 10, 17, 2, tzinfo=timezone(timedelta(hours=2)))
    c = create_contract(CATALOG, account="acme", commitment=100_000, start=paris_midnight_utc, months=12,
                        earliest_open_period=OCT_2026)
    assert c.start == day("2026-10-17") and c.start.tzinfo == UTC


def test_contract_overlapping_another_contract_of_the_account_is_refused():
    first = new(start="2026-10-17", contract_id="ctr-1")  # ends 2027-10-17
    with pytest.raises(ContractError) as ei:
        new(start="2027-10-16", contract_id="ctr-2", others=[first])
    assert str(ei.value) == (
        "start: the term 2027-10-16 to 2028-10-16 (exclusive) overlaps contract ctr-1 of account 'acme' "
        "(2026-10-17 to 2027-10-17); an account has one contract at a time")


def test_contracts_that_touch_end_to_start_or_belong_to_other_accounts_do_not_overlap():
    first = new(start="2026-10-17", contract_id="ctr-1")
    assert new(start="2027-10-17", contract_id="ctr-2", others=[first]).start == day("2027-10-17")
    assert new(start="2026-11-01", account="globex", contract_id="ctr-3", others=[first]).account == "globex"


def test_an_early_terminated_contract_frees_the_rest_of_its_term_for_a_new_contract():
    first = ContractHistory(new(start="2026-10-17"))
    first = first.amend(terminate_early(first, at("2027-03-09T15:00")))
    assert new(start="2027-03-10", contract_id="ctr-2", others=[first]).start == day("2027-03-10")
    with pytest.raises(ContractError, match="overlaps contract ctr-1"):
        new(start="2027-03-09", contract_id="ctr-2", others=[first])


# ---- the term's months ----------------------------------------------------------------------------
def test_twelve_months_from_the_17th_touch_13_calendar_months_with_prorated_first_and_last():
    months = term_months(new(), V1)
    assert len(months) == 13
    first, last = months[0], months[-1]
    assert (first.period, first.start, first.end, first.days) == (
        p("2026-10"), day("2026-10-17"), day("2026-11-01"), 15)
    assert (last.period, last.start, last.end, last.days) == (p("2027-10"), day("2027-10-01"), day("2027-10-17"), 16)
    # 100,000 x 15/31 = 48,387.0967... -> 48,387; 100,000 x 16/31 = 51,612.903... -> 51,613
    assert (first.committed, last.committed) == (48_387, 51_613)
    assert [m.committed for m in months[1:-1]] == [100_000] * 11
    assert [m.prorated for m in months] == [True] + [False] * 11 + [True]
    assert sum(m.committed for m in months) == 1_200_000
    assert [m.number for m in months] == list(range(1, 14)) and [m.last for m in months] == [False] * 12 + [True]


def test_first_month_from_the_17th_of_a_31_day_month_is_billed_48387_executions_for_309_68():
    r = reconcile(new(), "2026-10", 40_000)
    # 48,387 x $0.0064 = $309.6768 -> $309.68 (half-up, once per line)
    assert lines(r) == [
        (ContractLineKind.committed_use, D(48_387), D("0.0064"), D("309.68")),
        (ContractLineKind.committed_usage, D(40_000), D(0), D(0)),
    ]
    assert r.lines[0].description == ("Committed use — 100,000 executions/month (20% off), 15/31 days (Oct 17–31): "
                                      "48,387 × $0.0064")
    assert (r.committed, r.used, r.shortfall, r.overage, r.total) == (48_387, 40_000, 8_387, 0, D("309.68"))
    assert r.utilisation == D("0.8267")  # 40,000 / 48,387 = 0.82667...


def test_overage_in_a_prorated_month_starts_above_the_prorated_commitment():
    r = reconcile(new(), "2026-10", 50_000)
    # 309.68 + 1,613 x $0.008 = 12.904 -> 12.90
    assert (r.overage, r.overage_charge, r.total) == (1_613, D("12.90"), D("322.58"))


def test_last_month_of_the_term_is_prorated_and_the_term_bills_exactly_twelve_months():
    months = term_months(new(), V1)
    charges = [reconcile(new(), str(m.period), m.committed).total for m in months]
    assert charges[-1] == D("330.32")  # 51,613 x $0.0064 = 330.3232
    assert sum(charges) == D("7680.00") == 12 * D("640.00")


def test_a_term_starting_on_the_1st_has_exactly_its_number_of_whole_months():
    months = term_months(new(start="2026-11-01"), V1)
    assert [str(m.period) for m in months][::11] == ["2026-11", "2027-10"]
    assert len(months) == 12 and all(not m.prorated and m.committed == 100_000 for m in months)


def test_a_13_month_term_from_the_17th_ends_with_a_prorated_14th_contract_month():
    months = term_months(new(months=13), V1)
    assert len(months) == 14
    last = months[-1]
    assert (last.period, last.days, last.end) == (p("2027-11"), 16, day("2027-11-17"))
    # 100,000 x 16/30 = 53,333.33 -> 53,333; x $0.0064 = $341.3312 -> $341.33
    assert last.committed == 53_333
    r = reconcile(new(months=13), "2027-11", 60_000)
    assert (r.committed_charge, r.overage, r.overage_charge, r.total) == (D("341.33"), 6_667, D("53.34"), D("394.67"))


def test_a_term_from_the_31st_ends_at_the_end_of_a_shorter_anniversary_month():
    assert anniversary(day("2026-01-31"), 13) == day("2027-03-01")  # through 2027-02-28
    assert anniversary(day("2026-10-17"), 12) == day("2027-10-17")
    months = term_months(new(start="2026-01-31", months=13, earliest="2026-01"), V1)
    assert (months[0].days, months[0].committed) == (1, 3_226)  # 100,000 / 31 = 3,225.8 -> 3,226
    assert (months[-1].period, months[-1].prorated) == (p("2027-02"), False)


def test_contract_month_outside_the_term_is_none():
    assert contract_month(new(), V1, p("2026-09")) is None
    assert contract_month(new(), V1, p("2027-11")) is None
    assert contract_month(new(), V1, p("2027-10")).committed == 51_613


# ---- monthly reconciliation: the brief's hand-computed months --------------------------------------
@pytest.mark.parametrize("used, committed_use, overage, shortfall, overage_charge, total, util", [
    (80_000, "640.00", 0, 20_000, "0.00", "640.00", "0.8000"),
    (100_000, "640.00", 0, 0, "0.00", "640.00", "1.0000"),
    (140_000, "640.00", 40_000, 0, "320.00", "960.00", "1.4000"),
    (0, "640.00", 0, 100_000, "0.00", "640.00", "0.0000"),
])
def test_whole_month_against_a_100000_commitment(used, committed_use, overage, shortfall, overage_charge,
                                                 total, util):
    r = reconcile(new(), "2026-11", used)
    assert (r.committed, r.used, r.overage, r.shortfall) == (100_000, used, overage, shortfall)
    assert (r.committed_charge, r.overage_charge, r.total) == (D(committed_use), D(overage_charge), D(total))
    assert r.utilisation == D(util)
    assert sum(ln.amount for ln in r.lines) == r.total


def test_140000_used_bills_a_committed_use_line_and_an_overage_line():
    r = reconcile(new(), "2026-11", 140_000)
    assert lines(r) == [
        (ContractLineKind.committed_use, D(100_000), D("0.0064"), D("640.00")),
        (ContractLineKind.committed_usage, D(140_000), D(0), D(0)),
        (ContractLineKind.contract_overage, D(40_000), D("0.008"), D("320.00")),
    ]
    assert [ln.description for ln in r.lines] == [
        "Committed use — 100,000 executions/month (20% off): 100,000 × $0.0064",
        "Used 140,000 of 100,000 committed executions (140.0%)",
        "Above commitment — claude-haiku: 40,000 executions × $0.008",
    ]
    assert [ln.key for ln in r.lines] == ["contract|ctr-1|committed_use|0|100000", "contract|ctr-1|committed_usage",
                                          "contract|ctr-1|contract_overage|claude-haiku"]
    assert {ln.version for ln in r.lines} == {"2026-01-01.1"}


@pytest.mark.parametrize("commitment, used, committed_use, overage_charge, total", [
    (500_000, 450_000, "2600.00", "0.00", "2600.00"),     # 500,000 x $0.0052
    (500_000, 600_000, "2600.00", "800.00", "3400.00"),   # + 100,000 x $0.008
    (999_999, 999_999, "5199.99", "0.00", "5199.99"),     # 999,999 x $0.0052 = 5,199.9948
    (1_000_000, 900_000, "4400.00", "0.00", "4400.00"),   # 1,000,000 x $0.0044
    (1_000_000, 1_250_000, "4400.00", "2000.00", "6400.00"),
])
def test_higher_tiers_bill_at_their_discount(commitment, used, committed_use, overage_charge, total):
    r = reconcile(new(commitment=commitment), "2026-12", used)
    assert (r.committed_charge, r.overage_charge, r.total) == (D(committed_use), D(overage_charge), D(total))


def test_overage_is_billed_per_model_in_model_order():
    c = ContractHistory(new())
    r = reconcile_month(c, V1, p("2026-11"), [ModelUsage("gpt-4o", 90_001, 30_000),
                                              ModelUsage("claude-haiku", 50_000, 10_001)])
    over = [(ln.model, ln.quantity, ln.amount) for ln in r.lines if ln.kind is ContractLineKind.contract_overage]
    assert over == [("claude-haiku", D(10_001), D("80.01")), ("gpt-4o", D(30_000), D("240.00"))]
    assert (r.used, r.overage, r.total) == (140_001, 40_001, D("960.01"))  # 80.008 -> 80.01


def test_a_model_with_no_executions_above_the_commitment_gets_no_overage_line():
    r = reconcile_month(ContractHistory(new()), V1, p("2026-11"),
                        [ModelUsage("gpt-4o", 90_000, 0), ModelUsage("claude-haiku", 20_000, 10_000)])
    assert [ln.model for ln in r.lines if ln.kind is ContractLineKind.contract_overage] == ["claude-haiku"]


@pytest.mark.parametrize("rows, field", [
    ([ModelUsage("claude-haiku", 140_000, 39_999)], "billable"),   # must be 40,000
    ([ModelUsage("claude-haiku", 80_000, 1)], "billable"),         # nothing above the commitment
    ([ModelUsage("claude-haiku", -1, 0)], "executions"),
    ([ModelUsage("claude-haiku", 10, 11)], "billable"),
    ([ModelUsage("a", 1, 0), ModelUsage("a", 1, 0)], "usage"),
])
def test_inconsistent_usage_is_refused(rows, field):
    with pytest.raises(ContractError) as ei:
        reconcile_month(ContractHistory(new()), V1, p("2026-11"), rows)
    assert ei.value.field == field


def test_reconciling_needs_the_pricing_version_a_stored_contract_and_a_month_of_the_term():
    h = ContractHistory(new())
    other = V1.model_copy(update={"version": "2027-01-01.1"})
    with pytest.raises(ContractError, match="^catalog_version: the contract is priced by catalog version "
                                            "'2026-01-01.1', got '2027-01-01.1'$"):
        reconcile_month(h, other, p("2026-11"), [])
    with pytest.raises(ContractError, match="^id: the contract must be stored"):
        reconcile_month(ContractHistory(replace(h.contract, id=None)), V1, p("2026-11"), [])
    with pytest.raises(ContractError, match=r"^period: 2027-11 is outside the term \(2026-10-17 to 2027-10-17"):
        reconcile_month(h, V1, p("2027-11"), [])


def test_reconciling_the_same_month_twice_gives_the_same_result():
    h = ContractHistory(new())
    assert reconcile(h, "2026-10", 55_555) == reconcile(h, "2026-10", 55_555)


# ---- amendments ------------------------------------------------------------------------------------
def raised_in_month_5() -> ContractHistory:
    h = ContractHistory(new())  # month 5 is 2027-02 (28 days)
    return h.amend(raise_commitment(h, 500_000, at("2027-02-10T23:59")))


def test_raise_in_month_5_takes_effect_the_next_day_and_prorates_the_month_between_commitments():
    h = raised_in_month_5()
    (a,) = h.amendments
    assert (a.kind, a.effective, a.commitment) == (AmendmentKind.raise_commitment, day("2027-02-11"), 500_000)
    feb = contract_month(h, V1, p("2027-02"))
    assert feb.number == 5
    # Feb 1-10 at 100,000: 100,000 x 10/28 = 35,714.29 -> 35,714; Feb 11-28 at 500,000: x 18/28 = 321,428.57 -> 321,429
    assert [(s.days, s.commitment, s.committed, s.rate) for s in feb.segments] == [
        (10, 100_000, 35_714, D("0.0064")), (18, 500_000, 321_429, D("0.0052"))]
    assert feb.committed == 357_143
    r = reconcile(h, "2027-02", 300_000)
    # 35,714 x 0.0064 = 228.5696 -> 228.57; 321,429 x 0.0052 = 1,671.4308 -> 1,671.43
    assert [ln.amount for ln in r.lines if ln.kind is ContractLineKind.committed_use] == [D("228.57"), D("1671.43")]
    assert "10/28 days (Feb 1–10)" in r.lines[0].description and "18/28 days (Feb 11–28)" in r.lines[1].description
    assert (r.total, r.shortfall) == (D("1900.00"), 57_143)
    assert contract_month(h, V1, p("2027-01")).committed == 100_000  # months before are unchanged
    assert reconcile(h, "2027-03", 500_000).total == D("2600.00")    # whole months after: the new tier
    assert h.commitment_on(day("2027-02-10")) == 100_000 and h.commitment_on(day("2027-02-11")) == 500_000


def test_a_lowered_commitment_mid_term_is_refused_with_the_reason():
    h = raised_in_month_5()
    with pytest.raises(ContractError) as ei:
        raise_commitment(h, 200_000, at("2027-04-02T10:00"))
    assert str(ei.value) == (
        "commitment: cannot be lowered mid-term (from 500,000 to 200,000 a month): the discount was granted "
        "for committing to 500,000 a month until 2027-10-17; a lower commitment needs a new contract after "
        "this term")
    with pytest.raises(ContractError, match="^commitment: is already 500,000 a month; a raise must be higher$"):
        raise_commitment(h, 500_000, at("2027-04-02T10:00"))


def test_a_raise_never_lowers_a_prorated_months_committed_executions_by_rounding():
    h = ContractHistory(new(start="2026-02-03", earliest="2026-02"))  # last month: Feb 1-2, 2027 (2/28)
    assert contract_month(h, V1, p("2027-02")).committed == 7_143      # 100,000 x 2/28 = 7,142.86
    h = h.amend(raise_commitment(h, 100_001, at("2027-02-01T09:00")))
    feb = contract_month(h, V1, p("2027-02"))
    # exact 3,571.43 + 3,571.46 = 7,142.89 -> 7,143 (rounding each half would give 3,571 + 3,571 = 7,142)
    assert [s.committed for s in feb.segments] == [3_571, 3_572] and feb.committed == 7_143


def test_a_raise_before_the_start_applies_to_the_whole_term():
    h = ContractHistory(new())
    h = h.amend(raise_commitment(h, 1_000_000, at("2026-09-01T12:00")))
    assert h.amendments[0].effective == day("2026-10-17")
    assert [len(m.segments) for m in term_months(h, V1)] == [1] * 13
    assert reconcile(h, "2026-11", 1_000_000).total == D("4400.00")


def test_a_raise_on_the_last_day_of_the_term_or_after_it_is_refused():
    h = ContractHistory(new())
    with pytest.raises(ContractError, match=r"^requested_at: the term ends on 2027-10-17 \(exclusive\), so a raise"):
        raise_commitment(h, 200_000, at("2027-10-16T08:00"))
    with pytest.raises(ContractError, match="^contract: the term ended on 2027-10-17"):
        raise_commitment(h, 200_000, at("2027-10-17T00:00"))


def test_extending_the_term_makes_the_former_last_month_whole_and_prorates_the_new_last_month():
    h = ContractHistory(new())
    h = h.amend(extend_term(h, 3, at("2027-06-30T12:00")))
    months = term_months(h, V1)
    assert (h.months, h.end, len(months)) == (15, day("2028-01-17"), 16)
    oct_2027 = contract_month(h, V1, p("2027-10"))
    assert (oct_2027.prorated, oct_2027.committed) == (False, 100_000)
    assert (months[-1].period, months[-1].days, months[-1].committed) == (p("2028-01"), 16, 51_613)


def test_extending_into_the_accounts_next_contract_is_refused():
    h = ContractHistory(new())
    nxt = new(start="2027-12-01", contract_id="ctr-2", others=[h])
    with pytest.raises(ContractError) as ei:
        extend_term(h, 2, at("2027-06-30T12:00"), others=[nxt])
    assert ei.value.field == "extra_months" and "overlaps contract ctr-2" in str(ei.value)
    assert extend_term(h, 1, at("2027-06-30T12:00"), others=[nxt]).extra_months == 1  # ends 2027-11-17


@pytest.mark.parametrize("extra", [0, -1, 1.5, True])
def test_extension_must_be_a_whole_positive_number_of_months(extra):
    with pytest.raises(ContractError) as ei:
        extend_term(ContractHistory(new()), extra, at("2027-01-01T00:00"))
    assert ei.value.field == "extra_months"


def test_early_termination_bills_the_served_days_and_a_fee_for_the_rest_of_the_term():
    h = ContractHistory(new())
    h = h.amend(terminate_early(h, at("2027-03-09T15:00")))
    assert (h.end, h.scheduled_end) == (day("2027-03-10"), day("2027-10-17"))
    months = term_months(h, V1)
    assert [str(m.period) for m in months][-1] == "2027-03" and len(months) == 6
    mar = months[-1]
    # served Mar 1-9: 100,000 x 9/31 = 29,032.26 -> 29,032 x $0.0064 = 185.8048 -> 185.80
    assert (mar.last, mar.days, mar.committed) == (True, 9, 29_032)
    # remaining: Mar 10-31 22/31 -> 70,968; Apr-Sep 6 x 100,000; Oct 1-16 16/31 -> 51,613: 722,581 executions
    fee = mar.termination_fee
    assert (fee.effective, fee.committed, fee.rate, fee.amount) == (
        day("2027-03-10"), 722_581, D("0.0064"), D("4624.52"))
    r = reconcile(h, "2027-03", 10_000)
    assert lines(r)[-1] == (ContractLineKind.termination_fee, D(722_581), D("0.0064"), D("4624.52"))
    assert r.lines[-1].description == "Early termination — committed use 2027-03-10 to 2027-10-16: 722,581 × $0.0064"
    assert (r.committed_charge, r.termination_fee, r.total) == (D("185.80"), D("4624.52"), D("4810.32"))
    # what was billed + the fee = what the whole term would have billed for its commitment (to a cent or so)
    served = sum(m.committed for m in months)
    assert served + fee.committed == 1_200_000


def test_early_termination_fee_is_priced_at_the_raised_commitment():
    h = raised_in_month_5()
    h = h.amend(terminate_early(h, at("2027-08-31T20:00")))  # effective 2027-09-01: Aug is the last month
    assert contract_month(h, V1, p("2027-09")) is None
    fee = contract_month(h, V1, p("2027-08")).termination_fee
    # Sep 500,000 + Oct 1-16 500,000 x 16/31 = 258,064.5 -> 258,065 = 758,065 x $0.0052 = 3,941.938 -> 3,941.94
    assert (fee.commitment, fee.committed, fee.amount) == (500_000, 758_065, D("3941.94"))


def test_termination_before_the_start_at_the_end_or_twice_is_refused():
    h = ContractHistory(new())
    with pytest.raises(ContractError, match=r"^requested_at: the contract has not started \(it starts 2026-10-17\)"):
        terminate_early(h, at("2026-10-16T10:00"))
    with pytest.raises(ContractError, match="^requested_at: the term already ends on 2027-10-17"):
        terminate_early(h, at("2027-10-16T10:00"))
    t = h.amend(terminate_early(h, at("2027-03-09T15:00")))
    for amend in (lambda: terminate_early(t, at("2027-03-09T16:00")),
                  lambda: raise_commitment(t, 500_000, at("2027-03-09T16:00")),
                  lambda: extend_term(t, 1, at("2027-03-09T16:00"))):
        with pytest.raises(ContractError, match="^contract: the contract was terminated effective 2027-03-10"):
            amend()


def test_amendments_are_applied_in_the_order_they_were_requested():
    h = raised_in_month_5()
    with pytest.raises(ContractError, match="^requested_at: .* is before the previous amendment"):
        extend_term(h, 1, at("2027-01-05T00:00"))


def test_a_history_rebuilt_from_storage_is_replayed_through_the_same_rules():
    h = raised_in_month_5()
    h = h.amend(extend_term(h, 2, at("2027-05-01T09:00")))
    stored = [(a.kind.value, a.requested_at, a.effective, a.commitment, a.extra_months) for a in h.amendments]
    rebuilt = ContractHistory(h.contract, tuple(Amendment(*row) for row in stored))
    assert rebuilt == h and term_months(rebuilt, V1) == term_months(h, V1)
    lowered = Amendment(AmendmentKind.raise_commitment, at("2027-06-01T00:00"), day("2027-06-02"), commitment=200_000)
    with pytest.raises(ContractError, match="^commitment: cannot be lowered mid-term"):
        h.amend(lowered)
    backdated = Amendment(AmendmentKind.raise_commitment, at("2027-06-01T00:00"), day("2027-01-01"), commitment=900_000)
    with pytest.raises(ContractError, match=r"^amendments: \[2\] \(raise_commitment requested .*\) does not follow"):
        h.amend(backdated)


def test_an_amendment_with_fields_of_another_kind_is_refused():
    with pytest.raises(ContractError, match="^extra_months: is not allowed for raise_commitment$"):
        Amendment(AmendmentKind.raise_commitment, at("2027-01-01T00:00"), day("2027-01-02"), 200_000, 3)
    with pytest.raises(ContractError, match="^commitment: is required for raise_commitment$"):
        Amendment(AmendmentKind.raise_commitment, at("2027-01-01T00:00"), day("2027-01-02"))
    with pytest.raises(ContractError, match="^kind: must be one of raise_commitment, extend_term, terminate, "
                                            "got 'lower'"):
        Amendment("lower", at("2027-01-01T00:00"), day("2027-01-02"))


# ---- term summary ----------------------------------------------------------------------------------
def whole_term(h: ContractHistory, used_by_number) -> list:
    return [reconcile(h, str(m.period), used_by_number(m)) for m in term_months(h, V1)]


def test_term_summary_totals_a_13_calendar_month_term():
    h = ContractHistory(new())
    # first month used 40,000 (of 48,387); months 2-12 alternate 80,000 / 140,000; last 51,613 (all of it)
    used = {1: 40_000, 13: 51_613} | {n: (80_000 if n % 2 else 140_000) for n in range(2, 13)}
    rs = whole_term(h, lambda m: used[m.number])
    s = summarize_term(h, V1, list(reversed(rs)))  # any order
    assert (s.months, s.committed, s.used) == (13, 1_200_000, 40_000 + 51_613 + 6 * 140_000 + 5 * 80_000)
    assert (s.overage, s.shortfall) == (6 * 40_000, 8_387 + 5 * 20_000)
    assert (s.committed_charges, s.overage_charges, s.termination_fee) == (D("7680.00"), D("1920.00"), D("0.00"))
    assert s.total_charges == D("9600.00") == sum(r.total for r in rs)
    assert s.months_under_commitment == 6  # month 1 and the five 80,000 months
    assert s.average_utilisation == D("1.1097")  # 1,331,613 / 1,200,000 = 1.109677...
    assert not s.terminated_early and (s.start, s.end) == (day("2026-10-17"), day("2027-10-17"))


def test_term_summary_of_an_early_terminated_contract_includes_the_fee():
    h = ContractHistory(new())
    h = h.amend(terminate_early(h, at("2027-03-09T15:00")))
    s = summarize_term(h, V1, whole_term(h, lambda m: m.committed))
    assert (s.terminated_early, s.months, s.termination_fee, s.average_utilisation) == (True, 6, D("4624.52"), D(1))
    assert s.total_charges == D("309.68") + 4 * D("640.00") + D("185.80") + D("4624.52")
    assert describe_summary(s).splitlines()[0] == (
        "Contract ctr-1 (acme), 2026-10-17 to 2027-03-09, terminated early: 6 contract months")


def test_term_summary_refuses_a_missing_a_repeated_or_a_stale_month():
    h = ContractHistory(new())
    rs = whole_term(h, lambda m: 1_000)
    with pytest.raises(ContractError, match="^reconciliations: missing month"):
        summarize_term(h, V1, rs[:-1])
    with pytest.raises(ContractError, match="^reconciliations: 2026-11 is reconciled more than once$"):
        summarize_term(h, V1, rs + [rs[1]])
    raised = h.amend(raise_commitment(h, 500_000, at("2027-02-10T12:00")))
    with pytest.raises(ContractError, match="^reconciliations: 2027-02: recorded committed 100,000 but the contract "
                                            "says 357,143$"):
        summarize_term(raised, V1, rs)


def test_describe_summary_reads_as_three_lines():
    h = ContractHistory(new())
    s = summarize_term(h, V1, whole_term(h, lambda m: 80_000 if m.number == 2 else m.committed))
    assert describe_summary(s).splitlines()[1:] == [
        "Committed 1,200,000, used 1,180,000 (average utilisation 98.3%), 1 month(s) under commitment",
        "Committed use $7,680.00 + overage $0.00 (0 executions) = $7,680.00",
    ]


def test_reconciliation_lines_are_rounded_once_per_line():
    for r in whole_term(raised_in_month_5(), lambda m: m.committed + 1_234):
        for ln in r.lines:
            assert ln.amount == round_money(ln.quantity * ln.unit_price)
