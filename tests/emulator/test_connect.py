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
