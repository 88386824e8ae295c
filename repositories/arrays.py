"""Array parameters as Postgres array literals: one text value (``{"a","b"}``) in place of a Python list.

Why. The ingest's per-batch statements take arrays of ~1,000 values (the counters' nine columns, the
batch's accounts), and psycopg adapts a list element by element in Python: its list dumpers were 16% of
an API ingest process's time under full HTTP ingest (py-spy, issue 15). Measured on this machine for
the counters of one batch (800 keys, nine arrays): 9.6 ms of client CPU as lists, 2.0 ms as literals,
for the same rows out of ``unnest``. The statement casts the parameter (``%(x)s::text[]``,
``CAST(:x AS text[])``) exactly as it did the list.

The literal is what Postgres's array input reads (``array_in``): text elements always double-quoted with
backslash and double quote escaped, so no value (empty, ``NULL``, with commas, braces, spaces or
quotes) is read as anything but itself; None is the unquoted ``NULL``. Numbers and booleans are written
as their own text, which the element type's input function reads back exactly (Decimal included).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable


def _quoted(value: str | None) -> str:
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_array(values: Iterable[str | None]) -> str:
    """``{"a","b",NULL}``: for a ``text[]`` (or ``varchar[]``) parameter."""
    return "{" + ",".join(map(_quoted, values)) + "}"


def int_array(values: Iterable[int]) -> str:
    """``{1,2,3}``: for a ``bigint[]`` / ``int[]`` parameter (bool is refused: it is not a count)."""
    out = []
    for v in values:
        if type(v) is not int:
            raise TypeError(f"int_array: {v!r} is not an int")
        out.append(str(v))
    return "{" + ",".join(out) + "}"


def bool_array(values: Iterable[bool]) -> str:
    """``{t,f}``: for a ``boolean[]`` parameter."""
    out = []
    for v in values:
        if type(v) is not bool:
            raise TypeError(f"bool_array: {v!r} is not a bool")
        out.append("t" if v else "f")
    return "{" + ",".join(out) + "}"


def numeric_array(values: Iterable[Decimal | int]) -> str:
    """``{1.50,0.00000001}``: for a ``numeric[]`` parameter; finite Decimals and ints only."""
    out = []
    for v in values:
        if type(v) is int:
            out.append(str(v))
        elif isinstance(v, Decimal) and v.is_finite():
            out.append(str(v))
        else:
            raise TypeError(f"numeric_array: {v!r} is not a finite Decimal or an int")
    return "{" + ",".join(out) + "}"
