"""The entitlement check's fast path: ``GET /v1/accounts/{id}/entitlement`` answered from the entitlement
view before the framework sees the request (issue 15).

Why. A check answered from the view (``services/entitlement_view.py``) spends about a quarter of its
serving process's CPU in its handler; the rest went to the framework around it: the middleware stack,
routing, resolving the ``platform`` dependency and the query parameters, the response objects. Measured
with ``tally api`` on this machine (one worker, sequential checks of held accounts): ~1.0 ms of the
serving process's CPU per check, of which the handler 0.26 ms. Under ingest that CPU is what a check
waits for a core to get, and the checks' own CPU is taken from the batches on the same cores.

What it answers. Only the plain case, and exactly what the route answers (the same body, status and
headers): a GET of that path with no root path, a bearer key this process resolved in the last
``KEY_CACHE_SECONDS`` (``PlatformKeys.cached``: no database), ``model`` given once and at most 200
characters, ``sandbox`` absent or one of ``true``, ``false``, ``1``, ``0`` given once, and an account the
view can answer for (``MeteringService.entitlement_from_view``). Anything else — a missing or unknown
key, a parameter the framework must validate or reject, an account the view does not hold, any error —
goes to the application unchanged, which answers it as before (and serves it from the view itself when
it can). The route stays the documented one (OpenAPI, validation errors).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

import orjson

PREFIX = "/v1/accounts/"
SUFFIX = "/entitlement"
MODEL_MAX = 200  # the route's Query(max_length=200)
_SANDBOX = {"true": True, "false": False, "1": True, "0": False}
_JSON = (b"content-type", b"application/json")


def server_timing(started: float, source: str) -> str:
    """The check's ``Server-Timing`` value: the time since ``started`` (``time.perf_counter``) in the
    handler, and where the answer came from (``view`` or ``postgres``)."""
    return f"app;dur={(time.perf_counter() - started) * 1000:.2f};desc={source}"


class EntitlementFastPath:
    """Pure ASGI wrapper around the application (``api.server.app_factory``). ``app.state`` must hold the
    metering ``service`` and the platform ``keys`` (``api.app.create_app`` puts them there)."""

    def __init__(self, app):
        self.app = app
        self.service = app.state.service
        self.keys = app.state.keys
        self.answered = 0  # checks answered here (the rest went to the application)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            answered = self.answer(scope)
            if answered is not None:
                body, timing = answered
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode()), _JSON,
                                        (b"server-timing", timing)]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def answer(self, scope) -> tuple[bytes, bytes] | None:
        """(body, Server-Timing value) of the check ``scope`` asks for, when it is the plain case the
        view answers; None: the application answers it."""
        path = scope["path"]
        if (scope["method"] != "GET" or not path.startswith(PREFIX) or not path.endswith(SUFFIX)
                or scope.get("root_path")):
            return None
        account_id = path[len(PREFIX):-len(SUFFIX)]
        if not account_id or "/" in account_id:
            return None
        platform = self._platform(scope["headers"])
        if platform is None:
            return None
        model = sandbox = None
        for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
            if name == "model":
                if model is not None:
                    return None
                model = value
            elif name == "sandbox":
                if sandbox is not None:
                    return None
                sandbox = _SANDBOX.get(value)
                if sandbox is None:
                    return None
        if model is None or len(model) > MODEL_MAX:
            return None
        started = time.perf_counter()
        try:
            answer = self.service.entitlement_from_view(platform.id, account_id, model, bool(sandbox))
        except Exception:  # noqa: BLE001 - the application answers it (and its error) the documented way
            return None
        if answer is None:
            return None
        body = orjson.dumps(answer)
        self.answered += 1
        return body, server_timing(started, "view").encode()

    def _platform(self, headers):
        authorization = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
                break  # the first one, as the framework reads it
        if authorization is None:
            return None
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            return None
        return self.keys.cached(credentials)
