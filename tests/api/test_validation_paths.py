"""parse_execution's inline check of the usual execution never accepts what the field-by-field
checks refuse, and returns the same row when it accepts (the bulk path and the API share both)."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import event, given, settings
from hypothesis import strategies as st

from activities.ingest import LineError, _checked_execution, execution_errors, known_models, parse_execution
from billing.catalog import load_catalog

MODELS = known_models(load_catalog())
NOW = datetime(2026, 10, 25, 12, tzinfo=timezone.utc)

texts = st.one_of(st.text(max_size=3), st.text(min_size=60, max_size=140), st.sampled_from(["a", " ", "\t", "x\x00y", "ok-1"]))
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**13), st.floats(allow_nan=False), texts,
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


def mostly(valid, invalid=values):
    return st.one_of(*[valid] * 12, invalid)


required = {
    "event_id": mostly(st.sampled_from(["evt-1"] * 6 + ["e" * 128, "e" * 129, " x "])),
    "account_id": mostly(st.sampled_from(["acct-1"] * 6 + ["a" * 64, "a" * 65])),
    "agent_id": mostly(st.sampled_from(["agent"] * 6 + ["ü", "a b", "\u2003"])),
    "model": mostly(st.sampled_from(sorted(MODELS))),
    "occurred_at": mostly(st.sampled_from(["2026-10-02T10:00:00Z"] * 6 + [
        "2026-10-25T12:04:00+00:00", "2026-10-25T12:06:00+00:00", "2026-10-02T10:00:00"])),
}
optional = {
    "skill_id": mostly(st.one_of(st.none(), st.just("skill"))),
    "input_tokens": mostly(st.integers(0, 10**12 + 1)),
    "output_tokens": mostly(st.integers(-1, 10**6)),
    "byok": mostly(st.booleans()),
    "sandbox": mostly(st.booleans()),
    "cost_usd": st.one_of(*[st.none()] * 8, st.just("0.0012"), values),
    "routed_model": st.one_of(*[st.none()] * 4, *[st.sampled_from(sorted(MODELS))] * 4, values),
    "routing_decision_id": st.one_of(*[st.none()] * 4, *[st.integers(-1, 2**63)] * 4, values),
}
objects = st.one_of(st.fixed_dictionaries(required, optional=optional),
                    st.fixed_dictionaries({}, optional={**required, **optional}), values)


def outcome(fn, obj):
    try:
        return "ok", fn(obj, MODELS, NOW)
    except LineError as err:
        return "error", str(err)


@settings(max_examples=3000, deadline=None)
@given(obj=objects)
def test_the_inline_check_agrees_with_the_field_checks(obj):
    fast, slow = outcome(parse_execution, obj), outcome(_checked_execution, obj)
    event("accepted" if fast[0] == "ok" else "refused")
    assert fast == slow
    errors = execution_errors(obj, MODELS, NOW)
    assert (fast[0] == "ok") == (not errors)
    if errors:
        assert str(errors[0]) == fast[1]  # the API lists all, the file path reports the first


WEIRD = [None, True, False, 0, -1, 10**12, 10**12 + 1, 1.5, "", " ", "\t", "x\x00", "e" * 129, "a" * 65, [], {},
         "2026-10-02T10:00:00", "2999-01-01T00:00:00Z", "gpt-9", "0.0012", "-1", "1e12", "NaN"]


def test_mutated_executions_agree_on_both_paths():
    import random

    rnd = random.Random(4)
    template = {"event_id": "evt-1", "account_id": "acct-1", "agent_id": "agent", "skill_id": "skill",
                "model": "claude-haiku", "input_tokens": 12, "output_tokens": 3, "byok": False, "sandbox": True,
                "occurred_at": "2026-10-02T10:00:00Z"}
    accepted = 0
    for _ in range(20_000):
        obj = dict(template)
        for key in list(obj) + ["cost_usd"]:
            roll = rnd.random()
            if roll < 0.04:
                obj[key] = rnd.choice(WEIRD)
            elif roll < 0.06:
                obj.pop(key, None)
        fast, slow = outcome(parse_execution, obj), outcome(_checked_execution, obj)
        assert fast == slow, obj
        accepted += fast[0] == "ok"
    assert 2_000 < accepted < 18_000  # both sides of the inline check were exercised
