"""The HTTP API (FastAPI). ``create_app()`` builds it from the one Settings object; ``tally api``
serves it with uvicorn. Every route but /healthz needs ``Authorization: Bearer <platform key>``
(the billing page also opens with a signed link). See docs/api.md."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable, Literal

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic.json_schema import models_json_schema
from sqlalchemy import Engine, create_engine
from starlette.responses import Response

from api.alerts import add_alert_routes
from api.credits import add_credit_routes
from api.analytics import add_analytics_routes
from api.auth import PlatformKeys
from api.billing_page import render_billing_page
from api.contracts import add_contract_routes
from api.errors import ApiError, install_error_handlers, invalid, unauthorized
from api.fast_path import server_timing
from api.routing import add_routing_routes
from api.schemas import (
    MAX_BATCH,
    Entitlement,
    ErrorBody,
    ExecutionBatchIn,
    ExecutionIn,
    Health,
    IngestResult,
    InvoiceList,
    UsageReport,
)
from billing.catalog import Catalog, load_catalog
from billing.errors import BillingError
from billing.periods import Period
from models.db import sqlalchemy_url
from models.schemas import InvoicePreview, InvoiceView
from models.settings import Settings, get_settings
from repositories.health import database_reachable
from services.accounts import BadLink, check_billing_token
from services.invoices import account_invoices, invoice_preview, invoice_view
from services.metering import MeteringService
from services.platforms import Platform
from services.errors import InvalidInput
from services.temporal import TemporalClient, connect

MAX_BODY_BYTES = 8 * 1024 * 1024
ERRORS = {status: {"model": ErrorBody} for status in (401, 404, 422)}


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _period(text: str | None, field: str = "period") -> Period | None:
    if text is None:
        return None
    try:
        return Period.parse(text)
    except BillingError as err:
        raise invalid(field, err.message) from None


def _instant(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(field, f"{text!r} is not an ISO 8601 timestamp") from None
    if ts.tzinfo is None:
        raise invalid(field, f"{text!r} has no time zone (add Z or +00:00)")
    try:
        return ts.astimezone(timezone.utc)
    except OverflowError:
        raise invalid(field, f"{text!r} is out of range") from None


def batch_items(body: bytes) -> list:
    """The items of a ``POST /v1/executions`` body (one execution or ``{"executions": [...]}``)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ApiError(400, "invalid_json", f"body: not valid JSON ({err.msg})", field="body") from None
    if isinstance(doc, dict) and "executions" in doc:
        items = doc["executions"]
        if not isinstance(items, list):
            raise invalid("executions", "must be a list of execution objects")
        if len(items) > MAX_BATCH:
            raise ApiError(413, "too_large", f"executions: at most {MAX_BATCH:,} per request, got {len(items):,}; "
                           "split the batch", field="executions")
        return items
    if isinstance(doc, dict):
        return [doc]
    raise invalid("body", 'must be one execution object or {"executions": [...]}')


def api_engine(url: str, pool_size: int = 10, max_overflow: int = 10) -> Engine:
    """The API's connection pool (per process; TALLY_API_DB_POOL_SIZE / _MAX_OVERFLOW). No pre-ping
    (a round trip before every request): a connection the server dropped fails one query, is
    discarded, and the service retries once on a new one."""
    return create_engine(sqlalchemy_url(url), pool_size=pool_size, max_overflow=max_overflow,
                         pool_pre_ping=False, pool_recycle=1800, pool_use_lifo=True)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None, catalog: Catalog | None = None,
               clock: Callable[[], datetime] | None = None, temporal: TemporalClient | None = None,
               ingest_processes: int = 0, entitlement_view_ms: int = 0) -> FastAPI:
    """``ingest_processes``: record ``POST /v1/executions`` batches in that many child processes of their
    own (``api/ingest_process.py``; ``tally api`` passes ``TALLY_API_INGEST_PROCESSES``), or in this
    process's threads (0: tests that inject an engine or a catalog). ``entitlement_view_ms``: answer
    entitlement checks from an in-memory view refreshed that often (``services/entitlement_view.py``;
    ``tally api`` passes ``TALLY_API_ENTITLEMENT_VIEW_MS``), or read Postgres in every check (0)."""
    settings = settings or get_settings()
    settings.check_production()
    engine = engine or api_engine(settings.effective_database_url(), settings.api_db_pool_size,
                                  settings.api_db_max_overflow)
    catalog = catalog or load_catalog(settings.catalog_path)
    rate_exact = None
    if entitlement_view_ms and ingest_processes:  # `tally api`: the view's exact ratings in a process of their own
        from services.entitlement_view import ExactRater

        rate_exact = ExactRater(settings.effective_database_url(),
                                str(settings.catalog_path) if settings.catalog_path else None,
                                nice=settings.api_ingest_nice)
    service = MeteringService(engine, catalog, clock, ingest_concurrency=settings.api_ingest_concurrency,
                              grace_hours=settings.late_usage_grace_hours, entitlement_view_ms=entitlement_view_ms,
                              rate_exact=rate_exact)
    keys = PlatformKeys(engine)
    temporal_client = temporal or (lambda: connect(settings))
    secret = settings.effective_api_secret()
    bearer = HTTPBearer(auto_error=False, description="A platform API key (`tally platforms create NAME`).")

    app = FastAPI(
        title="Tally metering API",
        version="1.0",
        description="Record executions, check entitlements, read live usage and invoices. See docs/api.md.",
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.keys = keys
    ingest = alerts = None
    if ingest_processes:
        from api.ingest_process import AlertsProcess, IngestProcesses

        if settings.alerts_on_ingest:  # one evaluator for all the batch recorders (api/ingest_process.py)
            alerts = AlertsProcess(settings.effective_database_url(), settings.catalog_path,
                                   nice=settings.api_ingest_nice)
            app.router.on_startup.append(alerts.start)
        ingest = IngestProcesses(settings.effective_database_url(), settings.catalog_path, ingest_processes,
                                 concurrency=settings.api_ingest_concurrency,
                                 grace_hours=settings.late_usage_grace_hours, nice=settings.api_ingest_nice,
                                 group=settings.api_ingest_group, observer=alerts.submit if alerts else None)
        app.router.on_startup.append(ingest.start)
        app.router.on_shutdown.append(ingest.close)
        if alerts is not None:
            app.router.on_shutdown.append(alerts.close)
    app.state.ingest = ingest
    app.state.alerts = alerts
    app.router.on_startup.append(service.start)
    app.router.on_shutdown.append(service.close)
    if rate_exact is not None:
        app.router.on_shutdown.append(rate_exact.close)
    install_error_handlers(app)

    async def platform(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Platform:
        if creds is None:
            raise unauthorized("Authorization: missing; send `Authorization: Bearer <platform API key>`")
        found = keys.cached(creds.credentials) or await run_in_threadpool(keys.resolve, creds.credentials)
        if found is None:
            raise unauthorized("Authorization: unknown API key")
        return found

    def sync_platform(creds: HTTPAuthorizationCredentials | None) -> Platform:
        if creds is None:
            raise unauthorized("Authorization: missing; send `Authorization: Bearer <platform API key>`")
        found = keys.resolve(creds.credentials)
        if found is None:
            raise unauthorized("Authorization: unknown API key")
        return found

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Response:
        """Liveness and database reachability; no authentication."""
        if not database_reachable(engine):
            return _json({"ok": False, "database": "unreachable"}, 503)
        return _json({"ok": True, "database": "ok"})

    @app.post("/v1/executions", response_model=IngestResult, tags=["executions"],
              responses={**ERRORS, 400: {"model": ErrorBody}, 413: {"model": ErrorBody}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "anyOf": [{"$ref": "#/components/schemas/ExecutionIn"},
                            {"$ref": "#/components/schemas/ExecutionBatchIn"}]}}}}})
    async def record_executions(request: Request, who: Platform = Depends(platform)) -> Response:
        """Record one execution, or a batch of up to 1,000 (`{"executions": [...]}`).

        Idempotent by `event_id`: a replay answers `duplicate`. Each item is validated on its own
        (the same rules as `tally usage ingest`); bad items are `rejected` with their errors while
        the good ones are recorded. A well-formed request answers 200 even when items are rejected.
        """
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"body: larger than {MAX_BODY_BYTES:,} bytes", field="body")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"body: larger than {MAX_BODY_BYTES:,} bytes", field="body")
        if ingest is not None:  # recorded in a process of its own (api/ingest_process.py)
            status, content, headers = await ingest.record(who.id, body, service.clock())
            return Response(content, status_code=status, media_type="application/json", headers=headers)
        return await run_in_threadpool(lambda: _json(service.record(who.id, batch_items(body))))

    @app.post("/v1/stripe/webhooks", tags=["stripe"],
              responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def stripe_webhook(request: Request) -> Response:
        """Stripe's signed webhook deliveries (checkout, invoices, Connect accounts...). Authenticated by
        the `Stripe-Signature` header (the endpoint secret, 300 s tolerance), not by a platform key.
        Each event is handled once however often Stripe delivers it; a bad signature writes nothing."""
        from services import webhooks

        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"body: larger than {MAX_BODY_BYTES:,} bytes", field="body")
        now = clock() if clock else datetime.now(timezone.utc)
        try:
            delivery = await run_in_threadpool(
                webhooks.receive, engine, body, request.headers.get("stripe-signature"),
                settings.effective_webhook_secret(), now)
        except webhooks.WebhooksNotConfigured as err:
            raise ApiError(503, "unavailable", err.message) from None
        except InvalidInput as err:
            raise invalid(err.field, err.reason, status=400) from None
        if delivery.after_commit:  # e.g. a grant's expiry workflow, started now rather than at the next poll
            await webhooks.run_after_commit(delivery, temporal_client, settings)
        return _json({"received": True, "id": delivery.event_id, "type": delivery.event_type,
                      "outcome": delivery.outcome})

    @app.get("/v1/accounts/{account_id}/entitlement", response_model=Entitlement, tags=["accounts"],
             responses=ERRORS)
    async def entitlement(account_id: str,
                          model: str = Query(max_length=200, description="Model code, e.g. claude-haiku"),
                          sandbox: bool = False, who: Platform = Depends(platform)) -> Response:
        """May this account start an execution of `model` now? With the reason, the included
        executions left and the month-to-date charges (what the close would bill so far)."""
        started = time.perf_counter()
        # Answered on the event loop when the entitlement view holds the account (memory only, about
        # a millisecond); otherwise in a thread, as it reads Postgres.
        answer, source = service.entitlement_from_view(who.id, account_id, model, sandbox), "view"
        if answer is None:
            answer, source = await run_in_threadpool(service.entitlement_from_database, who.id, account_id, model,
                                                     sandbox), "postgres"
        resp = _json(answer)
        resp.headers["Server-Timing"] = server_timing(started, source)
        return resp

    @app.get("/v1/accounts/{account_id}/usage", response_model=UsageReport, tags=["accounts"], responses=ERRORS)
    def usage(account_id: str, period: str | None = Query(None, description="YYYY-MM (UTC); default: this month"),
              group_by: Literal["agent", "model", "day", "skill"] = "model",
              who: Platform = Depends(platform)) -> Response:
        """Executions, tokens and charges of a period, grouped by agent, model, day (UTC) or skill."""
        return _json(service.usage(who.id, account_id, _period(period), group_by))

    @app.get("/v1/accounts/{account_id}/invoices", response_model=InvoiceList, tags=["invoices"], responses=ERRORS)
    def list_invoices(account_id: str, who: Platform = Depends(platform)) -> InvoiceList:
        """The account's invoices, newest first (each as `tally invoices show --json` prints it)."""
        service.owned_account(who.id, account_id)
        return InvoiceList(account_id=account_id, invoices=account_invoices(engine, account_id))

    @app.get("/v1/accounts/{account_id}/invoices/preview", response_model=InvoicePreview, tags=["invoices"],
             responses=ERRORS)
    def preview_invoice(account_id: str, at: str | None = Query(None, description="ISO 8601 instant; default now"),
                        who: Platform = Depends(platform)) -> InvoicePreview:
        """The open period's invoice as if the month closed at `at`, with a month-end projection."""
        service.owned_account(who.id, account_id)
        return invoice_preview(engine, account_id, _instant(at, "at") or service.clock(), catalog=catalog)

    @app.get("/v1/accounts/{account_id}/invoices/{period}", response_model=InvoiceView, tags=["invoices"],
             responses=ERRORS)
    def show_invoice(account_id: str, period: str, who: Platform = Depends(platform)) -> InvoiceView:
        """One invoice with its lines (the shape of `tally invoices show --json`)."""
        service.owned_account(who.id, account_id)
        return invoice_view(engine, account_id, str(_period(period)))

    @app.get("/accounts/{account_id}/billing", response_class=HTMLResponse, tags=["billing page"],
             responses=ERRORS)
    def billing_page(account_id: str, token: str | None = Query(None, description="From `tally accounts billing-link`"),
                     creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Response:
        """The account user's billing page (HTML). Opens with a signed link (`?token=`, valid 24 h)
        or with the platform's bearer key."""
        if token is not None:
            try:
                check_billing_token(secret, account_id, token)
            except BadLink as err:
                raise ApiError(401, "unauthorized", str(err), field="token") from None
        else:
            service.owned_account(sync_platform(creds).id, account_id)
        return HTMLResponse(render_billing_page(service.billing_page(account_id)), headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        })

    add_routing_routes(app, engine=engine, catalog=catalog, clock=clock, platform=platform)
    add_analytics_routes(app, engine=engine, catalog=catalog, clock=clock, platform=platform)
    add_alert_routes(app, engine=engine, catalog=catalog, clock=clock, platform=platform)
    add_credit_routes(app, engine=engine, catalog=catalog, settings=settings, clock=clock, metering=service,
                      platform=platform)

    def openapi() -> dict:
        """The generated document plus the execution schemas the raw-body route reads."""
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema([(ExecutionIn, "validation"), (ExecutionBatchIn, "validation")],
                                     ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    add_contract_routes(app, engine=engine, catalog=catalog, settings=settings, metering=service, platform=platform,
                        temporal=temporal_client)
    app.openapi = openapi
    return app
