"""The gateway's shared request path against the emulator: pagination and the read side's back-off."""

from __future__ import annotations

from gateways.stripe import StripeGateway


def test_every_page_of_a_list_is_read_even_when_a_later_page_is_rate_limited(settings, emulator):
    gw = StripeGateway(settings)
    made = {gw.customers.create(f"acct-{i}", None, f"test:acct-{i}") for i in range(3)}
    before = gw.thread_calls()

    items = gw.core.each("customers.list", gw.core.client.v1.customers.list, params={"limit": 1})
    listed = {next(items).id}  # page 1 read; the next page is fetched inside auto_paging_iter
    emulator.add_fault(method="GET", path="/v1/customers", kind="rate_limit_429", count=2, retry_after=0)
    listed |= {c.id for c in items}

    assert listed == made
    gets = [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == "/v1/customers"]
    assert [r["status"] for r in gets] == [200, 429, 429, 200, 200]  # 3 pages of one
    assert gw.thread_calls() - before == len(gets)
