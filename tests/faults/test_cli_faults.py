"""Fault family: the command line under bad luck and bad input (issue 14, defect 6): a database lost
mid-ingest, an absurd --seats, a reader that goes away (``| head``), a link asked for 0 or 10^9 hours.
Each is one line naming what is wrong, never a traceback, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from tests.conftest import ROOT
from tests.factories import create_account
from tests.integration.test_cli_errors import assert_one_line_error, counts, run  # noqa: F401  (fixture)


def test_seats_beyond_any_team_is_refused_in_one_line(run, clean_db):
    before = counts(clean_db)
    assert_one_line_error(run("accounts", "create", "big", "--plan", "team", "--seats", "99999999999"),
                          "seats: must be at most 100,000")
    create_account(clean_db, "t1", "team")
    assert_one_line_error(run("accounts", "change", "t1", "--seats", "99999999999"), "seats: must be at most 100,000")
    assert counts(clean_db)["accounts"] == before["accounts"] + 1


def test_billing_link_hours_are_bounded_from_one_hour_to_thirty_days(run, clean_db):
    create_account(clean_db, "a1", "pro")
    for hours in ("0", "721", "99999999999"):
        assert_one_line_error(run("accounts", "billing-link", "a1", "--hours", hours),
                              f"hours: must be from 1 to 720 (30 days), got {hours}")
    for hours in ("1", "720"):
        ok = run("accounts", "billing-link", "a1", "--hours", hours)
        assert ok.exit_code == 0 and "/accounts/a1/billing?token=" in ok.output, ok.output


def test_a_database_lost_mid_ingest_is_one_line_saying_a_rerun_is_safe(run, clean_db, tmp_path, monkeypatch):
    import services.ingest

    def lost(*_args, **_kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly\n\tThis probably means ...")

    monkeypatch.setattr(services.ingest, "ingest_jsonl", lost)
    path = tmp_path / "usage.jsonl"
    path.write_text("{}\n")
    line = assert_one_line_error(run("usage", "ingest", str(path)), "lost the database: server closed the connection")
    assert "running the same command again is safe" in line


def test_a_reader_that_goes_away_ends_the_command_quietly(clean_db, tmp_path):
    create_account(clean_db, "a1", "pro")
    env = {**os.environ, "DATABASE_URL": clean_db, "TALLY_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("STRIPE_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "accounts", "list"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head` that has read enough before the command printed
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert b"Error" not in err, err.decode()
