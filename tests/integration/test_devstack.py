"""`tally dev up/status/down` against real processes (embedded Postgres, Temporal dev server, the Stripe
emulator, the worker and the API), each run in a temporary TALLY_HOME on free ports.

The CLI is driven as a subprocess (`python -m workers.cli dev`), as a developer would run it. Every
process started here is killed at the end, even when a test fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from models.settings import Settings
from workers import devstack

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_VARS = (
    "DATABASE_URL", "TALLY_DATABASE_URL", "TEMPORAL_ADDRESS", "TALLY_TEMPORAL_ADDRESS",
    "STRIPE_API_KEY", "TALLY_STRIPE_API_KEY", "TALLY_STRIPE_API_BASE",
)  # fmt: skip
PORT_SETTINGS = tuple(p.env for c in devstack.COMPONENTS for p in c.ports)


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


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


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
    got = devstack.http_get(f"http://127.0.0.1:{ui_port}/")
    assert got is not None and got[0] == 200


def test_status_exits_zero_and_lists_components_when_stack_is_up(stack):
    result = dev(stack["env"], "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("postgres", "temporal", "stripe", "worker", "api", "smtp"):
        assert name in result.stdout


def test_up_starts_stripe_emulator_answering_health(stack):
    state = read_stack(stack["home"])
    port = stack["env"]["TALLY_STRIPE_EMULATOR_PORT"]
    assert state["stripe_api_base"] == f"http://127.0.0.1:{port}"
    assert state["components"]["stripe"]["mode"] == "managed"
    assert devstack.emulator_healthy(state["stripe_api_base"])


def test_up_starts_a_worker_polling_the_task_queue(stack):
    state = read_stack(stack["home"])
    worker = state["components"]["worker"]
    assert worker["mode"] == "managed" and alive(worker["pid"])
    assert psutil.Process(worker["pid"]).environ()["TALLY_HOME"] == str(stack["home"])
    assert asyncio.run(devstack.worker_polling(state["temporal_address"], "default", "tally", worker["started_at"]))


def test_up_starts_the_metering_api_answering_health(stack):
    state = read_stack(stack["home"])
    port = stack["env"]["TALLY_API_PORT"]
    api = state["components"]["api"]
    assert api["mode"] == "managed" and alive(api["pid"])
    assert state["api_url"] == f"http://127.0.0.1:{port}"
    got = devstack.http_get(f"{state['api_url']}/healthz")
    assert got is not None and got[0] == 200 and json.loads(got[1]) == {"ok": True, "database": "ok"}


def test_up_starts_an_smtp_sink_and_dev_mail_lists_what_tally_sent(stack, tmp_path):
    """End to end through the CLI: a budget crossed by an ingested file is e-mailed by the stack's worker
    to the stack's SMTP sink, and `tally dev mail` shows it."""
    from datetime import datetime, timedelta, timezone

    env, state = stack["env"], read_stack(stack["home"])
    assert state["smtp_url"] == f"smtp://127.0.0.1:{env['TALLY_SMTP_PORT']}"
    assert state["components"]["smtp"]["mode"] == "managed" and alive(state["components"]["smtp"]["pid"])

    def tally(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "workers.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=150)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    tally("accounts", "create", "mail-1", "--plan", "payg", "--email", "owner@mail.example")
    tally("accounts", "budget", "mail-1", "--set", "0.10")
    at = datetime.now(timezone.utc) - timedelta(minutes=2)
    usage = tmp_path / "usage.jsonl"
    usage.write_text("".join(json.dumps({"event_id": f"m-{i}", "account_id": "mail-1", "agent_id": "a", "model": "gpt-4o",
                                         "occurred_at": (at + timedelta(seconds=i)).isoformat()}) + "\n"
                             for i in range(10)))  # 10 x $0.01 = 100 % of $0.10
    tally("usage", "ingest", str(usage))
    assert "100%" in tally("accounts", "budget", "mail-1").stdout
    assert "sent 1" in tally("notifications", "deliver").stdout
    listed = tally("dev", "mail").stdout
    assert "owner@mail.example" in listed and "You have used 100% of your" in listed
    shown = tally("dev", "mail", "--show", "1").stdout
    assert "Message-ID: <tally." in shown and "$0.10, 100% of your monthly budget of $0.10" in shown


def test_second_up_reuses_the_running_processes(stack):
    before = managed_pids(read_stack(stack["home"]))
    result = dev(stack["env"], "up")
    assert result.returncode == 0, result.stderr
    assert managed_pids(read_stack(stack["home"])) == before
    assert "already running" in result.stderr


def test_up_runs_one_worker_process_per_core_under_the_recorded_one(stack):
    worker = read_stack(stack["home"])["components"]["worker"]
    wait_until(lambda: len(psutil.Process(worker["pid"]).children()) == (os.cpu_count() or 1))


def test_status_names_the_components_that_died_and_up_restarts_only_those(stack):
    home, env = stack["home"], stack["env"]
    before = managed_pids(read_stack(home))
    workers = psutil.Process(before["worker"]).children()
    for name in ("worker", "api"):
        os.kill(before[name], signal.SIGKILL)
    wait_until(lambda: not alive(before["worker"]) and not alive(before["api"]))
    # the per-core worker processes do not outlive their supervisor, even after a SIGKILL
    wait_until(lambda: all(map(gone, workers)), timeout=60.0)

    status = dev(env, "status", "--json")
    assert status.returncode == 1, status.stdout
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    assert {name for name, row in rows.items() if not row["ok"]} == {"worker", "api"}
    assert rows["api"]["detail"] == "not running" and rows["api"]["pid"] == before["api"]

    result = dev(env, "up")
    assert result.returncode == 0, result.stderr
    after = managed_pids(read_stack(home))
    assert {name for name in before if after[name] != before[name]} == {"worker", "api"}
    assert dev(env, "status").returncode == 0


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


@pytest.mark.parametrize("setting", PORT_SETTINGS)
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
        assert shared_buffers(url) == devstack.server_settings()["shared_buffers"]
        db_url = devstack.ensure_database(url, "scratch")
        assert devstack.ensure_database(url, "scratch") == db_url
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "scratch"
        assert devstack.stop_embedded_postgres(data_dir) is True
        assert not alive(pid) and devstack.postmaster_pid(data_dir) is None
        assert devstack.stop_embedded_postgres(data_dir) is False
    finally:
        devstack.stop_embedded_postgres(data_dir)


def shared_buffers(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT pg_size_pretty(pg_size_bytes(current_setting('shared_buffers')))").fetchone()[0] \
            .replace(" ", "")


@pytest.fixture
def old_data_dir(scratch):
    """(data directory, url) of a dev stack's Postgres from before the settings (initdb's shared_buffers),
    stopped; stopped again at the end."""
    data_dir = scratch / "pg"
    try:
        url = devstack.start_embedded_postgres(data_dir)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET shared_buffers")
        devstack.stop_embedded_postgres(data_dir)
        yield data_dir, url
    finally:
        devstack.stop_embedded_postgres(data_dir)


def test_a_stopped_data_directory_from_before_the_settings_starts_with_them_restarted_once(old_data_dir):
    data_dir, url = old_data_dir
    assert devstack.start_embedded_postgres(data_dir) == url  # starts at 128 MB, then restarts once
    assert shared_buffers(url) == devstack.server_settings()["shared_buffers"]
    pid = devstack.postmaster_pid(data_dir)
    devstack.start_embedded_postgres(data_dir)
    assert devstack.postmaster_pid(data_dir) == pid  # no second restart


def test_a_running_server_from_before_the_settings_keeps_running_and_gets_them_at_its_next_start(old_data_dir):
    """Another process (a running dev stack's worker, API) may be using it: it is not restarted under them."""
    from workers.devstack.postgres import _import_embedded_postgres

    data_dir, url = old_data_dir
    embedded_postgres, postgres_server = _import_embedded_postgres()
    postgres_server.PostgresServer._instances.pop(data_dir.resolve(), None)
    embedded_postgres.get_server(data_dir, cleanup_mode=None)  # started as the package leaves it
    pid = devstack.postmaster_pid(data_dir)
    with psycopg.connect(url) as user:
        assert devstack.start_embedded_postgres(data_dir) == url
        assert devstack.postmaster_pid(data_dir) == pid
        assert user.execute("SELECT current_setting('shared_buffers')").fetchone()[0] == "128MB"
    devstack.stop_embedded_postgres(data_dir)
    devstack.start_embedded_postgres(data_dir)
    assert shared_buffers(url) == devstack.server_settings()["shared_buffers"]


# ---------------------------------------------------------------------------------------------- the table
#
# A stand-in component (a static file server on the API's port setting) shows that a new table entry gets
# the stack's behaviour without code of its own: port checks, stack.json, reuse, status, stop, externals.


def serve_files(ctx: devstack.Context, log_file: Path, env: dict[str, str]) -> devstack.ProcessInfo:
    port = ctx.settings.api_port
    return devstack.spawn_until_healthy(
        "file server", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                        "--directory", str(ctx.home)], log_file, env,
        healthy=lambda _info: devstack.http_get(f"http://127.0.0.1:{port}/") is not None,
        waiting_for=f"http://127.0.0.1:{port}/", timeout=30,
    )  # fmt: skip


def files_health(_ctx: devstack.Context, rec: dict) -> str:
    got = devstack.http_get(rec["address"])
    return "" if got and got[0] == 200 else "health check failed"


def never_started(_ctx, _log_file, _env):
    raise AssertionError("an external component must not be started")


FILES = devstack.Component(
    "files", start=serve_files, health=files_health, log=devstack.in_logs("files"),
    starting=lambda ctx: f"starting on 127.0.0.1:{ctx.settings.api_port}",
    ports=(devstack.PortSetting("api_port"),),
    fields=lambda _ctx, rec: {"address": f"http://127.0.0.1:{rec['port']}/"},
    publishes={"files_url": "address"},
)


@pytest.fixture
def files_home(scratch):
    home = scratch / "home"
    settings = Settings(home=home, api_port=free_ports(1)[0])
    try:
        yield settings
    finally:
        devstack.stack_down(settings, components=(FILES,))
        for proc in processes_of(home.resolve()):
            proc.kill()


def test_every_component_declares_start_health_stop_and_a_log_in_its_home(scratch):
    ctx = devstack.Context(Settings(home=scratch), scratch)
    for comp in devstack.COMPONENTS:
        assert all(callable(f) for f in (comp.start, comp.health, comp.stop, comp.find, comp.pid)), comp.name
        assert scratch in comp.log(ctx).parents, comp.name
        assert comp.starting(ctx), comp.name


def test_every_port_setting_named_in_errors_really_moves_that_port(monkeypatch):
    settings_of_ports = [p for c in devstack.COMPONENTS for p in c.ports]
    for offset, port in enumerate(settings_of_ports):
        monkeypatch.setenv(port.env, str(20000 + offset))
    settings = Settings()
    assert [p.value(settings) for p in settings_of_ports] == [20000 + i for i in range(len(settings_of_ports))]


def test_start_order_follows_declared_dependencies_and_rejects_unknown_or_circular_ones():
    order = [c.name for c in devstack.start_order(devstack.COMPONENTS)]
    for comp in devstack.COMPONENTS:
        assert all(order.index(dep) < order.index(comp.name) for dep in comp.after), comp.name
    needs_files = dataclasses.replace(FILES, name="needs-files", after=("files",))
    assert [c.name for c in devstack.start_order((needs_files, FILES))] == ["files", "needs-files"]
    with pytest.raises(devstack.DevStackError, match="unknown"):
        devstack.start_order((needs_files,))
    with pytest.raises(devstack.DevStackError, match="circle"):
        devstack.start_order((needs_files, dataclasses.replace(FILES, after=("needs-files",))))


def test_a_new_table_entry_is_started_published_reused_reported_and_stopped(files_home):
    settings = files_home
    state = devstack.stack_up(settings, components=(FILES,))
    rec = state["components"]["files"]
    assert rec["mode"] == "managed" and alive(rec["pid"]) and rec["port"] == settings.api_port
    assert state["files_url"] == f"http://127.0.0.1:{settings.api_port}/"
    assert json.loads(settings.stack_file.read_text())["files_url"] == state["files_url"]
    assert Path(rec["log"]) == settings.home.resolve() / "logs" / "files.log"

    lines: list[str] = []
    again = devstack.stack_up(settings, components=(FILES,), echo=lines.append)
    assert again["components"]["files"]["pid"] == rec["pid"]
    assert lines == [f"files: already running (pid {rec['pid']})"]
    [status] = devstack.stack_status(settings, components=(FILES,))
    assert (status.mode, status.pid, status.ok) == ("managed", rec["pid"], True)

    assert devstack.stack_down(settings, components=(FILES,)) == ["files"]
    assert not alive(rec["pid"])
    [status] = devstack.stack_status(settings, components=(FILES,))
    assert (status.mode, status.ok) == ("stopped", False)


def test_a_running_component_that_fails_its_health_check_is_reported_with_the_reason(files_home):
    settings = files_home
    devstack.stack_up(settings, components=(FILES,))
    sick = dataclasses.replace(FILES, health=lambda _ctx, _rec: "health check failed")
    [status] = devstack.stack_status(settings, components=(sick,))
    assert (status.alive, status.detail, status.ok) == (False, "health check failed", False)
    assert "NO (health check failed)" in devstack.format_table(devstack.status_rows([status]))


def test_a_component_whose_process_exits_at_start_fails_up_with_its_log_tail(files_home):
    def crash(ctx, log_file, env):
        return devstack.spawn_until_healthy(
            "crasher", [sys.executable, "-c", "import sys; print('bad config: no widgets'); sys.exit(3)"],
            log_file, env, healthy=lambda _info: False, waiting_for="nothing", timeout=30)

    with pytest.raises(devstack.DevStackError) as err:
        devstack.stack_up(files_home, components=(dataclasses.replace(FILES, start=crash),))
    assert "crasher exited during start-up (exit code 3)" in str(err.value)
    assert "bad config: no widgets" in str(err.value)
    assert "files" not in devstack.read_stack(files_home).get("components", {})


def test_two_ports_set_to_one_number_are_refused_naming_both_settings(scratch):
    port = free_ports(1)[0]
    two_ports = dataclasses.replace(FILES, start=never_started,
                                    ports=(devstack.PortSetting("api_port"), devstack.PortSetting("temporal_port")))
    settings = Settings(home=scratch / "home", api_port=port, temporal_port=port)
    with pytest.raises(devstack.DevStackError, match=f"port {port} is set for both TALLY_API_PORT and "
                                                     "TALLY_TEMPORAL_PORT"):
        devstack.stack_up(settings, components=(two_ports,))


def test_an_external_component_is_recorded_and_never_started_or_stopped(scratch):
    external = dataclasses.replace(FILES, start=never_started, stop=never_started, external=devstack.External(
        "STRIPE_API_KEY", lambda s: bool(s.stripe_api_key), lambda _s: "https://files.example")
    )  # fmt: skip
    settings = Settings(home=scratch / "home", stripe_api_key="sk_test_x")
    state = devstack.stack_up(settings, components=(external,))
    assert state["components"]["files"] == {"mode": "external", "address": "https://files.example",
                                            "source": "STRIPE_API_KEY"}  # fmt: skip
    assert state["files_url"] is None
    [status] = devstack.stack_status(settings, components=(external,))
    assert (status.mode, status.alive, status.ok) == ("external", None, True)


def test_status_shows_external_settings_as_external_with_the_password_hidden(scratch):
    settings = Settings(home=scratch, database_url="postgresql://tally:s3cret@127.0.0.1:1/tally",
                                 temporal_address="127.0.0.1:1", stripe_api_key="sk_test_x",
                                 smtp_url="smtp://mailer:m41lpw@relay.example:587")  # fmt: skip
    statuses = {s.name: s for s in devstack.stack_status(settings)}
    assert {n: (s.mode, s.alive) for n, s in statuses.items()} == {
        "postgres": ("external", False), "temporal": ("external", False), "stripe": ("external", None),
        "worker": ("stopped", False), "api": ("stopped", False), "smtp": ("external", None),
    }  # fmt: skip
    table = devstack.format_table(devstack.status_rows(list(statuses.values())))
    assert "s3cret" not in table and "tally:***@127.0.0.1:1" in table
    assert "m41lpw" not in table and "smtp://mailer:***@relay.example:587" in table
