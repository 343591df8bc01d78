"""Live event streams to phones, for the ASGI process (``gateway.asgi``): one hub per
process fans the doorbell's signals (``devices.wake``) out to the streams held open here.

With Redis, one pattern subscription per process carries every device's signals. Without
Redis (the embedded default), the hub reads new rows of the ``DeviceSignal`` table about
twice a second and marks the process as running (``wake.streams_mark``), so that senders
write those rows only while someone listens. Either way a signal is only a hint: a phone
fetches its messages from the database.

The database is reached from a small pool of long-lived threads (``run``): a waiting stream
holds no thread and no database connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import redis.asyncio as aioredis
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from devices import wake

log = logging.getLogger(__name__)

T = TypeVar("T")

# Threads that run the streams' database work (authentication, timers): few, long-lived,
# each keeping its connection like a web thread does.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="streams-db")
TABLE_POLL_SECONDS = 0.5
SIGNAL_KEEP = timedelta(seconds=60)


def _fresh(fn: Callable[..., T], *args: Any) -> T:
    close_old_connections()  # like the start of a request: drop a broken or old connection
    return fn(*args)


async def run(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking (ORM) work off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_executor, _fresh, fn, *args)


Event = tuple[str, str]


class Hub:
    def __init__(self) -> None:
        self.listeners: dict[int, set[asyncio.Queue[Event]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening (at the process's start, so no signal sent after it is missed),
        and wait until the subscription stands (at most ``timeout`` seconds)."""
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._feed())
        assert self._ready is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def subscribe(self, device_id: int) -> asyncio.Queue[Event]:
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._feed())
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=100)
        self.listeners[device_id].add(queue)
        return queue

    def unsubscribe(self, device_id: int, queue: asyncio.Queue[Event]) -> None:
        queues = self.listeners.get(device_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.listeners[device_id]

    def deliver(self, device_id: int, event: Event) -> None:
        for queue in list(self.listeners.get(device_id, ())):
            with contextlib.suppress(asyncio.QueueFull):  # a stuck stream loses hints only
                queue.put_nowait(event)

    async def _feed(self) -> None:
        while True:
            try:
                if wake.enabled():
                    await self._from_redis()
                else:
                    await self._from_table()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event hub: %s; retrying in 1 s", exc)
                # Signals may have been missed: let every stream re-check (cheap).
                for device_id in list(self.listeners):
                    self.deliver(device_id, (wake.ENQUEUED, ""))
                await asyncio.sleep(1.0)

    def _set_ready(self) -> None:
        if self._ready is not None:
            self._ready.set()

    async def _from_redis(self) -> None:
        client = aioredis.from_url(
            settings.REDIS_URL, socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS
        )
        try:
            async with client.pubsub() as pubsub:
                await pubsub.psubscribe(wake.channel(0).rsplit(":", 1)[0] + ":*")
                self._set_ready()
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    device = message["channel"].rsplit(b":", 1)[-1]
                    if device.isdigit():
                        self.deliver(int(device), wake.parse(message["data"]))
        finally:
            await client.aclose()

    async def _from_table(self) -> None:
        last = await run(_latest_signal)
        marked = 0.0
        while True:
            if time.monotonic() - marked > wake.STREAMS_MARK_SECONDS / 2:
                await run(_mark_and_prune)
                marked = time.monotonic()
                self._set_ready()
            for signal_id, device_id, kind, data in await run(_signals_after, last):
                last = signal_id
                self.deliver(device_id, (kind, data))
            await asyncio.sleep(TABLE_POLL_SECONDS)


def _latest_signal() -> int:
    from devices.models import DeviceSignal

    return DeviceSignal.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _signals_after(last: int) -> list[tuple[int, int, str, str]]:
    from devices.models import DeviceSignal

    return list(
        DeviceSignal.objects.filter(id__gt=last)
        .order_by("id")
        .values_list("id", "device_id", "kind", "data")[:1000]
    )


def _mark_and_prune() -> None:
    from devices.models import DeviceSignal

    mark = wake.streams_mark()
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    DeviceSignal.objects.filter(created_at__lt=timezone.now() - SIGNAL_KEEP).delete()


hub = Hub()


def bearer_token(scope: dict[str, Any]) -> str:
    """The ``Authorization: Bearer`` token of an ASGI request, or ""."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""
