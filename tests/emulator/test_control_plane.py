"""The /_emulator/ control plane and the form decoder."""

from __future__ import annotations

import pytest

from stripe_emulator.core.errors import StripeError
from stripe_emulator.core.forms import decode_form

from .helpers import control, raw


def test_decode_form_builds_nested_dicts_and_indexed_lists():
    got = decode_form("lines[0][amount]=7500&lines[0][description]=a%20b&metadata[tally_invoice_id]=42"
                      "&lines[1][price_data][unit_amount_decimal]=0.5&lines[1][quantity]=3&expand[]=x"
                      "&expand[]=y&customer=cus_1")
    assert got == {
        "lines": [{"amount": "7500", "description": "a b"},
                  {"price_data": {"unit_amount_decimal": "0.5"}, "quantity": "3"}],
        "metadata": {"tally_invoice_id": "42"}, "expand": ["x", "y"], "customer": "cus_1",
    }
    with pytest.raises(StripeError):
        decode_form("a=1&a[b]=2")


def test_health_clock_reset_requests_and_stats(emu):
    assert control(emu, "GET", "/_emulator/health")[1]["ok"] is True
    before = control(emu, "GET", "/_emulator/clock")[1]["now"]
    after = control(emu, "POST", "/_emulator/clock", {"advance_seconds": 3600})[1]["now"]
    assert 3600 <= after - before < 3660

    raw(emu, "POST", "/v1/customers", {"name": "a"}, {"Idempotency-Key": "log-1"})
    raw(emu, "POST", "/v1/customers", {"name": "a"}, {"Idempotency-Key": "log-1"})
    cid = next(iter(emu.state.customers))
    raw(emu, "GET", f"/v1/customers/{cid}")
    log = control(emu, "GET", "/_emulator/requests")[1]["requests"]
    assert [(r["method"], r["template"], r["replayed"]) for r in log] == [
        ("POST", "/v1/customers", False), ("POST", "/v1/customers", True), ("GET", "/v1/customers/{id}", False)]
    assert log[0]["idempotency_key"] == "log-1" and log[0]["status"] == 200
    since = control(emu, "GET", f"/_emulator/requests?since={log[1]['seq']}")[1]["requests"]
    assert [r["seq"] for r in since] == [log[2]["seq"]]

    stats = control(emu, "GET", "/_emulator/stats")[1]
    assert stats["by_endpoint"] == {"GET /v1/customers/{id}": 1, "POST /v1/customers": 2}
    assert stats["totals"]["requests"] == 3 and stats["totals"]["replayed"] == 1

    assert control(emu, "POST", "/_emulator/reset")[0] == 200
    assert emu.state.customers == {} and control(emu, "GET", "/_emulator/requests")[1]["requests"] == []


def test_unknown_routes_get_stripe_style_404(emu):
    status, body, _ = raw(emu, "GET", "/v1/nope")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    assert control(emu, "GET", "/_emulator/nope")[0] == 404
