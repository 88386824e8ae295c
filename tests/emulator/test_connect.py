"""Connect accounts and transfers."""

from __future__ import annotations

import pytest
import stripe

from .helpers import control


def test_transfer_to_disabled_account_fails_and_to_enabled_account_succeeds(client, emu):
    acct = client.accounts.create(params={"type": "express", "email": "p@example.com",
                                          "metadata": {"tally_partner_id": "p1"}})
    assert acct.id.startswith("acct_") and acct.payouts_enabled is False
    params = {"amount": 1500, "currency": "usd", "destination": acct.id, "transfer_group": "close-2024-05",
              "metadata": {"payout": "1"}}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.transfers.create(params=params)
    assert exc.value.param == "destination"
    assert emu.state.transfers == {}

    status, body = control(emu, "POST", f"/_emulator/accounts/{acct.id}/enable", {})
    assert status == 200 and body["payouts_enabled"] is True and body["charges_enabled"] is True
    assert client.accounts.retrieve(acct.id).payouts_enabled is True

    tr = client.transfers.create(params=params)
    assert tr.id.startswith("tr_") and tr.amount == 1500 and tr.destination == acct.id
    assert client.transfers.retrieve(tr.id).metadata["payout"] == "1"


def test_transfer_to_unknown_destination_fails(client, emu):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.transfers.create(params={"amount": 1, "currency": "usd", "destination": "acct_unknown"})
    assert exc.value.param == "destination" and exc.value.code == "resource_missing"


def test_transfers_list_filters_by_destination_and_transfer_group(client, emu):
    a = client.accounts.create(params={"type": "custom"})
    b = client.accounts.create(params={"type": "custom"})
    emu.enable_account(a.id)
    emu.enable_account(b.id)
    t1 = client.transfers.create(params={"amount": 1, "currency": "usd", "destination": a.id,
                                         "transfer_group": "g1"})
    t2 = client.transfers.create(params={"amount": 2, "currency": "usd", "destination": b.id,
                                         "transfer_group": "g1"})
    client.transfers.create(params={"amount": 3, "currency": "usd", "destination": a.id,
                                    "transfer_group": "g2"})
    assert [t.id for t in client.transfers.list(params={"transfer_group": "g1"}).data] == [t2.id, t1.id]
    assert [t.id for t in client.transfers.list(params={"destination": a.id, "transfer_group": "g1"}).data] \
        == [t1.id]


def test_disable_hook_blocks_further_transfers(client, emu):
    acct = client.accounts.create(params={"type": "express"})
    emu.enable_account(acct.id)
    control(emu, "POST", f"/_emulator/accounts/{acct.id}/disable", {})
    with pytest.raises(stripe.InvalidRequestError):
        client.transfers.create(params={"amount": 1, "currency": "usd", "destination": acct.id})


def _enabled_account(client, emu):
    acct = client.accounts.create(params={"type": "express"})
    emu.enable_account(acct.id)
    return acct


def test_transfer_beyond_the_platform_balance_fails_with_balance_insufficient(client, emu):
    acct = _enabled_account(client, emu)
    status, body = control(emu, "POST", "/_emulator/balance", {"available": 1000})
    assert status == 200 and body == {"available": 1000}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.transfers.create(params={"amount": 1001, "currency": "usd", "destination": acct.id})
    assert exc.value.code == "balance_insufficient" and emu.state.transfers == {}
    client.transfers.create(params={"amount": 600, "currency": "usd", "destination": acct.id})
    assert control(emu, "GET", "/_emulator/balance", None)[1] == {"available": 400}
    assert control(emu, "POST", "/_emulator/balance", {"available": -1})[0] == 400


def test_reversal_gives_the_amount_back_and_cannot_exceed_what_is_left(client, emu):
    acct = _enabled_account(client, emu)
    emu.set_platform_balance(5000)
    tr = client.transfers.create(params={"amount": 3000, "currency": "usd", "destination": acct.id})
    rev = client.transfers.reversals.create(tr.id, params={"amount": 1000})
    assert rev.amount == 1000 and rev.transfer == tr.id
    assert client.transfers.retrieve(tr.id).amount_reversed == 1000
    with pytest.raises(stripe.InvalidRequestError):
        client.transfers.reversals.create(tr.id, params={"amount": 2001})
    client.transfers.reversals.create(tr.id)  # the rest
    after = client.transfers.retrieve(tr.id)
    assert after.reversed is True and [r.amount for r in client.transfers.reversals.list(tr.id).data] == [2000, 1000]
    assert emu.state.balance["available"] == 5000


def test_transfers_list_filters_by_created(client, emu):
    acct = _enabled_account(client, emu)
    first = client.transfers.create(params={"amount": 1, "currency": "usd", "destination": acct.id})
    emu.advance_clock(100)
    second = client.transfers.create(params={"amount": 1, "currency": "usd", "destination": acct.id})
    later = client.transfers.list(params={"created": {"gt": first.created}}).data
    assert [t.id for t in later] == [second.id]


def test_requested_transfers_capability_is_pending_until_details_are_submitted_and_account_links(client, emu):
    acct = client.accounts.create(params={"type": "express", "capabilities": {"transfers": {"requested": True}}})
    assert acct.capabilities.transfers == "pending"
    link = client.account_links.create(params={"account": acct.id, "type": "account_onboarding",
                                               "refresh_url": "https://x/r", "return_url": "https://x/d"})
    assert acct.id in link.url and link.expires_at > link.created
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.account_links.create(params={"account": acct.id, "type": "account_onboarding", "return_url": "https://x"})
    assert exc.value.param == "refresh_url"
    emu.enable_account(acct.id)
    assert client.accounts.retrieve(acct.id).capabilities.transfers == "active"
