"""The Celery application. Configuration lives in settings.py under the CELERY_ prefix."""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_ready

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
