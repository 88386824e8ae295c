"""Does an invoice still say what today's code would bill? (``tally invoices verify``, pure part.)

An invoice's recorded lines are compared with the lines today's rating produces from the same facts
(the catalog versions that were in force, the terms, and the usage known when the invoice was rated).
Lines are matched by their period (prior-period lines by the period they bill) and their stable key;
a line present on one side only, or a different quantity, unit price or amount, is a difference. None
is expected after a refactor: a difference means a code change would alter history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


class LineLike(Protocol):
    kind: object
    key: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    source_period: str | None


@dataclass(frozen=True)
class LineDifference:
    line: str  # "<kind> <key>" (prior-period lines: "... for YYYY-MM")
    field: str  # quantity | unit_price | amount | line
    recorded: str  # "-" when the line is missing from the invoice
    now: str  # "-" when today's rating has no such line

    def __str__(self) -> str:
        return f"{self.line}: {self.field} {self.recorded} -> {self.now}"


def _identity(line: LineLike) -> tuple[str, str, str]:
    kind = getattr(line.kind, "value", line.kind)
    return (line.source_period or "", str(kind), line.key)


def _label(ident: tuple[str, str, str]) -> str:
    source, kind, key = ident
    return f"{kind} {key}" + (f" for {source}" if source else "")


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f") if d != 0 else "0"


def _by_identity(lines: Iterable[LineLike]) -> dict[tuple[str, str, str], list[LineLike]]:
    out: dict[tuple[str, str, str], list[LineLike]] = {}
    for line in lines:
        out.setdefault(_identity(line), []).append(line)
    return out


def compare_lines(recorded: Iterable[LineLike], rerated: Iterable[LineLike]) -> list[LineDifference]:
    """Every difference between an invoice's recorded lines and today's rating of the same facts, in a
    stable order (by period, kind, key). Amounts compare as numbers (29.00 == 29)."""
    before, after = _by_identity(recorded), _by_identity(rerated)
    diffs: list[LineDifference] = []
    for ident in sorted(before.keys() | after.keys()):
        old, new = before.get(ident, []), after.get(ident, [])
        label = _label(ident)
        if len(old) != len(new):
            diffs.append(LineDifference(label, "line", f"{len(old)} line(s)" if old else "-",
                                        f"{len(new)} line(s)" if new else "-"))
            continue
        for o, n in zip(old, new):
            for name in ("quantity", "unit_price", "amount"):
                a, b = getattr(o, name), getattr(n, name)
                if Decimal(a) != Decimal(b):
                    diffs.append(LineDifference(label, name, _plain(Decimal(a)), _plain(Decimal(b))))
    return diffs


__all__ = ["LineDifference", "compare_lines"]
