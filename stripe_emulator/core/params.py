"""Parameter readers for handlers: each takes the decoded params and answers the value or raises a
Stripe-shaped 400 naming the parameter (``label`` is the full name, e.g. ``lines[0][amount]``)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import invalid, missing


def _scalar(params: dict, name: str, label: str | None = None):
    v = params.get(name)
    if isinstance(v, (dict, list)):
        raise invalid(f"Invalid value for {label or name}: expected a string.",
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
        raise invalid(f"Invalid integer: {v}", param=label, code="parameter_invalid_integer")
    if minimum is not None and out < minimum:
        raise invalid(f"Invalid {label}: must be greater than or equal to {minimum}", param=label)
    if maximum is not None and out > maximum:
        raise invalid(f"Invalid {label}: must be less than or equal to {maximum}", param=label)
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
    raise invalid(f"Invalid boolean: {v}", param=label or name)


def p_enum(params: dict, name: str, choices: tuple, default=None, label: str | None = None):
    v = p_str(params, name, default=default, label=label)
    if v is not None and v not in choices:
        raise invalid(
            f"Invalid {label or name}: must be one of {', '.join(choices)}", param=label or name)
    return v


def p_decimal(value, label: str, max_places: int = 12) -> Decimal:
    if isinstance(value, (dict, list)) or value is None:
        raise invalid(f"Invalid decimal: {value}", param=label)
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise invalid(f"Invalid decimal: {value}", param=label)
    if not d.is_finite():
        raise invalid(f"Invalid decimal: {value}", param=label)
    exp = d.as_tuple().exponent
    if isinstance(exp, int) and -exp > max_places:
        raise invalid(f"Invalid decimal: {value} has more than {max_places} decimal places",
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
        raise invalid(f"Invalid {label}: must be a hash of string keys and values", param=label)
    for k, val in v.items():
        if isinstance(val, (dict, list)):
            raise invalid(f"Invalid value for {label}[{k}]: metadata values must be strings",
                              param=f"{label}[{k}]")
        if len(k) > 40:
            raise invalid(f"Invalid {label}: keys must be at most 40 characters", param=label)
        if len(val) > 500:
            raise invalid(f"Invalid {label}[{k}]: values must be at most 500 characters",
                              param=f"{label}[{k}]")
        if val == "":
            out.pop(k, None)
        else:
            out[k] = val
    if len(out) > 50:
        raise invalid(f"Invalid {label}: at most 50 keys are allowed", param=label)
    return out


def p_currency(params: dict, name: str, default=None, required=False, label: str | None = None):
    v = p_str(params, name, required=required, default=default, label=label)
    if v is None:
        return None
    v = v.lower()
    if not re.fullmatch(r"[a-z]{3}", v):
        raise invalid(f"Invalid currency: {v}", param=label or name)
    return v



# ---- known parameters -------------------------------------------------------------------------------
# Stripe refuses a parameter an endpoint does not take: 400 invalid_request_error "Received unknown
# parameter: <name>" (``param`` the name, ``code`` parameter_unknown), before anything executes (so it is
# never saved under an Idempotency-Key). An operation declares what it takes as a spec: name -> ANY (any
# value: a scalar, or a free-form hash such as metadata or a meter event's payload) or a nested spec (a
# hash with known keys; for an array, each element's keys).
ANY = None
LIST = {"limit": ANY, "starting_after": ANY, "ending_before": ANY, "created": ANY}  # every list endpoint
SEARCH = {"query": ANY, "limit": ANY, "page": ANY}  # every search endpoint
EVERYWHERE = {"expand": ANY}


def known(*names: str, **nested) -> dict:
    """A parameter spec: ``known("email", "name", metadata=ANY, period=known("start", "end"))``."""
    return {**{n: ANY for n in names}, **nested}


def unknown_parameter(params: dict, spec: dict, prefix: str = "") -> str | None:
    """The full name of the first parameter ``spec`` does not know (``lines[0][foo]``), or None."""
    for name, value in params.items():
        label = f"{prefix}[{name}]" if prefix else name
        if name not in spec and not (not prefix and name in EVERYWHERE):
            return label
        sub = spec.get(name)
        if sub is None:
            continue
        elements = value if isinstance(value, list) else [value]
        for i, element in enumerate(elements):
            if isinstance(element, dict):
                where = f"{label}[{i}]" if isinstance(value, list) else label
                if (bad := unknown_parameter(element, sub, where)) is not None:
                    return bad
    return None


def refuse_unknown(params: dict, spec: dict | None) -> None:
    """Raise Stripe's 400 for the first unknown parameter (nothing when ``spec`` is None)."""
    if spec is None:
        return
    bad = unknown_parameter(params, spec)
    if bad is not None:
        raise invalid(f"Received unknown parameter: {bad}", param=bad, code="parameter_unknown")
