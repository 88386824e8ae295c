"""Model routing over HTTP: ``POST /v1/route``, the account's slider and BYOK providers, skills, and
quality-score imports. Every route needs the platform's bearer key (``platform``, from create_app)."""

from __future__ import annotations

import io
import time
from typing import Callable

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.responses import Response

from api.errors import ApiError
from api.schemas import ErrorBody
from billing.catalog import Catalog
from billing.numbers import plain
from services import routing
from services.platforms import Platform

MAX_ROUTE_BODY = 16 * 1024
MAX_SCORES_BODY = 8 * 1024 * 1024
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 422)}


class RouteIn(BaseModel):
    account_id: str = Field(min_length=1, max_length=64)
    skill_id: str = Field(min_length=1, max_length=128)
    expected_input_tokens: int | None = Field(default=None, ge=0, description="With expected_output_tokens: "
                                              "this execution's estimate; else the skill's recent median.")
    expected_output_tokens: int | None = Field(default=None, ge=0)
    default_model: str | None = Field(default=None, description="The model the skill would run on without "
                                      "routing (else the skill's recorded default): the savings report's baseline.")
    slider: float | str | None = Field(default=None, description="0 (cheapest) .. 1 (best quality); "
                                       "default: the account's.")


class CandidateOut(BaseModel):
    model: str
    provider: str | None
    score: str
    expected_cost: str = Field(description="User price of one execution at the token mix (exact, USD).")
    qualifies: bool


class TokenMixOut(BaseModel):
    input_tokens: int
    output_tokens: int
    source: str = Field(description="estimate | history | default")


class RouteOut(BaseModel):
    decision_id: int = Field(description="Send it back with the execution (routing_decision_id).")
    account_id: str
    skill_id: str
    model: str
    provider: str | None
    reason: str
    score: str
    expected_cost: str
    below_threshold: bool = Field(description="No model reached the threshold: the best-scoring one.")
    threshold: str
    base_threshold: str
    slider: str
    byok: bool
    token_mix: TokenMixOut
    default_model: str | None
    catalog_version: str
    alternatives: list[CandidateOut]


class RoutingSettingsIn(BaseModel):
    slider: float | str | None = Field(default=None, description="0 (cheapest) .. 1 (best quality)")
    byok_providers: list[str] | None = Field(default=None, description="Providers the account holds its own "
                                             "keys for (anthropic, openai, groq, openrouter, ollama); [] = none.")


class RoutingSettingsOut(BaseModel):
    account_id: str
    slider: str
    byok_providers: list[str]
    byok: bool


class SkillIn(BaseModel):
    category: str | None = Field(default=None, max_length=64)
    default_model: str | None = None


class SkillOut(BaseModel):
    skill_id: str
    category: str | None
    default_model: str | None


class ScoreRejection(BaseModel):
    line: int
    reason: str


class ScoreImportOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    rejections: list[ScoreRejection]


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _object(body: bytes) -> dict:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ApiError(400, "invalid_json", f"body: not valid JSON ({err.msg})", field="body") from None
    if not isinstance(doc, dict):
        raise ApiError(422, "invalid_request", "body: must be a JSON object", field="body")
    return doc


async def _body(request: Request, limit: int) -> bytes:
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "too_large", f"body: larger than {limit:,} bytes", field="body")
    return body


def _schema(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(mode="validation")}}}}


def add_routing_routes(app: FastAPI, *, engine, catalog: Catalog, clock: Callable | None,
                       platform: Callable) -> routing.RoutingService:
    """Add the routing routes to ``app``; ``platform`` is the bearer-key dependency of create_app."""
    service = routing.RoutingService(engine, catalog, clock)
    app.state.routing = service

    @app.post("/v1/route", response_model=RouteOut, tags=["routing"], responses=ERRORS, openapi_extra=_schema(RouteIn))
    async def route(request: Request, who: Platform = Depends(platform)) -> Response:
        """Which model should this execution of a skill run on? The cheapest model whose quality score
        reaches the threshold (75, raised by the account's slider), priced by the rate card at the
        skill's token mix; BYOK accounts: the best score among the providers they hold keys for. The
        decision is recorded: send `decision_id` and `model` back with the execution
        (`routing_decision_id`, `routed_model`)."""
        body = _object(await _body(request, MAX_ROUTE_BODY))
        started = time.perf_counter()
        resp = _json(await run_in_threadpool(service.route, who.id, body))
        resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return resp

    @app.get("/v1/accounts/{account_id}/routing", response_model=RoutingSettingsOut, tags=["routing"],
             responses=ERRORS)
    def get_settings(account_id: str, who: Platform = Depends(platform)) -> Response:
        """The account's quality slider and the providers it holds keys for (BYOK)."""
        return _json(routing.account_routing(engine, account_id, who.id))

    @app.put("/v1/accounts/{account_id}/routing", response_model=RoutingSettingsOut, tags=["routing"],
             responses=ERRORS, openapi_extra=_schema(RoutingSettingsIn))
    async def put_settings(account_id: str, request: Request, who: Platform = Depends(platform)) -> Response:
        """Set the account's slider and/or its BYOK providers (what is left out keeps its value). The
        platform reports the providers whose keys the user has stored; routes then choose among them."""
        doc = _object(await _body(request, MAX_ROUTE_BODY))
        unknown = sorted(set(doc) - {"slider", "byok_providers"})
        if unknown:
            raise ApiError(422, "invalid_request", f"{unknown[0]}: unknown field", field=unknown[0])
        return _json(await run_in_threadpool(
            lambda: routing.set_account_routing(engine, catalog, account_id, slider=doc.get("slider"),
                                                byok_providers=doc.get("byok_providers"), platform_id=who.id)))

    @app.put("/v1/skills/{skill_id}", response_model=SkillOut, tags=["routing"], responses=ERRORS,
             openapi_extra=_schema(SkillIn))
    async def put_skill(skill_id: str, request: Request, _who: Platform = Depends(platform)) -> Response:
        """A skill's category (usage analytics) and the model it runs on without routing (the savings
        report's baseline)."""
        doc = _object(await _body(request, MAX_ROUTE_BODY))
        return _json(await run_in_threadpool(
            lambda: routing.set_skill(engine, catalog, skill_id, category=doc.get("category"),
                                      default_model=doc.get("default_model"))))

    @app.post("/v1/routing/scores", response_model=ScoreImportOut, tags=["routing"], responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
    async def import_scores(request: Request, _who: Platform = Depends(platform)) -> Response:
        """Import quality scores of behavioural test runs: CSV with a header `skill,model,score,measured_at,
        suite_id`. Bad rows are rejected with their line and reason while the good ones are recorded;
        importing the same run again changes nothing; newer runs supersede older ones per skill and model."""
        body = await _body(request, MAX_SCORES_BODY)
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_request", "body: not UTF-8 text", field="body") from None
        report = await run_in_threadpool(routing.import_scores, engine, catalog, io.StringIO(text, newline=""),
                                         clock() if clock else None)
        return _json({"accepted": report.accepted, "duplicates": report.duplicates, "rejected": report.rejected,
                      "rejections": [{"line": r.line, "reason": r.reason} for r in report.rejections]})

    @app.get("/v1/routing/scores", tags=["routing"], responses=ERRORS)
    def current_scores(skill_id: str | None = Query(None, max_length=128),
                       _who: Platform = Depends(platform)) -> Response:
        """The quality score in force per skill and model (the newest run)."""
        rows = routing.scores_in_force(engine, skill_id)
        return _json({"scores": [{"skill_id": r.skill, "model": r.model, "score": plain(r.score),
                                  "measured_at": r.measured_at.isoformat(), "suite_id": r.suite_id}
                                 for r in rows]})

    return service

