"""Liveness and readiness: what /healthz and /readyz report."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection
from django.utils import timezone

from gateway.celery import app as celery_app
from gateway.models import ServiceHeartbeat

log = logging.getLogger(__name__)


def check_database() -> str | None:
    """None when the database answers a query, else the error text."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def check_broker() -> str | None:
    """None when the Celery broker accepts a connection, else the error text."""
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
            # Connecting is lazy on some transports; opening a channel talks to the server.
            conn.channel().close()  # type: ignore[attr-defined]
    except Exception as exc:
        log.warning("readiness: broker unreachable: %s", exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def record_heartbeat(name: str) -> None:
    """Note that a background process ran just now. Idempotent."""
    ServiceHeartbeat.objects.update_or_create(name=name, defaults={"seen_at": timezone.now()})


def readiness() -> tuple[bool, dict[str, Any]]:
    db_error = check_database()
    broker_error = check_broker()
    report: dict[str, Any] = {
        "database": db_error or "ok",
        "broker": broker_error or "ok",
    }
    if db_error is None:
        # Informational: the web can serve without a worker for a while (the database holds
        # the work), so a silent worker does not make the web unready.
        beat = ServiceHeartbeat.objects.filter(name="worker").first()
        report["worker_seen_seconds_ago"] = (
            int((timezone.now() - beat.seen_at).total_seconds()) if beat else None
        )
    ready = db_error is None and broker_error is None
    report["status"] = "ok" if ready else "unavailable"
    return ready, report
