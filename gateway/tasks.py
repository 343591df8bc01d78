"""Thin Celery entry points of the gateway package."""

from celery import shared_task

from gateway import health


@shared_task(name="gateway.tasks.record_heartbeat", ignore_result=True)
def record_heartbeat() -> None:
    """Scheduled by beat and run by a worker: proves both are alive (see /readyz)."""
    health.record_heartbeat("worker")
