#!/bin/sh
# One-shot job, run in the temporalio/admin-tools image AFTER the Temporal server is up:
#   1. waits until the frontend answers the gRPC health check,
#   2. registers Tally's namespace (if missing) with its retention,
#   3. registers Tally's custom search attributes on it, as listed in search-attributes.txt beside
#      this script (generated from the capability registry, capabilities/__init__.py; a test keeps them
#      equal), so the Temporal UI can answer "BillingAccountIds = 'acct_42' AND BillingPeriod = '2026-10'".
#   4. waits until the namespace lists them, so workers start on a namespace that knows them.
# Idempotent: an existing namespace is left as it is; creating a search attribute that already
# exists with the same type is a no-op (a different type is an error, on purpose).
#
# POSIX sh only (the admin-tools image has no bash guarantee); uses the `temporal` CLI.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS is required}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-2160h}"
ATTEMPTS="${SETUP_MAX_ATTEMPTS:-90}"
SLEEP="${SETUP_RETRY_SECONDS:-2}"
ATTRIBUTES_FILE="${SEARCH_ATTRIBUTES_FILE:-$(dirname "$0")/search-attributes.txt}"
# "Name Type" lines, comments and blank lines skipped.
ATTRIBUTES=$(grep -v '^[[:space:]]*#' "$ATTRIBUTES_FILE" | grep -v '^[[:space:]]*$')

# retry CMD...: run CMD until it succeeds, at most $ATTEMPTS times.
retry() {
    n=1
    until "$@"; do
        if [ "$n" -ge "$ATTEMPTS" ]; then
            echo "temporal-setup: giving up after $n attempts: $*" >&2
            return 1
        fi
        n=$((n + 1))
        sleep "$SLEEP"
    done
}

healthy() {
    temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1
}

ensure_namespace() {
    if temporal operator namespace describe --namespace "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1; then
        return 0
    fi
    temporal operator namespace create --namespace "$NAMESPACE" --address "$ADDRESS" \
        --retention "$RETENTION" --description "Tally billing workflows"
}

ensure_search_attributes() {
    echo "$ATTRIBUTES" | while read -r name kind; do
        temporal operator search-attribute create --namespace "$NAMESPACE" --address "$ADDRESS" \
            --name "$name" --type "$kind" || return 1
    done
}

search_attributes_listed() {
    listed=$(temporal operator search-attribute list --namespace "$NAMESPACE" --address "$ADDRESS") || return 1
    echo "$ATTRIBUTES" | while read -r name _kind; do
        echo "$listed" | grep -qw "$name" || return 1
    done
}

echo "temporal-setup: waiting for the Temporal frontend at $ADDRESS"
retry healthy
echo "temporal-setup: ensuring namespace '$NAMESPACE' (retention $RETENTION for new namespaces)"
retry ensure_namespace
echo "temporal-setup: ensuring search attributes:" $ATTRIBUTES
# Retried: a just-created namespace takes a few seconds to reach every frontend's cache.
retry ensure_search_attributes
retry search_attributes_listed
echo "temporal-setup: namespace '$NAMESPACE' is ready"
