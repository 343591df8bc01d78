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
python manage.py collectstatic --noinput --verbosity 0

port="${GATEWAY_PORT:-8000}"
echo
echo "  SMS gateway: http://${GATEWAY_BIND:-127.0.0.1}:${port}/admin/"
echo "  Event streams (SMSGate app, behind an HTTPS front): port ${GATEWAY_STREAMS_PORT:-8001}"
echo "  First account: .venv/bin/python manage.py createaccount you@example.com"
echo
exec honcho start --procfile Procfile
