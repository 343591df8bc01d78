"""The SMSGate app's event stream (SSE) against a real ASGI server process (uvicorn running
``gateway.asgi``), on the test database: with Redis in the PostgreSQL + Redis run, through
the signal table on the embedded default."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from devices import wake
from gateway.services import enrollment_token
from messaging import services as messaging
from messaging.models import Message, served_id
from tests.test_background_integration import _database_url, _free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0  # generous: a busy machine is slow, never wrong


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End a server started in its own process group: TERM, then KILL after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Server:
    """``uvicorn gateway.asgi:application`` on a free loopback port, in its own group."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "GATEWAY_VAR_DIR": str(django_settings.VAR_DIR),
            "SECRET_KEY": django_settings.SECRET_KEY,
            "STREAM_KEEPALIVE_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("REDIS_URL", None)
        if django_settings.REDIS_URL:
            env["REDIS_URL"] = django_settings.REDIS_URL
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway.asgi:application",
             "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"],
            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        raise AssertionError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_group(self.process)

    def request(self, method: str, path: str, body: Any = None, auth: str = "") -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        return answer.status, (json.loads(data) if data else None)


class Stream:
    """An open ``GET /events``, read line by line in a thread, as OkHttp's SSE reader does."""

    def __init__(self, server: Server, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.conn.request(
            "GET", "/api/mobile/v1/events",
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        )  # fmt: skip
        self.response = self.conn.getresponse()
        self.items: queue.Queue[tuple[str, str]] = queue.Queue()
        if self.response.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        name, data = "", None
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.items.put(("comment", line[1:].strip()))
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "":
                    if data is not None:  # the app dispatches only events with data
                        self.items.put((name or "MessageEnqueued", data))
                    name, data = "", None
        except (OSError, ValueError, AttributeError):  # closed by the test meanwhile
            pass
        self.items.put(("closed", ""))

    def next_event(self, *names: str, timeout: float = WAIT) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self.items.get(timeout=remaining)
            except queue.Empty:
                break
            if item[0] in names:
                return item
            if item[0] == "closed":
                raise AssertionError("the stream closed")
        raise AssertionError(f"no {names} within {timeout} s")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "uvicorn.log")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def phone(server: Server, make_user) -> dict[str, str]:
    # The enrollment token (the server process hashes passwords with its own hashers).
    auth = "Bearer " + enrollment_token(make_user("owner@example.com").account)
    status, body = server.request(
        "POST", "/api/mobile/v1/device", {"name": "google/sdk", "simCards": []}, auth=auth
    )
    assert status == 201, body
    return body


def _listening(stream: Stream) -> None:
    """The stream is open (its process subscribed to signals when it started)."""
    stream.next_event("comment")
    assert django_settings.REDIS_URL or wake._streams_running()


def _queue(device_id: int, **extra: Any) -> Message:
    from devices.models import Device

    device = Device.objects.get(pk=device_id)
    request = messaging.OutgoingSms(device.pk, "+4915752982212", "Hi", **extra)
    (pk,) = messaging.submit(device.account, [request])
    return Message.objects.get(pk=pk)


def test_a_fresh_phone_is_told_to_sync_then_hears_of_new_work_on_every_stream(server, phone):
    first = Stream(server, phone["token"])
    assert first.response.status == 200
    assert first.response.getheader("Content-Type").startswith("text/event-stream")
    assert first.next_event("SettingsUpdated")[0] == "SettingsUpdated"
    assert first.next_event("WebhooksUpdated")[0] == "WebhooksUpdated"
    second = Stream(server, phone["token"])  # the app may open another without closing
    _listening(first)
    _listening(second)
    _queue(int(phone["id"]), urgent=True)
    assert first.next_event("MessageEnqueued")[0] == "MessageEnqueued"
    assert second.next_event("MessageEnqueued")[0] == "MessageEnqueued"
    # Only the first stream after registration asks for a sync.
    with pytest.raises(AssertionError):
        second.next_event("SettingsUpdated", timeout=2)
    first.close()
    second.close()


def test_keepalive_comments_flow_while_nothing_happens(server, phone):
    stream = Stream(server, phone["token"])
    stream.next_event("comment")
    assert stream.next_event("comment")[1] == "keepalive"
    stream.close()


def test_a_cancel_reaches_the_stream_with_the_served_id(server, phone):
    message = _queue(int(phone["id"]))
    status, items = server.request("GET", "/api/mobile/v1/message", auth=f"Bearer {phone['token']}")
    assert status == 200 and [i["id"] for i in items] == [served_id(message.pk, message.created_at)]
    stream = Stream(server, phone["token"])
    _listening(stream)
    messaging.cancel(message.account, [message.pk])
    _name, data = stream.next_event("MessageCancelled")
    assert json.loads(data) == {"messageId": items[0]["id"]}
    stream.close()


def test_a_scheduled_message_is_announced_when_it_falls_due(server, phone):
    stream = Stream(server, phone["token"])
    _listening(stream)
    _queue(int(phone["id"]), send_at=timezone.now() + timedelta(seconds=3))
    stream.next_event("MessageEnqueued")  # rung at creation
    # Then, with no further signal, when its time comes.
    stream.next_event("MessageEnqueued")
    stream.close()


def test_an_unknown_token_is_refused_with_401(server):
    stream = Stream(server, "dev_unknown")
    assert stream.response.status == 401
    assert stream.response.getheader("Content-Type") == "application/json"


def test_our_long_poll_waits_on_the_asgi_process_without_a_thread(server, paired):
    """The device protocol's long poll, served by the stream process: an SMS created while
    the phone waits is in the answer."""
    device, token = paired()
    answers: queue.Queue[tuple[int, Any]] = queue.Queue()

    def poll() -> None:
        answers.put(
            server.request("POST", "/api/device/v1/poll", {"wait": 20}, auth=f"Bearer {token}")
        )

    waiting = threading.Thread(target=poll, daemon=True)
    waiting.start()
    time.sleep(1.0)  # the poll is waiting (if it is not yet, it finds the SMS at once)
    message = _queue(device.pk, urgent=True)
    status, body = answers.get(timeout=WAIT)
    assert status == 200 and [m["id"] for m in body["messages"]] == [message.pk]
    assert body["lease"]


def test_a_long_poll_with_nothing_answers_empty_after_its_wait(server, paired):
    _device, token = paired()
    started = time.monotonic()
    status, body = server.request(
        "POST", "/api/device/v1/poll", {"wait": 2}, auth=f"Bearer {token}"
    )
    assert status == 200 and body["messages"] == [] and time.monotonic() - started >= 2
    status, body = server.request("POST", "/api/device/v1/poll", {"wait": 2}, auth="Bearer dev_x")
    assert status == 401


def test_the_operator_can_ask_phones_to_fetch_their_settings_again(server, phone):
    from devices import services
    from devices.models import Device

    stream = Stream(server, phone["token"])
    stream.next_event("WebhooksUpdated")  # the first stream after registration
    _listening(stream)
    device = Device.objects.get(pk=int(phone["id"]))
    assert services.request_app_sync(device.account, [device.pk]) == 1
    assert stream.next_event("SettingsUpdated")[0] == "SettingsUpdated"
    assert stream.next_event("WebhooksUpdated")[0] == "WebhooksUpdated"
    stream.close()


def test_one_new_message_is_announced_once(server, phone):
    stream = Stream(server, phone["token"])
    _listening(stream)
    # What the registration itself signalled may still come: let it pass.
    with pytest.raises(AssertionError):
        stream.next_event("none", timeout=2)
    _queue(int(phone["id"]))
    stream.next_event("MessageEnqueued")
    with pytest.raises(AssertionError):  # a reminder comes only after REMIND_SECONDS
        stream.next_event("MessageEnqueued", timeout=5)
    stream.close()


def test_an_inbox_refresh_reaches_the_stream_as_an_export_request(server, phone):
    from devices import services
    from devices.models import Device

    stream = Stream(server, phone["token"])
    stream.next_event("WebhooksUpdated")  # the first stream after registration
    _listening(stream)
    device = Device.objects.get(pk=int(phone["id"]))
    since = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    asked = services.request_inbox_export(device.account, None, since, since + timedelta(hours=2))
    assert asked == 1
    _name, data = stream.next_event("MessagesExportRequested")
    assert json.loads(data) == {
        "since": "2026-12-01T08:00:00.000Z",
        "until": "2026-12-01T10:00:00.000Z",
        "messageTypes": "SMS",
    }
    stream.close()
