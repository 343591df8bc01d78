"""The HTTPS front for real: Debian's caddy with scripts/Caddyfile (its internal CA on
127.0.0.1) before the web server and the ASGI stream process, as a phone reaches them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.models import Device
from gateway.services import enrollment_token
from tests.conftest import missing_tool
from tests.devices.test_smsgate_events import ROOT, Server, _free_port, _queue, stop_group

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Caddy:
    def __init__(self, folder: Path, web: str, streams: str) -> None:
        self.port = _free_port()
        config = folder / "Caddyfile"
        config.write_text(
            "{\n\tadmin off\n\tskip_install_trust\n"
            f"\thttp_port {_free_port()}\n\thttps_port {self.port}\n"
            f"\tstorage file_system {folder / 'data'}\n}}\n"
            f"import {ROOT / 'scripts' / 'Caddyfile'}\n"
        )
        env = {
            **os.environ,
            "HOME": str(folder),
            "XDG_DATA_HOME": str(folder / "xdg"),
            "XDG_CONFIG_HOME": str(folder / "xdg"),
            "GATEWAY_SITE": f"127.0.0.1:{self.port}",
            "GATEWAY_WEB": web,
            "GATEWAY_STREAMS": streams,
        }
        self.log = folder / "caddy.log"
        self.process = subprocess.Popen(
            ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.root = folder / "data" / "pki" / "authorities" / "local" / "root.crt"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.root.exists():
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"caddy did not start:\n{self.log.read_text()[-3000:]}")

    def connection(self, timeout: float = 20) -> http.client.HTTPSConnection:
        # The phone trusts the internal CA's root (installed as a user CA): so do we.
        context = ssl.create_default_context(cafile=str(self.root))
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)

    def stop(self) -> None:
        stop_group(self.process)


@pytest.fixture
def front(tmp_path: Path, live_server, settings) -> Iterator[Caddy]:
    if shutil.which("caddy") is None:
        missing_tool("caddy is not installed")
    settings.BEHIND_PROXY = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.USE_X_FORWARDED_HOST = True
    settings.PUBLIC_URL = ""
    streams = Server(tmp_path / "uvicorn.log")
    web = live_server.url.removeprefix("http://")
    caddy = Caddy(tmp_path, web, f"127.0.0.1:{streams.port}")
    try:
        yield caddy
    finally:
        caddy.stop()
        streams.stop()


def test_a_phone_reaches_the_api_and_its_event_stream_over_https(front, make_user):
    token = enrollment_token(make_user("owner@example.com").account)
    conn = front.connection()
    body = json.dumps({"name": "google/sdk", "simCards": []})
    conn.request("POST", "/api/mobile/v1/device", body,
                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    answer = conn.getresponse()
    registered = json.loads(answer.read())
    assert answer.status == 201, registered
    device_token = registered["token"]

    # The URLs handed to the phone are the front's https address (X-Forwarded-*).
    conn.request(
        "GET", "/api/mobile/v1/settings", headers={"Authorization": f"Bearer {device_token}"}
    )
    answer = conn.getresponse()
    settings_body = json.loads(answer.read())
    assert settings_body["gateway"]["cloud_url"] == f"https://127.0.0.1:{front.port}/api/mobile/v1"

    # The stream goes through the front unbuffered: each event arrives as it is sent.
    stream = front.connection(timeout=30)
    stream.request("GET", "/api/mobile/v1/events",
                   headers={"Authorization": f"Bearer {device_token}", "Accept": "text/event-stream"})  # fmt: skip
    response = stream.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    lines: list[str] = []
    while "event: WebhooksUpdated" not in lines:
        lines.append(response.readline().decode().rstrip("\n"))
    _queue(Device.objects.get(pk=int(registered["id"])).pk, urgent=True)
    while "event: MessageEnqueued" not in lines:
        lines.append(response.readline().decode().rstrip("\n"))
    stream.close()
    conn.close()
