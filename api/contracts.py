"""The contract routes of the HTTP API (`tally contracts` over HTTP): a platform creates, reads and
amends the committed-use contracts of its own accounts. Added to the app by ``add_contract_routes``."""

from __future__ import annotations

from datetime import date
from typing import Callable, Literal

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from temporalio.service import RPCError

from api.errors import ApiError
from billing.catalog import Catalog
from models.schemas import ContractView
from models.settings import Settings
from services import contracts as service
from services.errors import NotFound
from services.metering import MeteringService
from services.temporal import TemporalClient, TemporalUnreachable

class ContractIn(BaseModel):
    commitment: int = Field(description="Executions committed per month (at least the catalog's minimum, 100,000).")
    start: date = Field(description="First day of the term (00:00 UTC), YYYY-MM-DD.")
    months: int = Field(description="Length of the term (at least 12).")


class AmendmentIn(BaseModel):
    kind: Literal["raise_commitment", "extend_term", "terminate"]
    commitment: int | None = Field(None, description="raise_commitment: the new monthly commitment (higher).")
    extra_months: int | None = Field(None, description="extend_term: months to add.")


class ContractList(BaseModel):
    account_id: str
    contracts: list[ContractView]


def add_contract_routes(app: FastAPI, *, engine: Engine, catalog: Catalog, settings: Settings,
                        metering: MeteringService, platform: Callable, temporal: TemporalClient) -> None:
    def owned(account_id: str, who) -> None:
        metering.owned_account(who.id, account_id)

    def of_account(account_id: str, contract_id: str) -> ContractView:
        view = service.contract_view(engine, catalog, contract_id)
        if view.account_id != account_id:
            raise NotFound(f"no contract {contract_id!r} for account {account_id!r}")
        return view

    @app.post("/v1/accounts/{account_id}/contracts", response_model=ContractView, status_code=201,
              tags=["contracts"])
    async def create_contract(account_id: str, body: ContractIn, who=Depends(platform)) -> ContractView:
        """Create a committed-use contract for one of the platform's accounts (it becomes enterprise on
        the start day) and start its term workflow. The discount comes from the catalog's tier table.
        The same request twice returns the same contract. Refused (422) with the field and the rule:
        under the minimum commitment or term, overlapping another contract, a start in a closed period."""
        await run_in_threadpool(owned, account_id, who)
        created = await run_in_threadpool(lambda: service.create_contract(
            engine, catalog, account_id=account_id, commitment=body.commitment, start=body.start,
            months=body.months))
        try:
            await service.start_term(temporal, settings, created)
        except (TemporalUnreachable, RPCError) as err:
            raise ApiError(503, "unavailable", f"contract {created.contract_id} is stored but its term workflow "
                                               f"could not be started ({err}); send the same request again") from None
        return await run_in_threadpool(service.contract_view, engine, catalog, created.contract_id)

    @app.get("/v1/accounts/{account_id}/contracts", response_model=ContractList, tags=["contracts"])
    def list_contracts(account_id: str, who=Depends(platform)) -> ContractList:
        """The account's contracts, oldest first."""
        owned(account_id, who)
        return ContractList(account_id=account_id, contracts=service.account_contracts(engine, catalog, account_id))

    @app.get("/v1/accounts/{account_id}/contracts/{contract_id}", response_model=ContractView, tags=["contracts"])
    def show_contract(account_id: str, contract_id: str, who=Depends(platform)) -> ContractView:
        """One contract: terms, amendments, each month's commitment and its recorded utilisation."""
        owned(account_id, who)
        return of_account(account_id, contract_id)

    @app.post("/v1/accounts/{account_id}/contracts/{contract_id}/amendments", response_model=ContractView,
              tags=["contracts"])
    async def amend_contract(account_id: str, contract_id: str, body: AmendmentIn,
                             who=Depends(platform)) -> ContractView:
        """Raise the commitment (from tomorrow, UTC), extend the term, or terminate early (the fee is the
        rest of the term's committed use). A lowered commitment is refused (422) with the reason."""
        await run_in_threadpool(owned, account_id, who)
        await run_in_threadpool(of_account, account_id, contract_id)
        try:
            return await service.amend_contract(temporal, engine, catalog, contract_id, body.kind,
                                                commitment=body.commitment, extra_months=body.extra_months)
        except (TemporalUnreachable, RPCError) as err:
            raise ApiError(503, "unavailable", f"the contract's term workflow cannot be reached ({err})") from None
