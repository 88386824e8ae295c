"""What a Tally operation reports when it cannot do what was asked, in a message a person can act
on (the field first: ``"seats: must be at least 1"``).

The CLI prints these as one line (``workers.cli.friendly``); the API maps them to its error body in
one place (``api.errors``): NotFound 404, InvalidInput 422, Conflict 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from billing.errors import BillingError


class ServiceError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ServiceError, LookupError):
    """No such account, invoice or platform (or not one the caller may see)."""


class InvalidInput(ServiceError, ValueError):
    """Bad input: ``field`` (None when no single field is at fault) and the reason."""

    def __init__(self, field: str | None, reason: str, message: str | None = None):
        super().__init__(message or (f"{field}: {reason}" if field else reason))
        self.field = field
        self.reason = reason

    @classmethod
    def of(cls, err: BillingError, field: str | None = None) -> InvalidInput:
        """A rule of billing/ refused the input; ``field`` names it when the rule did not."""
        return cls(err.field or field, err.message, str(err))


class Conflict(ServiceError, ValueError):
    """The request contradicts what exists (an account with other terms, a platform name taken)."""


class OperationFailed(ServiceError):
    """A durable operation (a close, an invoice push) ran and failed."""


def root_cause(err: BaseException) -> str:
    """The innermost message of a chain of errors (a workflow's failure wraps the activity's)."""
    msgs: list[str] = []
    cur: BaseException | None = err
    while cur is not None:
        msg = getattr(cur, "message", None) or str(cur)
        if msg and msg not in msgs:
            msgs.append(msg)
        cur = cur.__cause__
    return msgs[-1] if msgs else "unknown error"


@contextmanager
def refused_input(field: str | None = None) -> Iterator[None]:
    """Turn a billing rule's refusal (``BillingError``) into ``InvalidInput``."""
    try:
        yield
    except BillingError as err:
        raise InvalidInput.of(err, field) from None


__all__ = ["ServiceError", "NotFound", "InvalidInput", "Conflict", "OperationFailed", "root_cause", "refused_input"]
