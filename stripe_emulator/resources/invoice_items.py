"""Invoice items: create (pending, or on a draft invoice as a new line), retrieve, list (filters
``invoice``, ``customer``, ``pending``). The items live in the invoices resource's store."""

from __future__ import annotations

from ..core.errors import StripeError, find
from ..core.listing import newest_first, paginate
from ..core.params import LIST, known, p_bool, p_currency, p_str
from ..core.resource import Operation, Resource
from .customers import find_customer
from .invoices import ITEM_PARAMS, build_item, check_room, find_invoice, line_for_item, not_draft, recompute_totals


def create_invoice_item(st, req):
    p = req.params
    cid = p_str(p, "customer", required=True)
    cus = find_customer(st, cid, param="customer")
    inv = None
    iid = p_str(p, "invoice")
    if iid:
        inv = find_invoice(st, iid, param="invoice")
        if inv["customer"] != cus["id"]:
            raise StripeError(400, f"Invoice {iid} belongs to another customer.", param="invoice")
        if inv["status"] != "draft":
            raise not_draft(inv, "add invoice items to")
        check_room(st, inv, 1)
    currency = p_currency(p, "currency", default=inv["currency"] if inv else (cus.get("currency") or "usd"))
    if inv and currency != inv["currency"]:
        raise StripeError(400, f"The currency ({currency}) must match the invoice currency "
                               f"({inv['currency']}).", param="currency")
    spec = dict(p)
    spec.pop("currency", None)
    if "unit_amount_decimal" in p and "price_data" not in p and "amount" not in p:
        spec["price_data"] = {"currency": currency, "product_data": {"name": p.get("description") or "item"},
                              "unit_amount_decimal": p["unit_amount_decimal"]}
        spec.pop("unit_amount_decimal")
    ii = build_item(st, spec, "", currency, cus["id"], inv["id"] if inv else None)
    st.invoice_items[ii["id"]] = ii
    if inv:
        st.invoice_lines.setdefault(inv["id"], []).append(line_for_item(st, ii))
        recompute_totals(st, inv)
    return ii


def get_invoice_item(st, req):
    return find(st.invoice_items, "invoiceitem", req.args["id"])


def list_invoice_items(st, req):
    p = req.params
    invoice = p_str(p, "invoice")
    customer = p_str(p, "customer")
    pending = p_bool(p, "pending")

    def pred(ii):
        return ((invoice is None or ii["invoice"] == invoice)
                and (customer is None or ii["customer"] == customer)
                and (pending is None or (ii["invoice"] is None) == pending))

    return paginate(newest_first(st.invoice_items, pred, p.get("created")), req, "/v1/invoiceitems")


resource = Resource("invoice_items", operations=(
    Operation("POST", "/v1/invoiceitems", create_invoice_item,
              known("customer", "invoice", "unit_amount_decimal", **ITEM_PARAMS)),
    Operation("GET", "/v1/invoiceitems", list_invoice_items, known("invoice", "customer", "pending", **LIST)),
    Operation("GET", "/v1/invoiceitems/{id}", get_invoice_item, {}),
))
