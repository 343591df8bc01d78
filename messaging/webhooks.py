"""Webhooks: a durable outbox of events and their signed delivery.

Events are rows written in the same transaction as the change they announce (a status move,
an incoming SMS, a device going offline); a task on the ``webhooks`` queue delivers each
after commit, and a beat sweep re-sends whatever is due (retries, and tasks the broker
lost). So a slow or dead receiver delays nothing but its own events.

Signature: ``X-Webhook-Signature: sha256=<hex>`` is HMAC-SHA256 with the endpoint's secret
over ``<X-Webhook-Timestamp>.<raw body>``. Retries back off exponentially from 30 s to an
hour, for WEBHOOK_RETRY_HOURS (default 25), then the event is marked failed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import socket
import ssl
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from gateway.models import Account
from gateway.tasks import enqueue_on_commit
from messaging.models import Message, Status, WebhookEndpoint, WebhookEvent

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5
MAX_RETRY_SECONDS = 3600
# While a delivery runs, its event is not due again (a sweep must not send it twice).
CLAIM_SECONDS = 60
USER_AGENT = "sms-gateway-webhooks/1"


class TargetRefused(ValueError):
    """The URL points somewhere webhooks may not go (see WEBHOOK_ALLOW_PRIVATE_TARGETS)."""


# --- Endpoints ------------------------------------------------------------------------------


def resolve_target(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, IP to connect to) for a webhook URL, or TargetRefused.

    Loopback, private, link-local, multicast and reserved addresses are refused unless the
    operator allows them: the server must not be a way into its own network. The address is
    checked after DNS resolution and the connection goes to that very address, so a name
    that resolves differently a second later (DNS rebinding) gains nothing.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("Webhook URLs must be http:// or https:// with a host name")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"Cannot resolve {parts.hostname}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise TargetRefused(
                    f"{parts.hostname} resolves to {ip}, a private, loopback or reserved "
                    "address; set WEBHOOK_ALLOW_PRIVATE_TARGETS=1 to allow it"
                )
    return parts.scheme, parts.hostname, port, addresses[0]


def add_endpoint(
    account: Account, kind: str, url: str, *, device_id: int | None = None
) -> WebhookEndpoint:
    """Register a webhook URL for the account (or one of its devices). Checks the target."""
    from devices.services import get_device

    if kind not in WebhookEndpoint.Kind.values:
        raise ValueError(f"kind must be one of {WebhookEndpoint.Kind.values}")
    resolve_target(url)
    device = get_device(account, device_id) if device_id is not None else None
    return WebhookEndpoint.objects.create(account=account, device=device, kind=kind, url=url)


# --- Events (written inside the transaction of the change) ----------------------------------


def _endpoints(
    kind: str, pairs: Iterable[tuple[int, int | None]]
) -> dict[tuple[int, int | None], list[WebhookEndpoint]]:
    """Enabled endpoints of ``kind`` for each (account, device): the device's and the
    account-wide ones."""
    pairs = set(pairs)
    accounts = {account for account, _ in pairs}
    found: dict[tuple[int, int | None], list[WebhookEndpoint]] = {pair: [] for pair in pairs}
    if not accounts:
        return found
    for endpoint in WebhookEndpoint.objects.filter(
        account_id__in=accounts, kind=kind, enabled=True
    ):
        for account, device in pairs:
            if endpoint.account_id == account and endpoint.device_id in (None, device):
                found[(account, device)].append(endpoint)
    return found


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def _queue(events: list[WebhookEvent]) -> None:
    if not events:
        return
    for event in WebhookEvent.objects.bulk_create(events):
        enqueue_on_commit("messaging.tasks.deliver_webhook", event.pk, queue="webhooks")


def _clock(value: datetime | None, zone: ZoneInfo) -> str | None:
    return None if value is None else f"{value.astimezone(zone):%Y-%m-%d %H:%M:%S}"


def _zones(account_ids: Iterable[int]) -> dict[int, ZoneInfo]:
    return {
        pk: ZoneInfo(zone)
        for pk, zone in Account.objects.filter(pk__in=set(account_ids)).values_list(
            "pk", "time_zone"
        )
    }


def status_changed(moved: list[tuple[int, int, int | None]], target: Status) -> None:
    """Outbox events for messages that just moved to ``target`` (spec §5.1 payload).

    ``moved`` is (message, account, device) as move() already read them. Called by
    messaging.services.move inside its transaction: one query (the endpoints) when nobody
    listens, which is the usual case on the poll and report paths.
    """
    if not moved:
        return
    endpoints = _endpoints("status", ((account, device) for _, account, device in moved))
    if not any(endpoints.values()):
        return
    rows = list(
        Message.objects.filter(id__in=[message_id for message_id, _, _ in moved]).values(
            "id", "account_id", "device_id", "phone", "sent_at", "sim"
        )
    )
    zones = _zones(r["account_id"] for r in rows)
    events = []
    for row in rows:
        for endpoint in endpoints[(row["account_id"], row["device_id"])]:
            payload = {
                "sms_id": row["id"],
                "status_id": target.value,
                "status_message": target.label,
                "sendto": row["phone"],
                "senttime": _clock(row["sent_at"], zones[row["account_id"]]),
                "channel_id": row["sim"],
                "sim": row["sim"],
                "device_id": row["device_id"],
            }
            events.append(WebhookEvent(endpoint=endpoint, kind="sms.status", body=_json(payload)))
    _queue(events)


def received(message_ids: list[int]) -> None:
    """Outbox events for newly stored incoming SMS (spec §5.2 payload)."""
    rows = list(
        Message.objects.filter(id__in=message_ids).values(
            "id",
            "account_id",
            "device_id",
            "device__title",
            "phone",
            "body",
            "sim",
            "sent_at",
            "created_at",
            "external_id",
        )
    )
    endpoints = _endpoints("incoming", ((r["account_id"], r["device_id"]) for r in rows))
    if not any(endpoints.values()):
        return
    zones = _zones(r["account_id"] for r in rows)
    events = []
    for row in rows:
        zone = zones[row["account_id"]]
        external = row["external_id"]
        for endpoint in endpoints[(row["account_id"], row["device_id"])]:
            payload = {
                "address": row["phone"],
                "date": _clock(row["sent_at"], zone),
                "date_sent": _clock(row["sent_at"], zone),
                "body": row["body"],
                "internal_id": int(external) if external.isdigit() else None,
                "channel_id": row["sim"],
                "sim": row["sim"],
                "sms_id": row["id"],
                "device_id": row["device_id"],
                "device_name": row["device__title"] or "",
                "type": "text",
            }
            events.append(WebhookEvent(endpoint=endpoint, kind="sms.incoming", body=_json(payload)))
    _queue(events)


def device_state_changed(changes: list[tuple[int, int, str, bool, datetime | None]]) -> None:
    """Outbox events for devices that went online or offline: (account, device, title,
    online, last seen)."""
    endpoints = _endpoints("device", ((a, d) for a, d, _, _, _ in changes))
    zones = _zones(a for a, _, _, _, _ in changes)
    events = [
        WebhookEvent(
            endpoint=endpoint,
            kind="device.online" if online else "device.offline",
            body=_json(
                {
                    "device_id": device,
                    "device_name": title,
                    "online": online,
                    "lastseen": _clock(seen, zones[account]),
                }
            ),
        )
        for account, device, title, online, seen in changes
        for endpoint in endpoints[(account, device)]
    ]
    _queue(events)


# --- Delivery -------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an already vetted IP address while sending the URL's Host."""

    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    scheme, host, port, ip = resolve_target(url)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(host, port, ip, TIMEOUT_SECONDS)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)  # drain a little; the body is not used
        return response.status
    finally:
        connection.close()


def _backoff(attempts: int) -> timedelta:
    base = min(settings.WEBHOOK_FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
    return timedelta(seconds=base * random.uniform(0.9, 1.1))


def deliver(event_pk: int) -> str:
    """Try to deliver one due event; record the attempt. Safe to run twice at once.

    Claims the event first (compare-and-set on its due time), so a task and a sweep never
    send it together; the HTTP request runs outside any transaction. Returns the outcome:
    "delivered", "retry", "failed" or "skipped" (not due, or already done).
    """
    now = timezone.now()
    claimed = WebhookEvent.objects.filter(
        pk=event_pk, state=WebhookEvent.State.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
    if not claimed:
        return "skipped"
    event = WebhookEvent.objects.select_related("endpoint").get(pk=event_pk)
    endpoint = event.endpoint
    body = event.body.encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Id": str(event.event_id),
        "X-Webhook-Event": event.kind,
        "X-Webhook-Timestamp": timestamp,
        "X-Webhook-Signature": sign(endpoint.secret, timestamp, body),
    }
    started = time.monotonic()
    status: int | None = None
    error = ""
    if not endpoint.enabled:
        error = "endpoint disabled"
    else:
        try:
            status = _post(endpoint.url, body, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (OSError, http.client.HTTPException, TargetRefused) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
    elapsed = int((time.monotonic() - started) * 1000)
    attempts = event.attempts + 1
    entry = {"at": now.isoformat(), "status": status, "error": error, "ms": elapsed}
    fields: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": status,
        "last_error": error,
        "log": [*event.log, entry][-50:],
    }
    finished = timezone.now()
    if not error:
        fields.update(state=WebhookEvent.State.DELIVERED, delivered_at=finished)
        outcome = "delivered"
    elif finished - event.created_at >= timedelta(hours=settings.WEBHOOK_RETRY_HOURS) or (
        not endpoint.enabled
    ):
        fields.update(state=WebhookEvent.State.FAILED)
        outcome = "failed"
    else:
        fields.update(next_attempt_at=finished + _backoff(attempts))
        outcome = "retry"
    WebhookEvent.objects.filter(pk=event.pk, state=WebhookEvent.State.PENDING).update(**fields)
    if error:
        log.info("webhook event %s attempt %d: %s", event.event_id, attempts, error)
    return outcome


def due_events(limit: int = 500) -> list[int]:
    """Pending events whose time has come (retries, and events whose task was lost)."""
    return list(
        WebhookEvent.objects.filter(
            state=WebhookEvent.State.PENDING, next_attempt_at__lte=timezone.now()
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def redeliver(account: Account, event_pk: int) -> None:
    """Send an event again now (operator's retry), whatever its state."""
    with transaction.atomic():
        updated = WebhookEvent.objects.filter(Q(endpoint__account=account), pk=event_pk).update(
            state=WebhookEvent.State.PENDING, next_attempt_at=timezone.now()
        )
        if updated:
            enqueue_on_commit("messaging.tasks.deliver_webhook", event_pk, queue="webhooks")


def test_event(endpoint: WebhookEndpoint) -> WebhookEvent:
    """A "webhook.test" event for one endpoint (the hosted service's test button)."""
    return WebhookEvent.objects.create(
        endpoint=endpoint,
        kind="webhook.test",
        body=_json({"test": True, "endpoint_id": endpoint.pk, "kind": endpoint.kind}),
    )
