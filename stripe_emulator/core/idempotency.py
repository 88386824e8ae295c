"""Idempotency keys as Stripe documents them (POST only).

Keys are scoped per API key and compared on method + path + decoded parameters. The first request with a
key claims it (an in-flight record); once it has executed, its response (status, body and headers, 4xx
and 500 included) is saved under the key; a parameter that failed validation is not (the claim is
released: the endpoint never started executing). Later requests with the key get that response replayed; with other
parameters or on another endpoint a 400 ``idempotency_error``; while the first is still executing a 409
``idempotency_error`` (not saved). Keys expire 24 h (emulator clock) after first use.
"""

from __future__ import annotations

import json

from .errors import StripeError
from .state import EmulatorState

IDEMPOTENCY_TTL = 24 * 3600
MAX_KEY_LENGTH = 255

NEW, REPLAY, MISMATCH, IN_FLIGHT = "new", "replay", "mismatch", "in_flight"


def fingerprint(method: str, path: str, params: dict) -> str:
    return method + " " + path + "\n" + json.dumps(params, sort_keys=True, separators=(",", ":"))


def begin(st: EmulatorState, api_key: str, key: str, fp: str) -> tuple[str, dict | None]:
    """Claim ``key`` for a request with fingerprint ``fp``.

    Returns (NEW, None) when the caller must execute (a fresh in-flight record now exists; the caller
    must ``finish`` or ``release`` it), or (REPLAY | MISMATCH | IN_FLIGHT, record).
    """
    with st.lock:
        rk = (api_key, key)
        rec = st.idempotency.get(rk)
        now = st.now()
        if rec is not None and not rec["in_flight"] and now - rec["created"] > IDEMPOTENCY_TTL:
            rec = None  # expired: the key is new again
        if rec is not None:
            if rec["fp"] != fp:
                return MISMATCH, rec
            if rec["in_flight"]:
                return IN_FLIGHT, rec
            return REPLAY, rec
        st.idempotency[rk] = {
            "fp": fp, "created": now, "status": None, "body": None, "request_id": None, "in_flight": True,
        }
        return NEW, None


def finish(st: EmulatorState, api_key: str, key: str, status: int, body: bytes, request_id: str,
           headers: dict | None = None) -> None:
    """Save the executed response (and its Stripe headers, e.g. ``Stripe-Should-Retry``) under the key."""
    with st.lock:
        rec = st.idempotency.get((api_key, key))
        if rec is None:  # reset while executing
            return
        rec.update(status=status, body=body.decode("utf-8"), request_id=request_id, in_flight=False,
                   headers=dict(headers or {}))
        st.dirty = True


def release(st: EmulatorState, api_key: str, key: str) -> None:
    """Forget a claim whose request ended without a response to save (an unexpected failure)."""
    with st.lock:
        st.idempotency.pop((api_key, key), None)


def prune_expired(st: EmulatorState) -> int:
    with st.lock:
        now = st.now()
        dead = [k for k, r in st.idempotency.items() if not r["in_flight"] and now - r["created"] > IDEMPOTENCY_TTL]
        for k in dead:
            del st.idempotency[k]
        return len(dead)


def key_too_long() -> StripeError:
    return StripeError(400, f"Idempotency keys can be at most {MAX_KEY_LENGTH} characters.",
                       param="Idempotency-Key")


def key_reused(key: str, rec: dict) -> StripeError:
    orig = rec["fp"].split("\n", 1)[0]
    return StripeError(
        400, "Keys for idempotent requests can only be used with the same parameters they were first used "
             f"with. Try using a key other than '{key}' if you meant to execute a different request (first "
             f"used for {orig}).", type="idempotency_error")


def key_in_use(key: str) -> StripeError:
    return StripeError(
        409, "There is currently another in-progress request using this Idempotent Key (that probably means "
             f"you submitted twice, and the other request is still going through): {key}. Please try again "
             "later.", type="idempotency_error", code="idempotency_key_in_use")
