"""Connect transfers: create (``amount`` >= 1, ``currency``, a ``destination`` whose
``capabilities.transfers`` is active, within the platform's available balance), retrieve, list (filters
``destination``, ``transfer_group``, ``created``), and reversals (create, list).

The platform balance (``state.balance``): ``available`` is ``None`` (unlimited, the default) or integer
cents that each transfer takes and each reversal gives back; a transfer beyond it fails with the code
``balance_insufficient``, as Stripe's does without ``source_transaction``. Tests set it with
``set_platform_balance`` (the control plane's ``POST /_emulator/balance``)."""

from __future__ import annotations

from ..core.errors import StripeError, find
from ..core.ids import new_id
from ..core.listing import newest_first, paginate
from ..core.params import ANY, LIST, known, p_currency, p_int, p_metadata, p_str
from ..core.resource import Operation, Resource
from ..core.state import EmulatorState, Store


def _balance() -> dict:
    return {"available": None}


def set_platform_balance(st: EmulatorState, available: int | None) -> dict:
    """Test hook: the platform's available balance in cents (None: unlimited)."""
    if available is not None and (isinstance(available, bool) or not isinstance(available, int) or available < 0):
        raise ValueError("available must be whole cents >= 0, or null for unlimited")
    with st.lock:
        st.balance["available"] = available
        st.dirty = True
        return dict(st.balance)


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
    available = st.balance.get("available")
    if available is not None and amount > available and not p_str(p, "source_transaction"):
        raise StripeError(400, "You have insufficient available funds in your Stripe account. Try adding funds "
                               "directly to your available balance by creating Top-ups.",
                          code="balance_insufficient")
    if available is not None:
        st.balance["available"] = available - amount
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


def create_reversal(st, req):
    """Reverse ``amount`` (default: what is left) of a transfer; the platform balance gets it back."""
    t = find(st.transfers, "transfer", req.args["id"])
    p = req.params
    left = t["amount"] - t["amount_reversed"]
    amount = p_int(p, "amount", default=left, minimum=1)
    if amount > left:
        raise StripeError(400, f"Amount must be no more than {left} (the transfer's amount not yet reversed).",
                          param="amount")
    r = {"id": new_id("trr"), "object": "transfer_reversal", "amount": amount, "created": int(st.now()),
         "currency": t["currency"], "metadata": p_metadata(p), "transfer": t["id"],
         "balance_transaction": new_id("txn"), "destination_payment_refund": new_id("pyr")}
    t["amount_reversed"] += amount
    t["reversed"] = t["amount_reversed"] == t["amount"]
    t["reversals"]["data"].insert(0, r)
    t["reversals"]["total_count"] += 1
    if st.balance.get("available") is not None:
        st.balance["available"] += amount
    return r


def list_reversals(st, req):
    t = find(st.transfers, "transfer", req.args["id"])
    return paginate(list(t["reversals"]["data"]), req, f"/v1/transfers/{t['id']}/reversals")


resource = Resource("transfers", stores=(Store("transfers"), Store("balance", factory=_balance, counted=False)),
                    operations=(
    Operation("POST", "/v1/transfers", create_transfer,
              known("amount", "currency", "destination", "description", "source_transaction", "transfer_group",
                    metadata=ANY)),
    Operation("GET", "/v1/transfers", list_transfers, known("destination", "transfer_group", **LIST)),
    Operation("GET", "/v1/transfers/{id}", get_transfer, {}),
    Operation("POST", "/v1/transfers/{id}/reversals", create_reversal, known("amount", metadata=ANY)),
    Operation("GET", "/v1/transfers/{id}/reversals", list_reversals, LIST),
))
