"""Customers: create, retrieve, update, delete, list (filter ``email``) and search."""

from __future__ import annotations

from ..core.errors import find
from ..core.ids import new_id, random_token
from ..core.listing import newest_first, paginate, search
from ..core.params import ANY, LIST, SEARCH, known, p_metadata, p_str
from ..core.resource import Operation, Resource
from ..core.state import EmulatorState, Store


def find_customer(st: EmulatorState, cid: str, param: str | None = None) -> dict:
    return find(st.customers, "customer", cid, param)


CUSTOMER_PARAMS = known("email", "name", "description", "phone", metadata=ANY)


def create_customer(st, req):
    p = req.params
    now = int(st.now())
    obj = {
        "id": new_id("cus"), "object": "customer", "address": None, "balance": 0, "created": now,
        "currency": None, "default_source": None, "delinquent": False,
        "description": p_str(p, "description"), "discount": None, "email": p_str(p, "email"),
        "invoice_prefix": random_token(8, "ABCDEF0123456789"),
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                             "rendering_options": None},
        "livemode": False, "metadata": p_metadata(p), "name": p_str(p, "name"),
        "next_invoice_sequence": 1, "phone": p_str(p, "phone"), "preferred_locales": [],
        "shipping": None, "tax_exempt": "none", "test_clock": None,
    }
    st.customers[obj["id"]] = obj
    return obj


def get_customer(st, req):
    return find_customer(st, req.args["id"])


def update_customer(st, req):
    obj = find_customer(st, req.args["id"])
    p = req.params
    md = p_metadata(p, existing=obj["metadata"])
    for k in ("email", "name", "description", "phone"):
        if k in p:
            obj[k] = p_str(p, k) or None
    obj["metadata"] = md
    return obj


def delete_customer(st, req):
    obj = find_customer(st, req.args["id"])
    del st.customers[obj["id"]]
    return {"id": obj["id"], "object": "customer", "deleted": True}


def list_customers(st, req):
    email = p_str(req.params, "email")
    items = newest_first(st.customers, (lambda c: c.get("email") == email) if email else None,
                         req.params.get("created"))
    return paginate(items, req, "/v1/customers")


def search_customers(st, req):
    return search(st, st.customers, req, "/v1/customers/search")


resource = Resource("customers", stores=(Store("customers"),), operations=(
    Operation("POST", "/v1/customers", create_customer, CUSTOMER_PARAMS),
    Operation("GET", "/v1/customers", list_customers, known("email", **LIST)),
    Operation("GET", "/v1/customers/search", search_customers, SEARCH),
    Operation("GET", "/v1/customers/{id}", get_customer, {}),
    Operation("POST", "/v1/customers/{id}", update_customer, CUSTOMER_PARAMS),
    Operation("DELETE", "/v1/customers/{id}", delete_customer, {}),
))
