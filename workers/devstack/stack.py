"""``up``, ``down`` and ``status`` of the dev stack: each walks the component table (components.py).

stack.json (``$TALLY_HOME/stack.json``) holds a record per component and the addresses that
:class:`models.settings.Settings` reads; it is written after every component, atomically. One
``tally dev`` command at a time works on a home (a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from models.settings import Settings
from workers.devstack.components import COMPONENTS, Component, Context, PortSetting, managed_record, start_order
from workers.devstack.processes import (
    LOCAL_HOST,
    PROJECT_ROOT,
    STOP_TIMEOUT,
    DevStackError,
    Echo,
    child_env,
    no_echo,
    port_in_use,
    port_taken_error,
    redact_url,
)

STACK_VERSION = 1


def stack_up(settings: Settings | None = None, *, echo: Echo = no_echo,
             components: tuple[Component, ...] = COMPONENTS) -> dict:  # fmt: skip
    """Start every component that is neither external nor running yet, in dependency order; return the
    stack state (stack.json). Idempotent: running components (ours, even when stack.json forgot them)
    are reused. Every port is checked before anything starts; a taken one is named with its setting."""
    settings = settings or Settings()
    ctx = Context(settings, _home(settings), echo=echo)
    order = start_order(components)
    ctx.logs.mkdir(parents=True, exist_ok=True)
    with _stack_lock(ctx.home, echo):
        state = ctx.state = read_stack(settings)
        state.update(home=str(ctx.home), temporal_namespace=settings.temporal_namespace,
                     task_queue=settings.task_queue)  # fmt: skip
        comps: dict[str, dict] = dict(state.get("components") or {})
        state["components"] = comps

        running = {}
        for comp in order:
            if not comp.is_external(settings):
                found = comp.find(ctx, comp, comps.get(comp.name) or {})
                if found is not None:
                    running[comp.name] = found
        _check_ports(settings, [p for c in order if not c.is_external(settings) and c.name not in running
                                for p in c.ports])  # fmt: skip

        for comp in order:
            if comp.is_external(settings):
                assert comp.external is not None
                comps[comp.name] = {"mode": "external", "address": comp.external.address(settings),
                                    "source": comp.external.setting}  # fmt: skip
                state.update(dict.fromkeys(comp.publishes))
                echo(f"{comp.name}: external ({comp.external.setting})")
                write_stack(settings, state)
                continue
            rec = running.get(comp.name)
            if rec is not None:
                echo(f"{comp.name}: already running (pid {rec.get('pid')})")
            else:
                echo(f"{comp.name}: {comp.starting(ctx)}")
                _check_ports(settings, comp.ports)  # again: the earlier starts took a while
                started = comp.start(ctx, comp.log(ctx), child_env(ctx.home, comp.name))
                rec = managed_record(ctx, comp, started)
            comps[comp.name] = rec
            _publish(state, comp, rec)
            write_stack(settings, state)
            comp.ready(ctx, rec)
            write_stack(settings, state)
        return state


def _publish(state: dict, comp: Component, rec: dict) -> None:
    state.update({key: rec.get(field) for key, field in comp.publishes.items()})


def _check_ports(settings: Settings, ports: list[PortSetting] | tuple[PortSetting, ...]) -> None:
    """Every port free and no port set for two things; else DevStackError naming port and setting."""
    seen: dict[int, PortSetting] = {}
    for setting in ports:
        port = setting.value(settings)
        if port in seen:
            raise DevStackError(f"port {port} is set for both {seen[port].env} and {setting.env}; "
                                f"set {setting.env} to another port")  # fmt: skip
        seen[port] = setting
        if port_in_use(LOCAL_HOST, port):
            raise port_taken_error(port, setting.env)


def stack_down(settings: Settings | None = None, *, purge: bool = False, timeout: float = STOP_TIMEOUT,
               echo: Echo = no_echo, components: tuple[Component, ...] = COMPONENTS) -> list[str]:  # fmt: skip
    """Stop what ``up`` started, in reverse dependency order; keep the data unless ``purge``, which also
    deletes the home folder. Idempotent. Returns the names of the components stopped."""
    settings = settings or Settings()
    home = _home(settings)
    if not home.exists():
        echo(f"nothing to stop ({home} does not exist)")
        return []
    stopped: list[str] = []
    failures: list[str] = []
    with _stack_lock(home, echo):
        state = read_stack(settings)
        ctx = Context(settings, home, state, echo)
        comps: dict[str, dict] = dict(state.get("components") or {})
        for comp in reversed(start_order(components)):
            try:
                pids = comp.stop(ctx, comp, comps.get(comp.name) or {}, timeout)
            except DevStackError as err:
                failures.append(f"{comp.name}: {err}")
                continue
            for pid in pids:
                echo(f"{comp.name}: stopped (pid {pid})")
            if pids:
                stopped.append(comp.name)
            comps.pop(comp.name, None)
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
    mode: str  # managed | external | stopped
    pid: int | None
    alive: bool | None  # None: not checked (real Stripe)
    address: str | None
    log: str | None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.alive is not False


def stack_status(settings: Settings | None = None, *,
                 components: tuple[Component, ...] = COMPONENTS) -> list[ComponentStatus]:  # fmt: skip
    """The state of every component; ``all(c.ok for c in result)`` means the stack is up."""
    settings = settings or Settings()
    ctx = Context(settings, _home(settings), read_stack(settings))
    comps: dict[str, dict] = ctx.state.get("components") or {}
    out: list[ComponentStatus] = []
    for comp in start_order(components):
        if comp.is_external(settings):
            assert comp.external is not None
            out.append(ComponentStatus(comp.name, "external", None, comp.external.reachable(settings),
                                       comp.external.address(settings), None))  # fmt: skip
            continue
        rec = comps.get(comp.name) or {}
        defaults = {p.record_key: p.value(settings) for p in comp.ports}
        current = {**defaults, **comp.fields(ctx, defaults), **rec}
        pid = comp.pid(ctx, rec)
        if pid is None:
            alive, detail = False, "not running" if rec.get("mode") == "managed" else ""
        else:
            detail = comp.health(ctx, current)
            alive = not detail
        mode = "managed" if rec.get("mode") == "managed" or alive else "stopped"
        out.append(ComponentStatus(comp.name, mode, pid or rec.get("pid"), alive, current.get("address"),
                                   rec.get("log") or str(comp.log(ctx)), detail))  # fmt: skip
    return out


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


# ---------------------------------------------------------------------------------------------
# stack.json and the lock
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
