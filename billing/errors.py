"""Errors raised by the pure billing core.

Every error is a ``ValueError`` (bad input, bad data) and carries the name of the
offending field in ``.field`` so callers (API, CLI) can report it precisely. The
field name is also the first word of the message: ``"seats: must be 1 ..."``.
"""

from __future__ import annotations


class BillingError(ValueError):
    """Base class of every error raised by ``billing``."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class MoneyError(BillingError):
    """An amount of money could not be parsed or converted."""


class PeriodError(BillingError):
    """A billing period could not be parsed or a timestamp is unusable."""


class CatalogError(BillingError):
    """The catalog data is invalid, or a plan/model/version is unknown."""


class RatingError(BillingError):
    """The input to rating is inconsistent (seats, executions, billable counts, plan)."""


class TermsError(BillingError):
    """An account's terms (new, or a change) break a rule: plan, seats, or the day they take effect."""


__all__ = ["BillingError", "MoneyError", "PeriodError", "CatalogError", "RatingError", "TermsError"]
