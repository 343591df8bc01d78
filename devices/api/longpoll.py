"""Our device protocol's long poll on the ASGI process (``gateway.asgi``): the wait holds no
thread and no database connection.

The poll itself stays the WSGI view (``devices.api.views.PollView``, called with
``"wait": 0``), so its rules live in one place. While it hands out nothing and the phone
allows waiting, this waits for the device's signal (``devices.streams.hub``) or for the
next scheduled message to fall due, and polls again; the phone gets the first answer that
has messages, or the last empty one when its wait is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson

from devices import handoff, services
from devices.api.views import MAX_DEVICE_BODY_BYTES
from devices.streams import bearer_token, hub, run

Scope = dict[str, Any]
App = Any


async def _body(receive: Any) -> bytes | None:
    """The request body, or None when it is larger than the device API accepts."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_DEVICE_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # nothing more: the request is complete
        return {"type": "http.disconnect"}

    return receive


async def _call(django: App, scope: Scope, body: bytes) -> list[dict[str, Any]]:
    """Run the WSGI poll with this body; its ASGI messages, not yet sent."""
    messages: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        messages.append(message)

    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await django({**scope, "headers": headers}, _replay(body), keep)
    return messages


def _has_messages(messages: list[dict[str, Any]]) -> bool:
    start = next((m for m in messages if m["type"] == "http.response.start"), None)
    if start is None or start["status"] != 200:
        return True  # an error is the answer
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    try:
        return bool(orjson.loads(body).get("messages"))
    except (orjson.JSONDecodeError, AttributeError):
        return True


async def app(scope: Scope, receive: Any, send: Any, django: App) -> None:
    body = await _body(receive)
    payload: Any = None
    if body:
        with contextlib.suppress(orjson.JSONDecodeError):
            payload = orjson.loads(body)
    wait = payload.get("wait") if isinstance(payload, dict) else None
    token = bearer_token(scope)
    device = None
    if isinstance(wait, int) and not isinstance(wait, bool) and 0 < wait <= 3600 and token:
        device = await run(services.authenticate_device, token)
    if body is None or device is None or not isinstance(payload, dict):
        # Nothing to wait for here: the view answers (and refuses what it must).
        for message in await _call(django, scope, body or b""):
            await send(message)
        return
    assert isinstance(wait, int)
    deadline = time.monotonic() + min(wait, handoff.MAX_WAIT_SECONDS)
    once = orjson.dumps({**payload, "wait": 0})
    signals = hub.subscribe(device.pk)  # before the first poll: a ring meanwhile is kept
    try:
        while True:
            answer = await _call(django, scope, once)
            remaining = deadline - time.monotonic()
            if _has_messages(answer) or remaining <= 0:
                break
            due = await run(handoff.next_offer_in, device)
            step = remaining if not due else min(remaining, due + 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.get(), step)
    finally:
        hub.unsubscribe(device.pk, signals)
    for message in answer:
        await send(message)
