"""Prometheus metrics: who may read them, what they count, and that a scrape adds up every
web worker's samples (multiprocess mode, a real gunicorn with two workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from devices import handoff
from messaging import services as messaging
from messaging.lifecycle import Outcome
from messaging.models import Status, WebhookEvent

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.django_db


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape() -> dict:
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.content.decode())


def test_only_allowed_addresses_or_the_token_may_read_them(settings):
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert refused.status_code == 403 and b"METRICS_TOKEN" in refused.content
    # Through a proxy the server was not told about, loopback means nothing.
    relayed = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert relayed.status_code == 403
    settings.BEHIND_PROXY = True  # the front's header names the caller
    assert (
        client.get(
            "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1"
        ).status_code
        == 200
    )
    assert (
        client.get(
            "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7"
        ).status_code
        == 403
    )
    settings.BEHIND_PROXY = False
    settings.METRICS_TOKEN = "s3cret-scraper-token"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert (
        client.get(
            "/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer s3cret-scraper-token"
        ).status_code
        == 200
    )
    wrong = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403


def test_they_count_what_happened_and_show_the_queues_and_phones(
    paired, django_capture_on_commit_callbacks, settings
):
    device, token = paired(title="Pixel")
    account = device.account
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):
        ids = messaging.submit(
            account,
            [messaging.OutgoingSms(device.pk, f"+4915752982{i:03d}", "hi") for i in range(3)],
        )
    now = scrape()
    name = "smsgateway_message_status_changes_total"
    assert (
        value(now, name, status="new", account=str(account.pk))
        - value(before, name, status="new", account=str(account.pk))
        == 3
    )
    waiting = value(
        now, "smsgateway_queue_messages", device=str(device.pk), sim="0", state="waiting"
    )
    assert waiting == 3
    # The phone polls over HTTP (timed by endpoint class), confirms and reports.
    phone = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    answer = phone.post("/api/device/v1/poll", {"wait": 0}, content_type="application/json")
    lease = answer.json()["lease"]
    with django_capture_on_commit_callbacks(execute=True):
        handoff.confirm(device, ids, lease)
        handoff.report(device, [Outcome(i, Status.SENT) for i in ids])
        handoff.report(device, [Outcome(ids[0], Status.DELIVERED)])
    after = scrape()
    polls = "smsgateway_http_request_duration_seconds_count"
    assert (
        value(after, polls, endpoint="device_poll", method="POST", status="2xx")
        - value(before, polls, endpoint="device_poll", method="POST", status="2xx")
        == 1
    )
    assert (
        value(after, name, status="sent", account=str(account.pk))
        - value(before, name, status="sent", account=str(account.pk))
        == 3
    )
    sent = "smsgateway_message_created_to_sent_seconds_count"
    assert value(after, sent) - value(before, sent) == 3
    assert value(after, "smsgateway_device_online", device=str(device.pk), protocol="agent") == 1
    assert (
        value(after, "smsgateway_queue_messages", device=str(device.pk), sim="0", state="waiting")
        == 0
    )
    # The webhook backlog, from the outbox.
    from messaging import webhooks

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    endpoint = webhooks.add_endpoint(account, "status", "http://127.0.0.1:9/hook")
    WebhookEvent.objects.create(endpoint=endpoint, kind="sms.status", body="{}")
    assert value(scrape(), "smsgateway_webhook_backlog_events") == 1


def test_the_alert_rules_name_only_metrics_that_exist():
    import re

    import yaml

    rules = yaml.safe_load((ROOT / "docs" / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    named = {n for e in exprs for n in re.findall(r"smsgateway_[a-z_]+", e)}
    exported = {name for name, _ in scrape()} | {
        f"{family.name}{suffix}"
        for family in text_string_to_metric_families(
            Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
        )
        for suffix in ("", "_total", "_count", "_sum", "_bucket")
    }
    assert named and named <= exported, named - exported


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.mark.slow
def test_a_scrape_adds_up_every_web_worker(tmp_path):
    """Two gunicorn workers, one thread each: requests land on both, and whichever worker
    answers a scrape reports all of them."""
    port = _free_port()
    samples_dir = tmp_path / "prometheus"
    samples_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(GATEWAY_VAR_DIR=str(tmp_path / "var"), PROMETHEUS_MULTIPROC_DIR=str(samples_dir))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    server = subprocess.Popen(
        [
            str(BIN / "gunicorn"), "gateway.wsgi", "-c", "python:gateway.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "1",
        ],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        # Until both workers have served some (each writes its own samples file).
        sent = 1
        while len(list(samples_dir.glob("histogram_*.db"))) < 2 or sent < 40:
            _get(f"{base}/healthz")
            sent += 1
            assert sent < 2000, "one worker served everything"
        for _ in range(6):  # answered by either worker: the same total
            found = samples(_get(f"{base}/metrics").decode())
            count = value(
                found,
                "smsgateway_http_request_duration_seconds_count",
                endpoint="health",
                method="GET",
                status="2xx",
            )
            assert count == sent
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_worker_serves_the_samples_of_its_processes(tmp_path):
    """The Celery worker's own endpoint (a worker in its own container): a child process's
    counts, served by the parent's server from the shared folder."""
    port = _free_port()
    script = f"""
import os, subprocess, sys, urllib.request
os.environ["DJANGO_SETTINGS_MODULE"] = "gateway.settings"
import django; django.setup()
from gateway import metrics
child = "from gateway import metrics; metrics.LEASES_RETURNED.inc(7)"
subprocess.run([sys.executable, "-c", "import django, os; django.setup(); " + child],
               check=True, env=os.environ)
metrics.worker_server({port}, "127.0.0.1")
print(urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
"""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "samples"),
        DJANGO_SETTINGS_MODULE="gateway.settings",
    )
    (tmp_path / "samples").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert value(samples(done.stdout.decode()), "smsgateway_leases_returned_total") == 7
