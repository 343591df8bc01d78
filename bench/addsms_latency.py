"""addsms latency under a steady open-loop load, through gunicorn on 127.0.0.1.

What it measures: the latency of single ``POST /getdata/addsms`` calls (urlencoded
``token, sendto, body, device_id``, a distinct realistic number each) while 200 requests/s
are offered for 20 s (4,000 requests) to the production shape of the web process:

    .venv/bin/gunicorn gateway.wsgi -c python:gateway.gunicorn_conf --workers 2 --threads 4 \
        --bind 127.0.0.1:<free port>

(plus ``--control-socket`` inside a temporary folder, so it touches nothing in $HOME), with
DATABASE_URL on the bench database, a 50-character SECRET_KEY and ALLOWED_HOSTS=127.0.0.1.

The load is open-loop: request i is scheduled at start + i/200 s whatever happened before,
and its latency runs from that scheduled time to the end of the response, so time spent
waiting for a free connection when the server falls behind is counted (no coordinated
omission). 32 client threads, each with its own keep-alive ``http.client`` connection, take
the next scheduled request in turn. A 3 s warm-up at the same rate comes first and is not
recorded. Every answer must be HTTP 200 with ``"error":0``; the rows are then counted in
the database.

Prints p50/p95/p99/max of the latency (and of the pure service time, sent -> answered, and
of the client's lateness, scheduled -> sent), the achieved rate and the error count, and
the ratio of p99 to the target. Target: p99 <= 30 ms. (No naive baseline: the target is the
reference here.) Note: on a small machine the load generator, gunicorn and PostgreSQL share
the same CPUs; the script prints the CPU count.

Run (PostgreSQL at 127.0.0.1:5432; the database in BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/gateway_bench, is created and dropped):

    .venv/bin/python bench/addsms_latency.py

Bounded: ~30 s in all. gunicorn is stopped at the end, on Ctrl-C and on errors.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as lib

RATE = 200  # requests per second offered
DURATION = 20  # seconds recorded
WARMUP = 3  # seconds, not recorded
THREADS = 32
TIMEOUT = 10  # seconds per request
TARGET_P99_MS = 30.0
PATH = "/getdata/addsms"


FORM = {"Content-Type": "application/x-www-form-urlencoded", "Connection": "keep-alive"}


def answered_ok(status: int, body: bytes) -> bool:
    return status == 200 and body.startswith(b'{"error":0')


def load(port: int, bodies: list[bytes]) -> lib.OpenLoop:
    return lib.OpenLoop(
        port,
        [("POST", "/getdata/addsms", body, FORM) for body in bodies],
        RATE,
        answered_ok,
        timeout=TIMEOUT,
    )


def form_bodies(token: str, device_id: int, phones: list[str]) -> list[bytes]:
    return [
        urlencode(
            {
                "token": token,
                "sendto": phone,
                "body": f"Your verification code is {100000 + (i * 7919) % 900000}. Valid 10 min.",
                "device_id": device_id,
            }
        ).encode()
        for i, phone in enumerate(phones)
    ]


def ms(values: list[float], p: float) -> float:
    return lib.percentile(values, p) * 1000


def main() -> None:
    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # gunicorn logs as the deployment would (INFO); its output goes to a file.
    with lib.bench_django(log_level="WARNING") as env:
        import psycopg
        from django.db import connections

        account, token = lib.make_account("latency@bench.example")
        device = lib.make_device(account, slots=(0, 1))
        connections.close_all()

        warm_count, count = RATE * WARMUP, RATE * DURATION
        phones = lib.phone_numbers(warm_count + count, seed=11)
        warm_bodies = form_bodies(token, device.pk, phones[:warm_count])
        bodies = form_bodies(token, device.pk, phones[warm_count:])

        server_env = {**env, "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "INFO"}
        server = lib.Gunicorn(server_env, env["GATEWAY_VAR_DIR"])
        port = server.port
        try:
            server.wait_ready()
            print(f"[setup] {' '.join(server.command[:8])} (pid {server.process.pid})")
            print(
                f"[setup] {os.cpu_count()} CPUs shared by the load generator, gunicorn and "
                f"PostgreSQL; {THREADS} client threads with keep-alive connections"
            )

            lib.rule(f"warm-up: {RATE} req/s for {WARMUP} s (not recorded)")
            warm = load(port, warm_bodies)
            warm.run(THREADS)
            warm_ok = sum(1 for r in warm.results if r and r[3] == "ok")
            print(f"  {warm_ok}/{warm_count} ok")

            lib.rule(f"open loop: {RATE} req/s offered for {DURATION} s ({count:,} requests)")
            measured = load(port, bodies)
            measured.run(THREADS)
        finally:
            server.stop()
        results = [r for r in measured.results if r is not None]
        ok = [r for r in results if r[3] == "ok"]
        errors = [r for r in results if r[3] != "ok"]
        latency = [done - due for due, _, done, _ in results]
        service = [done - sent for _, sent, done, _ in results]
        lateness = [sent - due for due, sent, _, _ in results]
        elapsed = max(r[2] for r in results) - measured.start
        with psycopg.connect(lib.bench_database_url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM messaging_message WHERE account_id = %s", (account.pk,)
            ).fetchone()
            stored = row[0] if row else 0

        print(f"  {'':<36} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
        for label, values in (
            ("latency, scheduled -> answered (ms)", latency),
            ("service, sent -> answered (ms)", service),
            ("client lateness, scheduled -> sent", lateness),
        ):
            print(
                f"  {label:<36} {ms(values, 50):8.1f} {ms(values, 95):8.1f} "
                f"{ms(values, 99):8.1f} {max(values) * 1000:8.1f}"
            )
        print(
            f"  achieved: {len(ok):,} ok in {elapsed:.2f} s = {len(ok) / elapsed:.1f} req/s "
            f"(offered {RATE}); errors: {len(errors)}"
        )
        kinds: dict[str, int] = {}
        for error in errors:
            kinds[error[3]] = kinds.get(error[3], 0) + 1
        for kind, n in sorted(kinds.items(), key=lambda item: -item[1])[:5]:
            print(f"    {n} x {kind}")
        expected = warm_ok + len(ok)
        print(
            f"  rows in the database: {stored:,} (expected {expected:,} = warm-up + recorded ok): "
            f"{'exact' if stored == expected else 'MISMATCH'}"
        )
        if errors:
            print("  last lines of the gunicorn log:\n" + server.tail(10))

        lib.rule("results")
        p99 = ms(latency, 99)
        verdict = "MET" if p99 <= TARGET_P99_MS and not errors else "MISSED"
        print(
            f"  latency p50 {ms(latency, 50):.1f} ms, p95 {ms(latency, 95):.1f} ms, "
            f"p99 {p99:.1f} ms, max {max(latency) * 1000:.1f} ms"
        )
        print(f"  achieved {len(ok) / elapsed:.1f} req/s of {RATE} offered; {len(errors)} errors")
        print(
            f"  p99 / target = {p99:.1f} / {TARGET_P99_MS:.0f} ms = {p99 / TARGET_P99_MS:.2f}"
            f"   target p99 <= {TARGET_P99_MS:.0f} ms with no errors: {verdict}"
        )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
