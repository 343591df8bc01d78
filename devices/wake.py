"""Doorbell for long-polling phones: "work may be waiting for device N".

Only a signal: the database holds the work, and a poll always re-reads it, so a lost or
duplicated ring changes nothing but latency. Redis pub/sub carries it between processes;
without Redis (the embedded default) there is no doorbell and phones simply poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable

import redis
from django.conf import settings

log = logging.getLogger(__name__)

_pool_lock = threading.Lock()
_pool: redis.ConnectionPool | None = None


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def _client() -> redis.Redis:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = redis.ConnectionPool.from_url(
                settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=30
            )
    return redis.Redis(connection_pool=_pool)


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
    except redis.RedisError as exc:
        # The phone will find the work on its next poll anyway.
        log.warning("could not ring devices: %s", exc)


class Doorbell:
    """Subscribe to one device's doorbell for the duration of a long poll.

    Subscribe first, then check the database, then wait: a ring sent between the check and
    the wait is still delivered. Without Redis, wait() returns False at once.
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
                log.warning("long poll subscribe failed, plain polling: %s", exc)
                self.pubsub = None
        return self

    def wait(self, timeout: float) -> bool:
        """True when rung within ``timeout`` seconds."""
        if self.pubsub is None:
            return False
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                # None also comes back for the (ignored) subscribe confirmation: go on.
                if self.pubsub.get_message(timeout=remaining) is not None:
                    return True
        except redis.RedisError as exc:
            log.warning("long poll wait failed: %s", exc)
        return False

    def __exit__(self, *exc_info: object) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self.pubsub.close()
