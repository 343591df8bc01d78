#!/usr/bin/env bash
# Install the gateway with its dev tools and run every check: ruff, mypy, the migrations
# check, the test suite on the embedded default (SQLite), then again on PostgreSQL + Redis.
#
# TEST_DATABASE_URL / TEST_REDIS_URL choose the servers of the second run (defaults: the
# local PostgreSQL as user postgres, Redis database 15). The second run is required when
# CI=true or GATEWAY_TEST_SERVICES=require (a missing server then fails the run); otherwise
# it runs when both servers answer. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh --dev
export PATH="$PWD/.venv/bin:$PATH"

# The admin's browser test drives Debian's chromium (no browser download); the HTTPS
# front's test runs Debian's caddy; the monitoring kit's test runs Debian's prometheus;
# the PgBouncer test runs Debian's pgbouncer (in /usr/sbin, often not on a user's PATH).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v caddy >/dev/null 2>&1 || missing="$missing caddy"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
{ command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]; } >/dev/null 2>&1 || missing="$missing pgbouncer"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing$missing (Debian packages) for the browser, HTTPS front, monitoring and PgBouncer tests"
        # shellcheck disable=SC2086
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "== not installed:$missing; their tests will be skipped (CI requires them)"
    fi
fi
unset DATABASE_URL REDIS_URL CELERY_BROKER_URL
pg_url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gateway}"
redis_url="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
mode="${GATEWAY_TEST_SERVICES:-auto}"
[ "${CI:-}" = "true" ] && mode=require

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy .
echo "== kubernetes (checkov on the rendered overlays)"
scripts/lint-kubernetes.sh
echo "== migrations"
check_dir=$(mktemp -d)
GATEWAY_VAR_DIR="$check_dir" python manage.py makemigrations --check --dry-run
rm -rf "$check_dir"

sqlite_run() {
    GATEWAY_VAR_DIR="$PWD/var/test-sqlite" pytest --durations=12 "$@"
}
postgres_run() {
    DATABASE_URL="$pg_url" REDIS_URL="$redis_url" GATEWAY_REQUIRE_SERVICES=1 \
        GATEWAY_VAR_DIR="$PWD/var/test-postgres" pytest --durations=12 "$@"
}

services_up() {
    python - "$pg_url" "$redis_url" <<'PY'
import sys
import psycopg, redis
try:
    psycopg.connect(sys.argv[1].replace("/gateway", "/postgres"), connect_timeout=3).close()
    redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).ping()
except Exception as exc:
    print(f"   not reachable: {exc}")
    sys.exit(1)
PY
}

if ! { [ "$mode" = "require" ] || { [ "$mode" = "auto" ] && services_up; }; }; then
    echo "== tests on SQLite + filesystem broker (the embedded default)"
    sqlite_run "$@"
    echo "== PostgreSQL + Redis run skipped (servers not reachable; CI requires them)"
elif [ "${GATEWAY_TEST_PARALLEL:-1}" = "0" ]; then
    echo "== tests on SQLite + filesystem broker (the embedded default)"
    sqlite_run "$@"
    echo "== tests on PostgreSQL + Redis"
    postgres_run "$@"
else
    # The default: the two runs share nothing (their own database, broker and
    # var folder; ports are picked free) and mostly wait on real processes, so they can run
    # side by side (about half the time), the SQLite run's output printed when it is done.
    # GATEWAY_TEST_PARALLEL=0 runs them one after the other.
    mkdir -p var
    sqlite_log="$PWD/var/test-sqlite.log"
    echo "== tests on SQLite + filesystem broker (the embedded default), in the background"
    sqlite_run "$@" >"$sqlite_log" 2>&1 &
    sqlite_pid=$!
    echo "== tests on PostgreSQL + Redis"
    postgres_status=0
    postgres_run "$@" || postgres_status=$?
    sqlite_status=0
    wait "$sqlite_pid" || sqlite_status=$?
    echo "== tests on SQLite + filesystem broker (the embedded default): its output"
    cat "$sqlite_log"
    echo "== SQLite run: exit $sqlite_status; PostgreSQL + Redis run: exit $postgres_status"
    [ "$sqlite_status" = 0 ] && [ "$postgres_status" = 0 ]
fi
