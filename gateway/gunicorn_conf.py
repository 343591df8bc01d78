"""gunicorn settings shared by every way the gateway is started (-c python:gateway.gunicorn_conf).

Command-line options (bind, workers, threads) still come from the Procfile / compose file.
"""

import gc


def post_worker_init(worker: object) -> None:
    # Everything loaded so far (Django, the app) lives as long as the worker: moving it out
    # of the collector's reach removes the 40-80 ms full collections that otherwise show up
    # as latency spikes under load.
    gc.freeze()
