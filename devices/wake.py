"""Doorbell for long-polling phones: "work may be waiting for device N".

Only a signal: the database holds the work, and a poll always re-reads it, so a lost or
duplicated ring changes nothing but latency. Redis pub/sub carries it between processes.
Without Redis (the embedded default) a long poll answers at once, and the signals for
event streams (``signal``) go through a small table that the stream process reads about
once a second (``devices.streams``), written only while a stream process runs.

Besides "work may be waiting" (``ring``), a signal names what happened for the SMSGate
app's event stream: ``cancelled`` (with the message's wire id), ``settings``, ``webhooks``.

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
from pathlib import Path

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


ENQUEUED = "enqueued"
CANCELLED = "cancelled"
SETTINGS = "settings"
WEBHOOKS = "webhooks"
# Ask the SMSGate app to scan its inbox again (data: the JSON of its export request).
EXPORT = "export"
# Touched by a running stream process (embedded default only): signals are written to the
# table only while it is fresh, so a plain addsms writes nothing more without streams.
STREAMS_MARK_SECONDS = 30


def streams_mark() -> Path:
    return Path(settings.VAR_DIR) / "streams.alive"


def _streams_running() -> bool:
    try:
        return time.time() - streams_mark().stat().st_mtime < 2 * STREAMS_MARK_SECONDS
    except OSError:
        return False


def ring(device_ids: Iterable[int]) -> None:
    """Wake the phones of these devices if they are waiting. Never raises."""
    signal(device_ids, ENQUEUED)


def signal(device_ids: Iterable[int], kind: str, data: str = "") -> None:
    """Tell these devices' waiting polls and event streams that ``kind`` happened. Never
    raises: a lost signal costs latency only (the phone's next pull finds the work)."""
    ids = set(device_ids)
    if not ids:
        return
    payload = f"{kind}:{data}".encode() if data else kind.encode()
    if not enabled():
        if _streams_running():
            _signal_table(ids, kind, data)
        return
    try:
        client = _client()
        with client.pipeline(transaction=False) as pipe:
            for device_id in ids:
                pipe.publish(channel(device_id), payload)
            pipe.execute()
    except redis_guard.Unavailable as exc:
        log.debug("did not ring devices: %s", exc)  # the failure itself was logged
    except redis.RedisError as exc:
        # The phone will find the work on its next poll anyway.
        log.warning("could not ring devices: %s", exc)


def _signal_table(device_ids: set[int], kind: str, data: str) -> None:
    from devices.models import DeviceSignal

    try:
        DeviceSignal.objects.bulk_create(
            DeviceSignal(device_id=i, kind=kind, data=data[:200]) for i in device_ids
        )
    except Exception as exc:  # a signal must never fail the request that sent it
        log.warning("could not signal devices: %s", exc)


def parse(payload: bytes) -> tuple[str, str]:
    """A published payload as (kind, data). The bare b"1" of older processes is a ring."""
    text = payload.decode(errors="replace")
    kind, _, data = text.partition(":")
    return (ENQUEUED if kind == "1" else kind), data


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
