"""docker-compose.yml stays safe without a Docker engine: it parses, it has no secret defaults, its
connection budget fits Postgres' max_connections, and its healthchecks only call commands that the
images ship. (No Docker here: the file is read as YAML and interpolated the way compose does.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from api import ingest_process
from api.app import api_engine
from models.db import get_engine, worker_pool
from models.settings import Settings
from services import entitlement_view

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SECRETS = ("STRIPE_API_KEY", "TALLY_API_SECRET", "POSTGRES_PASSWORD", "TALLY_DB_PASSWORD", "TEMPORAL_DB_PASSWORD",
           "SMTP_URL")
TEMPORAL_ROLES = 4  # frontend, history, matching, worker: each opens its own pools
ADMIN_MARGIN = 10  # psql by hand, healthchecks, temporal-sql-tool, alembic (docs/deployment.md)
URL = "postgresql://tally:x@postgres:5432/tally"

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${X}, ${X:-default}, ${X-default}, ${X:?error}, ${X?error}."""
    def one(m: re.Match) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset_or_empty else value
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""

    return _VAR.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def secrets_env() -> dict[str, str]:
    return {name: f"secret-{name.lower()}" for name in SECRETS}


def load(env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), secrets_env() if env is None else env))


def service_settings(doc: dict, service: str, monkeypatch) -> Settings:
    for key in list(Settings.model_fields):
        monkeypatch.delenv(f"TALLY_{key.upper()}", raising=False)
    for key, value in doc["services"][service]["environment"].items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def pool_limit(engine) -> int:
    return engine.pool.size() + engine.pool._max_overflow


def postgres_setting(doc: dict, name: str) -> int:
    command = doc["services"]["postgres"]["command"]
    values = [c.split("=", 1)[1] for c in command if c.startswith(f"{name}=")]
    assert len(values) == 1, f"postgres command must set {name} once: {command}"
    return int(values[0])


def test_compose_file_is_valid_yaml_with_the_expected_services():
    doc = load()
    assert {"postgres", "temporal", "temporal-schema", "temporal-setup", "temporal-ui", "tally-migrate",
            "tally-worker", "tally-api", "tally-schedules", "tally-cli"} <= set(doc["services"])


@pytest.mark.parametrize("secret", SECRETS)
def test_every_secret_is_required_and_has_no_default(secret):
    text = COMPOSE.read_text()
    uses = [m for m in _VAR.finditer(text) if m.group("name") == secret]
    assert uses, f"{secret} is not used in docker-compose.yml"
    for m in uses:
        assert m.group("op") == ":?", f"{m.group(0)[:60]}: {secret} must be required (${{{secret}:?message}})"
        assert secret in m.group("arg"), "the error message names the variable to set"
    env = secrets_env()
    del env[secret]
    with pytest.raises(MissingVariable, match=secret):
        load(env)


def test_no_dev_only_password_is_left_anywhere():
    assert "dev-only" not in COMPOSE.read_text()


def test_connection_budget_worst_case_fits_max_connections(monkeypatch):
    doc = load()
    temporal = doc["services"]["temporal"]["environment"]
    # database/sql caps *open* connections at maxConns; idle ones are among them, never extra.
    assert int(temporal["SQL_MAX_IDLE_CONNS"]) <= int(temporal["SQL_MAX_CONNS"])
    assert int(temporal["SQL_VIS_MAX_IDLE_CONNS"]) <= int(temporal["SQL_VIS_MAX_CONNS"])
    temporal_total = TEMPORAL_ROLES * (int(temporal["SQL_MAX_CONNS"]) + int(temporal["SQL_VIS_MAX_CONNS"]))

    worker = service_settings(doc, "tally-worker", monkeypatch)
    replicas = int(doc["services"]["tally-worker"]["deploy"]["replicas"])
    size, overflow = worker_pool(worker)
    assert pool_limit(get_engine(URL, pool_size=size, max_overflow=overflow)) == size + overflow
    # every invoice push of every parallel chunk holds a connection: the pool alone must hold them
    assert size >= worker.stripe_concurrency * worker.close_parallel_chunks
    workers_total = replicas * (size + overflow)

    api = service_settings(doc, "tally-api", monkeypatch)
    # compose states the ingest processes: their default (one per core) would make the sum the host's
    assert api.api_ingest_processes is not None
    api_total = api.api_workers * (pool_limit(api_engine(URL, api.api_db_pool_size, api.api_db_max_overflow))
                                   + api.api_ingest_processes * (ingest_process.POOL_SIZE + ingest_process.MAX_OVERFLOW)
                                   + ingest_process.ALERTS_POOL_SIZE + ingest_process.ALERTS_MAX_OVERFLOW
                                   + entitlement_view.REFRESHER_CONNECTIONS
                                   + entitlement_view.EXACT_POOL_SIZE + entitlement_view.EXACT_MAX_OVERFLOW)

    cli_total = pool_limit(get_engine(URL))  # the ops CLI and the one-shot jobs, one at a time

    reserved = postgres_setting(doc, "superuser_reserved_connections") + ADMIN_MARGIN
    total = temporal_total + workers_total + api_total + cli_total + reserved
    max_connections = postgres_setting(doc, "max_connections")
    assert total <= max_connections, (
        f"worst case {total} = Temporal {temporal_total} + workers {workers_total} + API {api_total} "
        f"+ CLI {cli_total} + reserved {reserved} > max_connections {max_connections}")

    # the budget written at the top of the file is this sum
    stated = re.search(r"total worst case\s*=\s*(\d+) of max_connections (\d+)", COMPOSE.read_text())
    assert stated, "the connection budget comment is missing from docker-compose.yml"
    assert (int(stated.group(1)), int(stated.group(2))) == (total, max_connections)


# What each image ships, from its documented contents (see docs/deployment.md, "Healthchecks"):
# postgres:16 is Debian with the server's client tools on PATH; temporalio/server is Alpine, whose
# busybox provides nc (with -z); the Tally image is python:3.11-slim with Tally's virtualenv on PATH.
IMAGE_COMMANDS = {
    "postgres": {"pg_isready", "psql"},
    "temporalio/server": {"nc"},
    "temporalio/admin-tools": {"temporal", "nc", "sh"},
    "temporalio/ui": set(),
    "tally": {"python", "tally"},
}


def _image_family(service: dict) -> str:
    if "build" in service:  # built from this repository's Dockerfile
        return "tally"
    family = service["image"].split(":")[0]
    assert family in IMAGE_COMMANDS, f"unknown image {service['image']!r}: say what it ships in IMAGE_COMMANDS"
    return family


def test_healthchecks_only_call_commands_their_image_ships():
    doc = load()
    checked = []
    for name, service in doc["services"].items():
        check = service.get("healthcheck")
        if not check:
            continue
        test = check["test"]
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        kind, argv = test[0], test[1:]
        assert kind in ("CMD", "CMD-SHELL"), f"{name}: healthcheck kind {kind}"
        if kind == "CMD-SHELL":
            argv = shlex.split(argv[0])
        family = _image_family(service)
        assert argv[0] in IMAGE_COMMANDS[family], f"{name}: {argv[0]!r} is not known to be in the {family} image"
        checked.append(name)
    assert {"postgres", "temporal", "tally-api"} <= set(checked)
