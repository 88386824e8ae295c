"""Customers over the real stripe SDK: create/retrieve/list/search, auth."""

from __future__ import annotations

import pytest
import stripe

from .helpers import raw


def test_created_customer_can_be_retrieved_and_found_by_metadata_search(client):
    cus = client.customers.create(params={"email": "ada@example.com", "name": "Ada",
                                          "metadata": {"tally_account_id": "acct-1"}})
    client.customers.create(params={"metadata": {"tally_account_id": "acct-2"}})

    got = client.customers.retrieve(cus.id)
    assert got.id.startswith("cus_") and got.email == "ada@example.com" and got.name == "Ada"
    assert got.metadata["tally_account_id"] == "acct-1" and got.livemode is False

    res = client.customers.search(params={"query": "metadata['tally_account_id']:'acct-1'"})
    assert res.object == "search_result"
    assert [c.id for c in res.data] == [cus.id]
    none = client.customers.search(params={"query": "metadata['tally_account_id']:'acct-3'"})
    assert list(none.data) == []


def test_search_with_and_of_metadata_clauses_requires_every_clause_to_match(client):
    both = client.customers.create(params={"metadata": {"a": "1", "b": "2"}})
    client.customers.create(params={"metadata": {"a": "1", "b": "3"}})
    res = client.customers.search(params={"query": "metadata['a']:'1' AND metadata['b']:'2'"})
    assert [c.id for c in res.data] == [both.id]


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
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert len(emu.state.customers) == 0
