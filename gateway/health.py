"""Liveness and readiness: what /healthz and /readyz report."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.utils import timezone

from gateway.celery import app as celery_app
from gateway.models import ServiceHeartbeat

log = logging.getLogger(__name__)

# /readyz answers within 2 s whatever hangs: the checks run side by side, each in its own
# thread, and one that has not answered after this many seconds is reported as failed.
CHECK_SECONDS = 1.5


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


def _check_database_in_thread() -> str | None:
    try:
        return check_database()
    finally:
        connection.close()  # this thread's own connection; the thread ends here


def run_bounded(
    checks: dict[str, Callable[[], str | None]], seconds: float
) -> dict[str, str | None]:
    """Run the checks concurrently; a check still running after ``seconds`` counts as
    failed ("no answer within ..."). Its thread is left to end on its own timeouts."""
    results: dict[str, str | None] = {}
    threads = []
    for name, check in checks.items():

        def run(name: str = name, check: Callable[[], str | None] = check) -> None:
            try:
                results[name] = check()
            except Exception as exc:  # a check must report, never raise
                results[name] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=run, name=f"readyz-{name}", daemon=True)
        thread.start()
        threads.append((name, thread))
    deadline = time.monotonic() + seconds
    report: dict[str, str | None] = {}
    for name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if name in results:
            report[name] = results[name]
        else:
            log.warning("readiness: %s did not answer within %.1f s", name, seconds)
            report[name] = f"no answer within {seconds:g} s"
    return report


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
    """(ready, report): database and broker each answered within CHECK_SECONDS."""
    errors = run_bounded(
        {"database": _check_database_in_thread, "broker": check_broker}, CHECK_SECONDS
    )
    db_error, broker_error = errors["database"], errors["broker"]
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
