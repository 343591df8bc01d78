"""Shared plumbing of the benchmark scripts (not a benchmark itself).

- The bench database: taken from ``BENCH_DATABASE_URL`` (default
  ``postgres://postgres@127.0.0.1:5432/gateway_bench``), created fresh, migrated, and
  dropped at the end. Refuses anything but a server on 127.0.0.1 / localhost and a database
  whose name contains "bench", so it can never drop somebody else's database.
- Django set up against it, with a throw-away ``GATEWAY_VAR_DIR`` (nothing is written under
  the checkout's ``var/``), no Redis, DEBUG off.
- Small helpers: an account with its compatibility token, a device with SIM slots,
  percentiles, RSS readings, realistic distinct phone numbers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
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
def bench_django(log_level: str = "WARNING") -> Iterator[dict[str, str]]:
    """Create + migrate the bench database, set Django up on it; drop it all at the end.

    Yields the environment used, so a script can hand it to a server it starts.
    """
    url = bench_database_url()
    var_dir = tempfile.mkdtemp(prefix="gateway-bench-var-")
    env = bench_environment(url, var_dir, log_level)
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


class Gunicorn:
    """``gunicorn gateway.wsgi`` on 127.0.0.1 in its own process group; stop() ends that
    group only (by the id of the process we started). The control socket and the log live
    in ``folder`` (the bench's temporary GATEWAY_VAR_DIR), so nothing is written in $HOME.
    """

    def __init__(
        self,
        env: dict[str, str],
        folder: str,
        *,
        workers: int = 2,
        threads: int = 4,
        extra: tuple[str, ...] = (),
    ) -> None:
        import subprocess

        self.port = free_port()
        self.log_path = Path(folder) / f"gunicorn-{self.port}.log"
        self.command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "gateway.wsgi",
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
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C is ours to handle
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok and len(self.worker_pids()) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready after {timeout:.0f} s:\n{self.tail()}")

    def worker_pids(self) -> list[int]:
        """The worker processes: children of the master we started."""
        return child_pids(self.process.pid)

    def tail(self, lines: int = 30) -> str:
        if not self.log.closed:
            self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # the group we started, by its id
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.log.close()
        print(f"[cleanup] gunicorn (pid {self.process.pid}, port {self.port}) stopped")


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
    (the load generator), the processes given (e.g. gunicorn workers), PostgreSQL (its
    processes alive at the end; a session that ended in between is missed) and the rest
    (anything else running on the machine)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.wall = time.perf_counter()
        self.machine = _machine_ticks()
        self.own = sum(os.times()[:2])
        self.procs = sum(process_cpu_seconds(p) for p in pids)
        self.postgres = processes_named("postgres")

    def stop(self) -> str:
        wall = time.perf_counter() - self.wall
        busy, _ = _machine_ticks()
        tick = os.sysconf("SC_CLK_TCK")
        machine = (busy - self.machine[0]) / tick
        cpus = os.cpu_count() or 1
        own = sum(os.times()[:2]) - self.own
        procs = sum(process_cpu_seconds(p) for p in self.pids) - self.procs
        postgres = sum(
            cpu - self.postgres.get(pid, 0.0) for pid, cpu in processes_named("postgres").items()
        )
        rest = machine - own - procs - postgres
        return (
            f"CPU over {wall:.1f} s, in cores: machine {machine / wall:.2f} of {cpus} busy; "
            f"load generator {own / wall:.2f}, server {procs / wall:.2f}, "
            f"PostgreSQL {postgres / wall:.2f}, other {rest / wall:.2f}"
        )
