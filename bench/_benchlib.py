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
