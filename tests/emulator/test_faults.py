"""Fault injection combined with the SDK's own retries."""

from __future__ import annotations

import pytest
import stripe

from .helpers import control


@pytest.fixture
def customer(client):
    return client.customers.create(params={"email": "faults@example.com"})


def _invoice_posts(emu):
    return [r for r in emu.requests() if r["method"] == "POST" and r["path"] == "/v1/invoices"]


def test_error_500_is_saved_under_the_key_with_should_retry_false_so_the_sdk_does_not_retry(
        make_client, emu, customer, fast_retries):
    emu.add_fault(method="POST", path="/v1/invoices", kind="error_500")
    sdk = make_client(max_network_retries=2)
    with pytest.raises(stripe.APIError) as exc:
        sdk.invoices.create(params={"customer": customer.id}, options={"idempotency_key": "k500"})
    assert exc.value.http_status == 500
    assert exc.value.headers["stripe-should-retry"] == "false"
    posts = _invoice_posts(emu)
    assert len(posts) == 1  # the SDK reads Stripe-Should-Retry: a retry would only replay the 500
    assert posts[0]["executed"] and posts[0]["idempotency_key"] == "k500" and posts[0]["status"] == 500
    assert emu.state.invoices == {}
    # the same key keeps failing (replayed, with the header) even though the fault is gone; a new key works
    with pytest.raises(stripe.APIError) as again:
        sdk.invoices.create(params={"customer": customer.id}, options={"idempotency_key": "k500"})
    assert again.value.headers["stripe-should-retry"] == "false"
    assert _invoice_posts(emu)[-1]["replayed"] is True
    assert sdk.invoices.create(params={"customer": customer.id}).status == "draft"


def test_error_500_after_commit_creates_the_object_and_saves_the_500(make_client, emu, customer):
    emu.add_fault(method="POST", path="/v1/invoices", kind="error_500_after_commit")
    sdk = make_client(max_network_retries=0)
    with pytest.raises(stripe.APIError):
        sdk.invoices.create(params={"customer": customer.id}, options={"idempotency_key": "k5c"})
    assert len(emu.state.invoices) == 1  # committed although the caller was told it failed
    with pytest.raises(stripe.APIError):
        sdk.invoices.create(params={"customer": customer.id}, options={"idempotency_key": "k5c"})
    assert len(emu.state.invoices) == 1


def test_drop_after_commit_then_sdk_retry_gets_the_committed_invoice_by_replay(make_client, emu, customer,
                                                                               fast_retries):
    emu.add_fault(method="POST", path="/v1/invoices", kind="drop_after_commit")
    sdk = make_client(max_network_retries=2)
    inv = sdk.invoices.create(params={"customer": customer.id, "metadata": {"ref": "d1"}})
    assert inv.metadata["ref"] == "d1"
    assert list(emu.state.invoices) == [inv.id]
    assert inv.last_response.headers.get("Idempotent-Replayed") == "true"
    posts = _invoice_posts(emu)
    assert [(p["executed"], p["replayed"], p["fault"]) for p in posts] == [
        (True, False, "drop_after_commit"), (False, True, None)]


def test_drop_after_commit_without_retries_surfaces_a_connection_error(make_client, emu, customer):
    emu.add_fault(method="POST", path="/v1/invoices", kind="drop_after_commit")
    with pytest.raises(stripe.APIConnectionError):
        make_client(max_network_retries=0).invoices.create(params={"customer": customer.id})
    assert len(emu.state.invoices) == 1  # committed even though the client saw no answer


def test_rate_limit_429_raises_rate_limit_error_with_retry_after_and_creates_nothing(client, emu, customer):
    status, fault = control(emu, "POST", "/_emulator/faults",
                            {"method": "POST", "path": "/v1/invoices", "kind": "rate_limit_429",
                             "retry_after": 3})
    assert status == 200 and fault["kind"] == "rate_limit_429"
    with pytest.raises(stripe.RateLimitError) as exc:
        client.invoices.create(params={"customer": customer.id}, options={"idempotency_key": "k429"})
    assert exc.value.http_status == 429 and exc.value.headers.get("Retry-After") == "3"
    assert emu.state.invoices == {}
    # nothing was saved under the key: the retry executes normally
    inv = client.invoices.create(params={"customer": customer.id}, options={"idempotency_key": "k429"})
    assert inv.last_response.headers.get("Idempotent-Replayed") is None and len(emu.state.invoices) == 1


def test_faults_match_glob_paths_and_apply_count_times(client, emu, customer):
    inv = client.invoices.create(params={"customer": customer.id})
    control(emu, "POST", "/_emulator/faults",
            {"method": "POST", "path": "/v1/invoices/*/finalize", "kind": "rate_limit_429", "count": 2})
    assert control(emu, "GET", "/_emulator/faults")[1]["faults"][0]["count"] == 2
    client.invoices.update(inv.id, params={"description": "not matched"})
    for _ in range(2):
        with pytest.raises(stripe.RateLimitError):
            client.invoices.finalize_invoice(inv.id)
    assert control(emu, "GET", "/_emulator/faults")[1]["faults"] == []
    assert client.invoices.finalize_invoice(inv.id).status == "paid"


def test_deleting_faults_clears_pending_ones(client, emu, customer):
    emu.add_fault(method="POST", path="/v1/invoices", kind="error_500", count=5)
    assert control(emu, "DELETE", "/_emulator/faults")[0] == 200
    assert client.invoices.create(params={"customer": customer.id}).status == "draft"
