"""The path every Stripe API request takes, in Stripe's order:

body (413) -> authentication (401) -> routing (404, in the app) -> parameter decoding (400) -> unknown
parameters (400 "Received unknown parameter: <name>", against the operation's ``params``) ->
``rate_limit_429`` fault or the write rate cap (core/ratecap.py) -> idempotency (replay, 400
``idempotency_error``, 409 in flight) -> execution (``delay``, ``error_500``, or the handler under the
state lock, then ``error_500_after_commit``) -> ``drop_after_commit``. Both 429s are the spec's
``invalid_request_error`` with ``code: rate_limit``.

Nothing before the idempotency check is saved under the key, nor a parameter that fails the handler's
validation (Stripe saves a result only once the endpoint starts executing: a corrected retry with the
same key runs); everything else executed is (4xx and 500 too, a 500 with ``Stripe-Should-Retry: false``).
Every request, answered or dropped, is recorded in the request log with its route template.
"""

from __future__ import annotations

import asyncio
import base64
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .connection import DropConnection
from .core import faults, idempotency, requestlog
from .core.errors import StripeError
from .core.forms import decode_form
from .core.ids import new_id
from .core.params import refuse_unknown
from .core.resource import ApiRequest, Operation
from .core.state import EmulatorState
from .responses import dumps, error_response, json_response

log = logging.getLogger("stripe_emulator")

MAX_BODY = 10 * 1024 * 1024


async def read_body(request: Request) -> bytes:
    """The request body (Content-Length or chunked), refused with 413 beyond ``MAX_BODY``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise StripeError(413, "Request body too large.")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise StripeError(413, "Request body too large.")
        chunks.append(chunk)
    return b"".join(chunks)


def api_key_of(request: Request) -> str | None:
    """``Authorization: Bearer sk_test_...`` (or Basic with the key as user); None for anything else."""
    scheme, _, cred = request.headers.get("authorization", "").partition(" ")
    key = None
    if scheme.lower() == "bearer":
        key = cred.strip()
    elif scheme.lower() == "basic":
        try:
            key = base64.b64decode(cred.strip()).decode("utf-8").split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            key = None
    return key if key and key.startswith("sk_test_") else None


def _unauthenticated(request: Request) -> StripeError:
    if not request.headers.get("authorization"):
        msg = "You did not provide an API key. Provide it in the Authorization header as 'Bearer sk_test_...'."
    else:
        msg = "Invalid API Key provided: the emulator accepts any key starting with sk_test_."
    # The spec's error types are api_error, card_error, idempotency_error and invalid_request_error:
    # Stripe answers a bad key with a 401 invalid_request_error (the SDK raises AuthenticationError).
    return StripeError(401, msg, type="invalid_request_error")


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator.state


async def unrouted(request: Request, template: str) -> Response:
    """A Stripe request that matched no operation: 401 without a key, else Stripe's 404."""
    st, method, path = _state(request), request.method, request.scope["path"]
    idem_key = request.headers.get("idempotency-key") if method == "POST" else None
    if api_key_of(request) is None:
        err = _unauthenticated(request)
    else:
        err = StripeError(404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                               "or we can help at https://support.stripe.com/.")
    requestlog.record(st, method, path, template, idem_key, err.status, False, False)
    return error_response(err)


def operation_route(op: Operation) -> Route:
    """The Starlette route of one resource operation."""

    async def endpoint(request: Request):
        return await _serve(request, op)

    endpoint.__name__ = op.handler.__name__
    return Route(op.path, endpoint, methods=[op.method])


async def _serve(request: Request, op: Operation):
    st, method, path = _state(request), request.method, request.scope["path"]
    idem_key = request.headers.get("idempotency-key") if method == "POST" else None

    params = None

    def finish(resp, status: int, replayed=False, executed=False, fault=None):
        requestlog.record(st, method, path, op.path, idem_key, status, replayed, executed, fault, params)
        return resp

    try:
        body = await read_body(request)
    except StripeError as err:
        return finish(error_response(err, {"Connection": "close"}), err.status)
    # 1. authentication
    api_key = api_key_of(request)
    if api_key is None:
        err = _unauthenticated(request)
        return finish(error_response(err), err.status)
    # 2. parameters (routing is done): failures here are never saved under the key
    query = request.scope["query_string"].decode("latin-1")
    try:
        text = body.decode("utf-8") if method == "POST" else query
        if method == "POST" and query:
            text = f"{query}&{text}" if text else query
        params = decode_form(text)
    except (StripeError, UnicodeDecodeError) as exc:
        err = exc if isinstance(exc, StripeError) else StripeError(400, "Request body is not valid UTF-8.")
        return finish(error_response(err), err.status)
    try:
        refuse_unknown(params, op.params)  # Stripe's "Received unknown parameter": never saved either
    except StripeError as err:
        return finish(error_response(err), err.status)
    # 3. rate limiting: nothing executed, nothing saved
    if st.faults and (limited := faults.take(st, method, path, ("rate_limit_429",))):
        ra = limited["rate_limit_429"]["retry_after"]
        err = StripeError(429, "Too many requests hit the API too quickly. (emulator fault injection)",
                          type="invalid_request_error", code="rate_limit",
                          headers={"Retry-After": str(int(ra)) if float(ra).is_integer() else str(ra)})
        return finish(error_response(err), 429, fault="rate_limit_429")
    cap = getattr(request.app.state.emulator, "write_cap", None)  # core/ratecap.py, off unless set
    if cap is not None and method == "POST" and (wait := cap.admit()):
        err = StripeError(429, "Too many requests hit the API too quickly. (emulator write rate cap)",
                          type="invalid_request_error", code="rate_limit",
                          headers={"Retry-After": f"{max(wait, 0.01):.2f}"})
        return finish(error_response(err), 429, fault="write_rate_cap")
    # 4. idempotency
    claimed = False
    if idem_key:
        if len(idem_key) > idempotency.MAX_KEY_LENGTH:
            return finish(error_response(idempotency.key_too_long()), 400)
        fp = idempotency.fingerprint(method, path, params)
        outcome, rec = idempotency.begin(st, api_key, idem_key, fp)
        if outcome == idempotency.REPLAY:
            resp = json_response(rec["status"], rec["body"].encode("utf-8"), {
                **rec.get("headers", {}), "Idempotent-Replayed": "true",
                "Original-Request": rec["request_id"] or "", "Idempotency-Key": idem_key})
            return finish(resp, rec["status"], replayed=True)
        if outcome == idempotency.MISMATCH:
            return finish(error_response(idempotency.key_reused(idem_key, rec)), 400)
        if outcome == idempotency.IN_FLIGHT:
            return finish(error_response(idempotency.key_in_use(idem_key)), 409)
        claimed = True
    # 5. execution
    request_id = new_id("req")
    fault_name = None
    try:
        pending = faults.take(st, method, path, faults.EXECUTION_FAULTS) if st.faults else {}
        if "delay" in pending:
            fault_name = "delay"
            await asyncio.sleep(max(0.0, pending["delay"]["seconds"]))
        saved = True
        if "error_500" in pending:
            fault_name = "error_500"
            status, body_out, headers = _stripe_error(_server_error("error_500"))
        else:
            req = ApiRequest(method, path, params, dict(request.path_params), api_key)
            status, body_out, headers, saved = _execute(st, op, req)
            if "error_500_after_commit" in pending and status < 400:
                fault_name = "error_500_after_commit"  # committed, and yet a 500 is saved and answered
                status, body_out, headers = _stripe_error(_server_error("error_500_after_commit"))
        if claimed and saved:
            idempotency.finish(st, api_key, idem_key, status, body_out, request_id, headers)
            claimed = False
    finally:
        if claimed:  # failed or cancelled before there was a response to save: release the key
            idempotency.release(st, api_key, idem_key)
    if "drop_after_commit" in pending:
        return finish(DropConnection(), status, executed=True, fault="drop_after_commit")
    headers["Request-Id"] = request_id
    if idem_key:
        headers["Idempotency-Key"] = idem_key
    return finish(json_response(status, body_out, headers), status, executed=True, fault=fault_name)


def _stripe_error(err: StripeError) -> tuple[int, bytes, dict]:
    return err.status, dumps(err.body()), dict(err.headers)


def _server_error(fault: str | None = None) -> StripeError:
    """A 500 ``api_error``. It is saved under the Idempotency-Key, so a retry with the key gets it
    again: ``Stripe-Should-Retry: false`` tells the SDK not to (it reads the header before retrying)."""
    why = f" (emulator fault injection: {fault})" if fault else ""
    return StripeError(500, f"An unknown error occurred{why}.", type="api_error",
                       headers={"Stripe-Should-Retry": "false"})


def _execute(st: EmulatorState, op: Operation, req: ApiRequest) -> tuple[int, bytes, dict, bool]:
    """Run the handler under the state lock: (status, JSON body, extra headers, saved). ``saved`` is
    False for a parameter that failed validation: the endpoint never started executing."""
    with st.lock:
        saved = True
        try:
            status, body, headers = 200, dumps(op.handler(st, req)), {}
        except StripeError as err:
            status, body, headers = _stripe_error(err)
            saved = not err.validation
        except Exception:
            log.exception("handler error for %s %s", req.method, req.path)
            status, body, headers = _stripe_error(_server_error())
        if req.method != "GET":
            st.dirty = True
        return status, body, headers, saved
