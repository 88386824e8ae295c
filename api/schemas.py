"""The API's JSON shapes (documented in /openapi.json). Money is a decimal string ("12.34")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from billing.entitlements import Reason
from models.schemas import InvoiceView

MAX_BATCH = 1000


class ExecutionIn(BaseModel):
    """One execution, exactly the fields of a JSON Lines ingest line."""

    event_id: str = Field(min_length=1, max_length=128, description="Unique id of the event (idempotency key).")
    account_id: str = Field(min_length=1, max_length=64)
    agent_id: str = Field(min_length=1, max_length=128)
    skill_id: str | None = Field(default=None, max_length=128)
    model: str = Field(min_length=1, max_length=64, description="A model code of the catalog, e.g. claude-haiku.")
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    byok: bool = Field(default=False, description="Run on the user's own provider key.")
    sandbox: bool = Field(default=False, description="A sandbox try: never counts against the quota.")
    cost_usd: str | float | None = Field(default=None, description="Our LLM cost of the execution (decimal).")
    occurred_at: datetime = Field(description="ISO 8601 with a time zone, at most 5 minutes in the future.")
    routed_model: str | None = Field(default=None, max_length=64,
                                     description="The model POST /v1/route chose (with routing_decision_id).")
    routing_decision_id: int | None = Field(default=None, ge=1, description="The id POST /v1/route answered.")
    requested_model: str | None = Field(
        default=None, max_length=64,
        description="The model the platform asked for, when the execution ran on another one (a fallback).")


class ExecutionBatchIn(BaseModel):
    executions: list[ExecutionIn] = Field(max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} executions.")


class ItemError(BaseModel):
    field: str | None
    reason: str


class ItemResult(BaseModel):
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    errors: list[ItemError]


class IngestResult(BaseModel):
    results: list[ItemResult] = Field(description="One per item, in request order.")
    accepted: int
    duplicates: int
    rejected: int


class Entitlement(BaseModel):
    account_id: str
    allowed: bool
    reason: Reason
    plan: str
    model: str
    sandbox: bool
    included: int = Field(description="Included executions of the period (pooled over plan changes).")
    used: int = Field(description="Non-sandbox executions recorded in the period so far.")
    remaining_included: int
    overage_opt_in: bool
    month_to_date_charges: str | None = Field(
        description="What the close would bill for this period's usage so far (null: billed by contract)."
    )
    period: str


class UsageGroup(BaseModel):
    key: str | None
    executions: int = Field(description="Non-sandbox executions (counted and billed).")
    sandbox_executions: int
    byok_executions: int
    input_tokens: int
    output_tokens: int
    charges: str | None = Field(description="Only for group_by=model: the model's usage lines; else null.")


class UsageTotals(BaseModel):
    executions: int
    sandbox_executions: int
    byok_executions: int
    input_tokens: int
    output_tokens: int
    charges: str | None = Field(description="The period's charges so far (fees included); null if not rated.")


class UsageReport(BaseModel):
    account_id: str
    period: str
    group_by: Literal["agent", "model", "day", "skill"]
    groups: list[UsageGroup]
    totals: UsageTotals


class InvoiceList(BaseModel):
    account_id: str
    invoices: list[InvoiceView]


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    ok: bool
    database: str
