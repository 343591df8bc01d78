"""The Celery application. Configuration lives in settings.py under the CELERY_ prefix."""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_ready,
)

from gateway.redaction import install as install_redaction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

app = Celery("gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_worker_logs(logger: logging.Logger, **kwargs: Any) -> None:
    # The worker and beat replace the handlers of settings.LOGGING with their own.
    install_redaction(logger)


@worker_ready.connect
def _serve_metrics(**kwargs: Any) -> None:
    # A worker in its own container has no web process beside it to add up its samples.
    from django.conf import settings

    if settings.METRICS_WORKER_PORT and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from gateway.metrics import worker_server

        worker_server(settings.METRICS_WORKER_PORT, settings.METRICS_WORKER_BIND)


@task_prerun.connect
@task_postrun.connect
def _database_hygiene(task: Any = None, **kwargs: Any) -> None:
    """Around each task what Django does around each request: drop a connection that is
    broken or older than DB_CONN_MAX_AGE (settings.CELERY_DB_REUSE_MAX keeps Celery's own
    fixup from closing every connection every time). Not for eager tasks: they run inside
    the caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
