"""Replicas on one PostgreSQL and one Redis: three web processes (gunicorn, two workers
each), two Celery workers and two beat schedulers (an operator's common mistake), all real
processes on loopback, bounded in count and time.

- Chaos: SMS created through all three public APIs on every web process while simulated
  phones of both protocols (ours: poll/confirm/report; the SMSGate app's: fetch/PATCH) pick
  a web process at random for every call, and web processes and workers are killed and
  started again at random. Then: no SMS sent twice, none lost, every one delivered; the
  newsletter fanned out once; every webhook event delivered once.
- Events: a phone's stream (or long poll) on one streams process hears of an SMS created
  through another web process.
- Limits: the API rate limit and the login limit hold across the web processes.
- Rolling restart: the web processes are restarted one at a time under load: no accepted
  request is lost and no phone goes without an answer for longer than its poll interval.

PostgreSQL + Redis only (the embedded default is one process by design).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.hashers import make_password
from django.db import connection
from django.utils import timezone

from contacts import services as contacts
from contacts.models import Newsletter
from devices import services as devices
from devices.models import Device
from gateway import services as accounts
from gateway.hashers import GatewayArgon2PasswordHasher
from messaging import webhooks
from messaging.models import Message, Status, WebhookEvent, served_pk
from tests.messaging.test_webhooks import Receiver
from tests.test_background_integration import _database_url, _free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "replica-password-1"
RATE = 40  # API_RATE_LIMIT per minute, in the test of the limits
CLAIM_SECONDS = 10

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not django_settings.REDIS_URL,
        reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL)",
    ),
]


class Process:
    """One server process in its own process group, logging to a file."""

    def __init__(
        self, name: str, command: list[str], folder: Path, port: int = 0, rate: str = ""
    ) -> None:
        """``port``: the HTTP port it serves (waited for); 0 for a worker or beat."""
        self.name, self.command, self.port = name, command, port
        self.log = folder / f"{name}.log"
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "REDIS_URL": django_settings.REDIS_URL,
            "SECRET_KEY": django_settings.SECRET_KEY,
            "GATEWAY_VAR_DIR": str(folder / "var"),
            "SWEEP_SECONDS": "2",
            "WEBHOOK_FIRST_RETRY_SECONDS": "1",
            # A delivery cut off by a killed worker is retried this soon.
            "WEBHOOK_CLAIM_SECONDS": str(CLAIM_SECONDS),
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "1",
            "API_RATE_LIMIT": rate or "100000/min",
            "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            # Open streams write a comment this often: a phone's reader wakes up to stop.
            "STREAM_KEEPALIVE_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("CELERY_BROKER_URL", None)
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if port:
            wait_for(self._answers, 30, f"{name} start")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
        try:
            status, _ = http_call(self.port, "GET", "/healthz")
        except OSError:
            return False
        return status == 200

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.send(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.process.wait()


def exchange(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection: (status, the headers by lower-case name, the body
    as JSON, else as text, None if empty); OSError when the process is gone or dies."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = None
        sent = {"Host": "127.0.0.1", **(headers or {})}
        if isinstance(body, dict | list):
            data, sent["Content-Type"] = json.dumps(body), "application/json"
        elif isinstance(body, str):
            data, sent["Content-Type"] = body, "application/x-www-form-urlencoded"
        conn.request(method, path, data, sent)
        answer = conn.getresponse()
        raw = answer.read()
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from None
    finally:
        conn.close()
    received = {name.lower(): value for name, value in answer.getheaders()}
    try:
        return answer.status, received, json.loads(raw) if raw else None
    except ValueError:
        return answer.status, received, raw.decode(errors="replace")


def http_call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """exchange() without the headers."""
    status, _, payload = exchange(port, method, path, body, headers)
    return status, payload


class Cluster:
    """Web processes (gunicorn), Celery workers and beats, started and killed at will."""

    def __init__(self, folder: Path, rate: str = "") -> None:
        self.folder, self.rate = folder, rate
        (folder / "var").mkdir(parents=True, exist_ok=True)
        self.webs: list[Process] = []
        self.workers: list[Process] = []
        self.streams: list[Process] = []
        self.others: list[Process] = []
        self.count = 0
        self.worker_kills = 0
        self.lock = threading.Lock()

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}-{self.count}"

    def add_web(self) -> Process:
        port = _free_port()
        web = Process(self._name("web"), [
            sys.executable, "-m", "gunicorn", "gateway.wsgi", "-c", "python:gateway.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8",
            "--graceful-timeout", "20",
        ], self.folder, port, self.rate)  # fmt: skip
        with self.lock:
            self.webs.append(web)
        return web

    def add_worker(self) -> Process:
        name = self._name("worker")
        worker = Process(name, [
            sys.executable, "-m", "celery", "-A", "gateway", "worker", "--queues",
            "celery,webhooks", "--concurrency", "2", "--hostname", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
        ], self.folder)  # fmt: skip
        self.workers.append(worker)
        return worker

    def add_beat(self) -> Process:
        name = self._name("beat")
        beat = Process(name, [
            sys.executable, "-m", "celery", "-A", "gateway", "beat", "--loglevel", "WARNING",
            "--schedule", str(self.folder / "var" / f"{name}-schedule"),
        ], self.folder)  # fmt: skip
        self.others.append(beat)
        return beat

    def add_streams(self) -> Process:
        """A streams process (uvicorn, ASGI), stopped as the Procfile's: open streams are
        ended 5 s after SIGTERM."""
        port = _free_port()
        streams = Process(self._name("streams"), [
            sys.executable, "-m", "uvicorn", "gateway.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "5",
        ], self.folder, port)  # fmt: skip
        with self.lock:
            self.streams.append(streams)
        return streams

    def ports(self) -> list[int]:
        with self.lock:
            return [w.port for w in self.webs if w.port and w.process.poll() is None]

    def stream_ports(self) -> list[int]:
        with self.lock:
            return [s.port for s in self.streams if s.process.poll() is None]

    def call(self, rng: random.Random, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None, *, retry: bool = True) -> tuple[int, Any]:  # fmt: skip
        """On a web process picked at random; on a connection failure, on another one
        (only for calls that are safe to repeat: ``retry``)."""
        for _ in range(20):
            ports = self.ports()
            if not ports:
                time.sleep(0.2)
                continue
            try:
                return http_call(rng.choice(ports), method, path, body, headers)
            except OSError:
                if not retry:
                    raise
                time.sleep(0.05)
        raise AssertionError(f"no web process answered {method} {path}")

    def kill_web(self, rng: random.Random) -> None:
        """SIGKILL one web process and start a new one in its place."""
        with self.lock:
            victim = rng.choice(self.webs)
            self.webs.remove(victim)
        victim.stop(signal.SIGKILL)
        self.add_web()

    def kill_streams(self, rng: random.Random) -> None:
        """SIGKILL one streams process and start a new one in its place."""
        with self.lock:
            victim = rng.choice(self.streams)
            self.streams.remove(victim)
        victim.stop(signal.SIGKILL)
        self.add_streams()

    def restart_streams(self) -> None:
        """The rolling restart of the streams processes: one at a time, a new one up, then
        the oldest stopped (SIGTERM: it ends its open streams after 5 s)."""
        for _ in range(len(self.streams)):
            fresh = self.add_streams()
            with self.lock:
                oldest = next(s for s in self.streams if s is not fresh)
                self.streams.remove(oldest)
            oldest.stop(signal.SIGTERM)

    def kill_worker(self, rng: random.Random) -> None:
        self.worker_kills += 1
        victim = rng.choice(self.workers)
        self.workers.remove(victim)
        victim.stop(signal.SIGKILL)
        self.add_worker()

    def stop(self) -> None:
        for process in self.everyone():
            process.stop(timeout=15)

    def everyone(self) -> list[Process]:
        with self.lock:
            return [*self.webs, *self.workers, *self.streams, *self.others]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text()[-1500:]}" for p in self.everyone())


@contextlib.contextmanager
def cluster(
    tmp_path: Path, webs: int, workers: int = 0, beats: int = 0, rate: str = ""
) -> Iterator[Cluster]:
    from tests.conftest import purge_task_queues

    purge_task_queues()
    running = Cluster(tmp_path, rate)
    try:
        for _ in range(webs):
            running.add_web()
        for _ in range(workers):
            running.add_worker()
        for _ in range(beats):
            running.add_beat()
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop()


class OurPhone:
    """A phone of our own protocol: poll (any web process), confirm, send, report."""

    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}
        self.sent: Counter[int] = Counter()
        self.gaps: list[float] = []

    def round(self, nodes: Cluster, rng: random.Random, wait: int = 0) -> None:
        """One poll and what follows; ``wait``: a long poll, on a streams process."""
        if wait:
            status, answer = self.long_poll(nodes, rng, wait)
        else:
            status, answer = nodes.call(rng, "POST", "/api/device/v1/poll", {"wait": 0},
                                        self.headers)  # fmt: skip
        if status != 200 or not answer["messages"]:
            return
        ids = [m["id"] for m in answer["messages"]]
        # A lost confirm answer is repeated with the same lease (docs/device-protocol.md).
        status, confirmed = nodes.call(
            rng, "POST", "/api/device/v1/confirm", {"ids": ids, "lease": answer["lease"]},
            self.headers,
        )  # fmt: skip
        if status != 200:
            return
        mine = confirmed["confirmed"]
        for message_id in mine:
            self.sent[message_id] += 1
        reports = [{"id": i, "status": s} for i in mine for s in ("sent", "delivered")]
        if reports:
            nodes.call(rng, "POST", "/api/device/v1/report", {"reports": reports}, self.headers)

    def long_poll(self, nodes: Cluster, rng: random.Random, wait: int) -> tuple[int, Any]:
        """On a streams process picked at random; when it dies under the wait, at once on
        another one (the agent's retry), the time without a poll waiting noted in gaps."""
        lost = None
        while True:
            ports = nodes.stream_ports()
            if ports:
                tried = time.monotonic()
                try:
                    answer = http_call(rng.choice(ports), "POST", "/api/device/v1/poll",
                                       {"wait": wait}, self.headers)  # fmt: skip
                except OSError:
                    lost = lost or time.monotonic()
                else:
                    if lost is not None:
                        self.gaps.append(tried - lost)
                    return answer
            time.sleep(0.2)


class AppPhone:
    """An SMSGate app phone: fetch (any web process), send what it did not know, report;
    its local database keyed by id, as the app keeps it."""

    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}
        self.known: set[str] = set()
        self.sent: Counter[int] = Counter()

    def round(self, nodes: Cluster, rng: random.Random) -> None:
        status, items = nodes.call(rng, "GET", "/api/mobile/v1/message", None, self.headers)
        if status != 200:
            return
        for item in items:
            if item["id"] not in self.known:
                self.known.add(item["id"])
                pk = served_pk(item["id"])
                assert pk is not None
                self.sent[pk] += 1
            for state in ("Sent", "Delivered"):
                report = [{"id": item["id"], "state": state, "recipients": [
                    {"phoneNumber": item["phoneNumbers"][0], "state": state}]}]  # fmt: skip
                nodes.call(rng, "PATCH", "/api/mobile/v1/message", report, self.headers)


class StreamingAppPhone(AppPhone):
    """An SMSGate app phone on its event stream (any streams process): it fetches on every
    open and on every MessageEnqueued, and when the stream breaks it waits RECONNECT and
    opens it again on a streams process picked at random (the app waits 5 s; shorter
    here, the same logic)."""

    RECONNECT = 1.0

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.opens = self.drops = self.events = 0
        self.gaps: list[float] = []  # from a stream's break to the start of the open that worked

    def listen(self, nodes: Cluster, rng: random.Random, stop: threading.Event) -> None:
        lost = None
        while not stop.is_set():
            ports = nodes.stream_ports()
            if not ports:
                time.sleep(0.2)
                continue
            tried = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", rng.choice(ports), timeout=15)
            try:
                conn.request("GET", "/api/mobile/v1/events",
                             headers={**self.headers, "Accept": "text/event-stream"})  # fmt: skip
                stream = conn.getresponse()
                if stream.status != 200:
                    raise OSError(f"the stream was refused: {stream.status}")
                self.opens += 1
                if lost is not None:
                    self.gaps.append(tried - lost)
                    lost = None
                self.round(nodes, rng)
                event = b""
                while not stop.is_set():
                    line = stream.readline()
                    if not line:
                        raise OSError("the stream ended")
                    if line.startswith(b"event:"):
                        event = line[6:].strip()
                    elif line.startswith(b"data:") and event == b"MessageEnqueued":
                        self.events += 1
                        self.round(nodes, rng)
            except (OSError, http.client.HTTPException):
                if not stop.is_set():
                    self.drops += 1
                    lost = lost or time.monotonic()
                    time.sleep(self.RECONNECT)
            finally:
                conn.close()


def _phones(account: Any, ours: int, apps: int) -> tuple[list[OurPhone], list[AppPhone], list[int]]:
    our_phones, app_phones, device_ids = [], [], []
    for i in range(ours):
        device, token = devices.pair_with_login(
            account, devices.DeviceDetails(title=f"ours-{i}", imei=f"35000000000{i:04d}")
        )
        our_phones.append(OurPhone(token))
        device_ids.append(device.pk)
    for i in range(apps):
        device, token = devices.register_app(account, f"app-{i}", ())
        app_phones.append(AppPhone(token))
        device_ids.append(device.pk)
    Device.objects.filter(pk__in=device_ids).update(
        segments_per_minute=1000, batch_size=50, delay_between_sms=None
    )
    return our_phones, app_phones, device_ids


APIS = ("compat", "rest", "smsgate")


class Sender:
    """An account's SMS creates through the three public APIs, with its credentials (its
    user's password hashed as the servers check it: server_user)."""

    def __init__(self, user: Any) -> None:
        _, self.rest = accounts.create_api_token(user.account, "sender")
        self.compat = accounts.compat_token(user.account)
        self.basic = "Basic " + base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()

    def send(self, call: Callable[..., tuple[int, Any]], api: str, device: int,
             number: str) -> tuple[int, Any, Any]:  # fmt: skip
        """One SMS through ``api`` by ``call(method, path, body, headers)``: (status,
        answer, what identifies the SMS created, or None when it was refused)."""
        if api == "compat":
            form = f"token={self.compat}&sendto=%2B{number[1:]}&body=hi&device_id={device}"
            status, answer = call("POST", "/getdata/addsms", form, {})
            ok = status == 200 and answer.get("error") == 0
            return status, answer, answer["sms_id"] if ok else None
        if api == "rest":
            body = {"to": number, "body": "hi", "device_id": device}
            status, answer = call("POST", "/api/v1/messages", body,
                                  {"Authorization": f"Bearer {self.rest}"})  # fmt: skip
            return status, answer, answer["messages"][0]["id"] if status == 201 else None
        body = {"phoneNumbers": [number], "textMessage": {"text": "hi"},
                "deviceId": str(device), "id": uuid.uuid4().hex}  # fmt: skip
        status, answer = call("POST", "/api/3rdparty/v1/messages", body,
                              {"Authorization": self.basic})  # fmt: skip
        return status, answer, answer["id"] if status == 202 else None


def stored_once(outgoing: Any, accepted: list[tuple[str, Any]]) -> None:
    """Every SMS an API accepted is stored, once (SMSGate's by its id, the others by ours)."""
    for api, key in accepted:
        rows = outgoing.filter(external_id=key) if api == "smsgate" else outgoing.filter(pk=key)
        assert rows.count() == 1, (api, key)


def server_user(make_user: Callable[..., Any], email: str, **extra: Any) -> Any:
    """A user whose password the server processes can check: the tests' fast hasher is
    not one of theirs, so it is hashed again with the gateway's own."""
    user = make_user(email, PASSWORD, **extra)
    user.password = make_password(PASSWORD, hasher=GatewayArgon2PasswordHasher())
    user.save(update_fields=["password"])
    return user


def phone_loop(nodes: Cluster, phone: OurPhone | AppPhone) -> Callable[[random.Random], None]:
    """A phone's work for _keep_running: a round (on any web process), then 0.1 s."""

    def work(rng: random.Random) -> None:
        phone.round(nodes, rng)
        time.sleep(0.1)

    return work


def _keep_running(
    stop: threading.Event, work: Callable[[random.Random], Any], seed: int
) -> threading.Thread:
    """A thread calling ``work(rng)`` until ``stop``; what it raised is in ``.errors``."""
    errors: list[BaseException] = []
    rng = random.Random(seed)

    def loop() -> None:
        try:
            while not stop.is_set():
                work(rng)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            raise

    thread = threading.Thread(target=loop, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_no_sms_is_sent_twice_or_lost_with_replicas_killed_at_random(tmp_path, make_user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    rng = random.Random(11)
    user = server_user(make_user, "replicas@example.com")
    account = user.account
    our_phones, app_phones, device_ids = _phones(account, ours=3, apps=3)
    sender = Sender(user)
    receiver = Receiver()
    endpoint = webhooks.add_endpoint(account, "status", receiver.url)
    tag = contacts.save_tag(account, "customers")
    for i in range(20):
        contacts.save_contact(account, f"+4915711{i:06d}", tag_ids=[tag.pk])
    newsletter = contacts.create_newsletter(
        account, title="Replicas", device_id=device_ids[0], sim=0, body="news",
        tag_ids=[tag.pk], send_at=timezone.now() + timedelta(seconds=3),
    )  # fmt: skip
    accepted: list[tuple[str, Any]] = []  # (api, what identifies the created SMS)
    ambiguous = 0
    stop_load, stop_phones = threading.Event(), threading.Event()

    with cluster(tmp_path, webs=3, workers=2, beats=2) as nodes:

        def send_one(local: random.Random) -> None:
            nonlocal ambiguous
            device = local.choice(device_ids)
            number = f"+49157{local.randrange(10**7):07d}"
            api = local.choice(APIS)

            def call(*args: Any) -> tuple[int, Any]:
                return nodes.call(local, *args, retry=False)

            try:
                _, _, key = sender.send(call, api, device, number)
                if key is not None:
                    accepted.append((api, key))
            except OSError:
                ambiguous += 1  # the process died with the request: it may or may not be stored
            time.sleep(0.05)

        senders = [_keep_running(stop_load, send_one, seed) for seed in range(2)]
        everyone: list[OurPhone | AppPhone] = [*our_phones, *app_phones]
        phones = [
            _keep_running(stop_phones, phone_loop(nodes, p), 20 + i) for i, p in enumerate(everyone)
        ]
        for _ in range(6):  # chaos: a web process or a worker killed every ~2 s
            time.sleep(2)
            (nodes.kill_web if rng.random() < 0.6 else nodes.kill_worker)(rng)
        stop_load.set()
        for thread in senders:
            thread.join(30)

        outgoing = Message.objects.filter(account=account).exclude(status=Status.INCOMING)

        def drained() -> bool:
            return not outgoing.exclude(status=Status.DELIVERED).exists() and (
                Newsletter.objects.get(pk=newsletter.pk).state == "done"
            )

        wait_for(drained, 90, "every SMS delivered")
        stop_phones.set()
        for thread in phones:
            thread.join(30)
        for thread in [*senders, *phones]:
            assert not thread.errors, thread.errors  # type: ignore[attr-defined]

        # Every webhook event of the account is delivered, each once (the receiver answers 200).
        events = WebhookEvent.objects.filter(endpoint=endpoint)
        # A delivery cut off by a killed worker is claimed for CLAIM_SECONDS, then retried.
        undelivered = events.exclude(state=WebhookEvent.State.DELIVERED)
        try:
            wait_for(lambda: not undelivered.exists(), CLAIM_SECONDS + 30, "webhooks delivered")
        except AssertionError:
            print(Counter(events.values_list("state", "attempts")))
            raise
        worker_kills = nodes.worker_kills
    receiver.close()

    # No SMS sent twice: by one phone, or by two.
    sent: Counter[int] = Counter()
    for phone in everyone:
        assert set(phone.sent.values()) <= {1}
        sent.update(phone.sent)
    assert set(sent.values()) == {1}
    # None lost: every SMS stored was sent exactly once and delivered; every accepted one is
    # stored; at most the ambiguous ones (their process died mid-request) more.
    stored = set(outgoing.values_list("id", flat=True))
    assert set(sent) == stored
    assert set(outgoing.values_list("status", flat=True)) == {Status.DELIVERED}
    assert {api for api, _ in accepted} == set(APIS), Counter(api for api, _ in accepted)
    stored_once(outgoing, accepted)
    direct = outgoing.filter(newsletter__isnull=True).count()
    assert len(accepted) <= direct <= len(accepted) + ambiguous
    # The newsletter fanned out once, with two beats and workers killed under it.
    assert outgoing.filter(newsletter=newsletter).count() == 20
    # Each event delivered, once: two beats' sweeps never deliver it twice. A worker killed
    # while a delivery was in flight (the receiver got it, the worker never recorded it) is
    # the only way to a second request of one event (same X-Webhook-Id: receivers dedupe).
    per_event = Counter(item["headers"]["X-Webhook-Id"] for item in receiver.received)
    assert len(per_event) == events.count() > 0
    repeated = sum(n - 1 for n in per_event.values())
    assert repeated <= 2 * worker_kills, (repeated, worker_kills)


def test_a_phones_stream_hears_of_an_sms_created_through_another_process(tmp_path, make_user):
    user = make_user("streams@example.com", PASSWORD)
    device, token = devices.register_app(user.account, "app-stream", ())
    ours, our_token = devices.pair_with_login(
        user.account, devices.DeviceDetails(title="ours", imei="350000000009999")
    )
    compat = accounts.compat_token(user.account)
    with cluster(tmp_path, webs=1) as nodes:
        streams = nodes.add_streams()
        # The SMSGate app's event stream, held by the streams process.
        conn = http.client.HTTPConnection("127.0.0.1", streams.port, timeout=15)
        conn.request("GET", "/api/mobile/v1/events", headers={"Authorization": f"Bearer {token}"})
        stream = conn.getresponse()
        assert stream.status == 200
        form = f"token={compat}&sendto=%2B4915752982212&body=stream&device_id={device.pk}"
        status, answer = http_call(nodes.webs[0].port, "POST", "/getdata/addsms", form)
        assert status == 200 and answer["error"] == 0, answer
        deadline, seen = time.monotonic() + 10, b""
        while b"MessageEnqueued" not in seen and time.monotonic() < deadline:
            seen += stream.readline()
        conn.close()
        assert b"MessageEnqueued" in seen
        # Our long poll, waiting on the streams process, answers an SMS made through web.
        started = time.monotonic()
        results: list[tuple[int, Any]] = []
        poll = threading.Thread(target=lambda: results.append(http_call(
            streams.port, "POST", "/api/device/v1/poll", {"wait": 20},
            {"Authorization": f"Bearer {our_token}"})))  # fmt: skip
        poll.start()
        time.sleep(1.0)
        form = f"token={compat}&sendto=%2B4915752982212&body=poll&device_id={ours.pk}"
        assert http_call(nodes.webs[0].port, "POST", "/getdata/addsms", form)[0] == 200
        poll.join(25)
        ((status, answer),) = results
        assert status == 200 and [m["body"] for m in answer["messages"]] == ["poll"]
        assert time.monotonic() - started < 15  # answered on the event, not the 20 s wait


@pytest.fixture
def fresh_counters() -> Iterator[None]:
    """Login failures and rate-limit histories (in Redis, shared with every test of the run
    from this address): none before, none left for the next test."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def test_rate_and_login_limits_hold_across_processes(tmp_path, make_user, fresh_counters):
    rng = random.Random(5)
    user = make_user("limits@example.com", PASSWORD)
    _, secret = accounts.create_api_token(user.account, "limited")
    with cluster(tmp_path, webs=3, rate=f"{RATE}/min") as nodes:
        bearer = {"Authorization": f"Bearer {secret}"}
        statuses = Counter(
            nodes.call(rng, "GET", "/api/v1/messages", None, bearer)[0] for _ in range(RATE + 15)
        )
        assert statuses == {200: RATE, 429: 15}, statuses
        wrong = [f"email=limits%40example.com&pass=wrong-{i}" for i in range(12)]
        answers = [nodes.call(rng, "POST", "/getdata/gettoken", form)[1] for form in wrong]
        refused = [a for a in answers if "Too many" in str(a.get("message", ""))]
        assert len(refused) == len(wrong) - accounts.FAILURE_LIMIT, answers
        # The right password is refused too while the account is blocked, on any process.
        right = nodes.call(rng, "POST", "/getdata/gettoken",
                           f"email=limits%40example.com&pass={PASSWORD}")[1]  # fmt: skip
        assert "Too many" in right["message"]


def test_a_rolling_restart_under_load_loses_no_accepted_request(tmp_path, make_user):
    user = make_user("rolling@example.com", PASSWORD)
    (phone,), _, (device_id,) = _phones(user.account, ours=1, apps=0)
    _, secret = accounts.create_api_token(user.account, "rolling")
    keys: dict[str, int] = {}  # Idempotency-Key -> the id answered
    stop = threading.Event()
    answered_at: list[float] = []
    poll_interval = 10.0

    with cluster(tmp_path, webs=3) as nodes:

        def create(local: random.Random) -> None:
            key = uuid.uuid4().hex
            body = {
                "to": f"+49157{local.randrange(10**7):07d}",
                "body": "r",
                "device_id": device_id,
            }
            headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}
            # Safe to repeat on another process: the key makes a retry the same request.
            status, answer = nodes.call(local, "POST", "/api/v1/messages", body, headers)
            assert status == 201, answer
            keys[key] = answer["messages"][0]["id"]
            time.sleep(0.05)

        def poll(local: random.Random) -> None:
            phone.round(nodes, local)
            answered_at.append(time.monotonic())
            time.sleep(0.2)

        threads = [_keep_running(stop, create, 1), _keep_running(stop, poll, 2)]
        time.sleep(1)
        for _ in range(3):  # one at a time: a new process up, then the oldest stopped
            fresh = nodes.add_web()
            with nodes.lock:
                oldest = next(w for w in nodes.webs if w is not fresh)
                nodes.webs.remove(oldest)
            oldest.stop(signal.SIGTERM)
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(30)
            assert not thread.errors, thread.errors  # type: ignore[attr-defined]
    assert len(keys) > 20
    stored = Message.objects.filter(account=user.account)
    assert stored.count() == len(keys) and set(stored.values_list("id", flat=True)) == set(
        keys.values()
    )
    gaps = [b - a for a, b in itertools.pairwise(answered_at)]
    assert max(gaps) < poll_interval, max(gaps)


def test_phones_streams_survive_killed_and_restarted_streams_processes(tmp_path, make_user):
    """SSE phones and long-polling phones spread over two streams processes while SMS are
    created on a web process; a streams process killed twice, then all restarted one at a
    time. Every SMS reaches its phone once; every phone is back within its reconnect delay;
    afterwards events still reach every stream, whichever process holds it."""
    user = make_user("stream-replicas@example.com", PASSWORD)
    ours, _, device_ids = _phones(user.account, ours=2, apps=0)
    streaming = []
    for i in range(4):
        device, token = devices.register_app(user.account, f"stream-{i}", ())
        streaming.append(StreamingAppPhone(token))
        device_ids.append(device.pk)
    Device.objects.filter(pk__in=device_ids).update(
        segments_per_minute=1000, batch_size=50, delay_between_sms=None
    )
    _, secret = accounts.create_api_token(user.account, "streams")
    bearer = {"Authorization": f"Bearer {secret}"}
    rng = random.Random(7)
    stop_load, stop_phones = threading.Event(), threading.Event()
    outgoing = Message.objects.filter(account=user.account)

    def delivered() -> bool:
        return not outgoing.exclude(status=Status.DELIVERED).exists()

    with cluster(tmp_path, webs=1) as nodes:
        for _ in range(2):
            nodes.add_streams()

        def create(local: random.Random, device: int | None = None) -> None:
            body = {"to": f"+49157{local.randrange(10**7):07d}", "body": "s",
                    "device_id": device or local.choice(device_ids)}  # fmt: skip
            headers = {**bearer, "Idempotency-Key": uuid.uuid4().hex}
            status, answer = nodes.call(local, "POST", "/api/v1/messages", body, headers)
            assert status == 201, answer
            time.sleep(0.1)

        def long_polling(phone: OurPhone) -> Callable[[random.Random], None]:
            return lambda local: phone.round(nodes, local, wait=5)

        threads = [_keep_running(stop_load, create, 1)]
        threads += [_keep_running(stop_phones, long_polling(p), 10 + i) for i, p in enumerate(ours)]
        listeners = []
        for i, phone in enumerate(streaming):
            args = (nodes, random.Random(20 + i), stop_phones)
            listeners.append(threading.Thread(target=phone.listen, args=args, daemon=True))
        for thread in listeners:
            thread.start()
        wait_for(lambda: all(p.opens for p in streaming), 30, "every stream open")
        for _ in range(2):
            time.sleep(3)
            nodes.kill_streams(rng)
        time.sleep(2)
        nodes.restart_streams()
        stop_load.set()
        threads[0].join(30)
        wait_for(delivered, 60, "every SMS delivered")
        # Now, with no stream breaking: one SMS per streaming phone reaches it by its event.
        drops, events = [p.drops for p in streaming], [p.events for p in streaming]
        reached = outgoing.count()
        for app_id in device_ids[len(ours) :]:
            create(rng, app_id)
        wait_for(delivered, 30, "the last SMS delivered")
        assert outgoing.count() == reached + len(streaming)
        assert [p.drops for p in streaming] == drops
        assert all(p.events > e for p, e in zip(streaming, events, strict=True))
        stop_phones.set()
        for thread in [*threads, *listeners]:
            thread.join(30)
            assert not getattr(thread, "errors", None), thread.errors  # type: ignore[attr-defined]

    everyone: list[OurPhone | StreamingAppPhone] = [*ours, *streaming]
    sent: Counter[int] = Counter()
    for each in everyone:
        sent.update(each.sent)
    assert set(sent.values()) == {1} and set(sent) == set(outgoing.values_list("id", flat=True))
    # Every streaming phone lost its stream in the restart at least, and came back at its
    # first reconnect (at most one unlucky pick of a process going away: 2 delays + slack).
    assert all(p.drops >= 1 for p in streaming), [p.drops for p in streaming]
    gaps = [g for each in everyone for g in each.gaps]
    print(f"drops {[p.drops for p in streaming]}, events {[p.events for p in streaming]}, "
          f"longest gap {max(gaps, default=0):.2f} s of {len(gaps)}")  # fmt: skip
    assert gaps and max(gaps) < 2 * StreamingAppPhone.RECONNECT + 5, gaps
