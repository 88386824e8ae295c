"""Connect transfers: create (``amount`` >= 1, ``currency``, a ``destination`` whose
``capabilities.transfers`` is active), retrieve, list (filters ``destination``, ``transfer_group``)."""

from __future__ import annotations

from ..core.errors import StripeError, find
from ..core.ids import new_id
from ..core.listing import newest_first, paginate
from ..core.params import p_currency, p_int, p_metadata, p_str
from ..core.resource import Operation, Resource
from ..core.state import Store


def create_transfer(st, req):
    p = req.params
    amount = p_int(p, "amount", required=True, minimum=1)
    currency = p_currency(p, "currency", required=True)
    dest_id = p_str(p, "destination", required=True)
    dest = st.accounts.get(dest_id)
    if dest is None:
        raise StripeError(400, f"No such destination: '{dest_id}'", param="destination", code="resource_missing")
    if dest["capabilities"].get("transfers") != "active":
        raise StripeError(400, "Your destination account needs to have at least one of the following "
                               "capabilities enabled: transfers, crypto_transfers, legacy_payments "
                               f"(account {dest_id} has transfers={dest['capabilities'].get('transfers')}).",
                          param="destination")
    now = int(st.now())
    t = {
        "id": new_id("tr"), "object": "transfer", "amount": amount, "amount_reversed": 0,
        "balance_transaction": new_id("txn"), "created": now, "currency": currency,
        "description": p_str(p, "description"), "destination": dest_id,
        "destination_payment": new_id("py"), "livemode": False, "metadata": p_metadata(p),
        "reversals": {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": ""},
        "reversed": False, "source_transaction": p_str(p, "source_transaction"), "source_type": "card",
        "transfer_group": p_str(p, "transfer_group"),
    }
    t["reversals"]["url"] = f"/v1/transfers/{t['id']}/reversals"
    st.transfers[t["id"]] = t
    return t


def get_transfer(st, req):
    return find(st.transfers, "transfer", req.args["id"])


def list_transfers(st, req):
    p = req.params
    dest = p_str(p, "destination")
    group = p_str(p, "transfer_group")

    def pred(t):
        return (dest is None or t["destination"] == dest) and (group is None or t["transfer_group"] == group)

    return paginate(newest_first(st.transfers, pred, p.get("created")), req, "/v1/transfers")


resource = Resource("transfers", stores=(Store("transfers"),), operations=(
    Operation("POST", "/v1/transfers", create_transfer),
    Operation("GET", "/v1/transfers", list_transfers),
    Operation("GET", "/v1/transfers/{id}", get_transfer),
))
