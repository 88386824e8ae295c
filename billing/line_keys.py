"""Line keys: the stable identity of an invoice line within its period, built and read only here.

Every rated line carries a key (stored in ``invoice_lines.key``). Late usage is billed by difference
per key (``billing.rating.prior_period_lines``), and ``invoices explain`` reads the terms segment back
out of a usage key, so the format of a key never changes once invoices carry it::

    base_fee|<segment>|<plan>|<seats>
    included_usage
    sandbox
    usage|<model>|<version>|<rate>|<segment or empty>
    token_usage|<model>|<version>|<input or output>|<segment or empty>
    blocked_usage|<model>
    cap_adjustment

The segment of a usage or token line is empty when the period has one terms segment.
"""

from __future__ import annotations

from decimal import Decimal

SEPARATOR = "|"


def _key(*parts: object) -> str:
    return SEPARATOR.join(["" if p is None else str(p) for p in parts])  # a list joins faster than a generator


def base_fee(segment: int, plan: str, seats: int) -> str:
    return _key("base_fee", segment, plan, seats)


def included_usage() -> str:
    return _key("included_usage")


def sandbox() -> str:
    return _key("sandbox")


def usage(model: str, version: str, rate: Decimal, segment: int | None) -> str:
    return _key("usage", model, version, rate, segment)


def token_usage(model: str, version: str, direction: str, segment: int | None) -> str:
    return _key("token_usage", model, version, direction, segment)


def blocked_usage(model: str) -> str:
    return _key("blocked_usage", model)


def credit_usage(model: str) -> str:
    return _key("credit_usage", model)


def prepaid_balance() -> str:
    return _key("prepaid_balance")


def cap_adjustment() -> str:
    return _key("cap_adjustment")


_WITH_SEGMENT = ("usage", "token_usage")


def segment_of(key: str) -> int | None:
    """The terms segment a usage or token line was priced in; None for every other line, and for
    usage lines of a period with one segment."""
    parts = key.split(SEPARATOR)
    if parts[0] not in _WITH_SEGMENT or len(parts) < 5 or not parts[4]:
        return None
    try:
        return int(parts[4])
    except ValueError:
        return None


__all__ = ["base_fee", "included_usage", "sandbox", "usage", "token_usage", "blocked_usage", "cap_adjustment",
           "segment_of"]
