"""Argument checks shared by the pure core: each raises the caller's error type naming the field."""

from __future__ import annotations

from datetime import datetime

from billing.errors import BillingError


def require_text(v: object, field: str, error: type[BillingError] = BillingError) -> str:
    """``v`` if it is a non-empty (not only blank) string."""
    if not isinstance(v, str) or not v.strip():
        raise error(f"must be a non-empty string, got {v!r}", field=field)
    return v


def require_aware(ts: object, field: str, error: type[BillingError] = BillingError) -> datetime:
    """``ts`` if it is a timezone-aware datetime."""
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise error(f"must be a timezone-aware datetime, got {ts!r}", field=field)
    return ts


def require_count(v: object, field: str, error: type[BillingError] = BillingError) -> int:
    """``v`` if it is an int >= 0 (not a bool)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise error(f"must be a whole number >= 0, got {v!r}", field=field)
    return v


__all__ = ["require_text", "require_aware", "require_count"]
