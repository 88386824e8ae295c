"""Unknown parameters are refused as Stripe refuses them: 400 invalid_request_error "Received unknown
parameter: <name>" (``param`` the name, ``code`` parameter_unknown), on every endpoint, never saved under
the Idempotency-Key."""

from __future__ import annotations

import pytest
import stripe

from stripe_emulator.resources import RESOURCES


def test_every_endpoint_declares_the_parameters_it_takes():
    undeclared = [f"{op.method} {op.path}" for r in RESOURCES for op in r.operations if op.params is None]
    assert undeclared == []


def test_an_unknown_parameter_is_refused_with_stripes_error(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.customers.create(params={"email": "a@example.com", "nickname": "al"})
    assert exc.value.http_status == 400
    err = exc.value.error
    assert (err.type, err.code, err.param) == ("invalid_request_error", "parameter_unknown", "nickname")
    assert err.message == "Received unknown parameter: nickname"


def test_an_unknown_nested_parameter_is_named_in_full(client):
    cus = client.customers.create(params={"email": "a@example.com"})
    inv = client.invoices.create(params={"customer": cus.id})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.add_lines(inv.id, params={"lines": [
            {"amount": 100, "description": "ok"},
            {"amount": 100, "description": "bad", "price_data": {"currency": "usd", "unit_amount": 1, "colour": "red"}},
        ]})
    assert exc.value.error.param == "lines[1][price_data][colour]"
    assert client.invoices.retrieve(inv.id).total == 0  # nothing added


def test_an_unknown_list_filter_is_refused(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.invoices.list(params={"customer": "cus_x", "paid": "true"})
    assert exc.value.error.param == "paid"


def test_free_form_hashes_and_expand_take_any_key(client, emu):
    cus = client.customers.create(params={"email": "a@example.com", "metadata": {"anything": "goes"},
                                          "expand": ["tax"]})
    assert cus.metadata["anything"] == "goes"
    client.billing.meters.create(params={"display_name": "n", "event_name": "n",
                                         "default_aggregation": {"formula": "sum"}})
    ev = client.billing.meter_events.create(params={"event_name": "n", "payload": {
        "stripe_customer_id": cus.id, "value": "1", "extra_dimension": "x"}})
    assert ev.payload["extra_dimension"] == "x"


def test_an_unknown_parameter_is_not_saved_under_the_idempotency_key(client, emu):
    with pytest.raises(stripe.InvalidRequestError):
        client.customers.create(params={"email": "a@example.com", "nickname": "al"},
                                options={"idempotency_key": "k-unknown"})
    # the corrected retry under the same key runs (a saved answer would be an idempotency_error)
    cus = client.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k-unknown"})
    assert cus.email == "a@example.com"
    [refused, ran] = [r for r in emu.requests() if r["path"] == "/v1/customers"]
    assert (refused["status"], refused["replayed"]) == (400, False)
    assert (ran["status"], ran["replayed"]) == (200, False)
