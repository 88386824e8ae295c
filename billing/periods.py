"""Billing periods: calendar months in UTC, ``[first day 00:00 UTC, next first day 00:00 UTC)``."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from billing.errors import PeriodError

UTC = timezone.utc

_PERIOD_RE = re.compile(r"([0-9]{4})-([0-9]{2})")
_FORMAT_HINT = "expected 'YYYY-MM' with a month from 01 to 12, e.g. '2026-10'"


def _require_aware(ts: datetime, field: str) -> datetime:
    if not isinstance(ts, datetime):
        raise PeriodError(f"must be a datetime, not {type(ts).__name__}", field=field)
    if ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise PeriodError(f"must be timezone-aware (naive datetime {ts.isoformat()} is ambiguous)", field=field)
    return ts.astimezone(UTC)


@dataclass(frozen=True, order=True)
class Period:
    """One calendar month in UTC. Ordered chronologically; ``str(p) == "2026-10"``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        for name in ("year", "month"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise PeriodError(f"{name} must be an int, got {v!r}", field="period")
        if not 1 <= self.month <= 12:
            raise PeriodError(f"month must be 1-12, got {self.month}; {_FORMAT_HINT}", field="period")
        # 9999-12 has no next month representable as a datetime.
        if not 1 <= self.year <= 9998:
            raise PeriodError(f"year must be 0001-9998, got {self.year}", field="period")

    # -- construction -----------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Period:
        """Strict ``YYYY-MM`` (e.g. ``"2026-10"``); anything else raises ``PeriodError``."""
        if not isinstance(text, str):
            raise PeriodError(f"{_FORMAT_HINT}; got {type(text).__name__} {text!r}", field="period")
        m = _PERIOD_RE.fullmatch(text)
        if not m:
            raise PeriodError(f"{_FORMAT_HINT}; got {text!r}", field="period")
        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12:
            raise PeriodError(f"{_FORMAT_HINT}; got {text!r}", field="period")
        return cls(year, month)

    @classmethod
    def of(cls, ts: datetime) -> Period:
        """The period containing ``ts`` (must be tz-aware; converted to UTC)."""
        u = _require_aware(ts, "ts")
        return cls(u.year, u.month)

    # -- bounds ---------------------------------------------------------------------------
    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive end: the first instant of the next period."""
        return self.next().start

    @property
    def days(self) -> int:
        return calendar.monthrange(self.year, self.month)[1]

    def contains(self, ts: datetime) -> bool:
        u = _require_aware(ts, "ts")
        return self.start <= u < self.end

    def closes_at(self, grace_hours: int = 48) -> datetime:
        """When the period may be closed: ``end + grace_hours`` (late usage accepted until then)."""
        if isinstance(grace_hours, bool) or not isinstance(grace_hours, int) or grace_hours < 0:
            raise PeriodError(f"must be a non-negative int, got {grace_hours!r}", field="grace_hours")
        return self.end + timedelta(hours=grace_hours)

    # -- navigation -----------------------------------------------------------------------
    def next(self) -> Period:
        return Period(self.year + 1, 1) if self.month == 12 else Period(self.year, self.month + 1)

    def previous(self) -> Period:
        return Period(self.year - 1, 12) if self.month == 1 else Period(self.year, self.month - 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def oldest_billed_period(now: datetime, lookback_periods: int, grace_hours: int = 48) -> Period:
    """The oldest period whose usage some close still to come will bill: the latest close that may
    still run (the previous period's until its grace has passed, then the current one's) reaches back
    ``lookback_periods`` periods for late usage. Usage older than that would be stored and never billed."""
    current = Period.of(now)
    previous = current.previous()
    oldest = previous if now < previous.closes_at(grace_hours) else current
    for _ in range(lookback_periods):
        oldest = oldest.previous()
    return oldest


__all__ = ["Period", "PeriodError", "UTC", "oldest_billed_period"]


def gather_by_period(gathered: dict["Period", tuple[set[str], datetime]], ids, at: datetime) -> None:
    """Add ``ids`` seen at ``at`` to ``gathered``: per period of ``at``, the union of the ids and the
    latest instant (the usage observers and alert evaluations of a group of batches)."""
    period = Period.of(at)
    known, latest = gathered.get(period, (set(), at))
    known.update(ids)
    gathered[period] = (known, max(latest, at))
