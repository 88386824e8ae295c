#!/usr/bin/env bash
# Runs ONCE, when the postgres container starts on an empty data volume (the official image
# executes /docker-entrypoint-initdb.d/* then). It is not re-run on later starts: to change a
# password afterwards use ALTER ROLE; to start over remove the volume (`docker compose down -v`).
#
# One Postgres server, three databases, two least-privilege login roles:
#   tally                -> owned by role "tally"    (Tally's system of record; Alembic migrates it)
#   temporal             -> owned by role "temporal" (Temporal persistence)
#   temporal_visibility  -> owned by role "temporal" (Temporal visibility / search attributes)
# The Temporal schemas are created by the temporal-schema job (temporal-sql-tool), not here.
#
# Passwords come from the container environment (see docker-compose.yml). psql variables
# (:'name') quote them, so any character is safe.
#
# The image executes this file when it is executable and sources it otherwise, so it changes no
# shell options and fails through `exit` / ON_ERROR_STOP either way.

: "${TALLY_DB_PASSWORD:?TALLY_DB_PASSWORD must be set for the postgres service}"
: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD must be set for the postgres service}"

psql -v ON_ERROR_STOP=1 \
     --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
     -v tally_password="$TALLY_DB_PASSWORD" \
     -v temporal_password="$TEMPORAL_DB_PASSWORD" <<'SQL' || exit 1
CREATE ROLE tally    LOGIN PASSWORD :'tally_password';
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';

CREATE DATABASE tally               OWNER tally;
CREATE DATABASE temporal            OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;

-- Only each database's owner (and the superuser) may connect to it.
REVOKE ALL ON DATABASE tally               FROM PUBLIC;
REVOKE ALL ON DATABASE temporal            FROM PUBLIC;
REVOKE ALL ON DATABASE temporal_visibility FROM PUBLIC;
SQL

# Temporal's visibility schema wants the btree_gin extension. It is a trusted extension (the
# database owner could create it), but creating it here as the superuser keeps the schema job
# independent of that detail; the schema script skips it when it already exists.
psql -v ON_ERROR_STOP=1 \
     --username "${POSTGRES_USER:-postgres}" --dbname temporal_visibility \
     -c 'CREATE EXTENSION IF NOT EXISTS btree_gin;' || exit 1
