"""The close's part of committed-use contracts (billing/contracts.py, billing/close.py): how an
enterprise account's month splits between the rater and its contracts, the invoice that results, and
when an enterprise account may leave enterprise. Amounts hand-computed from the brief's tables."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from billing import close
from billing.catalog import load_catalog
from billing.close import AccountFacts, EnterpriseFacts
from billing.contracts import (
    Amendment,
    AmendmentKind,
    ContractError,
    ContractHistory,
    check_leaving_enterprise,
    create_contract,
    split_enterprise_period,
    utc_day,
)
from billing.periods import Period
from billing.rating import TermsSegment, UsageRow

CATALOG = load_catalog()
V = CATALOG.versions[0].version
OCT = Period.parse("2026-10")
UTC = timezone.utc


def day(text: str) -> datetime:
    return utc_day(date.fromisoformat(text))


def contract(start: str = "2026-10-17", commitment: int = 100_000, cid: str = "7") -> ContractHistory:
    return ContractHistory(create_contract(CATALOG, account="acme", commitment=commitment, start=day(start), months=12,
                                           earliest_open_period=OCT, contract_id=cid))


def seg(start: str, end: str, plan: str) -> TermsSegment:
    return TermsSegment(day(start), day(end), plan, overage_opt_in=plan == "pro")


def rows(span: int, model: str, within: int, above: int = 0, **kw) -> list[UsageRow]:
    out = [UsageRow(segment=span, version=V, model=model, executions=within, **kw)] if within else []
    if above:
        out.append(UsageRow(segment=span, version=V, model=model, billable=True, executions=above, **kw))
    return out


def test_a_contract_from_the_17th_leaves_the_days_before_to_the_rater_and_bills_15_31_of_the_commitment():
    segments = [seg("2026-10-01", "2026-10-17", "pro"), seg("2026-10-17", "2026-11-01", "enterprise")]
    split = split_enterprise_period(CATALOG, OCT, segments, [contract()])
    assert split.rated_segments == (segments[0],)
    (span,) = split.spans
    assert (span.start, span.end, span.committed, span.contract.contract.id) == (
        day("2026-10-17"), day("2026-11-01"), 48_387, "7")

    # 50,000 used from the 17th: 1,613 above the 48,387 committed, split over two models
    usage = rows(0, "claude-haiku", 24_000, 813) + rows(0, "gpt-4o", 24_387, 800)
    facts = AccountFacts("acme", [segments[0]], [], 2_581, enterprise=EnterpriseFacts(split, [usage]))
    rating = close.rate(CATALOG, OCT, facts)
    lines = [(ln.kind.value, ln.model, ln.quantity, ln.amount) for ln in rating.rated.lines]
    assert lines == [
        ("base_fee", None, Decimal(1), Decimal("14.97")),  # Pro, 16/31 of $29 (unit rounded first)
        ("committed_use", None, Decimal(48_387), Decimal("309.68")),  # x $0.0064 = $309.6768
        ("committed_usage", None, Decimal(50_000), Decimal("0.00")),
        ("contract_overage", "claude-haiku", Decimal(813), Decimal("6.50")),  # x $0.008 = $6.504
        ("contract_overage", "gpt-4o", Decimal(800), Decimal("6.40")),
    ]
    assert rating.rated.total == Decimal("337.55") and rating.rated.plan == "enterprise"
    assert rating.rated.executions == 50_000 and rating.rated.billable_executions == 1_613
    (rec,) = rating.reconciliations
    assert (rec.committed, rec.used, rec.overage, rec.shortfall, rec.utilisation) == (
        48_387, 50_000, 1_613, 0, Decimal("1.0333"))


def test_byok_counts_against_the_commitment_and_sandbox_tries_do_not():
    split = split_enterprise_period(CATALOG, OCT, [seg("2026-10-01", "2026-11-01", "enterprise")],
                                    [contract("2026-10-01")])
    usage = rows(0, "claude-haiku", 60_000) + rows(0, "claude-haiku", 40_000, byok=True) \
        + rows(0, "claude-haiku", 5_000, sandbox=True)
    rating = close.rate(CATALOG, OCT, AccountFacts("acme", [], [], 0, enterprise=EnterpriseFacts(split, [usage])))
    assert rating.rated.total == Decimal("640.00")
    assert (rating.rated.executions, rating.rated.byok_executions, rating.rated.sandbox_executions) == (
        100_000, 40_000, 5_000)
    assert rating.reconciliations[0].used == 100_000


def test_enterprise_days_no_contract_covers_are_billed_per_execution_at_the_standard_rate():
    ended = contract("2026-10-01").amend(Amendment(AmendmentKind.terminate, datetime(2026, 10, 19, 10, tzinfo=UTC),
                                                   day("2026-10-20")))
    split = split_enterprise_period(CATALOG, OCT, [seg("2026-10-01", "2026-11-01", "enterprise")], [ended])
    assert [(s.start.day, s.end.day if s.end.month == 10 else 32, s.committed, s.contract is not None)
            for s in split.spans] == [(1, 20, 61_290, True), (20, 32, 0, False)]  # 100,000 x 19/31 = 61,290.3
    usage = [rows(0, "gpt-4o", 10_000), rows(1, "gpt-4o", 0, 1_001)]
    rating = close.rate(CATALOG, OCT, AccountFacts("acme", [], [], 0, enterprise=EnterpriseFacts(split, usage)))
    kinds = [ln.kind.value for ln in rating.rated.lines]
    assert kinds == ["committed_use", "committed_usage", "termination_fee", "enterprise_usage"]
    last = rating.rated.lines[-1]
    assert (last.quantity, last.unit_price, last.amount) == (Decimal(1_001), Decimal("0.008"), Decimal("8.01"))
    assert last.description.startswith("Enterprise, no contract in force (Oct 20–31) — gpt-4o")


def test_a_contract_day_the_account_is_not_enterprise_on_is_refused():
    with pytest.raises(ContractError) as info:
        split_enterprise_period(CATALOG, OCT, [seg("2026-10-01", "2026-10-20", "pro"),
                                               seg("2026-10-20", "2026-11-01", "enterprise")], [contract()])
    assert info.value.field == "segments" and "not on the enterprise plan" in str(info.value)


def test_a_month_without_enterprise_days_is_left_to_the_rater():
    assert split_enterprise_period(CATALOG, OCT, [seg("2026-10-01", "2026-11-01", "pro")], [contract()]) is None


def test_an_enterprise_account_leaves_enterprise_on_the_1st_of_a_month_after_its_contracts():
    c = contract()  # through 2027-10-16
    check_leaving_enterprise(day("2027-11-01"), [c])
    with pytest.raises(ContractError, match="under contract 7 until 2027-10-17"):
        check_leaving_enterprise(day("2027-10-01"), [c])
    with pytest.raises(ContractError, match="from the 1st of a month, got 2027-10-20; use 2027-11-01"):
        check_leaving_enterprise(day("2027-10-20"), [c])
