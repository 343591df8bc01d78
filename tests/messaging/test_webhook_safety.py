"""Webhook targets and time limits: no way into the server's own network through IPv6 forms
that lead to IPv4, clean errors for bad ports, and a total deadline on every attempt."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.test import Client

from gateway import services as accounts
from messaging import webhooks
from messaging.models import WebhookEndpoint, WebhookEvent

# Each leads to a loopback or private IPv4 address.
EMBEDDED_PRIVATE = [
    "http://[::127.0.0.1]/x",  # IPv4-compatible
    "http://[::10.1.2.3]/x",
    "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped
    "http://[::ffff:169.254.169.254]/x",
    "http://[64:ff9b::7f00:1]/x",  # NAT64, well-known prefix
    "http://[64:ff9b::c0a8:101]/x",  # ... 192.168.1.1
    "http://[64:ff9b:1::7f00:1]/x",  # NAT64, local-use prefix
    "http://[64:ff9b:1:0:7f:0:100:0]/x",  # ... 127.0.0.1 in the /64 layout of RFC 6052
    "http://[2002:7f00:1::]/x",  # 6to4
    "http://[2002:a00:1:1::1]/x",  # ... 10.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x",  # Teredo, client 127.0.0.1
]
# The same forms around public IPv4 addresses: nothing private about them.
EMBEDDED_PUBLIC = [
    ("http://[::ffff:8.8.8.8]/x", "::ffff:8.8.8.8"),
    ("http://[64:ff9b::808:808]/x", "64:ff9b::808:808"),
    ("http://[64:ff9b:1::808:808]/x", "64:ff9b:1::808:808"),
    ("http://[2002:808:808::1]/x", "2002:808:808::1"),
]


@pytest.mark.parametrize("url", EMBEDDED_PRIVATE)
def test_ipv6_forms_that_embed_a_loopback_or_private_ipv4_address_are_refused(url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(webhooks.TargetRefused, match="private, loopback or reserved"):
        webhooks.resolve_target(url)


@pytest.mark.parametrize(("url", "address"), EMBEDDED_PUBLIC)
def test_ipv6_forms_that_embed_a_public_ipv4_address_are_allowed(url, address, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    assert webhooks.resolve_target(url)[3] == address


def test_the_operator_can_still_allow_private_targets(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    assert webhooks.resolve_target("http://[64:ff9b::7f00:1]:8080/x")[2:] == (
        8080,
        "64:ff9b::7f00:1",
    )


def test_a_name_that_later_resolves_to_an_embedded_private_address_is_refused_at_delivery(
    account, settings, monkeypatch
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    # Saved while the name pointed elsewhere; now its AAAA record is a NAT64 form of 10.0.0.1.
    endpoint = WebhookEndpoint.objects.create(
        account=account, kind="status", url="http://hooks.example.com/x"
    )
    real = socket.getaddrinfo

    def dns(host, *args, **kwargs):
        if host == "hooks.example.com":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::a00:1", 80, 0, 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    event = webhooks.test_event(endpoint)
    assert webhooks.deliver(event.pk) == "retry"
    event.refresh_from_db()
    assert "resolves to 64:ff9b::a00:1" in event.last_error


# --- Ports ----------------------------------------------------------------------------------


@pytest.fixture
def api(account):
    _, secret = accounts.create_api_token(account, "webhook tests")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.mark.parametrize("port", ["99999", "0", "65536"])
def test_a_webhook_url_with_an_impossible_port_is_a_400_naming_the_url(api, port):
    response = api.post(
        "/api/v1/webhooks",
        {"kind": "status", "url": f"https://example.com:{port}/hook"},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert "1 to 65535" in str(response.json()["errors"]["url"])
    assert not WebhookEndpoint.objects.exists()


def test_changing_a_webhook_url_to_an_impossible_port_is_a_400_naming_the_url(
    api, account, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    endpoint = WebhookEndpoint.objects.create(account=account, kind="status", url="http://[::1]/")
    response = api.patch(
        f"/api/v1/webhooks/{endpoint.pk}",
        {"url": "http://[::1]:99999/hook"},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert "1 to 65535" in str(response.json()["errors"]["url"])
    endpoint.refresh_from_db()
    assert endpoint.url == "http://[::1]/"


def test_the_admin_form_names_an_impossible_port(client, make_user):
    operator = make_user("ops@example.com", is_staff=True, is_superuser=True)
    client.force_login(operator)
    response = client.post(
        "/admin/messaging/webhookendpoint/add/",
        {
            "account": operator.account_id,
            "kind": "status",
            "url": "https://example.com:99999/hook",
            "secret": "s",
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "1 to 65535" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_a_stored_url_with_an_impossible_port_fails_its_attempt_cleanly(account):
    # Saved before ports were checked: the delivery records an error instead of crashing.
    endpoint = WebhookEndpoint.objects.create(
        account=account, kind="status", url="https://example.com:99999/hook"
    )
    event = webhooks.test_event(endpoint)
    assert webhooks.deliver(event.pk) == "retry"
    event.refresh_from_db()
    assert "1 to 65535" in event.last_error and event.attempts == 1


# --- Deadlines ------------------------------------------------------------------------------


class SlowReceiver:
    """A real TCP server on 127.0.0.1 that answers a request slowly: the status line, then
    one header line every ``interval`` seconds (``lines`` of them), or, with ``body``, all
    headers at once and then the body one byte per ``interval``. With ``silent`` it accepts
    and never says anything (a TLS client waits for the handshake)."""

    def __init__(
        self, interval: float, lines: int = 30, body: bool = False, silent: bool = False
    ) -> None:
        self.interval, self.lines, self.body, self.silent = interval, lines, body, silent
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.silent:
                    self.stopped.wait(60)
                    return
                conn.settimeout(10)
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    received += chunk
                if self.body:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    for _ in range(1000):
                        if self.stopped.wait(self.interval):
                            return
                        conn.sendall(b"x")
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for i in range(self.lines):
                    if self.stopped.wait(self.interval):
                        return
                    conn.sendall(f"X-Slow-{i}: still here\r\n".encode())
                conn.sendall(b"Content-Length: 0\r\n\r\n")
            except OSError:
                return  # the gateway hung up: what the deadline is for

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def slow_endpoint(account, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 3
    made = []

    def make(scheme: str = "http", **receiver_options) -> WebhookEndpoint:
        receiver = SlowReceiver(**receiver_options)
        made.append(receiver)
        return WebhookEndpoint.objects.create(
            account=account, kind="status", url=f"{scheme}://127.0.0.1:{receiver.port}/hook"
        )

    yield make
    for receiver in made:
        receiver.close()


def _timed_delivery(endpoint: WebhookEndpoint) -> tuple[str, WebhookEvent, float]:
    event = webhooks.test_event(endpoint)
    started = time.monotonic()
    outcome = webhooks.deliver(event.pk)
    elapsed = time.monotonic() - started
    event.refresh_from_db()
    return outcome, event, elapsed


def test_a_receiver_trickling_its_headers_is_cut_off_at_the_deadline(slow_endpoint):
    # One header line every 2 s: each read is well within any socket timeout, and the
    # answer would take a minute.
    outcome, event, elapsed = _timed_delivery(slow_endpoint(interval=2.0))
    assert outcome == "retry"
    assert elapsed < 3 + 2.5, elapsed
    assert event.last_error == "DeadlineExceeded: no complete answer within 3 s"
    assert event.log[-1]["status"] is None


def test_an_https_receiver_that_never_answers_the_handshake_is_cut_off_at_the_deadline(
    slow_endpoint,
):
    outcome, event, elapsed = _timed_delivery(slow_endpoint("https", interval=1, silent=True))
    assert outcome == "retry"
    assert elapsed < 3 + 2.5, elapsed
    assert event.last_error == "DeadlineExceeded: no complete answer within 3 s"


def test_an_answer_whose_status_came_in_time_counts_even_if_its_body_trickles(slow_endpoint):
    outcome, event, elapsed = _timed_delivery(slow_endpoint(interval=0.5, body=True))
    assert outcome == "delivered", event.last_error
    assert elapsed < 3 + 2.5, elapsed
    assert event.last_status_code == 200


def test_the_rest_test_delivery_holds_the_request_no_longer_than_the_deadline(slow_endpoint, api):
    endpoint = slow_endpoint(interval=2.0)
    started = time.monotonic()
    response = api.post(f"/api/v1/webhooks/{endpoint.pk}/test")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.content
    tested = response.json()
    assert tested["attempts"] == 1 and "within 3 s" in tested["last_error"]
    assert elapsed < 3 + 2.5, elapsed


def test_a_name_lookup_that_never_answers_ends_at_the_deadline(settings, monkeypatch):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    release = threading.Event()

    def hanging_dns(*args, **kwargs):
        release.wait(30)  # a resolver retrying server after server
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_dns)
    started = time.monotonic()
    try:
        with pytest.raises(webhooks.TargetRefused, match="no answer within 1 s"):
            webhooks.resolve_target("https://hooks.example.com/x")
    finally:
        release.set()
    assert time.monotonic() - started < 1 + 2
