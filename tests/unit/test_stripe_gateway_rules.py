"""The Stripe gateway's rules that need no network: how SDK errors are sorted into the three kinds Tally
acts on, the back-off, the write cap's pacing, metadata reading and webhook signatures."""

from __future__ import annotations

import json
import time

import pytest
import stripe

from gateways.stripe.core import (
    MAX_429_RETRIES,
    RateLimiter,
    StripeFailed,
    StripeRejected,
    StripeUnreachable,
    classify,
    metadata_of,
    retry_after_seconds,
)
from gateways.stripe.customers import CustomerMismatch
from gateways.stripe.webhooks import BadSignature, sign_payload, verify_event


def sdk_error(cls, status, message="boom", **kw):
    return cls(message, http_status=status, **kw)


@pytest.mark.parametrize("err, kind, status", [
    (sdk_error(stripe.RateLimitError, 429), StripeUnreachable, 429),
    (sdk_error(stripe.IdempotencyError, 400), StripeRejected, 400),
    (sdk_error(stripe.InvalidRequestError, 400, param="customer"), StripeRejected, 400),
    (sdk_error(stripe.InvalidRequestError, 404, param="id"), StripeRejected, 404),
    (sdk_error(stripe.CardError, 402, param="card", code="card_declined"), StripeRejected, 402),
    (sdk_error(stripe.PermissionError, 403), StripeRejected, 403),
    (sdk_error(stripe.AuthenticationError, 401), StripeRejected, 401),
    (stripe.APIConnectionError("connection refused"), StripeUnreachable, None),
    (sdk_error(stripe.APIError, 409), StripeUnreachable, 409),
    (sdk_error(stripe.APIError, 500), StripeFailed, 500),
    (sdk_error(stripe.APIError, 503), StripeFailed, 503),
])
def test_sdk_errors_are_sorted_into_rejected_failed_or_unreachable(err, kind, status):
    out = classify("invoices.create", err)
    assert type(out) is kind and out.http_status == status
    assert str(out).startswith("invoices.create: ")


def test_the_messages_say_what_happened():
    assert str(classify("op", sdk_error(stripe.RateLimitError, 429))) == (
        f"op: still rate limited after {MAX_429_RETRIES + 1} tries")
    assert str(classify("op", sdk_error(stripe.APIError, 409))) == "op: concurrent request in flight"
    assert "Stripe error 500: boom" in str(classify("op", sdk_error(stripe.APIError, 500)))
    assert "no response from Stripe" in str(classify("op", stripe.APIConnectionError("reset")))
    assert str(classify("op", sdk_error(stripe.InvalidRequestError, 400, message="No such customer",
                                        param="customer"))) == "op: No such customer"


@pytest.mark.parametrize("headers, attempt, wait", [
    ({"Retry-After": "2"}, 0, 2.0),
    ({"retry-after": "0.5"}, 3, 0.5),
    ({"Retry-After": "120"}, 0, 30.0),  # capped
    ({"Retry-After": "soon"}, 0, 0.25),  # unreadable: back-off
    ({}, 0, 0.25), ({}, 1, 0.5), ({}, 2, 1.0), ({}, 5, 8.0), ({}, 9, 8.0),
    (None, 1, 0.5),
])
def test_retry_after_is_the_servers_capped_at_30s_else_exponential_back_off(headers, attempt, wait):
    assert retry_after_seconds(headers, attempt) == wait


def test_rate_limiter_spaces_calls_by_one_over_the_rate_and_zero_means_unlimited():
    unlimited = RateLimiter(0)
    unlimited.acquire()
    assert unlimited._next <= time.monotonic()  # no slot taken
    paced = RateLimiter(50)
    start = paced._next
    for _ in range(3):
        paced.acquire()
    assert paced._next - start >= 3 / 50 - 1e-9  # three slots of 20 ms reserved


def test_metadata_of_reads_a_stripe_object_and_an_object_without_metadata():
    obj = stripe.StripeObject.construct_from({"id": "cus_1", "metadata": {"tally_account_id": "a"}}, "k")
    assert metadata_of(obj) == {"tally_account_id": "a"}
    assert metadata_of(object()) == {}


def test_customer_mismatch_names_both_accounts_and_is_a_rejection():
    err = CustomerMismatch("cus_1", "acme", "globex")
    assert isinstance(err, StripeRejected) and err.http_status == 409
    assert str(err) == ("Stripe customer cus_1 names account 'globex' in metadata.tally_account_id, not 'acme': "
                        "refusing to use it for acme")
    assert (err.customer_id, err.account_id, err.named) == ("cus_1", "acme", "globex")


# ---- webhooks ----------------------------------------------------------------------------------------
SECRET = "whsec_test"
EVENT = json.dumps({"id": "evt_1", "type": "invoice.paid", "data": {"object": {}}}).encode()


def test_a_signed_event_verifies_and_comes_back_as_a_dict():
    sig = sign_payload(EVENT, SECRET, int(time.time()))
    assert sig.startswith("t=") and ",v1=" in sig and len(sig.split("v1=")[1]) == 64
    assert verify_event(EVENT, sig, SECRET) == json.loads(EVENT)


def test_a_missing_signature_says_so():
    for missing in (None, ""):
        with pytest.raises(BadSignature) as exc:
            verify_event(EVENT, missing, SECRET)
        assert str(exc.value) == "Stripe-Signature header missing"


@pytest.mark.parametrize("payload, signature, secret, reason", [
    (EVENT, "t=1,v1=deadbeef", SECRET, "Stripe-Signature:"),
    (EVENT, "signed", SECRET, "Stripe-Signature:"),
])
def test_unsigned_or_badly_signed_payloads_are_refused(payload, signature, secret, reason):
    with pytest.raises(BadSignature, match=reason):
        verify_event(payload, signature, secret)


def test_a_signature_with_another_secret_or_too_old_is_refused():
    now = int(time.time())
    with pytest.raises(BadSignature):
        verify_event(EVENT, sign_payload(EVENT, "whsec_other", now), SECRET)
    with pytest.raises(BadSignature):
        verify_event(EVENT, sign_payload(EVENT, SECRET, now - 301), SECRET)
    assert verify_event(EVENT, sign_payload(EVENT, SECRET, now - 250), SECRET)["id"] == "evt_1"
    with pytest.raises(BadSignature):
        verify_event(EVENT, sign_payload(EVENT, SECRET, now - 250), SECRET, tolerance=200)


NOT_AN_EVENT = "payload: not a Stripe event (id and type missing)"


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "payload: Expecting value: line 1 column 1 (char 0)"),
    (json.dumps([1, 2]).encode(), NOT_AN_EVENT),
    (json.dumps({"type": "x"}).encode(), NOT_AN_EVENT),
    (json.dumps({"id": "evt_1"}).encode(), NOT_AN_EVENT),
    (json.dumps({"id": 5, "type": "x"}).encode(), NOT_AN_EVENT),
    (json.dumps({"id": "evt_1", "type": 5}).encode(), NOT_AN_EVENT),
])
def test_a_signed_payload_that_is_not_a_stripe_event_is_refused(payload, reason):
    with pytest.raises(BadSignature) as exc:
        verify_event(payload, sign_payload(payload, SECRET, int(time.time())), SECRET)
    assert str(exc.value) == reason


def test_a_payload_that_is_not_utf8_is_refused_with_the_reason():
    with pytest.raises(BadSignature) as exc:
        verify_event(b"\xff\xfe", "t=1,v1=00", SECRET)
    assert str(exc.value).startswith("payload: 'utf-8' codec can't decode byte 0xff")


def test_get_answers_none_only_for_a_missing_object_and_raises_the_rest():
    from gateways.stripe.core import StripeCore

    def failing(err):
        def fn():
            raise err
        return fn

    missing = sdk_error(stripe.InvalidRequestError, 404, message="No such invoice", param="id")
    assert StripeCore.get(None, "invoices.retrieve", failing(missing)) is None
    with pytest.raises(StripeRejected, match="invoices.retrieve: bad"):
        StripeCore.get(None, "invoices.retrieve", failing(sdk_error(stripe.InvalidRequestError, 400,
                                                                    message="bad", param="id")))
    with pytest.raises(StripeFailed):
        StripeCore.get(None, "invoices.retrieve", failing(sdk_error(stripe.APIError, 404)))
