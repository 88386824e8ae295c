"""The contract routes of the HTTP API with the real term workflow on the Temporal dev server: a
platform creates a contract for its account (201; the same request again returns it), reads it, is
refused an invalid one and a lowered commitment with the field and the rule, and raises it."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx

from activities.deps import Deps
from api.app import create_app
from models.db import get_engine
from repositories import platforms
from services.platforms import assign_platform, hash_key, new_api_key
from tests.factories import create_account
from workers.worker import build_worker


def platform_with_account(url: str, account: str) -> str:
    key = new_api_key()
    create_account(url, account, "pro", billing_start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    with get_engine(url).begin() as conn:
        platforms.create_platform(conn, "p1", hash_key(key))
        assign_platform(conn, account, platforms.platform_by_name(conn, "p1").id)
    return key


async def test_a_platform_creates_reads_and_amends_its_accounts_contract(dev_server, settings, contract_terms):
    url = settings.database_url
    key = platform_with_account(url, "acme")

    async def temporal():
        return dev_server.client

    app = create_app(settings.model_copy(update={"api_secret": "s"}), temporal=temporal)
    headers = {"Authorization": f"Bearer {key}"}
    async with build_worker(dev_server.client, settings, Deps(settings), fail_fast=True), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers) as api:
        body = {"commitment": 100_000, "start": "2026-10-17", "months": 12}
        created = await api.post("/v1/accounts/acme/contracts", json=body)
        assert created.status_code == 201, created.text
        view = created.json()
        assert (view["id"], view["workflow_id"], view["commitment_now"], view["discount"], view["rate"]) == (
            "1", "contract-1", 100_000, "0.20", "0.00640")
        assert view["schedule"][0]["committed"] == 48_387 and view["end"] == "2027-10-17T00:00:00Z"
        again = await api.post("/v1/accounts/acme/contracts", json=body)
        assert again.status_code == 201 and again.json()["id"] == "1"

        bad = await api.post("/v1/accounts/acme/contracts", json={**body, "commitment": 50_000, "start": "2027-11-01"})
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "commitment"
        assert bad.json()["error"]["message"].startswith("commitment: must be at least 100,000 executions a month")
        overlap = await api.post("/v1/accounts/acme/contracts", json={**body, "start": "2027-01-01"})
        assert overlap.status_code == 422 and overlap.json()["error"]["field"] == "start"
        assert "overlaps contract 1" in overlap.json()["error"]["message"]

        low = await api.post("/v1/accounts/acme/contracts/1/amendments",
                             json={"kind": "raise_commitment", "commitment": 99_000})
        assert low.status_code == 422 and low.json()["error"]["field"] == "commitment"
        assert "cannot be lowered mid-term" in low.json()["error"]["message"]
        up = await api.post("/v1/accounts/acme/contracts/1/amendments",
                            json={"kind": "raise_commitment", "commitment": 1_000_000})
        assert up.status_code == 200, up.text
        assert up.json()["commitment_now"] == 1_000_000 and up.json()["discount"] == "0.45"

        listed = await api.get("/v1/accounts/acme/contracts")
        assert [c["id"] for c in listed.json()["contracts"]] == ["1"]
        assert (await api.get("/v1/accounts/acme/contracts/2")).status_code == 404
        other = await api.get("/v1/accounts/nobody/contracts/1")
        assert other.status_code == 404
