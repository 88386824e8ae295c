"""The local dev stack behind ``tally dev up/down/status``.

Components (the table in :mod:`workers.devstack.components`), in start order: embedded Postgres, the
Temporal dev server (SQLite file, UI on ``TALLY_TEMPORAL_UI_PORT``, the search attributes registered), the
Stripe emulator, one Tally worker (up once it polls its task queue) and the metering HTTP API (up once
``/healthz`` answers). A component whose connection setting is given (``DATABASE_URL``,
``TEMPORAL_ADDRESS``, ``STRIPE_API_KEY``) is *external* and never started or stopped here. Everything we
start is *managed*: detached (own session), logging to ``$TALLY_HOME/logs/<name>.log`` (Postgres: its data
directory's ``log``), recorded with pid and process start time in ``$TALLY_HOME/stack.json``, which
:class:`models.settings.Settings` reads for its ``effective_*`` values.

All failures raise :class:`DevStackError` with a one-paragraph message (plus the tail of the component's
log where one exists); the CLI prints it without a traceback.

Modules: ``stack`` (up/down/status, stack.json, the lock), ``components`` (the table and the start and
health functions of the emulator, worker and API), ``processes`` (spawn, wait until healthy, adopt, stop),
``postgres`` and ``temporal``.
"""

# The public surface (the CLI, the demo, benchmarks and tests use these names).
from workers.devstack.components import (  # noqa: F401
    COMPONENTS,
    Component,
    Context,
    External,
    PortSetting,
    emulator_healthy,
    in_logs,
    start_order,
    start_stripe_emulator,
    start_worker,
)
from workers.devstack.postgres import (  # noqa: F401
    database_url_for,
    ensure_database,
    postmaster_pid,
    start_embedded_postgres,
    server_settings,
    stop_embedded_postgres,
)
from workers.devstack.processes import (  # noqa: F401
    STOP_TIMEOUT,
    DevStackError,
    ProcessInfo,
    http_get,
    log_tail,
    redact_url,
    spawn_until_healthy,
    stop_process,
)
from workers.devstack.stack import (  # noqa: F401
    ComponentStatus,
    format_table,
    read_stack,
    stack_down,
    stack_status,
    stack_up,
    status_json,
    status_rows,
)
from workers.devstack.temporal import (  # noqa: F401
    DEFAULT_SEARCH_ATTRIBUTES,
    start_temporal_dev_server,
    worker_polling,
)
