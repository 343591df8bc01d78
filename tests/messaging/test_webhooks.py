"""Webhooks: outbox rows written with the change, signed delivery, retries, SSRF guard."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction
from django.utils import timezone

from devices import handoff
from devices import services as devices
from devices.models import Device
from messaging import lifecycle, webhooks
from messaging import services as messaging
from messaging.models import Status, WebhookEndpoint, WebhookEvent
from messaging.services import IncomingSms


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it gets and checks signatures."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self, secret: str) -> list[dict]:
        """Payloads whose signature checks out, as a receiver would verify them."""
        good = []
        for item in self.received:
            timestamp = item["headers"]["X-Webhook-Timestamp"].encode()
            expected = (
                "sha256="
                + hmac.new(
                    secret.encode(), timestamp + b"." + item["body"], hashlib.sha256
                ).hexdigest()
            )
            if hmac.compare_digest(expected, item["headers"]["X-Webhook-Signature"]):
                good.append(json.loads(item["body"]))
        return good

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def device(paired):
    return paired()[0]


def _taken(device, n=1):
    ids = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "+4915752982212", "hi")] * n
    )
    lease = handoff.poll(device).lease_id
    handoff.confirm(device, ids, lease)
    return ids


def test_a_status_change_writes_its_event_in_the_same_transaction(device, receiver):
    endpoint = webhooks.add_endpoint(device.account, "status", receiver.url)
    (message_id,) = _taken(device)
    assert [e.payload["status_id"] for e in WebhookEvent.objects.filter(endpoint=endpoint)] == [2]
    with pytest.raises(RuntimeError), transaction.atomic():
        lifecycle.move([message_id], Status.SENT)
        raise RuntimeError("rolled back")
    assert [e.payload["status_id"] for e in WebhookEvent.objects.all()] == [2]


def test_events_are_delivered_signed_with_the_spec_payload(device, receiver):
    endpoint = webhooks.add_endpoint(device.account, "status", receiver.url, device_id=device.pk)
    (message_id,) = _taken(device)
    handoff.report(device, [lifecycle.Outcome(message_id, Status.SENT)])
    events = list(WebhookEvent.objects.order_by("id"))
    assert [webhooks.deliver(e.pk) for e in events] == ["delivered", "delivered"]
    payloads = receiver.verified(endpoint.secret)
    assert len(payloads) == 2 == len(receiver.received)
    sent = payloads[1]
    assert list(sent) == [
        "sms_id",
        "status_id",
        "status_message",
        "sendto",
        "senttime",
        "channel_id",
        "sim",
        "device_id",
    ]
    assert (sent["sms_id"], sent["status_id"], sent["status_message"], sent["sendto"]) == (
        message_id,
        6,
        "Sent by Phone",
        "+4915752982212",
    )
    assert sent["senttime"] and sent["device_id"] == device.pk
    headers = receiver.received[1]["headers"]
    assert (
        headers["X-Webhook-Id"] == str(events[1].event_id)
        and headers["X-Webhook-Event"] == "sms.status"
    )
    assert WebhookEvent.objects.get(pk=events[1].pk).state == "delivered"
    assert webhooks.deliver(events[1].pk) == "skipped"  # delivered once, not again


def test_a_failing_receiver_gets_retries_with_backoff_then_the_event_once(device, receiver):
    webhooks.add_endpoint(device.account, "status", receiver.url)
    _taken(device)
    event = WebhookEvent.objects.get()
    receiver.status = 503
    assert webhooks.deliver(event.pk) == "retry"
    event.refresh_from_db()
    assert (
        event.attempts == 1
        and event.last_status_code == 503
        and event.log[0]["error"] == "HTTP 503"
    )
    assert timedelta(seconds=25) < event.next_attempt_at - timezone.now() < timedelta(seconds=35)
    assert webhooks.deliver(event.pk) == "skipped"  # not due yet
    assert webhooks.take_due_events()[0] == []
    receiver.status = 200
    WebhookEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    taken, ticket = webhooks.take_due_events()
    assert taken == [event.pk]
    # Taken by one sweep: not due for another, nor for a task without the ticket.
    assert webhooks.take_due_events()[0] == []
    assert webhooks.deliver(event.pk) == "skipped"
    assert webhooks.deliver(event.pk, ticket) == "delivered"
    assert webhooks.deliver(event.pk, ticket) == "skipped"  # once
    assert len(receiver.received) == 2 and WebhookEvent.objects.get(pk=event.pk).attempts == 2


def test_a_sweep_task_lost_with_its_ticket_lets_the_event_fall_due_again(device, receiver):
    from messaging import tasks

    webhooks.add_endpoint(device.account, "status", receiver.url)
    _taken(device)
    event = WebhookEvent.objects.get()
    taken, lost = webhooks.take_due_events()  # its task never runs
    assert taken == [event.pk]
    # WEBHOOK_CLAIM_SECONDS later (the ticket's time passed): due again, for the next sweep.
    WebhookEvent.objects.filter(pk=event.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    taken, ticket = webhooks.take_due_events()
    assert taken == [event.pk] and ticket != lost
    assert webhooks.deliver(event.pk, lost) == "skipped"  # the lost task, were it to turn up
    # The sweep task's own path: the ticket travels as text.
    tasks.deliver_webhook(event.pk, ticket.isoformat())
    assert WebhookEvent.objects.get(pk=event.pk).state == WebhookEvent.State.DELIVERED
    assert len(receiver.received) == 1


def test_an_event_is_failed_after_the_retry_window(device, receiver, settings):
    webhooks.add_endpoint(device.account, "status", receiver.url)
    _taken(device)
    event = WebhookEvent.objects.get()
    receiver.close()  # nothing listens any more: connection refused
    WebhookEvent.objects.filter(pk=event.pk).update(
        created_at=timezone.now() - timedelta(hours=settings.WEBHOOK_RETRY_HOURS)
    )
    assert webhooks.deliver(event.pk) == "failed"
    event.refresh_from_db()
    assert event.state == "failed" and "Connection" in event.last_error


def test_backoff_grows_exponentially_up_to_an_hour():
    delays = [webhooks._backoff(n).total_seconds() for n in (1, 2, 3, 8, 20)]
    assert 27 <= delays[0] <= 33 and 54 <= delays[1] <= 66 and 108 <= delays[2] <= 132
    assert 3240 <= delays[3] <= 3960 and delays[4] <= 3960


def test_private_and_loopback_targets_are_refused_by_default(account):
    for url in (
        "http://127.0.0.1:8000/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "ftp://example.com/x",
    ):
        with pytest.raises(webhooks.TargetRefused):
            webhooks.add_endpoint(account, "status", url)
    assert not WebhookEndpoint.objects.exists()


def test_endpoints_listen_to_their_device_or_all_devices(paired, receiver):
    device, _ = paired()
    other, _ = paired(account=device.account)
    mine = webhooks.add_endpoint(device.account, "status", receiver.url, device_id=device.pk)
    everyone = webhooks.add_endpoint(device.account, "status", receiver.url)
    _taken(other)
    assert list(WebhookEvent.objects.values_list("endpoint_id", flat=True)) == [everyone.pk]
    assert not WebhookEvent.objects.filter(endpoint=mine).exists()


def test_incoming_sms_events_use_the_spec_shape(device, receiver):
    endpoint = webhooks.add_endpoint(device.account, "incoming", receiver.url)
    (sms_id,) = handoff.receive(
        device, [IncomingSms("4711", "+4915752982212", "Hello back", 1)]
    ).values()
    handoff.receive(device, [IncomingSms("4711", "+4915752982212", "Hello back", 1)])  # repeat
    (event,) = WebhookEvent.objects.filter(endpoint=endpoint)
    assert event.kind == "sms.incoming"
    assert list(event.payload) == [
        "address",
        "date",
        "date_sent",
        "body",
        "internal_id",
        "channel_id",
        "sim",
        "sms_id",
        "device_id",
        "device_name",
        "type",
    ]
    assert (
        event.payload["address"],
        event.payload["internal_id"],
        event.payload["sms_id"],
        event.payload["type"],
    ) == ("+4915752982212", 4711, sms_id, "text")


def test_devices_going_offline_and_back_are_announced(device, receiver):
    webhooks.add_endpoint(device.account, "device", receiver.url)
    assert devices.announce_device_states() == 1  # it was just paired: online
    assert devices.announce_device_states() == 0
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(minutes=10))
    assert devices.announce_device_states() == 1
    kinds = [(e.kind, e.payload["online"]) for e in WebhookEvent.objects.order_by("id")]
    assert kinds == [("device.online", True), ("device.offline", False)]


def test_every_kind_of_move_sees_who_listens(device, paired, receiver):
    # A move reads "anyone listening?" with its locked rows: plain moves, conditional ones
    # (cancel_unconfirmed filters by a condition) and a disabled endpoint (nobody listens).
    other, _ = paired()
    endpoint = webhooks.add_endpoint(device.account, "status", receiver.url)
    disabled = webhooks.add_endpoint(other.account, "status", receiver.url)
    WebhookEndpoint.objects.filter(pk=disabled.pk).update(enabled=False)
    waiting = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "+4915752982212", "x")]
    )
    messaging.cancel(device.account, waiting)  # the conditional move
    (taken,) = _taken(device)
    lifecycle.record_outcomes(device, [lifecycle.Outcome(taken, Status.SENT)])  # a plain one
    statuses = sorted(
        e.payload["status_id"] for e in WebhookEvent.objects.filter(endpoint=endpoint)
    )
    assert statuses == sorted([Status.CANCELLED, Status.TAKEN, Status.SENT])
    (quiet,) = _taken(other)
    lifecycle.record_outcomes(other, [lifecycle.Outcome(quiet, Status.SENT)])
    assert not WebhookEvent.objects.filter(endpoint=disabled).exists()


def test_nobody_listening_costs_no_event(device):
    _taken(device, 3)
    assert not WebhookEvent.objects.exists()


def test_an_operator_can_redeliver_an_event(device, receiver):
    webhooks.add_endpoint(device.account, "status", receiver.url)
    _taken(device)
    event = WebhookEvent.objects.get()
    webhooks.deliver(event.pk)
    webhooks.redeliver(device.account, event.pk)
    assert webhooks.deliver(event.pk) == "delivered"
    assert len(receiver.received) == 2


def test_the_admin_refuses_a_loopback_webhook_url(client, make_user):
    operator = make_user("ops@example.com", is_staff=True, is_superuser=True)
    client.force_login(operator)
    response = client.post(
        "/admin/messaging/webhookendpoint/add/",
        {
            "account": operator.account_id,
            "kind": "status",
            "url": "http://127.0.0.1:9/x",
            "secret": "s",
            "enabled": "on",
        },
    )
    assert (
        response.status_code == 200 and "private, loopback or reserved" in response.content.decode()
    )
    assert not WebhookEndpoint.objects.exists()
