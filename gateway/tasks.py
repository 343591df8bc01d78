"""Thin Celery entry points of the gateway package, and the safe way to enqueue."""

import logging
from typing import Any

from celery import shared_task
from django.db import transaction

from gateway import health
from gateway.celery import app

log = logging.getLogger(__name__)


def enqueue_on_commit(task_name: str, *args: Any, queue: str | None = None) -> None:
    """Send a task once the current transaction commits; never fail the caller for it.

    The database already holds the work, and a beat sweep finds work whose task was lost,
    so a broker that is down costs latency, not data. Tasks are named, not imported, so
    services need not import the task modules that call them.
    """

    def send() -> None:
        try:
            app.send_task(task_name, args=list(args), queue=queue)
        except Exception as exc:  # kombu raises many kinds; none may break a request
            log.warning("could not enqueue %s%r (a sweep will catch up): %s", task_name, args, exc)

    transaction.on_commit(send)


@shared_task(name="gateway.tasks.record_heartbeat", ignore_result=True)
def record_heartbeat() -> None:
    """Scheduled by beat and run by a worker: proves both are alive (see /readyz)."""
    health.record_heartbeat("worker")
