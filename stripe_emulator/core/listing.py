"""Stripe's list and search envelopes over a store: pagination, ``created`` filters and the search query
language (a subset)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import invalid, missing, no_such
from .params import p_int, p_str
from .resource import ApiRequest
from .state import EmulatorState


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


def paginate(items: list, req: ApiRequest, url: str, render=None) -> dict:
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


# ---- search query language (subset) ------------------------------------------------------------
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
            raise invalid(f"Invalid search query at position {pos}: {query!r}. Expected a clause "
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
            raise invalid(f"Invalid search query at position {pos}: {query!r}. Expected AND or OR.",
                              param="query")
        joins.add(j.group(1).upper())
        pos = j.end()
    if len(joins) > 1:
        raise invalid("Search queries cannot combine AND and OR.", param="query")
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


def search(st: EmulatorState, store: dict, req: ApiRequest, url: str, render=None) -> dict:
    """Stripe's search: like real Stripe it lags behind writes. An object is found once it is
    ``st.search_lag_seconds`` old on the emulator clock (``created``); lists are never late."""
    p = req.params
    is_or, clauses = parse_search(p_str(p, "query", required=True))
    limit = p_int(p, "limit", default=10, minimum=1, maximum=100)
    page_tok = p_str(p, "page")
    start = 0
    if page_tok:
        m = re.fullmatch(r"page_(\d+)", page_tok)
        if not m:
            raise invalid(f"Invalid page: {page_tok}", param="page")
        start = int(m.group(1))
    combine = any if is_or else all
    visible_before = st.now() - st.search_lag_seconds
    hits = [o for o in reversed(store.values())
            if o.get("created", 0) <= visible_before and combine(_clause_ok(o, c) for c in clauses)]
    page = hits[start:start + limit]
    has_more = len(hits) > start + limit
    if render is not None:
        page = [render(o) for o in page]
    return {"object": "search_result", "data": page, "has_more": has_more,
            "next_page": f"page_{start + limit}" if has_more else None, "url": url}

