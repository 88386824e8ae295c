"""Usage analytics over HTTP: the ops page (``GET /ops/usage``, HTML with server-rendered SVG charts)
and its figures as JSON (``GET /v1/analytics/usage``), over the calling platform's accounts, behind the
same bearer key as every other route."""

from __future__ import annotations

from typing import Callable

import orjson
from fastapi import Depends, FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from api.analytics_page import render_analytics_page
from api.schemas import ErrorBody
from billing.catalog import Catalog
from services.analytics import MAX_MONTHS, to_json, usage_analytics
from services.platforms import Platform

ERRORS = {status: {"model": ErrorBody} for status in (401, 422)}
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def add_analytics_routes(app: FastAPI, *, engine, catalog: Catalog, clock: Callable | None,
                         platform: Callable) -> None:
    def period_or_last(period: str | None) -> str:
        from datetime import datetime, timezone

        from billing.periods import Period

        return period or str(Period.of(clock() if clock else datetime.now(timezone.utc)).previous())

    @app.get("/v1/analytics/usage", tags=["analytics"], responses=ERRORS)
    async def usage_json(period: str | None = Query(None, description="YYYY-MM; default: last month"),
                         months: int = Query(3, ge=1, le=MAX_MONTHS), who: Platform = Depends(platform)) -> Response:
        """The seed's "data to collect" for the platform's accounts: executions per user (median, p95,
        p99, histogram), tokens per execution by skill category and model, model mix, BYOK adoption,
        the conversion funnel, churn by usage decile, cost, revenue and margin per tier."""
        data = await run_in_threadpool(usage_analytics, engine, catalog, period_or_last(period), months, who.id)
        return Response(orjson.dumps(to_json(data)), media_type="application/json")

    @app.get("/ops/usage", response_class=HTMLResponse, tags=["analytics"], responses=ERRORS)
    async def usage_page(period: str | None = Query(None, description="YYYY-MM; default: last month"),
                         months: int = Query(3, ge=1, le=MAX_MONTHS), who: Platform = Depends(platform)) -> Response:
        """The same figures as an HTML page with charts (SVG rendered on the server; nothing fetched)."""
        data = await run_in_threadpool(usage_analytics, engine, catalog, period_or_last(period), months, who.id)
        html = await run_in_threadpool(render_analytics_page, data, f"accounts of platform {who.name}")
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                           "Content-Security-Policy": PAGE_POLICY})
