"""The emulated Stripe v1 endpoints (business logic only; no HTTP here).

Each handler is ``fn(state, req) -> dict`` (HTTP 200) or raises ``StripeError``. The server calls
handlers with ``state.lock`` held, so they may read and mutate ``state`` freely.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from .errors import StripeError, missing, no_such
from .state import EmulatorState, random_token

MAX_INVOICE_LINES = 250
INVOICE_LINES_INLINE = 10
METER_PAST_WINDOW = 35 * 86400
METER_FUTURE_WINDOW = 5 * 60
METER_IDENTIFIER_TTL = 24 * 3600


@dataclass
class Request:
    method: str
    path: str
    params: dict
    args: dict = field(default_factory=dict)
    api_key: str = ""


# ---- parameter helpers ----------------------------------------------------------------------
def _scalar(params: dict, name: str, label: str | None = None):
    v = params.get(name)
    if isinstance(v, (dict, list)):
        raise StripeError(400, f"Invalid value for {label or name}: expected a string.",
                          param=label or name)
    return v


def p_str(params: dict, name: str, required: bool = False, default=None, label: str | None = None):
    v = _scalar(params, name, label)
    if v is None or (required and v == ""):
        if required:
            raise missing(label or name)
        return default
    return v


def p_int(params: dict, name: str, required: bool = False, default=None, minimum=None, maximum=None,
          label: str | None = None):
    label = label or name
    v = _scalar(params, name, label)
    if v is None or v == "":
        if required:
            raise missing(label)
        return default
    try:
        if isinstance(v, int):
            out = v
        else:
            if not re.fullmatch(r"-?\d+", v.strip()):
                raise ValueError
            out = int(v)
    except (ValueError, AttributeError):
        raise StripeError(400, f"Invalid integer: {v}", param=label, code="parameter_invalid_integer")
    if minimum is not None and out < minimum:
        raise StripeError(400, f"Invalid {label}: must be greater than or equal to {minimum}", param=label)
    if maximum is not None and out > maximum:
        raise StripeError(400, f"Invalid {label}: must be less than or equal to {maximum}", param=label)
    return out


def p_bool(params: dict, name: str, default=None, label: str | None = None):
    v = _scalar(params, name, label)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        return v
    if v.lower() == "true":
        return True
    if v.lower() == "false":
        return False
    raise StripeError(400, f"Invalid boolean: {v}", param=label or name)


def p_enum(params: dict, name: str, choices: tuple, default=None, label: str | None = None):
    v = p_str(params, name, default=default, label=label)
    if v is not None and v not in choices:
        raise StripeError(
            400, f"Invalid {label or name}: must be one of {', '.join(choices)}", param=label or name)
    return v


def p_decimal(value, label: str, max_places: int = 12) -> Decimal:
    if isinstance(value, (dict, list)) or value is None:
        raise StripeError(400, f"Invalid decimal: {value}", param=label)
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise StripeError(400, f"Invalid decimal: {value}", param=label)
    if not d.is_finite():
        raise StripeError(400, f"Invalid decimal: {value}", param=label)
    exp = d.as_tuple().exponent
    if isinstance(exp, int) and -exp > max_places:
        raise StripeError(400, f"Invalid decimal: {value} has more than {max_places} decimal places",
                          param=label)
    return d


def p_metadata(params: dict, name: str = "metadata", existing: dict | None = None,
               label: str | None = None) -> dict:
    """Stripe metadata semantics: merge into ``existing``; '' as a value unsets a key; '' clears all."""
    label = label or name
    out = dict(existing or {})
    v = params.get(name)
    if v is None:
        return out
    if v == "":
        return {}
    if not isinstance(v, dict):
        raise StripeError(400, f"Invalid {label}: must be a hash of string keys and values", param=label)
    for k, val in v.items():
        if isinstance(val, (dict, list)):
            raise StripeError(400, f"Invalid value for {label}[{k}]: metadata values must be strings",
                              param=f"{label}[{k}]")
        if len(k) > 40:
            raise StripeError(400, f"Invalid {label}: keys must be at most 40 characters", param=label)
        if len(val) > 500:
            raise StripeError(400, f"Invalid {label}[{k}]: values must be at most 500 characters",
                              param=f"{label}[{k}]")
        if val == "":
            out.pop(k, None)
        else:
            out[k] = val
    if len(out) > 50:
        raise StripeError(400, f"Invalid {label}: at most 50 keys are allowed", param=label)
    return out


def p_currency(params: dict, name: str, default=None, required=False, label: str | None = None):
    v = p_str(params, name, required=required, default=default, label=label)
    if v is None:
        return None
    v = v.lower()
    if not re.fullmatch(r"[a-z]{3}", v):
        raise StripeError(400, f"Invalid currency: {v}", param=label or name)
    return v


# ---- list helpers ---------------------------------------------------------------------------
def _created_ok(obj: dict, flt) -> bool:
    if flt is None:
        return True
    c = obj.get("created", 0)
    if isinstance(flt, str):
        return str(c) == flt
    ops = {"gt": c.__gt__, "gte": c.__ge__, "lt": c.__lt__, "lte": c.__le__}
    for op, val in flt.items():
        if op in ops and not ops[op](int(val)):
            return False
    return True


def paginate(items: list, req: Request, url: str, render=None) -> dict:
    """Stripe list envelope over ``items`` (already ordered), honoring limit/starting_after/ending_before."""
    p = req.params
    limit = p_int(p, "limit", default=10, minimum=1, maximum=100)
    starting_after = p_str(p, "starting_after")
    ending_before = p_str(p, "ending_before")
    if starting_after:
        idx = next((i for i, o in enumerate(items) if o["id"] == starting_after), None)
        if idx is None:
            raise no_such("object", starting_after, param="starting_after", status=400)
        rest = items[idx + 1:]
        page, has_more = rest[:limit], len(rest) > limit
    elif ending_before:
        idx = next((i for i, o in enumerate(items) if o["id"] == ending_before), None)
        if idx is None:
            raise no_such("object", ending_before, param="ending_before", status=400)
        before = items[:idx]
        page, has_more = before[-limit:], len(before) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    if render is not None:
        page = [render(o) for o in page]
    return {"object": "list", "data": page, "has_more": has_more, "url": url}


def newest_first(store: dict, pred=None, created=None) -> list:
    out = []
    for obj in reversed(store.values()):
        if (pred is None or pred(obj)) and _created_ok(obj, created):
            out.append(obj)
    return out


# ---- search query language (subset) ----------------------------------------------------------
_CLAUSE = re.compile(
    r"""\s*(?P<neg>-?)(?P<field>[A-Za-z_][A-Za-z0-9_.]*(?:\[(?:'[^']*'|"[^"]*")\])?)"""
    r"""\s*(?P<op>:|~|>=|<=|>|<)\s*"""
    r"""(?P<val>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s'"]+)\s*"""
)
_JOIN = re.compile(r"\s*(AND|OR)\s+", re.IGNORECASE)


def parse_search(query: str):
    if not query or not query.strip():
        raise missing("query")
    pos, clauses, joins = 0, [], set()
    while True:
        m = _CLAUSE.match(query, pos)
        if not m:
            raise StripeError(400, f"Invalid search query at position {pos}: {query!r}. Expected a clause "
                                   "like metadata['key']:'value'.", param="query")
        val = m.group("val")
        if val[:1] in ("'", '"'):
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        clauses.append((m.group("neg") == "-", m.group("field"), m.group("op"), val))
        pos = m.end()
        if pos >= len(query):
            break
        j = _JOIN.match(query, pos)
        if not j:
            raise StripeError(400, f"Invalid search query at position {pos}: {query!r}. Expected AND or OR.",
                              param="query")
        joins.add(j.group(1).upper())
        pos = j.end()
    if len(joins) > 1:
        raise StripeError(400, "Search queries cannot combine AND and OR.", param="query")
    return ("OR" in joins), clauses


def _field_value(obj: dict, fld: str):
    if fld.startswith("metadata["):
        key = fld[len("metadata["):-1][1:-1]
        return (obj.get("metadata") or {}).get(key)
    cur = obj
    for part in fld.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _clause_ok(obj: dict, clause) -> bool:
    neg, fld, op, val = clause
    have = _field_value(obj, fld)
    if op == ":":
        if val == "null":
            ok = have is None
        elif isinstance(have, bool):
            ok = str(have).lower() == val.lower()
        else:
            ok = have is not None and str(have) == val
    elif op == "~":
        ok = have is not None and val.lower() in str(have).lower()
    else:
        try:
            h, v = Decimal(str(have)), Decimal(val)
        except (InvalidOperation, TypeError):
            ok = False
        else:
            ok = {">": h > v, "<": h < v, ">=": h >= v, "<=": h <= v}[op]
    return ok != neg


def search(store: dict, req: Request, url: str, render=None) -> dict:
    p = req.params
    is_or, clauses = parse_search(p_str(p, "query", required=True))
    limit = p_int(p, "limit", default=10, minimum=1, maximum=100)
    page_tok = p_str(p, "page")
    start = 0
    if page_tok:
        m = re.fullmatch(r"page_(\d+)", page_tok)
        if not m:
            raise StripeError(400, f"Invalid page: {page_tok}", param="page")
        start = int(m.group(1))
    combine = any if is_or else all
    hits = [o for o in reversed(store.values()) if combine(_clause_ok(o, c) for c in clauses)]
    page = hits[start:start + limit]
    has_more = len(hits) > start + limit
    if render is not None:
        page = [render(o) for o in page]
    return {"object": "search_result", "data": page, "has_more": has_more,
            "next_page": f"page_{start + limit}" if has_more else None, "url": url}


# ---- customers ------------------------------------------------------------------------------
def _customer(st: EmulatorState, cid: str, param: str | None = None) -> dict:
    obj = st.customers.get(cid or "")
    if obj is None:
        if param:
            raise no_such("customer", cid, param=param, status=400)
        raise no_such("customer", cid)
    return obj


def create_customer(st, req):
    p = req.params
    now = int(st.now())
    obj = {
        "id": st.new_id("cus"), "object": "customer", "address": None, "balance": 0, "created": now,
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
    return _customer(st, req.args["id"])


def update_customer(st, req):
    obj = _customer(st, req.args["id"])
    p = req.params
    md = p_metadata(p, existing=obj["metadata"])
    for k in ("email", "name", "description", "phone"):
        if k in p:
            obj[k] = p_str(p, k) or None
    obj["metadata"] = md
    return obj


def delete_customer(st, req):
    obj = _customer(st, req.args["id"])
    del st.customers[obj["id"]]
    return {"id": obj["id"], "object": "customer", "deleted": True}


def list_customers(st, req):
    email = p_str(req.params, "email")
    items = newest_first(st.customers, (lambda c: c.get("email") == email) if email else None,
                         req.params.get("created"))
    return paginate(items, req, "/v1/customers")


def search_customers(st, req):
    return search(st.customers, req, "/v1/customers/search")


# ---- invoices -------------------------------------------------------------------------------
def _invoice(st: EmulatorState, iid: str, param: str | None = None) -> dict:
    obj = st.invoices.get(iid or "")
    if obj is None:
        if param:
            raise no_such("invoice", iid, param=param, status=400)
        raise no_such("invoice", iid)
    return obj


def render_invoice(st: EmulatorState, inv: dict) -> dict:
    out = dict(inv)
    lines = st.invoice_lines.get(inv["id"], [])
    out["lines"] = {
        "object": "list", "data": lines[:INVOICE_LINES_INLINE], "has_more": len(lines) > INVOICE_LINES_INLINE,
        "total_count": len(lines), "url": f"/v1/invoices/{inv['id']}/lines",
    }
    return out


def _recompute_totals(st: EmulatorState, inv: dict) -> None:
    subtotal = sum(line["amount"] for line in st.invoice_lines.get(inv["id"], []))
    inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
    inv["total"] = inv["total_excluding_tax"] = subtotal
    inv["amount_due"] = max(subtotal, 0)
    inv["amount_remaining"] = max(inv["amount_due"] - inv["amount_paid"], 0)


def _not_draft(inv: dict, action: str) -> StripeError:
    return StripeError(
        400, f"You can only {action} a draft invoice; invoice {inv['id']} is {inv['status']}.",
        code="invoice_not_editable")


def create_invoice(st, req):
    p = req.params
    cid = p_str(p, "customer", required=True)
    cus = _customer(st, cid, param="customer")
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
        "id": st.new_id("in"), "object": "invoice", "account_country": "US",
        "account_name": "Stripe Emulator", "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": 0, "amount_shipping": 0, "attempt_count": 0, "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
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
        "period_end": now, "period_start": now, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "receipt_number": None, "shipping_cost": None,
        "shipping_details": None, "starting_balance": 0, "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                               "voided_at": None},
        "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None, "total": 0,
        "total_discount_amounts": [], "total_excluding_tax": 0, "total_taxes": [],
        "webhooks_delivered_at": None,
    }
    st.invoices[inv["id"]] = inv
    lines = st.invoice_lines[inv["id"]] = []
    if pending == "include":
        for ii in list(st.invoice_items.values()):
            if len(lines) >= MAX_INVOICE_LINES:
                break
            if ii["customer"] == cus["id"] and ii["invoice"] is None and ii["currency"] == currency:
                ii["invoice"] = inv["id"]
                lines.append(_line_for_item(st, ii))
        _recompute_totals(st, inv)
    return render_invoice(st, inv)


def get_invoice(st, req):
    return render_invoice(st, _invoice(st, req.args["id"]))


def update_invoice(st, req):
    inv = _invoice(st, req.args["id"])
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
    inv = _invoice(st, req.args["id"])
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
    return search(st.invoices, req, "/v1/invoices/search", render=lambda inv: render_invoice(st, inv))


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


def _build_item(st: EmulatorState, spec: dict, label: str, currency: str, customer: str,
                invoice_id: str | None) -> dict:
    """Validate one line spec (an add_lines entry, or invoiceitems params with label "") and build an
    invoiceitem object (not stored)."""
    def L(*parts):
        return _pname(label, *parts)

    if not isinstance(spec, dict):
        raise StripeError(400, f"Invalid {label}: must be a hash", param=label)
    has_amount = spec.get("amount") not in (None, "")
    price_data = spec.get("price_data")
    if has_amount and price_data is not None:
        raise StripeError(400, f"You may only specify one of these parameters: {L('amount')}, "
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
        raise StripeError(400, f"Invalid {L('quantity')}: must be non-negative", param=L("quantity"))
    price_id = product_id = None
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
            product_id = st.new_id("prod")
        has_ua = price_data.get("unit_amount") not in (None, "")
        has_uad = price_data.get("unit_amount_decimal") not in (None, "")
        if has_ua and has_uad:
            raise StripeError(400, "You may only specify one of these parameters: "
                                   f"{L('price_data', 'unit_amount')}, "
                                   f"{L('price_data', 'unit_amount_decimal')}.",
                              param=L("price_data", "unit_amount"))
        if has_ua:
            unit = Decimal(p_int(price_data, "unit_amount", minimum=0,
                                 label=L("price_data", "unit_amount")))
        elif has_uad:
            unit = p_decimal(price_data["unit_amount_decimal"], L("price_data", "unit_amount_decimal"))
            if unit < 0:
                raise StripeError(400, f"Invalid {L('price_data', 'unit_amount_decimal')}: must be "
                                       "non-negative", param=L("price_data", "unit_amount_decimal"))
        else:
            raise missing(L("price_data", "unit_amount"))
        amount = _round_half_up(quantity * unit)
        price_id = st.new_id("price")
    elif price_data is not None:
        raise StripeError(400, f"Invalid {L('price_data')}: must be a hash", param=L("price_data"))
    else:
        raise StripeError(400, f"You must specify either {L('amount')} or {L('price_data')}.",
                          param=L("amount"))
    if line_currency != currency:
        raise StripeError(400, f"The currency of {label or 'the invoice item'} ({line_currency}) must "
                               f"match the invoice currency ({currency}).", param=L("currency"))
    now = int(st.now())
    period = spec.get("period")
    start = end = now
    if period is not None:
        if not isinstance(period, dict):
            raise StripeError(400, f"Invalid {L('period')}: must be a hash", param=L("period"))
        start = p_int(period, "start", required=True, label=L("period", "start"))
        end = p_int(period, "end", required=True, label=L("period", "end"))
        if end < start:
            raise StripeError(400, f"Invalid {L('period')}: end must be greater than or equal to start",
                              param=L("period", "end"))
    description = p_str(spec, "description", label=L("description"))
    if description is not None and len(description) > 500:
        raise StripeError(400, f"Invalid {L('description')}: must be at most 500 characters",
                          param=L("description"))
    return {
        "id": st.new_id("ii"), "object": "invoiceitem", "amount": amount, "currency": currency,
        "customer": customer, "date": now, "description": description, "discountable": True,
        "discounts": [], "invoice": invoice_id, "livemode": False,
        "metadata": p_metadata(spec, label=L("metadata")), "net_amount": amount, "parent": None,
        "period": {"start": start, "end": end},
        "pricing": {"type": "price_details",
                    "price_details": {"price": price_id, "product": product_id} if price_id else None,
                    "unit_amount_decimal": _fmt_decimal(unit)},
        "proration": False, "quantity": int(quantity), "quantity_decimal": _fmt_decimal(quantity),
        "tax_rates": [], "test_clock": None,
    }


def _line_for_item(st: EmulatorState, ii: dict) -> dict:
    return {
        "id": st.new_id("il"), "object": "line_item", "amount": ii["amount"], "currency": ii["currency"],
        "description": ii["description"], "discount_amounts": [], "discountable": True, "discounts": [],
        "invoice": ii["invoice"], "livemode": False, "metadata": dict(ii["metadata"]),
        "parent": {"type": "invoice_item_details",
                   "invoice_item_details": {"invoice_item": ii["id"], "proration": False,
                                            "proration_details": {"credited_items": None},
                                            "subscription": None},
                   "subscription_item_details": None},
        "period": dict(ii["period"]), "pretax_credit_amounts": [], "pricing": ii["pricing"],
        "quantity": ii["quantity"], "quantity_decimal": ii["quantity_decimal"], "subtotal": ii["amount"],
        "taxes": [],
    }


def _check_room(st: EmulatorState, inv: dict, adding: int) -> None:
    have = len(st.invoice_lines.get(inv["id"], []))
    if have + adding > MAX_INVOICE_LINES:
        raise StripeError(
            400, f"An invoice can have at most {MAX_INVOICE_LINES} line items: invoice {inv['id']} has "
                 f"{have} and this request would add {adding}. No lines were added.", param="lines")


def add_lines(st, req):
    inv = _invoice(st, req.args["id"])
    if inv["status"] != "draft":
        raise _not_draft(inv, "add lines to")
    specs = req.params.get("lines")
    if specs in (None, "", []):
        raise missing("lines")
    if not isinstance(specs, list):
        raise StripeError(400, "Invalid lines: must be an array", param="lines")
    _check_room(st, inv, len(specs))
    items = []
    for i, spec in enumerate(specs):
        if isinstance(spec, dict) and spec.get("invoice_item"):
            raise StripeError(400, "This emulator does not support attaching existing invoice items via "
                                   "add_lines.", param=f"lines[{i}][invoice_item]")
        items.append(_build_item(st, spec, f"lines[{i}]", inv["currency"], inv["customer"], inv["id"]))
    # all validated: commit atomically
    lines = st.invoice_lines.setdefault(inv["id"], [])
    for ii in items:
        st.invoice_items[ii["id"]] = ii
        lines.append(_line_for_item(st, ii))
    _recompute_totals(st, inv)
    return render_invoice(st, inv)


def list_lines(st, req):
    inv = _invoice(st, req.args["id"])
    return paginate(st.invoice_lines.get(inv["id"], []), req, f"/v1/invoices/{inv['id']}/lines")


def finalize_invoice(st, req):
    inv = _invoice(st, req.args["id"])
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
    _recompute_totals(st, inv)
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
    inv = _invoice(st, req.args["id"])
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
    inv = _invoice(st, req.args["id"])
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
    inv = _invoice(st, req.args["id"])
    if inv["status"] != "open":
        raise StripeError(400, f"You can only mark open invoices as uncollectible; invoice {inv['id']} is "
                               f"{inv['status']}.")
    inv["status"] = "uncollectible"
    inv["status_transitions"]["marked_uncollectible_at"] = int(st.now())
    return render_invoice(st, inv)


# ---- invoice items --------------------------------------------------------------------------
def create_invoice_item(st, req):
    p = req.params
    cid = p_str(p, "customer", required=True)
    cus = _customer(st, cid, param="customer")
    inv = None
    iid = p_str(p, "invoice")
    if iid:
        inv = _invoice(st, iid, param="invoice")
        if inv["customer"] != cus["id"]:
            raise StripeError(400, f"Invoice {iid} belongs to another customer.", param="invoice")
        if inv["status"] != "draft":
            raise _not_draft(inv, "add invoice items to")
        _check_room(st, inv, 1)
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
    ii = _build_item(st, spec, "", currency, cus["id"], inv["id"] if inv else None)
    st.invoice_items[ii["id"]] = ii
    if inv:
        st.invoice_lines.setdefault(inv["id"], []).append(_line_for_item(st, ii))
        _recompute_totals(st, inv)
    return ii


def get_invoice_item(st, req):
    ii = st.invoice_items.get(req.args["id"])
    if ii is None:
        raise no_such("invoiceitem", req.args["id"])
    return ii


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


# ---- billing meters -------------------------------------------------------------------------
def _meter(st, mid):
    m = st.meters.get(mid or "")
    if m is None:
        raise no_such("billing.meter", mid)
    return m


def create_meter(st, req):
    p = req.params
    display_name = p_str(p, "display_name", required=True)
    event_name = p_str(p, "event_name", required=True)
    agg = p.get("default_aggregation")
    if not isinstance(agg, dict) or not agg.get("formula"):
        raise missing("default_aggregation[formula]")
    formula = p_enum(agg, "formula", ("sum", "count", "last"), label="default_aggregation[formula]")
    if any(m["event_name"] == event_name and m["status"] == "active" for m in st.meters.values()):
        raise StripeError(400, f"An active meter with event_name '{event_name}' already exists.",
                          param="event_name")
    cm = p.get("customer_mapping") or {}
    vs = p.get("value_settings") or {}
    if not isinstance(cm, dict) or not isinstance(vs, dict):
        raise StripeError(400, "Invalid customer_mapping or value_settings: must be hashes")
    now = int(st.now())
    m = {
        "id": st.new_id("mtr"), "object": "billing.meter", "created": now,
        "customer_mapping": {"event_payload_key": cm.get("event_payload_key") or "stripe_customer_id",
                             "type": cm.get("type") or "by_id"},
        "default_aggregation": {"formula": formula}, "display_name": display_name,
        "event_name": event_name, "event_time_window": p_str(p, "event_time_window"), "livemode": False,
        "status": "active", "status_transitions": {"deactivated_at": None}, "updated": now,
        "value_settings": {"event_payload_key": vs.get("event_payload_key") or "value"},
    }
    st.meters[m["id"]] = m
    return m


def get_meter(st, req):
    return _meter(st, req.args["id"])


def list_meters(st, req):
    status = p_enum(req.params, "status", ("active", "inactive"))
    return paginate(newest_first(st.meters, (lambda m: m["status"] == status) if status else None),
                    req, "/v1/billing/meters")


def create_meter_event(st, req):
    p = req.params
    event_name = p_str(p, "event_name", required=True)
    payload = p.get("payload")
    if payload in (None, ""):
        raise missing("payload")
    if not isinstance(payload, dict):
        raise StripeError(400, "Invalid payload: must be a hash", param="payload")
    now = st.now()
    ts = p_int(p, "timestamp", default=int(now))
    if ts < now - METER_PAST_WINDOW:
        raise StripeError(400, f"Timestamp {ts} is too far in the past: meter events must be within the "
                               "past 35 calendar days.", param="timestamp", code="timestamp_too_far_in_past")
    if ts > now + METER_FUTURE_WINDOW:
        raise StripeError(400, f"Timestamp {ts} is too far in the future: meter events can be at most 5 "
                               "minutes in the future.", param="timestamp", code="timestamp_in_future")
    identifier = p_str(p, "identifier") or str(uuid.uuid4())
    if len(identifier) > 100:
        raise StripeError(400, "Invalid identifier: must be at most 100 characters", param="identifier")
    seen = st.meter_identifiers.get((event_name, identifier))
    if seen is not None and now - seen <= METER_IDENTIFIER_TTL:
        # Real Stripe: 400 invalid_request_error with this message and Stripe-Should-Retry: false.
        raise StripeError(400, f"An event already exists with identifier {identifier}.",
                          param="identifier", headers={"Stripe-Should-Retry": "false"})
    meter = next((m for m in st.meters.values()
                  if m["event_name"] == event_name and m["status"] == "active"), None)
    if meter is None:
        raise StripeError(400, f"No active meter with event_name '{event_name}' exists.",
                          param="event_name", code="no_meter")
    ckey = meter["customer_mapping"]["event_payload_key"]
    vkey = meter["value_settings"]["event_payload_key"]
    customer = payload.get(ckey)
    if not customer or not isinstance(customer, str):
        raise StripeError(400, f"Customer mapping key {ckey} not found in payload.",
                          param=f"payload[{ckey}]", code="meter_event_no_customer_defined")
    raw = payload.get(vkey)
    if meter["default_aggregation"]["formula"] == "count" and raw in (None, ""):
        value = 1
    else:
        if not isinstance(raw, str) or not re.fullmatch(r"-?\d{1,15}", raw.strip()):
            raise StripeError(400, f"Invalid value for payload[{vkey}]: {raw!r}; meter event values must be "
                                   "whole numbers.", param=f"payload[{vkey}]", code="meter_event_invalid_value")
        value = int(raw)
    ev = {"object": "billing.meter_event", "created": int(now), "event_name": event_name,
          "identifier": identifier, "livemode": False, "payload": payload, "timestamp": ts}
    st.meter_identifiers[(event_name, identifier)] = now
    st.meter_events.append({**ev, "_customer": customer, "_value": value})
    st.meter_index[(event_name, customer)].append((ts, value))
    return ev


def meter_event_summaries(st, req):
    m = _meter(st, req.args["id"])
    p = req.params
    customer = p_str(p, "customer", required=True)
    start = p_int(p, "start_time", required=True)
    end = p_int(p, "end_time", required=True)
    if end <= start:
        raise StripeError(400, "end_time must be after start_time.", param="end_time")
    window = p_enum(p, "value_grouping_window", ("hour", "day"))
    events = st.meter_index.get((m["event_name"], customer), [])
    formula = m["default_aggregation"]["formula"]

    def aggregate(lo, hi):
        vals = sorted((t, v) for t, v in events if lo <= t < hi)
        if formula == "sum":
            return float(sum(v for _, v in vals))
        if formula == "count":
            return float(len(vals))
        return float(vals[-1][1]) if vals else 0.0

    step = {"hour": 3600, "day": 86400}.get(window, end - start)
    summaries = []
    lo = start
    while lo < end:
        hi = min(lo + step, end)
        summaries.append({
            "id": f"mtrusg_{m['id'][4:]}_{lo}", "object": "billing.meter_event_summary",
            "aggregated_value": aggregate(lo, hi), "end_time": hi, "livemode": False, "meter": m["id"],
            "start_time": lo,
        })
        lo = hi
    return paginate(summaries, req, f"/v1/billing/meters/{m['id']}/event_summaries")


# ---- connect --------------------------------------------------------------------------------
def _account(st, aid, param=None):
    a = st.accounts.get(aid or "")
    if a is None:
        if param:
            raise no_such("account", aid, param=param, status=400)
        raise no_such("account", aid)
    return a


def _requirements(enabled: bool) -> dict:
    due = [] if enabled else ["external_account", "tos_acceptance.date", "tos_acceptance.ip"]
    return {"alternatives": [], "current_deadline": None, "currently_due": list(due),
            "disabled_reason": None if enabled else "requirements.past_due", "errors": [],
            "eventually_due": list(due), "past_due": list(due), "pending_verification": []}


def create_account(st, req):
    p = req.params
    acct_type = p_enum(p, "type", ("express", "custom", "standard"), default="standard")
    caps = {"transfers": "inactive"}
    if isinstance(p.get("capabilities"), dict):
        for name in p["capabilities"]:
            caps[name] = "inactive"
    now = int(st.now())
    a = {
        "id": st.new_id("acct", 16), "object": "account",
        "business_profile": {"name": None, "url": None, "mcc": None, "support_email": None},
        "business_type": p_str(p, "business_type"), "capabilities": caps, "charges_enabled": False,
        "controller": {"type": "application", "is_controller": True}, "country": p_str(p, "country", default="US"),
        "created": now, "default_currency": (p_str(p, "default_currency") or "usd").lower(),
        "details_submitted": False, "email": p_str(p, "email"),
        "external_accounts": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                              "url": "/v1/accounts/acct/external_accounts"},
        "livemode": False, "metadata": p_metadata(p), "payouts_enabled": False,
        "requirements": _requirements(False), "settings": {}, "tos_acceptance": {"date": None},
        "type": acct_type,
    }
    a["external_accounts"]["url"] = f"/v1/accounts/{a['id']}/external_accounts"
    st.accounts[a["id"]] = a
    return a


def get_account(st, req):
    return _account(st, req.args["id"])


def update_account(st, req):
    a = _account(st, req.args["id"])
    p = req.params
    md = p_metadata(p, existing=a["metadata"])
    if "email" in p:
        a["email"] = p_str(p, "email") or None
    a["metadata"] = md
    return a


def list_accounts(st, req):
    return paginate(newest_first(st.accounts, None, req.params.get("created")), req, "/v1/accounts")


def set_account_enabled(st: EmulatorState, account_id: str, charges_enabled: bool = True,
                        payouts_enabled: bool = True, transfers: bool | None = None) -> dict:
    """Test hook: flip an account's capabilities (transfers defaults to charges or payouts enabled)."""
    a = _account(st, account_id)
    if transfers is None:
        transfers = bool(charges_enabled or payouts_enabled)
    a["charges_enabled"] = bool(charges_enabled)
    a["payouts_enabled"] = bool(payouts_enabled)
    a["details_submitted"] = bool(charges_enabled or payouts_enabled)
    a["requirements"] = _requirements(a["details_submitted"])
    for cap in list(a["capabilities"]):
        a["capabilities"][cap] = "active" if a["details_submitted"] else "inactive"
    a["capabilities"]["transfers"] = "active" if transfers else "inactive"
    st.dirty = True
    return a


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
        "id": st.new_id("tr"), "object": "transfer", "amount": amount, "amount_reversed": 0,
        "balance_transaction": st.new_id("txn"), "created": now, "currency": currency,
        "description": p_str(p, "description"), "destination": dest_id,
        "destination_payment": st.new_id("py"), "livemode": False, "metadata": p_metadata(p),
        "reversals": {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": ""},
        "reversed": False, "source_transaction": p_str(p, "source_transaction"), "source_type": "card",
        "transfer_group": p_str(p, "transfer_group"),
    }
    t["reversals"]["url"] = f"/v1/transfers/{t['id']}/reversals"
    st.transfers[t["id"]] = t
    return t


def get_transfer(st, req):
    t = st.transfers.get(req.args["id"])
    if t is None:
        raise no_such("transfer", req.args["id"])
    return t


def list_transfers(st, req):
    p = req.params
    dest = p_str(p, "destination")
    group = p_str(p, "transfer_group")

    def pred(t):
        return (dest is None or t["destination"] == dest) and (group is None or t["transfer_group"] == group)

    return paginate(newest_first(st.transfers, pred, p.get("created")), req, "/v1/transfers")


# ---- routing --------------------------------------------------------------------------------
ROUTES = [
    ("POST", "/v1/customers", create_customer),
    ("GET", "/v1/customers", list_customers),
    ("GET", "/v1/customers/search", search_customers),
    ("GET", "/v1/customers/{id}", get_customer),
    ("POST", "/v1/customers/{id}", update_customer),
    ("DELETE", "/v1/customers/{id}", delete_customer),
    ("POST", "/v1/invoices", create_invoice),
    ("GET", "/v1/invoices", list_invoices),
    ("GET", "/v1/invoices/search", search_invoices),
    ("GET", "/v1/invoices/{id}", get_invoice),
    ("POST", "/v1/invoices/{id}", update_invoice),
    ("DELETE", "/v1/invoices/{id}", delete_invoice),
    ("POST", "/v1/invoices/{id}/add_lines", add_lines),
    ("GET", "/v1/invoices/{id}/lines", list_lines),
    ("POST", "/v1/invoices/{id}/finalize", finalize_invoice),
    ("POST", "/v1/invoices/{id}/pay", pay_invoice),
    ("POST", "/v1/invoices/{id}/void", void_invoice),
    ("POST", "/v1/invoices/{id}/mark_uncollectible", mark_uncollectible),
    ("POST", "/v1/invoiceitems", create_invoice_item),
    ("GET", "/v1/invoiceitems", list_invoice_items),
    ("GET", "/v1/invoiceitems/{id}", get_invoice_item),
    ("POST", "/v1/billing/meters", create_meter),
    ("GET", "/v1/billing/meters", list_meters),
    ("GET", "/v1/billing/meters/{id}", get_meter),
    ("GET", "/v1/billing/meters/{id}/event_summaries", meter_event_summaries),
    ("POST", "/v1/billing/meter_events", create_meter_event),
    ("POST", "/v1/accounts", create_account),
    ("GET", "/v1/accounts", list_accounts),
    ("GET", "/v1/accounts/{id}", get_account),
    ("POST", "/v1/accounts/{id}", update_account),
    ("POST", "/v1/transfers", create_transfer),
    ("GET", "/v1/transfers", list_transfers),
    ("GET", "/v1/transfers/{id}", get_transfer),
]


class Router:
    def __init__(self, routes=ROUTES):
        # (method, n_segments) -> [(segments, template, handler)], static routes first
        self._table: dict[tuple[str, int], list] = {}
        for method, template, handler in routes:
            segs = template.strip("/").split("/")
            self._table.setdefault((method, len(segs)), []).append((segs, template, handler))
        for lst in self._table.values():
            lst.sort(key=lambda r: sum(s.startswith("{") for s in r[0]))

    def match(self, method: str, path: str):
        """Return (handler, template, args) or None."""
        segs = path.strip("/").split("/")
        for pat, template, handler in self._table.get((method, len(segs)), ()):
            args = {}
            for s, ps in zip(segs, pat):
                if ps.startswith("{"):
                    if not s:
                        break
                    args[ps[1:-1]] = s
                elif s != ps:
                    break
            else:
                return handler, template, args
        return None

    def template_for(self, path: str) -> str:
        """Best-effort template for logging (IDs replaced by {id}) even for unknown routes."""
        for method in ("GET", "POST", "DELETE"):
            m = self.match(method, path)
            if m:
                return m[1]
        return path
