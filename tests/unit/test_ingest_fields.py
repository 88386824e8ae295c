"""Ingest's validation and bookkeeping that need no database (``activities.ingest``): each field's rule and
its exact reason at the bounds, the inline check agreeing with the field checks, the content digest,
``screen``'s verdicts, the counters of a batch, the batches of lines, the report."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from activities.ingest import (
    DUPLICATE,
    MAX_COST,
    MAX_DECISION_ID,
    MAX_LISTED_REJECTIONS,
    MAX_TOKENS,
    REUSED_ID,
    IngestReport,
    LineError,
    Rejection,
    Tenancy,
    _batches,
    _checked_execution,
    billed_from,
    content_hash,
    counter_params,
    execution_errors,
    known_models,
    parse_execution,
    parse_line,
    screen,
)
from billing.catalog import load_catalog

MODELS = frozenset({"claude-haiku", "gpt-4o"})
NOW = datetime(2026, 10, 25, 12, tzinfo=timezone.utc)
GOOD = {"event_id": "e1", "account_id": "acme", "agent_id": "bot", "model": "claude-haiku",
        "occurred_at": "2026-10-02T10:00:00Z"}
ROW = ("e1", "acme", "bot", None, "claude-haiku", 0, 0, False, False, None,
       datetime(2026, 10, 2, 10, tzinfo=timezone.utc), None, None, None)


def reason(doc: dict) -> str:
    with pytest.raises(LineError) as exc:
        parse_execution(doc, MODELS, NOW)
    return str(exc.value)


# ---- the usual execution, inline and field by field ---------------------------------------------------
def test_the_usual_execution_becomes_a_row_in_fields_order_with_defaults():
    assert parse_execution(GOOD, MODELS, NOW) == ROW
    assert _checked_execution(GOOD, MODELS, NOW) == ROW


def test_every_field_is_carried_into_the_row_both_ways():
    doc = {**GOOD, "skill_id": "sk", "input_tokens": 7, "output_tokens": 9, "byok": True, "sandbox": True,
           "routed_model": "gpt-4o", "routing_decision_id": 12}
    row = ("e1", "acme", "bot", "sk", "claude-haiku", 7, 9, True, True, None,
           datetime(2026, 10, 2, 10, tzinfo=timezone.utc), "gpt-4o", 12, None)
    assert parse_execution(doc, MODELS, NOW) == row
    assert _checked_execution(doc, MODELS, NOW) == row
    with_cost = {**doc, "cost_usd": "0.5", "requested_model": "gpt-4o"}
    assert parse_execution(with_cost, MODELS, NOW) == row[:9] + (Decimal("0.50000000"),) + row[10:13] + ("gpt-4o",)


def test_none_means_the_default_for_optional_fields():
    doc = {**GOOD, "skill_id": None, "input_tokens": None, "output_tokens": None, "byok": None,
           "sandbox": None, "cost_usd": None, "routed_model": None, "routing_decision_id": None,
           "requested_model": None}
    assert parse_execution(doc, MODELS, NOW) == ROW


@pytest.mark.parametrize("field, limit", [("event_id", 128), ("account_id", 64), ("agent_id", 128),
                                          ("skill_id", 128), ("model", 64)])
def test_text_fields_are_bounded_in_length(field, limit):
    assert reason({**GOOD, field: "x" * (limit + 1)}) == f"{field}: longer than {limit} characters"
    if field != "model":
        assert parse_execution({**GOOD, field: "x" * limit}, MODELS, NOW)[
            ["event_id", "account_id", "agent_id", "skill_id"].index(field)] == "x" * limit


@pytest.mark.parametrize("field", ["event_id", "account_id", "agent_id"])
def test_required_text_fields_say_required_non_empty_and_no_nul(field):
    assert reason({k: v for k, v in GOOD.items() if k != field}) == f"{field}: required"
    assert reason({**GOOD, field: "  "}) == f"{field}: must be a non-empty string"
    assert reason({**GOOD, field: ""}) == f"{field}: must be a non-empty string"
    assert reason({**GOOD, field: 5}) == f"{field}: must be a non-empty string"
    assert reason({**GOOD, field: "a\x00b"}) == f"{field}: must not contain NUL characters"


def test_model_is_required_and_known():
    assert reason({k: v for k, v in GOOD.items() if k != "model"}) == "model: required"
    assert reason({**GOOD, "model": "gpt-9"}) == "model: unknown model 'gpt-9'"


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens"])
def test_token_counts_are_whole_non_negative_and_at_most_a_billion(field):
    assert parse_execution({**GOOD, field: MAX_TOKENS}, MODELS, NOW)[5 if field == "input_tokens" else 6] == MAX_TOKENS
    assert reason({**GOOD, field: MAX_TOKENS + 1}) == f"{field}: must be at most 1,000,000,000"
    assert reason({**GOOD, field: -1}) == f"{field}: must not be negative"
    assert reason({**GOOD, field: 1.5}) == f"{field}: must be a whole number"
    assert reason({**GOOD, field: True}) == f"{field}: must be a whole number"
    assert reason({**GOOD, field: "3"}) == f"{field}: must be a whole number"
    assert MAX_TOKENS == 10**9


@pytest.mark.parametrize("field", ["byok", "sandbox"])
def test_flags_are_true_or_false(field):
    assert reason({**GOOD, field: 1}) == f"{field}: must be true or false"
    assert reason({**GOOD, field: "true"}) == f"{field}: must be true or false"


def test_cost_is_a_bounded_non_negative_decimal_kept_to_8_places_rounding_half_up():
    def cost(value):
        return parse_execution({**GOOD, "cost_usd": value}, MODELS, NOW)[9]

    assert cost("0.000000005") == Decimal("0.00000001")
    assert cost("0.0000000049") == Decimal("0")
    assert cost(2) == Decimal("2.00000000") and cost(0.25) == Decimal("0.25")
    assert cost(str(MAX_COST)) == MAX_COST
    assert cost("0") == 0
    assert reason({**GOOD, "cost_usd": "10000.00000001"}) == "cost_usd: must be at most 10,000 per execution"
    assert reason({**GOOD, "cost_usd": "-0.01"}) == "cost_usd: must be a finite, non-negative amount"
    assert reason({**GOOD, "cost_usd": "NaN"}) == "cost_usd: must be a finite, non-negative amount"
    assert reason({**GOOD, "cost_usd": "Infinity"}) == "cost_usd: must be a finite, non-negative amount"
    assert reason({**GOOD, "cost_usd": "abc"}) == "cost_usd: 'abc' is not a decimal number"
    assert reason({**GOOD, "cost_usd": True}) == "cost_usd: must be a decimal number"
    assert reason({**GOOD, "cost_usd": [1]}) == "cost_usd: must be a decimal number"
    assert MAX_COST == 10_000


def test_occurred_at_needs_an_iso_timestamp_with_a_zone_not_in_the_future():
    assert reason({**GOOD, "occurred_at": 5}) == "occurred_at: required, an ISO 8601 timestamp with a time zone"
    assert reason({k: v for k, v in GOOD.items() if k != "occurred_at"}) == (
        "occurred_at: required, an ISO 8601 timestamp with a time zone")
    assert reason({**GOOD, "occurred_at": "yesterday"}) == "occurred_at: 'yesterday' is not an ISO 8601 timestamp"
    assert reason({**GOOD, "occurred_at": "2026-10-02T10:00:00"}) == (
        "occurred_at: '2026-10-02T10:00:00' has no time zone (add Z or +00:00)")
    assert reason({**GOOD, "occurred_at": "0001-01-01T00:00:00+01:00"}) == (
        "occurred_at: '0001-01-01T00:00:00+01:00' is out of range")
    five_min = (NOW + timedelta(minutes=5)).isoformat()
    assert parse_execution({**GOOD, "occurred_at": five_min}, MODELS, NOW)[10] == NOW + timedelta(minutes=5)
    later = (NOW + timedelta(minutes=5, microseconds=1)).isoformat()
    assert reason({**GOOD, "occurred_at": later}) == f"occurred_at: {later} is in the future"


def test_occurred_at_is_stored_in_utc():
    ts = parse_execution({**GOOD, "occurred_at": "2026-10-02T12:00:00+02:00"}, MODELS, NOW)[10]
    assert ts == datetime(2026, 10, 2, 10, tzinfo=timezone.utc) and ts.tzinfo == timezone.utc


def test_routing_needs_both_fields_a_positive_bigint_id_and_a_known_model():
    def route(routed, decision):
        doc = {**GOOD, "routed_model": routed, "routing_decision_id": decision}
        return parse_execution(doc, MODELS, NOW)[11:13]

    assert route("gpt-4o", 1) == ("gpt-4o", 1)
    assert route("gpt-4o", MAX_DECISION_ID) == ("gpt-4o", MAX_DECISION_ID)
    assert reason({**GOOD, "routed_model": "gpt-4o"}) == (
        "routing_decision_id: required with routed_model (the id POST /v1/route answered)")
    bad_id = "routing_decision_id: must be a positive whole number (the id POST /v1/route answered)"
    for decision in (0, -1, MAX_DECISION_ID + 1, True, "7", 1.0):
        assert reason({**GOOD, "routed_model": "gpt-4o", "routing_decision_id": decision}) == bad_id
    assert reason({**GOOD, "routing_decision_id": 3}) == (
        "routed_model: required with routing_decision_id (the model the route chose)")
    assert reason({**GOOD, "routed_model": "gpt-9", "routing_decision_id": 3}) == "routed_model: unknown model 'gpt-9'"
    assert reason({**GOOD, "routed_model": 4, "routing_decision_id": 3}) == "routed_model: unknown model 4"
    assert MAX_DECISION_ID == 2**63 - 1


def test_requested_model_when_given_is_a_known_model():
    assert parse_execution({**GOOD, "requested_model": "gpt-4o"}, MODELS, NOW)[13] == "gpt-4o"
    assert reason({**GOOD, "requested_model": "gpt-9"}) == "requested_model: unknown model 'gpt-9'"
    assert reason({**GOOD, "requested_model": ""}) == "requested_model: must be a non-empty string"


@pytest.mark.parametrize("change", [
    {"event_id": " "}, {"event_id": "x" * 129}, {"account_id": "x" * 65}, {"agent_id": "\x00"},
    {"skill_id": ""}, {"skill_id": "x" * 129}, {"model": "gpt-9"}, {"model": 3}, {"input_tokens": -1},
    {"output_tokens": MAX_TOKENS + 1}, {"input_tokens": False}, {"byok": 0}, {"sandbox": "no"},
    {"routed_model": "gpt-4o", "routing_decision_id": 0}, {"routed_model": "gpt-9", "routing_decision_id": 1},
    {"routed_model": "gpt-4o", "routing_decision_id": MAX_DECISION_ID + 1},
    {"routed_model": "gpt-4o", "routing_decision_id": True}, {"routed_model": "gpt-4o"},
    {"routing_decision_id": 1}, {"occurred_at": "2026-10-02"}, {"agent_id": "\t"},
])
def test_the_inline_check_refuses_what_the_field_checks_refuse(change):
    doc = {**GOOD, **change}
    with pytest.raises(LineError):
        _checked_execution(doc, MODELS, NOW)
    with pytest.raises(LineError):
        parse_execution(doc, MODELS, NOW)


def test_not_an_object_is_refused_both_ways():
    for obj in ([1, 2], "x", None, 3):
        assert reason(obj) == "not a JSON object"
        assert [str(e) for e in execution_errors(obj, MODELS, NOW)] == ["not a JSON object"]


def test_execution_errors_lists_every_bad_field_in_order():
    doc = {"event_id": "", "account_id": "a" * 65, "model": "gpt-9", "input_tokens": -1, "output_tokens": "x",
           "byok": 1, "sandbox": 2, "cost_usd": "-1", "occurred_at": "x", "routing_decision_id": 0,
           "requested_model": "gpt-9", "skill_id": 5}
    assert [e.field for e in execution_errors(doc, MODELS, NOW)] == [
        "model", "event_id", "account_id", "agent_id", "skill_id", "input_tokens", "output_tokens", "byok",
        "sandbox", "cost_usd", "occurred_at", "routing_decision_id", "requested_model"]
    assert execution_errors(GOOD, MODELS, NOW) == []


@pytest.mark.parametrize("field, limit", [("event_id", 128), ("account_id", 64), ("agent_id", 128),
                                          ("skill_id", 128), ("model", 64)])
def test_execution_errors_apply_the_same_length_bounds(field, limit):
    assert [str(e) for e in execution_errors({**GOOD, field: "x" * (limit + 1)}, MODELS, NOW)] == [
        f"{field}: longer than {limit} characters"]
    at_limit = [str(e) for e in execution_errors({**GOOD, field: "x" * limit}, MODELS, NOW)]
    assert at_limit == (["model: unknown model '" + "x" * limit + "'"] if field == "model" else [])


def test_a_line_error_names_its_field_and_reason_or_only_a_reason():
    err = LineError("input_tokens: must not be negative")
    assert (err.field, err.reason) == ("input_tokens", "must not be negative")
    plain = LineError("not valid JSON (unexpected character)")
    assert (plain.field, plain.reason) == (None, "not valid JSON (unexpected character)")
    other = LineError("nonsense: with a colon")
    assert (other.field, other.reason) == (None, "nonsense: with a colon")


def test_a_line_that_is_not_json_says_why():
    with pytest.raises(LineError) as exc:
        parse_line(b"{not json", MODELS, NOW)
    assert str(exc.value).startswith("not valid JSON (") and str(exc.value).endswith(")")
    assert parse_line(json.dumps(GOOD).encode(), MODELS, NOW) == ROW


def test_known_models_are_every_catalog_versions_models():
    catalog = load_catalog()
    models = known_models(catalog)
    assert isinstance(models, frozenset)
    assert models == {code for v in catalog.versions for code in v.models} and "claude-haiku" in models


# ---- bookkeeping -----------------------------------------------------------------------------------------
def test_lines_come_in_batches_of_the_size_numbered_from_one():
    assert list(_batches([b"a", b"b", b"c"], 2)) == [[(1, b"a"), (2, b"b")], [(3, b"c")]]
    assert list(_batches([b"a", b"b"], 2)) == [[(1, b"a"), (2, b"b")]]
    assert list(_batches([], 2)) == []


def test_the_report_counts_every_rejection_but_lists_only_the_first_ones():
    report = IngestReport(accepted=2, duplicates=1)
    for n in range(MAX_LISTED_REJECTIONS + 5):
        report.reject(n + 1, "bad")
    assert report.rejected == MAX_LISTED_REJECTIONS + 5
    assert len(report.rejections) == MAX_LISTED_REJECTIONS == 200
    assert report.rejections[0] == Rejection(1, "bad")
    assert report.lines == 3 + MAX_LISTED_REJECTIONS + 5


def test_the_content_digest_ignores_the_event_id_and_spelling_but_not_any_content():
    base = content_hash(ROW)
    assert content_hash(("other-id",) + ROW[1:]) == base
    same_instant = ROW[:10] + (datetime(2026, 10, 2, 12, tzinfo=timezone(timedelta(hours=2))),) + ROW[11:]
    assert content_hash(same_instant) == base
    changes = [(1, "globex"), (2, "bot2"), (3, "sk"), (4, "gpt-4o"), (5, 1), (6, 1), (7, True), (8, True),
               (9, Decimal("0")), (10, ROW[10] + timedelta(microseconds=1)), (11, "gpt-4o"), (12, 1), (13, "gpt-4o")]
    digests = {base}
    for i, value in changes:
        digests.add(content_hash(ROW[:i] + (value,) + ROW[i + 1:]))
    assert len(digests) == len(changes) + 1
    assert content_hash(ROW) == bytes.fromhex(
        __import__("hashlib").md5("\x1f".join(("acme", "bot", "", "claude-haiku", "0", "0", "f", "f", "",
                                                str(int(ROW[10].timestamp()) * 10**6), "", "", "")).encode()).hexdigest())


def test_the_content_digest_spells_flags_cost_and_routing_as_the_migration_does():
    import hashlib

    row = ("e", "acme", "bot", "sk", "gpt-4o", 3, 4, True, False, Decimal("0.50000000"), ROW[10], "claude-haiku", 9,
           "gpt-4o")
    text = "\x1f".join(("acme", "bot", "sk", "gpt-4o", "3", "4", "t", "f", "0.50000000",
                        str(int(ROW[10].timestamp()) * 10**6), "claude-haiku", "9", "gpt-4o"))
    assert content_hash(row) == hashlib.md5(text.encode()).digest()


def test_billed_from_is_the_start_of_the_oldest_period_a_close_still_bills():
    # before the previous period's close (48 h grace): it still runs and reaches back 3 periods
    assert billed_from(datetime(2026, 11, 2, 23, tzinfo=timezone.utc)) == datetime(2026, 7, 1, tzinfo=timezone.utc)
    assert billed_from(datetime(2026, 11, 3, 1, tzinfo=timezone.utc)) == datetime(2026, 8, 1, tzinfo=timezone.utc)
    assert billed_from(datetime(2026, 11, 1, 23, tzinfo=timezone.utc), grace_hours=12) == datetime(
        2026, 8, 1, tzinfo=timezone.utc)


TENANCY = {"acme": Tenancy(0, datetime(2026, 1, 1, tzinfo=timezone.utc)),
           "late": Tenancy(0, datetime(2026, 10, 5, tzinfo=timezone.utc)),
           "p7": Tenancy(7, datetime(2026, 1, 1, tzinfo=timezone.utc))}


def row_of(event_id: str, account: str = "acme", day: int = 10, tokens: int = 0) -> tuple:
    return (event_id, account, "bot", None, "claude-haiku", tokens, 0, False, False, None,
            datetime(2026, 10, day, tzinfo=timezone.utc), None, None, None)


def test_screen_refuses_unknown_accounts_and_what_no_close_will_bill_and_sorts_repeats():
    rows = [row_of("e1"), row_of("e2", "ghost"), row_of("e3", "late", day=4), row_of("e4", "late", day=5),
            row_of("e1"), row_of("e1", tokens=5), row_of("e1", "p7"), row_of("e5", day=1)]
    verdicts = screen(rows, [content_hash(r) for r in rows], TENANCY, datetime(2026, 10, 2, tzinfo=timezone.utc))
    assert verdicts == [
        None,
        "account_id: unknown account 'ghost'",
        "occurred_at: 2026-10-04T00:00:00Z is before the account's billing start (2026-10-05); it would never be billed",
        None,
        DUPLICATE,
        REUSED_ID,
        None,  # another tenant's e1
        "occurred_at: 2026-10-01T00:00:00Z is before 2026-10, the oldest period a close still bills "
        "(late usage reaches back 3 periods); it would never be billed",
    ]
    assert repr(DUPLICATE) == "DUPLICATE" and REUSED_ID == "event_id reused with different content"


def test_screen_names_the_billing_start_when_it_is_the_later_bound_and_accepts_its_first_instant():
    start = TENANCY["late"].billing_starts_at
    first = row_of("e1", "late", day=5)
    assert first[10] == start
    assert screen([first], [content_hash(first)], TENANCY, start - timedelta(days=30)) == [None]
    edge = row_of("e2", day=2)
    assert screen([edge], [content_hash(edge)], TENANCY, datetime(2026, 10, 2, tzinfo=timezone.utc)) == [None]


def test_counter_params_sum_rows_per_account_month_model_and_flags():
    rows = [row_of("e1", tokens=3), row_of("e2", tokens=4),
            row_of("e3", "globex", tokens=1)[:9] + (Decimal("0.5"),) + row_of("e3")[10:],
            row_of("e4", tokens=1)[:7] + (True,) + row_of("e4")[8:],
            row_of("e5")[:10] + (datetime(2026, 9, 30, tzinfo=timezone.utc),) + row_of("e5")[11:]]
    rows[1] = rows[1][:6] + (2,) + rows[1][7:9] + (Decimal("0.25"),) + rows[1][10:]
    rows.append(row_of("e6")[:9] + (Decimal("0.75"),) + row_of("e6")[10:])
    p = counter_params(rows)
    got = sorted(zip(p["account_id"], p["period"], p["model"], p["byok"], p["sandbox"], p["executions"],
                     p["input_tokens"], p["output_tokens"], p["cost_usd"], p["uncosted_input_tokens"],
                     p["uncosted_output_tokens"]))
    assert got == [  # the tokens of rows without a cost are also counted apart (e1's 3, e4's 1)
        ("acme", "2026-09", "claude-haiku", False, False, 1, 0, 0, Decimal(0), 0, 0),
        ("acme", "2026-10", "claude-haiku", False, False, 3, 7, 2, Decimal("1.00"), 3, 0),
        ("acme", "2026-10", "claude-haiku", True, False, 1, 1, 0, Decimal(0), 1, 0),
        ("globex", "2026-10", "claude-haiku", False, False, 1, 1, 0, Decimal("0.5"), 0, 0),
    ]
    sandbox = row_of("e7")[:8] + (True,) + row_of("e7")[9:]
    assert counter_params([sandbox])["sandbox"] == [True]
    jan = row_of("e8")[:10] + (datetime(2027, 1, 3, tzinfo=timezone.utc),) + row_of("e8")[11:]
    assert counter_params([jan])["period"] == ["2027-01"]
