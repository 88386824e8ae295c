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


def install_error_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; it has been logged")
