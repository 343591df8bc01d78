"""Prometheus metrics at ``/metrics``: what happened, and what is.

*What happened* (counters and histograms: requests, status changes, latencies, leases
returned, deadlines hit, webhook attempts) is counted where it happens, in whichever process
that is. With ``PROMETHEUS_MULTIPROC_DIR`` set (scripts/run.sh and the compose file set it
before any process starts) every process writes its samples to files there and a scrape adds
them up (prometheus_client's multiprocess mode), so all web workers and Celery workers on a
host are one view; without it each process counts for itself.

*What is* (queues per device and SIM, phones online, held pooled SMS, the webhook backlog) is
read from the database at scrape time, so every process answers the same.

Labels are bounded: endpoint classes, status names, account and device ids (the fleet), no
phone number and no message id. docs/operations.md lists every metric.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from gateway.clients import client_address

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

HTTP_REQUESTS = Histogram(
    "smsgateway_http_request_duration_seconds",
    "HTTP requests by endpoint class, method and status class, and how long they took "
    "(device_poll includes the long poll's wait).",
    ["endpoint", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STATUS_CHANGES = Counter(
    "smsgateway_message_status_changes_total",
    "Messages moved to a status (created ones count as 'new' when stored).",
    ["status", "account"],
)
CREATED_TO_SENT = Histogram(
    "smsgateway_message_created_to_sent_seconds",
    "From a message's creation to the phone's 'sent' report.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 24 * 3600),
)
SENT_TO_DELIVERED = Histogram(
    "smsgateway_message_sent_to_delivered_seconds",
    "From the phone's 'sent' report to the delivery report.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600),
)
LEASES_RETURNED = Counter(
    "smsgateway_leases_returned_total",
    "Leases a phone never confirmed, returned to the queue when they expired.",
)
OUTCOMES_OVERDUE = Counter(
    "smsgateway_outcome_deadlines_total",
    "Messages a phone took that ended unknown (22): no outcome by their deadline.",
)
WEBHOOK_ATTEMPTS = Counter(
    "smsgateway_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, retry, failed).",
    ["outcome"],
)

# Endpoint classes: the first prefix that matches (a bounded label, never the raw path).
_ENDPOINTS = (
    ("/getdata/", "compat"),
    ("/api/v1/", "rest"),
    ("/api/device/v1/poll", "device_poll"),
    ("/api/device/v1/", "device"),
    ("/api/mobile/v1/message", "mobile_message"),
    ("/api/mobile/v1/events", "mobile_events"),
    ("/api/mobile/v1/", "mobile"),
    ("/admin/", "admin"),
    ("/metrics", "metrics"),
    ("/healthz", "health"),
    ("/readyz", "health"),
)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def endpoint_class(path: str) -> str:
    return next((name for prefix, name in _ENDPOINTS if path.startswith(prefix)), "other")


class RequestMetricsMiddleware:
    """Times every request (first in MIDDLEWARE, so it sees what the others cost too)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        endpoint = endpoint_class(request.path)
        if endpoint != "mobile_events":  # an event stream lasts as long as the phone wants
            method = request.method if request.method in _METHODS else "other"
            HTTP_REQUESTS.labels(endpoint, method, f"{response.status_code // 100}xx").observe(
                time.perf_counter() - started
            )
        return response


# --- Counted by the code that moves messages (messaging.lifecycle) ---------------------------


def status_changed(
    status_name: str,
    per_account: Mapping[int, int],
    latencies: Iterable[tuple[datetime, datetime]] = (),
) -> None:
    """``per_account[a]`` messages of account ``a`` moved to ``status_name``, and for
    sent/delivered the (from, to) times of each; counted once the transaction commits."""
    tally = dict(per_account)
    spans = list(latencies)

    def count() -> None:
        for account, n in tally.items():
            STATUS_CHANGES.labels(status_name, str(account)).inc(n)
        histogram = {"sent": CREATED_TO_SENT, "delivered": SENT_TO_DELIVERED}.get(status_name)
        if histogram is not None:
            for start, end in spans:
                histogram.observe(max((end - start).total_seconds(), 0.0))

    transaction.on_commit(count)


# --- Read at scrape time ---------------------------------------------------------------------


class FleetCollector(Collector):
    """Gauges from the database: each a few grouped, indexed queries."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from devices import queries
        from devices.models import Device
        from messaging.models import Message, Problem, Status, WebhookEvent

        now = timezone.now()
        queue = GaugeMetricFamily(
            "smsgateway_queue_messages",
            "Messages per device and SIM slot (0-based): waiting, or with the phone.",
            labels=["device", "sim", "state"],
        )
        for device_id, sim, status, n in (
            Message.objects.filter(status__in=[Status.NEW, Status.TAKEN], device__isnull=False)
            .values_list("device_id", "sim", "status")
            .annotate(n=Count("id"))
            .order_by()
        ):
            state = "waiting" if status == Status.NEW else "with_phone"
            queue.add_metric([str(device_id), str(sim), state], n)
        yield queue

        held = GaugeMetricFamily(
            "smsgateway_pool_held_messages",
            "Pooled messages no SIM of their pool may take yet.",
            labels=["pool"],
        )
        for pool_id, n in (
            Message.objects.filter(status=Status.NEW, pool__isnull=False, device__isnull=True)
            .values_list("pool_id")
            .annotate(n=Count("id"))
            .order_by()
        ):
            held.add_metric([str(pool_id)], n)
        yield held

        online = GaugeMetricFamily(
            "smsgateway_device_online",
            "1 while the phone counts as online (it polled or pinged lately), else 0.",
            labels=["device", "protocol"],
        )
        seen = GaugeMetricFamily(
            "smsgateway_device_last_seen_timestamp_seconds",
            "When the phone was last heard from (Unix time).",
            labels=["device"],
        )
        for device in Device.objects.filter(enabled=True).only(
            "pk", "protocol", "last_seen_at", "delay_between_requests"
        ):
            online.add_metric(
                [str(device.pk), device.protocol], float(queries.is_online(device, now))
            )
            if device.last_seen_at is not None:
                seen.add_metric([str(device.pk)], device.last_seen_at.timestamp())
        yield online
        yield seen

        open_problems = GaugeMetricFamily(
            "smsgateway_problems_open",
            "Fleet problems open now (messaging.problems), by kind.",
            labels=["kind"],
        )
        counts = dict(
            Problem.objects.filter(resolved_at=None)
            .values_list("kind")
            .annotate(n=Count("id"))
            .order_by()
        )
        for kind in Problem.Kind.values:
            open_problems.add_metric([kind], counts.get(kind, 0))
        yield open_problems

        pending = WebhookEvent.objects.filter(state=WebhookEvent.State.PENDING).aggregate(
            n=Count("id"), oldest=Min("created_at")
        )
        yield GaugeMetricFamily(
            "smsgateway_webhook_backlog_events",
            "Webhook events not delivered yet (first attempts and retries).",
            value=pending["n"] or 0,
        )
        oldest = pending["oldest"]
        yield GaugeMetricFamily(
            "smsgateway_webhook_backlog_oldest_seconds",
            "Age of the oldest undelivered webhook event (0: none).",
            value=(now - oldest).total_seconds() if oldest is not None else 0.0,
        )


# --- The endpoint ----------------------------------------------------------------------------


def _allowed(request: HttpRequest) -> bool:
    """With METRICS_TOKEN: a matching ``Authorization: Bearer`` token. Without: a client
    address in METRICS_ALLOW_FROM (loopback by default)."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    if not settings.BEHIND_PROXY and request.META.get("HTTP_X_FORWARDED_FOR"):
        # Relayed by a proxy we were not told about (an HTTPS front on this host would make
        # every caller look like loopback): its address says nothing about the caller.
        return False
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOW_FROM)


def exposition() -> bytes:
    """Every metric in Prometheus's text format."""
    if MULTIPROCESS:
        events = CollectorRegistry()
        multiprocess.MultiProcessCollector(events)
    else:
        events = REGISTRY
    fleet = CollectorRegistry()
    fleet.register(FleetCollector())
    return generate_latest(events) + generate_latest(fleet)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse(
            "Metrics are served to METRICS_ALLOW_FROM addresses, or with METRICS_TOKEN.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    # The text format every Prometheus version reads.
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def worker_server(port: int, address: str) -> Any:
    """For a Celery worker in its own container (no web process beside it to serve its
    samples): an HTTP server on ``address:port`` serving the samples in
    PROMETHEUS_MULTIPROC_DIR (unauthenticated: bind it where only the scraper reaches)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return start_http_server(port, addr=address, registry=registry)
