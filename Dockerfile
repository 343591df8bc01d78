# The gateway image: web (gunicorn), Celery worker and beat all run from it
# (see docker-compose.yml for the commands).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_VAR_DIR=/app/var

WORKDIR /app
COPY . .
RUN pip install -c requirements.lock . \
    && SECRET_KEY=collectstatic-only-not-used-at-run-time-0000 python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app gateway \
    && mkdir -p /app/var && chown gateway /app/var

USER gateway
EXPOSE 8000
CMD ["gunicorn", "gateway.wsgi", "-c", "python:gateway.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--access-logfile", "-"]
