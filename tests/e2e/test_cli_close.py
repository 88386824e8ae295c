"""End to end: the ``tally`` command line, as a person types it, against the local dev stack that
``tally dev up`` starts (embedded Postgres, the Temporal dev server, the Stripe emulator, a worker).

Every step is a separate ``tally`` process; the only shared state is ``$TALLY_HOME`` (a temporary
folder) and free ports, so it never touches a developer's own stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import ROOT, venv_binary
from workers import devstack

# A hang guard, not a speed limit: the whole `tally dev up` stack and a few dozen `tally` processes take
# 1-2 minutes alone and up to 4 on a loaded 2-core machine next to three other test workers
# (docs/testing.md, "In parallel"); pyproject's 300 s default was too close.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PERIOD = "2026-10"
OCT_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
MONEY = re.compile(r"^-?\d+\.\d{2}$")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Tally:
    def __init__(self, home: Path):
        self.home = home
        self.binary = venv_binary("tally")
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "STRIPE_API_KEY")
               and not k.startswith("TALLY_")}
        env["TALLY_HOME"] = str(home)
        # Every port the stack listens on is a free one (a fixed default, such as the SMTP sink's 2525,
        # would collide with another run on this machine).
        ports = [p.env for c in devstack.COMPONENTS for p in c.ports]
        env.update(zip(ports, map(str, free_ports(len(ports)))))
        self.env = env

    def __call__(self, *args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.binary, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if ok and proc.returncode != 0:
            pytest.fail(f"`tally {' '.join(args)}` exited {proc.returncode}\n--- stdout\n{proc.stdout}"
                        f"\n--- stderr\n{proc.stderr}{self.logs()}")
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return proc

    def logs(self) -> str:
        out = []
        for log in sorted((self.home / "logs").glob("*.log")):
            out.append(f"\n--- {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        return "".join(out)


def settle(stripe_base: str, session_id: str) -> None:
    """Pay a Checkout Session on the emulator (what the buyer does on Stripe's page)."""
    import urllib.request

    req = urllib.request.Request(f"{stripe_base}/_emulator/checkout/sessions/{session_id}/settle",
                                 data=json.dumps({"outcome": "paid"}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local URL
        assert resp.status == 200


def wait_until(read, ok, what: str, timeout: float = 30.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {value}")
        time.sleep(0.5)


def jsonl_line(event_id: str, account_id: str, n: int, model: str) -> str:
    return json.dumps({
        "event_id": event_id, "account_id": account_id, "agent_id": f"agent-{n % 2}",
        "skill_id": "skill-1", "model": model, "input_tokens": 1200, "output_tokens": 300,
        "byok": False, "sandbox": False,
        "occurred_at": (OCT_START + timedelta(minutes=8 * n)).isoformat().replace("+00:00", "Z"),
    })


def usage_file(path: Path) -> int:
    """pro-e2e: 5,004 executions (4 past the 5,000 included, all claude-haiku); payg-e2e: 150 over two
    models; free-e2e: 30. Plus one duplicate and one malformed line. Returns the malformed line's number."""
    lines = [jsonl_line(f"pro-{i}", "pro-e2e", i, "claude-haiku") for i in range(5004)]
    lines += [jsonl_line(f"payg-{i}", "payg-e2e", i, ("gpt-4o-mini", "claude-sonnet")[i % 2]) for i in range(150)]
    lines += [jsonl_line(f"free-{i}", "free-e2e", i, "gpt-4o") for i in range(30)]
    lines.append(lines[5010])  # a duplicate event id
    lines.append('{"event_id": "broken", "account_id": "payg-e2e",')  # malformed JSON
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def test_cli_runs_a_close_end_to_end_against_the_dev_stack(tmp_path):
    home = Path(tempfile.mkdtemp(prefix="tally-e2e-"))
    tally = Tally(home)
    try:
        up = tally("dev", "up", timeout=180)
        assert "Temporal UI: http://localhost:" in up.stdout

        # Billed from before October (an account created today would not be billed for October).
        since = ("--billing-start", "2026-09-01")
        assert "created: pro-e2e (pro" in tally("accounts", "create", "pro-e2e", "--plan", "pro", "--overage",
                                                "--email", "pro@example.com", *since).stdout
        assert "created: payg-e2e (payg" in tally("accounts", "create", "payg-e2e", "--plan", "payg", *since).stdout
        assert "created: free-e2e (free" in tally("accounts", "create", "free-e2e", "--plan", "free", *since).stdout
        listed = tally("accounts", "list").stdout
        assert all(a in listed for a in ("pro-e2e", "payg-e2e", "free-e2e"))

        usage = tmp_path / "october.jsonl"
        bad_line = usage_file(usage)
        ingest = tally("usage", "ingest", str(usage)).stdout
        assert "accepted 5,184  duplicate 1  rejected 1" in ingest, ingest
        assert re.search(rf"^\s*line {bad_line}: not valid JSON", ingest, re.M), ingest

        closed = tally("close", "--period", PERIOD).stdout
        assert f"closed {PERIOD}: 3 accounts" in closed, closed
        assert "3 rated (1 no charge)" in closed and "pushed 2, already in Stripe 0" in closed, closed
        assert "total $30.52" in closed, closed  # 29.02 + 1.50 + 0.00
        assert f"/workflows/close-{PERIOD}" in closed

        listing = tally("invoices", "list", "--period", PERIOD).stdout
        rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:-1]}
        assert set(rows) == {"pro-e2e", "payg-e2e", "free-e2e"}, listing
        assert rows["pro-e2e"][2] == "open" and rows["pro-e2e"][4] == "29.02"
        assert rows["payg-e2e"][2] == "open" and rows["payg-e2e"][4] == "1.50"
        assert rows["free-e2e"][2] == "no_charge" and rows["free-e2e"][4] == "0.00"
        assert "3 invoices, total $30.52" in listing

        shown = json.loads(tally("invoices", "show", "pro-e2e", "--period", PERIOD, "--json").stdout)
        assert {"account_id", "period", "status", "lines", "subtotal", "total", "stripe_invoice_id"} <= set(shown)
        assert (shown["account_id"], shown["period"], shown["status"]) == ("pro-e2e", PERIOD, "open")
        assert shown["stripe_invoice_id"].startswith("in_")
        assert shown["total"] == "29.02" and shown["subtotal"] == "29.02"
        for line in shown["lines"]:
            assert {"kind", "model", "description", "quantity", "unit_price", "amount"} <= set(line)
            assert all(isinstance(line[k], str) for k in ("quantity", "unit_price", "amount")), line
            assert MONEY.match(line["amount"]), line
        assert sum(Decimal(line["amount"]) for line in shown["lines"]) == Decimal("29.02")
        base = [line for line in shown["lines"] if line["kind"] == "base_fee"]
        assert [line["amount"] for line in base] == ["29.00"]
        overage = [line for line in shown["lines"] if line["kind"] == "usage"]
        assert [(line["model"], line["quantity"], line["unit_price"], line["amount"]) for line in overage] == [
            ("claude-haiku", "4", "0.005", "0.02")]
        free = json.loads(tally("invoices", "show", "free-e2e", "--period", PERIOD, "--json").stdout)
        assert (free["status"], free["total"], free["stripe_invoice_id"]) == ("no_charge", "0.00", None)

        verified = tally("invoices", "verify", "--period", PERIOD).stdout
        assert f"3 invoices of {PERIOD} re-rated; 0 would differ" in verified, verified

        # `tally dev up` points the emulator's webhooks at its API, as a Stripe dashboard would: credits
        # bought and paid on the emulator's checkout page are granted through the signed webhook, and the
        # grant's expiry workflow is started as it commits.
        bought = tally("credits", "buy", "payg-e2e", "--package", "starter").stdout
        session = re.search(r"checkout session (cs_\w+)", bought).group(1)
        stack = json.loads((home / "stack.json").read_text())
        settle(stack["stripe_api_base"], session)
        balance = wait_until(lambda: json.loads(tally("credits", "balance", "payg-e2e", "--json").stdout),
                             lambda v: v["grants"], "the webhook's grant")
        grant_id = balance["grants"][0]["grant_id"]
        assert balance["balances"]["credits"]["balance"] != "0", balance
        described = subprocess.run(
            [venv_binary("temporal"), "workflow", "describe", "--workflow-id", f"credit-grant-{grant_id}",
             "--address", stack["temporal_address"], "-o", "json"], capture_output=True, text=True, timeout=60)
        assert described.returncode == 0, described.stderr
        assert json.loads(described.stdout)["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"

        # Closing the month again reports THE close of the month (one workflow), and changes nothing.
        again = tally("close", "--period", PERIOD)
        assert f"close-{PERIOD} already finished" in again.stderr, again.stderr
        assert again.stdout == closed, again.stdout
        # An explicit re-run is a new run of the same workflow id that finds every invoice final.
        rerun = tally("close", "--period", PERIOD, "--rerun").stdout
        assert "0 rated" in rerun and "3 already final" in rerun, rerun
        assert "pushed 0, already in Stripe 2" in rerun, rerun
        # ... and says what the period's close did, not only what this run saw (issue 14)
        assert f"period {PERIOD} in all: 3 invoices: 2 in Stripe, 1 no charge, 0 push failed, 0 not pushed yet; " \
               "total $30.52" in rerun, rerun
        assert json.loads(tally("invoices", "show", "pro-e2e", "--period", PERIOD, "--json").stdout) == shown
        assert tally("invoices", "list", "--period", PERIOD).stdout == listing

        first = tally("schedules", "apply").stdout
        second = tally("schedules", "apply").stdout
        assert re.search(r"^created schedule monthly-close\b", first, re.M), first
        assert re.search(r"^updated schedule monthly-close\b", second, re.M), second
        for schedule in ("notifications-outbox", "mid-month-trend"):  # the alerts capability's
            assert re.search(rf"^created schedule {schedule}\b", first, re.M), first
        for out in (first, second):
            close_line = next(ln for ln in out.splitlines() if " schedule monthly-close:" in ln)
            runs = re.findall(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}) UTC", close_line)
            assert runs, out
            assert all((day, hh, mm) == ("03", "02", "00") for _, _, day, hh, mm in runs), out
    finally:
        down = tally("dev", "down", "--purge", ok=False, timeout=120)
        if home.exists():  # `down` failed before purging: do not leave the folder behind
            shutil.rmtree(home, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not home.exists()


def test_scheduled_and_manual_close_of_a_month_are_one_workflow(tmp_path):
    """Apply the schedule, trigger it, then `tally close` the same month: one close-YYYY-MM run, which
    the schedule's launcher started and the CLI attached to (or found finished)."""
    import asyncio

    from temporalio.client import Client

    from workflows.close import previous_period

    home = Path(tempfile.mkdtemp(prefix="tally-e2e-"))
    tally = Tally(home)
    tally.env["TALLY_LATE_USAGE_GRACE_HOURS"] = "0"  # the month before today is closable whatever today is
    period = previous_period(datetime.now(timezone.utc))
    try:
        tally("dev", "up", timeout=180)
        tally("accounts", "create", "sched-e2e", "--plan", "pro", "--billing-start", f"{period}-01")
        tally("schedules", "apply")
        address = json.loads((home / "stack.json").read_text())["temporal_address"]

        async def trigger_and_find_launcher() -> str:
            client = await Client.connect(address)
            await client.get_schedule_handle("monthly-close").trigger()
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                async for wf in client.list_workflows("WorkflowType = 'ScheduledClose'"):
                    return wf.id
                await asyncio.sleep(0.2)
            raise AssertionError("the schedule started no ScheduledClose within 60 s")

        launcher = asyncio.run(trigger_and_find_launcher())
        assert launcher.startswith("monthly-close-")

        closed = tally("close", "--period", period)
        assert f"closed {period}: 1 accounts" in closed.stdout, closed.stdout
        assert f"close-{period} already" in closed.stderr, closed.stderr  # attached, or found finished

        async def close_runs() -> list:
            client = await Client.connect(address)
            return [wf async for wf in client.list_workflows(f"WorkflowId = 'close-{period}'")]

        runs = asyncio.run(close_runs())
        assert len(runs) == 1, [(r.id, r.run_id) for r in runs]
        assert runs[0].parent_id == launcher  # the schedule's launcher started it; the CLI only attached
    finally:
        tally("dev", "down", "--purge", ok=False, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
