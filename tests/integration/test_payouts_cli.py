"""``tally creators|skills|payouts`` in-process against the test database: bad input is one line naming
the field and the reason, and nothing is written (Temporal is never dialled: nothing listens there)."""

from __future__ import annotations

from tests.integration.test_cli_errors import run  # noqa: F401 - fixture
from models.db import get_engine


def count(url: str, table: str) -> int:
    with get_engine(url).begin() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()


def test_creator_and_premium_skill_through_the_cli_with_refusals(run, clean_db):
    assert run("creators", "create", "cr1", "--email", "not-an-email").output.strip() == (
        "Error: email: must be an e-mail address, got 'not-an-email'")
    ok = run("creators", "create", "cr1", "--email", "cr1@example.com")
    assert ok.exit_code == 0 and "not onboarded yet" in ok.output
    refused = run("skills", "premium", "sk", "--creator", "cr1", "--fixed", "0.51")
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert refused.output.strip() == ("Error: fixed_price: must be between $0.01 and $0.50 per execution, in whole "
                                      "cents; got $0.51")
    both = run("skills", "premium", "sk", "--creator", "cr1", "--share", "--fixed", "0.05")
    assert both.exit_code != 0 and "exactly one of --share or --fixed" in both.output
    assert run("skills", "premium", "sk", "--creator", "nobody", "--share").exit_code != 0
    assert count(clean_db, "premium_skills") == 0
    fixed = run("skills", "premium", "sk", "--creator", "cr1", "--fixed", "0.05")
    assert fixed.exit_code == 0 and "$0.05 per execution (70% to the creator)" in fixed.output


def test_payouts_list_show_and_retry_refusals(run, clean_db):
    assert run("payouts", "list", "--period", "2026-13").output.strip().startswith("Error: period:")
    assert run("payouts", "list", "--status", "lost").output.strip() == (
        "Error: status: must be one of carried, pending, paid, failed, cancelled")
    assert run("payouts", "list", "--period", "2026-10").output.strip() == "no payouts"
    assert run("payouts", "show", "payout-x-2026-10").output.strip() == "Error: no payout payout-x-2026-10"
    assert "payout_id: must be payout-<creator>-<YYYY-MM>" in run("payouts", "retry", "p1", "--by", "ana").output
    assert run("invoices", "mark-paid", "999").output.strip() == "Error: no invoice 999"
