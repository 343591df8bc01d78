"""The SMSGate app's protocol on the ASGI process: 1,000 event streams, new work reaching
them, and the fetch/report hot path on ASGI vs WSGI.

One ``uvicorn gateway.asgi:application`` process (production defaults: uvloop + httptools,
the a2wsgi pool of WEB_THREADS=16, STREAM_KEEPALIVE_SECONDS=15) on PostgreSQL with
REDIS_URL=redis://127.0.0.1:6379/11, and, from section 3 on, a gunicorn ``gateway.wsgi``
(2 workers x 8 threads, the same Redis) as the web process. The client side is one asyncio
event loop in this process (a thread of its own, raw HTTP/1.1 over asyncio streams: SSE
read line by line from the chunked body, requests on keep-alive connections).

1. **1,000 streams** - 1,000 SMSGate phones: one registered over HTTP (``POST
   /api/mobile/v1/device`` with the account's enrollment token), 999 in this process through
   ``devices.services.register_app`` (the same service, without 999 requests). Each opens
   ``GET /api/mobile/v1/events`` with its device token (at most 50 opening at once); a
   stream counts as open at its first comment (``: connected``, sent after the hub
   subscription). Prints the time to open all.
2. **Idle** - all 1,000 open and idle for 10 s: the server process's RSS and threads
   (/proc/<pid>/status) before the streams and with them, its CPU (utime + stime deltas of
   /proc/<pid>/stat, in % of one core), the keep-alive comments received, and the
   PostgreSQL sessions of the bench database (pg_stat_activity; only the stream process
   is connected then).
3. **addsms -> MessageEnqueued** - 200 times (200 distinct phones, drawn at random, one at
   a time, 20-60 ms apart; 4 uncounted warm-up requests first): ``POST /getdata/addsms``
   (compat token, ``device_id``) on the gunicorn, and the time until that phone's stream
   yields ``MessageEnqueued``: the production path (web process commits, rings Redis; the
   stream process's hub hands the signal to the stream). Timed from the request sent (and
   from its answer). Also counts the MessageEnqueued events the 200 phones heard (and how
   soon a second one followed the first). Target: p99 <= 1 s.
4. **Drain** - 100 fresh phones (no stream) with 100 messages each (10,000, queued with
   ``messaging.services.submit``; each phone's segments_per_minute=1000 and batch_size=100
   set directly, so pacing and batch size never limit), then 100 concurrent clients, one
   per phone, each loop ``GET /api/mobile/v1/message`` -> one ``PATCH`` "Sent" per element
   (as the app does) until a GET answers an empty list, or until the drain's 45 s bound
   (the client stops before its next request; a drain stopped so is reported as
   incomplete). Run against the uvicorn process (its 1,000 streams still open) and then,
   on 100 more fresh phones, against the gunicorn (uvicorn stopped meanwhile). Prints
   msgs/s (messages PATCHed / wall time from the start to the last client done), the
   PATCH rate after every client's first GET was answered (a bounded drain over-weights
   the opening burst of 100 GETs of 100 messages each), the server's CPU per message,
   request latency and where the CPU went. Verifies in the database that every PATCHed
   message is status 6 (Sent) with exactly one move to 6, that no other message of these
   phones is, and that no id was PATCHed twice: for a complete drain, all 10,000 status 6,
   each PATCHed once. Target: >= 500 msgs/s, drained completely; the ASGI / WSGI ratio is
   the "hot paths on ASGI vs WSGI" figure. Then the limit: 100 more phones drained the same
   way through ``bench/reference_mobile.py`` (a bare WSGI app doing only the unavoidable
   SQL of the same fetch and report on the same tables) on the same gunicorn shape, the
   real one stopped; printed as real / reference.

Run (PostgreSQL at 127.0.0.1:5432, user postgres, trust auth; Redis at 127.0.0.1:6379, db 11
only; the database in BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/gateway_bench, is created and dropped):

    .venv/bin/python bench/smsgate_streams.py

Bounded: ~3 minutes (each drain at most 45 s), 1,000 streams and 30,204 messages;
loopback only. Both servers are stopped (also on Ctrl-C and errors), the database dropped,
and the Redis keys the run created in db 11 deleted. The soft RLIMIT_NOFILE is raised to
the hard limit first (the uvicorn inherits it). Note: on a small machine the client loop,
the servers and PostgreSQL share the same CPUs (printed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import resource
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as lib

REDIS_URL = "redis://127.0.0.1:6379/11"
PHONES = 1000
OPENING_AT_ONCE = 50
IDLE_SECONDS = 10.0
ROUNDS = 200
WARMUP_ROUNDS = 4
EVENT_WAIT = 5.0  # seconds an addsms waits for its event before it counts as never arrived
LATENCY_TARGET = 1.0
DRAIN_PHONES = 100
DRAIN_PER_PHONE = 100
DRAIN_DEADLINE = 45.0
DRAIN_TARGET = 500.0
REQUEST_TIMEOUT = 30.0
WSGI_WORKERS, WSGI_THREADS = 2, 8

EVENTS = "/api/mobile/v1/events"
DEVICE = "/api/mobile/v1/device"
MESSAGE = "/api/mobile/v1/message"
ADDSMS = "/getdata/addsms"

T = TypeVar("T")
VERDICTS: list[str] = []


def verdict(line: str, met: bool | None) -> None:
    text = line if met is None else f"{line}: {'MET' if met else 'MISSED'}"
    VERDICTS.append(text)
    print(f"  {text}")


def ratio_of(a: float, b: float) -> float:
    return a / b if b else float("nan")


def ms(values: list[float], p: float) -> float:
    return lib.percentile(values, p) * 1000


def stats_header(width: int) -> str:
    return f"  {'(ms)':<{width}} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"


def stats_line(label: str, values: list[float], width: int) -> str:
    if not values:
        return f"  {label:<{width}} {'(none)':>6}"
    return (
        f"  {label:<{width}} {len(values):>6} {ms(values, 50):8.1f} {ms(values, 95):8.1f} "
        f"{ms(values, 99):8.1f} {max(values) * 1000:8.1f}"
    )


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft < needed:
        raise SystemExit(f"RLIMIT_NOFILE is {soft} (hard {hard}); this bench needs {needed}")
    return soft


# --- The client side: one asyncio loop in a thread of its own -------------------------------


class ClientLoop:
    """An event loop running in a thread; the (synchronous, Django-using) main thread hands
    it coroutines. The ORM stays out of the loop (Django refuses it there)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except (concurrent.futures.TimeoutError, KeyboardInterrupt):
            future.cancel()
            raise

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self.run(cancel_all(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class HttpError(Exception):
    pass


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise HttpError("connection closed before the answer")
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return status, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; b"" for the last one."""
    line = await reader.readline()
    if not line:
        raise HttpError("connection closed inside a chunked body")
    size = int(line.split(b";")[0].strip(), 16)
    data = await reader.readexactly(size + 2)  # and its CRLF
    return data[:-2]


class AsyncHttp:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port; reconnects before a request
    when it sat idle longer than ``idle_limit`` (gunicorn closes idle ones after 2 s). No
    retries: a failed request is an error of the run."""

    def __init__(self, port: int, idle_limit: float = 1.0) -> None:
        self.port = port
        self.idle_limit = idle_limit
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None or time.perf_counter() - self.last_used > self.idle_limit:
            await self.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None and self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()
        status, answer = await read_head(self.reader)
        if answer.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while chunk := await read_chunk(self.reader):
                parts.append(chunk)
            while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            data = b"".join(parts)
        elif "content-length" in answer:
            data = await self.reader.readexactly(int(answer["content-length"]))
        elif status in (204, 304):
            data = b""
        else:
            data = await self.reader.read()
            answer["connection"] = "close"
        self.last_used = time.perf_counter()
        if answer.get("connection", "").lower() == "close":
            await self.close()
        return status, data


@dataclass
class Phone:
    device_id: int
    token: str


class EventStream:
    """An open ``GET /events`` of one phone, parsed as the app's SSE reader does: an event
    is dispatched at its blank line, and only if it had a ``data:`` line."""

    def __init__(self, phone: Phone) -> None:
        self.phone = phone
        self.events: list[tuple[float, str]] = []
        self.comments = 0
        self.error = ""
        self.closed = False
        self.waiter: asyncio.Future[float] | None = None
        self.ready = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int, timeout: float = 15.0) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(
            (
                f"GET {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {self.phone.token}\r\nAccept: text/event-stream\r\n"
                "Cache-Control: no-cache\r\n\r\n"
            ).encode("latin-1")
        )
        await self.writer.drain()
        status, headers = await asyncio.wait_for(read_head(reader), timeout)
        if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
            raise HttpError(f"events: HTTP {status} {headers.get('content-type', '')}")
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self.task = asyncio.ensure_future(self._read(reader, chunked))
        await asyncio.wait_for(self.ready.wait(), timeout)
        if self.closed:
            raise HttpError(f"events: closed at once {self.error}")

    async def _read(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        buffer, name, data = b"", "", None
        try:
            while True:
                chunk = await read_chunk(reader) if chunked else await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.rstrip(b"\r").decode()
                    if line.startswith(":"):
                        self.comments += 1
                        self.ready.set()
                    elif line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "":
                        if data is not None:
                            self._dispatch(name or "message")
                        name, data = "", None
        except (OSError, HttpError, ValueError, asyncio.IncompleteReadError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed = True
            self.ready.set()

    def _dispatch(self, name: str) -> None:
        now = time.perf_counter()
        self.events.append((now, name))
        if name == "MessageEnqueued" and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(now)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


async def open_streams(port: int, phones: list[Phone]) -> tuple[list[EventStream], list[str]]:
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    errors: list[str] = []

    async def one(phone: Phone) -> EventStream | None:
        async with gate:
            stream = EventStream(phone)
            try:
                await stream.open(port)
                return stream
            except (OSError, HttpError, TimeoutError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                stream.close()
                return None

    opened = await asyncio.gather(*(one(p) for p in phones))
    return [s for s in opened if s is not None], errors


async def close_streams(streams: list[EventStream]) -> None:
    for stream in streams:
        stream.close()
    await asyncio.gather(*(s.task for s in streams if s.task), return_exceptions=True)


async def register_over_http(port: int, enrollment: str) -> Phone:
    client = AsyncHttp(port)
    body = orjson.dumps({"name": "bench phone http", "simCards": []})
    headers = {"Authorization": f"Bearer {enrollment}", "Content-Type": "application/json"}
    status, data = await client.request("POST", DEVICE, body, headers)
    await client.close()
    if status != 201:
        raise RuntimeError(f"POST {DEVICE}: HTTP {status} {data[:200]!r}")
    answer = orjson.loads(data)
    return Phone(int(answer["id"]), answer["token"])


# --- 3. addsms -> MessageEnqueued -----------------------------------------------------------


@dataclass
class Latencies:
    from_sent: list[float] = field(default_factory=list)
    from_answer: list[float] = field(default_factory=list)
    addsms: list[float] = field(default_factory=list)
    missing: int = 0
    failures: list[str] = field(default_factory=list)
    started: float = 0.0


async def latency_run(
    port: int, compat_token: str, streams: list[EventStream], rng: random.Random
) -> tuple[Latencies, list[EventStream]]:
    result = Latencies(started=time.perf_counter())
    chosen = rng.sample(streams, ROUNDS)
    numbers = lib.phone_numbers(WARMUP_ROUNDS + ROUNDS, seed=311)
    client = AsyncHttp(port)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    loop = asyncio.get_running_loop()
    # A few first requests to the fresh gunicorn, not counted.
    for i, stream in enumerate(s for s in streams if s not in chosen):
        if i == WARMUP_ROUNDS:
            break
        body = urlencode(
            {"token": compat_token, "sendto": numbers[i], "body": "Warm-up",
             "device_id": stream.phone.device_id}
        ).encode()  # fmt: skip
        await client.request("POST", ADDSMS, body, form)
    await asyncio.sleep(0.5)
    numbers = numbers[WARMUP_ROUNDS:]
    for i, stream in enumerate(chosen):
        stream.waiter = loop.create_future()
        body = urlencode(
            {
                "token": compat_token,
                "sendto": numbers[i],
                "body": f"Your verification code is {100000 + i * 7919 % 900000}.",
                "device_id": stream.phone.device_id,
            }
        ).encode()
        sent = time.perf_counter()
        try:
            status, data = await client.request("POST", ADDSMS, body, form)
        except (OSError, HttpError, asyncio.IncompleteReadError) as exc:
            result.failures.append(f"addsms {type(exc).__name__}: {exc}")
            await client.close()
            continue
        answered = time.perf_counter()
        if status != 200 or not data.startswith(b'{"error":0'):
            result.failures.append(f"addsms HTTP {status}: {data[:100]!r}")
            continue
        result.addsms.append(answered - sent)
        try:
            arrived = await asyncio.wait_for(asyncio.shield(stream.waiter), EVENT_WAIT)
        except TimeoutError:
            result.missing += 1
        else:
            result.from_sent.append(arrived - sent)
            result.from_answer.append(arrived - answered)
        stream.waiter = None
        await asyncio.sleep(rng.uniform(0.02, 0.06))
    await client.close()
    return result, chosen


# --- 4. Drain -------------------------------------------------------------------------------


@dataclass
class Drain:
    seconds: float = 0.0
    patched: list[str] = field(default_factory=list)
    get_times: list[float] = field(default_factory=list)
    patch_times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    finished: int = 0  # clients that saw an empty list
    started: float = 0.0
    patched_at: list[float] = field(default_factory=list)  # perf_counter of each 204
    first_answers: list[float] = field(default_factory=list)  # each client's first GET

    @property
    def rate(self) -> float:
        return len(self.patched) / self.seconds if self.seconds else 0.0

    def after_first_gets(self) -> tuple[float, float]:
        """(seconds from the start until every client had its first GET answered, PATCHes
        per second from then to the end): the drain without its opening burst of 100 GETs
        of 100 messages each, which a partial (deadline-bound) drain over-weights."""
        if len(self.first_answers) < DRAIN_PHONES:
            return float("nan"), float("nan")
        mark = max(self.first_answers)
        window = self.started + self.seconds - mark
        count = sum(1 for t in self.patched_at if t >= mark)
        return mark - self.started, (count / window if window >= 1.0 else float("nan"))


async def drain_run(port: int, phones: list[Phone]) -> Drain:
    result = Drain()
    end = time.perf_counter() + DRAIN_DEADLINE

    async def call(http: AsyncHttp, method: str, body: bytes, auth: dict[str, str]) -> bytes:
        started = time.perf_counter()
        status, data = await asyncio.wait_for(
            http.request(method, MESSAGE, body, auth), REQUEST_TIMEOUT
        )
        (result.get_times if method == "GET" else result.patch_times).append(
            time.perf_counter() - started
        )
        if status != (200 if method == "GET" else 204):
            raise HttpError(f"{method} HTTP {status}: {data[:100]!r}")
        return data

    async def client(phone: Phone) -> None:
        http = AsyncHttp(port)
        auth = {"Authorization": f"Bearer {phone.token}", "Content-Type": "application/json"}
        first = True
        try:
            while time.perf_counter() < end:
                items = orjson.loads(await call(http, "GET", b"", auth))
                if first:
                    result.first_answers.append(time.perf_counter())
                    first = False
                if not items:
                    result.finished += 1
                    return
                for item in items:
                    if time.perf_counter() >= end:
                        return
                    recipient = {"phoneNumber": item["phoneNumbers"][0], "state": "Sent"}
                    report = [{"id": item["id"], "state": "Sent", "recipients": [recipient]}]
                    await call(http, "PATCH", orjson.dumps(report), auth)
                    result.patched.append(item["id"])
                    result.patched_at.append(time.perf_counter())
        except (OSError, HttpError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            await http.close()

    result.started = time.perf_counter()
    await asyncio.gather(*(client(p) for p in phones))
    result.seconds = time.perf_counter() - result.started
    return result


def drain_phones(account: Any, prefix: str, seed: int) -> list[Phone]:
    """DRAIN_PHONES fresh SMSGate phones with DRAIN_PER_PHONE due messages each."""
    from django.db import connection

    from devices.models import Device
    from devices.services import register_app
    from messaging.services import OutgoingSms, submit

    phones = []
    for i in range(DRAIN_PHONES):
        device, token = register_app(account, f"bench {prefix} {i}", ())
        phones.append(Phone(device.pk, token))
    ids = [p.device_id for p in phones]
    Device.objects.filter(pk__in=ids).update(segments_per_minute=1000, batch_size=100)
    numbers = lib.phone_numbers(DRAIN_PHONES * DRAIN_PER_PHONE, seed=seed)
    requests = [
        OutgoingSms(
            device_id=ids[i % len(ids)],
            phone=number,
            body=f"Hi, your order #{seed}{i:05d} has shipped.",
        )
        for i, number in enumerate(numbers)
    ]
    for start in range(0, len(requests), 5000):
        submit(account, requests[start : start + 5000], return_ids=False)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE messaging_message")
    return phones


def verify_drain(phones: list[Phone], drain: Drain) -> tuple[bool, str]:
    """In the database: every message the clients PATCHed is status 6 (Sent) with exactly
    one move to 6, no other message of these phones is, and no id was PATCHed twice (so a
    complete drain has all DRAIN_PHONES x DRAIN_PER_PHONE status 6, each PATCHed once)."""
    from messaging.models import Message, MessageStatusChange, Status, served_pk

    ids = [p.device_id for p in phones]
    rows = dict(Message.objects.filter(device_id__in=ids).values_list("id", "status"))
    counts = Counter(drain.patched)
    patched_twice = sum(1 for n in counts.values() if n > 1)
    patched = {pk for s in counts if (pk := served_pk(s)) is not None}
    unreadable = sum(1 for s in counts if served_pk(s) is None)
    moves = Counter(
        MessageStatusChange.objects.filter(
            message__device_id__in=ids, to_status=Status.SENT
        ).values_list("message_id", flat=True)
    )
    sent = {pk for pk, status in rows.items() if status == Status.SENT}
    not_once = sum(1 for pk in sent | patched if moves.get(pk, 0) != 1)
    patched_not_sent = len(patched - sent)  # includes PATCHed ids not of these phones
    sent_unpatched = len(sent - patched)
    ok = (
        len(rows) == DRAIN_PHONES * DRAIN_PER_PHONE
        and not_once == patched_twice == patched_not_sent == sent_unpatched == unreadable == 0
    )
    text = (
        f"{len(sent):,} of {len(rows):,} rows status 6, {not_once} of them without exactly "
        f"one move to 6; {len(counts):,} ids PATCHed, {patched_twice} twice, "
        f"{patched_not_sent} PATCHed but not status 6, {sent_unpatched} status 6 but never "
        f"PATCHed, {unreadable} not an id"
    )
    return ok, text


def report_drain(
    label: str, drain: Drain, cpu: str, server_cpu: float, check: tuple[bool, str]
) -> None:
    total = DRAIN_PHONES * DRAIN_PER_PHONE
    stopped = (
        "" if len(drain.patched) == total else f" (stopped at the {DRAIN_DEADLINE:.0f} s bound)"
    )
    print(
        f"  {label}: {len(drain.patched):,} of {total:,} messages in {drain.seconds:.1f} s"
        f"{stopped} = {drain.rate:,.0f} msgs/s; {len(drain.get_times):,} GETs, "
        f"{len(drain.patch_times):,} PATCHes, {drain.finished}/{DRAIN_PHONES} clients saw an "
        f"empty list, {len(drain.errors)} errors"
    )
    mark, steady = drain.after_first_gets()
    print(
        f"  every client's first GET answered after {mark:.1f} s; from then on "
        f"{steady:,.0f} PATCHes/s"
    )
    per_message = server_cpu * 1000 / len(drain.patched) if drain.patched else float("nan")
    print(f"  server CPU {server_cpu:.1f} s = {per_message:.1f} ms per message (GETs included)")
    print(stats_header(30))
    print(stats_line("GET /message", drain.get_times, 30))
    print(stats_line("PATCH /message (1 element)", drain.patch_times, 30))
    print(f"  {cpu}")
    print(f"  database: {check[1]}: {'OK' if check[0] else 'WRONG'}")
    for error in drain.errors[:5]:
        print(f"    {error}")


# --- Readings -------------------------------------------------------------------------------


def pg_sessions() -> int:
    import psycopg

    with psycopg.connect(lib.bench_database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) if row else -1


# --- main -----------------------------------------------------------------------------------


def drain_gunicorn(
    client: ClientLoop, server: lib.Gunicorn, phones: list[Phone], label: str
) -> tuple[Drain, float, tuple[bool, str]]:
    """One drain against a gunicorn: (the drain, its workers' CPU seconds, the database
    check), reported under ``label``."""
    workers = server.worker_pids()
    meter, before = lib.CpuMeter(workers), sum(map(lib.process_cpu_seconds, workers))
    drain = client.run(drain_run(server.port, phones), DRAIN_DEADLINE + 60)
    cpu = meter.stop()
    seconds = sum(map(lib.process_cpu_seconds, workers)) - before
    check = verify_drain(phones, drain)
    report_drain(label, drain, cpu, seconds, check)
    return drain, seconds, check


def run(env: dict[str, str], stack: contextlib.ExitStack) -> None:
    from django.db import connections

    from devices.services import register_app
    from gateway.services import enrollment_token

    server_env = {
        **env,
        "REDIS_URL": REDIS_URL,
        "ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    account, compat_token = lib.make_account("streams@bench.example")
    client = ClientLoop()
    stack.callback(client.close)
    streams: list[EventStream] = []

    def closing_streams() -> None:
        if streams and not client.loop.is_closed():
            with contextlib.suppress(Exception):
                client.run(close_streams(streams), 15)
            streams.clear()

    # --- 1. 1,000 streams
    lib.rule(f"1. {PHONES:,} SMSGate phones open GET {EVENTS}")
    asgi = lib.Uvicorn(server_env, env["GATEWAY_VAR_DIR"])
    stack.callback(asgi.stop)
    stack.callback(closing_streams)  # runs before the server stops
    asgi.wait_ready()
    print(f"[setup] {' '.join(asgi.command[2:])} (pid {asgi.pid}), REDIS_URL {REDIS_URL}")
    first = client.run(register_over_http(asgi.port, enrollment_token(account)), 30)
    started = time.perf_counter()
    phones = [first]
    for i in range(1, PHONES):
        device, token = register_app(account, f"bench phone {i}", ())
        phones.append(Phone(device.pk, token))
    print(
        f"  1 phone registered over HTTP, {PHONES - 1} through register_app in "
        f"{time.perf_counter() - started:.1f} s"
    )
    time.sleep(0.5)
    rss_before, threads_before = lib.process_memory(asgi.pid)
    started = time.perf_counter()
    opened, open_errors = client.run(open_streams(asgi.port, phones), 120)
    open_seconds = time.perf_counter() - started
    streams.extend(opened)
    print(
        f"  {len(streams):,} of {PHONES:,} streams open in {open_seconds:.1f} s "
        f"({len(streams) / open_seconds:,.0f}/s, at most {OPENING_AT_ONCE} opening at once); "
        f"{len(open_errors)} failed"
    )
    for error in open_errors[:5]:
        print(f"    {error}")
    verdict(f"[1] {len(streams):,}/{PHONES:,} streams open in {open_seconds:.1f} s", None)

    # --- 2. Idle
    lib.rule(f"2. {len(streams):,} streams idle for {IDLE_SECONDS:.0f} s")
    time.sleep(1.0)  # the last openings' database work is done
    connections.close_all()  # this process's session out of the count
    comments_before = sum(s.comments for s in streams)
    cpu_before, own_before = lib.process_cpu_seconds(asgi.pid), sum(os.times()[:2])
    started = time.perf_counter()
    time.sleep(IDLE_SECONDS)
    wall = time.perf_counter() - started
    cpu = (lib.process_cpu_seconds(asgi.pid) - cpu_before) / wall * 100
    own = (sum(os.times()[:2]) - own_before) / wall * 100
    rss, threads = lib.process_memory(asgi.pid)
    sessions = pg_sessions()
    alive = sum(1 for s in streams if not s.closed)
    comments = sum(s.comments for s in streams) - comments_before
    per_stream = (rss - rss_before) * 1024 / max(len(streams), 1)
    print(
        f"  server RSS {rss_before:.0f} MB before the streams -> {rss:.0f} MB with "
        f"{len(streams):,} ({per_stream:.0f} KB per stream); threads {threads_before} -> "
        f"{threads}"
    )
    print(
        f"  server CPU {cpu:.1f}% of one core over {wall:.1f} s ({comments:,} keep-alive "
        f"comments received, STREAM_KEEPALIVE_SECONDS 15); client loop {own:.1f}%"
    )
    print(f"  PostgreSQL sessions of the bench database (the stream process only): {sessions}")
    print(f"  streams still open: {alive:,}")
    verdict(
        f"[2] idle with {alive:,} streams: RSS {rss:.0f} MB ({per_stream:.0f} KB/stream), "
        f"CPU {cpu:.1f}% of one core, {threads} threads, {sessions} PostgreSQL sessions",
        None,
    )

    # --- 3. addsms -> MessageEnqueued
    wsgi = lib.Gunicorn(
        {**server_env, "WEB_THREADS": str(WSGI_THREADS)},
        env["GATEWAY_VAR_DIR"],
        workers=WSGI_WORKERS,
        threads=WSGI_THREADS,
    )
    stack.callback(wsgi.stop)
    wsgi.wait_ready()
    lib.rule(f"3. addsms -> MessageEnqueued, {ROUNDS} times")
    print(f"[setup] {' '.join(wsgi.command[1:8])} (pid {wsgi.process.pid}) as the web process")
    result, chosen = client.run(
        latency_run(wsgi.port, compat_token, streams, random.Random(7)), 120
    )
    arrivals = [
        [t for t, name in s.events if name == "MessageEnqueued" and t >= result.started]
        for s in chosen
    ]
    events = sum(map(len, arrivals))
    gaps = [times[1] - times[0] for times in arrivals if len(times) > 1]
    print(stats_header(36))
    print(stats_line("addsms sent -> MessageEnqueued", result.from_sent, 36))
    print(stats_line("addsms answered -> MessageEnqueued", result.from_answer, 36))
    print(stats_line("addsms itself (sent -> answered)", result.addsms, 36))
    print(
        f"  never arrived (within {EVENT_WAIT:.0f} s): {result.missing}; addsms failures: "
        f"{len(result.failures)}; MessageEnqueued events on the {ROUNDS} phones since: "
        f"{events} ({events / ROUNDS:.2f} per addsms)"
    )
    if gaps:
        print(
            f"  {len(gaps)} phones heard a second MessageEnqueued, {ms(gaps, 50):.1f} ms after "
            f"the first (p50; max {max(gaps) * 1000:.1f} ms)"
        )
    for error in result.failures[:5]:
        print(f"    {error}")
    p99 = lib.percentile(result.from_sent, 99) if result.from_sent else float("inf")
    verdict(
        f"[3] addsms -> MessageEnqueued p50 {ms(result.from_sent, 50):.1f} ms, p95 "
        f"{ms(result.from_sent, 95):.1f} ms, p99 {p99 * 1000:.1f} ms, max "
        f"{max(result.from_sent, default=float('nan')) * 1000:.1f} ms; p99 / 1 s target "
        f"{p99 / LATENCY_TARGET:.3f}; {result.missing} never arrived",
        p99 <= LATENCY_TARGET and result.missing == 0 and not result.failures,
    )

    # --- 4. Drain
    total = DRAIN_PHONES * DRAIN_PER_PHONE
    lib.rule(f"4. drain: {DRAIN_PHONES} phones x {DRAIN_PER_PHONE} messages, GET -> PATCH")
    asgi_phones = drain_phones(account, "asgi", seed=41)
    connections.close_all()
    print(f"  {total:,} messages queued; against uvicorn (pid {asgi.pid}, streams still open)")
    meter, before = lib.CpuMeter([asgi.pid]), lib.process_cpu_seconds(asgi.pid)
    asgi_drain = client.run(drain_run(asgi.port, asgi_phones), DRAIN_DEADLINE + 60)
    asgi_cpu, asgi_seconds = meter.stop(), lib.process_cpu_seconds(asgi.pid) - before
    asgi_check = verify_drain(asgi_phones, asgi_drain)
    report_drain("ASGI (uvicorn, 1 process)", asgi_drain, asgi_cpu, asgi_seconds, asgi_check)

    closing_streams()
    asgi.stop()
    wsgi_phones = drain_phones(account, "wsgi", seed=42)
    connections.close_all()
    print(f"  {total:,} more messages queued; against gunicorn (uvicorn stopped)")
    wsgi_drain, wsgi_seconds, wsgi_check = drain_gunicorn(
        client, wsgi, wsgi_phones, f"WSGI (gunicorn {WSGI_WORKERS} x {WSGI_THREADS})"
    )

    # The limit: the same drain through a bare WSGI app doing only the unavoidable SQL
    # (bench/reference_mobile.py), on the same gunicorn shape, the real one stopped.
    wsgi.stop()
    reference = lib.Gunicorn(
        {**server_env, "WEB_THREADS": str(WSGI_THREADS)},
        env["GATEWAY_VAR_DIR"],
        workers=WSGI_WORKERS,
        threads=WSGI_THREADS,
        app="reference_mobile:application",
        extra=("--pythonpath", str(Path(__file__).resolve().parent)),
    )
    stack.callback(reference.stop)
    reference.wait_ready()
    reference_phones = drain_phones(account, "reference", seed=43)
    connections.close_all()
    print(f"  {total:,} more messages queued; against the minimal reference (bare SQL, gunicorn)")
    reference_drain, reference_seconds, _ = drain_gunicorn(
        client,
        reference,
        reference_phones,
        f"reference (bare SQL, gunicorn {WSGI_WORKERS} x {WSGI_THREADS})",
    )
    reference.stop()

    ratio = ratio_of(asgi_drain.rate, wsgi_drain.rate)
    asgi_steady, wsgi_steady = asgi_drain.after_first_gets()[1], wsgi_drain.after_first_gets()[1]
    drains = (asgi_drain, wsgi_drain)
    complete = all(len(d.patched) == total and not d.errors for d in drains)
    consistent = asgi_check[0] and wsgi_check[0]
    verdict(
        f"[4] drain on WSGI (the web process, where production serves it) "
        f"{wsgi_drain.rate:,.0f} msgs/s (/ 500 target {wsgi_drain.rate / DRAIN_TARGET:.2f}), "
        f"on ASGI {asgi_drain.rate:,.0f} msgs/s (/ 500 target "
        f"{asgi_drain.rate / DRAIN_TARGET:.2f}); ASGI / WSGI {ratio:.2f}",
        wsgi_drain.rate >= DRAIN_TARGET and complete and consistent,
    )
    verdict(
        f"[4] after the first GETs: ASGI {asgi_steady:,.0f}, WSGI {wsgi_steady:,.0f} "
        f"PATCHes/s (ASGI / WSGI {ratio_of(asgi_steady, wsgi_steady):.2f}); server CPU per message "
        f"ASGI {asgi_seconds * 1000 / max(len(asgi_drain.patched), 1):.1f} ms, WSGI "
        f"{wsgi_seconds * 1000 / max(len(wsgi_drain.patched), 1):.1f} ms",
        None,
    )
    reference_rate = reference_drain.rate
    verdict(
        f"[4] limit: the bare-SQL reference drains {reference_rate:,.0f} msgs/s (server CPU "
        f"{reference_seconds * 1000 / max(len(reference_drain.patched), 1):.1f} ms per "
        f"message); WSGI / reference {ratio_of(wsgi_drain.rate, reference_rate):.2f}, "
        f"ASGI / reference {ratio_of(asgi_drain.rate, reference_rate):.2f}",
        None,
    )
    verdict(
        f"[4] {'both drains complete' if complete else 'NOT complete'} "
        f"({len(asgi_drain.patched):,} + {len(wsgi_drain.patched):,} of {2 * total:,} "
        f"messages, {len(asgi_drain.errors) + len(wsgi_drain.errors)} errors); database "
        f"{'consistent' if consistent else 'WRONG'} (PATCHed = status 6, once each)",
        None,
    )


def main() -> None:
    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    limit = raise_fd_limit(PHONES + DRAIN_PHONES + 200)
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {REDIS_URL} is needed: {exc}") from None
    keys_before = set(r.scan_iter(count=1000))
    if keys_before:
        print(f"  note: db 11 already holds {len(keys_before)} keys; they are left alone")

    def delete_created_keys() -> None:
        created = set(r.scan_iter(count=1000)) - keys_before
        if created:
            r.delete(*created)
        print(f"[cleanup] {len(created)} Redis keys created in db 11 deleted")

    began = time.perf_counter()
    with lib.bench_django(log_level="WARNING") as env, contextlib.ExitStack() as stack:
        stack.callback(delete_created_keys)
        print(
            f"[setup] {os.cpu_count()} CPUs shared by the client loop, the servers and "
            f"PostgreSQL; RLIMIT_NOFILE {limit}"
        )
        run(env, stack)
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
