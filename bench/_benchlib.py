"""Shared plumbing of the benchmark scripts (not a benchmark itself).

- The bench database: taken from ``BENCH_DATABASE_URL`` (default
  ``postgres://postgres@127.0.0.1:5432/gateway_bench``), created fresh, migrated, and
  dropped at the end. Refuses anything but a server on 127.0.0.1 / localhost and a database
  whose name contains "bench", so it can never drop somebody else's database.
- Django set up against it, with a throw-away ``GATEWAY_VAR_DIR`` (nothing is written under
  the checkout's ``var/``), DEBUG off, and no Redis unless a bench asks for it
  (``bench_django(redis=True)``: the database in ``BENCH_REDIS_URL``, default
  ``redis://127.0.0.1:6379/12``, which must be empty; emptied at the end).
- Small helpers: an account with its compatibility token, a device with SIM slots,
  percentiles, RSS readings, realistic distinct phone numbers.
- ``Gunicorn`` (a private control socket, stopped by process group), ``Uvicorn`` (the
  streams process), ``Spawned`` (any other server process: Celery worker, beat),
  ``HttpClient`` (keep-alive), ``CpuMeter`` (where the CPU went), ``Receiver`` (a webhook
  receiver that counts).
- ``load_messages``: 1,000,000 + 200,000 realistic messages in one INSERT ... SELECT;
  ``explain_statements``: EXPLAIN (ANALYZE, BUFFERS) with the scans on messaging_message;
  ``OpenLoop``: an open-loop load at a fixed rate, latency counted from the due time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/gateway_bench"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# 50 characters; only signs sessions and derives compat tokens inside the bench database.
BENCH_SECRET_KEY = "bench-secret-key-not-for-production-0123456789abcd"
assert len(BENCH_SECRET_KEY) == 50


def bench_database_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"BENCH_DATABASE_URL must be a postgres:// URL, got {url!r}")
    if (parts.hostname or "") not in LOCAL_HOSTS:
        raise SystemExit(f"BENCH_DATABASE_URL must point at 127.0.0.1, got {parts.hostname!r}")
    name = parts.path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(
            f"BENCH_DATABASE_URL's database ({name!r}) must contain 'bench': it is dropped "
            "and re-created by the benchmark"
        )
    return url


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _maintenance_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_maintenance_url(url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def create_database(url: str) -> None:
    """Create the bench database, dropping a copy left by an interrupted run."""
    name = _database_name(url)
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(url, f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    _admin(url, f'DROP DATABASE IF EXISTS "{_database_name(url)}" WITH (FORCE)')


def bench_redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12").strip()
    parts = urlsplit(url)
    if parts.scheme != "redis" or (parts.hostname or "") not in LOCAL_HOSTS:
        raise SystemExit(f"BENCH_REDIS_URL must be a redis:// URL on 127.0.0.1, got {url!r}")
    return url


def _claim_redis(url: str) -> None:
    """The bench's Redis database must be empty: it is the bench's for the run."""
    import redis

    keys = redis.Redis.from_url(url, socket_connect_timeout=3).dbsize()
    if keys:
        raise SystemExit(
            f"{url} holds {keys} keys; the bench empties its Redis database at the end: "
            "choose an empty one with BENCH_REDIS_URL (or empty this one: redis-cli -n N flushdb)"
        )


def _flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=3).flushdb()


def bench_environment(url: str, var_dir: str, log_level: str = "WARNING") -> dict[str, str]:
    """The environment of the gateway under test (this process or a gunicorn)."""
    return {
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "DATABASE_URL": url,
        "SECRET_KEY": BENCH_SECRET_KEY,
        "GATEWAY_VAR_DIR": var_dir,
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "DEBUG": "0",
        "LOG_LEVEL": log_level,
        # No Redis: nothing on these paths uses the cache or the broker.
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
    }


@contextlib.contextmanager
def bench_django(log_level: str = "WARNING", *, redis: bool = False) -> Iterator[dict[str, str]]:
    """Create + migrate the bench database, set Django up on it; drop it all at the end.
    ``redis``: with the bench's Redis database as cache and broker (it must be empty; it is
    emptied at the end).

    Yields the environment used, so a script can hand it to a server it starts.
    """
    url = bench_database_url()
    var_dir = tempfile.mkdtemp(prefix="gateway-bench-var-")
    env = bench_environment(url, var_dir, log_level)
    if redis:
        env["REDIS_URL"] = bench_redis_url()
        _claim_redis(env["REDIS_URL"])
    os.environ.update(env)
    # whitenoise warns when collectstatic has not run (a fresh checkout); irrelevant here.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    created = False
    try:
        create_database(url)
        created = True
        import django

        django.setup()
        from django.core.management import call_command

        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        print(
            f"[setup] database {_database_name(url)!r} created and migrated "
            f"in {time.perf_counter() - started:.1f} s"
        )
        yield env
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if created:
            try:
                drop_database(url)
                print(f"[cleanup] database {_database_name(url)!r} dropped")
            except Exception as exc:
                print(f"[cleanup] could not drop {_database_name(url)!r}: {exc}", file=sys.stderr)
        shutil.rmtree(var_dir, ignore_errors=True)
        if redis:
            with contextlib.suppress(Exception):
                _flush_redis(env["REDIS_URL"])


def make_account(email: str, *, time_zone: str = "UTC") -> tuple[Any, str]:
    """A new account (through User.objects.create_user) and its compatibility token."""
    from gateway.models import User
    from gateway.services import compat_token

    user = User.objects.create_user(email, "bench password 123456")
    account = user.account
    if time_zone != account.time_zone:
        account.time_zone = time_zone
        account.save(update_fields=["time_zone"])
    return account, compat_token(account)


def make_device(account: Any, slots: tuple[int, ...] = (0, 1), title: str = "Bench phone") -> Any:
    from devices.models import Device, SimSlot

    device = Device.objects.create(account=account, title=title)
    SimSlot.objects.bulk_create(SimSlot(device=device, slot=s) for s in slots)
    return device


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an unsorted list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[min(len(ordered), int(rank)) - 1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# Mobile ranges that phonenumbers accepts as possible numbers: (prefix, digits after it).
_RANGES = (("+49151", 8), ("+49176", 8), ("+447", 9), ("+3361", 7), ("+1415", 7), ("+3934", 8))


def phone_numbers(count: int, *, seed: int) -> list[str]:
    """``count`` distinct, realistic international mobile numbers (E.164)."""
    import random

    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        prefix, digits = _RANGES[rng.randrange(len(_RANGES))]
        number = prefix + str(rng.randrange(10 ** (digits - 1), 10**digits))
        if number not in seen:
            seen.add(number)
            out.append(number)
    return out


def rule(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 86 - len(title)))


# --- A gunicorn under test, and what its processes cost --------------------------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Spawned:
    """A server process (``command``) on this machine in its own process group, logging to
    ``folder``; stop() ends that group only (by the id of the process we started)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], folder: str) -> None:
        import subprocess

        self.name, self.command = name, command
        self.log_path = Path(folder) / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The process and its children (a Celery worker's pool)."""
        return [self.pid, *child_pids(self.pid)]

    def tail(self, lines: int = 30) -> str:
        if not self.log.closed:
            self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, port: int, timeout: float = 30.0) -> None:
        """Until GET /healthz on ``port`` answers 200."""
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.log.closed:
            return  # stopped already
        stop_group(self.process)
        self.log.close()
        print(f"[cleanup] {self.name} (pid {self.process.pid}) stopped")


class Gunicorn(Spawned):
    """``gunicorn gateway.wsgi`` (or another WSGI ``app``, e.g. a bench's minimal
    reference) on 127.0.0.1 in its own process group (Spawned). The control socket and the
    log live in ``folder`` (the bench's temporary GATEWAY_VAR_DIR), so nothing is written
    in $HOME.
    """

    def __init__(
        self,
        env: dict[str, str],
        folder: str,
        *,
        workers: int = 2,
        threads: int = 4,
        extra: tuple[str, ...] = (),
        app: str = "gateway.wsgi",
    ) -> None:
        self.port = free_port()
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            app,
            "-c",
            "python:gateway.gunicorn_conf",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--control-socket",
            str(Path(folder) / f"gunicorn-{self.port}.ctl"),
            *extra,
        ]
        super().__init__(f"gunicorn-{self.port}", command, env, folder)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /healthz answers (a worker answers it: the master serves nothing)."""
        self.wait_http(self.port, timeout)

    def worker_pids(self) -> list[int]:
        """The worker processes: children of the master we started."""
        return child_pids(self.process.pid)


class Uvicorn(Spawned):
    """``uvicorn gateway.asgi:application`` on 127.0.0.1 (the streams process, production
    defaults: uvloop + httptools); one process, whose pid is the server's."""

    def __init__(self, env: dict[str, str], folder: str) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "gateway.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
            "--timeout-graceful-shutdown", "3",
        ]  # fmt: skip
        super().__init__(f"uvicorn-{self.port}", command, env, folder)

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_http(self.port, timeout)


def celery(kind: str, queues: str, concurrency: int, env: dict[str, str], folder: str) -> Spawned:
    """A Celery worker on ``queues`` (as the Procfile starts it), or beat (``kind`` "beat")."""
    command = [sys.executable, "-m", "celery", "-A", "gateway"]
    if kind == "beat":
        command += ["beat", "--loglevel", "WARNING", "--schedule", f"{folder}/beat-schedule"]
    else:
        command += [
            "worker", "--queues", queues, "--concurrency", str(concurrency), "--hostname",
            f"{kind}@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
        ]  # fmt: skip
    return Spawned(f"celery-{kind}", command, env, folder)


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 200 after ``delay`` seconds, counts what it got."""

    def __init__(self, delay: float = 0.0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay = delay
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_loop(
    port: int, path: str, headers: dict[str, str], bodies: list[bytes], ok: int, clients: int
) -> int:
    """POST ``bodies`` over ``clients`` keep-alive connections at once, each sending its
    share one after the other; how many were answered with status ``ok``."""
    shares = [bodies[i::clients] for i in range(clients)]
    counts = [0] * clients

    def client(index: int) -> None:
        http = HttpClient(port, timeout=30)
        try:
            for body in shares[index]:
                status, _ = http.request(path, body, headers, retry=False)
                counts[index] += status == ok
        finally:
            http.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


_reference_local = threading.local()


def reference_connection() -> Any:
    """For the bare WSGI references (bench/reference_*.py): this thread's own psycopg
    connection to the gateway's database (Django's settings), kept open, no health check."""
    import psycopg
    from django.conf import settings

    conn = getattr(_reference_local, "conn", None)
    if conn is None or conn.closed:
        db = settings.DATABASES["default"]
        conn = psycopg.connect(
            host=db["HOST"] or "127.0.0.1",
            port=db["PORT"] or 5432,
            user=db["USER"],
            password=db["PASSWORD"] or None,
            dbname=db["NAME"],
        )
        _reference_local.conn = conn
    return conn


def stop_group(process: Any) -> None:
    """End a server started in its own process group (by the id of the process we started):
    TERM, then KILL after 15 s."""
    import signal
    import subprocess

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("PPid:"):
                    if int(line.split()[1]) == pid:
                        children.append(int(entry.name))
                    break
        except OSError:
            continue
    return sorted(children)


def process_memory(pid: int) -> tuple[float, int]:
    """(RSS in MB, number of threads) of a process, from /proc/<pid>/status."""
    rss, threads = float("nan"), 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    except OSError:
        pass
    return rss, threads


# --- A small JSON/form client over one keep-alive connection ---------------------------------


class HttpClient:
    """One keep-alive ``http.client`` connection to 127.0.0.1:port.

    Reconnects before a request when the connection sat idle longer than ``idle_limit``
    (gunicorn closes idle keep-alive connections after 2 s) and, for ``retry=True`` calls
    (idempotent ones), once after a connection error. ``reconnects`` counts both.
    """

    def __init__(self, port: int, *, timeout: float = 10.0, idle_limit: float = 1.5) -> None:
        self.port = port
        self.timeout = timeout
        self.idle_limit = idle_limit
        self.conn: Any = None
        self.last_used = 0.0
        self.reconnects = 0

    def _fresh(self) -> Any:
        import http.client

        if self.conn is not None:
            self.conn.close()
            self.reconnects += 1
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        return self.conn

    def request(
        self, path: str, body: bytes, headers: dict[str, str], *, retry: bool = True
    ) -> tuple[int, bytes]:
        import http.client

        if self.conn is None or time.perf_counter() - self.last_used > self.idle_limit:
            self._fresh()
        for attempt in (0, 1):
            try:
                self.conn.request("POST", path, body, {**headers, "Connection": "keep-alive"})
                response = self.conn.getresponse()
                data = response.read()
                self.last_used = time.perf_counter()
                if response.will_close:
                    self._fresh()
                return response.status, data
            except (OSError, http.client.HTTPException):
                self._fresh()
                if attempt or not retry:
                    raise
        raise AssertionError("unreachable")

    def post_json(
        self, path: str, payload: Any, token: str | None = None, *, retry: bool = True
    ) -> tuple[int, Any]:
        import json

        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, data = self.request(path, json.dumps(payload).encode(), headers, retry=retry)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, {"raw": data[:200].decode(errors="replace")}

    def post_form(
        self, path: str, fields: dict[str, Any], *, retry: bool = False
    ) -> tuple[int, Any]:
        import json
        from urllib.parse import urlencode

        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, data = self.request(path, urlencode(fields).encode(), headers, retry=retry)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, {"raw": data[:200].decode(errors="replace")}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# --- Where the CPU went ---------------------------------------------------------------------


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_named(name: str) -> dict[int, float]:
    """{pid: CPU seconds} of the processes whose command name is ``name``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm == name:
                out[int(entry.name)] = process_cpu_seconds(int(entry.name))
    return out


class CpuMeter:
    """Where the CPU went between start() and stop(): the whole machine, this process
    (the load generator), the processes given (e.g. gunicorn workers; more named groups in
    ``groups``), PostgreSQL and Redis (their processes alive at the end; a session that
    ended in between is missed) and the rest (anything else running on the machine)."""

    def __init__(
        self, pids: list[int], *, label: str = "server", groups: dict[str, list[int]] | None = None
    ) -> None:
        self.groups = {label: pids, **(groups or {})}
        self.wall = time.perf_counter()
        self.machine = _machine_ticks()
        self.own = sum(os.times()[:2])
        self.before = {name: _cpu_of(group) for name, group in self.groups.items()}
        self.postgres = processes_named("postgres")
        self.redis = processes_named("redis-server")
        self.cores: dict[str, float] = {}

    def split(self) -> dict[str, float]:
        """Cores used on average, by part: "machine" (busy, of os.cpu_count()), "load
        generator", each group, "PostgreSQL", "Redis", "other"."""
        wall = time.perf_counter() - self.wall
        machine = (_machine_ticks()[0] - self.machine[0]) / os.sysconf("SC_CLK_TCK")
        used = {"load generator": sum(os.times()[:2]) - self.own}
        for name, group in self.groups.items():
            used[name] = _cpu_of(group) - self.before[name]
        for name, before in (("PostgreSQL", self.postgres), ("Redis", self.redis)):
            now = processes_named("postgres" if name == "PostgreSQL" else "redis-server")
            used[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())
        used["other"] = machine - sum(used.values())
        self.cores = {"machine": machine / wall, **{k: v / wall for k, v in used.items()}}
        return self.cores

    def stop(self) -> str:
        wall = time.perf_counter() - self.wall
        cores = self.split()
        parts = ", ".join(f"{name} {value:.2f}" for name, value in list(cores.items())[1:])
        return (
            f"CPU over {wall:.1f} s, in cores: machine {cores['machine']:.2f} of "
            f"{os.cpu_count() or 1} busy; {parts}"
        )


def _cpu_of(pids: list[int]) -> float:
    return sum(process_cpu_seconds(p) for p in pids)


# --- A large, realistic messaging_message, written by one INSERT ... SELECT -----------------

# status code -> share of the rows (SMSGateway24 codes plus the gateway's own 20-22).
STATUS_MIX = (
    (7, 0.45),  # delivered
    (6, 0.20),  # sent
    (5, 0.08),  # incoming
    (8, 0.05),  # not delivered
    (1, 0.05),  # new
    (9, 0.04),  # generic failure
    (3, 0.03),  # queued
    (10, 0.02),  # no service
    (20, 0.02),  # cancelled
    (22, 0.02),  # unknown
    (2, 0.02),  # taken
    (21, 0.02),  # expired
)


def status_case(column: str) -> str:
    """SQL mapping a uniform random ``column`` in [0, 1) to a status drawn from STATUS_MIX."""
    parts, edge = [], 0.0
    for status, share in STATUS_MIX[:-1]:
        edge += share
        parts.append(f"WHEN {column} < {edge:.4f} THEN {status}")
    return f"CASE {' '.join(parts)} ELSE {STATUS_MIX[-1][0]} END"


def message_insert_sql(
    account_a: Any,
    account_b: Any,
    devices_a: list[Any],
    device_b: Any,
    *,
    rows_a: int,
    rows_b: int,
    overrides: dict[str, str] | None = None,
) -> tuple[str, list[Any]]:
    """The INSERT ... SELECT of ``load_messages`` and its parameters.

    Rows g = 1..rows_a + rows_b: every (total // rows_b)-th is account B's (on device_b), the
    others account A's over ``devices_a`` (2 devices) x 2 SIMs, 12 statuses (STATUS_MIX),
    ~200,000 distinct phones, customer ids (40% none, 20% 0, 40% among 50,000), created over
    the last 365 days in id order. ``overrides`` replaces a column's SQL expression; it may
    use g, r1..r9 (uniform draws), status, phone and created.
    """
    from django.db import connection

    from messaging.models import Message

    total = rows_a + rows_b
    every = total // rows_b  # every 6th id is account B's for 1,000,000 + 200,000
    expressions = {
        "account_id": f"CASE WHEN mod(g, {every}) = 0 THEN {account_b.pk} ELSE {account_a.pk} END",
        "device_id": (
            f"CASE WHEN mod(g, {every}) = 0 THEN {device_b.pk} "
            f"WHEN r1 < 0.5 THEN {devices_a[0].pk} ELSE {devices_a[1].pk} END"
        ),
        "sim": "CASE WHEN r2 < 0.5 THEN 0 ELSE 1 END",
        "phone": "phone",
        "phone_raw": "phone",
        "body": (
            "CASE WHEN r3 < 0.5 THEN 'Your verification code is ' || (100000 + mod(g, 900000)) "
            "|| '. It expires in 10 minutes.' "
            "WHEN r3 < 0.9 THEN 'Hi, your order #' || g || ' has shipped. Track it: "
            "https://ex.am/t/' || to_hex(g::bigint * 7919) "
            "ELSE 'Grüße! Ihr Termin am ' || (1 + mod(g, 28)) || '.05. um 10:30 ist bestätigt.' END"
        ),
        "status": "status",
        "send_at": "CASE WHEN r4 < 0.05 THEN created + interval '1 hour' ELSE created END",
        "urgent": "r4 > 0.97",
        "customer_id": (
            "CASE WHEN r5 < 0.4 THEN NULL WHEN r5 < 0.6 THEN 0 "
            "ELSE 1 + floor(r6 * 50000)::bigint END"
        ),
        "segments": "CASE WHEN r3 >= 0.9 THEN 2 ELSE 1 END",
        "error_detail": "CASE WHEN status IN (8, 9, 10) THEN 'carrier error' ELSE '' END",
        "created_at": "created",
        "status_changed_at": "created + interval '20 seconds'",
        "sent_at": "CASE WHEN status IN (6, 7, 8) THEN created + interval '5 seconds' END",
        "delivered_at": "CASE WHEN status = 7 THEN created + interval '20 seconds' END",
    }
    expressions.update(overrides or {})
    # Columns this function does not know (added by later migrations) get their model
    # default when they cannot be NULL, so the load keeps working as the model grows.
    params: list[Any] = []
    for field in Message._meta.concrete_fields:
        column = field.column or field.name
        if column in expressions or field.primary_key or field.null:
            continue
        default = field.get_default()  # "" for a text field without one
        if default is None:
            raise SystemExit(f"messaging_message.{column}: NOT NULL without a default")
        expressions[column] = "%s"
        params.append(field.get_db_prep_save(default, connection))
    columns = ", ".join(expressions)
    values = ",\n        ".join(expressions.values())
    # Built from the caller's constants only.
    sql = f"""
        INSERT INTO messaging_message ({columns})
        SELECT {values}
        FROM (
            SELECT g, r1, r2, r3, r4, r5, r6, {status_case("r7")} AS status,
                   '+49151' || (10000000 + floor(r8 * 200000)::int)::text AS phone,
                   now() - interval '365 days'
                     + (g::float8 / {total}) * interval '365 days'
                     + r9 * interval '60 seconds' AS created
            FROM (
                SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                       random() AS r5, random() AS r6, random() AS r7, random() AS r8,
                       random() AS r9
                FROM generate_series(1, {total}) AS g
            ) AS draws
        ) AS s
        ORDER BY g
    """  # noqa: S608
    return sql, params


def load_messages(
    account_a: Any,
    account_b: Any,
    devices_a: list[Any],
    device_b: Any,
    *,
    rows_a: int,
    rows_b: int,
    overrides: dict[str, str] | None = None,
) -> float:
    """Insert rows_a + rows_b messages (see message_insert_sql, deterministic ``setseed``)
    and VACUUM ANALYZE the table; returns the seconds taken."""
    from django.db import connection

    sql, params = message_insert_sql(
        account_a,
        account_b,
        devices_a,
        device_b,
        rows_a=rows_a,
        rows_b=rows_b,
        overrides=overrides,
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [0.4242])
        cursor.execute(sql, params)
        cursor.execute("VACUUM ANALYZE messaging_message")
    return time.perf_counter() - started


# --- EXPLAIN of captured SQL ---------------------------------------------------------------

SCAN = re.compile(
    r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan)( Backward)?(?: using (\S+))? "
    r"on messaging_message"
)
REMOVED = re.compile(r"Rows Removed by Filter: (\d+)")


def explain_statements(statements: list[str]) -> tuple[list[str], bool, str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of each statement: (plan lines without the planning
    lines, whether any plan has a Seq Scan on messaging_message, a one-line summary of the
    scans on messaging_message with the rows each filtered out)."""
    from django.db import connection

    lines: list[str] = []
    seq_scan = False
    scans: list[str] = []
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cursor.fetchall()]
            seq_scan |= any("Seq Scan on messaging_message" in line for line in plan)
            lines += [line for line in plan if not line.strip().startswith("Planning")]
            for index, line in enumerate(plan):
                found = SCAN.search(line)
                if not found:
                    continue
                name = (found.group(3) or "").removeprefix("messaging_message_")
                scan = found.group(1).replace("Index Scan", "idx").replace("Seq Scan", "SEQ SCAN")
                scan += (" bwd" if found.group(2) else "") + (f" {name}" if name else "")
                for detail in plan[index + 1 : index + 6]:
                    removed = REMOVED.search(detail)
                    if removed:
                        scan += f", {int(removed.group(1)):,} filtered out"
                        break
                scans.append(scan)
    return lines, seq_scan, "; ".join(scans)


EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")


def execution_ms(plan: list[str]) -> float:
    """The summed ``Execution Time`` of EXPLAIN ANALYZE plans (explain_statements' lines)."""
    return sum(float(m.group(1)) for m in map(EXECUTION.search, plan) if m)


def redump_ms(content: bytes) -> float:
    """What serializing an answer costs when its rows are already shaped: ``content``
    parsed, then ``orjson.dumps`` of it timed (median of 20), in ms. Half of a page's limit."""
    import orjson

    answer = orjson.loads(content)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        orjson.dumps(answer)
        times.append(time.perf_counter() - started)
    return percentile(times, 50) * 1000


# --- An open-loop load over keep-alive connections -----------------------------------------


class OpenLoop:
    """Open-loop load: request i is due at start + i / rate whatever happened before, and its
    latency runs from that due time to the end of the answer, so waiting for a free
    connection when the server falls behind is counted (no coordinated omission).

    ``requests`` are (method, path, body, headers); ``ok(status, body)`` says whether an
    answer counts as a success. Each of ``threads`` client threads has its own keep-alive
    ``http.client`` connection and takes the next due request in turn. ``results[i]`` is
    (due, sent, done, outcome) with outcome "ok" or what went wrong.
    """

    def __init__(
        self,
        port: int,
        requests: list[tuple[str, str, bytes, dict[str, str]]],
        rate: float,
        ok: Any,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.requests = requests
        self.rate = rate
        self.ok = ok
        self.timeout = timeout
        self.results: list[tuple[float, float, float, str] | None] = [None] * len(requests)
        self._next = 0
        self._lock = threading.Lock()
        self.start = 0.0

    def run(self, threads: int) -> None:
        self.start = time.perf_counter() + 0.2
        workers = [threading.Thread(target=self._worker, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _connect(self) -> Any:
        import http.client

        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def _worker(self) -> None:
        import http.client

        conn = self._connect()
        try:
            while True:
                with self._lock:
                    i = self._next
                    self._next += 1
                if i >= len(self.requests):
                    return
                method, path, body, headers = self.requests[i]
                due = self.start + i / self.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent = time.perf_counter()
                try:
                    conn.request(method, path, body, {**headers, "Connection": "keep-alive"})
                    response = conn.getresponse()
                    data = response.read()
                    done = time.perf_counter()
                    if self.ok(response.status, data):
                        outcome = "ok"
                    else:
                        text = data[:120].decode(errors="replace")
                        outcome = f"HTTP {response.status}: {text}"
                    if response.will_close:
                        conn.close()
                        conn = self._connect()
                except (OSError, http.client.HTTPException) as exc:
                    done = time.perf_counter()
                    outcome = f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = self._connect()
                self.results[i] = (due, sent, done, outcome)
        finally:
            conn.close()

    def summary(self) -> dict[str, Any]:
        """Latency (due -> answered), service (sent -> answered) and lateness (due -> sent)
        in seconds, the achieved rate and the errors by kind."""
        results = [r for r in self.results if r is not None]
        errors: dict[str, int] = {}
        for r in results:
            if r[3] != "ok":
                errors[r[3]] = errors.get(r[3], 0) + 1
        elapsed = max(r[2] for r in results) - self.start if results else float("nan")
        ok = sum(1 for r in results if r[3] == "ok")
        return {
            "latency": [done - due for due, _, done, _ in results],
            "service": [done - sent for _, sent, done, _ in results],
            "lateness": [sent - due for due, sent, _, _ in results],
            "ok": ok,
            "errors": errors,
            "error_count": sum(errors.values()),
            "elapsed": elapsed,
            "rate": ok / elapsed if results else 0.0,
        }
