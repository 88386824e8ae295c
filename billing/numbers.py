"""Exact helpers shared by the alert and routing rules: a Decimal median and argument checks.

Nothing here reads the ambient ``decimal`` context: the one division (the median of an even count)
uses an explicit wide context, so a caller's context cannot change a verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Context, Decimal

from billing.errors import BillingError

WIDE = Context(prec=60, rounding=ROUND_HALF_UP)


def median(values: Iterable[Decimal | int]) -> Decimal:
    """The median, exactly: the middle value, or the mean of the two middle values.

    Robust to a few outliers, which is why it is the baseline of the loop rule and of a skill's
    token mix. An empty input is a caller's bug (``ValueError``): rules check their minimum first.
    """
    xs = sorted(Decimal(v) for v in values)
    if not xs:
        raise ValueError("median of no values")
    mid = len(xs) // 2
    if len(xs) % 2:
        return xs[mid]
    return WIDE.divide(WIDE.add(xs[mid - 1], xs[mid]), Decimal(2))


def check_decimal(value: object, field: str, error: type[BillingError] = BillingError, *,
                  minimum: Decimal | None = Decimal(0), maximum: Decimal | None = None,
                  above_minimum: bool = False) -> Decimal:
    """``value`` as a finite Decimal within bounds, else ``error`` naming ``field``.

    Ints are accepted (``3`` is ``Decimal(3)``); floats and booleans are refused, since a float
    cannot hold money or a threshold exactly.
    """
    if isinstance(value, (bool, float)):
        raise error(f"must be a Decimal, not {type(value).__name__} ({value!r})", field=field)
    if isinstance(value, int):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise error(f"must be a Decimal, not {type(value).__name__}", field=field)
    if not value.is_finite():
        raise error(f"must be a finite number, got {value}", field=field)
    if minimum is not None and (value <= minimum if above_minimum else value < minimum):
        raise error(f"must be {'greater than' if above_minimum else 'at least'} {minimum}, got {value}",
                    field=field)
    if maximum is not None and value > maximum:
        raise error(f"must be at most {maximum}, got {value}", field=field)
    return value


def check_count(value: object, field: str, error: type[BillingError] = BillingError) -> int:
    """``value`` as an int >= 0 (not a bool), else ``error`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"must be an integer >= 0, got {value!r}", field=field)
    return value


def plain(x: Decimal, places: int | None = None) -> str:
    """A figure for a sentence, without trailing zeros: ``3``, ``82.5``, ``0.6`` (``places``: rounded
    half up to that many decimals first)."""
    if places is not None:
        x = x.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=WIDE)
    return format(x.normalize(WIDE), "f")


__all__ = ["WIDE", "median", "check_decimal", "check_count", "plain"]
