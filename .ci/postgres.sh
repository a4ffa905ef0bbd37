#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the SQL-source tests and print the environment that points at it.
#
#   eval "$(bash .ci/postgres.sh)"        # installs postgresql from Debian packages if missing, starts the
#                                          # server on 127.0.0.1, creates the database, and exports
#                                          # CRM_ANALYTICS_POSTGRES_URL (a SQLAlchemy URL)
#   bash .ci/postgres.sh stop             # stops it
#
# Settings (environment): CRM_PG_PORT (default 54329), CRM_PG_DATA (default /tmp/crm-analytics-pg),
# CRM_PG_DATABASE (default crm_analytics_test). Idempotent: a running server is reused.
# Only the export line goes to standard output; progress goes to standard error.
set -euo pipefail

port="${CRM_PG_PORT:-54329}"
data="${CRM_PG_DATA:-/tmp/crm-analytics-pg}"
database="${CRM_PG_DATABASE:-crm_analytics_test}"

as_root=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
fi

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bin="$(find_bin)"
if [ -z "$bin" ]; then
    echo "postgres.sh: installing postgresql from Debian packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq >&2
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends postgresql >&2
    bin="$(find_bin)"
fi

# initdb and the server refuse to run as root: use the postgres account then
run_pg=()
if [ "$(id -u)" -eq 0 ]; then
    run_pg=(runuser -u postgres --)
fi

if [ "${1:-}" = "stop" ]; then
    "${run_pg[@]}" "$bin/pg_ctl" -D "$data" -m fast stop >&2 || true
    exit 0
fi

if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$data"; fi
    chmod 700 "$data"
    "${run_pg[@]}" "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >&2
fi

if ! "${run_pg[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    "${run_pg[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $data" start >&2
fi

psql=(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" != "1" ]; then
    "${psql[@]}" -c "CREATE DATABASE \"$database\"" >&2
fi

echo "export CRM_ANALYTICS_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:$port/$database"
