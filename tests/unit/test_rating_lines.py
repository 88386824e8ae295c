"""Every field of every line the general rater writes (keys, versions, directions, costs, segment and
rate-card labels), its exact errors, and prior-period lines. Hand-computed; the line key is what late
usage is billed by difference against, so it is part of the contract."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal, Inexact, localcontext
from pathlib import Path

import pytest

from billing.catalog import load_catalog, parse_catalog
from billing.errors import RatingError
from billing.periods import Period
from billing.rating import (
    AccountTerms,
    BilledLine,
    LineKind,
    ModelUsage,
    RatedLine,
    TermsSegment,
    UsageRow,
    included_executions,
    pooled_included,
    prior_period_lines,
    rate_account,
    rate_period,
    split_billable,
)
from tests.unit.helpers import assert_error

D = Decimal
UTC = timezone.utc
OCT = Period.parse("2026-10")
MID = datetime(2026, 10, 16, tzinfo=UTC)
CATALOG = load_catalog()
V1 = CATALOG.versions[0].version  # "2026-01-01.1"
TEXT = (Path(__file__).resolve().parents[2] / "billing" / "catalog.toml").read_text()
# A second rate card from Oct 16: Team overage $0.004 instead of $0.003 (the fee is unchanged).
TWO_CARDS = parse_catalog(TEXT + "\n" + TEXT.split("\n[[versions]]\n", 1)[1].join(["[[versions]]\n", ""])
                          .replace('version = "2026-01-01.1"', 'version = "2026-10-16.1"')
                          .replace("effective_from = 2026-01-01T00:00:00Z", "effective_from = 2026-10-16T00:00:00Z")
                          .replace("overage_rate = 0.003", "overage_rate = 0.004"))
V2 = "2026-10-16.1"


def rate(segments, rows, catalog=CATALOG):
    return rate_account(catalog, OCT.start, OCT.end, segments, rows)


def whole(plan, **kw):
    return [TermsSegment(OCT.start, OCT.end, plan, **kw)]


# ---- per-execution pricing over two segments and two rate cards ----------------------------------
def test_seat_change_and_new_rate_card_mid_month_write_every_line_field():
    segments = [TermsSegment(OCT.start, MID, "team", 2, overage_opt_in=True),
                TermsSegment(MID, OCT.end, "team", 4, overage_opt_in=False)]
    rows = [
        UsageRow(0, V1, "gpt-4o", billable=True, executions=10, cost=D("0.5")),
        UsageRow(0, V1, "gpt-4o", executions=100, cost=D("1.0")),
        UsageRow(0, V1, "claude-haiku", byok=True, billable=True, executions=3, cost=D("9")),  # BYOK: costs us 0
        UsageRow(1, V2, "gpt-4o", billable=True, executions=7, cost=D("0.2")),  # blocked: no opt-in from the 16th
        UsageRow(1, V2, "claude-haiku", sandbox=True, executions=5, cost=D("4")),
    ]
    inv = rate(segments, rows, TWO_CARDS)
    assert list(inv.lines) == [
        RatedLine(LineKind.base_fee, "Team plan — 2 seats × $79.00, 15/31 days (Oct 1–15) = $38.23 per seat",
                  D(2), D("38.23"), D("76.46"), key="base_fee|0|team|2"),
        RatedLine(LineKind.base_fee, "Team plan — 4 seats × $79.00, 16/31 days (Oct 16–31) = $40.77 per seat",
                  D(4), D("40.77"), D("163.08"), key="base_fee|1|team|4"),
        # pooled quota: round(50,000 x 15/31) + round(100,000 x 16/31) = 24,194 + 51,613
        RatedLine(LineKind.included_usage, "Included executions (100 of 75,807)", D(100), D(0), D(0),
                  key="included_usage"),
        RatedLine(LineKind.sandbox, "Sandbox tries: 5 tries (not charged)", D(5), D(0), D(0), key="sandbox"),
        RatedLine(LineKind.usage, "Overage — claude-haiku (Oct 1–15, rates 2026-01-01.1): 3 executions × $0.003",
                  D(3), D("0.003"), D("0.01"), "claude-haiku", key="usage|claude-haiku|2026-01-01.1|0.003|0",
                  version=V1, executions=3, cost=D(0)),
        RatedLine(LineKind.usage, "Overage — gpt-4o (Oct 1–15, rates 2026-01-01.1): 10 executions × $0.003",
                  D(10), D("0.003"), D("0.03"), "gpt-4o", key="usage|gpt-4o|2026-01-01.1|0.003|0",
                  version=V1, executions=10, cost=D("0.5")),
        RatedLine(LineKind.blocked_usage, "Blocked beyond included quota — gpt-4o: 7 executions (not billed)",
                  D(7), D(0), D(0), "gpt-4o", key="blocked_usage|gpt-4o", executions=7),
    ]
    assert (inv.plan, inv.catalog_version) == ("team", V2)  # the terms in force at the end
    assert (inv.executions, inv.billable_executions, inv.sandbox_executions, inv.byok_executions) == (120, 20, 5, 3)
    assert inv.subtotal == inv.total == D("239.58")
    assert inv.platform_cost == D("1.7")  # recorded costs of platform-key executions only


def test_a_one_segment_month_on_one_card_labels_nothing_and_keys_segment_empty():
    rows = [UsageRow(0, V1, "gpt-4o", billable=True, executions=4, uncosted_input_tokens=1_000_000,
                     uncosted_output_tokens=100_000)]
    inv = rate(whole("payg"), rows)
    assert list(inv.lines) == [
        RatedLine(LineKind.usage, "Usage — gpt-4o: 4 executions × $0.01", D(4), D("0.01"), D("0.04"), "gpt-4o",
                  key="usage|gpt-4o|2026-01-01.1|0.01|", version=V1, executions=4,
                  cost=D("3.50")),  # tokens without a recorded cost are costed from the rate card: 2.50 + 1.00
    ]


def test_a_single_seat_on_a_per_seat_plan_for_part_of_the_month_says_per_seat():
    inv = rate([TermsSegment(OCT.start, MID, "free"), TermsSegment(MID, OCT.end, "team")], [])
    assert [(ln.description, ln.key) for ln in inv.lines] == [
        ("Team plan — 1 seat × $79.00, 16/31 days (Oct 16–31) = $40.77 per seat", "base_fee|1|team|1")]


def test_prorated_flat_fee_has_no_per_seat_wording():
    inv = rate([TermsSegment(OCT.start, MID, "pro"), TermsSegment(MID, OCT.end, "payg")], [])
    assert [(ln.description, ln.quantity, ln.unit_price) for ln in inv.lines] == [
        ("Pro plan — monthly fee, 15/31 days (Oct 1–15) = $14.03", D(1), D("14.03"))]


# ---- per-token pricing ----------------------------------------------------------------------------------
def test_token_lines_carry_direction_and_put_executions_and_cost_on_the_input_line():
    rows = [
        UsageRow(0, V1, "claude-opus", billable=True, executions=2, input_tokens=1_000_000, output_tokens=500_000,
                 uncosted_input_tokens=1_000_000, uncosted_output_tokens=500_000),
        UsageRow(0, V1, "gpt-4o-mini", byok=True, billable=True, executions=4, input_tokens=2_000_000,
                 output_tokens=1_000_000),
        UsageRow(0, V1, "gpt-4o", billable=True, executions=1, output_tokens=100_000, cost=D("0.25")),
    ]
    inv = rate(whole("payg", pricing="tokens"), rows)
    assert list(inv.lines) == [
        RatedLine(LineKind.token_usage, "claude-opus input tokens: 1,000,000 × $30.00 per 1M", D(1_000_000),
                  D("0.00003"), D("30.00"), "claude-opus", key="token_usage|claude-opus|2026-01-01.1|input|",
                  version=V1, direction="input", executions=2, cost=D("52.5")),
        RatedLine(LineKind.token_usage, "claude-opus output tokens: 500,000 × $150.00 per 1M", D(500_000),
                  D("0.00015"), D("75.00"), "claude-opus", key="token_usage|claude-opus|2026-01-01.1|output|",
                  version=V1, direction="output"),
        RatedLine(LineKind.token_usage, "gpt-4o output tokens: 100,000 × $20.00 per 1M", D(100_000),
                  D("0.00002"), D("2.00"), "gpt-4o", key="token_usage|gpt-4o|2026-01-01.1|output|",
                  version=V1, direction="output"),
        RatedLine(LineKind.cap_adjustment, "Pay-as-you-go cap ($50.00)", D(1), D("-57.00"), D("-57.00"),
                  key="cap_adjustment"),
    ]
    assert inv.total == D("50.00")
    assert inv.platform_cost == D("52.75")
    assert (inv.executions, inv.byok_executions, inv.billable_executions) == (7, 4, 7)


def test_token_lines_over_two_segments_and_cards_are_labelled_and_keyed_per_segment():
    segments = [TermsSegment(OCT.start, MID, "team", pricing="tokens", overage_opt_in=True),
                TermsSegment(MID, OCT.end, "team", 2, pricing="tokens", overage_opt_in=True)]
    rows = [UsageRow(0, V1, "gpt-4o", executions=1, input_tokens=1_000_000),
            UsageRow(1, V2, "gpt-4o", executions=1, input_tokens=1_000_000)]
    inv = rate(segments, rows, TWO_CARDS)
    tokens = [(ln.description, ln.key) for ln in inv.lines if ln.kind == LineKind.token_usage]
    assert tokens == [
        ("gpt-4o input tokens (Oct 1–15, rates 2026-01-01.1): 1,000,000 × $5.00 per 1M",
         "token_usage|gpt-4o|2026-01-01.1|input|0"),
        ("gpt-4o input tokens (Oct 16–31, rates 2026-10-16.1): 1,000,000 × $5.00 per 1M",
         "token_usage|gpt-4o|2026-10-16.1|input|1"),
    ]


def test_blocked_executions_under_token_pricing_are_shown_not_charged():
    rows = [UsageRow(0, V1, "gpt-4o", executions=5000, input_tokens=10),
            UsageRow(0, V1, "gpt-4o", billable=True, executions=2, input_tokens=1_000_000)]
    inv = rate(whole("pro", pricing="tokens"), rows)
    assert [(ln.kind, ln.quantity, ln.amount) for ln in inv.lines] == [
        (LineKind.base_fee, D(1), D("29.00")), (LineKind.included_usage, D(5000), D(0)),
        (LineKind.token_usage, D(10), D("0.00")), (LineKind.blocked_usage, D(2), D(0))]


def test_blocked_counts_add_up_per_model_across_segments():
    segments = [TermsSegment(OCT.start, MID, "free"), TermsSegment(MID, OCT.end, "pro")]
    rows = [UsageRow(0, V1, "gpt-4o", billable=True, executions=2), UsageRow(1, V1, "gpt-4o", billable=True,
                                                                             executions=3)]
    inv = rate(segments, rows)
    assert [(ln.description, ln.quantity) for ln in inv.lines if ln.kind == LineKind.blocked_usage] == [
        ("Blocked beyond included quota — gpt-4o: 5 executions (not billed)", D(5))]


def test_one_sandbox_try_is_singular():
    inv = rate(whole("payg"), [UsageRow(0, V1, "gpt-4o", sandbox=True, executions=1)])
    assert inv.lines[0].description == "Sandbox tries: 1 try (not charged)"


def test_included_line_needs_both_a_quota_and_executions():
    assert rate(whole("free"), [UsageRow(0, V1, "gpt-4o", executions=1)]).lines[0].description == \
        "Included executions (1 of 100)"
    assert rate(whole("free"), []).lines == ()


def test_rate_period_base_fee_is_keyed_to_segment_zero():
    inv = rate_period(CATALOG.versions[0], AccountTerms("pro"), [ModelUsage("gpt-4o", 1, 0)])
    assert inv.lines[0].key == "base_fee|0|pro|1"


def test_general_rater_ignores_the_ambient_decimal_context():
    segments = [TermsSegment(OCT.start, MID, "team", 3), TermsSegment(MID, OCT.end, "team", 2)]
    rows = [UsageRow(0, V1, "gpt-4o", executions=7)]
    expected = rate(segments, rows)
    late = rate(whole("payg"), [UsageRow(0, V1, "gpt-4o", billable=True, executions=123_456)])
    billed = [BilledLine(late.lines[0].key, D(1), D("0.01"))]
    expected_prior = prior_period_lines("2026-10", late, billed)
    with localcontext() as ctx:
        ctx.prec = 3
        ctx.traps[Inexact] = True
        assert pooled_included(CATALOG, OCT.start, OCT.end, segments) == 36_290 + 25_806
        assert rate(segments, rows) == expected
        assert prior_period_lines("2026-10", late, billed) == expected_prior


# ---- prior-period lines ------------------------------------------------------------------------------
def test_prior_period_lines_copy_the_line_identity_and_bill_differences_per_key():
    rows = [UsageRow(0, V1, "claude-opus", billable=True, executions=3, input_tokens=2_000_000),
            UsageRow(0, V1, "gpt-4o", billable=True, executions=1, input_tokens=1_000_000)]
    rerated = rate(whole("payg", pricing="tokens"), rows)
    opus, gpt, cap = rerated.lines  # opus $60 + gpt-4o $5, capped at $50 (-15)
    billed = [BilledLine(opus.key, D(1_000_000), D("30.00")),  # half of opus's tokens were billed
              BilledLine(gpt.key, gpt.quantity, gpt.amount),  # gpt-4o: all billed already
              BilledLine(cap.key, D(1), D("-5.00"))]  # the cap took 5 then, 15 now
    lines = prior_period_lines("2026-09", rerated, billed)
    assert lines == [
        RatedLine(LineKind.prior_period_usage,
                  "Prior-period usage 2026-09 — claude-opus input tokens: 2,000,000 × $30.00 per 1M (+1000000 late)",
                  D(1_000_000), opus.unit_price, D("30.00"), "claude-opus", key=opus.key, version=V1,
                  direction="input", source_period="2026-09"),
        RatedLine(LineKind.prior_period_usage, "Prior-period usage 2026-09 — Pay-as-you-go cap ($50.00) (+0 late)",
                  D(0), D("-15.00"), D("-10.00"), key=cap.key, source_period="2026-09"),
    ]


def test_prior_period_lines_sum_earlier_billings_of_one_key():
    rerated = rate(whole("payg"), [UsageRow(0, V1, "gpt-4o", billable=True, executions=10)])
    key = rerated.lines[0].key
    billed = [BilledLine(key, D(6), D("0.06")), BilledLine(key, D(4), D("0.04"))]
    assert prior_period_lines("2026-09", rerated, billed) == []


# ---- exact errors ------------------------------------------------------------------------------------------
PRO = CATALOG.versions[0].plan("pro")
NAIVE = datetime(2026, 10, 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: included_executions(PRO, 0), "seats: must be an integer >= 1, got 0"),
        (lambda: included_executions(PRO, 2),
         "seats: must be 1 for plan 'pro' (only per-seat plans have several seats), got 2"),
        (lambda: split_billable([], -1), "included: must be an integer >= 0, got -1"),
        (lambda: split_billable([(NAIVE, "a", "m")], 0),
         "occurred_at: must be a timezone-aware datetime, got datetime.datetime(2026, 10, 1, 0, 0)"),
        (lambda: split_billable([("2026-10-01", "a", "m")], 0),
         "occurred_at: must be a timezone-aware datetime, got '2026-10-01'"),
        (lambda: split_billable([(OCT.start, "a", "m"), (OCT.start, "a", "n")], 0),
         "event_id: duplicate event id 'a'"),
        (lambda: rate_period(CATALOG.versions[0], AccountTerms("payg"), ["gpt-4o"]),
         "usage: items must be ModelUsage, got str"),
        (lambda: rate_period(CATALOG.versions[0], AccountTerms("payg"), [ModelUsage("gpt-4o", 1, 1)] * 2),
         "usage: model 'gpt-4o' appears more than once"),
        (lambda: rate_period(CATALOG.versions[0], AccountTerms("payg"), [ModelUsage("gpt-4o", -1, 0)]),
         "executions: gpt-4o: must be an integer >= 0, got -1"),
        (lambda: rate_period(CATALOG.versions[0], AccountTerms("payg"), [ModelUsage("gpt-4o", 3, 4)]),
         "billable: gpt-4o: must be an integer between 0 and executions (3), got 4"),
        (lambda: rate_period(CATALOG.versions[0], AccountTerms("payg"), [ModelUsage("gpt-4o", 3, True)]),
         "billable: gpt-4o: must be an integer between 0 and executions (3), got True"),
        (lambda: rate_period(CATALOG.versions[0], AccountTerms("pro"), [ModelUsage("gpt-4o", 6000, 1)]),
         "billable: sum of billable (1) must equal executions beyond the included quota "
         "(max(0, 6,000 - 5,000) = 1,000)"),
        (lambda: rate_period(CATALOG.versions[0], AccountTerms("enterprise"), []),
         "plan: enterprise accounts are billed by their contract (plan 'enterprise'), not by per-execution rating"),
        (lambda: rate([], []), "segments: at least one terms segment is needed"),
        (lambda: rate([TermsSegment(NAIVE, OCT.end, "pro")], []),
         "segments: segment start must be 00:00 UTC of a day, got datetime.datetime(2026, 10, 1, 0, 0)"),
        (lambda: rate([TermsSegment(OCT.start, OCT.end - timedelta(hours=1), "pro")], []),
         "segments: segment end must be 00:00 UTC of a day, got "
         "datetime.datetime(2026, 10, 31, 23, 0, tzinfo=datetime.timezone.utc)"),
        (lambda: rate([TermsSegment(MID, MID, "pro")], []),
         "segments: segments must lie inside the period and not be empty"),
        (lambda: rate([TermsSegment(OCT.start, MID - timedelta(days=1), "pro"), TermsSegment(MID, OCT.end, "pro")], []),
         "segments: segments must be contiguous and in time order"),
        (lambda: rate(whole("pro", pricing="credits"), []), "pricing: unknown pricing 'credits'; use executions or tokens"),
        (lambda: rate(whole("pro"), [UsageRow(1, V1, "gpt-4o", executions=1)]), "usage: usage row refers to segment 1"),
        (lambda: rate(whole("pro"), [UsageRow(-1, V1, "gpt-4o", executions=1)]),
         "usage: usage row refers to segment -1"),
        (lambda: rate(whole("pro"), [UsageRow(0, V1, "gpt-4o", executions=-1)]), "usage: counts must not be negative"),
        (lambda: rate(whole("pro"), [UsageRow(0, V1, "gpt-4o", input_tokens=-1)]), "usage: counts must not be negative"),
        (lambda: rate(whole("pro"), [UsageRow(0, V1, "gpt-4o", output_tokens=-1)]),
         "usage: counts must not be negative"),
        (lambda: rate(whole("enterprise"), []),
         "plan: enterprise accounts are billed by their contract (plan 'enterprise'), not by per-execution rating"),
    ],
)
def test_rating_errors_name_the_field_and_the_reason(call, message):
    assert_error(RatingError, call, message, message.split(":", 1)[0])


def test_included_executions_defaults_to_one_seat():
    assert included_executions(CATALOG.versions[0].plan("team")) == 25_000


def test_split_billable_breaks_ties_by_event_id_not_model():
    events = [(OCT.start, "a", "zeta-model"), (OCT.start, "b", "alpha-model")]
    assert split_billable(events, 1) == {"alpha-model": ModelUsage("alpha-model", 1, 1),
                                         "zeta-model": ModelUsage("zeta-model", 1, 0)}


# ---- edges --------------------------------------------------------------------------------------------
TINY = parse_catalog(TEXT.replace("monthly_fee = 29.00", "monthly_fee = 1.00")
                     .replace("included_executions = 5000", "included_executions = 1"))


def test_a_one_dollar_fee_and_a_quota_of_one_are_billed_and_shown():
    inv = rate(whole("pro", overage_opt_in=True), [UsageRow(0, V1, "gpt-4o", executions=1),
                                                   UsageRow(0, V1, "gpt-4o", billable=True, executions=1)], TINY)
    assert [ln.description for ln in inv.lines] == [
        "Pro plan — monthly fee", "Included executions (1 of 1)", "Overage — gpt-4o: 1 execution × $0.005"]


def test_usage_lines_order_by_model_then_version_whatever_the_segment_or_input_order():
    segments = [TermsSegment(OCT.start, MID, "pro", overage_opt_in=True), TermsSegment(MID, OCT.end, "payg")]
    rows = [UsageRow(1, V1, "claude-haiku", billable=True, executions=2),
            UsageRow(0, V1, "gpt-4o", billable=True, executions=1)]
    inv = rate(segments, list(reversed(rows)))
    assert [ln.key for ln in inv.lines if ln.kind == LineKind.usage] == [
        "usage|claude-haiku|2026-01-01.1|0.01|1", "usage|gpt-4o|2026-01-01.1|0.005|0"]
    tokens = [UsageRow(1, V1, "claude-haiku", executions=1, input_tokens=10),
              UsageRow(0, V1, "gpt-4o", executions=1, input_tokens=10)]
    for order in (tokens, list(reversed(tokens))):
        inv = rate([TermsSegment(OCT.start, MID, "pro", pricing="tokens"),
                    TermsSegment(MID, OCT.end, "payg", pricing="tokens")], order)
        assert [ln.key for ln in inv.lines if ln.kind == LineKind.token_usage] == [
            "token_usage|claude-haiku|2026-01-01.1|input|1", "token_usage|gpt-4o|2026-01-01.1|input|0"]


def test_a_line_costs_the_sum_of_its_platform_key_rows_and_nothing_for_byok_whatever_their_order():
    rows = [UsageRow(0, V1, "gpt-4o", byok=True, billable=True, executions=1, cost=D("7")),
            UsageRow(0, V1, "gpt-4o", billable=True, executions=1, cost=D("0.25"))]
    assert rate(whole("payg"), rows).lines[0].cost == D("0.25")
    rows = [UsageRow(0, V1, "gpt-4o", executions=1, input_tokens=5, cost=D("1")),
            UsageRow(0, V1, "gpt-4o", billable=True, executions=1, input_tokens=5, cost=D("2"))]
    assert rate(whole("pro", pricing="tokens", overage_opt_in=True), rows).lines[2].cost == D("3")


def test_platform_cost_is_a_decimal_even_without_usage():
    inv = rate(whole("pro"), [])
    assert isinstance(inv.platform_cost, Decimal) and inv.platform_cost == 0


def test_prior_period_lines_skip_fee_and_informational_lines_of_the_rerated_period():
    before = rate(whole("pro", overage_opt_in=True), [UsageRow(0, V1, "gpt-4o", executions=5000),
                                                      UsageRow(0, V1, "gpt-4o", billable=True, executions=2)])
    after = rate(whole("pro", overage_opt_in=True), [UsageRow(0, V1, "gpt-4o", executions=5000),
                                                     UsageRow(0, V1, "gpt-4o", billable=True, executions=5)])
    billed = [BilledLine(ln.key, ln.quantity, ln.amount) for ln in before.lines]
    assert [(ln.key, ln.quantity, ln.amount) for ln in prior_period_lines("2026-09", after, billed)] == [
        ("usage|gpt-4o|2026-01-01.1|0.005|", D(3), D("0.02"))]  # 0.03 now, 0.01 billed then


def test_split_billable_refuses_a_time_zone_without_an_offset():
    from datetime import tzinfo

    class NoOffset(tzinfo):
        def utcoffset(self, dt):
            return None

    with pytest.raises(RatingError) as ei:
        split_billable([(datetime(2026, 10, 1, tzinfo=NoOffset()), "a", "m")], 0)
    assert ei.value.field == "occurred_at"
