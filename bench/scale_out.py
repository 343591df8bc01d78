"""How far one machine goes: the same mixed load on 1, 2 and 3 web processes.

What it measures: SMS created through all three public APIs (SMSGateway24's ``addsms``, REST
``POST /api/v1/messages``, SMSGate's ``POST /api/3rdparty/v1/messages``, in turn) by 6
closed-loop senders, while 10 phones take them: 5 of our protocol (poll, confirm, report
sent + delivered) and 5 SMSGate app phones (fetch, PATCH Sent and Delivered per message),
every call on the web processes in turn. Each web process is one gunicorn worker with 8
threads (``--workers 1``), so "a process" is one Python interpreter. 15 s per shape after a
3 s warm-up, on one PostgreSQL; SMS delivered in the window are counted in the database.

Printed per shape: SMS created/s and delivered/s, per process, and where the CPU went
(web processes, PostgreSQL, the load generator, the rest, in cores of the 2); then the
scaling ratios (2 / 1 and 3 / 1 processes) and SMS delivered per busy core.

Run: ``.venv/bin/python bench/scale_out.py`` (PostgreSQL at 127.0.0.1:5432, database
``BENCH_DATABASE_URL``; about 1.5 minutes). No Redis, as every bench: the phones poll
without waiting, and the rate limit (set high) is kept in the file cache.
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

WARMUP, WINDOW = 3.0, 15.0
SENDERS, OURS, APPS = 6, 5, 5
PASSWORD = "bench password 123456"


class Client:
    """Keep-alive HTTP/1.1 to the web processes, one after the other per call."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = itertools.cycle(ports)
        self.connections: dict[int, http.client.HTTPConnection] = {}

    def call(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        port = next(self.ports)
        for attempt in (0, 1):
            conn = self.connections.get(port)
            if conn is None:
                conn = self.connections[port] = http.client.HTTPConnection("127.0.0.1", port)
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


def main() -> None:
    with lib.bench_django() as env:
        from django.db import connections

        from devices import services as devices
        from devices.models import Device
        from gateway.services import compat_token, create_api_token
        from messaging.models import Message, Status

        account, compat = lib.make_account("bench-scale@example.com")
        _, rest = create_api_token(account, "scale")
        basic = base64.b64encode(f"bench-scale@example.com:{PASSWORD}".encode()).decode()
        ours, apps, ids = [], [], []
        for i in range(OURS):
            device, token = devices.pair_with_login(
                account, devices.DeviceDetails(title=f"ours-{i}", imei=f"3500000000{i:05d}")
            )
            ours.append(token)
            ids.append(device.pk)
        for i in range(APPS):
            device, token = devices.register_app(account, f"app-{i}", ())
            apps.append(token)
            ids.append(device.pk)
        Device.objects.filter(pk__in=ids).update(
            segments_per_minute=1000, batch_size=50, delay_between_sms=None
        )
        assert compat == compat_token(account)
        connections.close_all()
        server_env = {**env, "ALLOWED_HOSTS": "127.0.0.1", "API_RATE_LIMIT": "10000000/min"}
        results = []
        for shape in (1, 2, 3):
            servers = [
                lib.Gunicorn(server_env, env["GATEWAY_VAR_DIR"], workers=1, threads=8)
                for _ in range(shape)
            ]
            try:
                for server in servers:
                    server.wait_ready()
                results.append((shape, run(servers, compat, rest, basic, ours, apps, ids)))
            finally:
                for server in servers:
                    server.stop()
            # The next shape starts from an empty queue.
            Message.objects.filter(account=account).exclude(status=Status.DELIVERED).update(
                status=Status.DELIVERED
            )
            connections.close_all()

        lib.rule("results")
        print(f"  {'processes':>9} {'created/s':>10} {'delivered/s':>12} {'per process':>12}  CPU")
        for shape, (created, delivered, cpu, _) in results:
            print(f"  {shape:>9} {created:>10.0f} {delivered:>12.0f} {delivered / shape:>12.0f}"
                  f"  {cpu}")  # fmt: skip
        base = results[0][1][1]
        for shape, (_, delivered, _, _) in results[1:]:
            print(f"  scaling {shape} / 1 process: {delivered / base:.2f}")
        for shape, (_, _, _, per_core) in results:
            print(f"  {shape} process(es): {per_core:.0f} SMS delivered per busy core")


def run(servers: list[Any], compat: str, rest: str, basic: str, ours: list[str],
        apps: list[str], ids: list[int]) -> tuple[float, float, str, float]:  # fmt: skip
    from messaging.models import Message, Status

    ports = [s.port for s in servers]
    stop = threading.Event()
    created = [0]
    recording = threading.Event()

    def sender(index: int) -> None:
        client = Client(ports[index % len(ports) :] + ports[: index % len(ports)])
        n = 0
        while not stop.is_set():
            n += 1
            device = ids[(index + n) % len(ids)]
            number = f"+49157{(index * 1_000_003 + n) % 10**7:07d}"
            kind = (index + n) % 3
            if kind == 0:
                body = f"token={compat}&sendto=%2B{number[1:]}&body=hi&device_id={device}"
                status, _ = client.call("POST", "/getdata/addsms", body, {})
            elif kind == 1:
                status, _ = client.call("POST", "/api/v1/messages",
                                        {"to": number, "body": "hi", "device_id": device},
                                        {"Authorization": f"Bearer {rest}"})  # fmt: skip
            else:
                status, _ = client.call("POST", "/api/3rdparty/v1/messages",
                                        {"phoneNumbers": [number], "textMessage": {"text": "hi"},
                                         "deviceId": str(device), "id": uuid.uuid4().hex},
                                        {"Authorization": f"Basic {basic}"})  # fmt: skip
            if status in (200, 201, 202) and recording.is_set():
                created[0] += 1

    def our_phone(token: str) -> None:
        client, auth = Client(ports), {"Authorization": f"Bearer {token}"}
        while not stop.is_set():
            _, answer = client.call("POST", "/api/device/v1/poll", {"wait": 0}, auth)
            if not answer or not answer.get("messages"):
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
        while not stop.is_set():
            _, items = client.call("GET", "/api/mobile/v1/message", None, auth)
            if not items:
                time.sleep(0.2)
                continue
            for item in items:
                number = item["phoneNumbers"][0]
                for state in ("Sent", "Delivered"):
                    recipients = [{"phoneNumber": number, "state": state}]
                    report = [{"id": item["id"], "state": state, "recipients": recipients}]
                    client.call("PATCH", "/api/mobile/v1/message", report, auth)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(SENDERS)]
    threads += [threading.Thread(target=our_phone, args=(t,), daemon=True) for t in ours]
    threads += [threading.Thread(target=app_phone, args=(t,), daemon=True) for t in apps]
    for thread in threads:
        thread.start()
    time.sleep(WARMUP)
    delivered = Message.objects.filter(status=Status.DELIVERED)
    before = delivered.count()
    meter = lib.CpuMeter([pid for s in servers for pid in s.worker_pids()])
    busy_before, _ = lib._machine_ticks()
    recording.set()
    started = time.perf_counter()
    time.sleep(WINDOW)
    recording.clear()
    elapsed = time.perf_counter() - started
    cpu = meter.stop()
    busy = (lib._machine_ticks()[0] - busy_before) / os.sysconf("SC_CLK_TCK") / elapsed
    done = delivered.count() - before
    stop.set()
    for thread in threads:
        thread.join(30)
    print(f"[{len(servers)} web process(es)] created {created[0] / elapsed:.0f}/s, delivered "
          f"{done / elapsed:.0f}/s; {cpu}")  # fmt: skip
    return created[0] / elapsed, done / elapsed, cpu, done / elapsed / max(busy, 0.01)


if __name__ == "__main__":
    os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway_bench")
    main()
