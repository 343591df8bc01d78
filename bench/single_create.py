"""Single creates against their limit: CPU per request of ``addsms``, REST ``POST
/api/v1/messages`` and SMSGate's ``POST /api/3rdparty/v1/messages`` (JWT) vs the minimal
endpoint doing the same one-row insert in one transaction (bench/reference_create.py).

Each is served by gunicorn 2 x 4 (the real app, and the reference on its own gunicorn of
the same shape); 8 closed-loop clients with keep-alive connections send ROUNDS rounds of
REQUESTS creates, the four variants interleaved within each round (a busier machine hurts
all alike). Per variant: requests/s, and the server's CPU per request (its gunicorn workers
+ PostgreSQL, from /proc): the figure that load on a shared machine disturbs least. Every
answer must be a success; the rows are counted in the database afterwards.

Then where a request's time goes: each real path profiled in-process (cProfile, 300
requests through Django's test client), the gateway's own functions by cumulative time.

Printed: CPU per request, the ratio to the reference (target <= 2), and the profiles.
Run: ``.venv/bin/python bench/single_create.py`` (PostgreSQL at 127.0.0.1:5432; database
``BENCH_DATABASE_URL``; about 1 minute).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from pathlib import Path
from typing import Any

import _benchlib as lib
import orjson

THREADS = 8
ROUNDS = 6
REQUESTS = 300
PROFILED = 300
TARGET = 2.0


def main() -> None:
    with lib.bench_django() as env:
        from django.db import connections

        from gateway import jwt_tokens
        from gateway.services import create_api_token
        from messaging.models import Message

        account, compat = lib.make_account("bench-single@example.com")
        device = lib.make_device(account, slots=(0,)).pk
        _, rest = create_api_token(account, "bench")
        jwt = jwt_tokens.issue(account, frozenset({jwt_tokens.ALL}), None).access
        text = "Your code is 421337. Valid 10 minutes."

        def bodies(kind: str, phones: list[str]) -> list[bytes]:
            if kind == "compat":
                return [f"token={compat}&sendto=%2B{p[1:]}&body={text}&device_id={device}"
                        .encode() for p in phones]  # fmt: skip
            if kind == "smsgate":
                return [orjson.dumps({"phoneNumbers": [p], "textMessage": {"text": text},
                                      "deviceId": str(device)}) for p in phones]  # fmt: skip
            return [orjson.dumps({"to": p, "body": text, "device_id": device}) for p in phones]

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        json_type = {"Content-Type": "application/json"}
        variants = {
            "reference (bare SQL)": ("ref", "/create", {**json_type,
                                     "Authorization": f"Bearer {rest}"}, "rest", 201),
            "addsms": ("real", "/getdata/addsms", form, "compat", 200),
            "REST POST /messages": ("real", "/api/v1/messages", {**json_type,
                                    "Authorization": f"Bearer {rest}"}, "rest", 201),
            "SMSGate API (JWT)": ("real", "/api/3rdparty/v1/messages", {**json_type,
                                  "Authorization": f"Bearer {jwt}"}, "smsgate", 202),
        }  # fmt: skip
        connections.close_all()
        server_env = {**env, "ALLOWED_HOSTS": "127.0.0.1", "API_RATE_LIMIT": "1000000/min"}
        folder = env["GATEWAY_VAR_DIR"]
        servers = {
            "real": lib.Gunicorn(server_env, folder, workers=2, threads=4),
            "ref": lib.Gunicorn(
                server_env,
                folder,
                workers=2,
                threads=4,
                app="reference_create:application",
                extra=("--pythonpath", str(Path(__file__).resolve().parent)),
            ),
        }
        figures: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in variants}
        created = 0
        seed = 0
        try:
            for server in servers.values():
                server.wait_ready()
            pids = {key: server.worker_pids() for key, server in servers.items()}
            print(f"[setup] gunicorn 2 x 4 for the app and for the reference; {os.cpu_count()} "
                  f"CPUs; {THREADS} clients, {ROUNDS} rounds x {REQUESTS}")  # fmt: skip
            for key, path, headers, kind, ok in variants.values():  # warm-up
                seed += 1
                phones = lib.phone_numbers(40, seed=seed)
                warm = bodies(kind, phones)
                created += lib.closed_loop(servers[key].port, path, headers, warm, ok, THREADS)
            for _ in range(ROUNDS):
                for name, (key, path, headers, kind, ok) in variants.items():
                    seed += 1
                    sent = bodies(kind, lib.phone_numbers(REQUESTS, seed=seed))
                    before = sum(map(lib.process_cpu_seconds, pids[key]))
                    before_pg = sum(lib.processes_named("postgres").values())
                    started = time.perf_counter()
                    done = lib.closed_loop(servers[key].port, path, headers, sent, ok, THREADS)
                    wall = time.perf_counter() - started
                    cpu = sum(map(lib.process_cpu_seconds, pids[key])) - before
                    cpu += sum(lib.processes_named("postgres").values()) - before_pg
                    if done != len(sent):
                        print(f"  {name}: {len(sent) - done} requests failed")
                    created += done
                    row = figures[name]
                    row[0], row[1], row[2] = row[0] + done, row[1] + wall, row[2] + cpu
        finally:
            for server in servers.values():
                server.stop()
        stored = Message.objects.filter(account=account).count()
        print(f"  rows stored: {stored:,}; answered as created: {created:,}: "
              f"{'exact' if stored == created else 'MISMATCH'}")  # fmt: skip

        lib.rule("results (sums over the rounds)")
        ref = figures["reference (bare SQL)"]
        ref_cost = ref[2] / ref[0] * 1000
        verdicts = []
        print(f"  {'variant':<22} {'requests':>8} {'req/s':>7} {'CPU ms/request':>15}  "
              "ratio to the reference")  # fmt: skip
        for name, (count, seconds, used) in figures.items():
            cost = used / count * 1000
            print(f"  {name:<22} {int(count):>8,} {count / seconds:>7.0f} {cost:>15.2f}  "
                  f"{cost / ref_cost:.2f}")  # fmt: skip
            if name != "reference (bare SQL)":
                verdicts.append((name, cost / ref_cost))
        for name, ratio in verdicts:
            print(f"  verdict: {name:<22} CPU / reference {ratio:.2f} (target <= {TARGET}): "
                  f"{'MET' if ratio <= TARGET else 'MISSED'}")  # fmt: skip
        profile(variants, bodies)


def profile(variants: dict[str, Any], bodies: Any) -> None:
    """Each real path in-process: where PROFILED requests spend their time."""
    from django.test import Client

    client = Client()
    for name, (key, path, headers, kind, _ok) in variants.items():
        if key != "real":
            continue
        content_type = headers["Content-Type"]
        auth = {}
        if "Authorization" in headers:
            auth["HTTP_AUTHORIZATION"] = headers["Authorization"]
        sent = bodies(kind, lib.phone_numbers(PROFILED, seed=hash(name) % 10**6))
        client.post(path, sent[0], content_type=content_type, **auth)  # warm
        profiler = cProfile.Profile()
        profiler.enable()
        for body in sent[1:]:
            client.post(path, body, content_type=content_type, **auth)
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = stats.total_tt  # type: ignore[attr-defined]
        lib.rule(f"profile: {name}, {PROFILED - 1} requests in-process "
                 f"({total / (PROFILED - 1) * 1000:.2f} ms each under cProfile)")  # fmt: skip
        own = [
            (value[3], f"{filename.removeprefix(str(lib.ROOT) + '/')}:{function}")
            for (filename, _, function), value in stats.stats.items()  # type: ignore[attr-defined]
            if str(lib.ROOT) in filename and "/.venv/" not in filename
        ]
        for cumulative, where in sorted(own, reverse=True)[:14]:
            print(f"  {cumulative / total:6.1%}  {cumulative / (PROFILED - 1) * 1000:6.2f} ms  "
                  f"{where}")  # fmt: skip
        waits = sum(
            value[3]
            for (filename, _, function), value in stats.stats.items()  # type: ignore[attr-defined]
            if function == "wait" and "psycopg" in filename
        )
        print(f"  {waits / total:6.1%}  {waits / (PROFILED - 1) * 1000:6.2f} ms  "
              "waiting for PostgreSQL (psycopg)")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway_bench")
    main()
