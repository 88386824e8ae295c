"""Checkout Sessions (mode ``payment``): create, retrieve, list (``created`` filter). A session is
``open``/``unpaid`` until the control plane settles it (``stripe_emulator.webhooks.settle_session``: the
buyer paid, a delayed payment succeeded or failed, or the session expired), which also emits the
events Stripe would send (``checkout.session.*``) to the configured webhook endpoint."""

from __future__ import annotations

from ..core.errors import StripeError, find
from ..core.ids import new_id
from ..core.listing import newest_first, paginate
from ..core.params import ANY, LIST, known, p_currency, p_enum, p_int, p_metadata, p_str
from ..core.resource import Operation, Resource
from ..core.state import Store

SESSION_TTL = 24 * 3600


def create_session(st, req):
    p = req.params
    mode = p_enum(p, "mode", ("payment",), default=None)
    if mode is None:
        raise StripeError(400, "Missing required param: mode.", param="mode")
    items = p.get("line_items")
    if not isinstance(items, list) or not items:
        raise StripeError(400, "Missing required param: line_items.", param="line_items")
    total = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("price_data"), dict):
            raise StripeError(400, f"line_items[{i}][price_data] is required in this emulator",
                              param=f"line_items[{i}][price_data]")
        pd = item["price_data"]
        p_currency(pd, "currency", required=True, label=f"line_items[{i}][price_data][currency]")
        unit = p_int(pd, "unit_amount", required=True, minimum=1, label=f"line_items[{i}][price_data][unit_amount]")
        qty = p_int(item, "quantity", default=1, minimum=1, label=f"line_items[{i}][quantity]")
        total += unit * qty
    success = p_str(p, "success_url", required=True)
    now = int(st.now())
    sid = new_id("cs_test", 24)
    s = {
        "id": sid, "object": "checkout.session", "mode": "payment", "status": "open", "payment_status": "unpaid",
        "amount_total": total, "amount_subtotal": total, "currency": items[0]["price_data"]["currency"],
        "client_reference_id": p_str(p, "client_reference_id"), "customer": p_str(p, "customer"),
        "metadata": p_metadata(p), "success_url": success, "cancel_url": p_str(p, "cancel_url"),
        "url": f"https://checkout.stripe.test/c/pay/{sid}", "payment_intent": None, "created": now,
        "expires_at": now + SESSION_TTL, "livemode": False,
    }
    st.checkout_sessions[sid] = s
    return s


def get_session(st, req):
    return find(st.checkout_sessions, "checkout.session", req.args["id"])


def list_sessions(st, req):
    return paginate(newest_first(st.checkout_sessions, None, req.params.get("created")), req,
                    "/v1/checkout/sessions")


resource = Resource("checkout", stores=(Store("checkout_sessions"), Store("events"),
                                        Store("webhook_config", counted=False)), operations=(
    Operation("POST", "/v1/checkout/sessions", create_session,
              known("mode", "success_url", "cancel_url", "client_reference_id", "customer", metadata=ANY,
                    payment_intent_data=known("description", metadata=ANY),  # taken; not modelled
                    line_items=known("quantity", price_data=known(
                        "currency", "unit_amount", "product", product_data=known("name", "description", metadata=ANY))))),
    Operation("GET", "/v1/checkout/sessions", list_sessions, LIST),
    Operation("GET", "/v1/checkout/sessions/{id}", get_session, {}),
))
