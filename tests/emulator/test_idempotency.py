"""Idempotency keys behave as Stripe documents them."""

from __future__ import annotations

import threading
import time

import pytest
import stripe

from .helpers import raw


@pytest.fixture
def customer(client):
    return client.customers.create(params={"email": "idem@example.com"})


def _create(client, customer, key, **params):
    return client.invoices.create(params={"customer": customer.id, **params},
                                  options={"idempotency_key": key})


def test_same_key_and_params_replays_the_original_invoice_and_creates_only_one(client, emu, customer):
    first = _create(client, customer, "inv-key-1", metadata={"ref": "1"})
    second = _create(client, customer, "inv-key-1", metadata={"ref": "1"})
    assert second.id == first.id
    assert second.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert len(emu.state.invoices) == 1


def test_same_key_with_other_params_raises_idempotency_error(client, emu, customer):
    _create(client, customer, "inv-key-2", metadata={"ref": "1"})
    with pytest.raises(stripe.IdempotencyError):
        _create(client, customer, "inv-key-2", metadata={"ref": "2"})
    assert len(emu.state.invoices) == 1


def test_same_key_on_another_endpoint_raises_idempotency_error(client, customer):
    _create(client, customer, "shared-key")
    with pytest.raises(stripe.IdempotencyError):
        client.customers.create(params={"email": "x@example.com"}, options={"idempotency_key": "shared-key"})


def test_keys_are_scoped_per_api_key(make_client, emu):
    a, b = make_client(api_key="sk_test_a"), make_client(api_key="sk_test_b")
    ca = a.customers.create(params={"name": "n"}, options={"idempotency_key": "k"})
    cb = b.customers.create(params={"name": "n"}, options={"idempotency_key": "k"})
    assert ca.id != cb.id and len(emu.state.customers) == 2


def test_key_expires_24h_after_first_use_on_the_emulator_clock(client, emu, customer):
    first = _create(client, customer, "inv-key-3")
    emu.advance_clock(24 * 3600 - 1)
    assert _create(client, customer, "inv-key-3").id == first.id
    emu.advance_clock(2)  # now 24 h + 1 s after first use
    fresh = _create(client, customer, "inv-key-3")
    assert fresh.id != first.id and len(emu.state.invoices) == 2
    assert fresh.last_response.headers.get("Idempotent-Replayed") is None


def test_concurrent_request_with_the_same_key_gets_409_and_is_not_saved(make_client, emu, customer):
    emu.add_fault(method="POST", path="/v1/invoices", kind="delay", seconds=1.0)
    slow, fast = make_client(max_network_retries=0), make_client(max_network_retries=0)
    result = {}

    def first():
        result["first"] = _create(slow, customer, "race-key")

    t = threading.Thread(target=first)
    t.start()
    def claimed():
        with emu.state.lock:
            return any(r["in_flight"] for r in emu.state.idempotency.values())

    deadline = time.time() + 5
    while time.time() < deadline and not claimed():
        time.sleep(0.01)
    with pytest.raises(stripe.APIError) as exc:
        _create(fast, customer, "race-key")
    t.join()
    assert exc.value.http_status == 409
    assert exc.value.json_body["error"]["type"] == "idempotency_error"
    assert len(emu.state.invoices) == 1
    # the 409 was not saved: a retry now replays the first request's result
    again = _create(fast, customer, "race-key")
    assert again.id == result["first"].id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"


def test_business_validation_errors_are_saved_and_replayed(client, emu, customer):
    inv = client.invoices.create(params={"customer": customer.id})
    client.invoices.add_lines(inv.id, params={"lines": [{"amount": 100, "description": "x"}]})
    with pytest.raises(stripe.InvalidRequestError):
        client.invoices.pay(inv.id, options={"idempotency_key": "pay-1"})  # draft: 400, saved
    client.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.pay(inv.id, options={"idempotency_key": "pay-1"})  # replayed 400
    assert exc.value.headers.get("Idempotent-Replayed") == "true"
    assert client.invoices.pay(inv.id, options={"idempotency_key": "pay-2"}).status == "paid"


def test_a_parameter_failing_validation_is_not_saved_so_a_corrected_retry_with_the_same_key_runs(
        client, emu, customer):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _create(client, customer, "fix-1", collection_method="by_carrier_pigeon")
    assert exc.value.param == "collection_method"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.create(params={}, options={"idempotency_key": "fix-1"})  # missing customer
    assert exc.value.code == "parameter_missing"

    inv = _create(client, customer, "fix-1", collection_method="send_invoice", days_until_due=30)

    assert inv.collection_method == "send_invoice" and list(emu.state.invoices) == [inv.id]
    log = [r for r in emu.requests() if r["idempotency_key"] == "fix-1"]
    assert [(r["status"], r["replayed"]) for r in log] == [(400, False), (400, False), (200, False)]
    assert _create(client, customer, "fix-1", collection_method="send_invoice",
                   days_until_due=30).id == inv.id  # now saved: replayed


def test_a_malformed_line_in_add_lines_is_not_saved_under_the_key(client, emu, customer):
    inv = client.invoices.create(params={"customer": customer.id})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.add_lines(inv.id, params={"lines": [{"description": "no amount"}]},
                                  options={"idempotency_key": "lines-1"})
    assert exc.value.param == "lines[0][amount]"
    client.invoices.add_lines(inv.id, params={"lines": [{"amount": 250, "description": "fixed"}]},
                              options={"idempotency_key": "lines-1"})
    assert client.invoices.retrieve(inv.id).total == 250


def test_auth_and_parse_failures_are_not_saved_under_the_key(emu):
    status, _, _ = raw(emu, "POST", "/v1/customers", {"name": "n"}, {"Idempotency-Key": "k1"},
                       api_key="bad")
    assert status == 401
    status, _, _ = raw(emu, "POST", "/v1/customers", {"metadata[a][": "x"}, {"Idempotency-Key": "k1"})
    assert status == 400
    status, body, headers = raw(emu, "POST", "/v1/customers", {"name": "n"}, {"Idempotency-Key": "k1"})
    assert status == 200 and body["name"] == "n" and "Idempotent-Replayed" not in headers


def test_posts_without_a_key_are_simply_executed(emu):
    for _ in range(2):
        assert raw(emu, "POST", "/v1/customers", {"name": "same"})[0] == 200
    assert len(emu.state.customers) == 2
