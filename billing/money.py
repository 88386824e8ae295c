"""Money: ``Decimal`` only, USD, rounded to whole cents once per line (ROUND_HALF_UP).

Nothing here depends on the ambient ``decimal`` context: every operation that could
round uses an explicit, wide context, so a caller's ``getcontext().prec = 5`` or a
trapped ``Inexact`` cannot change a bill.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

from billing.errors import MoneyError

CENT = Decimal("0.01")
_WIDE = Context(prec=200, rounding=ROUND_HALF_UP)
ZERO = Decimal("0.00")

_MONEY_RE = re.compile(r"(?P<sign>[-+]?)\$?(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?")


def _context_for(x: Decimal) -> Context:
    # Enough significant digits to hold x exactly and x to the cent exactly.
    digits = max(28, len(x.as_tuple().digits) + 2, x.adjusted() + 4)
    # One context per precision, made once (a Context costs more than the quantize it serves; the
    # rating rounds tens of thousands of lines per chunk). Callers only pass it to operations, which
    # read its precision, rounding and traps and at most raise its flags, which nothing here reads.
    ctx = _CONTEXTS.get(digits)
    if ctx is None:
        ctx = Context(prec=digits, rounding=ROUND_HALF_UP)
        if len(_CONTEXTS) < 1_000:
            _CONTEXTS[digits] = ctx
    return ctx


_CONTEXTS: dict[int, Context] = {}


def _as_decimal(x: object, what: str = "amount") -> Decimal:
    if type(x) is Decimal and x.is_finite():  # the common case, first
        return x
    if isinstance(x, bool) or isinstance(x, float):
        raise MoneyError(f"must be a Decimal, not {type(x).__name__} ({x!r})", field=what)
    if isinstance(x, int):
        return Decimal(x)
    if not isinstance(x, Decimal):
        raise MoneyError(f"must be a Decimal, not {type(x).__name__}", field=what)
    if not x.is_finite():
        raise MoneyError(f"must be a finite number, got {x}", field=what)
    return x


def round_money(x: Decimal) -> Decimal:
    """Round to whole cents, ROUND_HALF_UP (half away from zero): 0.005 -> 0.01, -0.005 -> -0.01."""
    d = _as_decimal(x)
    return d.quantize(CENT, rounding=ROUND_HALF_UP, context=_context_for(d))


def is_whole_cents(x: Decimal) -> bool:
    d = _as_decimal(x)
    return d.quantize(CENT, rounding=ROUND_HALF_UP, context=_context_for(d)) == d


def to_cents(x: Decimal) -> int:
    """Integer cents of an amount that is already a whole number of cents (else MoneyError/ValueError)."""
    d = _as_decimal(x)
    if not is_whole_cents(d):
        raise MoneyError(f"{d} is not a whole number of cents; round it first", field="amount")
    return int(d.scaleb(2, context=_context_for(d)))


def from_cents(n: int) -> Decimal:
    """``from_cents(12345) == Decimal("123.45")`` (always two decimal places)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise MoneyError(f"cents must be an int, not {type(n).__name__}", field="cents")
    return Decimal(n).scaleb(-2, context=_context_for(Decimal(n)))


def parse_money(text: str | int | Decimal, field: str = "amount", *, allow_negative: bool = False) -> Decimal:
    """Parse a user-supplied amount such as ``"12.50"``, ``"$1,234.50"`` or ``"-3"``.

    Floats, NaN, infinities, exponent notation and (unless ``allow_negative``) negative
    values are rejected with a ``MoneyError`` naming ``field``. Precision is kept as
    written (rates may be sub-cent); round with ``round_money`` where an amount is due.
    """
    if isinstance(text, bool) or isinstance(text, float):
        raise MoneyError(
            f"must be a decimal string such as '12.50', not a {type(text).__name__} ({text!r}); "
            "floats cannot represent money exactly",
            field=field,
        )
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise MoneyError(f"must be a finite amount, got {text}", field=field)
        value = text
    elif isinstance(text, int):
        value = Decimal(text)
    elif isinstance(text, str):
        raw = text.strip().replace(",", "") if _commas_ok(text.strip()) else text.strip()
        m = _MONEY_RE.fullmatch(raw)
        if not m:
            raise MoneyError(f"must be a decimal amount such as '12.50', got {text!r}", field=field)
        try:
            value = Decimal(raw.replace("$", ""), context=_WIDE)
        except InvalidOperation:  # pragma: no cover - the regex already guarantees a valid literal
            raise MoneyError(f"must be a decimal amount such as '12.50', got {text!r}", field=field) from None
    else:
        raise MoneyError(f"must be a decimal string, not {type(text).__name__}", field=field)
    if value < 0 and not allow_negative:
        raise MoneyError(f"must not be negative, got {value}", field=field)
    if value == 0:
        value = value.copy_abs()  # no "-0"
    return value


_GROUPED_RE = re.compile(r"[-+]?\$?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?")


def _commas_ok(s: str) -> bool:
    # Thousands separators are accepted only when correctly grouped ("1,234.50", not "1,2,3").
    return "," not in s or bool(_GROUPED_RE.fullmatch(s))


def format_usd(x: Decimal) -> str:
    """``format_usd(Decimal("1234.5")) == "$1,234.50"``; negatives as ``"-$70.00"``. Rounds to cents."""
    d = round_money(x)
    sign = "-" if d < 0 else ""
    return f"{sign}${d.copy_abs():,.2f}"


def format_rate(x: Decimal) -> str:
    """A unit price with its sub-cent precision kept, at least two decimals: ``"$0.005"``, ``"$79.00"``."""
    d = _as_decimal(x)
    sign = "-" if d < 0 else ""
    d = d.copy_abs()
    places = max(2, -d.normalize(context=_context_for(d)).as_tuple().exponent) if d != 0 else 2
    return f"{sign}${d:,.{places}f}"


__all__ = [
    "CENT",
    "ZERO",
    "round_money",
    "is_whole_cents",
    "to_cents",
    "from_cents",
    "parse_money",
    "format_usd",
    "format_rate",
]
