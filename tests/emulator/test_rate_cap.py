"""The write rate cap (``stripe_emulator/core/ratecap.py``): Stripe's rate limiter, for pacing benches."""

from __future__ import annotations

import pytest
import stripe

from .helpers import control


@pytest.fixture
def capped(emu):
    # one write per 100 s: the bucket holds one, the next is free long after the test
    status, body = control(emu, "POST", "/_emulator/rate_cap", {"writes_per_second": 0.01})
    assert status == 200 and body["writes_per_second"] == 0.01
    yield emu
    control(emu, "POST", "/_emulator/rate_cap", {"writes_per_second": None})


def test_writes_past_the_cap_are_answered_429_with_retry_after_and_nothing_is_saved(capped, make_client):
    sdk = make_client(max_network_retries=0)
    made, limited = [], []
    for i in range(4):
        try:
            made.append(sdk.customers.create(params={"name": f"c{i}"}, options={"idempotency_key": f"cap-{i}"}))
        except stripe.RateLimitError as err:
            limited.append(err)
    assert len(made) == 1 and len(limited) == 3
    assert float(limited[0].headers["Retry-After"]) > 0
    # the spec's error type for a 429, as for the rate_limit_429 fault
    assert (limited[0].error.type, limited[0].error.code) == ("invalid_request_error", "rate_limit")
    assert len(capped.state.customers) == 1
    posts = [r for r in capped.requests() if r["status"] == 429]
    assert all(not r["executed"] for r in posts)
    _, body = control(capped, "GET", "/_emulator/rate_cap")
    assert body["limited"] == 3


def test_reads_are_not_capped(capped, make_client):
    sdk = make_client(max_network_retries=0)
    cus = sdk.customers.create(params={"name": "reader"})
    for _ in range(5):
        assert sdk.customers.retrieve(cus.id).id == cus.id


def test_a_bad_cap_is_refused_naming_the_field(emu):
    status, body = control(emu, "POST", "/_emulator/rate_cap", {"writes_per_second": "fast"})
    assert status == 400 and "writes_per_second" in body["error"]["message"]
