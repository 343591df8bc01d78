"""Sending through SMSGate's integration API vs through REST API v1, in one run.

What it measures: the server's cost of creating SMS through ``POST /api/3rdparty/v1/messages``
against ``POST /api/v1/messages`` (the REST API, our reference path), on the same gunicorn
(2 workers x 4 threads, the production shape), the same database and the same device:

- **single**: one recipient per request;
- **batch**: 100 recipients per request (SMSGate's maximum; REST's ``to`` as a list).

SMSGate's API is called as its SDKs call it: with ``Authorization: Basic`` (the account's
login; the password is checked on every request, as by every Basic API) and with a JWT
from ``POST /auth/token`` (``Bearer``). REST uses its API token (``Bearer``).

Closed loop: 8 client threads with keep-alive connections, each sending its share of the
round's requests one after the other; 6 rounds, the variants interleaved within each round
(so a busier machine hurts all alike). Per variant: SMS/s achieved, and the CPU it cost per
SMS on the server side (gunicorn's workers + PostgreSQL, from /proc), which is the figure
that load on a shared machine disturbs least. Every answer must be 202 (SMSGate) or 201
(REST); the rows are counted in the database afterwards.

Printed: a table per size, and the ratios SMSGate / REST of CPU per SMS (target <= 1.0:
sending through this API costs no more than through REST v1) and of SMS/s.

Run: ``.venv/bin/python bench/smsgate_send.py`` (PostgreSQL at 127.0.0.1:5432; database
``BENCH_DATABASE_URL``, default ``gateway_bench``; about 1 minute).
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import _benchlib as lib
import orjson

THREADS = 8
ROUNDS = 6
SINGLE_PER_ROUND = 400
BATCH_PER_ROUND = 12
BATCH_SIZE = 100
PASSWORD = "bench password 123456"
TARGET = 1.0


def _bodies(kind: str, device: int, phones: list[str], size: int) -> list[bytes]:
    """Request bodies of ``size`` recipients each, over ``phones``."""
    out = []
    for start in range(0, len(phones), size):
        group = phones[start : start + size]
        text = f"Your code is {100000 + start % 900000}. Valid 10 minutes."
        if kind == "rest":
            payload: dict[str, Any] = {"to": group if size > 1 else group[0], "body": text,
                                       "device_id": device}  # fmt: skip
        else:
            payload = {"phoneNumbers": group, "textMessage": {"text": text},
                       "deviceId": str(device), "priority": 0,
                       "withDeliveryReport": True}  # fmt: skip
        out.append(orjson.dumps(payload))
    return out


def main() -> None:
    with lib.bench_django() as env:
        from gateway import jwt_tokens
        from gateway.services import create_api_token
        from messaging.models import Message

        account, _ = lib.make_account("bench-send@example.com")
        device = lib.make_device(account, slots=(0,))
        _, rest_secret = create_api_token(account, "bench")
        pair = jwt_tokens.issue(account, frozenset({jwt_tokens.ALL}), None)
        basic = base64.b64encode(f"bench-send@example.com:{PASSWORD}".encode()).decode()
        json_type = {"Content-Type": "application/json"}
        variants = {
            "REST v1 (API token)": ("/api/v1/messages", f"Bearer {rest_secret}", "rest", 201),
            "SMSGate API, JWT": ("/api/3rdparty/v1/messages", f"Bearer {pair.access}", "sg", 202),
            "SMSGate API, Basic": ("/api/3rdparty/v1/messages", f"Basic {basic}", "sg", 202),
        }
        from django.db import connections

        connections.close_all()
        server_env = {**env, "ALLOWED_HOSTS": "127.0.0.1", "API_RATE_LIMIT": "1000000/min"}
        server = lib.Gunicorn(server_env, env["GATEWAY_VAR_DIR"], workers=2, threads=4)
        figures: dict[tuple[str, str], list[float]] = {}
        sent = 0
        seed = 0
        try:
            server.wait_ready()
            print(f"[setup] gunicorn 2 x 4 (pid {server.process.pid}); {os.cpu_count()} CPUs; "
                  f"{THREADS} client threads, {ROUNDS} rounds, variants interleaved")  # fmt: skip
            pids = server.worker_pids()
            sizes = (("single", 1, SINGLE_PER_ROUND), ("batch", BATCH_SIZE, BATCH_PER_ROUND))
            for path, auth, kind, ok in variants.values():  # warm-up, not recorded
                seed += 1
                phones = lib.phone_numbers(40 * BATCH_SIZE // 10, seed=seed)
                headers = {**json_type, "Authorization": auth}
                warm = _bodies(kind, device.pk, phones, 1)[:40]
                sent += lib.closed_loop(server.port, path, headers, warm, ok, THREADS)
            for _ in range(ROUNDS):
                for size_name, size, requests in sizes:
                    for name, (path, auth, kind, ok) in variants.items():
                        seed += 1
                        phones = lib.phone_numbers(size * requests, seed=seed)
                        bodies = _bodies(kind, device.pk, phones, size)
                        before_server = sum(lib.process_cpu_seconds(p) for p in pids)
                        before_pg = sum(lib.processes_named("postgres").values())
                        started = time.perf_counter()
                        headers = {**json_type, "Authorization": auth}
                        done = lib.closed_loop(server.port, path, headers, bodies, ok, THREADS)
                        wall = time.perf_counter() - started
                        cpu = sum(lib.process_cpu_seconds(p) for p in pids) - before_server
                        cpu += sum(lib.processes_named("postgres").values()) - before_pg
                        sent += done * size
                        if done != len(bodies):
                            print(f"  {name} {size_name}: {len(bodies) - done} requests failed")
                        sms = done * size
                        row = figures.setdefault((size_name, name), [0.0, 0.0, 0.0])
                        row[0] += sms
                        row[1] += wall
                        row[2] += cpu
        finally:
            server.stop()

        stored = Message.objects.filter(account=account).count()
        print(f"  rows stored: {stored:,}; SMS answered as created: {sent:,}: "
              f"{'exact' if stored == sent else 'MISMATCH'}")  # fmt: skip
        lib.rule("results (sums over the rounds)")
        verdicts = []
        for size_name, _, _ in sizes:
            print(f"  {size_name}: {'variant':<22} {'SMS':>7} {'SMS/s':>8} {'CPU ms/SMS':>11}")
            rest = figures[(size_name, "REST v1 (API token)")]
            rest_cost = rest[2] / rest[0] * 1000
            for name in variants:
                count, seconds, used = figures[(size_name, name)]
                cost = used / count * 1000
                print(f"  {'':<{len(size_name) + 1}} {name:<22} {int(count):>7,} "
                      f"{count / seconds:>8.0f} "
                      f"{cost:>11.3f}   ratio to REST: CPU {cost / rest_cost:.2f}, "
                      f"SMS/s {(count / seconds) / (rest[0] / rest[1]):.2f}")  # fmt: skip
                if name != "REST v1 (API token)":
                    ratio = cost / rest_cost
                    verdicts.append((f"{size_name}, {name}", ratio))
        lib.rule("verdict: CPU per SMS, SMSGate API / REST v1 (target <= 1.0)")
        for label, ratio in verdicts:
            print(f"  {label:<32} {ratio:.2f}  {'MET' if ratio <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
