"""One error shape for every failure: ``{"error": {"type", "message", "field"}}``.

Messages name the field and the reason (``"period: expected 'YYYY-MM' ..."``). Bad input is always a
4xx; a 500 means a bug, is logged with its traceback, and tells the caller nothing internal.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.errors import Conflict, InvalidInput, NotFound, ServiceError

log = logging.getLogger("tally.api")


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.field = field
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def invalid(field: str, reason: str, status: int = 422) -> ApiError:
    return ApiError(status, "invalid_request", f"{field}: {reason}", field=field)


def from_service(err: ServiceError) -> ApiError:
    """The services' domain errors as API errors: the one place they are mapped."""
    if isinstance(err, NotFound):
        return not_found(err.message)
    if isinstance(err, InvalidInput):
        return invalid(err.field, err.reason) if err.field else ApiError(422, "invalid_request", err.reason)
    if isinstance(err, Conflict):
        return ApiError(409, "conflict", err.message)
    return ApiError(500, "internal", "internal error; it has been logged")


def error_response(status: int, type: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": {"type": type, "message": message, "field": field}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


_HTTP_TYPES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type"}


def _validation_message(err: dict) -> tuple[str, str]:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header", "body")]
    field = ".".join(loc) or "request"
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err.get("type") == "missing":
        msg = "required"
    return field, f"{field}: {msg}"


DATABASE_RETRY_AFTER_SECONDS = 5


def database_unavailable(exc: BaseException) -> bool:
    """Is this the database being unreachable (down, restarting, a connection lost mid-request,
    the pool waiting in vain) rather than a bug?"""
    import psycopg
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)
    return isinstance(exc, psycopg.OperationalError)


class ContainErrors:
    """Pure ASGI middleware: an exception no handler answered becomes a response here, inside the
    server's own error middleware, so it is never re-raised to the server, which would close the
    keep-alive connection (the next request on it would be reset). The database being unreachable
    is a 503 with Retry-After, as /healthz answers; anything else a logged 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # too late for another response
                raise
            if database_unavailable(exc):
                log.warning("database unavailable on %s %s: %s", scope.get("method"), scope.get("path"),
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                response = error_response(503, "unavailable", "the database is unavailable; retry later",
                                          headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
            else:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                response = error_response(500, "internal", "internal error; it has been logged")
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(ContainErrors)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.type, exc.message, exc.field, exc.headers)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        err = from_service(exc)
        if err.status >= 500:
            log.error("operation failed on %s %s: %s", request.method, request.url.path, exc.message)
        return error_response(err.status, err.type, err.message, err.field, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        field, message = _validation_message(exc.errors()[0]) if exc.errors() else ("request", "invalid request")
        return error_response(422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint; see /openapi.json"
        return error_response(exc.status_code, _HTTP_TYPES.get(exc.status_code, "http_error"), message,
                              headers=getattr(exc, "headers", None))
