"""Webhooks: a durable outbox of events and their signed delivery.

Events are rows written in the same transaction as the change they announce (a status move,
an incoming SMS, a device going offline); a task on the ``webhooks`` queue delivers each
after commit, and a beat sweep re-sends whatever is due (retries, and tasks the broker
lost). So a slow or dead receiver delays nothing but its own events.

Signature: ``X-Webhook-Signature: sha256=<hex>`` is HMAC-SHA256 with the endpoint's secret
over ``<X-Webhook-Timestamp>.<raw body>``. Retries back off exponentially from 30 s to an
hour, for WEBHOOK_RETRY_HOURS (default 25), then the event is marked failed. Each attempt
has WEBHOOK_TIMEOUT_SECONDS in all (name lookup, connect, TLS, request and answer).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from devices.models import PhoneSettings
from devices.queries import get_device
from gateway import metrics
from gateway.models import Account
from gateway.tasks import enqueue_on_commit
from messaging.models import (
    FAILED,
    Message,
    Problem,
    Status,
    WebhookEndpoint,
    WebhookEvent,
    _webhook_secret,
)

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 3600
USER_AGENT = "sms-gateway-webhooks/1"


class TargetRefused(ValueError):
    """The URL is unusable (scheme, port) or points somewhere webhooks may not go (see
    WEBHOOK_ALLOW_PRIVATE_TARGETS)."""


class DeadlineExceeded(TimeoutError):
    """The receiver did not answer completely within WEBHOOK_TIMEOUT_SECONDS."""


class _Deadline:
    """The time limit of one outbound call, over everything it does.

    Socket timeouts bound each read, not their sum: a receiver sending one header line every
    few seconds would hold a delivery (and the operator's test request) for as long as it
    likes. So every step gets only the time left, and a timer shuts the socket down when the
    time is up, which also ends a read or a TLS handshake under way.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._timer: threading.Timer | None = None

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            self.expired = True
            raise self.exceeded()
        return left

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.at

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"no complete answer within {self.seconds:g} s")

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the time is up."""

        def cut() -> None:
            self.expired = True
            # The plain socket's shutdown, also for a TLS socket: it wakes the blocked read
            # without touching the TLS state another thread is using.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

        self.cancel()
        self._timer = threading.Timer(self.left(), cut)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


# --- Endpoints ------------------------------------------------------------------------------

# Prefixes whose addresses lead to an IPv4 address, which must be allowed too.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d (deprecated, still routed)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use prefix


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to ``ip`` ends up at (besides ``ip`` itself)."""
    value = int(ip)
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _IPV4_COMPATIBLE or ip in _NAT64 or ip in _NAT64_LOCAL:
        found.append(ipaddress.IPv4Address(value & 0xFFFF_FFFF))
    if ip in _NAT64_LOCAL and (value >> 56) & 0xFF == 0 and value & 0xFF_FFFF == 0:
        # A /64 NAT64 prefix (RFC 6052 section 2.2): bits 64-71 zero, the IPv4 address in
        # bits 72-103. The /48 and /56 layouts end in zero bits, which the line above
        # already reads as 0.0.0.0 and refuses.
        found.append(ipaddress.IPv4Address((value >> 24) & 0xFFFF_FFFF))
    if ip.sixtofour is not None:  # 2002:AABB:CCDD::/48 -> AA.BB.CC.DD
        found.append(ip.sixtofour)
    if ip.teredo is not None:  # 2001::/32: the relay, and the client (bits inverted)
        found.extend(ip.teredo)
    return found


def _is_forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, private, link-local, multicast or reserved, itself or through the IPv4
    address it embeds (IPv4-mapped and -compatible, NAT64, 6to4, Teredo)."""
    if not ip.is_global or ip.is_multicast:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        return any(not v4.is_global or v4.is_multicast for v4 in _embedded_ipv4(ip))
    return False


def _resolve(host: str, port: int, deadline: _Deadline) -> list[str]:
    """The addresses of ``host`` (an IP literal is its own).

    getaddrinfo has no timeout of its own (the resolver may retry for half a minute), so it
    runs in a daemon thread that is given up when the deadline passes.
    """
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return [host]
    answer: list[Any] = []

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)

    thread = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
    thread.start()
    thread.join(deadline.left())
    if not answer:
        raise TargetRefused(f"Cannot resolve {host}: no answer within {deadline.seconds:g} s")
    if isinstance(answer[0], OSError):
        raise TargetRefused(f"Cannot resolve {host}: {answer[0]}")
    return [str(info[4][0]) for info in answer[0]]


def resolve_target(url: str, deadline: _Deadline | None = None) -> tuple[str, str, int, str]:
    """(scheme, host, port, IP to connect to) for a webhook URL, or TargetRefused.

    Loopback, private, link-local, multicast and reserved addresses are refused unless the
    operator allows them: the server must not be a way into its own network. IPv6 forms
    that lead to an IPv4 address (::a.b.c.d, ::ffff:a.b.c.d, NAT64, 6to4, Teredo) are judged
    by that address too. The address is checked after DNS resolution and the connection
    goes to that very address, so a name that resolves differently a second later (DNS
    rebinding) gains nothing. The lookup gets at most WEBHOOK_TIMEOUT_SECONDS (or what is
    left of ``deadline``).
    """
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise TargetRefused(f"Webhook URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise TargetRefused("Webhook URLs must be http:// or https:// with a host name")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise TargetRefused("The port of a webhook URL must be a number from 1 to 65535")
    deadline = deadline or _Deadline(settings.WEBHOOK_TIMEOUT_SECONDS)
    addresses = _resolve(hostname, port, deadline)
    if not addresses:
        raise TargetRefused(f"Cannot resolve {hostname}: no addresses")
    if not settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if _is_forbidden(ip):
                raise TargetRefused(
                    f"{hostname} resolves to {ip}, a private, loopback or reserved "
                    "address; set WEBHOOK_ALLOW_PRIVATE_TARGETS=1 to allow it"
                )
    return parts.scheme, hostname, port, addresses[0]


def add_endpoint(
    account: Account, kind: str, url: str, *, device_id: int | None = None
) -> WebhookEndpoint:
    """Register a webhook URL for the account (or one of its devices). Checks the target."""
    if kind not in WebhookEndpoint.Kind.values:
        raise ValueError(f"kind must be one of {WebhookEndpoint.Kind.values}")
    resolve_target(url)
    device = get_device(account, device_id) if device_id is not None else None
    return WebhookEndpoint.objects.create(account=account, device=device, kind=kind, url=url)


class EndpointNotFound(Exception):
    pass


def _endpoint(account: Account, endpoint_id: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.for_account(account).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise EndpointNotFound(endpoint_id)
    return endpoint


def update_endpoint(
    account: Account,
    endpoint_id: int,
    *,
    url: str | None = None,
    kind: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change one of the account's webhook endpoints; a new URL is checked like a new one.

    Raises EndpointNotFound, TargetRefused, or ValueError for an unknown kind. Events
    already written keep the URL they were written for. Idempotent.
    """
    endpoint = _endpoint(account, endpoint_id)
    if kind is not None and kind not in WebhookEndpoint.Kind.values:
        raise ValueError(f"kind must be one of {WebhookEndpoint.Kind.values}")
    if url is not None:
        resolve_target(url)
    changes = {
        name: value
        for name, value in (("url", url), ("kind", kind), ("enabled", enabled))
        if value is not None
    }
    for name, value in changes.items():
        setattr(endpoint, name, value)
    if changes:
        endpoint.save(update_fields=list(changes))
    return endpoint


def delete_endpoint(account: Account, endpoint_id: int) -> None:
    """Remove one of the account's endpoints with its delivery log. Raises EndpointNotFound."""
    _endpoint(account, endpoint_id).delete()


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


def status_listened_sql(message_alias: str) -> str:
    """SQL: whether the account of the message row ``message_alias`` has an enabled status
    endpoint (a move reads it with its locked rows, so a move nobody listens to costs no
    query here)."""
    return (
        f"EXISTS (SELECT 1 FROM {WebhookEndpoint._meta.db_table} e "  # noqa: S608 - model names
        f"WHERE e.account_id = {message_alias}.account_id AND e.kind IN ('status', 'smsgate') "
        "AND e.enabled)"
    )


# --- SMSGate's format (its integration API's webhooks, docs/smsgate-api.md) ----------------

# The SMSGate event each of our statuses is, for the messages it applies to.
SMSGATE_EVENT_OF: dict[Status, str] = {
    Status.SENT: "sms:sent",
    Status.DELIVERED: "sms:delivered",
    Status.CANCELLED: "sms:cancelled",
    **{status: "sms:failed" for status in (*FAILED,)},
}
# The events SMSGate knows (a webhook may be registered for any; we send the sms:* above and
# sms:received).
SMSGATE_EVENTS = (
    "sms:received",
    "sms:data-received",
    "sms:sent",
    "sms:delivered",
    "sms:failed",
    "sms:cancelled",
    "system:ping",
    "mms:received",
    "mms:downloaded",
    "app:started",
    "sms:batch:received",
    "sms:batch:data-received",
    "mms:batch:received",
    "mms:batch:downloaded",
)


def _smsgate_endpoints(
    event: str | None, pairs: Iterable[tuple[int, int | None]]
) -> dict[tuple[int, int | None], list[WebhookEndpoint]]:
    if event is None:
        return {}
    found = _endpoints("smsgate", pairs)
    return {pair: [e for e in listed if e.event == event] for pair, listed in found.items()}


def _smsgate_date(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _envelope(
    endpoint: WebhookEndpoint, event: str, device_id: int | None, payload: dict[str, Any]
) -> WebhookEvent:
    """SMSGate's envelope: the event's id, the webhook's, the event, the device, the payload
    (its keys in the app's order, nulls left out)."""
    event_id = uuid.uuid4()
    body = {
        "id": str(event_id),
        "webhookId": endpoint.client_id,
        "event": event,
        "deviceId": str(device_id) if device_id is not None else "",
        "payload": {key: value for key, value in payload.items() if value is not None},
    }
    return WebhookEvent(endpoint=endpoint, event_id=event_id, kind=event, body=_json(body))


def _smsgate_event(
    endpoint: WebhookEndpoint, row: Mapping[str, Any], target: Status
) -> WebhookEvent:
    event = SMSGATE_EVENT_OF[target]
    common = {
        "messageId": row["external_id"] or str(row["id"]),
        "sender": row["device__number"] or None,
        "recipient": row["phone"],
        "simNumber": row["sim"] + 1,
        "phoneNumber": row["phone"],
    }
    if event == "sms:sent":
        parts = row["parts_sent"]
        first = {"partsCount": parts if parts else -1, "sentAt": _smsgate_date(row["sent_at"])}
    elif event == "sms:delivered":
        first = {"deliveredAt": _smsgate_date(row["delivered_at"] or row["status_changed_at"])}
    elif event == "sms:failed":
        first = {
            "failedAt": _smsgate_date(row["status_changed_at"]),
            "reason": row["error_detail"] or target.label,
        }
    else:
        first = {"cancelledAt": _smsgate_date(row["status_changed_at"])}
    return _envelope(endpoint, event, row["device_id"], {**first, **common})


def _smsgate_received(endpoint: WebhookEndpoint, row: Mapping[str, Any]) -> WebhookEvent:
    payload = {
        "message": row["body"],
        "receivedAt": _smsgate_date(row["sent_at"] or row["created_at"]),
        "messageId": str(row["id"]),
        "sender": row["phone"],
        "recipient": row["device__number"] or None,
        "simNumber": row["sim"] + 1,
        "phoneNumber": row["phone"],
    }
    return _envelope(endpoint, "sms:received", row["device_id"], payload)


def smsgate_signature(key: str, body: bytes, timestamp: str) -> str:
    """SMSGate's X-Signature: hex HMAC-SHA256 over the body followed by the timestamp."""
    return hmac.new(key.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def save_smsgate_endpoint(
    account: Account, client_id: str, url: str, event: str, device_id: int | None
) -> WebhookEndpoint:
    """Create, or replace (same id), one of the account's SMSGate-format webhooks."""
    if event not in SMSGATE_EVENTS:
        raise ValueError(f"event must be one of {', '.join(SMSGATE_EVENTS)}")
    resolve_target(url)
    device = get_device(account, device_id) if device_id is not None else None
    key = (
        PhoneSettings.objects.filter(account=account).values_list("signing_key", flat=True).first()
    )
    fields = {"kind": "smsgate", "url": url, "event": event, "device": device}
    with transaction.atomic():
        endpoint, _ = WebhookEndpoint.objects.update_or_create(
            account=account,
            client_id=client_id,
            defaults=fields,
            create_defaults={**fields, "secret": key or _webhook_secret()},
        )
    return endpoint


def set_smsgate_signing_key(account: Account, key: str) -> None:
    """The account's SMSGate-format webhooks are signed with ``key`` (its
    ``webhooks.signing_key`` setting) from now on; "" gives each a new secret of its own."""
    endpoints = WebhookEndpoint.objects.for_account(account).filter(kind="smsgate")
    if key:
        endpoints.update(secret=key)
        return
    for endpoint in endpoints:
        endpoint.secret = _webhook_secret()
        endpoint.save(update_fields=["secret"])


def delete_smsgate_endpoint(account: Account, client_id: str) -> None:
    WebhookEndpoint.objects.for_account(account).filter(client_id=client_id).delete()


def status_changed(
    moved: list[tuple[int, int, int | None]], target: Status, *, listened: bool = True
) -> None:
    """Outbox events for messages that just moved to ``target`` (spec §5.1 payload).

    ``moved`` is (message, account, device) as move() already read them; ``listened``
    False when move() saw no status endpoint of their accounts (status_listened_sql).
    Called by messaging.lifecycle's moves inside their transaction.
    """
    if not moved or not listened:
        return
    pairs = [(account, device) for _, account, device in moved]
    endpoints = _endpoints("status", pairs)
    smsgate = _smsgate_endpoints(SMSGATE_EVENT_OF.get(target), pairs)
    if not any(endpoints.values()) and not any(smsgate.values()):
        return
    rows = list(
        Message.objects.filter(id__in=[message_id for message_id, _, _ in moved]).values(
            "id",
            "account_id",
            "device_id",
            "phone",
            "sent_at",
            "sim",
            "external_id",
            "device__number",
            "parts_sent",
            "delivered_at",
            "status_changed_at",
            "error_detail",
        )
    )
    zones = _zones(r["account_id"] for r in rows)
    events = [
        _smsgate_event(endpoint, row, target)
        for row in rows
        for endpoint in smsgate.get((row["account_id"], row["device_id"]), [])
    ]
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
            "device__number",
        )
    )
    pairs = [(r["account_id"], r["device_id"]) for r in rows]
    endpoints = _endpoints("incoming", pairs)
    smsgate = _smsgate_endpoints("sms:received", pairs)
    if not any(endpoints.values()) and not any(smsgate.values()):
        return
    zones = _zones(r["account_id"] for r in rows)
    events = [
        _smsgate_received(endpoint, row)
        for row in rows
        for endpoint in smsgate.get((row["account_id"], row["device_id"]), [])
    ]
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


def problems_changed(opened: list[Problem], resolved: list[Problem]) -> None:
    """Outbox events for fleet problems just opened or resolved (messaging.problems), to
    the account's "problem" endpoints and those of the problem's device."""
    changed = [*opened, *resolved]
    endpoints = _endpoints("problem", ((p.account_id, p.device_id) for p in changed))
    events = [
        WebhookEvent(
            endpoint=endpoint,
            kind="problem.resolved" if problem.resolved_at else "problem.opened",
            body=_json(
                {
                    "problem_id": problem.pk,
                    "kind": problem.kind,
                    "title": Problem.Kind(problem.kind).label,
                    "state": "resolved" if problem.resolved_at else "open",
                    "detail": problem.detail,
                    "count": problem.count,
                    "device_id": problem.device_id,
                    "sim": problem.sim,
                    "webhook_id": problem.endpoint_id,
                    "newsletter_id": problem.newsletter_id,
                    "opened_at": problem.opened_at.isoformat(),
                    "resolved_at": problem.resolved_at.isoformat() if problem.resolved_at else None,
                }
            ),
        )
        for problem in changed
        for endpoint in endpoints[(problem.account_id, problem.device_id)]
    ]
    _queue(events)


# --- Delivery -------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an already vetted IP address while sending the URL's Host, within the
    call's deadline."""

    def __init__(self, host: str, port: int, ip: str, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.left())
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self._deadline.left())
        self._deadline.watch(self.sock)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = http.client.HTTPS_PORT  # no ":443" in the Host header

    def connect(self) -> None:
        raw = socket.create_connection((self._ip, self.port), self._deadline.left())
        tls = ssl.create_default_context().wrap_socket(
            raw, server_hostname=self.host, do_handshake_on_connect=False
        )
        self.sock = tls
        self._deadline.watch(tls)
        tls.settimeout(self._deadline.left())
        tls.do_handshake()


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST within WEBHOOK_TIMEOUT_SECONDS in all; DeadlineExceeded when that ran out."""
    deadline = _Deadline(settings.WEBHOOK_TIMEOUT_SECONDS)
    try:
        scheme, host, port, ip = resolve_target(url, deadline)
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(host, port, ip, deadline)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            if deadline.passed():
                # The cut socket reads as the end of the headers: not an answer.
                raise deadline.exceeded()
            # The status is the answer. Drain a little of the body so the receiver is not
            # cut off mid-write, but a slow body does not undo an acknowledgement.
            with contextlib.suppress(OSError, http.client.HTTPException):
                response.read(64 * 1024)
            return response.status
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        if deadline.passed() and not isinstance(exc, DeadlineExceeded):
            # What the cut socket made of it (a reset, an incomplete status line, a socket
            # timeout) would only hide the reason.
            raise deadline.exceeded() from exc
        raise
    finally:
        deadline.cancel()


def _backoff(attempts: int) -> timedelta:
    base = min(settings.WEBHOOK_FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
    return timedelta(seconds=base * random.uniform(0.9, 1.1))


def deliver(event_pk: int, ticket: datetime | None = None) -> str:
    """Try to deliver one due event (or one a sweep took with ``ticket``); record the
    attempt. Safe to run twice at once.

    Claims the event first (compare-and-set on its due time), so a task and a sweep never
    send it together; the HTTP request runs outside any transaction. Returns the outcome:
    "delivered", "retry", "failed" or "skipped" (not due, or already done).
    """
    now = timezone.now()
    due = Q(next_attempt_at__lte=now)
    if ticket is not None:
        due |= Q(next_attempt_at=ticket)
    claimed = WebhookEvent.objects.filter(
        due, pk=event_pk, state=WebhookEvent.State.PENDING
    ).update(next_attempt_at=now + timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS))
    if not claimed:
        return "skipped"
    event = WebhookEvent.objects.select_related("endpoint").get(pk=event_pk)
    endpoint = event.endpoint
    body = event.body.encode()
    timestamp = str(int(time.time()))
    if endpoint.kind == WebhookEndpoint.Kind.SMSGATE:  # SMSGate's headers and signature
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Timestamp": timestamp,
            "X-Signature": smsgate_signature(endpoint.secret, body, timestamp),
        }
    else:
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
    metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc()
    if error:
        log.info("webhook event %s attempt %d: %s", event.event_id, attempts, error)
    return outcome


def take_due_events(limit: int = 500) -> tuple[list[int], datetime]:
    """Pending events whose time has come (retries, and events whose task was lost), taken
    for one sweep: each is moved WEBHOOK_CLAIM_SECONDS ahead, and that time is the ticket its task
    delivers it with. So another sweep (a second beat, the next run) does not queue it again
    while the first task waits in the queue; a lost task lets it fall due again later.
    Returns the ids and the ticket."""
    now = timezone.now()
    ticket = now + timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
    with transaction.atomic():
        ids = list(
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(state=WebhookEvent.State.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        WebhookEvent.objects.filter(pk__in=ids).update(next_attempt_at=ticket)
    return ids, ticket


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
