"""The recorded Stripe call in its batched form (``StripeLedger.perform_batch``): the same rules as
``perform``, step by step, on real Postgres and the emulator over HTTP."""

from __future__ import annotations

import threading

from gateways.stripe import StripeFailed, StripeRejected, StripeUnreachable
from gateways.stripe.ledger import Step, StripeLedger
from repositories.stripe_requests import stripe_requests_for
from tests.integration.test_stripe_ledger import engine, gw  # noqa: F401 - the same fixtures


def partner_steps(gw, names, lookups=None, seen=None) -> list[Step]:
    def step(name: str) -> Step:
        def call(key: str) -> str:
            if seen is not None:
                seen.append(key)
            return gw.customers.create(name, None, key)

        return Step(subject=f"partner:{name}", step="customer", identity=name, call=call,
                    lookup=(lookups or {}).get(name, lambda: None))
    return [step(n) for n in names]


def states(engine, name: str) -> list[tuple]:
    with engine.begin() as conn:
        return [(r.attempt, r.state) for r in stripe_requests_for(conn, f"partner:{name}")]


def test_every_key_is_recorded_before_the_first_call_and_outcomes_after(engine, gw, emulator):
    recorded_at_first_call = []
    first = threading.Lock()

    def watch(key: str) -> None:
        with first:
            if recorded_at_first_call:
                return
            with engine.begin() as conn:
                recorded_at_first_call.extend(
                    r.state for n in ("p1", "p2", "p3") for r in stripe_requests_for(conn, f"partner:{n}"))

    seen: list[str] = []
    steps = partner_steps(gw, ["p1", "p2", "p3"], seen=seen)
    for s in steps:
        inner = s.call
        s.call = lambda key, inner=inner: (watch(key), inner(key))[1]
    out = StripeLedger(engine).perform_batch(steps, workers=2)

    assert recorded_at_first_call == ["started"] * 3
    assert all(o.error is None and o.object_id.startswith("cus_") for o in out)
    assert sorted(seen) == ["tally:p1:customer:a1", "tally:p2:customer:a1", "tally:p3:customer:a1"]
    assert [states(engine, n) for n in ("p1", "p2", "p3")] == [[(1, "succeeded")]] * 3


def test_a_lost_response_in_a_batch_is_returned_and_the_next_batch_replays_it_under_the_same_key(
        engine, gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="drop_after_commit", count=1)
    first = StripeLedger(engine).perform_batch(partner_steps(gw, ["p1", "p2"]), workers=1)
    assert [type(o.error) for o in first].count(StripeUnreachable) == 1
    assert len(emulator.state.customers) == 2  # the dropped one was committed

    again = StripeLedger(engine).perform_batch(partner_steps(gw, ["p1", "p2"]), workers=1)

    assert all(o.error is None for o in again) and len(emulator.state.customers) == 2
    posts = [r for r in emulator.requests() if r["path"] == "/v1/customers"]
    assert [r["replayed"] for r in posts] == [False, False, True]  # only the lost one asked again
    assert {r["idempotency_key"] for r in posts} == {"tally:p1:customer:a1", "tally:p2:customer:a1"}


def test_a_saved_failure_is_looked_up_before_the_next_key_and_a_rejection_is_returned(engine, gw, emulator):
    emulator.add_fault(method="POST", path="/v1/customers", kind="error_500", count=1)
    first = StripeLedger(engine).perform_batch(partner_steps(gw, ["p1"]), workers=1)
    assert isinstance(first[0].error, StripeFailed)
    asked = []
    steps = partner_steps(gw, ["p1"], lookups={"p1": lambda: asked.append(1)})
    steps.append(Step(subject="partner:bad", step="transfer", identity="bad", lookup=lambda: None,
                      call=lambda key: gw.core.post("transfers.create", "/v1/transfers", idempotency_key=key,
                                                    params={"amount": 1, "currency": "usd",
                                                            "destination": "acct_unknown"})["id"]))

    out = StripeLedger(engine).perform_batch(steps, workers=2)

    assert asked == [1] and out[0].error is None  # looked up (nothing there), then the next key
    assert states(engine, "p1") == [(1, "failed"), (2, "succeeded")]
    assert isinstance(out[1].error, StripeRejected)
    with engine.begin() as conn:
        assert [r.state for r in stripe_requests_for(conn, "partner:bad")] == ["failed"]


def test_a_step_done_before_is_answered_from_the_record_without_a_call(engine, gw, emulator):
    StripeLedger(engine).perform_batch(partner_steps(gw, ["p1"]), workers=1)
    calls = len(emulator.requests())
    out = StripeLedger(engine).perform_batch(partner_steps(gw, ["p1"]), workers=1)
    assert out[0].object_id.startswith("cus_") and len(emulator.requests()) == calls


def test_a_rejection_the_step_names_already_done_is_its_object_and_recorded_as_success(engine, gw, emulator):
    def already(err: StripeRejected) -> str | None:
        return "tr_known" if "No such" in str(err) or "destination" in str(err) else None

    step = Step(subject="partner:dup", step="transfer", identity="dup", lookup=lambda: None,
                already_done=already,
                call=lambda key: gw.core.post("transfers.create", "/v1/transfers", idempotency_key=key,
                                              params={"amount": 1, "currency": "usd",
                                                      "destination": "acct_unknown"})["id"])

    out = StripeLedger(engine).perform_batch([step], workers=1)

    assert out[0].error is None and out[0].object_id == "tr_known"
    with engine.begin() as conn:
        assert [(r.state, r.stripe_object_id) for r in stripe_requests_for(conn, "partner:dup")] == [
            ("succeeded", "tr_known")]
