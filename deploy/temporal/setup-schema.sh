#!/bin/sh
# One-shot job, run in the temporalio/admin-tools image BEFORE the Temporal server starts:
# brings Temporal's two Postgres databases to the schema version that this admin-tools release
# ships (keep its tag equal to the server's). This is Temporal's documented production procedure
# (temporal-sql-tool setup-schema, then update-schema); auto-setup is not used.
#
# Idempotent: setup-schema only creates the version tables when they are missing and leaves an
# existing version alone; update-schema applies only the versions not yet applied. Running it
# again after bumping TEMPORAL_VERSION is how a server upgrade gets its schema changes.
#
# The databases and the owning role are created by deploy/postgres/initdb (first start of the
# volume); this job connects as that role.
#
# temporal-sql-tool reads its connection from SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD and
# SQL_PLUGIN (set in docker-compose.yml). POSIX sh only: the admin-tools image has no bash
# guarantee.
set -eu

: "${SQL_HOST:?SQL_HOST is required}"
: "${SQL_USER:?SQL_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
: "${SQL_PLUGIN:=postgres12}"
: "${SQL_PORT:=5432}"
export SQL_HOST SQL_PORT SQL_USER SQL_PASSWORD SQL_PLUGIN

DB="${TEMPORAL_DB:-temporal}"
VISIBILITY_DB="${TEMPORAL_VISIBILITY_DB:-temporal_visibility}"
SCHEMA_ROOT="${TEMPORAL_SCHEMA_ROOT:-/etc/temporal/schema/postgresql/v12}"

migrate() {
    db=$1
    dir=$SCHEMA_ROOT/$2/versioned
    if [ ! -d "$dir" ]; then
        echo "temporal-schema: schema directory $dir not found in this image" >&2
        exit 1
    fi
    echo "temporal-schema: $db <- $dir"
    temporal-sql-tool --db "$db" setup-schema -v 0.0
    temporal-sql-tool --db "$db" update-schema -d "$dir"
}

migrate "$DB" temporal
migrate "$VISIBILITY_DB" visibility
echo "temporal-schema: $DB and $VISIBILITY_DB are up to date"
