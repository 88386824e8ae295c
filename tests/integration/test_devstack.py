"""`tally dev up/status/down` against real processes (embedded Postgres, Temporal dev server, the Stripe
emulator and the worker when those modules exist), each run in a temporary TALLY_HOME on free ports.

The CLI is driven as a subprocess (`python -m workers.cli dev`), as a developer would run it. Every
process started here is killed at the end, even when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import psycopg
import pytest

from workers import devstack

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_VARS = (
    "DATABASE_URL", "TALLY_DATABASE_URL", "TEMPORAL_ADDRESS", "TALLY_TEMPORAL_ADDRESS",
    "STRIPE_API_KEY", "TALLY_STRIPE_API_KEY", "TALLY_STRIPE_API_BASE",
)  # fmt: skip
PORT_SETTINGS = ("TALLY_TEMPORAL_PORT", "TALLY_TEMPORAL_UI_PORT", "TALLY_STRIPE_EMULATOR_PORT", "TALLY_API_PORT")

needs_emulator = pytest.mark.skipif(
    not devstack.stripe_emulator_available(), reason="stripe_emulator has no __main__ yet"
)
needs_worker = pytest.mark.skipif(not devstack.worker_available(), reason="workers.worker does not exist yet")
needs_api = pytest.mark.skipif(not devstack.api_available(), reason="the api package is not installed")


# ---------------------------------------------------------------------------------------------- helpers


def scratch_dir() -> Path:
    """A fresh folder outside pytest's tmp_path: as root, embedded Postgres runs as another user that
    must traverse every parent folder, and each pytest session resets /tmp/pytest-of-root to 0700."""
    return Path(tempfile.mkdtemp(prefix="tally-devstack-test-"))


@pytest.fixture
def scratch():
    path = scratch_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL_VARS}
    env["TALLY_HOME"] = str(home)
    env.update(zip(PORT_SETTINGS, map(str, free_ports(len(PORT_SETTINGS)))))
    return env


def dev(env: dict[str, str], *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "dev", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def read_stack(home: Path) -> dict:
    return json.loads((home / "stack.json").read_text())


def managed_pids(state: dict) -> dict[str, int]:
    return {n: c["pid"] for n, c in state["components"].items() if c.get("mode") == "managed"}


def processes_of(home: Path) -> list[psutil.Process]:
    """Every live process that belongs to this home (by environment or command line)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if str(home) in " ".join(proc.cmdline()) or proc.environ().get("TALLY_HOME") == str(home):
                found.append(proc)
        except psutil.Error:
            continue
    return [p for p in found if p.pid != os.getpid()]


def kill_everything(home: Path, env: dict[str, str]) -> None:
    try:
        dev(env, "down", "--timeout", "5", timeout=60)
    except Exception:  # noqa: BLE001 - the sweep below is the safety net
        pass
    for proc in processes_of(home):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def temporal_facts(address: str) -> dict:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
    from temporalio.client import Client

    client = await Client.connect(address)
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    return {"search_attributes": set(listed.custom_attributes)}


# ---------------------------------------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def stack():
    base = scratch_dir()
    home = base / "home"
    env = stack_env(home)
    try:
        first = dev(env, "up")
        yield {"home": home, "env": env, "first_up": first}
    finally:
        kill_everything(home, env)
        shutil.rmtree(base, ignore_errors=True)


def test_up_starts_postgres_and_temporal_and_writes_stack_file(stack):
    up = stack["first_up"]
    assert up.returncode == 0, up.stderr + up.stdout
    home, env = stack["home"], stack["env"]
    state = read_stack(home)
    port, ui_port = env["TALLY_TEMPORAL_PORT"], env["TALLY_TEMPORAL_UI_PORT"]
    assert state["temporal_address"] == f"127.0.0.1:{port}"
    assert state["temporal_ui_url"] == f"http://localhost:{ui_port}"
    assert state["database_url"].startswith("postgresql://") and "/tally?" in state["database_url"]
    for name in ("postgres", "temporal"):
        comp = state["components"][name]
        assert comp["mode"] == "managed" and alive(comp["pid"]), comp
        assert Path(comp["log"]).exists()

    with psycopg.connect(state["database_url"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "tally"
        conn.execute("CREATE TABLE IF NOT EXISTS devstack_probe (note text)")
        conn.execute("INSERT INTO devstack_probe VALUES ('kept across down/up')")

    facts = asyncio.run(temporal_facts(state["temporal_address"]))
    assert {"BillingPeriod", "BillingAccountIds"} <= facts["search_attributes"]
    got = devstack._http_get(f"http://127.0.0.1:{ui_port}/")
    assert got is not None and got[0] == 200


def test_status_exits_zero_and_lists_components_when_stack_is_up(stack):
    result = dev(stack["env"], "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("postgres", "temporal", "stripe", "worker", "api"):
        assert name in result.stdout


@needs_emulator
def test_up_starts_stripe_emulator_answering_health(stack):
    state = read_stack(stack["home"])
    port = stack["env"]["TALLY_STRIPE_EMULATOR_PORT"]
    assert state["stripe_api_base"] == f"http://127.0.0.1:{port}"
    assert state["components"]["stripe"]["mode"] == "managed"
    assert devstack.emulator_healthy(state["stripe_api_base"])


@needs_worker
def test_up_starts_a_worker_polling_the_task_queue(stack):
    state = read_stack(stack["home"])
    worker = state["components"]["worker"]
    assert worker["mode"] == "managed" and alive(worker["pid"])
    assert psutil.Process(worker["pid"]).environ()["TALLY_HOME"] == str(stack["home"])
    assert asyncio.run(devstack.worker_polling(state["temporal_address"], "default", "tally", worker["started_at"]))


@needs_api
def test_up_starts_the_metering_api_answering_health(stack):
    state = read_stack(stack["home"])
    port = stack["env"]["TALLY_API_PORT"]
    api = state["components"]["api"]
    assert api["mode"] == "managed" and alive(api["pid"])
    assert state["api_url"] == f"http://127.0.0.1:{port}"
    got = devstack._http_get(f"{state['api_url']}/healthz")
    assert got is not None and got[0] == 200 and json.loads(got[1]) == {"ok": True, "database": "ok"}


def test_second_up_reuses_the_running_processes(stack):
    before = managed_pids(read_stack(stack["home"]))
    result = dev(stack["env"], "up")
    assert result.returncode == 0, result.stderr
    assert managed_pids(read_stack(stack["home"])) == before
    assert "already running" in result.stderr


def test_down_stops_everything_keeps_data_and_status_then_exits_one(stack):
    home, env = stack["home"], stack["env"]
    pids = managed_pids(read_stack(home))
    result = dev(env, "down")
    assert result.returncode == 0, result.stderr
    assert not [n for n, pid in pids.items() if alive(pid)]
    assert processes_of(home) == []
    assert not (home / "stack.json").exists()
    assert (home / "temporal.db").exists() and (home / "postgres" / "PG_VERSION").exists()

    status = dev(env, "status")
    assert status.returncode == 1
    assert dev(env, "down").returncode == 0  # idempotent


def test_up_after_down_resumes_with_kept_data_and_purge_deletes_home(stack):
    home, env = stack["home"], stack["env"]
    result = dev(env, "up")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(read_stack(home)["database_url"], connect_timeout=5) as conn:
        assert conn.execute("SELECT note FROM devstack_probe").fetchall() == [("kept across down/up",)]

    result = dev(env, "down", "--purge")
    assert result.returncode == 0, result.stderr
    assert not home.exists()
    assert processes_of(home) == []


# ---------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "setting",
    ["TALLY_TEMPORAL_PORT", "TALLY_TEMPORAL_UI_PORT", pytest.param("TALLY_STRIPE_EMULATOR_PORT", marks=needs_emulator),
     pytest.param("TALLY_API_PORT", marks=needs_api)],
)
def test_up_fails_on_a_taken_port_naming_port_and_setting_and_starts_nothing(scratch, setting):
    home = scratch / "home"
    env = stack_env(home)
    port = int(env[setting])
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = dev(env, "up", timeout=60)
        assert result.returncode == 1
        assert f"port {port} is already in use" in result.stderr
        assert setting in result.stderr
        assert "Traceback" not in result.stderr
        assert processes_of(home) == []
        assert devstack.postmaster_pid(home / "postgres") is None
        assert not (home / "stack.json").exists()
    finally:
        blocker.close()
        kill_everything(home, env)


def test_down_on_an_empty_home_succeeds(scratch):
    env = stack_env(scratch / "never-started")
    result = dev(env, "down")
    assert result.returncode == 0, result.stderr


def test_start_embedded_postgres_is_idempotent_and_stop_stops_it(scratch):
    data_dir = scratch / "pg"
    try:
        url = devstack.start_embedded_postgres(data_dir)
        pid = devstack.postmaster_pid(data_dir)
        assert pid and alive(pid)
        assert devstack.start_embedded_postgres(data_dir) == url
        assert devstack.postmaster_pid(data_dir) == pid
        db_url = devstack.ensure_database(url, "scratch")
        assert devstack.ensure_database(url, "scratch") == db_url
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "scratch"
        assert devstack.stop_embedded_postgres(data_dir) is True
        assert not alive(pid) and devstack.postmaster_pid(data_dir) is None
        assert devstack.stop_embedded_postgres(data_dir) is False
    finally:
        devstack.stop_embedded_postgres(data_dir)
