"""``GET /api/mobile/v1/events``: the SMSGate app's Server-Sent Events stream (an ASGI app,
mounted by ``gateway.asgi``; a waiting stream holds no thread).

Events, as the app knows them: ``MessageEnqueued`` when work becomes due for the phone (a
new message, a scheduled one reaching its time, pacing letting the next through),
``MessageCancelled`` with ``{"messageId"}``, and ``SettingsUpdated`` + ``WebhooksUpdated``
once after a fresh registration. Every event has a ``data:`` line (the app drops events
without one); a comment goes out at least every STREAM_KEEPALIVE_SECONDS. Several streams
per device all get every event. Nothing is replayed: the app fetches on every (re)connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from django.conf import settings

from devices import handoff, services, wake
from devices.models import Device
from devices.streams import bearer_token, hub, run

# While work waits that a fetch did not take (the phone's batch is full, say), remind the
# phone at most this often.
REMIND_SECONDS = 30.0
# How often an open stream notes the phone as seen and re-checks its token.
CHECK_SECONDS = 60.0

Scope = dict[str, Any]


def _event(name: str, data: Any = None) -> bytes:
    payload = orjson.dumps(data if data is not None else {}).decode()
    return f"event: {name}\ndata: {payload}\n\n".encode()


_BY_SIGNAL = {
    wake.ENQUEUED: "MessageEnqueued",
    wake.SETTINGS: "SettingsUpdated",
    wake.WEBHOOKS: "WebhooksUpdated",
}


async def _refuse(send: Any, status: int, message: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps({"message": message})})


def _authenticate(token: str) -> Device | None:
    return services.authenticate_device(token, Device.Protocol.SMSGATE) if token else None


def _opened(phone: Device) -> bool:
    """The stream is open: the phone is seen; True if it must re-fetch settings and
    webhooks (its first stream since it registered)."""
    services.heartbeat(phone)
    return services.app_synced(phone)


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["method"] != "GET":
        await _refuse(send, 405, "Use GET")
        return
    token = bearer_token(scope)
    phone = await run(_authenticate, token)
    if phone is None:
        await _refuse(send, 401, "Device token is unknown or was revoked: register again")
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                # Proxies (nginx, and Caddy's flush for this path) must not buffer it.
                (b"x-accel-buffering", b"no"),
            ],
        }
    )
    queue = hub.subscribe(phone.pk)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await _stream(phone, token, queue, gone, send)
    finally:
        hub.unsubscribe(phone.pk, queue)
        gone.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream(
    phone: Device, token: str, queue: asyncio.Queue[Any], gone: Any, send: Any
) -> None:
    async def emit(chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})

    await emit(b": connected\n\n")
    if await run(_opened, phone):
        await emit(_event("SettingsUpdated"))
        await emit(_event("WebhooksUpdated"))

    async def offer_at(just_told: bool = False) -> float | None:
        """When to tell the phone of work next. ``just_told``: what is due now was just
        announced, so "due now" means "remind later", not "tell again at once"."""
        seconds = await run(handoff.next_offer_in, phone)
        if seconds is None:
            return None
        if just_told and seconds <= 0:
            seconds = REMIND_SECONDS
        return time.monotonic() + seconds

    offer = await offer_at()
    checked = time.monotonic()
    while True:
        now = time.monotonic()
        timeout = float(settings.STREAM_KEEPALIVE_SECONDS)
        if offer is not None:
            timeout = max(0.0, min(timeout, offer - now))
        waiting = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait(
            {waiting, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if gone in done:
            waiting.cancel()
            return
        if waiting in done:
            kind, data = waiting.result()
            if kind == wake.CANCELLED and data:
                await emit(_event("MessageCancelled", {"messageId": data}))
            elif kind == wake.EXPORT and data:
                await emit(_event("MessagesExportRequested", orjson.loads(data)))
            elif kind in _BY_SIGNAL:
                await emit(_event(_BY_SIGNAL[kind]))
            if kind == wake.ENQUEUED:
                offer = await offer_at(just_told=True)
            continue
        waiting.cancel()
        if offer is not None and time.monotonic() >= offer:
            await emit(_event("MessageEnqueued"))
            offer = await offer_at(just_told=True)
        else:
            await emit(b": keepalive\n\n")
        if time.monotonic() - checked >= CHECK_SECONDS:
            checked = time.monotonic()
            current = await run(_authenticate, token)
            if current is None:
                return  # revoked meanwhile: the app reconnects and is refused
            await run(services.heartbeat, current)
