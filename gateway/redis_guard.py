"""Fail fast while a Redis server is hung or down.

Redis only rings doorbells, counts rate limits and carries Celery's signals; the database
holds the work, so every caller has a fallback. What a request cannot afford is to wait: a
stopped (``kill -STOP``) Redis still completes TCP connections in the kernel and then
answers nothing. So every client is built with connect and socket timeouts of
REDIS_TIMEOUT_SECONDS, and once a call to a server fails or times out, this process stops
calling that server for RETRY_AFTER_SECONDS. The requests in between skip their Redis work
at once instead of each waiting out a timeout, which during an outage would soon hold every
web thread. The first call after the pause tries the server again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

RETRY_AFTER_SECONDS = 5.0

T = TypeVar("T")

# server -> monotonic time until which it is not called. Plain dict operations are atomic
# under the GIL, and a lost update between two threads only costs one extra attempt.
_down_until: dict[str, float] = {}


class Unavailable(redis.ConnectionError):
    """Refused without trying: the server failed moments ago."""


def server_of_url(url: str) -> str | None:
    """The key under which a Redis URL's server is tracked ("host:port" or a socket path,
    as GuardedConnectionPool names it), or None when the URL is not Redis (the embedded
    filesystem broker)."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "redis+socket", "socket"):
        return parts.path
    if parts.scheme not in ("redis", "rediss"):
        return None
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or 'localhost'}:{port or 6379}"


def is_down(server: str) -> bool:
    until = _down_until.get(server)
    return until is not None and time.monotonic() < until


def mark_down(server: str) -> None:
    _down_until[server] = time.monotonic() + RETRY_AFTER_SECONDS


def refuse_if_down(server: str) -> None:
    if is_down(server):
        raise Unavailable(
            f"Redis at {server} failed moments ago; not called for {RETRY_AFTER_SECONDS:.0f} s"
        )


class GuardedRetry(Retry):
    """redis-py runs every connect, command and pub/sub read through its connection's Retry.

    This one never retries (each caller has a fallback, and a retry would double the wait),
    refuses at once while its server is marked down, and marks it down on a connection
    error or a timeout. Error replies (a wrong type, a script error) are not outages.
    """

    def __init__(self, server: str) -> None:
        super().__init__(NoBackoff(), 0)
        self.server = server

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        refuse_if_down(self.server)
        try:
            return super().call_with_retry(do, fail, is_retryable, with_failure_count)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            mark_down(self.server)
            raise


class GuardedConnectionPool(redis.ConnectionPool):
    """A redis-py pool whose connections use GuardedRetry. For the Django cache
    (``OPTIONS["pool_class"]``) and the doorbell (devices.wake)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.server = str(
            kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        )
        kwargs["retry"] = GuardedRetry(self.server)
        super().__init__(*args, **kwargs)
