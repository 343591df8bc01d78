#!/usr/bin/env bash
# Install (first run only) and run the gateway: web server (WSGI), stream server (ASGI:
# the SMSGate app's event streams), Celery workers and beat together.
# With no configuration it runs embedded (SQLite + a filesystem broker under var/); set
# DATABASE_URL / REDIS_URL (see .env.example) to use PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
if [ -f .env ]; then
    set -a; . ./.env; set +a
fi
python manage.py migrate --noinput
# Every process of this run writes its metrics samples here; /metrics adds them up. Emptied
# at each start (prometheus_client's multiprocess mode wants a fresh folder per run).
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-${GATEWAY_VAR_DIR:-$PWD/var}/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
# Static files are collected again only when what they come from changed: the installed
# packages (the install stamp), the settings, our own static folders.
static_stamp=staticfiles/.gateway-collected
static_sources="$( { cat .venv/.gateway-install gateway/settings.py; \
    find gateway devices messaging contacts -path '*/static/*' -type f -printf '%p %s %T@\n' | sort; } \
    | sha256sum | cut -d' ' -f1)"
if [ ! -f "$static_stamp" ] || [ "$(cat "$static_stamp")" != "$static_sources" ]; then
    python manage.py collectstatic --noinput --verbosity 0
    echo "$static_sources" > "$static_stamp"
fi

port="${GATEWAY_PORT:-8000}"
echo
echo "  SMS gateway: http://${GATEWAY_BIND:-127.0.0.1}:${port}/admin/"
echo "  Event streams (SMSGate app, behind an HTTPS front): port ${GATEWAY_STREAMS_PORT:-8001}"
echo "  First account: .venv/bin/python manage.py createaccount you@example.com"
echo
# Ctrl-C (or a service manager's SIGTERM) stops each program the way it means to stop
# (gateway/supervisor.py); GATEWAY_STOP_SECONDS bounds the wait.
exec python -m gateway.supervisor --procfile Procfile
