"""Bad input on the command line: a clear one-line error (exit code != 0, no traceback) and nothing
written. Runs the real ``tally`` click group in-process against the test database."""

from __future__ import annotations

from datetime import datetime, timezone

import click
import pytest
from click.testing import CliRunner

from models.db import get_engine
from models.settings import get_settings
from tests.factories import create_account
from workers.cli import cli

COUNTED = ("accounts", "executions", "invoices", "invoice_lines", "stripe_requests")


@pytest.fixture
def run(clean_db, tmp_path, monkeypatch):
    """Invoke ``tally ARGS`` with DATABASE_URL on the clean test database; returns the click Result."""
    for name in ("DATABASE_URL", "TALLY_DATABASE_URL", "TEMPORAL_ADDRESS", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = {"DATABASE_URL": clean_db, "TALLY_HOME": str(tmp_path / "tally-home"),
           # nothing listens here: a command that reached Temporal would fail loudly, not hang
           "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    runner = CliRunner()
    get_settings.cache_clear()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), env=env, prog_name="tally")

    yield invoke
    get_settings.cache_clear()


def counts(url: str) -> dict[str, int]:
    with get_engine(url).begin() as conn:
        return {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in COUNTED}


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no uncaught exception
    out = result.output
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unknown_plan_names_the_plan_option_lists_known_plans_and_creates_nothing(run, clean_db):
    line = assert_one_line_error(run("accounts", "create", "acme", "--plan", "platinum"),
                                 "plan", "'platinum'")
    for known in ("free", "pro", "team", "payg"):
        assert known in line
    assert counts(clean_db)["accounts"] == 0


def test_seats_on_a_per_account_plan_is_refused(run, clean_db):
    assert_one_line_error(run("accounts", "create", "acme", "--plan", "pro", "--seats", "3"),
                          "seats", "per-seat")
    assert counts(clean_db)["accounts"] == 0


@pytest.mark.parametrize("bad_id", ["has space", ".leading-dot", "x" * 65, "semi;colon"])
def test_invalid_account_id_is_refused(run, clean_db, bad_id):
    assert_one_line_error(run("accounts", "create", bad_id, "--plan", "pro"), "account_id")
    assert counts(clean_db)["accounts"] == 0


def test_malformed_period_is_refused(run, clean_db):
    assert_one_line_error(run("close", "--period", "2026-13"), "period", "YYYY-MM")
    assert_one_line_error(run("close", "--period", "October"), "period", "YYYY-MM")


def test_future_period_has_not_started(run, clean_db):
    create_account(clean_db, "acme", "payg")
    assert_one_line_error(run("close", "--period", "2999-01"), "2999-01", "has not started")
    assert counts(clean_db) == {**dict.fromkeys(COUNTED, 0), "accounts": 1}


def test_current_month_is_still_open(run, clean_db):
    create_account(clean_db, "acme", "payg")
    now = datetime.now(timezone.utc)
    assert_one_line_error(run("close", "--period", f"{now:%Y-%m}"), "is still open", "late-usage grace")
    assert counts(clean_db) == {**dict.fromkeys(COUNTED, 0), "accounts": 1}


def test_invoice_of_a_missing_account(run, clean_db):
    assert_one_line_error(run("invoices", "show", "ghost", "--period", "2026-10"), "no account 'ghost'")
    assert_one_line_error(run("invoices", "show", "ghost", "--period", "2026-10", "--json"),
                          "no account 'ghost'")


def test_missing_invoice_of_an_existing_account(run, clean_db):
    create_account(clean_db, "acme", "pro")
    assert_one_line_error(run("invoices", "show", "acme", "--period", "2026-09"),
                          "no invoice", "'acme'", "2026-09")
    assert counts(clean_db) == {**dict.fromkeys(COUNTED, 0), "accounts": 1}


def test_ingest_of_only_bad_lines_reports_each_with_its_line_number_and_writes_nothing(
        run, clean_db, tmp_path):
    create_account(clean_db, "acme", "payg")
    good_fields = ('"agent_id": "a1", "model": "claude-haiku", "input_tokens": 10, "output_tokens": 5, '
                   '"occurred_at": "2026-10-05T10:00:00Z"')
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        "{not json",                                                          # 1
        '{"event_id": "e2", "account_id": "ghost", ' + good_fields + "}",     # 2 unknown account
        '{"event_id": "e3", "account_id": "acme", "agent_id": "a1", "model": "gpt-9", '
        '"occurred_at": "2026-10-05T10:00:00Z"}',                             # 3 unknown model
        '{"event_id": "e4", "account_id": "acme", "agent_id": "a1", "model": "gpt-4o", '
        '"occurred_at": "2026-10-05T10:00:00"}',                              # 4 no time zone
        '[1, 2, 3]',                                                          # 5 not an object
        '{"event_id": "e6", "account_id": "acme", ' + good_fields.replace("10,", "-1,", 1) + "}",  # 6
    ]) + "\n")

    result = run("usage", "ingest", str(path))

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "accepted 0  duplicate 0  rejected 6" in result.output
    for n, reason in [(1, "not valid JSON"), (2, "unknown account 'ghost'"), (3, "unknown model 'gpt-9'"),
                      (4, "time zone"), (5, "not a JSON object"), (6, "input_tokens")]:
        assert any(line.strip().startswith(f"line {n}:") and reason in line
                   for line in result.output.splitlines()), (n, reason, result.output)
    assert counts(clean_db)["executions"] == 0


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


@pytest.mark.parametrize("path", _command_paths(cli), ids=lambda p: " ".join(p) or "tally")
def test_help_of_every_command(path):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="tally")
    assert result.exit_code == 0, result.output
    assert "Usage: tally" in result.output
