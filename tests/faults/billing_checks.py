"""What a close that rode out a fault must have left: one open invoice per account in Postgres with the
expected total, and exactly one invoice and one customer per account in Stripe."""

from __future__ import annotations

from decimal import Decimal

import stripe

from models.db import get_engine
from models.settings import EMULATOR_API_KEY


def assert_billed_once(database_url: str, emulator_url: str, period: str, expected: dict[str, Decimal]) -> None:
    with get_engine(database_url).begin() as conn:
        db = dict(conn.exec_driver_sql(
            "SELECT account_id, total FROM invoices WHERE period = %(p)s AND status = 'open'", {"p": period}).all())
    assert db == expected
    client = stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": emulator_url})
    by_account: dict[str, int] = {}
    for inv in client.v1.invoices.list(params={"limit": 100}).auto_paging_iter():
        by_account[inv.metadata["tally_account_id"]] = by_account.get(inv.metadata["tally_account_id"], 0) + 1
    assert by_account == {a: 1 for a in expected}
    assert len(list(client.v1.customers.list(params={"limit": 100}).auto_paging_iter())) == len(expected)
