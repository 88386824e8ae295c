"""Stripe-shaped HTTP responses: compact JSON, a ``Request-Id`` and ``Stripe-Version`` on every one."""

from __future__ import annotations

import json

from starlette.responses import Response

from .core.errors import StripeError
from .core.ids import new_id

STRIPE_VERSION = "2026-10-28.endive"


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def json_response(status: int, body: bytes, headers: dict | None = None) -> Response:
    out = {"Stripe-Version": STRIPE_VERSION, **(headers or {})}
    if "Request-Id" not in out:
        out["Request-Id"] = new_id("req")
    return Response(body, status_code=status, headers=out, media_type="application/json")


def error_response(err: StripeError, headers: dict | None = None) -> Response:
    return json_response(err.status, dumps(err.body()), {**err.headers, **(headers or {})})
