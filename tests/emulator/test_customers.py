"""Customers over the real stripe SDK: create/retrieve/list/search, auth."""

from __future__ import annotations

import pytest
import stripe

from .helpers import raw


def test_created_customer_can_be_retrieved_and_found_by_metadata_search(client, emu):
    cus = client.customers.create(params={"email": "ada@example.com", "name": "Ada",
                                          "metadata": {"tally_account_id": "acct-1"}})
    client.customers.create(params={"metadata": {"tally_account_id": "acct-2"}})
    emu.advance_clock(emu.state.search_lag_seconds)  # search lags behind writes, as Stripe's does

    got = client.customers.retrieve(cus.id)
    assert got.id.startswith("cus_") and got.email == "ada@example.com" and got.name == "Ada"
    assert got.metadata["tally_account_id"] == "acct-1" and got.livemode is False

    res = client.customers.search(params={"query": "metadata['tally_account_id']:'acct-1'"})
    assert res.object == "search_result"
    assert [c.id for c in res.data] == [cus.id]
    none = client.customers.search(params={"query": "metadata['tally_account_id']:'acct-3'"})
    assert list(none.data) == []


def test_search_with_and_of_metadata_clauses_requires_every_clause_to_match(client, emu):
    both = client.customers.create(params={"metadata": {"a": "1", "b": "2"}})
    client.customers.create(params={"metadata": {"a": "1", "b": "3"}})
    emu.advance_clock(emu.state.search_lag_seconds)
    res = client.customers.search(params={"query": "metadata['a']:'1' AND metadata['b']:'2'"})
    assert [c.id for c in res.data] == [both.id]


def test_search_misses_a_customer_created_moments_ago_and_finds_it_once_the_lag_has_passed(client, emu):
    emu.state.search_lag_seconds = 60
    cus = client.customers.create(params={"metadata": {"tally_account_id": "acct-9"}})
    query = {"query": "metadata['tally_account_id']:'acct-9'"}

    assert list(client.customers.search(params=query).data) == []  # what Stripe may answer too
    assert [c.id for c in client.customers.list(params={"created": {"gte": cus.created}}).data] == [cus.id]
    emu.advance_clock(60)
    assert [c.id for c in client.customers.search(params=query).data] == [cus.id]


def test_malformed_search_query_is_an_invalid_request(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.customers.search(params={"query": "metadata['a'] = 1"})
    assert exc.value.http_status == 400 and exc.value.param == "query"


def test_list_customers_filters_by_email_and_paginates_newest_first(client):
    ids = [client.customers.create(params={"email": "same@example.com"}).id for _ in range(3)]
    client.customers.create(params={"email": "other@example.com"})

    page1 = client.customers.list(params={"email": "same@example.com", "limit": 2})
    assert [c.id for c in page1.data] == ids[::-1][:2] and page1.has_more is True
    page2 = client.customers.list(params={"email": "same@example.com", "limit": 2,
                                          "starting_after": page1.data[-1].id})
    assert [c.id for c in page2.data] == [ids[0]] and page2.has_more is False


def test_retrieving_an_unknown_customer_raises_404_invalid_request_error(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.customers.retrieve("cus_doesnotexist")
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"


def test_requests_without_a_sk_test_key_are_rejected_with_401(emu, make_client):
    with pytest.raises(stripe.AuthenticationError):
        make_client(api_key="sk_live_nope").customers.create(params={"email": "x@example.com"})
    status, body, _ = raw(emu, "GET", "/v1/customers", api_key=None)
    # The spec's error types do not include authentication_error: Stripe says invalid_request_error.
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert len(emu.state.customers) == 0
