"""The ASGI entry point (``uvicorn gateway.asgi:application``): the gateway's long-lived
connections, which must not hold a thread each while they wait.

It serves the SMSGate app's event stream (``/api/mobile/v1/events``) and the waiting part
of our device protocol's long poll (``/api/device/v1/poll``) natively; every other
path goes to the same Django application as ``gateway.wsgi``, run in a fixed pool of
threads, so one ASGI process can also serve a whole small install alone. The production
shape runs it beside the WSGI web process (gunicorn, threads), whose hot paths measured
faster there, and the HTTPS front sends the stream paths here (docs/operations.md).
"""

from __future__ import annotations

import os
import re
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.core.wsgi import get_wsgi_application

_django = WSGIMiddleware(get_wsgi_application(), workers=settings.WEB_THREADS)  # type: ignore[arg-type]

# After Django is set up: it imports models.
from devices.api import longpoll  # noqa: E402
from devices.mobile import events  # noqa: E402
from devices.streams import hub  # noqa: E402
from gateway import outage  # noqa: E402

_EVENTS = re.compile(r"/+api/+mobile/+v1/+events/?")
_POLL = re.compile(r"/+api/+device/+v1/+poll")


async def _answering_outages(
    app: Any, scope: dict[str, Any], receive: Any, send: Any, *extra: Any
) -> None:
    """A native path reaches the database outside Django's middleware: an unreachable
    database answers it as gateway.outage answers every other path (503 in its API's
    shape), not with the server's 500. A stream already open is ended: the phone
    reconnects."""
    started = ended = False

    async def tracked(message: dict[str, Any]) -> None:
        nonlocal started, ended
        started = started or message["type"] == "http.response.start"
        ended = ended or (message["type"] == "http.response.body" and not message.get("more_body"))
        await send(message)

    try:
        await app(scope, receive, tracked, *extra)
    except Exception as exc:
        if not outage.unreachable(exc):
            raise
        outage.report(scope["method"], scope["path"], exc)
        if not started:
            for message in outage.asgi_response(re.sub("/+", "/", scope["path"])):
                await send(message)
        elif not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await hub.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await hub.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http" and _EVENTS.fullmatch(scope["path"]):
        await _answering_outages(events.app, scope, receive, send)
        return
    if scope["type"] == "http" and scope["method"] == "POST" and _POLL.fullmatch(scope["path"]):
        await _answering_outages(longpoll.app, scope, receive, send, _django)
        return
    await _django(scope, receive, send)  # type: ignore[arg-type]
