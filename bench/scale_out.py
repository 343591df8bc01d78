"""How far one machine goes: the same mixed load on 1, 2 and 3 web processes.

The production shape of the Procfile on one PostgreSQL and one Redis: web processes
(gunicorn, one worker of 8 threads each: "a process" is one Python interpreter), one
streams process (uvicorn), a Celery worker (queue ``celery``), a webhook worker (queue
``webhooks``, concurrency 4) and beat. Two mixes, each for 15 s per shape after a 3 s
warm-up. The full mix:

- 6 closed-loop senders creating SMS through all three public APIs in turn (SMSGateway24's
  ``addsms``, REST ``POST /api/v1/messages``, SMSGate's ``POST /api/3rdparty/v1/messages``
  with Basic), every call on the web processes in turn;
- 5 phones of our protocol long-polling on the streams process (``wait`` 10 s: the Redis
  wake-up answers them), then confirm and report sent + delivered on the web processes;
- 5 SMSGate app phones on their event stream (streams process), fetching on every
  ``MessageEnqueued`` and PATCHing Sent, then Delivered, per message on the web processes;
- a newsletter to NEWSLETTER contacts started at the window's start (fanned out by the
  worker, sent by the same phones);
- a webhook endpoint for status changes (sent, delivered), answered by a receiver here.

The web mix is the part the web processes carry alone: the same senders, and the same
phones polling the web processes (our ``wait`` 0 and the app's ``GET /message``, every
0.2 s while there is nothing), no newsletter, no webhook: how web processes scale when the
cores are there for them.

Printed per shape: SMS created/s and delivered/s (counted in the database), webhook
deliveries/s (counted by the receiver) and the events still waiting at the window's end
(the next shape starts when they are delivered), the newsletter's fan-out, and where the CPU went
(web, streams, workers, beat, PostgreSQL, Redis, the load generator, the rest, in cores of
the machine); then the scaling ratios (2 / 1 and 3 / 1) and SMS delivered per busy core.

Last, the webhook worker alone: WEBHOOK_EVENTS events queued at once for a receiver that
answers at once, then for one that takes 100 ms (a realistic receiver): deliveries/s of one
webhook worker (concurrency 4), and its CPU.

Run: ``.venv/bin/python bench/scale_out.py`` (PostgreSQL at 127.0.0.1:5432, database
``BENCH_DATABASE_URL``; an empty Redis database ``BENCH_REDIS_URL``, default
redis://127.0.0.1:6379/12, emptied at the end; about 4 minutes).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import threading
import time
import uuid
from typing import Any

import _benchlib as lib
import redis

WARMUP, WINDOW = 3.0, 15.0
SENDERS, OURS, APPS = 6, 5, 5
NEWSLETTER = 300
WEBHOOK_EVENTS = 1000
MIXES = {
    "web": "web only: phones poll the web processes, no webhook, no newsletter",
    "full": "the full mix: streams, long polls, newsletter, webhooks",
}
PASSWORD = "bench password 123456"


class Client:
    """Keep-alive HTTP/1.1 to the given ports, one after the other per call."""

    def __init__(self, ports: list[int], timeout: float = 30.0) -> None:
        self.ports = itertools.cycle(ports)
        self.timeout = timeout
        self.connections: dict[int, http.client.HTTPConnection] = {}

    def call(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        port = next(self.ports)
        for attempt in (0, 1):
            conn = self.connections.get(port)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
                self.connections[port] = conn
            try:
                data = body if isinstance(body, str) or body is None else json.dumps(body)
                kind = "application/x-www-form-urlencoded" if isinstance(body, str) else (
                    "application/json")  # fmt: skip
                conn.request(method, path, data, {**headers, "Content-Type": kind})
                answer = conn.getresponse()
                raw = answer.read()
                return answer.status, (json.loads(raw) if raw else None)
            except (OSError, http.client.HTTPException):
                conn.close()
                del self.connections[port]
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Fleet:
    """The account, phones, and for the full mix the contacts and webhook endpoint, that
    one mix uses."""

    def __init__(self, receiver: lib.Receiver, mix: str) -> None:
        from contacts import services as contacts
        from devices import services as devices
        from devices.models import Device
        from gateway.services import compat_token, create_api_token
        from messaging import webhooks

        self.mix = mix
        email = f"bench-{mix}@example.com"
        self.account, self.compat = lib.make_account(email)
        assert self.compat == compat_token(self.account)
        _, self.rest = create_api_token(self.account, "scale")
        login = f"{email}:{PASSWORD}".encode()
        self.basic = base64.b64encode(login).decode()
        self.ours: list[str] = []
        self.apps: list[str] = []
        self.ids: list[int] = []
        for i in range(OURS):
            imei = f"35{len(mix):02d}000000{i:05d}"
            details = devices.DeviceDetails(title=f"ours-{i}", imei=imei)
            device, token = devices.pair_with_login(self.account, details)
            self.ours.append(token)
            self.ids.append(device.pk)
        for i in range(APPS):
            device, token = devices.register_app(self.account, f"app-{i}", ())
            self.apps.append(token)
            self.ids.append(device.pk)
        Device.objects.filter(pk__in=self.ids).update(
            segments_per_minute=1000, batch_size=50, delay_between_sms=None
        )
        if mix == "full":
            self.tag = contacts.save_tag(self.account, "everyone")
            for i in range(NEWSLETTER):
                contacts.save_contact(self.account, f"+4915190{i:06d}", tag_ids=[self.tag.pk])
            webhooks.add_endpoint(self.account, "status", receiver.url)

    def newsletter(self, shape: int) -> Any:
        from contacts import services as contacts

        return contacts.create_newsletter(
            self.account, title=f"Scale {shape}", device_id=self.ids[shape % len(self.ids)],
            sim=0, body="news", tag_ids=[self.tag.pk],
        )  # fmt: skip


def main() -> None:
    with lib.bench_django(redis=True) as env:
        from django.conf import settings
        from django.db import connections

        from messaging.models import Message, Status

        # Hooks to this machine's receiver; a rate limit that never bites; beat's sweeps
        # on their production schedule.
        server_env = {**env, "ALLOWED_HOSTS": "127.0.0.1", "API_RATE_LIMIT": "10000000/min",
                      "WEBHOOK_ALLOW_PRIVATE_TARGETS": "1"}  # fmt: skip
        settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True  # this process adds the endpoints
        folder = env["GATEWAY_VAR_DIR"]
        receiver = lib.Receiver()
        fleets = [Fleet(receiver, mix) for mix in MIXES]
        connections.close_all()
        background = [
            lib.celery("worker", "celery", 2, server_env, folder),
            lib.celery("webhooks", "webhooks", 4, server_env, folder),
            lib.celery("beat", "", 0, server_env, folder),
        ]
        streams = lib.Uvicorn(server_env, folder)
        results: dict[str, list[tuple[int, dict[str, Any]]]] = {mix: [] for mix in MIXES}
        try:
            streams.wait_ready()
            for fleet in fleets:
                for shape in (1, 2, 3):
                    webs = [lib.Gunicorn(server_env, folder, workers=1, threads=8)
                            for _ in range(shape)]  # fmt: skip
                    try:
                        for web in webs:
                            web.wait_ready()
                        outcome = run(webs, streams, background, fleet, receiver, shape)
                        results[fleet.mix].append((shape, outcome))
                    finally:
                        for web in webs:
                            web.stop()
                    # The next shape starts from an empty queue.
                    Message.objects.filter(account=fleet.account).exclude(
                        status=Status.DELIVERED
                    ).update(status=Status.DELIVERED)
                    connections.close_all()
            drains = [drain_webhooks(fleets[-1], background[1], delay) for delay in (0.0, 0.1)]
        finally:
            for process in [streams, *background]:
                process.stop()
            receiver.close()
        for mix in MIXES:
            report(mix, results[mix])
        report_drains(drains)


Drain = tuple[float, float, float]


def report(mix: str, results: list[tuple[int, dict[str, Any]]]) -> None:
    lib.rule(f"results, {MIXES[mix]}")
    print(f"  {'web':>4} {'created/s':>10} {'delivered/s':>12} {'per web':>8} {'hooks/s':>8}"
          f"  {'newsletter':>10}   cores: busy  web  streams  workers  PostgreSQL  Redis"
          "  load")  # fmt: skip
    for shape, r in results:
        c = r["cpu"]
        workers = c["worker"] + c["webhooks"] + c["beat"]
        print(f"  {shape:>4} {r['created']:>10.0f} {r['delivered']:>12.0f} "
              f"{r['delivered'] / shape:>8.0f} {r['hooks']:>8.0f}  {r['newsletter']:>10}"
              f"   {c['machine']:>10.2f} {c['web']:>4.2f} {c['streams']:>8.2f} {workers:>8.2f}"
              f" {c['PostgreSQL']:>11.2f} {c['Redis']:>6.2f}"
              f" {c['load generator']:>5.2f}")  # fmt: skip
    base = results[0][1]["delivered"]
    cpus = os.cpu_count() or 1
    for shape, r in results[1:]:
        print(f"  scaling {shape} / 1 web process: {r['delivered'] / base:.2f}")
    for shape, r in results:
        c = r["cpu"]
        parts = {k: v for k, v in c.items() if k not in ("machine", "other")}
        top = max(parts, key=lambda k: parts[k])
        limit = (
            f"the machine ({c['machine']:.2f} of {cpus} cores busy; most: {top} {parts[top]:.2f})"
            if c["machine"] >= 0.9 * cpus
            else f"not the cores ({c['machine']:.2f} of {cpus} busy); web {c['web'] / shape:.2f}"
            " of a core per process"
        )
        print(f"  {shape} web process(es): {r['per_core']:.0f} SMS delivered per busy core, "
              f"webhook backlog {r['backlog']} at the window's end; limit: {limit}")  # fmt: skip


def report_drains(drains: list[Drain]) -> None:
    lib.rule("results, the webhook worker alone")
    for rate, cpu, delay in drains:
        ceiling = f"; wait-bound ceiling 4 / {delay} s = {4 / delay:.0f}/s" if delay else ""
        print(f"  webhook worker (concurrency 4), receiver answering in {delay * 1000:.0f} ms: "
              f"{rate:.0f} deliveries/s, {cpu:.2f} cores ({rate / max(cpu, 0.01):.0f} per busy "
              f"core){ceiling}")  # fmt: skip


def run(webs: list[Any], streams: Any, background: list[Any], fleet: Fleet,
        receiver: lib.Receiver, shape: int) -> dict[str, Any]:  # fmt: skip
    from messaging.models import Message, Status, WebhookEvent

    ports = [w.port for w in webs]
    stop = threading.Event()
    created = [0]
    recording = threading.Event()

    def sender(index: int) -> None:
        client = Client(ports[index % len(ports) :] + ports[: index % len(ports)])
        n = 0
        while not stop.is_set():
            n += 1
            device = fleet.ids[(index + n) % len(fleet.ids)]
            number = f"+49157{(index * 1_000_003 + n) % 10**7:07d}"
            kind = (index + n) % 3
            if kind == 0:
                body = f"token={fleet.compat}&sendto=%2B{number[1:]}&body=hi&device_id={device}"
                status, _ = client.call("POST", "/getdata/addsms", body, {})
            elif kind == 1:
                status, _ = client.call("POST", "/api/v1/messages",
                                        {"to": number, "body": "hi", "device_id": device},
                                        {"Authorization": f"Bearer {fleet.rest}"})  # fmt: skip
            else:
                status, _ = client.call("POST", "/api/3rdparty/v1/messages",
                                        {"phoneNumbers": [number], "textMessage": {"text": "hi"},
                                         "deviceId": str(device), "id": uuid.uuid4().hex},
                                        {"Authorization": f"Basic {fleet.basic}"})  # fmt: skip
            if status in (200, 201, 202) and recording.is_set():
                created[0] += 1

    full = fleet.mix == "full"

    def our_phone(token: str) -> None:
        client = Client(ports)
        # The full mix long-polls on the streams process; the web mix polls the web ones.
        waiting, wait = (Client([streams.port]), 10) if full else (client, 0)
        auth = {"Authorization": f"Bearer {token}"}
        while not stop.is_set():
            _, answer = waiting.call("POST", "/api/device/v1/poll", {"wait": wait}, auth)
            if not answer or not answer.get("messages"):
                if not full:
                    time.sleep(0.2)
                continue
            taken = [m["id"] for m in answer["messages"]]
            _, confirmed = client.call("POST", "/api/device/v1/confirm",
                                       {"ids": taken, "lease": answer["lease"]}, auth)  # fmt: skip
            reports = [{"id": i, "status": s} for i in confirmed["confirmed"]
                       for s in ("sent", "delivered")]  # fmt: skip
            client.call("POST", "/api/device/v1/report", {"reports": reports}, auth)

    def app_phone(token: str) -> None:
        client, auth = Client(ports), {"Authorization": f"Bearer {token}"}

        def fetch() -> bool:
            _, items = client.call("GET", "/api/mobile/v1/message", None, auth)
            for item in items or ():
                number = item["phoneNumbers"][0]
                for state in ("Sent", "Delivered"):
                    recipients = [{"phoneNumber": number, "state": state}]
                    report = [{"id": item["id"], "state": state, "recipients": recipients}]
                    client.call("PATCH", "/api/mobile/v1/message", report, auth)
            return bool(items)

        if not full:  # the web mix: the app's pull, every 0.2 s while there is nothing
            while not stop.is_set():
                if not fetch():
                    time.sleep(0.2)
            return
        conn = http.client.HTTPConnection("127.0.0.1", streams.port, timeout=30)
        conn.request("GET", "/api/mobile/v1/events", headers=auth)
        stream = conn.getresponse()
        assert stream.status == 200, stream.status
        fetch()  # the app pulls on every open
        event = b""
        while not stop.is_set():
            line = stream.readline()
            if not line:
                break
            if line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"data:") and event == b"MessageEnqueued":
                fetch()
        conn.close()

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(SENDERS)]
    threads += [threading.Thread(target=our_phone, args=(t,), daemon=True) for t in fleet.ours]
    threads += [threading.Thread(target=app_phone, args=(t,), daemon=True) for t in fleet.apps]
    for thread in threads:
        thread.start()
    time.sleep(WARMUP)
    delivered = Message.objects.filter(status=Status.DELIVERED)
    before, hooks_before = delivered.count(), receiver.count
    meter = lib.CpuMeter(
        [pid for w in webs for pid in w.worker_pids()], label="web",
        groups={"streams": [streams.pid], **{p.name.removeprefix("celery-"): p.pids()
                                              for p in background}},
    )  # fmt: skip
    recording.set()
    started = time.perf_counter()
    newsletter = fleet.newsletter(shape) if full else None
    time.sleep(WINDOW)
    recording.clear()
    elapsed = time.perf_counter() - started
    summary = meter.stop()
    cpu = meter.cores
    done = delivered.count() - before
    hooks = receiver.count - hooks_before
    fanned = Message.objects.filter(newsletter=newsletter).count() if newsletter else 0
    waiting = WebhookEvent.objects.filter(state=WebhookEvent.State.PENDING)
    backlog = waiting.count()
    store = redis.Redis.from_url(os.environ["REDIS_URL"])
    memory, clients = store.info("memory"), store.info("clients")
    in_redis = (f"Redis: {store.dbsize()} keys in the bench's database, "
                f"{memory['used_memory'] / 2**20:.1f} MB used by the whole server, "
                f"{clients['connected_clients']} clients")  # fmt: skip
    stop.set()
    for thread in threads:
        thread.join(15)
    # The next shape starts with no webhook left to deliver.
    deadline = time.monotonic() + 180
    while waiting.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    busy = cpu["machine"]
    print(f"[{fleet.mix}, {shape} web process(es)] created {created[0] / elapsed:.0f}/s, delivered "
          f"{done / elapsed:.0f}/s, webhooks {hooks / elapsed:.0f}/s ({backlog} waiting at the "
          f"end), newsletter {fanned}/{NEWSLETTER if full else 0}; {summary}")  # fmt: skip
    print(f"  {in_redis}")
    return {
        "created": created[0] / elapsed, "delivered": done / elapsed, "hooks": hooks / elapsed,
        "backlog": backlog,
        "newsletter": f"{fanned}/{NEWSLETTER if full else 0}", "cpu": cpu,
        "per_core": done / elapsed / max(busy, 0.01),
    }  # fmt: skip


def drain_webhooks(fleet: Fleet, worker: Any, delay: float) -> Drain:
    """WEBHOOK_EVENTS events queued at once for a receiver answering after ``delay``:
    (deliveries/s, cores of the webhook worker, delay)."""
    from messaging import webhooks
    from messaging.models import WebhookEvent

    receiver = lib.Receiver(delay)
    try:
        endpoint = webhooks.add_endpoint(fleet.account, "status", receiver.url)
        meter = lib.CpuMeter(worker.pids(), label="webhooks")
        started = time.perf_counter()
        events = [
            WebhookEvent(endpoint=endpoint, kind="webhook.test", body='{"test": true}')
            for _ in range(WEBHOOK_EVENTS)
        ]
        # As every event of the gateway is queued: the rows, then one task each.
        webhooks._queue(events)
        deadline = time.monotonic() + 120
        while receiver.count < WEBHOOK_EVENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        summary = meter.stop()
        print(f"[webhook drain, receiver {delay * 1000:.0f} ms] {receiver.count} delivered "
              f"in {elapsed:.1f} s; {summary}")  # fmt: skip
        cpu = meter.cores["webhooks"]
        webhooks.delete_endpoint(fleet.account, endpoint.pk)
        return receiver.count / elapsed, cpu, delay
    finally:
        receiver.close()


if __name__ == "__main__":
    os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway_bench")
    main()
