"""Verifying Stripe's signed webhook deliveries (``Stripe-Signature: t=...,v1=...``) with the SDK.

Pure with respect to the network: no request is made. Kept in the gateway because it is the SDK's code
that checks the HMAC and the timestamp tolerance.
"""

from __future__ import annotations

import json

import stripe

TOLERANCE_SECONDS = 300  # Stripe's default: a delivery older than 5 minutes is refused (replays)


class BadSignature(ValueError):
    """The payload is not a Stripe event signed with our endpoint secret (or it is too old)."""


def verify_event(payload: bytes, signature: str | None, secret: str,
                 tolerance: int = TOLERANCE_SECONDS) -> dict:
    """The event as a plain dict, once its signature and timestamp check out; else ``BadSignature``."""
    if not signature:
        raise BadSignature("Stripe-Signature header missing")
    try:
        text = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(text, signature, secret, tolerance=tolerance)
    except stripe.SignatureVerificationError as err:
        raise BadSignature(f"Stripe-Signature: {err.user_message or err}") from None
    except UnicodeDecodeError as err:
        raise BadSignature(f"payload: {err}") from None
    try:
        event = json.loads(text)
    except ValueError as err:  # signed, but not JSON
        raise BadSignature(f"payload: {err}") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise BadSignature("payload: not a Stripe event (id and type missing)")
    return event


def sign_payload(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` header Stripe would send for ``payload`` (the emulator and tests sign
    with it; the scheme is Stripe's documented HMAC-SHA256 of ``"{t}.{payload}"``)."""
    import hashlib
    import hmac

    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
