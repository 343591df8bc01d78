"""Thin Celery entry points of the gateway package, and the safe way to enqueue."""

import logging
from typing import Any

from celery import shared_task
from django.db import transaction
from kombu.exceptions import OperationalError
from redis import RedisError

from gateway import health, redis_guard
from gateway.celery import app

log = logging.getLogger(__name__)


def enqueue_on_commit(task_name: str, *args: Any, queue: str | None = None) -> None:
    """Send a task once the current transaction commits; never fail the caller for it.

    The database already holds the work, and a beat sweep finds work whose task was lost,
    so a broker that is down costs latency, not data. Nor may it cost the request time:
    the publish is tried once (REDIS_TIMEOUT_SECONDS at most on a hung Redis, no retry),
    and for a few seconds after a failure not at all (gateway.redis_guard). Tasks are
    named, not imported, so services need not import the task modules that call them.
    """

    def send() -> None:
        server = redis_guard.server_of_url(str(app.conf.broker_url or ""))
        try:
            if server:
                redis_guard.refuse_if_down(server)
            app.send_task(task_name, args=list(args), queue=queue, retry=False)
        except redis_guard.Unavailable as exc:
            log.info("could not enqueue %s%r (a sweep will catch up): %s", task_name, args, exc)
        except Exception as exc:  # kombu raises many kinds; none may break a request
            if server and isinstance(exc, (OperationalError, RedisError, OSError)):
                redis_guard.mark_down(server)
            log.warning("could not enqueue %s%r (a sweep will catch up): %s", task_name, args, exc)

    transaction.on_commit(send)


@shared_task(name="gateway.tasks.record_heartbeat", ignore_result=True)
def record_heartbeat() -> None:
    """Scheduled by beat and run by a worker: proves both are alive (see /readyz)."""
    health.record_heartbeat("worker")
