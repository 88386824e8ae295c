"""Invoices and their lines: create (optionally pulling the customer's pending invoice items), retrieve,
update, delete (drafts), list, search, add_lines (drafts, at most 250 lines, atomic), list lines, and the
state machine finalize / pay / void / mark_uncollectible. Every line is backed by an ``ii_`` invoice item
(``build_item`` and ``line_for_item`` are shared with the invoice items resource).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from ..core.errors import StripeError, find, invalid, missing
from ..core.ids import new_id
from ..core.listing import newest_first, paginate, search
from ..core.params import ANY, LIST, SEARCH, known, p_bool, p_currency, p_decimal, p_enum, p_int, p_metadata, p_str
from ..core.resource import Operation, Resource
from ..core.state import EmulatorState, Store
from .customers import find_customer

MAX_INVOICE_LINES = 250
INVOICE_LINES_INLINE = 10


# What one line (an add_lines entry) or an invoice item takes: build_item reads these.
ITEM_PARAMS = known(
    "amount", "currency", "description", "quantity", "quantity_decimal", "price", metadata=ANY,
    period=known("start", "end"), pricing=known("price"),
    price_data=known("currency", "product", "unit_amount", "unit_amount_decimal",
                     product_data=known("name", "description", metadata=ANY)))
INVOICE_PARAMS = known("customer", "currency", "collection_method", "days_until_due", "due_date",
                       "pending_invoice_items_behavior", "auto_advance", "description", "footer", metadata=ANY)


def find_invoice(st: EmulatorState, iid: str, param: str | None = None) -> dict:
    return find(st.invoices, "invoice", iid, param)


def render_invoice(st: EmulatorState, inv: dict) -> dict:
    out = dict(inv)
    lines = st.invoice_lines.get(inv["id"], [])
    out["lines"] = {
        "object": "list", "data": lines[:INVOICE_LINES_INLINE], "has_more": len(lines) > INVOICE_LINES_INLINE,
        "total_count": len(lines), "url": f"/v1/invoices/{inv['id']}/lines",
    }
    return out


def recompute_totals(st: EmulatorState, inv: dict) -> None:
    subtotal = sum(line["amount"] for line in st.invoice_lines.get(inv["id"], []))
    inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
    inv["total"] = inv["total_excluding_tax"] = subtotal
    inv["amount_due"] = max(subtotal, 0)
    inv["amount_remaining"] = max(inv["amount_due"] - inv["amount_paid"], 0)


def not_draft(inv: dict, action: str) -> StripeError:
    return StripeError(
        400, f"You can only {action} a draft invoice; invoice {inv['id']} is {inv['status']}.",
        code="invoice_not_editable")


def create_invoice(st, req):
    p = req.params
    cid = p_str(p, "customer", required=True)
    cus = find_customer(st, cid, param="customer")
    currency = p_currency(p, "currency", default="usd")
    collection = p_enum(p, "collection_method", ("charge_automatically", "send_invoice"),
                        default="charge_automatically")
    days = p_int(p, "days_until_due", minimum=0)
    due_date = p_int(p, "due_date")
    if collection == "charge_automatically" and (days is not None or due_date is not None):
        raise StripeError(400, "Invoices with collection_method=charge_automatically cannot have "
                               "days_until_due or due_date.",
                          param="days_until_due" if days is not None else "due_date")
    if collection == "send_invoice" and days is None and due_date is None:
        raise StripeError(400, "Invoices with collection_method=send_invoice require days_until_due or "
                               "due_date.", param="days_until_due")
    pending = p_enum(p, "pending_invoice_items_behavior", ("exclude", "include"), default="exclude")
    auto_advance = p_bool(p, "auto_advance", default=False)
    now = int(st.now())
    if days is not None and due_date is None:
        due_date = now + days * 86400
    inv = {
        "id": new_id("in"), "object": "invoice", "account_country": "US",
        "account_name": "Stripe Emulator", "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": 0, "amount_shipping": 0, "attempt_count": 0, "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                          "status": None},
        "billing_reason": "manual", "collection_method": collection, "created": now, "currency": currency,
        "custom_fields": None, "customer": cus["id"], "customer_address": None,
        "customer_email": cus.get("email"), "customer_name": cus.get("name"), "customer_phone": None,
        "customer_shipping": None, "customer_tax_exempt": "none", "customer_tax_ids": [],
        "days_until_due": days, "default_payment_method": None, "default_source": None,
        "default_tax_rates": [], "description": p_str(p, "description"), "discounts": [],
        "due_date": due_date, "effective_at": None, "ending_balance": None, "footer": p_str(p, "footer"),
        "hosted_invoice_url": None, "invoice_pdf": None, "issuer": {"type": "self"},
        "last_finalization_error": None, "livemode": False, "metadata": p_metadata(p),
        "next_payment_attempt": None, "number": None, "on_behalf_of": None, "parent": None,
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": now, "period_start": now, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "receipt_number": None, "shipping_cost": None,
        "shipping_details": None, "starting_balance": 0, "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                               "voided_at": None},
        "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None, "total": 0,
        "total_discount_amounts": [], "total_excluding_tax": 0, "total_taxes": [],
        "webhooks_delivered_at": None,
        # in Stripe's shape, unused here (no tax ids, Connect applications, revisions or subscriptions)
        "account_tax_ids": None, "application": None, "automatically_finalizes_at": None,
        "customer_account": None, "from_invoice": None, "latest_revision": None, "rendering": None,
        "subscription": None, "total_pretax_credit_amounts": [],
    }
    st.invoices[inv["id"]] = inv
    lines = st.invoice_lines[inv["id"]] = []
    if pending == "include":
        for ii in list(st.invoice_items.values()):
            if len(lines) >= MAX_INVOICE_LINES:
                break
            if ii["customer"] == cus["id"] and ii["invoice"] is None and ii["currency"] == currency:
                ii["invoice"] = inv["id"]
                lines.append(line_for_item(st, ii))
        recompute_totals(st, inv)
    return render_invoice(st, inv)


def get_invoice(st, req):
    return render_invoice(st, find_invoice(st, req.args["id"]))


def update_invoice(st, req):
    inv = find_invoice(st, req.args["id"])
    p = req.params
    draft_only = [k for k in ("collection_method", "days_until_due", "due_date", "currency") if k in p]
    if draft_only and inv["status"] != "draft":
        raise StripeError(400, f"You can only update {', '.join(draft_only)} on a draft invoice; invoice "
                               f"{inv['id']} is {inv['status']}.", param=draft_only[0],
                          code="invoice_not_editable")
    if "auto_advance" in p and inv["status"] not in ("draft", "open"):
        raise StripeError(400, f"You cannot update auto_advance on a {inv['status']} invoice.",
                          param="auto_advance", code="invoice_not_editable")
    md = p_metadata(p, existing=inv["metadata"])
    if "currency" in p:
        cur = p_currency(p, "currency")
        if st.invoice_lines.get(inv["id"]) and cur != inv["currency"]:
            raise StripeError(400, "You cannot change the currency of an invoice that has lines.",
                              param="currency")
        inv["currency"] = cur
    if "collection_method" in p:
        inv["collection_method"] = p_enum(p, "collection_method", ("charge_automatically", "send_invoice"))
    if "days_until_due" in p:
        inv["days_until_due"] = p_int(p, "days_until_due", minimum=0)
        if inv["days_until_due"] is not None:
            inv["due_date"] = inv["created"] + inv["days_until_due"] * 86400
    if "due_date" in p:
        inv["due_date"] = p_int(p, "due_date")
    if "auto_advance" in p:
        inv["auto_advance"] = p_bool(p, "auto_advance")
    for k in ("description", "footer"):
        if k in p:
            inv[k] = p_str(p, k) or None
    inv["metadata"] = md
    return render_invoice(st, inv)


def delete_invoice(st, req):
    inv = find_invoice(st, req.args["id"])
    if inv["status"] != "draft":
        raise StripeError(400, f"You can only delete draft invoices; invoice {inv['id']} is "
                               f"{inv['status']}. Void it instead.", code="invoice_not_editable")
    for line in st.invoice_lines.pop(inv["id"], []):
        ii = (line.get("parent") or {}).get("invoice_item_details") or {}
        st.invoice_items.pop(ii.get("invoice_item"), None)
    del st.invoices[inv["id"]]
    return {"id": inv["id"], "object": "invoice", "deleted": True}


def list_invoices(st, req):
    p = req.params
    customer = p_str(p, "customer")
    status = p_enum(p, "status", ("draft", "open", "paid", "uncollectible", "void"))
    collection = p_str(p, "collection_method")

    def pred(inv):
        return ((customer is None or inv["customer"] == customer)
                and (status is None or inv["status"] == status)
                and (collection is None or inv["collection_method"] == collection))

    items = newest_first(st.invoices, pred, p.get("created"))
    return paginate(items, req, "/v1/invoices", render=lambda inv: render_invoice(st, inv))


def search_invoices(st, req):
    return search(st, st.invoices, req, "/v1/invoices/search", render=lambda inv: render_invoice(st, inv))


def _round_half_up(d: Decimal) -> int:
    return int(d.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _fmt_decimal(d: Decimal) -> str:
    s = format(d.normalize(), "f")
    return s


def _pname(label: str, *parts: str) -> str:
    """Parameter name for error messages: _pname("lines[0]", "price_data", "currency")."""
    if not label:
        label, parts = parts[0], parts[1:]
    return label + "".join(f"[{p}]" for p in parts)


def build_item(st: EmulatorState, spec: dict, label: str, currency: str, customer: str,
                invoice_id: str | None) -> dict:
    """Validate one line spec (an add_lines entry, or invoiceitems params with label "") and build an
    invoiceitem object (not stored)."""
    def L(*parts):
        return _pname(label, *parts)

    if not isinstance(spec, dict):
        raise invalid(f"Invalid {label}: must be a hash", param=label)
    has_amount = spec.get("amount") not in (None, "")
    price_data = spec.get("price_data")
    if has_amount and price_data is not None:
        raise invalid(f"You may only specify one of these parameters: {L('amount')}, "
                               f"{L('price_data')}.", param=L("amount"))
    if spec.get("price") or (isinstance(spec.get("pricing"), dict) and spec["pricing"].get("price")):
        raise StripeError(400, "This emulator does not support price IDs; use amount or price_data.",
                          param=L("pricing", "price"))
    quantity = Decimal(1)
    if spec.get("quantity_decimal") not in (None, ""):
        quantity = p_decimal(spec["quantity_decimal"], L("quantity_decimal"))
    elif spec.get("quantity") not in (None, ""):
        quantity = Decimal(p_int(spec, "quantity", minimum=0, label=L("quantity")))
    if quantity < 0:
        raise invalid(f"Invalid {L('quantity')}: must be non-negative", param=L("quantity"))
    product_id = None
    if has_amount:
        amount = p_int(spec, "amount", label=L("amount"))
        line_currency = p_currency(spec, "currency", default=currency, label=L("currency"))
        unit = Decimal(amount) / quantity if quantity else Decimal(amount)
    elif isinstance(price_data, dict):
        line_currency = p_currency(price_data, "currency", required=True,
                                   label=L("price_data", "currency"))
        product_id = p_str(price_data, "product", label=L("price_data", "product"))
        pdata = price_data.get("product_data")
        if product_id is None:
            if not isinstance(pdata, dict) or not pdata.get("name"):
                raise missing(L("price_data", "product_data", "name") if isinstance(pdata, dict)
                              else L("price_data", "product"))
            product_id = new_id("prod")
        has_ua = price_data.get("unit_amount") not in (None, "")
        has_uad = price_data.get("unit_amount_decimal") not in (None, "")
        if has_ua and has_uad:
            raise invalid("You may only specify one of these parameters: "
                                   f"{L('price_data', 'unit_amount')}, "
                                   f"{L('price_data', 'unit_amount_decimal')}.",
                              param=L("price_data", "unit_amount"))
        if has_ua:
            unit = Decimal(p_int(price_data, "unit_amount", minimum=0,
                                 label=L("price_data", "unit_amount")))
        elif has_uad:
            unit = p_decimal(price_data["unit_amount_decimal"], L("price_data", "unit_amount_decimal"))
            if unit < 0:
                raise invalid(f"Invalid {L('price_data', 'unit_amount_decimal')}: must be "
                                       "non-negative", param=L("price_data", "unit_amount_decimal"))
        else:
            raise missing(L("price_data", "unit_amount"))
        amount = _round_half_up(quantity * unit)
    elif price_data is not None:
        raise invalid(f"Invalid {L('price_data')}: must be a hash", param=L("price_data"))
    else:
        raise invalid(f"You must specify either {L('amount')} or {L('price_data')}.",
                          param=L("amount"))
    if line_currency != currency:
        raise StripeError(400, f"The currency of {label or 'the invoice item'} ({line_currency}) must "
                               f"match the invoice currency ({currency}).", param=L("currency"))
    now = int(st.now())
    period = spec.get("period")
    start = end = now
    if period is not None:
        if not isinstance(period, dict):
            raise invalid(f"Invalid {L('period')}: must be a hash", param=L("period"))
        start = p_int(period, "start", required=True, label=L("period", "start"))
        end = p_int(period, "end", required=True, label=L("period", "end"))
        if end < start:
            raise invalid(f"Invalid {L('period')}: end must be greater than or equal to start",
                              param=L("period", "end"))
    description = p_str(spec, "description", label=L("description"))
    if description is not None and len(description) > 500:
        raise invalid(f"Invalid {L('description')}: must be at most 500 characters",
                          param=L("description"))
    return {
        "id": new_id("ii"), "object": "invoiceitem", "amount": amount, "currency": currency,
        "customer": customer, "customer_account": None, "date": now, "description": description, "discountable": True,
        "discounts": [], "invoice": invoice_id, "livemode": False,
        "metadata": p_metadata(spec, label=L("metadata")), "net_amount": amount, "parent": None,
        "period": {"start": start, "end": end},
        # Stripe prices every item, an ``amount`` one with an inline price of its own: the spec's
        # ``price_details`` is an object with ``price`` and ``product`` (never null).
        "pricing": {"type": "price_details",
                    "price_details": {"price": new_id("price"), "product": product_id or new_id("prod")},
                    "unit_amount_decimal": _fmt_decimal(unit)},
        "proration": False, "quantity": int(quantity), "quantity_decimal": _fmt_decimal(quantity),
        "tax_rates": [], "test_clock": None,
    }


def line_for_item(st: EmulatorState, ii: dict) -> dict:
    return {
        "id": new_id("il"), "object": "line_item", "amount": ii["amount"], "currency": ii["currency"],
        "description": ii["description"], "discount_amounts": [], "discountable": True, "discounts": [],
        "invoice": ii["invoice"], "livemode": False, "metadata": dict(ii["metadata"]),
        "parent": {"type": "invoice_item_details",
                   "invoice_item_details": {"invoice_item": ii["id"], "proration": False,
                                            "proration_details": {"credited_items": None},
                                            "subscription": None},
                   "subscription_item_details": None},
        "period": dict(ii["period"]), "pretax_credit_amounts": [], "pricing": ii["pricing"],
        "quantity": ii["quantity"], "quantity_decimal": ii["quantity_decimal"], "subscription": None,
        "subtotal": ii["amount"], "taxes": [],
    }


def check_room(st: EmulatorState, inv: dict, adding: int) -> None:
    have = len(st.invoice_lines.get(inv["id"], []))
    if have + adding > MAX_INVOICE_LINES:
        raise StripeError(
            400, f"An invoice can have at most {MAX_INVOICE_LINES} line items: invoice {inv['id']} has "
                 f"{have} and this request would add {adding}. No lines were added.", param="lines")


def add_lines(st, req):
    inv = find_invoice(st, req.args["id"])
    if inv["status"] != "draft":
        raise not_draft(inv, "add lines to")
    specs = req.params.get("lines")
    if specs in (None, "", []):
        raise missing("lines")
    if not isinstance(specs, list):
        raise StripeError(400, "Invalid lines: must be an array", param="lines")
    check_room(st, inv, len(specs))
    items = []
    for i, spec in enumerate(specs):
        if isinstance(spec, dict) and spec.get("invoice_item"):
            raise StripeError(400, "This emulator does not support attaching existing invoice items via "
                                   "add_lines.", param=f"lines[{i}][invoice_item]")
        items.append(build_item(st, spec, f"lines[{i}]", inv["currency"], inv["customer"], inv["id"]))
    # all validated: commit atomically
    lines = st.invoice_lines.setdefault(inv["id"], [])
    for ii in items:
        st.invoice_items[ii["id"]] = ii
        lines.append(line_for_item(st, ii))
    recompute_totals(st, inv)
    return render_invoice(st, inv)


def list_lines(st, req):
    inv = find_invoice(st, req.args["id"])
    return paginate(st.invoice_lines.get(inv["id"], []), req, f"/v1/invoices/{inv['id']}/lines")


def finalize_invoice(st, req):
    inv = find_invoice(st, req.args["id"])
    if inv["status"] != "draft":
        raise StripeError(400, f"This invoice is already finalized, you can't re-finalize a non-draft "
                               f"invoice (invoice {inv['id']} is {inv['status']}).",
                          code="invoice_not_editable")
    aa = p_bool(req.params, "auto_advance")
    if aa is not None:
        inv["auto_advance"] = aa
    now = int(st.now())
    cus = st.customers.get(inv["customer"])
    if cus is not None:
        seq = cus.get("next_invoice_sequence", 1)
        cus["next_invoice_sequence"] = seq + 1
        prefix = cus["invoice_prefix"]
    else:
        seq, prefix = len(st.invoices), "DELETED"
    recompute_totals(st, inv)
    inv["number"] = f"{prefix}-{seq:04d}"
    inv["status"] = "open"
    inv["status_transitions"]["finalized_at"] = now
    inv["effective_at"] = now
    inv["hosted_invoice_url"] = f"https://invoice.stripe.emulator/{inv['id']}"
    inv["invoice_pdf"] = f"https://invoice.stripe.emulator/{inv['id']}/pdf"
    if inv["collection_method"] == "send_invoice" and inv.get("days_until_due") is not None:
        inv["due_date"] = now + inv["days_until_due"] * 86400
    if inv["amount_due"] == 0:
        _mark_paid(inv, now)
    return render_invoice(st, inv)


def _mark_paid(inv: dict, now: int) -> None:
    inv["status"] = "paid"
    inv["amount_paid"] = inv["amount_due"]
    inv["amount_remaining"] = 0
    inv["status_transitions"]["paid_at"] = now
    inv["auto_advance"] = False
    inv["next_payment_attempt"] = None


def pay_invoice(st, req):
    inv = find_invoice(st, req.args["id"])
    status = inv["status"]
    if status == "paid":
        raise StripeError(400, f"Invoice is already paid ({inv['id']}).")
    if status == "void":
        raise StripeError(400, f"Invoice {inv['id']} is void and cannot be paid.")
    if status == "draft":
        raise StripeError(400, f"Invoice {inv['id']} is a draft; finalize it before paying.")
    now = int(st.now())
    inv["attempted"] = True
    inv["attempt_count"] += 1
    _mark_paid(inv, now)
    return render_invoice(st, inv)


def void_invoice(st, req):
    inv = find_invoice(st, req.args["id"])
    status = inv["status"]
    if status not in ("open", "uncollectible"):
        hint = " Delete draft invoices instead." if status == "draft" else ""
        raise StripeError(400, f"You can only void open or uncollectible invoices; invoice {inv['id']} is "
                               f"{status}.{hint}")
    inv["status"] = "void"
    inv["status_transitions"]["voided_at"] = int(st.now())
    inv["auto_advance"] = False
    return render_invoice(st, inv)


def mark_uncollectible(st, req):
    inv = find_invoice(st, req.args["id"])
    if inv["status"] != "open":
        raise StripeError(400, f"You can only mark open invoices as uncollectible; invoice {inv['id']} is "
                               f"{inv['status']}.")
    inv["status"] = "uncollectible"
    inv["status_transitions"]["marked_uncollectible_at"] = int(st.now())
    return render_invoice(st, inv)


resource = Resource(
    "invoices",
    stores=(Store("invoices"), Store("invoice_lines", counted=False),  # invoice id -> line objects, in order
            Store("invoice_items")),
    operations=(
        Operation("POST", "/v1/invoices", create_invoice, INVOICE_PARAMS),
        Operation("GET", "/v1/invoices", list_invoices, known("customer", "status", "collection_method", **LIST)),
        Operation("GET", "/v1/invoices/search", search_invoices, SEARCH),
        Operation("GET", "/v1/invoices/{id}", get_invoice, {}),
        Operation("POST", "/v1/invoices/{id}", update_invoice,
                  {k: v for k, v in INVOICE_PARAMS.items() if k not in ("customer", "pending_invoice_items_behavior")}),
        Operation("DELETE", "/v1/invoices/{id}", delete_invoice, {}),
        Operation("POST", "/v1/invoices/{id}/add_lines", add_lines, known(lines=known("invoice_item", **ITEM_PARAMS))),
        Operation("GET", "/v1/invoices/{id}/lines", list_lines, LIST),
        Operation("POST", "/v1/invoices/{id}/finalize", finalize_invoice, known("auto_advance")),
        Operation("POST", "/v1/invoices/{id}/pay", pay_invoice, {}),
        Operation("POST", "/v1/invoices/{id}/void", void_invoice, {}),
        Operation("POST", "/v1/invoices/{id}/mark_uncollectible", mark_uncollectible, {}),
    ),
)
