"""Decode Stripe's form encoding (``lines[0][price_data][currency]=usd``) into nested dicts/lists."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from .errors import StripeError

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def _split_key(key: str) -> list[str]:
    i = key.find("[")
    if i < 0:
        return [key]
    base, rest = key[:i], key[i:]
    parts = _BRACKETS.findall(rest)
    if "".join("[%s]" % p for p in parts) != rest or not base:
        raise StripeError(400, f"Invalid parameter name: {key}", param=key)
    return [base] + parts


def _listify(node):
    """Turn dicts whose keys are all non-negative integers into lists (ordered by index)."""
    if isinstance(node, dict):
        for k, v in node.items():
            node[k] = _listify(v)
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
        return node
    if isinstance(node, list):
        return [_listify(v) for v in node]
    return node


def decode_form(text: str) -> dict:
    """Parse an x-www-form-urlencoded string into nested params (all leaf values are str)."""
    if not text:
        return {}
    out: dict = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:  # pragma: no cover - parse_qsl is lenient
        raise StripeError(400, f"Could not parse request body: {exc}") from exc
    for key, value in pairs:
        if "[" not in key:
            if isinstance(out.get(key), (dict, list)):
                raise StripeError(400, f"Invalid value for {key}: cannot mix a hash and a string", param=key)
            out[key] = value
            continue
        parts = _split_key(key)
        node = out
        for idx, part in enumerate(parts[:-1]):
            nxt_is_append = parts[idx + 1] == ""
            child = node.get(part) if isinstance(node, dict) else None
            if part == "":
                raise StripeError(400, f"Invalid parameter name: {key}", param=key)
            if child is None:
                child = [] if nxt_is_append else {}
                node[part] = child
            elif not isinstance(child, (dict, list)) or (isinstance(child, list) and not nxt_is_append):
                raise StripeError(400, f"Invalid value for {key}: conflicting parameter shapes", param=key)
            if isinstance(child, list):
                # ``expand[]=a&expand[]=b``: the append form only works on the last level
                if idx + 1 != len(parts) - 1:
                    raise StripeError(400, f"Invalid parameter name: {key}", param=key)
                child.append(value)
                node = None
                break
            node = child
        if node is None:
            continue
        last = parts[-1]
        if last == "":
            raise StripeError(400, f"Invalid parameter name: {key}", param=key)
        if isinstance(node.get(last), (dict, list)):
            raise StripeError(400, f"Invalid value for {key}: conflicting parameter shapes", param=key)
        node[last] = value
    return _listify(out)
