"""The credits routes of the metering API: buy a package (``POST /v1/accounts/{id}/credits/purchases``,
a Stripe Checkout Session) and read the balances, grants and consumption
(``GET /v1/accounts/{id}/credits``). ``add_credit_routes`` is called once from ``create_app``."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Callable

import orjson
from fastapi import Depends, FastAPI, Header
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from starlette.responses import Response

from api.schemas import ErrorBody
from billing.catalog import Catalog
from models.settings import Settings
from services import credits as service

ERRORS = {status: {"model": ErrorBody} for status in (401, 404, 409, 422, 502)}


class PurchaseIn(BaseModel):
    package: str = Field(min_length=1, max_length=64, description="A catalog package: starter, growth, scale, prepaid-50.")


class PurchaseOut(BaseModel):
    purchase_id: str
    account_id: str
    package: str
    unit: str
    amount: str
    price: str
    status: str = Field(description="`pending` until Stripe confirms the payment; then `paid` (granted), "
                                    "`failed` or `expired`.")
    checkout_session_id: str
    checkout_url: str | None = Field(description="Send the buyer here (Stripe Checkout).")


class CreditsView(BaseModel):
    account_id: str
    credits_only: bool
    balances: dict = Field(description="Per unit (`credits`, `usd`): the ledger `balance` and what is `spendable` now.")
    grants: list[dict]
    purchases: list[dict]
    consumption_per_day: list[dict]
    period: str


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def add_credit_routes(app: FastAPI, *, engine: Engine, catalog: Catalog, settings: Settings,
                      clock: Callable[[], datetime] | None, metering, platform) -> None:
    gateway = {}

    def stripe():
        if "gw" not in gateway:
            from gateways.stripe import StripeGateway

            gateway["gw"] = StripeGateway(settings)
        return gateway["gw"]

    def now() -> datetime:
        return clock() if clock else datetime.now(timezone.utc)

    @app.post("/v1/accounts/{account_id}/credits/purchases", response_model=PurchaseOut, status_code=201,
              tags=["credits"], responses=ERRORS)
    async def buy(account_id: str, body: PurchaseIn, who=Depends(platform),
                  idempotency_key: str | None = Header(None, max_length=200)) -> Response:
        """Start buying a credit package: a Stripe Checkout Session for the buyer to pay on. The purchase
        is `pending`; the credits are granted once, when Stripe's signed webhook (or Tally's poll) says
        it was paid. Send an `Idempotency-Key` header to retry the same purchase safely."""
        await run_in_threadpool(metering.owned_account, who.id, account_id)
        purchase_id = None
        if idempotency_key:
            digest = hashlib.sha256(f"{who.id}:{account_id}:{idempotency_key}".encode()).hexdigest()[:20]
            purchase_id = f"cp_{digest}"
        from api.errors import ApiError
        from gateways.stripe import StripeError

        try:
            p = await run_in_threadpool(lambda: service.buy(
                engine, catalog, stripe(), account_id=account_id, package=body.package, now=now(),
                success_url=settings.credits_checkout_success_url, cancel_url=settings.credits_checkout_cancel_url,
                purchase_id=purchase_id))
        except StripeError as err:  # the purchase stays pending; the same Idempotency-Key retries it
            raise ApiError(502, "stripe_unavailable", f"Stripe: {err}") from None
        return _json({"purchase_id": p.purchase_id, "account_id": p.account_id, "package": p.package, "unit": p.unit,
                      "amount": service.fmt(p.unit, p.amount), "price": str(p.price), "status": p.status,
                      "checkout_session_id": p.checkout_session_id, "checkout_url": p.checkout_url}, 201)

    @app.get("/v1/accounts/{account_id}/credits", response_model=CreditsView, tags=["credits"], responses=ERRORS)
    def credits(account_id: str, who=Depends(platform)) -> Response:
        """Balances per unit (sums of the ledger), every grant with its remainder and expiry, the
        purchases, and this month's consumption per day."""
        metering.owned_account(who.id, account_id)
        return _json(service.credits_view(engine, account_id, now()))
