"""`tally contracts` in-process against the test database: invalid contracts are refused with one line
naming the field and the rule (before Temporal is dialled, nothing written); create, show, amend and
the close of a month end to end on the Temporal dev server with the real worker."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from models.db import get_engine
from models.settings import get_settings
from tests.factories import create_account
from tests.integration.test_cli_errors import assert_one_line_error
from workers.cli import cli

COUNTED = ("accounts", "account_terms", "contracts", "contract_amendments")


def counts(url: str) -> dict[str, int]:
    with get_engine(url).begin() as conn:
        return {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in COUNTED}


@pytest.fixture
def tally(clean_db, tmp_path, monkeypatch):
    def make(temporal_address: str = "127.0.0.1:1", task_queue: str | None = None):
        for name in ("DATABASE_URL", "TALLY_DATABASE_URL", "TEMPORAL_ADDRESS", "STRIPE_API_KEY", "TALLY_TASK_QUEUE"):
            monkeypatch.delenv(name, raising=False)
        env = {"DATABASE_URL": clean_db, "TALLY_HOME": str(tmp_path / "tally-home"),
               "TEMPORAL_ADDRESS": temporal_address}  # 127.0.0.1:1: reaching Temporal fails loudly
        if task_queue:
            env["TALLY_TASK_QUEUE"] = task_queue
        runner = CliRunner()
        get_settings.cache_clear()
        return lambda *args: runner.invoke(cli, list(args), env=env, prog_name="tally")

    yield make
    get_settings.cache_clear()


@pytest.mark.parametrize("args, needles", [
    (["--commit", "99999", "--start", "2026-12-01", "--months", "12"],
     ("commitment: must be at least 100,000 executions a month", "got 99,999")),
    (["--commit", "100000", "--start", "2026-12-01", "--months", "11"],
     ("months: must be at least 12 (a contract runs at least 12 months), got 11",)),
    (["--commit", "100000", "--start", "2026-12-32", "--months", "12"], ("start: expected YYYY-MM-DD",)),
    (["--commit", "100000", "--start", "2025-06-01", "--months", "12"], ("start:",)),  # before the catalog
])
def test_invalid_contracts_are_refused_with_one_line_naming_the_field_and_the_rule(tally, clean_db, args, needles):
    before = counts(clean_db)
    result = tally()("contracts", "create", "acme", *args)
    assert_one_line_error(result, *needles)
    assert counts(clean_db) == before  # nothing half-written


def test_a_contract_overlapping_another_or_starting_in_a_closed_period_is_refused(tally, clean_db):
    url = clean_db
    with get_engine(url).begin() as conn:  # acme's contract, stored as `contracts create` stores it
        conn.execute(text("INSERT INTO accounts (id, plan, billing_starts_at) VALUES ('acme', 'enterprise', "
                          "'2026-12-01T00:00:00Z')"))
        conn.execute(text("INSERT INTO contracts (account_id, commitment, starts_at, months, catalog_version, ends_at) "
                          "VALUES ('acme', 100000, '2026-12-01T00:00:00Z', 12, '2026-01-01.1', '2027-12-01T00:00:00Z')"))
    before = counts(url)
    result = tally()("contracts", "create", "acme", "--commit", "200000", "--start", "2027-06-01", "--months", "12")
    assert_one_line_error(result, "start: the term 2027-06-01 to 2028-06-01 (exclusive) overlaps contract 1")
    create_account(url, "old", "pro")
    with get_engine(url).begin() as conn:  # September 2026 has been closed (an invoice pushed)
        conn.execute(text(
            "INSERT INTO catalog_versions (version, effective_from, digest, document) VALUES ('x', now(), 'd', '{}');"
            "INSERT INTO invoices (account_id, period, period_start, period_end, status, plan, seats, overage_opt_in, "
            "catalog_version_id, subtotal, total) VALUES ('old', '2026-09', '2026-09-01', '2026-10-01', 'open', 'pro', "
            "1, false, 1, 29, 29)"))
    result = tally()("contracts", "create", "new", "--commit", "100000", "--start", "2026-09-17", "--months", "12")
    assert_one_line_error(result, "start: 2026-09-17 falls in 2026-09, which is already closed",
                          "the earliest open period is 2026-10")
    assert counts(url) == {**before, "accounts": before["accounts"] + 1, "account_terms": before["account_terms"] + 1}


def test_a_malformed_amendment_or_an_unknown_contract_is_refused_before_temporal_is_dialled(tally, clean_db):
    result = tally()("contracts", "amend", "1", "--raise-to", "5", "--terminate")
    assert_one_line_error(result, "amendment: give exactly one of --raise-to, --extend or --terminate")
    result = tally()("contracts", "amend", "404", "--terminate")
    assert_one_line_error(result, "no contract '404'")


async def test_create_show_and_amend_through_the_cli_on_the_dev_server(tally, dev_server, settings,
                                                                     contract_terms):
    from activities.deps import Deps
    from workers.worker import build_worker

    url = settings.database_url
    cli_ = tally(dev_server.client.service_client.config.target_host, settings.task_queue)
    create_account(url, "acme", "pro", billing_start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    async with build_worker(dev_server.client, settings, Deps(settings), fail_fast=True):
        result = await _in_thread(cli_, "contracts", "create", "acme", "--commit", "100000", "--start", "2026-10-17",
                                  "--months", "12")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0] == (
            "created contract 1 for acme: 100,000 executions a month (20.0% off, $0.0064 each) from 2026-10-17 "
            "for 12 months (through 2027-10-16)")
        again = await _in_thread(cli_, "contracts", "create", "acme", "--commit", "100000", "--start", "2026-10-17",
                                 "--months", "12")
        assert again.exit_code == 0 and again.output.startswith("exists: contract 1 for acme")
        low = await _in_thread(cli_, "contracts", "amend", "1", "--raise-to", "90000")
        assert_one_line_error(low, "commitment: cannot be lowered mid-term (from 100,000 to 90,000 a month)")
        up = await _in_thread(cli_, "contracts", "amend", "1", "--raise-to", "500000")
        assert up.exit_code == 0, up.output
        assert "commitment 500,000/month (35.0% off)" in up.output
        shown = await _in_thread(cli_, "contracts", "show", "1", "--json")
        view = json.loads(shown.output)
        assert view["commitment_now"] == 500_000 and len(view["schedule"]) == 13
        assert view["schedule"][0] == {"period": "2026-10", "number": 1, "start": "2026-10-17T00:00:00Z",
                                       "end": "2026-11-01T00:00:00Z", "committed": 48_387, "last": False}
        text_out = (await _in_thread(cli_, "contracts", "show", "1")).output
        first = next(line for line in text_out.splitlines() if line.strip().startswith("2026-10"))
        assert first.split()[:3] == ["2026-10", "15", "48,387"] and first.endswith("not billed yet")
    

async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.to_thread(fn, *args)


def test_an_account_under_contract_cannot_leave_enterprise_before_the_contract_ends(tally, clean_db):
    from billing.catalog import load_catalog
    from services.contracts import create_contract

    create_contract(get_engine(clean_db), load_catalog(), account_id="acme", commitment=100_000,
                    start=datetime(2026, 12, 1).date(), months=12)
    before = counts(clean_db)
    result = tally()("accounts", "change", "acme", "--plan", "pro", "--effective", "2027-06-01")
    assert_one_line_error(result, "effective: the account is under contract 1 until 2027-12-01 (exclusive)")
    assert counts(clean_db) == before
    moved = tally()("accounts", "change", "acme", "--plan", "pro", "--effective", "2027-12-01")
    assert moved.exit_code == 0, moved.output
