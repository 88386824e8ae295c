"""Live usage by agent/model/day/skill, and invoices in the CLI's JSON shape."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from activities import pricing
from activities.close import CloseActivities
from activities.deps import Deps
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine
from models.schemas import AccountRange, CloseChunkInput
from services.invoices import invoice_preview, invoice_view
from tests.api.conftest import NOW
from tests.factories import OCT_START, event, ingest

SEPT = datetime(2026, 9, 1, tzinfo=timezone.utc)


def seed(api) -> str:
    key = api.platform("p")
    api.account("u1", "payg", platform="p")
    docs = []
    for i in range(60):
        docs.append(event("u1", i, OCT_START + timedelta(hours=7 * i), ("claude-haiku", "gpt-4o")[i % 2],
                          agent_id=f"agent-{i % 3}", skill_id=None if i % 4 == 0 else f"skill-{i % 2}",
                          byok=i % 5 == 0, sandbox=i % 6 == 0, input_tokens=100 + i, output_tokens=10))
    for i in range(100, 130):
        docs.append(event("u1", i, SEPT + timedelta(hours=5 * (i - 100)), "claude-sonnet"))
    assert ingest(api.database_url, docs, now=NOW).accepted == 90
    return key


def test_usage_grouped_by_each_dimension_adds_up(api):
    key = seed(api)
    c = api.client(key)
    reports = {g: c.get("/v1/accounts/u1/usage", params={"group_by": g}).json() for g in ("agent", "model", "day", "skill")}
    for g, rep in reports.items():
        assert rep["period"] == "2026-10" and rep["group_by"] == g
        t = rep["totals"]
        assert (t["executions"], t["sandbox_executions"]) == (50, 10), g
        assert t["input_tokens"] == sum(100 + i for i in range(60))
    assert [grp["key"] for grp in reports["agent"]["groups"]] == ["agent-0", "agent-1", "agent-2"]
    assert {grp["key"] for grp in reports["skill"]["groups"]} == {"skill-0", "skill-1", None}
    days = reports["day"]["groups"]
    assert days[0]["key"] == "2026-10-01" and all(g["charges"] is None for g in days)
    by_model = {g["key"]: g for g in reports["model"]["groups"]}
    assert set(by_model) == {"claude-haiku", "gpt-4o"}
    with get_engine(api.database_url).begin() as conn:
        rated = pricing.rate_accounts(conn, load_catalog(), Period(2026, 10), ["u1"])["u1"].rated
    for model, group in by_model.items():
        assert Decimal(group["charges"]) == sum(line.amount for line in rated.lines if line.model == model)
    assert reports["model"]["totals"]["charges"] == str(rated.total)
    sept = c.get("/v1/accounts/u1/usage", params={"period": "2026-09", "group_by": "model"}).json()
    assert sept["groups"][0]["key"] == "claude-sonnet" and sept["totals"]["executions"] == 30
    assert sept["totals"]["charges"] == "0.30"


@pytest.mark.parametrize("params,field", [({"period": "2026-13"}, "period"), ({"period": "10/2026"}, "period"),
                                          ({"group_by": "week"}, "group_by")])
def test_bad_usage_parameters_are_422_naming_the_field(api, params, field):
    key = seed(api)
    resp = api.client(key).get("/v1/accounts/u1/usage", params=params)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == field and resp.json()["error"]["message"].startswith(f"{field}: ")


def test_invoices_have_the_cli_json_shape(api):
    key = seed(api)
    c = api.client(key)
    assert c.get("/v1/accounts/u1/invoices").json() == {"account_id": "u1", "invoices": []}
    CloseActivities(Deps(api.settings)).rate_accounts(
        CloseChunkInput(period="2026-09", index=0, accounts=AccountRange(after=None, upto="~", count=0)))
    engine = get_engine(api.database_url)
    expected = json.loads(json.dumps(invoice_view(engine, "u1", "2026-09").model_dump()))  # `invoices show --json`
    assert c.get("/v1/accounts/u1/invoices/2026-09").json() == expected
    assert c.get("/v1/accounts/u1/invoices").json() == {"account_id": "u1", "invoices": [expected]}
    missing = c.get("/v1/accounts/u1/invoices/2026-08")
    assert missing.status_code == 404 and "has the close run?" in missing.json()["error"]["message"]
    assert c.get("/v1/accounts/u1/invoices/2026-8").status_code == 422


def test_invoice_preview_is_the_operations_preview(api):
    key = seed(api)
    c = api.client(key)
    at = "2026-10-20T00:00:00Z"
    resp = c.get("/v1/accounts/u1/invoices/preview", params={"at": at})
    assert resp.status_code == 200
    expected = invoice_preview(get_engine(api.database_url), "u1", datetime(2026, 10, 20, tzinfo=timezone.utc))
    assert resp.json() == json.loads(expected.model_dump_json())
    now = c.get("/v1/accounts/u1/invoices/preview").json()  # default: the API's clock
    assert now["total"] == c.get("/v1/accounts/u1/entitlement", params={"model": "gpt-4o"}).json()[
        "month_to_date_charges"]
    for bad in ("soon", "2026-10-20T00:00:00", "2026-10-20"):  # not an instant, or one without a zone
        r = c.get("/v1/accounts/u1/invoices/preview", params={"at": bad})
        assert r.status_code == 422 and r.json()["error"]["field"] == "at"
