"""Stripe-shaped API errors."""

from __future__ import annotations


class StripeError(Exception):
    """Raised by handlers; rendered as ``{"error": {...}}`` with the given HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
        validation: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        # A parameter that fails validation: Stripe answers before the endpoint starts executing, so
        # nothing is saved under the Idempotency-Key and a corrected retry with the same key runs.
        self.validation = validation

    def body(self) -> dict:
        err = {"type": self.type, "message": self.message}
        if self.param is not None:
            err["param"] = self.param
        if self.code is not None:
            err["code"] = self.code
        return {"error": err}


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    """A 400 for a parameter that fails validation (not saved under the Idempotency-Key)."""
    return StripeError(400, message, param=param, code=code, validation=True)


def missing(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def no_such(kind: str, ident: str, param: str = "id", status: int = 404) -> StripeError:
    return StripeError(status, f"No such {kind}: '{ident}'", param=param, code="resource_missing")


def find(store: dict, kind: str, ident: str | None, param: str | None = None) -> dict:
    """``store[ident]``, or Stripe's ``resource_missing``: 404 for an id in the path, 400 naming ``param``
    for an id given in a parameter."""
    obj = store.get(ident or "")
    if obj is None:
        raise no_such(kind, ident, param=param, status=400) if param else no_such(kind, ident)
    return obj
