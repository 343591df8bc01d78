"""gettoken latency with the Argon2id hasher, vs PBKDF2 at 1,000,000 iterations, over HTTP.

What it measures: ``POST /getdata/gettoken`` (urlencoded ``email, pass``, the right
password, so every call is a successful login) through the production shape of the web
process, ``gunicorn gateway.wsgi -c python:gateway.gunicorn_conf --workers 2 --threads 4``
on 127.0.0.1 (bench database, no Redis: the login limits use the file cache):

1. one client, 30 calls in a row (after 3 not recorded): the latency a single
   ``gettoken`` at client start-up sees;
2. 4 clients at once, 10 calls each: a busy machine (two cores, two gunicorn workers,
   each login one core for its hash);
3. the first login of a user whose hash is still PBKDF2: verified with PBKDF2, re-hashed
   with Argon2id and saved (the upgrade on login), and the hash read back.

Naive baseline, run alongside with the same calls: the same server with the settings as
they were (``bench/_pbkdf2_settings.py``: Django's PBKDF2PasswordHasher first, 1,000,000
iterations), for a user hashed that way. Limit: the bare hasher, ``verify()`` of the
user's hash in this process (median of 15); gettoken cannot be faster than that.

Prints p50/p95/max per phase and server, the bare verify times, and two ratios:
Argon2id p50 / PBKDF2 p50 (the naive baseline ratio; below 1 is better) and Argon2id
gettoken p50 / bare Argon2id verify (the limit ratio: what HTTP, the database and the
login limits add). Targets: a bare verify of 50-100 ms; gettoken p95 under 250 ms with
one client and under 1 s with four (the slowest shipped client times out at 2 s).

Run (PostgreSQL at 127.0.0.1:5432; the database in BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/gateway_bench, is created and dropped):

    .venv/bin/python bench/gettoken.py

Bounded: 80 calls per server and at most ~1 min in all; each gunicorn is stopped at the
end, on Ctrl-C and on errors.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as lib

PASSWORD = "bench password 123456"
WARMUP = 3
SEQUENTIAL = 30
CLIENTS = 4
PER_CLIENT = 10
TIMEOUT = 10.0
TARGET_VERIFY_MS = (50.0, 100.0)
TARGET_P95_ONE_MS = 250.0
TARGET_P95_BUSY_MS = 1000.0


def call(client: lib.HttpClient, email: str) -> float:
    started = time.perf_counter()
    status, body = client.post_form("/getdata/gettoken", {"email": email, "pass": PASSWORD})
    elapsed = time.perf_counter() - started
    if status != 200 or body.get("error") != 0:
        raise SystemExit(f"gettoken failed for {email}: HTTP {status} {body}")
    return elapsed


def sequential(port: int, email: str) -> list[float]:
    client = lib.HttpClient(port, timeout=TIMEOUT)
    try:
        for _ in range(WARMUP):
            call(client, email)
        return [call(client, email) for _ in range(SEQUENTIAL)]
    finally:
        client.close()


def concurrent(port: int, email: str) -> tuple[list[float], float]:
    times: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run() -> None:
        client = lib.HttpClient(port, timeout=TIMEOUT)
        try:
            for _ in range(PER_CLIENT):
                elapsed = call(client, email)
                with lock:
                    times.append(elapsed)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"concurrent gettoken failed: {errors[0]}")
    return times, wall


def bare_verify_ms(encoded: str, runs: int = 15) -> float:
    from django.contrib.auth.hashers import identify_hasher

    hasher = identify_hasher(encoded)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        assert hasher.verify(PASSWORD, encoded)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def row(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {label:<44} {lib.percentile(ms, 50):8.1f} {lib.percentile(ms, 95):8.1f} {max(ms):8.1f}"
    )


def measure(env: dict[str, str], folder: str, email: str, title: str) -> dict[str, list[float]]:
    server = lib.Gunicorn(env, folder, workers=2, threads=4)
    try:
        server.wait_ready()
        lib.rule(f"{title}: gunicorn 2 x 4 (pid {server.process.pid})")
        one = sequential(server.port, email)
        busy, wall = concurrent(server.port, email)
        print(f"  {'':<44} {'p50':>8} {'p95':>8} {'max':>8}   (ms)")
        print(row(f"1 client, {SEQUENTIAL} calls in a row", one))
        print(row(f"{CLIENTS} clients x {PER_CLIENT} calls at once", busy))
        print(f"  {CLIENTS} clients: {len(busy) / wall:.1f} logins/s over {wall:.1f} s")
        return {"one": one, "busy": busy}
    finally:
        server.stop()


def main() -> None:
    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with lib.bench_django() as env:
        from django.conf import settings
        from django.contrib.auth.hashers import make_password
        from django.db import connections

        from gateway.models import User

        new_user = User.objects.create_user("argon@bench.example", PASSWORD)
        old_user = User.objects.create_user("pbkdf2@bench.example", PASSWORD)
        upgraded_user = User.objects.create_user("upgrade@bench.example", PASSWORD)
        pbkdf2_hash = make_password(PASSWORD, hasher="pbkdf2_sha256")
        User.objects.filter(pk__in=[old_user.pk, upgraded_user.pk]).update(password=pbkdf2_hash)
        argon_hash = new_user.password
        print(f"[setup] configured hasher: {settings.PASSWORD_HASHERS[0]}")
        print(f"[setup] Argon2id hash: {argon_hash.rsplit('$', 2)[0]}$...")
        print(f"[setup] PBKDF2 hash:   {pbkdf2_hash.rsplit('$', 2)[0]}$...")
        print(f"[setup] {os.cpu_count()} CPUs shared by the clients, gunicorn and PostgreSQL")
        connections.close_all()

        lib.rule("the bare hasher: verify() in this process, median of 15")
        argon_ms = bare_verify_ms(argon_hash)
        pbkdf2_ms = bare_verify_ms(pbkdf2_hash)
        print(f"  Argon2id (m=32 MiB, t=3, p=1)   {argon_ms:7.1f} ms")
        print(f"  PBKDF2-SHA256, 1,000,000 rounds {pbkdf2_ms:7.1f} ms")

        folder = env["GATEWAY_VAR_DIR"]
        server_env = {**env, "ALLOWED_HOSTS": "127.0.0.1"}
        new = measure(server_env, folder, "argon@bench.example", "Argon2id (the gateway)")

        server = lib.Gunicorn(server_env, folder, workers=2, threads=4)
        try:
            server.wait_ready()
            lib.rule("upgrade on login: first gettoken of a user with a PBKDF2 hash")
            client = lib.HttpClient(server.port, timeout=TIMEOUT)
            first = call(client, "upgrade@bench.example")
            second = call(client, "upgrade@bench.example")
            client.close()
        finally:
            server.stop()
        upgraded_user.refresh_from_db()
        stored = upgraded_user.password.rsplit("$", 2)[0]
        print(f"  first login {first * 1000:.1f} ms (PBKDF2 verify + Argon2id hash + save)")
        print(f"  next login  {second * 1000:.1f} ms; stored hash now {stored}$...")
        connections.close_all()

        baseline_env = {
            **server_env,
            "DJANGO_SETTINGS_MODULE": "_pbkdf2_settings",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p
            ),
        }
        old = measure(baseline_env, folder, "pbkdf2@bench.example", "baseline: PBKDF2 1,000,000")

        lib.rule("results")
        new_one = lib.percentile(new["one"], 50) * 1000
        new_busy_p95 = lib.percentile(new["busy"], 95) * 1000
        new_one_p95 = lib.percentile(new["one"], 95) * 1000
        old_one = lib.percentile(old["one"], 50) * 1000
        old_busy = lib.percentile(old["busy"], 50) * 1000
        new_busy = lib.percentile(new["busy"], 50) * 1000
        print(
            f"  gettoken p50, 1 client: Argon2id {new_one:.1f} ms, PBKDF2 {old_one:.1f} ms; "
            f"{CLIENTS} clients: {new_busy:.1f} ms vs {old_busy:.1f} ms"
        )
        print(
            f"  naive baseline ratio (Argon2id / PBKDF2, p50): 1 client {new_one / old_one:.2f}, "
            f"{CLIENTS} clients {new_busy / old_busy:.2f}"
        )
        print(
            f"  limit ratio (gettoken p50 / bare Argon2id verify): {new_one / argon_ms:.2f} "
            f"({new_one:.1f} / {argon_ms:.1f} ms)"
        )
        low, high = TARGET_VERIFY_MS
        checks = [
            (f"bare verify {low:.0f}-{high:.0f} ms", low <= argon_ms <= high),
            (f"p95 1 client <= {TARGET_P95_ONE_MS:.0f} ms", new_one_p95 <= TARGET_P95_ONE_MS),
            (
                f"p95 {CLIENTS} clients <= {TARGET_P95_BUSY_MS:.0f} ms",
                new_busy_p95 <= TARGET_P95_BUSY_MS,
            ),
            ("old hash upgraded on login", stored.startswith("argon2$argon2id")),
        ]
        for label, ok in checks:
            print(f"  {label}: {'MET' if ok else 'MISSED'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
