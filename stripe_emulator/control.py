"""The control plane, ``/_emulator/...`` (JSON, no auth): what tests and the dev stack use to inject faults,
move the clock, reset, read the request log and stats, enable Connect accounts and save the state file."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from .core import faults, ratecap, requestlog
from .core.errors import StripeError
from .pipeline import read_body
from .responses import dumps, error_response, json_response

PREFIX = "/_emulator"


def _ok(obj, status: int = 200) -> Response:
    return json_response(status, dumps(obj))


def _bad(message: str, status: int = 400) -> Response:
    return json_response(status, dumps({"error": {"type": "invalid_request_error", "message": message}}))


async def _payload(request: Request) -> dict:
    """The JSON object body ({} when empty); StripeError 400 (or 413) otherwise."""
    body = await read_body(request)
    try:
        payload = json.loads(body) if body.strip() else {}
        if not isinstance(payload, dict):
            raise ValueError("body must be a JSON object")
    except ValueError as exc:
        raise StripeError(400, f"Invalid JSON body: {exc}") from exc
    return payload


def _emulator(request: Request):
    return request.app.state.emulator


def endpoint(fn):
    """Control endpoint ``fn(request, emulator, payload) -> Response``; a bad body is a 400."""

    async def wrapped(request: Request) -> Response:
        try:
            payload = await _payload(request)
        except StripeError as err:
            return _bad(err.message, err.status)
        return fn(request, _emulator(request), payload)

    wrapped.__name__ = fn.__name__
    return wrapped


@endpoint
def health(request, emu, payload):
    return _ok({"ok": True, "now": emu.state.now(), "url": emu.url})


@endpoint
def list_faults(request, emu, payload):
    return _ok({"faults": faults.pending(emu.state)})


@endpoint
def add_fault(request, emu, payload):
    kind = payload.get("kind")
    if kind not in faults.FAULT_KINDS:
        return _bad(f"kind must be one of {', '.join(faults.FAULT_KINDS)}")
    try:
        fault = faults.add(emu.state, method=payload.get("method", "POST"), path=payload.get("path", "*"),
                           kind=kind, count=payload.get("count", 1), retry_after=payload.get("retry_after", 1),
                           seconds=payload.get("seconds", 1.0))
    except (TypeError, ValueError) as exc:
        return _bad(str(exc))
    return _ok(fault)


def _rate_cap(emu) -> Response:
    cap = getattr(emu, "write_cap", None)  # core/ratecap.py
    return _ok({"writes_per_second": None} if cap is None else cap.describe())


@endpoint
def get_rate_cap(request, emu, payload):
    return _rate_cap(emu)


@endpoint
def set_rate_cap(request, emu, payload):
    n = payload.get("writes_per_second")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0):
        return _bad("writes_per_second must be a non-negative number or null")
    emu.write_cap = ratecap.WriteCap(n) if n else None
    return _rate_cap(emu)


@endpoint
def clear_faults(request, emu, payload):
    faults.clear(emu.state)
    return _ok({"ok": True})


@endpoint
def get_clock(request, emu, payload):
    return _ok({"now": emu.state.now(), "offset": emu.state.clock_offset})


@endpoint
def advance_clock(request, emu, payload):
    try:
        secs = float(payload.get("advance_seconds", 0))
    except (TypeError, ValueError):
        return _bad("advance_seconds must be a number")
    if secs < 0:
        return _bad("advance_seconds must be >= 0 (the emulator clock only moves forward)")
    now = emu.state.advance_clock(secs)
    return _ok({"now": now, "offset": emu.state.clock_offset})


@endpoint
def reset(request, emu, payload):
    emu.state.reset()
    return _ok({"ok": True})


@endpoint
def requests(request, emu, payload):
    try:
        since = int(request.query_params.get("since", 0))
    except ValueError:
        return _bad("since must be an integer")
    reqs = requestlog.since(emu.state, since)
    return _ok({"requests": reqs, "last_seq": reqs[-1]["seq"] if reqs else since})


@endpoint
def stats(request, emu, payload):
    return _ok(requestlog.stats(emu.state))


@endpoint
def save(request, emu, payload):
    if not emu.state_file:
        return _bad("this emulator has no state file")
    emu.save()
    return _ok({"ok": True, "state_file": emu.state_file})


def _set_account(enable: bool):
    def set_account(request, emu, payload):
        try:
            acct = emu.enable_account(
                request.path_params["id"],
                charges_enabled=bool(payload.get("charges_enabled", enable)),
                payouts_enabled=bool(payload.get("payouts_enabled", enable)),
                transfers=payload.get("transfers"),
            )
        except StripeError as err:
            return error_response(err)
        return _ok(acct)

    set_account.__name__ = "enable_account" if enable else "disable_account"
    return endpoint(set_account)


@endpoint
def set_balance(request, emu, payload):
    try:
        return _ok(emu.set_platform_balance(payload.get("available")))
    except ValueError as exc:
        return _bad(str(exc))


@endpoint
def get_balance(request, emu, payload):
    return _ok(dict(emu.state.balance))


@endpoint
def configure_webhooks(request, emu, payload):
    try:
        return _ok(emu.configure_webhooks(payload.get("url"), payload.get("secret"), int(payload.get("duplicate", 1)),
                                          float(payload.get("delay_seconds", 0)), bool(payload.get("reorder", False)),
                                          bool(payload.get("hold", False))))
    except (TypeError, ValueError) as exc:
        return _bad(str(exc))


@endpoint
def settle_checkout(request, emu, payload):
    try:
        return _ok(emu.settle_checkout(request.path_params["id"], payload.get("outcome", "paid")))
    except StripeError as err:
        return error_response(err)


@endpoint
def flush_webhooks(request, emu, payload):
    return _ok({"deliveries": emu.flush_webhooks()})


def unknown(request: Request) -> Response:
    return _bad(f"Unknown control endpoint: {request.method} {request.scope['path']}", status=404)


mount = Mount(PREFIX, routes=[
    Route("/health", health, methods=["GET"]),
    Route("/faults", list_faults, methods=["GET"]),
    Route("/faults", add_fault, methods=["POST"]),
    Route("/faults", clear_faults, methods=["DELETE"]),
    Route("/rate_cap", get_rate_cap, methods=["GET"]),
    Route("/rate_cap", set_rate_cap, methods=["POST"]),
    Route("/clock", get_clock, methods=["GET"]),
    Route("/clock", advance_clock, methods=["POST"]),
    Route("/reset", reset, methods=["POST"]),
    Route("/requests", requests, methods=["GET"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/save", save, methods=["POST"]),
    Route("/accounts/{id}/enable", _set_account(True), methods=["POST"]),
    Route("/accounts/{id}/disable", _set_account(False), methods=["POST"]),
    Route("/webhooks", configure_webhooks, methods=["POST"]),
    Route("/webhooks/flush", flush_webhooks, methods=["POST"]),
    Route("/checkout/sessions/{id}/settle", settle_checkout, methods=["POST"]),
    Route("/balance", get_balance, methods=["GET"]),
    Route("/balance", set_balance, methods=["POST"]),
])
