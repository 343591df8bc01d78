"""Doorbell for long-polling phones: "work may be waiting for device N".

Only a signal: the database holds the work, and a poll always re-reads it, so a lost or
duplicated ring changes nothing but latency. Redis pub/sub carries it between processes;
without Redis (the embedded default) there is no doorbell and phones simply poll.

Ringing runs on the request path (after an SMS commits): it waits at most
REDIS_TIMEOUT_SECONDS on a hung Redis, and not at all for a few seconds after a failure
(gateway.redis_guard). A waiting subscriber is not cut short by that timeout: its wait
reads with its own timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable

import redis
from django.conf import settings

from gateway import redis_guard

log = logging.getLogger(__name__)

# While Redis is unreachable, a long poll checks the database this often instead.
FALLBACK_POLL_SECONDS = 1.0

_pool_lock = threading.Lock()
_pools: dict[str, redis.ConnectionPool] = {}


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def _client() -> redis.Redis:
    url = settings.REDIS_URL
    with _pool_lock:
        pool = _pools.get(url)
        if pool is None:
            pool = _pools[url] = redis_guard.GuardedConnectionPool.from_url(
                url,
                socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
                socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
            )
    return redis.Redis(connection_pool=pool)


def channel(device_id: int) -> str:
    return f"gateway:device:{device_id}"


def ring(device_ids: Iterable[int]) -> None:
    """Wake the phones of these devices if they are waiting. Never raises."""
    if not enabled():
        return
    try:
        client = _client()
        with client.pipeline(transaction=False) as pipe:
            for device_id in set(device_ids):
                pipe.publish(channel(device_id), b"1")
            pipe.execute()
    except redis_guard.Unavailable as exc:
        log.debug("did not ring devices: %s", exc)  # the failure itself was logged
    except redis.RedisError as exc:
        # The phone will find the work on its next poll anyway.
        log.warning("could not ring devices: %s", exc)


class Doorbell:
    """Subscribe to one device's doorbell for the duration of a long poll.

    Subscribe first, then check the database, then wait: a ring sent between the check and
    the wait is still delivered. Without Redis, wait() returns False at once. When Redis is
    configured but unreachable, wait() sleeps up to FALLBACK_POLL_SECONDS and returns False:
    the caller checks the database again, so a waiting phone still gets new work within
    about a second (instead of re-polling in a tight loop, or not at all).
    """

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.pubsub: redis.client.PubSub | None = None

    def __enter__(self) -> Doorbell:
        if enabled():
            try:
                self.pubsub = _client().pubsub(ignore_subscribe_messages=True)
                self.pubsub.subscribe(channel(self.device_id))
            except redis.RedisError as exc:
                log.warning("long poll subscribe failed, polling the database: %s", exc)
                self._drop()
        return self

    def wait(self, timeout: float) -> bool:
        """True when rung within ``timeout`` seconds."""
        if not enabled():
            return False
        deadline = time.monotonic() + timeout
        if self.pubsub is not None:
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    # In slices: once a ring from this process has failed, the next read is
                    # refused (gateway.redis_guard) and the wait falls back to the database.
                    # None also comes back for the (ignored) subscribe confirmation: go on.
                    message = self.pubsub.get_message(timeout=min(remaining, FALLBACK_POLL_SECONDS))
                    if message is not None:
                        return True
                return False
            except redis.RedisError as exc:
                log.warning("long poll wait failed, polling the database: %s", exc)
                self._drop()
        # No doorbell (Redis unreachable): the caller checks the database again soon.
        time.sleep(max(0.0, min(deadline - time.monotonic(), FALLBACK_POLL_SECONDS)))
        return False

    def _drop(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self.pubsub.close()
            self.pubsub = None

    def __exit__(self, *exc_info: object) -> None:
        self._drop()
