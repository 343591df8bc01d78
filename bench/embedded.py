"""What the embedded default carries: SQLite, no Redis, through gunicorn as `manage.py run`
starts it (2 workers x 4 threads), so a user starting with it knows when to move to
PostgreSQL (docs/operations.md, "Embedded default vs PostgreSQL + Redis").

Three figures, each bounded, on a fresh SQLite file in a temporary folder (WAL, as the
settings open it):

1. Single creates: ``POST /getdata/addsms`` by 8 closed-loop clients, 1,200 requests:
   requests/s and the server's CPU per request.
2. Bulk: ``POST /getdata/addalotofsms`` with 1,000 items, 10 requests one after the other:
   SMS/s committed.
3. Phones: 20 phones of our protocol, each looping poll -> confirm -> report (sent +
   delivered) over 4,000 queued SMS (batch 25, 1,000 segments a minute each, the most a
   phone may be given): SMS cycled per second, and poll p50/p99.

Every figure is checked in the database (rows stored, every SMS delivered once).
Run: ``.venv/bin/python bench/embedded.py`` (nothing else needed; about a minute).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

import _benchlib as lib
import orjson

THREADS = 8
SINGLE = 1_200
BULK_REQUESTS, BULK_ITEMS = 10, 1_000
PHONES, QUEUED, BATCH = 20, 4_000, 25


def main() -> None:
    folder = tempfile.mkdtemp(prefix="gateway-embedded-bench-")
    env = {
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "GATEWAY_VAR_DIR": folder,
        "SECRET_KEY": lib.BENCH_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,testserver",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
        "API_RATE_LIMIT": "1000000/min",
    }
    os.environ.update(env)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        run(env, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(env: dict[str, str], folder: str) -> None:
    from django.db import connection, connections

    from devices import services as devices
    from devices.models import Device
    from messaging.models import Message, Status

    account, token = lib.make_account("embedded@example.com")
    device = lib.make_device(account, slots=(0,))
    phones = []
    for i in range(PHONES):
        paired, secret = devices.pair_with_login(
            account, devices.DeviceDetails(title=f"phone {i}", imei=f"35111100000{i:04d}")
        )
        phones.append((paired.pk, secret))
    Device.objects.filter(pk__in=[p for p, _ in phones]).update(
        segments_per_minute=1000, batch_size=BATCH, delay_between_sms=None
    )
    connections.close_all()
    server = lib.Gunicorn(env, folder, workers=2, threads=4)
    print(f"[setup] SQLite {connection.Database.sqlite_version}, gunicorn 2 x 4 "  # type: ignore[attr-defined]
          f"(pid {server.process.pid}); {os.cpu_count()} CPUs")  # fmt: skip
    try:
        server.wait_ready()
        pids = server.worker_pids()
        cpu = lambda: sum(map(lib.process_cpu_seconds, pids))  # noqa: E731

        # 1. Single creates.
        lib.rule(f"1. single creates: addsms, {THREADS} clients, {SINGLE:,} requests")
        numbers = lib.phone_numbers(SINGLE, seed=1)
        forms = [f"token={token}&sendto=%2B{n[1:]}&body=Code+421337&device_id={device.pk}"
                 .encode() for n in numbers]  # fmt: skip
        shares = [forms[i::THREADS] for i in range(THREADS)]
        latencies: list[float] = []
        failures = [0]

        def sender(share: list[bytes]) -> None:
            http = lib.HttpClient(server.port, timeout=60)
            for body in share:
                started = time.perf_counter()
                status, raw = http.request("/getdata/addsms", body, {
                    "Content-Type": "application/x-www-form-urlencoded"}, retry=False)  # fmt: skip
                latencies.append(time.perf_counter() - started)
                if status != 200 or orjson.loads(raw).get("error") != 0:
                    failures[0] += 1
            http.close()

        used, started = cpu(), time.perf_counter()
        threads = [threading.Thread(target=sender, args=(s,)) for s in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall, used = time.perf_counter() - started, cpu() - used
        stored = Message.objects.filter(device_id=device.pk).count()
        print(f"  {SINGLE / wall:,.0f} requests/s; server CPU {used / SINGLE * 1000:.2f} ms per "
              f"request; latency p50 {lib.percentile(latencies, 50) * 1000:.1f} ms, p99 "
              f"{lib.percentile(latencies, 99) * 1000:.1f} ms; {failures[0]} failed; "
              f"{stored:,} rows stored")  # fmt: skip
        single = SINGLE / wall

        # 2. Bulk.
        lib.rule(f"2. bulk: addalotofsms, {BULK_REQUESTS} x {BULK_ITEMS:,} items")
        http = lib.HttpClient(server.port, timeout=120)
        numbers = lib.phone_numbers(BULK_REQUESTS * BULK_ITEMS, seed=2)
        times = []
        for r in range(BULK_REQUESTS):
            chunk = numbers[r * BULK_ITEMS : (r + 1) * BULK_ITEMS]
            items = [{"sendto": n, "body": f"Order {r}-{i} shipped", "device_id": device.pk}
                     for i, n in enumerate(chunk)]  # fmt: skip
            body = orjson.dumps({"token": token, "smsdata": items})
            started = time.perf_counter()
            status, raw = http.request("/getdata/addalotofsms", body,
                                       {"Content-Type": "application/json"})  # fmt: skip
            times.append(time.perf_counter() - started)
            if status != 200 or orjson.loads(raw).get("error") != 0:
                raise SystemExit(f"addalotofsms failed: {status} {raw[:300]!r}")
        http.close()
        stored = Message.objects.filter(device_id=device.pk).count() - stored
        bulk = BULK_REQUESTS * BULK_ITEMS / sum(times)
        print(f"  {bulk:,.0f} SMS/s committed (p50 {lib.percentile(times, 50) * 1000:.0f} ms "
              f"per request of {BULK_ITEMS:,}); {stored:,} rows stored")  # fmt: skip

        # 3. Phones: poll -> confirm -> report.
        lib.rule(f"3. {PHONES} phones cycling {QUEUED:,} SMS (poll, confirm, report)")
        per_phone = QUEUED // PHONES
        numbers = lib.phone_numbers(QUEUED, seed=3)
        http = lib.HttpClient(server.port, timeout=60)
        for index, (pk, _) in enumerate(phones):
            items = [{"sendto": n, "body": "Queued", "device_id": pk}
                     for n in numbers[index * per_phone : (index + 1) * per_phone]]  # fmt: skip
            http.request("/getdata/addalotofsms", orjson.dumps({"token": token, "smsdata": items}),
                         {"Content-Type": "application/json"})  # fmt: skip
        http.close()
        polls: list[float] = []
        sent: list[int] = []

        def phone(secret: str) -> None:
            client = lib.HttpClient(server.port, timeout=60)
            auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
            while True:
                started = time.perf_counter()
                _, raw = client.request("/api/device/v1/poll", b'{"wait": 0}', auth)
                polls.append(time.perf_counter() - started)
                answer = orjson.loads(raw)
                if not answer["messages"]:
                    break
                ids = [m["id"] for m in answer["messages"]]
                _, raw = client.request("/api/device/v1/confirm", orjson.dumps(
                    {"ids": ids, "lease": answer["lease"]}), auth)  # fmt: skip
                mine = orjson.loads(raw)["confirmed"]
                sent.extend(mine)
                reports = [{"id": i, "status": s} for i in mine for s in ("sent", "delivered")]
                client.request("/api/device/v1/report", orjson.dumps({"reports": reports}), auth)
            client.close()

        used, started = cpu(), time.perf_counter()
        threads = [threading.Thread(target=phone, args=(s,)) for _, s in phones]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall, used = time.perf_counter() - started, cpu() - used
        delivered = Message.objects.filter(
            device_id__in=[p for p, _ in phones], status=Status.DELIVERED
        ).count()
        cycles = len(sent) / wall
        print(f"  {cycles:,.0f} SMS/s cycled; server CPU {used / max(len(sent), 1) * 1000:.2f} ms "
              f"per SMS; poll p50 {lib.percentile(polls, 50) * 1000:.1f} ms, p99 "
              f"{lib.percentile(polls, 99) * 1000:.1f} ms; {delivered:,} of {QUEUED:,} delivered, "
              f"{len(sent) - len(set(sent))} sent twice")  # fmt: skip
    finally:
        server.stop()
    lib.rule("results (SQLite, no Redis)")
    print(f"  single creates {single:,.0f}/s; bulk {bulk:,.0f} SMS/s; "
          f"phones {cycles:,.0f} SMS/s through poll -> confirm -> report")  # fmt: skip


if __name__ == "__main__":
    main()
