"""The alerts routes of the metering API: the running-cost verdict (``POST
/v1/executions/{execution_id}/cost``), the account's monthly budget and the executions killed.
``add_alert_routes`` is called once from ``create_app``."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Callable

import orjson
from fastapi import Depends, FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from starlette.responses import Response

from api.schemas import ErrorBody
from billing.catalog import Catalog
from services.alerts import BudgetService, CostVerdicts, account_kills, evaluator

ERRORS = {status: {"model": ErrorBody} for status in (401, 404, 422)}


class CostReport(BaseModel):
    """An in-flight execution's running cost, as the platform measures it (the same measure as
    ``cost_usd`` of recorded executions)."""

    account_id: str = Field(min_length=1, max_length=64)
    agent_id: str = Field(min_length=1, max_length=128)
    cost_usd: str | float | int = Field(description="Running cost so far, a decimal amount, e.g. \"0.0412\".")


class CostVerdict(BaseModel):
    execution_id: str
    account_id: str
    agent_id: str
    verdict: str = Field(description="`continue`, or `kill`: stop the execution now.")
    reason: str
    cost: str
    baseline: str | None = Field(description="Median cost of the agent's recent executions (null: too little history).")
    threshold: str | None = Field(description="multiplier x baseline: the cost must pass it to kill.")
    multiplier: str
    history_size: int
    min_history: int | None = None
    killed_at: str | None = Field(description="When the kill was recorded (the first one for this execution).")


class BudgetIn(BaseModel):
    amount: str | int | None = Field(description="Monthly budget in USD, e.g. \"250.00\"; null: the plan's default.")


class Threshold(BaseModel):
    percent: int
    crossed_at: str | None


class BudgetView(BaseModel):
    account_id: str
    period: str
    budget: str | None
    source: str = Field(description="`set` by the user, the `plan` default, or `none`.")
    plan_default: str | None
    charges: str | None = Field(description="This month's usage charges so far (the plan's fee left out).")
    percent_used: str | None
    thresholds: list[Threshold]


class KillList(BaseModel):
    account_id: str
    kills: list[dict]


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def add_alert_routes(app: FastAPI, *, engine: Engine, catalog: Catalog, clock: Callable[[], datetime] | None,
                     platform) -> None:
    verdicts = CostVerdicts(engine, catalog, clock)
    budgets = BudgetService(engine, catalog, clock)
    # The usage observer of this API's batches (same engine and catalog) evaluates in a background
    # thread: a request never waits for an evaluation (services/alerts.py, EvaluationQueue).
    evaluator(engine, catalog).queue.background = True

    @app.post("/v1/executions/{execution_id}/cost", response_model=CostVerdict, tags=["executions"],
              responses=ERRORS)
    async def report_cost(execution_id: str, body: CostReport, who=Depends(platform)) -> Response:
        """Report an in-flight execution's running cost; the answer is `continue` or `kill`.

        `kill` once the cost passes 3x the agent's usual cost per execution (the median of its last 100
        recorded executions, read at most 2 s earlier; the rule acts from 20). A kill is recorded once
        per execution with its evidence, shown on the account's billing page and e-mailed to the user.
        """
        started = time.perf_counter()
        args = (who.id, execution_id, body.account_id, body.agent_id, body.cost_usd)
        # The agent's history read in the last 2 s: answered here, no thread, no database.
        answer = verdicts.cached_verdict(*args) or await run_in_threadpool(verdicts.verdict, *args)
        resp = _json(answer)
        resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return resp

    @app.get("/v1/accounts/{account_id}/budget", response_model=BudgetView, tags=["accounts"], responses=ERRORS)
    def get_budget(account_id: str, who=Depends(platform)) -> Response:
        """The monthly budget (set, or the plan's default), this month's usage charges against it and
        which of the 50/80/100% alerts went out."""
        return _json(budgets.budget(account_id, who.id))

    @app.put("/v1/accounts/{account_id}/budget", response_model=BudgetView, tags=["accounts"], responses=ERRORS)
    async def put_budget(account_id: str, body: BudgetIn, who=Depends(platform)) -> Response:
        """Set the monthly budget (`{"amount": "250.00"}`), or go back to the plan's default
        (`{"amount": null}`). Each threshold is e-mailed at most once a month, even if the budget
        changes; a lower budget can cross the ones not yet sent."""
        return _json(await run_in_threadpool(budgets.set_budget, account_id, body.amount, who.id))

    @app.get("/v1/accounts/{account_id}/kills", response_model=KillList, tags=["accounts"], responses=ERRORS)
    def kills(account_id: str, limit: int = Query(100, ge=1, le=1000), who=Depends(platform)) -> Response:
        """Executions the loop rule killed on this account, newest first, with the evidence."""
        return _json({"account_id": account_id, "kills": account_kills(engine, account_id, who.id, limit)})
