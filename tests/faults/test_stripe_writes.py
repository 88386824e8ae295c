"""Fault family: Stripe answering 429 on each write of the close (customers, invoices, add_lines,
finalize). tests/integration/test_close.py covers a 500 before commit and a lost response after
commit on each of these writes, and 429 on finalize; this adds 429 on the other three. Each ends with
exactly one Stripe invoice per charged account, its total, and one recorded key per write (the 429s
reused it). Duplicate ids from Stripe: the emulator-fidelity branch (docs/reliability.md)."""

from __future__ import annotations

import pytest

from models.db import get_engine
from tests.integration.test_close import assert_one_stripe_invoice_per_charged_account, run_close, seed

PATHS = ["/v1/customers", "/v1/invoices", "/v1/invoices/*/add_lines"]


@pytest.mark.parametrize("path", PATHS)
async def test_rate_limited_write_is_retried_under_the_same_key_and_bills_once(temporal_env, settings, emulator, path):
    seed(settings.database_url)
    emulator.add_fault(method="POST", path=path, kind="rate_limit_429", count=2, retry_after=1)
    result = await run_close(temporal_env, settings)
    assert not result.failed
    assert_one_stripe_invoice_per_charged_account(settings, emulator)
    assert len([r for r in emulator.requests() if r["status"] == 429]) == 2
    with get_engine(settings.database_url).begin() as conn:
        by_step = dict(conn.exec_driver_sql(
            "SELECT step, count(*) FROM stripe_requests GROUP BY step").all())
        retried = conn.exec_driver_sql("SELECT count(*) FROM stripe_requests WHERE attempt > 1").scalar()
    assert retried == 0  # the 429s were retried in place, under the key recorded first
    assert by_step == {"customer": 4, "create": 4, "add_lines": 4, "finalize": 4}, by_step
