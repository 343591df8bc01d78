"""The device protocol's performance targets: poll, confirm, report, long poll.

Five sections, each printing its figures and a line ``target ...: MET`` or ``MISSED``:

1. **Fleet load** - 500 simulated phones poll ``/api/device/v1/poll`` (``wait`` 0) every
   5 s, staggered, on an open-loop schedule (a poll's latency runs from its scheduled time,
   so a server that falls behind is charged for the wait), through gunicorn
   (``gateway.wsgi``, 2 workers x 16 threads, production keep-alive). A phone that gets
   messages confirms them and reports "sent" then "delivered" (two report calls), while a
   producer creates ~20 SMS/s through ``/getdata/addsms`` for random phones. 8 rounds
   (40 s); the first round warms connections and is not counted. Prints poll p50/p95/p99/max
   for all, empty and message-carrying polls, confirm/report/addsms latency and counts.
   Target: poll p99 <= 50 ms.
2. **An empty poll writes nothing** - 200 empty polls over HTTP by a phone seen moments
   ago, with PostgreSQL's counters (``pg_stat_database``: xact_commit, tup_inserted/
   updated/deleted; ``pg_stat_user_tables``: n_tup_ins/upd/del per table) read before and
   after. Backends only publish their counters when they end or every ~1-10 s, so before
   each reading the bench database's sessions are ended (``pg_terminate_backend``; the
   gunicorn workers reconnect) and a control reading with no requests measures what the
   readings themselves cost. Then the same 200 polls with last-seen 20 s old (the heartbeat
   writes it once: at most every 15 s), one poll that hands out 10 messages, its confirm
   and its report, for comparison. Every SELECT in autocommit counts in xact_commit, so the
   statements of one empty poll are also listed in-process (``CaptureQueriesContext``) and
   checked: none may be INSERT/UPDATE/DELETE or take a row lock.
   Target: an empty poll performs no write.
3. **Claim + report throughput** - 20,000 SMS over 50 phones (batch_size 50, 1,000
   segments/minute, no delay between SMS, so pacing never limits), 50 client threads (one
   per phone) loop poll -> confirm -> report(sent + delivered, one call) over HTTP against
   gunicorn 2 x 16; a cycle is one message claimed and reported. Baseline in the same
   process, same server: the same loop with batch_size 1 (one message per poll: the naive
   client that asks for one SMS at a time). The limit, after the server stops: the same
   cycles' bare SQL (claim with SKIP LOCKED, confirm, report SENT then DELIVERED, history
   rows, a COMMIT per step) on one psycopg connection per phone, 20,000 more SMS. Runs are
   time-bounded (20 s and 8 s). Then, in-process, where one cycle's server time goes:
   statements per request and their time. Targets: >= 1,000 cycles/s and >= 0.7 of the
   limit (and the ratio to the baseline).
4. **Scale** - the same work on a 10,000-row database and on one of 1,000,000 pending +
   5,000,000 finished SMS (2,000 phones of one account plus 100 of another; loaded with
   ``INSERT ... SELECT generate_series``, then ``VACUUM ANALYZE``), in-process through the
   Django test client: empty polls of 20 idle phones (each with history and scheduled
   messages, nothing due) and poll -> confirm -> report cycles of 20 phones with 300 due
   messages each (batch 25). The big load drops the secondary indexes and rebuilds them
   from their exact definitions, with foreign-key triggers off for the loading session
   only (~40 s instead of ~2.5 min). Printed for both sizes: every statement of a poll with
   its time, EXPLAIN ANALYZE of the claim query and of the poll's reads, and (what-if,
   bench database only) the cancellations read with a partial index made for it.
   Target: big/small <= 1.5 for poll p99 (the worse of empty and claiming polls) and for
   the claim rate (``--reduced`` loads 1,000,000 + 2,000,000 instead, and says so).
5. **Long poll** - gunicorn 2 workers x 64 threads (WEB_THREADS 64, so 60 waiting polls
   per process), REDIS_URL=redis://127.0.0.1:6379/14: 50 phones long-poll (``wait`` 25)
   continuously while a producer sends an urgent addsms to a random one every 100-200 ms
   for 20 s; latency from addsms sent (and from its answer) to the phone holding the poll
   answer with that id. Also what waiting costs: worker RSS and threads (/proc),
   PostgreSQL sessions of the bench database (pg_stat_activity) and Redis clients of db 14,
   with 0, 50 and 100 polls waiting. Target: p99 <= 1 s.

Run (PostgreSQL at 127.0.0.1:5432, user postgres, trust auth; Redis at 127.0.0.1:6379 for
section 5, db 14 only; the database in BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/gateway_bench, is created and dropped):

    .venv/bin/python bench/device_poll.py                 # all five, ~4 minutes
    .venv/bin/python bench/device_poll.py --section 1 --section 3   # some of them
    .venv/bin/python bench/device_poll.py --section 4 --reduced     # 1 M + 2 M rows

Bounded in count and time; every gunicorn is stopped (also on Ctrl-C and errors), the
database dropped, and the Redis keys the run created in db 14 deleted. Note: on a small
machine the load generator, gunicorn and PostgreSQL share the same CPUs (printed).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as lib

POLL = "/api/device/v1/poll"
CONFIRM = "/api/device/v1/confirm"
REPORT = "/api/device/v1/report"
ADDSMS = "/getdata/addsms"
REDIS_URL = "redis://127.0.0.1:6379/14"

VERDICTS: list[str] = []


def verdict(line: str, met: bool) -> None:
    text = f"  {line}: {'MET' if met else 'MISSED'}"
    VERDICTS.append(text.strip())
    print(text)


def ms(values: list[float], p: float) -> float:
    return lib.percentile(values, p) * 1000


def stats_line(label: str, values: list[float], width: int = 34) -> str:
    if not values:
        return f"  {label:<{width}} {'(none)':>8}"
    return (
        f"  {label:<{width}} {len(values):>7} {ms(values, 50):8.1f} {ms(values, 95):8.1f} "
        f"{ms(values, 99):8.1f} {max(values) * 1000:8.1f}"
    )


def stats_header(width: int = 34) -> str:
    return f"  {'(ms)':<{width}} {'n':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"


def pair_devices(account: Any, count: int, prefix: str, **fields: Any) -> list[tuple[int, str]]:
    """Pair ``count`` phones through the real pairing service; returns (device id, token)."""
    from devices.models import Device
    from devices.services import DeviceDetails, pair_with_login

    out = []
    for i in range(count):
        device, token = pair_with_login(
            account, DeviceDetails(imei=f"{prefix}{i:09d}", title=f"bench {prefix}{i}")
        )
        out.append((device.pk, token))
    if fields:
        Device.objects.filter(pk__in=[d for d, _ in out]).update(**fields)
    return out


def sms_body(i: int) -> str:
    return f"Your verification code is {100000 + (i * 7919) % 900000}. Valid 10 minutes."


def submit_many(account: Any, devices: list[int], per_device: int, seed: int) -> int:
    from messaging.services import OutgoingSms, submit

    phones = lib.phone_numbers(len(devices) * per_device, seed=seed)
    requests = [
        OutgoingSms(device_id=devices[i % len(devices)], phone=phone, body=sms_body(i))
        for i, phone in enumerate(phones)
    ]
    for start in range(0, len(requests), 5000):
        submit(account, requests[start : start + 5000], return_ids=False)
    return len(requests)


@contextlib.contextmanager
def gunicorn(env: dict[str, str], threads: int, **extra_env: str) -> Iterator[lib.Gunicorn]:
    from django.db import connections

    connections.close_all()
    server_env = {
        **env,
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "WEB_THREADS": str(threads),
        **extra_env,
    }
    # A short graceful timeout: waiting long polls must not hold the stop for 30 s.
    server = lib.Gunicorn(
        server_env,
        env["GATEWAY_VAR_DIR"],
        workers=2,
        threads=threads,
        extra=("--graceful-timeout", "3"),
    )
    try:
        server.wait_ready()
        print(f"[setup] {' '.join(server.command[1:8])} (pid {server.process.pid})")
        yield server
    finally:
        server.stop()


def deliver(
    client: lib.HttpClient, token: str, ids: list[int], lease: str
) -> tuple[list[int], int]:
    """Confirm ``ids`` under the poll's lease, then report each confirmed one sent and
    delivered (one call)."""
    status, answer = client.post_json(CONFIRM, {"ids": ids, "lease": lease}, token)
    if status != 200:
        raise RuntimeError(f"confirm: HTTP {status} {answer}")
    confirmed = answer["confirmed"]
    if confirmed:
        reports = [{"id": i, "status": "sent", "parts": 1} for i in confirmed]
        reports += [{"id": i, "status": "delivered"} for i in confirmed]
        status, answer = client.post_json(REPORT, {"reports": reports}, token)
        if status != 200:
            raise RuntimeError(f"report: HTTP {status} {answer}")
        applied = sum(1 for r in answer["results"] if r["result"] == "applied")
        return confirmed, applied
    return confirmed, 0


# === 1. Fleet load ==========================================================================

FLEET = 500
FLEET_PERIOD = 5.0
FLEET_ROUNDS = 8
FLEET_SMS_RATE = 20.0
FLEET_THREADS = 100
FLEET_TARGET_MS = 50.0


@dataclass
class PollSample:
    due: float
    sent: float
    done: float
    messages: int
    round: int
    ok: bool


@dataclass
class FleetLoad:
    port: int
    devices: list[tuple[int, str]]
    compat_token: str
    samples: list[PollSample] = field(default_factory=list)
    confirm_times: list[float] = field(default_factory=list)
    report_times: list[float] = field(default_factory=list)
    addsms: list[tuple[float, float, int | None]] = field(default_factory=list)
    received: dict[int, int] = field(default_factory=dict)  # message id -> times handed out
    errors: list[str] = field(default_factory=list)
    confirmed: int = 0
    applied: int = 0
    reconnects: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        n = len(self.devices)
        self.events = sorted(
            (k * FLEET_PERIOD + i * FLEET_PERIOD / n, i, k)
            for k in range(FLEET_ROUNDS)
            for i in range(n)
        )
        self.next_event = itertools.count()
        duration = FLEET_ROUNDS * FLEET_PERIOD
        rng = random.Random(5)
        self.sms_plan = [
            (j / FLEET_SMS_RATE, self.devices[rng.randrange(n)][0])
            for j in range(int(duration * FLEET_SMS_RATE))
        ]
        self.sms_phones = lib.phone_numbers(len(self.sms_plan), seed=21)
        self.next_sms = itertools.count()
        self.start = 0.0

    def run(self) -> None:
        self.start = time.perf_counter() + 0.5
        threads = [threading.Thread(target=self.poller, daemon=True) for _ in range(FLEET_THREADS)]
        threads += [threading.Thread(target=self.producer, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def poller(self) -> None:
        client = lib.HttpClient(self.port)
        try:
            while True:
                with self.lock:
                    index = next(self.next_event)
                if index >= len(self.events):
                    return
                offset, device_index, round_ = self.events[index]
                _, token = self.devices[device_index]
                due = self.start + offset
                if (delay := due - time.perf_counter()) > 0:
                    time.sleep(delay)
                sent = time.perf_counter()
                try:
                    status, answer = client.post_json(POLL, {"wait": 0}, token)
                    done = time.perf_counter()
                    ok = status == 200
                    ids = [m["id"] for m in answer.get("messages", [])] if ok else []
                    lease = answer.get("lease") if ok else None
                    if not ok:
                        self.errors.append(f"poll HTTP {status}: {str(answer)[:100]}")
                except Exception as exc:
                    done, ok, ids, lease = time.perf_counter(), False, [], None
                    self.errors.append(f"poll {type(exc).__name__}: {exc}")
                with self.lock:
                    self.samples.append(PollSample(due, sent, done, len(ids), round_, ok))
                    for message_id in ids:
                        self.received[message_id] = self.received.get(message_id, 0) + 1
                if not ids:
                    continue
                try:
                    t0 = time.perf_counter()
                    status, answer = client.post_json(CONFIRM, {"ids": ids, "lease": lease}, token)
                    t1 = time.perf_counter()
                    confirmed = answer.get("confirmed", []) if status == 200 else []
                    applied = 0
                    for outcome in ("sent", "delivered"):
                        t2 = time.perf_counter()
                        status, answer = client.post_json(
                            REPORT,
                            {"reports": [{"id": i, "status": outcome} for i in confirmed]},
                            token,
                        )
                        self.report_times.append(time.perf_counter() - t2)
                        applied += sum(
                            1 for r in answer.get("results", []) if r["result"] == "applied"
                        )
                    with self.lock:
                        self.confirm_times.append(t1 - t0)
                        self.confirmed += len(confirmed)
                        self.applied += applied
                except Exception as exc:
                    self.errors.append(f"confirm/report {type(exc).__name__}: {exc}")
        finally:
            with self.lock:
                self.reconnects += client.reconnects
            client.close()

    def producer(self) -> None:
        client = lib.HttpClient(self.port)
        try:
            while True:
                with self.lock:
                    j = next(self.next_sms)
                if j >= len(self.sms_plan):
                    return
                offset, device_id = self.sms_plan[j]
                due = self.start + offset
                if (delay := due - time.perf_counter()) > 0:
                    time.sleep(delay)
                fields = {
                    "token": self.compat_token,
                    "sendto": self.sms_phones[j],
                    "body": sms_body(j),
                    "device_id": device_id,
                }
                try:
                    status, answer = client.post_form(ADDSMS, fields)
                    sms_id = answer.get("sms_id") if status == 200 else None
                    if sms_id is None:
                        self.errors.append(f"addsms HTTP {status}: {str(answer)[:100]}")
                except Exception as exc:
                    sms_id = None
                    self.errors.append(f"addsms {type(exc).__name__}: {exc}")
                with self.lock:
                    self.addsms.append((due, time.perf_counter(), sms_id))
        finally:
            client.close()


def section_fleet(env: dict[str, str], account: Any, compat_token: str) -> None:
    from django.db import connection

    lib.rule(f"1. {FLEET} phones polling every {FLEET_PERIOD:.0f} s while SMS are created")
    started = time.perf_counter()
    devices = pair_devices(account, FLEET, "fleet")
    print(f"[setup] {FLEET} phones paired in {time.perf_counter() - started:.1f} s")
    with gunicorn(env, threads=16) as server:
        load = FleetLoad(server.port, devices, compat_token)
        print(
            f"  {FLEET_ROUNDS} rounds x {FLEET} polls ({FLEET_ROUNDS * FLEET_PERIOD:.0f} s), "
            f"{FLEET_SMS_RATE:.0f} addsms/s, {FLEET_THREADS} client threads; round 1 not counted"
        )
        meter = lib.CpuMeter(server.worker_pids())
        load.run()
        cpu = meter.stop()
        errors_tail = server.tail(5) if load.errors else ""
    elapsed = max(s.done for s in load.samples) - load.start
    recorded = [s for s in load.samples if s.round > 0]
    latency = [s.done - s.due for s in recorded]
    empty = [s.done - s.due for s in recorded if s.ok and s.messages == 0]
    carrying = [s.done - s.due for s in recorded if s.messages > 0]
    service = [s.done - s.sent for s in recorded]
    lateness = [s.sent - s.due for s in recorded]
    print(stats_header())
    print(stats_line("poll, all (scheduled -> answered)", latency))
    print(stats_line("poll, empty", empty))
    print(stats_line("poll, with messages", carrying))
    print(stats_line("poll service (sent -> answered)", service))
    print(stats_line("client lateness (scheduled -> sent)", lateness))
    print(stats_line("confirm (sent -> answered)", load.confirm_times))
    print(stats_line("report (sent -> answered)", load.report_times))
    print(stats_line("addsms (scheduled -> answered)", [a[1] - a[0] for a in load.addsms]))
    created = [a[2] for a in load.addsms if a[2] is not None]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM messaging_message WHERE id = ANY(%s) GROUP BY status",
            [created],
        )
        by_status = dict(cursor.fetchall())
    handed_twice = sum(1 for n in load.received.values() if n > 1)
    polls_ok = sum(1 for s in load.samples if s.ok)
    print(
        f"  polls: {len(load.samples):,} in {elapsed:.1f} s ({len(load.samples) / elapsed:.0f}/s), "
        f"{polls_ok:,} ok, {sum(1 for s in load.samples if s.messages):,} with messages; "
        f"counted (rounds 2-{FLEET_ROUNDS}): {len(recorded):,}"
    )
    print(
        f"  addsms: {len(created):,} created of {len(load.sms_plan):,} sent; messages handed "
        f"out {len(load.received):,} (twice: {handed_twice}), confirmed {load.confirmed:,}, "
        f"report items applied {load.applied:,}"
    )
    names = {1: "new", 2: "taken", 6: "sent", 7: "delivered"}
    print(
        "  created SMS now: "
        + ", ".join(f"{names.get(k, k)} {v:,}" for k, v in sorted(by_status.items()))
        + " (new = created after their phone's last poll)"
    )
    print(f"  client reconnects (idle > 1.5 s or closed): {load.reconnects:,}")
    print(f"  {cpu}")
    print(
        "  poll p50/p99 by round (ms): "
        + ", ".join(
            f"{ms(r, 50):.0f}/{ms(r, 99):.0f}"
            for k in range(FLEET_ROUNDS)
            if (r := [s.done - s.due for s in load.samples if s.round == k])
        )
    )
    print(f"  errors: {len(load.errors)}")
    for error in load.errors[:5]:
        print(f"    {error}")
    if errors_tail:
        print("  gunicorn log tail:\n" + errors_tail)
    p99 = ms(latency, 99)
    verdict(
        f"[1] poll p99 {p99:.1f} ms (empty {ms(empty, 99):.1f}, with messages "
        f"{ms(carrying, 99):.1f}) vs target <= {FLEET_TARGET_MS:.0f} ms, ratio "
        f"{p99 / FLEET_TARGET_MS:.2f}, {len(load.errors)} errors",
        p99 <= FLEET_TARGET_MS and not load.errors,
    )


# === 2. An empty poll writes nothing ========================================================

WRITE_TABLES = (
    "messaging_message",
    "messaging_messagestatuschange",
    "devices_device",
    "devices_simslot",
)
EMPTY_POLLS = 200


def end_sessions() -> None:
    """End every session of the bench database but ours, so their counters are published."""
    import psycopg

    with psycopg.connect(lib.bench_database_url(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        for _ in range(100):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchone()
            if row and row[0] == 0:
                break
            time.sleep(0.02)
    time.sleep(0.1)  # a session's counters are flushed on its way out


def counters() -> dict[str, int]:
    """Database-wide and per-table write counters (after ending the other sessions)."""
    import psycopg
    from django.db import connections

    connections.close_all()
    end_sessions()
    with psycopg.connect(lib.bench_database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        out = dict(zip(("xact_commit", "xact_rollback", "ins", "upd", "del"), row, strict=True))
        for name, ins, upd, hot, dele in conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del "
            "FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (list(WRITE_TABLES),),
        ):
            out[f"{name}.ins"], out[f"{name}.upd"], out[f"{name}.del"] = ins, upd, dele
            out[f"{name}.hot"] = hot
    return out


def measured(action: Callable[[], Any]) -> tuple[dict[str, int], Any]:
    before = counters()
    result = action()
    after = counters()
    return {k: after[k] - before.get(k, 0) for k in after}, result


SHORT = {
    "messaging_message": "message",
    "messaging_messagestatuschange": "history",
    "devices_device": "device",
    "devices_simslot": "simslot",
}


def section_empty_poll(env: dict[str, str], account: Any) -> None:
    from django.db import connection, connections
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from devices.models import Device

    lib.rule(f"2. {EMPTY_POLLS} empty polls: what they write (pg_stat counters)")
    with gunicorn(env, threads=16) as server:
        client = lib.HttpClient(server.port)
        (device_id, token), (_, idle_token) = pair_devices(account, 2, "quiet")
        paired = time.perf_counter()

        def polls(count: int) -> list[int]:
            got = []
            for _ in range(count):
                status, answer = client.post_json(POLL, {"wait": 0}, token)
                assert status == 200, answer
                got.append(len(answer["messages"]))
            return got

        polls(5)  # warm: the serving worker has its database session
        control, _ = measured(lambda: None)
        rows: list[tuple[str, int, dict[str, int]]] = []
        delta, got = measured(lambda: polls(EMPTY_POLLS))
        seconds_since_pairing = time.perf_counter() - paired
        assert sum(got) == 0, "the quiet phone got messages"
        rows.append((f"{EMPTY_POLLS} empty polls, last-seen fresh", EMPTY_POLLS, delta))
        # Last seen 20 s ago: the heartbeat writes it once, then it is fresh again.
        Device.objects.filter(pk=device_id).update(
            last_seen_at=timezone.now() - timedelta(seconds=20)
        )
        delta_stale, got = measured(lambda: polls(EMPTY_POLLS))
        assert sum(got) == 0
        rows.append((f"{EMPTY_POLLS} empty polls, last-seen 20 s old", EMPTY_POLLS, delta_stale))
        submit_many(account, [device_id], 10, seed=3)
        delta_take, got = measured(lambda: polls(1))
        rows.append(("1 poll handing out 10 messages", 1, delta_take))
        _, answer = client.post_json(POLL, {"wait": 0}, token)
        ids = [m["id"] for m in answer["messages"]]
        lease = answer["lease"]
        delta_confirm, _ = measured(
            lambda: client.post_json(CONFIRM, {"ids": ids, "lease": lease}, token)
        )
        rows.append(("its confirm (10 ids)", 1, delta_confirm))
        reports = [{"id": i, "status": "sent"} for i in ids]
        reports += [{"id": i, "status": "delivered"} for i in ids]
        delta_report, _ = measured(lambda: client.post_json(REPORT, {"reports": reports}, token))
        rows.append(("its report (10 sent + 10 delivered)", 1, delta_report))
        client.close()

    print(
        f"  control (two readings, no request): xact_commit +{control['xact_commit']}, "
        f"tuples ins/upd/del +{control['ins']}/{control['upd']}/{control['del']} "
        "(the reading itself; subtracted below)"
    )
    per_table = [
        ("messaging_message", "upd"),
        ("messaging_messagestatuschange", "ins"),
        ("devices_device", "upd"),
        ("devices_simslot", "upd"),
    ]
    cols = ["xact", "ins", "upd", "del"] + [f"{SHORT[t]}.{op}" for t, op in per_table]
    print(f"  {'deltas: whole database, then per table':<42} " + " ".join(f"{c:>11}" for c in cols))
    for label, _count, delta in rows:
        values = [
            delta["xact_commit"] - control["xact_commit"],
            delta["ins"] - control["ins"],
            delta["upd"] - control["upd"],
            delta["del"] - control["del"],
        ] + [delta.get(f"{t}.{op}", 0) for t, op in per_table]
        print(f"  {label:<42} " + " ".join(f"{v:>11,}" for v in values))
    fresh = rows[0][2]
    writes_fresh = sum(fresh[k] - control[k] for k in ("ins", "upd", "del")) + sum(
        fresh.get(f"{t}.{op}", 0) for t in WRITE_TABLES for op in ("ins", "upd", "del")
    )
    xact_per_poll = (fresh["xact_commit"] - control["xact_commit"]) / EMPTY_POLLS
    print(
        f"  the {EMPTY_POLLS} fresh polls ran within {seconds_since_pairing:.1f} s of pairing "
        "(last_seen_at is written at most every 15 s): 0 rows written expected; with a stale "
        "last-seen exactly one devices_device UPDATE (the heartbeat), then nothing"
    )
    print(
        f"  xact_commit grows {xact_per_poll:.2f} per empty poll: every statement in autocommit "
        "is its own (read-only) transaction; the statements are:"
    )

    # In-process: the SQL of one empty poll, by a phone seen moments ago.
    connections.close_all()
    django_client = Client()
    headers = {"Authorization": f"Bearer {idle_token}"}
    django_client.post(POLL, "{}", content_type="application/json", headers=headers)
    with CaptureQueriesContext(connection) as captured:
        response = django_client.post(POLL, "{}", content_type="application/json", headers=headers)
    assert response.status_code == 200 and response.json()["messages"] == []
    writes = []
    for number, query in enumerate(captured.captured_queries, 1):
        sql = " ".join(query["sql"].split())
        head = sql.split(" ", 1)[0].upper()
        is_write = head in ("INSERT", "UPDATE", "DELETE") or "FOR UPDATE" in sql.upper()
        if is_write or head in ("SAVEPOINT", "BEGIN"):
            writes.append(sql)
        kind = "WRITE" if is_write else "read"
        print(f"    {number}. [{kind}] {sql[:150]}{'...' if len(sql) > 150 else ''}")
    print(
        f"  {len(captured.captured_queries)} statements, {len(writes)} writes / row locks / "
        "transactions; plus the connection health check (SELECT 1) per request = "
        f"{len(captured.captured_queries) + 1} per poll, "
        f"{'matching' if abs(xact_per_poll - len(captured.captured_queries) - 1) < 0.1 else 'vs'}"
        f" the {xact_per_poll:.2f} xact_commit per poll above"
    )
    verdict(
        f"[2] empty poll writes: {writes_fresh} rows in {EMPTY_POLLS} polls (pg_stat), "
        f"{len(writes)} write statements in the captured poll; target 0",
        writes_fresh == 0 and not writes,
    )


# === 3. Claim + report throughput ===========================================================

CLAIM_DEVICES = 50
CLAIM_PER_DEVICE = 400  # 20,000 in all
BASELINE_PER_DEVICE = 120  # 6,000; the baseline runs for at most BASELINE_SECONDS
CLAIM_SECONDS = 20.0
BASELINE_SECONDS = 8.0
CLAIM_TARGET = 1000.0
CLAIM_OF_LIMIT = 0.7


@dataclass
class ClaimRun:
    cycles: int = 0
    polls: int = 0
    poll_times: list[float] = field(default_factory=list)
    confirm_times: list[float] = field(default_factory=list)
    report_times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0


def claim_loop(port: int, devices: list[tuple[int, str]], limit: float) -> ClaimRun:
    run = ClaimRun()
    lock = threading.Lock()
    start_gate = threading.Barrier(len(devices) + 1)
    stop_at = [0.0]
    finished: list[float] = []

    def worker(token: str) -> None:
        client = lib.HttpClient(port)
        polls, cycles = 0, 0
        poll_times: list[float] = []
        confirm_times: list[float] = []
        report_times: list[float] = []
        start_gate.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                status, answer = client.post_json(POLL, {"wait": 0}, token)
                t1 = time.perf_counter()
                if status != 200:
                    raise RuntimeError(f"poll HTTP {status}: {answer}")
                polls += 1
                poll_times.append(t1 - t0)
                ids = [m["id"] for m in answer["messages"]]
                if not ids:
                    break  # this phone's queue is empty
                status, answer = client.post_json(
                    CONFIRM, {"ids": ids, "lease": answer["lease"]}, token
                )
                t2 = time.perf_counter()
                confirmed = answer["confirmed"]
                reports = [{"id": i, "status": "sent", "parts": 1} for i in confirmed]
                reports += [{"id": i, "status": "delivered"} for i in confirmed]
                status, answer = client.post_json(REPORT, {"reports": reports}, token)
                t3 = time.perf_counter()
                if status != 200:
                    raise RuntimeError(f"report HTTP {status}: {answer}")
                confirm_times.append(t2 - t1)
                report_times.append(t3 - t2)
                cycles += sum(
                    1
                    for r in answer["results"][len(confirmed) :]
                    if r["result"] == "applied" and r["status"] == 7
                )
        except Exception as exc:
            with lock:
                run.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()
            with lock:
                run.cycles += cycles
                run.polls += polls
                run.poll_times += poll_times
                run.confirm_times += confirm_times
                run.report_times += report_times
                finished.append(time.perf_counter())

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for _, t in devices]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    stop_at[0] = start + limit
    start_gate.wait()
    for thread in threads:
        thread.join()
    run.seconds = max(finished) - start
    return run


def bare_cycles(devices: list[int], limit: float) -> tuple[int, float]:
    """The limit of section 3: the unavoidable SQL of the same cycles, pgbench-style, one
    psycopg connection per phone and no HTTP: claim (the phone's next 50 NEW rows leased
    with SKIP LOCKED, their history rows), confirm (confirmed_at), report (SENT, then
    DELIVERED, a history row each), a COMMIT after each step. Returns (SMS delivered,
    seconds)."""
    import uuid

    import psycopg

    from messaging.models import Status

    new, taken, sent, done = (int(s) for s in (Status.NEW, Status.TAKEN, Status.SENT,
                                                 Status.DELIVERED))  # fmt: skip
    history = (
        "INSERT INTO messaging_messagestatuschange "
        "(message_id, from_status, to_status, changed_at, source, detail) "
        "SELECT unnest(%s::bigint[]), %s, %s, now(), 'bench', ''"
    )
    counts: list[int] = []
    gate = threading.Barrier(len(devices) + 1)
    stop_at = [0.0]
    finished: list[float] = []

    def phone(device: int) -> None:
        conn = psycopg.connect(lib.bench_database_url())
        cycles = 0
        gate.wait()
        while time.perf_counter() < stop_at[0]:
            lease = uuid.uuid4()
            with conn.transaction():
                ids = [r[0] for r in conn.execute(
                    "UPDATE messaging_message SET status = %s, lease_id = %s, "
                    "lease_expires_at = now() + interval '10 minutes', status_changed_at = now() "
                    "WHERE id IN (SELECT id FROM messaging_message WHERE device_id = %s "
                    "AND status = %s AND send_at <= now() ORDER BY urgent DESC, send_at, id "
                    "LIMIT 50 FOR UPDATE SKIP LOCKED) RETURNING id",
                    (taken, lease, device, new)).fetchall()]  # fmt: skip
                conn.execute(history, (ids, new, taken))
            if not ids:
                break
            with conn.transaction():
                conn.execute("UPDATE messaging_message SET confirmed_at = now() "
                             "WHERE id = ANY(%s) AND lease_id = %s", (ids, lease))  # fmt: skip
            with conn.transaction():
                for before, after, column in (
                    (taken, sent, "sent_at"),
                    (sent, done, "delivered_at"),
                ):
                    conn.execute(
                        f"UPDATE messaging_message SET status = %s, {column} = now(), "  # noqa: S608
                        "status_changed_at = now() WHERE id = ANY(%s) AND status = %s",
                        (after, ids, before),
                    )
                    conn.execute(history, (ids, before, after))
            cycles += len(ids)
        conn.close()
        counts.append(cycles)
        finished.append(time.perf_counter())

    threads = [threading.Thread(target=phone, args=(d,), daemon=True) for d in devices]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    stop_at[0] = start + limit
    gate.wait()
    for thread in threads:
        thread.join()
    return sum(counts), max(finished) - start


def section_claims(env: dict[str, str], account: Any) -> None:
    from django.db import connection

    lib.rule("3. claim + report cycles over HTTP (poll -> confirm -> report)")
    pacing = {"segments_per_minute": 1000, "delay_between_sms": None}
    real = pair_devices(account, CLAIM_DEVICES, "claim", batch_size=50, **pacing)
    naive = pair_devices(account, CLAIM_DEVICES, "naive", batch_size=1, **pacing)
    bare = pair_devices(account, CLAIM_DEVICES, "bare", batch_size=50, **pacing)
    started = time.perf_counter()
    n_real = submit_many(account, [d for d, _ in real], CLAIM_PER_DEVICE, seed=31)
    n_naive = submit_many(account, [d for d, _ in naive], BASELINE_PER_DEVICE, seed=32)
    submit_many(account, [d for d, _ in bare], CLAIM_PER_DEVICE, seed=33)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE messaging_message")
    print(
        f"[setup] {n_real:,} SMS for {CLAIM_DEVICES} phones (batch_size 50) and {n_naive:,} for "
        f"{CLAIM_DEVICES} baseline phones (batch_size 1) in {time.perf_counter() - started:.1f} s"
    )
    with gunicorn(env, threads=16) as server:
        print(f"  {CLAIM_DEVICES} client threads, one phone each, keep-alive connections")
        runs = {}
        for label, devices, limit in (
            ("batch_size 50 (real)", real, CLAIM_SECONDS),
            ("batch_size 1 (baseline)", naive, BASELINE_SECONDS),
        ):
            meter = lib.CpuMeter(server.worker_pids())
            runs[label] = run = claim_loop(server.port, devices, limit)
            print(f"  {meter.stop()}")
            print(
                f"  {label}: {run.cycles:,} cycles in {run.seconds:.2f} s = {run.rate:,.0f}/s; "
                f"{run.polls:,} polls; errors {len(run.errors)}"
            )
            for error in run.errors[:3]:
                print(f"    {error}")
            print(stats_header(30))
            print(stats_line("poll", run.poll_times, 30))
            print(stats_line("confirm", run.confirm_times, 30))
            print(stats_line("report (sent + delivered)", run.report_times, 30))
    real_run, naive_run = runs["batch_size 50 (real)"], runs["batch_size 1 (baseline)"]
    bare_count, bare_seconds = bare_cycles([d for d, _ in bare], CLAIM_SECONDS)
    bare_rate = bare_count / bare_seconds
    print(f"  limit, the bare SQL of the same cycles ({CLAIM_DEVICES} connections, no HTTP): "
          f"{bare_count:,} in {bare_seconds:.2f} s = {bare_rate:,.0f}/s")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM messaging_message WHERE status = 7 AND device_id = ANY(%s)",
            [[d for d, _ in real]],
        )
        row = cursor.fetchone()
    delivered = row[0] if row else 0
    print(
        f"  delivered in the database for the real phones: {delivered:,} "
        f"({'exact' if delivered == real_run.cycles else 'MISMATCH'})"
    )
    ratio = real_run.rate / naive_run.rate if naive_run.rate else float("inf")
    print(f"  real / baseline = {real_run.rate:,.0f} / {naive_run.rate:,.0f} = {ratio:.1f}x")
    claim_breakdown(account)
    of_limit = real_run.rate / bare_rate
    verdict(
        f"[3] real / limit (bare SQL cycles) = {of_limit:.2f} vs target >= {CLAIM_OF_LIMIT}",
        of_limit >= CLAIM_OF_LIMIT,
    )
    verdict(
        f"[3] {real_run.rate:,.0f} claim+report cycles/s over HTTP vs target >= "
        f"{CLAIM_TARGET:,.0f} (ratio {real_run.rate / CLAIM_TARGET:.2f}; {ratio:.1f}x the "
        "one-per-poll baseline)",
        real_run.rate >= CLAIM_TARGET and not real_run.errors,
    )


def claim_breakdown(account: Any) -> None:
    """In-process, one thread: where a claim cycle's server time goes (statements, SQL)."""
    import json

    from django.test import Client

    devices = pair_devices(
        account, 2, "diag", batch_size=50, segments_per_minute=1000, delay_between_sms=None
    )
    submit_many(account, [d for d, _ in devices], 150, seed=33)
    client = Client()
    timer = StatementTimer()
    kinds: dict[str, list[tuple[float, list[tuple[str, float]]]]] = {}
    messages = 0
    for index, (_, token) in enumerate(devices):
        headers = {"Authorization": f"Bearer {token}"}
        while True:
            steps = []
            with timer.capture() as records:
                t0 = time.perf_counter()
                answer = client.post(POLL, "{}", content_type="application/json", headers=headers)
                steps.append(("poll", time.perf_counter() - t0, list(records)))
            ids = [m["id"] for m in answer.json()["messages"]]
            if not ids:
                break
            lease = answer.json()["lease"]
            with timer.capture() as records:
                t0 = time.perf_counter()
                answer = client.post(
                    CONFIRM,
                    json.dumps({"ids": ids, "lease": lease}),
                    "application/json",
                    headers=headers,
                )
                steps.append(("confirm", time.perf_counter() - t0, list(records)))
            confirmed = answer.json()["confirmed"]
            reports = [{"id": i, "status": "sent", "parts": 1} for i in confirmed]
            reports += [{"id": i, "status": "delivered"} for i in confirmed]
            with timer.capture() as records:
                t0 = time.perf_counter()
                client.post(
                    REPORT, json.dumps({"reports": reports}), "application/json", headers=headers
                )
                steps.append(("report", time.perf_counter() - t0, list(records)))
            if index == 0:
                continue  # the first phone warms up
            messages += len(confirmed)
            for name, seconds, recs in steps:
                kinds.setdefault(name, []).append((seconds, recs))
    print(
        f"  where the server's time goes (in-process, one thread, batches of 50; "
        f"{messages} messages):"
    )
    total = 0.0
    for name, runs in kinds.items():
        wall = sum(r[0] for r in runs) / len(runs)
        total += sum(r[0] for r in runs)
        statements = [rec for _, recs in runs for rec in recs]
        sql = sum(t for _, t in statements) / len(runs)
        counts: dict[str, int] = {}
        for text, _ in statements:
            counts[classify(text)] = counts.get(classify(text), 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        print(
            f"    {name:<8} {wall * 1000:6.1f} ms, {len(statements) / len(runs):5.0f} statements "
            f"({sql * 1000:4.1f} ms in the database driver); most: "
            + ", ".join(f"{k} x{v / len(runs):.0f}" for k, v in top)
        )
    if messages:
        print(
            f"    per message {total / messages * 1000:.2f} ms of one thread: at most "
            f"{messages / total:,.0f} cycles/s per Python process (GIL), before HTTP and "
            "PostgreSQL's own CPU"
        )


# === 4. Scale ===============================================================================

SCALE_DEVICES_A = 2000
SCALE_DEVICES_B = 100
PROBES = 20  # claim probes, and as many idle probes
PROBE_PENDING = 300
PROBE_BATCH = 25
IDLE_POLL_ROUNDS = 40
STATEMENT_PROBES = 4  # claiming phones whose statements are timed (not counted)
SCALE_TARGET = 1.5


def make_scale_devices(account: Any, count: int, prefix: str) -> list[tuple[int, str]]:
    from django.utils import timezone

    from devices.models import Device, SimSlot
    from devices.services import DEVICE_TOKEN_PREFIX
    from gateway.services import hash_token

    now = timezone.now()
    tokens = [f"{DEVICE_TOKEN_PREFIX}bench-{prefix}-{i:06d}" for i in range(count)]
    created = Device.objects.bulk_create(
        Device(
            account=account,
            title=f"{prefix} {i}",
            imei=f"{prefix}{i:09d}",
            token_hash=hash_token(tokens[i]),
            paired_at=now,
            last_seen_at=now,
            batch_size=PROBE_BATCH,
            segments_per_minute=1000,
            delay_between_sms=None,
        )
        for i in range(count)
    )
    SimSlot.objects.bulk_create(SimSlot(device=d, slot=0) for d in created)
    return [(d.pk, tokens[i]) for i, d in enumerate(created)]


def insert_messages(cursor: Any, devices: list[int], count: int, kind: str) -> None:
    """``count`` rows spread evenly over ``devices`` (exactly count/len each, when it
    divides), one INSERT ... SELECT. kind: finished | due | future."""
    from django.db import connection

    from messaging.models import Message

    if count <= 0:
        return
    status, send_at = {
        "finished": (7, "now() - interval '2 days' - random() * interval '360 days'"),
        "due": (1, "now() - interval '1 minute' - random() * interval '2 days'"),
        "future": (1, "now() + interval '1 hour' + random() * interval '7 days'"),
    }[kind]
    expressions = {
        "account_id": "d.account_id",
        "device_id": "d.id",
        "sim": "0",
        "phone": "'+49151' || (10000000 + mod(g::bigint * 7919, 90000000))::text",
        "phone_raw": "'+49151' || (10000000 + mod(g::bigint * 7919, 90000000))::text",
        "body": "'Your code is ' || (100000 + mod(g, 900000)) || '. Valid 10 minutes.'",
        "status": str(status),
        "send_at": "s.send_at",
        "urgent": "mod(g, 100) = 0",
        "segments": "1",
        "error_detail": "''",
        "external_id": "''",
        "created_at": "s.send_at - interval '1 minute'",
        "status_changed_at": "s.send_at + interval '20 seconds'",
        "sent_at": "s.send_at + interval '5 seconds'" if status == 7 else "NULL",
        "delivered_at": "s.send_at + interval '20 seconds'" if status == 7 else "NULL",
    }
    # Columns added later (NOT NULL) get their model default, as getallsms_page.py does.
    params: list[Any] = []
    for model_field in Message._meta.concrete_fields:
        column = model_field.column or model_field.name
        if column in expressions or model_field.primary_key or model_field.null:
            continue
        default = model_field.get_default()
        if default is None:
            raise SystemExit(f"messaging_message.{column}: NOT NULL without a default")
        expressions[column] = "%s"
        params.append(model_field.get_db_prep_save(default, connection))
    cursor.execute("DROP TABLE IF EXISTS bench_devices")
    cursor.execute(
        "CREATE TEMP TABLE bench_devices AS SELECT u.n - 1 AS n, d.id, d.account_id "
        "FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(id, n) "
        "JOIN devices_device d ON d.id = u.id",
        [devices],
    )
    cursor.execute("CREATE UNIQUE INDEX ON bench_devices (n)")
    cursor.execute("ANALYZE bench_devices")
    columns = ", ".join(expressions)
    values = ", ".join(expressions.values())
    # Built from this script's own constants only.
    sql = f"""
        INSERT INTO messaging_message ({columns})
        SELECT {values}
        FROM (SELECT g, {send_at} AS send_at FROM generate_series(1, {int(count)}) AS g) AS s
        JOIN bench_devices AS d ON d.n = mod(s.g, {len(devices)})
    """  # noqa: S608
    cursor.execute(sql, params)


@contextlib.contextmanager
def fast_load(cursor: Any) -> Iterator[float]:
    """Load messaging_message fast: foreign-key triggers off for this session only
    (``session_replication_role = replica``; the rows join devices_device, so they are
    consistent by construction) and the secondary indexes dropped, then rebuilt from their
    exact definitions (``pg_indexes``) with 512 MB of maintenance_work_mem."""
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'messaging_message' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
    )
    indexes = cursor.fetchall()
    cursor.execute("SET session_replication_role = replica")
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    try:
        yield 0.0
    finally:
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        for _, definition in indexes:
            cursor.execute(definition)
        print(
            f"  {len(indexes)} indexes of messaging_message rebuilt in "
            f"{time.perf_counter() - started:.0f} s"
        )


# What each statement of a poll is, by what it reads or writes.
STATEMENT_KINDS = (
    ('SELECT "devices_device"."id", "devices_device"."account_id"', "auth: device by token"),
    ('SELECT "devices_device"."id" AS "pk"', "SIM slots: the device"),
    ('UPDATE "devices_device"', "heartbeat: UPDATE last_seen"),
    ('UPDATE "devices_simslot"', "claim: save pacing"),
    ("SKIP LOCKED", "claim: candidates (SKIP LOCKED)"),
    ('"messaging_message"."status" = 20', "cancellations (status 20)"),
    ('SELECT 1 AS "a" FROM "messaging_message"', "anything due? (EXISTS)"),
    ('UPDATE "messaging_message"', "move: UPDATE message"),
    ('INSERT INTO "messaging_messagestatuschange"', "move: INSERT history"),
    ("messaging_webhookendpoint", "webhooks: endpoints"),
)


def classify(sql: str) -> str:
    """A short name for one statement of a poll, to compare its time across sizes."""
    text = " ".join(sql.split())
    for needle, kind in STATEMENT_KINDS:
        if needle in text:
            return kind
    head = text.split(" ", 1)[0].upper()
    if head in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK"):
        return "transaction control"
    if 'FROM "devices_simslot"' in text:
        return "claim: lock SIM slots" if "FOR UPDATE" in text else "SIM slots: slots"
    if 'FROM "messaging_message"' in text:
        if "FOR UPDATE" in text:
            return "move: lock rows"
        if '"messaging_message"."status" = 2' in text:
            return "open leases (status 2)"
        return "read messages by id"
    return text[:40]


@dataclass
class ScaleResult:
    idle_polls: list[float]
    claim_polls: list[float]
    cycles: int
    claim_seconds: float
    idle_statements: dict[str, list[float]]
    claim_statements: dict[str, list[float]]
    samples: dict[str, str]  # kind -> one SQL text of it (idle polls)

    @property
    def rate(self) -> float:
        return self.cycles / self.claim_seconds


class StatementTimer:
    """A Django execute wrapper: every statement's SQL (with its values) and its time,
    measured with perf_counter (CaptureQueriesContext rounds to milliseconds)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, float]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        from django.db import connection

        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            seconds = time.perf_counter() - started
            try:
                text = connection.ops.last_executed_query(context["cursor"], sql, params)
            except Exception:
                text = sql
            self.records.append((text or sql, seconds))

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[tuple[str, float]]]:
        from django.db import connection

        self.records = []
        with connection.execute_wrapper(self):
            yield self.records


def scale_measure(
    probes_claim: list[tuple[int, str]], probes_idle: list[tuple[int, str]]
) -> ScaleResult:
    import json

    from django.test import Client

    from devices.models import SimSlot

    client = Client()

    def post(path: str, payload: Any, token: str) -> Any:
        response = client.post(
            path,
            json.dumps(payload),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.content[:200]
        return response.json()

    SimSlot.objects.filter(device_id__in=[d for d, _ in probes_claim]).update(
        recent_sends=[], next_send_at=None
    )
    for _, token in probes_idle:  # warm-up, not timed
        post(POLL, {"wait": 0}, token)
    # As in the server (gateway/gunicorn_conf.py): what is loaded so far, here including the
    # bulk load of the big database, is frozen out of the collector, so a full collection
    # over it does not land in one phase's timings and not the other's.
    gc.collect()
    gc.freeze()
    idle_statements: dict[str, list[float]] = {}
    claim_statements: dict[str, list[float]] = {}
    samples: dict[str, str] = {}

    def note(records: list[tuple[str, float]], into: dict[str, list[float]], keep: bool) -> None:
        for sql, seconds in records:
            kind = classify(sql)
            into.setdefault(kind, []).append(seconds)
            if keep:
                samples.setdefault(kind, sql)

    # Timed without the statement timer (its own cost would count); the statements are
    # timed in one extra round of empty polls and on the first few claiming phones.
    timer = StatementTimer()
    idle_polls = []
    for _ in range(IDLE_POLL_ROUNDS):
        for _, token in probes_idle:
            t0 = time.perf_counter()
            answer = post(POLL, {"wait": 0}, token)
            idle_polls.append(time.perf_counter() - t0)
            assert not answer["messages"], "an idle probe got messages"
    for _, token in probes_idle:
        with timer.capture() as records:
            post(POLL, {"wait": 0}, token)
        note(records, idle_statements, keep=True)
    claim_polls: list[float] = []
    cycles = 0
    seconds = 0.0
    for index, (_, token) in enumerate(probes_claim):
        inspected = index < STATEMENT_PROBES
        started = time.perf_counter()
        while True:
            with contextlib.ExitStack() as stack:
                records = stack.enter_context(timer.capture()) if inspected else []
                t0 = time.perf_counter()
                answer = post(POLL, {"wait": 0}, token)
                poll_seconds = time.perf_counter() - t0
            ids = [m["id"] for m in answer["messages"]]
            if not ids:
                break  # the last, empty poll of a drained queue is not counted
            if inspected:
                note(records, claim_statements, keep=False)
            else:
                claim_polls.append(poll_seconds)
            confirmed = post(CONFIRM, {"ids": ids, "lease": answer["lease"]}, token)["confirmed"]
            reports = [{"id": i, "status": "sent", "parts": 1} for i in confirmed]
            reports += [{"id": i, "status": "delivered"} for i in confirmed]
            results = post(REPORT, {"reports": reports}, token)["results"]
            if not inspected:
                cycles += sum(1 for r in results[len(confirmed) :] if r["result"] == "applied")
        if not inspected:
            seconds += time.perf_counter() - started
    return ScaleResult(
        idle_polls, claim_polls, cycles, seconds, idle_statements, claim_statements, samples
    )


def explain(sql: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of one captured statement, in a transaction rolled back."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        lines = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    return lines


def explain_claim(device_id: int) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim query of this device's next poll."""
    sql = claim_sql(device_id)
    return explain(sql) if sql else ["(no claim query captured)"]


def claim_sql(device_id: int) -> str | None:
    """The claim query a real poll of this device runs (the poll is rolled back)."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from devices.handoff import poll
    from devices.models import Device

    device = Device.objects.select_related("account").get(pk=device_id)
    found = None

    class Rollback(Exception):
        pass

    with contextlib.suppress(Rollback), transaction.atomic():
        with CaptureQueriesContext(connection) as captured:
            poll(device)
        for query in captured.captured_queries:
            if "SKIP LOCKED" in query["sql"]:
                found = query["sql"]
        raise Rollback
    return found


def plan_summary(lines: list[str]) -> str:
    """The scan nodes, rows removed by filters and the execution time of a plan."""
    keep = []
    for line in lines:
        text = line.strip().lstrip("-> ").strip()
        if "Scan" in text:
            node = text.split("  (cost=")[0]
            if "(actual " in text:
                actual = text.split("(actual ")[-1].rstrip(")")
                keep.append(f"{node} ({actual})")
            else:
                keep.append(f"{node} (never executed)")
        elif text.startswith(("Rows Removed", "Execution Time")):
            keep.append(text)
    return "; ".join(keep)


def section_scale(reduced: bool) -> None:
    from django.db import connection

    pending_total = 1_000_000
    finished_total = 2_000_000 if reduced else 5_000_000
    lib.rule(
        f"4. poll and claim on 10,000 rows vs {pending_total:,} pending + "
        f"{finished_total:,} finished"
    )
    if reduced:
        print("  REDUCED SIZE (--reduced): 1,000,000 pending + 2,000,000 finished, not 5,000,000")
    account_a, _ = lib.make_account("scale-a@bench.example")
    account_b, _ = lib.make_account("scale-b@bench.example")
    started = time.perf_counter()
    devices_a = make_scale_devices(account_a, SCALE_DEVICES_A, "scalea")
    devices_b = make_scale_devices(account_b, SCALE_DEVICES_B, "scaleb")
    claim = devices_a[:PROBES]
    idle = devices_a[PROBES : 2 * PROBES]
    background = [d for d, _ in devices_a[2 * PROBES :] + devices_b]
    claim_ids = [d for d, _ in claim]
    idle_ids = [d for d, _ in idle]
    print(
        f"[setup] {SCALE_DEVICES_A:,} + {SCALE_DEVICES_B} phones in "
        f"{time.perf_counter() - started:.1f} s; probes: {PROBES} claiming "
        f"({PROBE_PENDING} due each, batch {PROBE_BATCH}), {PROBES} idle (history and "
        "scheduled messages, nothing due)"
    )

    def count_rows() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE status = 1), count(*) FILTER (WHERE status <> 1) "
                "FROM messaging_message"
            )
            row = cursor.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM messaging_messagestatuschange")  # earlier sections' rows
        cursor.execute("DELETE FROM messaging_message")
        # Small: probes 20 x (300 due + 50 finished) and 20 x (10 future + 50 finished),
        # the other phones 300 pending + 1,500 finished: 10,000 rows.
        insert_messages(cursor, claim_ids, PROBES * PROBE_PENDING, "due")
        insert_messages(cursor, claim_ids, PROBES * 50, "finished")
        insert_messages(cursor, idle_ids, PROBES * 10, "future")
        insert_messages(cursor, idle_ids, PROBES * 50, "finished")
        insert_messages(cursor, background, 150, "due")
        insert_messages(cursor, background, 150, "future")
        insert_messages(cursor, background, 1500, "finished")
        cursor.execute("VACUUM ANALYZE messaging_message")
        cursor.execute("VACUUM ANALYZE messaging_messagestatuschange")
    pending, finished = count_rows()
    print(f"  small database: {pending:,} pending + {finished:,} other = {pending + finished:,}")
    small_claim_plan = explain_claim(claim_ids[0])
    small = scale_measure(claim, idle)
    small_plans = {k: explain(v) for k, v in small.samples.items() if k in EXPLAINED}
    small_plans["claim: candidates (SKIP LOCKED)"] = small_claim_plan

    # Big: the same probes again, each now with a long history, among 1 M pending + 5 M
    # finished (the probes' share is like any phone's: 2,500 finished, 300-500 pending).
    started = time.perf_counter()
    pending, finished = count_rows()
    per_idle_future, per_probe_finished = 500, 2500
    with connection.cursor() as cursor:
        with fast_load(cursor):
            insert_messages(cursor, claim_ids, PROBES * PROBE_PENDING, "due")
            insert_messages(
                cursor, claim_ids + idle_ids, 2 * PROBES * per_probe_finished, "finished"
            )
            insert_messages(cursor, idle_ids, PROBES * per_idle_future, "future")
            pending += PROBES * (PROBE_PENDING + per_idle_future)
            finished += 2 * PROBES * per_probe_finished
            rest = pending_total - pending
            insert_messages(cursor, background, int(rest * 0.7), "due")
            insert_messages(cursor, background, rest - int(rest * 0.7), "future")
            insert_messages(cursor, background, finished_total - finished, "finished")
            print(f"  rows inserted in {time.perf_counter() - started:.0f} s")
        loaded = time.perf_counter() - started
        cursor.execute("VACUUM ANALYZE messaging_message")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('messaging_message'))")
        size_row = cursor.fetchone()
    pending, finished = count_rows()
    print(
        f"  big database: {pending:,} pending + {finished:,} other = {pending + finished:,} rows "
        f"({size_row[0] if size_row else '?'} with indexes), loaded in {loaded:.0f} s, "
        f"VACUUM ANALYZE {time.perf_counter() - started - loaded:.0f} s"
    )
    big_claim_plan = explain_claim(claim_ids[0])
    big = scale_measure(claim, idle)
    big_plans = {k: explain(v) for k, v in big.samples.items() if k in EXPLAINED}
    big_plans["claim: candidates (SKIP LOCKED)"] = big_claim_plan
    # What-if: the cancellations query with a partial index made for it (bench database
    # only; the index is not part of the project).
    what_if = None
    cancel_sql = big.samples.get("cancellations (status 20)")
    if cancel_sql:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE INDEX bench_what_if_cancelled_idx ON messaging_message "
                "(device_id, status_changed_at) WHERE status = 20 AND confirmed_at IS NOT NULL"
            )
            cursor.execute("ANALYZE messaging_message")
        what_if = explain(cancel_sql)
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX bench_what_if_cancelled_idx")

    print(f"  {'(in-process, Django test client)':<34} {'small':>10} {'big':>10} {'big/small':>10}")
    rows = [
        ("empty poll p50 (ms)", ms(small.idle_polls, 50), ms(big.idle_polls, 50)),
        ("empty poll p99 (ms)", ms(small.idle_polls, 99), ms(big.idle_polls, 99)),
        ("claiming poll p50 (ms)", ms(small.claim_polls, 50), ms(big.claim_polls, 50)),
        ("claiming poll p99 (ms)", ms(small.claim_polls, 99), ms(big.claim_polls, 99)),
        ("claim cycles/s", small.rate, big.rate),
    ]
    for label, a, b in rows:
        print(f"  {label:<34} {a:>10.2f} {b:>10.2f} {b / a:>10.2f}")
    print(
        f"  samples: {len(small.idle_polls)} empty polls, {len(small.claim_polls)} claiming "
        f"polls ({PROBE_BATCH} messages each), {small.cycles:,} / {big.cycles:,} cycles "
        f"(the first {STATEMENT_PROBES} claiming phones, whose statements are timed, not counted)"
    )
    claim_inspected = STATEMENT_PROBES * (PROBE_PENDING // PROBE_BATCH)
    for title, a_stats, b_stats, polls in (
        ("an empty poll", small.idle_statements, big.idle_statements, PROBES),
        ("a claiming poll", small.claim_statements, big.claim_statements, claim_inspected),
    ):
        print(
            f"  statements of {title}: count per poll x mean ms small / big (driver call, "
            "perf_counter)"
        )
        for kind in sorted(set(a_stats) | set(b_stats), key=lambda k: -sum(b_stats.get(k, []))):
            a_times, b_times = a_stats.get(kind, []), b_stats.get(kind, [])
            a_ms = 1000 * sum(a_times) / len(a_times) if a_times else float("nan")
            b_ms = 1000 * sum(b_times) / len(b_times) if b_times else float("nan")
            print(
                f"    {kind:<34} {len(b_times) / polls:5.1f} x {a_ms:7.3f} / {b_ms:7.3f} "
                f"({b_ms / a_ms if a_ms else float('nan'):5.1f}x)"
            )
    print("  EXPLAIN (ANALYZE, BUFFERS), small -> big:")
    for kind in sorted(set(small_plans) | set(big_plans)):
        print(f"    {kind}:")
        print(f"      small: {plan_summary(small_plans.get(kind, []))}")
        print(f"      big:   {plan_summary(big_plans.get(kind, []))}")
    if what_if:
        print(
            "    cancellations (status 20), big, with a partial index (device_id, "
            "status_changed_at) WHERE status = 20 AND confirmed_at IS NOT NULL (what-if, "
            "bench database only):"
        )
        print(f"      big:   {plan_summary(what_if)}")
    print("  EXPLAIN (ANALYZE, BUFFERS) of the claim query, big database, in full:")
    for line in big_plans.get("claim: candidates (SKIP LOCKED)", []):
        print(f"    {line}")
    poll_ratio = max(
        ms(big.idle_polls, 99) / ms(small.idle_polls, 99),
        ms(big.claim_polls, 99) / ms(small.claim_polls, 99),
    )
    rate_ratio = small.rate / big.rate  # > 1 when the big database is slower
    size = "1M + 2M (reduced)" if reduced else "1M + 5M"
    verdict(
        f"[4] {size} rows vs 10,000: poll p99 big/small {poll_ratio:.2f} (worst of empty and "
        f"claiming), claim rate small/big {rate_ratio:.2f}; target <= {SCALE_TARGET}",
        poll_ratio <= SCALE_TARGET and rate_ratio <= SCALE_TARGET,
    )


EXPLAINED = (
    "cancellations (status 20)",
    "open leases (status 2)",
    "anything due? (EXISTS)",
)


# === 5. Long poll ===========================================================================

LONG_POLLERS = 50
LONG_POLL_EXTRA = 50
LONG_THREADS = 64
URGENT_SECONDS = 20.0
URGENT_TARGET = 1.0


@dataclass
class LongPollFleet:
    port: int
    devices: list[tuple[int, str]]
    arrivals: dict[int, float] = field(default_factory=dict)
    inflight: dict[int, float] = field(default_factory=dict)
    declined: int = 0
    polls: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, devices: list[tuple[int, str]]) -> None:
        for device in devices:
            thread = threading.Thread(target=self.phone, args=device, daemon=True)
            thread.start()
            self.threads.append(thread)

    def waiting(self, older_than: float = 0.5) -> int:
        now = time.perf_counter()
        with self.lock:
            return sum(1 for t in self.inflight.values() if now - t > older_than)

    def phone(self, device_id: int, token: str) -> None:
        client = lib.HttpClient(self.port, timeout=40)
        try:
            while not self.stop.is_set():
                sent = time.perf_counter()
                with self.lock:
                    self.inflight[device_id] = sent
                try:
                    status, answer = client.post_json(POLL, {"wait": 25}, token)
                except Exception as exc:
                    if not self.stop.is_set():
                        self.errors.append(f"poll {type(exc).__name__}: {exc}")
                    return
                finally:
                    with self.lock:
                        self.inflight.pop(device_id, None)
                done = time.perf_counter()
                if status != 200:
                    self.errors.append(f"poll HTTP {status}: {str(answer)[:100]}")
                    return
                ids = [m["id"] for m in answer["messages"]]
                with self.lock:
                    self.polls += 1
                    for message_id in ids:
                        self.arrivals.setdefault(message_id, done)
                if ids:
                    deliver(client, token, ids, answer["lease"])
                elif done - sent < 20:
                    # Answered at once: long-poll capacity in use. Poll again after a pause
                    # (re-polling at once would spin).
                    with self.lock:
                        self.declined += 1
                    self.stop.wait(1.0)
        finally:
            client.close()


def server_costs(server: lib.Gunicorn) -> tuple[float, int, list[str]]:
    """(RSS of the workers in MB, their threads, per-worker text)."""
    total_rss, total_threads, parts = 0.0, 0, []
    for pid in server.worker_pids():
        rss, threads = lib.process_memory(pid)
        total_rss += rss
        total_threads += threads
        parts.append(f"{rss:.0f} MB/{threads} thr")
    return total_rss, total_threads, parts


def pg_sessions() -> int:
    import psycopg

    with psycopg.connect(lib.bench_database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) if row else -1


def redis_clients(client: Any) -> tuple[int, int]:
    """(clients on db 14, of which subscribed to a channel), excluding this process's own."""
    mine = client.client_id()
    rows = [c for c in client.client_list() if c.get("db") == "14" and c.get("id") != str(mine)]
    return len(rows), sum(1 for c in rows if int(c.get("sub", 0)) > 0)


class Sampler:
    """PostgreSQL sessions of the bench database, sampled every 0.25 s in a thread."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.values.append(pg_sessions())
            self.stop.wait(0.25)

    def finish(self) -> list[int]:
        self.stop.set()
        self.thread.join()
        return self.values


def section_long_poll(env: dict[str, str], account: Any, compat_token: str) -> None:
    import redis

    lib.rule(f"5. urgent SMS to long-polling phones (Redis {REDIS_URL})")
    r = redis.Redis.from_url(REDIS_URL)
    keys_before = set(r.scan_iter(count=1000))
    if keys_before:
        print(f"  note: db 14 already holds {len(keys_before)} keys; they are left alone")
    devices = pair_devices(account, LONG_POLLERS + LONG_POLL_EXTRA, "long")
    phones = lib.phone_numbers(400, seed=51)
    max_waiters = LONG_THREADS - 4
    try:
        with gunicorn(env, threads=LONG_THREADS, REDIS_URL=REDIS_URL) as server:
            print(
                f"  WEB_THREADS={LONG_THREADS}: LONG_POLL_MAX_WAITERS {max_waiters} per process, "
                f"{2 * max_waiters} in all"
            )
            fleet = LongPollFleet(server.port, devices)
            producer = lib.HttpClient(server.port)
            # Warm both workers a little (plain requests), then read the idle costs.
            other = lib.HttpClient(server.port)
            for _, token in devices[:8]:
                producer.post_json(POLL, {"wait": 0}, token)
                other.post_json(POLL, {"wait": 0}, token)
            other.close()
            time.sleep(1.0)
            costs: list[tuple[str, int, tuple[float, int, list[str]], int, tuple[int, int]]] = []
            costs.append(("0 waiting", 0, server_costs(server), pg_sessions(), redis_clients(r)))

            fleet.start(devices[:LONG_POLLERS])
            time.sleep(3.0)
            costs.append(
                (
                    f"{LONG_POLLERS} phones long-polling",
                    fleet.waiting(),
                    server_costs(server),
                    pg_sessions(),
                    redis_clients(r),
                )
            )

            # Urgent SMS, one every 100-200 ms to a random waiting phone.
            rng = random.Random(7)
            sent_log: list[tuple[float, float, int]] = []
            failures: list[str] = []
            sampler = Sampler()
            end = time.perf_counter() + URGENT_SECONDS
            i = 0
            while time.perf_counter() < end:
                device_id, _ = devices[rng.randrange(LONG_POLLERS)]
                t0 = time.perf_counter()
                status, answer = producer.post_form(
                    ADDSMS,
                    {
                        "token": compat_token,
                        "sendto": phones[i],
                        "body": f"Urgent code {i:06d}",
                        "device_id": device_id,
                        "urgent": 1,
                    },
                )
                t1 = time.perf_counter()
                if status == 200 and answer.get("sms_id"):
                    sent_log.append((t0, t1, answer["sms_id"]))
                else:
                    failures.append(f"addsms HTTP {status}: {str(answer)[:100]}")
                i += 1
                time.sleep(max(0.0, rng.uniform(0.1, 0.2) - (t1 - t0)))
            time.sleep(2.0)  # the last ones arrive
            during = sampler.finish()
            costs.append(
                (
                    f"{LONG_POLLERS} long-polling, after the urgent run",
                    fleet.waiting(),
                    server_costs(server),
                    pg_sessions(),
                    redis_clients(r),
                )
            )
            fleet.start(devices[LONG_POLLERS:])
            time.sleep(3.0)
            costs.append(
                (
                    f"{LONG_POLLERS + LONG_POLL_EXTRA} phones long-polling",
                    fleet.waiting(),
                    server_costs(server),
                    pg_sessions(),
                    redis_clients(r),
                )
            )
            fleet.stop.set()
            producer.close()
        for thread in fleet.threads:
            thread.join(timeout=5)
    finally:
        created = set(r.scan_iter(count=1000)) - keys_before
        if created:
            r.delete(*created)
        print(f"[cleanup] {len(created)} Redis keys created in db 14 deleted")

    from_sent = [fleet.arrivals[m] - t0 for t0, _, m in sent_log if m in fleet.arrivals]
    from_answer = [fleet.arrivals[m] - t1 for _, t1, m in sent_log if m in fleet.arrivals]
    addsms_times = [t1 - t0 for t0, t1, _ in sent_log]
    missing = sum(1 for _, _, m in sent_log if m not in fleet.arrivals)
    print(f"  {len(sent_log)} urgent SMS over {URGENT_SECONDS:.0f} s to {LONG_POLLERS} phones")
    print(stats_header(40))
    print(stats_line("addsms sent -> phone holds it", from_sent, 40))
    print(stats_line("addsms answered -> phone holds it", from_answer, 40))
    print(stats_line("addsms itself (sent -> answered)", addsms_times, 40))
    print(
        f"  never arrived: {missing}; addsms failures: {len(failures)}; polls answered "
        f"{fleet.polls:,}; declined long polls (answered at once, capacity in use): "
        f"{fleet.declined}; poll errors {len(fleet.errors)}"
    )
    for error in (failures + fleet.errors)[:5]:
        print(f"    {error}")
    print("  what waiting costs (2 gunicorn workers):")
    print(
        f"    {'':<38} {'waiting':>7} {'RSS MB':>7} {'threads':>7} {'pg sess':>7} "
        f"{'redis':>5} {'subs':>5}  per worker"
    )
    for label, waiting, (rss, threads, parts), pg, (rc, subs) in costs:
        print(
            f"    {label:<38} {waiting:>7} {rss:>7.0f} {threads:>7} {pg:>7} {rc:>5} {subs:>5}  "
            + ", ".join(parts)
        )
    if during:
        print(
            f"    PostgreSQL sessions during the urgent run: max {max(during)}, mean "
            f"{sum(during) / len(during):.1f} ({len(during)} samples)"
        )
    half, full = costs[1], costs[-1]
    if full[1] > half[1]:
        extra = full[1] - half[1]
        print(
            f"    each further waiting poll ({half[1]} -> {full[1]}): "
            f"{(full[2][0] - half[2][0]) * 1024 / extra:.0f} KB RSS, "
            f"{(full[2][1] - half[2][1]) / extra:.2f} threads, "
            f"{(full[4][0] - half[4][0]) / extra:.2f} Redis connections, "
            f"{(full[3] - half[3]) / extra:.2f} PostgreSQL sessions"
        )
    p99 = lib.percentile(from_sent, 99) if from_sent else float("inf")
    verdict(
        f"[5] urgent SMS addsms -> phone p99 {p99 * 1000:.0f} ms (from the addsms answer "
        f"{ms(from_answer, 99):.0f} ms) vs target <= {URGENT_TARGET * 1000:.0f} ms, "
        f"ratio {p99 / URGENT_TARGET:.2f}; {missing} never arrived",
        p99 <= URGENT_TARGET and missing == 0 and not failures,
    )


# === main ===================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--section", type=int, action="append", choices=range(1, 6), help="run only these"
    )
    parser.add_argument(
        "--reduced", action="store_true", help="section 4 with 1 M + 2 M rows instead of 1 M + 5 M"
    )
    args = parser.parse_args()
    sections = sorted(set(args.section or range(1, 6)))

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.perf_counter()
    with lib.bench_django(log_level="WARNING") as env:
        print(
            f"[setup] {os.cpu_count()} CPUs shared by the load generator, gunicorn and PostgreSQL"
        )
        account, compat_token = lib.make_account("devices@bench.example")
        for section in sections:
            started = time.perf_counter()
            if section == 1:
                section_fleet(env, account, compat_token)
            elif section == 2:
                section_empty_poll(env, account)
            elif section == 3:
                section_claims(env, account)
            elif section == 4:
                section_scale(args.reduced)
            elif section == 5:
                section_long_poll(env, account, compat_token)
            print(f"  (section {section}: {time.perf_counter() - started:.0f} s)")
        lib.rule("results")
        for line in VERDICTS:
            print(f"  {line}")
        print(f"  total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
