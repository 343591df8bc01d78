"""gunicorn settings shared by every way the gateway is started (-c python:gateway.gunicorn_conf).

Command-line options (bind, workers, threads) still come from the Procfile / compose file.
"""

import gc
import os
from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from gateway.redaction import install as install_redaction


class RedactingLogger(Logger):
    """gunicorn's logger, with secrets masked in its access and error lines: request lines
    carry query strings (``?token=...``) and headers may be logged by a custom format."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            install_redaction(log)


logger_class = RedactingLogger


def post_worker_init(worker: object) -> None:
    # Everything loaded so far (Django, the app) lives as long as the worker: moving it out
    # of the collector's reach removes the 40-80 ms full collections that otherwise show up
    # as latency spikes under load.
    gc.freeze()


def child_exit(server: object, worker: Any) -> None:
    # Multiprocess metrics (gateway.metrics): a worker's live samples go with it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
