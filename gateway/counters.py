"""The counters behind the login limits (``gateway.services.FailureLimiter``).

They live in the cache, so every web process shares them: Redis in production, a folder in
the embedded default. An increment is atomic on both (Redis's INCR; the folder's
read-and-rewrite is serialised by a lock file), so the value it returns tells the caller
exactly how many attempts came before it, however many run in parallel.

While the cache is unreachable the counters are kept in the process instead (thread-safe,
bounded in size), so limits keep holding, per process, rather than being dropped; the cache
is tried again RETRY_CACHE_AFTER_SECONDS later. Counts kept in a process are not carried
over to the cache when it is back.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.memcached import BaseMemcachedCache
from django.core.cache.backends.redis import RedisCache

log = logging.getLogger(__name__)

# After a cache error the counters stay in the process this long before the cache is tried
# again: an outage costs each process one failed cache call per period, not one per login
# (a Redis that times out instead of refusing would otherwise add its timeout to each).
RETRY_CACHE_AFTER_SECONDS = 10.0
# Counters one process keeps during an outage, at most; each lives only as long as its
# timeout. Only failed attempts create counters, and each of those ran a password hash.
MAX_LOCAL_COUNTERS = 100_000
LOCK_FILE = "failure-counters.lock"

T = TypeVar("T")


class CacheCounters:
    """Counters in the default cache, each increment atomic across the machine's processes.

    Redis (INCR), memcached (incr) and the per-process local-memory cache are atomic as they
    are. Other backends implement incr as a read and a rewrite; for them every change is
    made under a lock: one per process, and a lock file in the cache's folder for all
    processes of the machine (the file cache is one machine's by nature).
    """

    _thread_lock = threading.Lock()

    def increment(self, keys: list[str], timeout: int) -> list[int]:
        """Add one to each key (created with ``timeout``) and return the new values."""
        with self._serialised() as backend:
            return [self._increment(backend, key, timeout) for key in keys]

    @staticmethod
    def _increment(backend: BaseCache, key: str, timeout: int) -> int:
        for _ in range(3):
            backend.add(key, 0, timeout=timeout)
            try:
                return int(backend.incr(key))
            except ValueError:  # expired between add and incr: add it again
                continue
        raise RuntimeError(f"the cache ({type(backend).__name__}) does not keep counters")

    def get(self, keys: list[str]) -> dict[str, int]:
        backend = caches[DEFAULT_CACHE_ALIAS]
        return {key: int(value) for key, value in backend.get_many(keys).items()}

    def decrement(self, keys: list[str]) -> None:
        with self._serialised() as backend:
            for key in keys:
                # A key that expired meanwhile has nothing left to give back.
                with contextlib.suppress(ValueError):
                    backend.decr(key)

    def delete(self, keys: list[str]) -> None:
        caches[DEFAULT_CACHE_ALIAS].delete_many(keys)

    @contextlib.contextmanager
    def _serialised(self) -> Iterator[BaseCache]:
        backend = caches[DEFAULT_CACHE_ALIAS]
        if isinstance(backend, RedisCache | BaseMemcachedCache | LocMemCache):
            yield backend
            return
        folder = getattr(backend, "_dir", None)
        with self._thread_lock:
            if folder is None:
                yield backend
                return
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, LOCK_FILE), "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
                yield backend


class LocalCounters:
    """Counters of this process only, for while the cache is unreachable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)

    def increment(self, keys: list[str], timeout: int) -> list[int]:
        now = time.monotonic()
        out = []
        with self._lock:
            for key in keys:
                count, expires_at = self._values.get(key, (0, now + timeout))
                if expires_at <= now:
                    count, expires_at = 0, now + timeout
                self._values[key] = (count + 1, expires_at)
                out.append(count + 1)
            self._bound(now)
        return out

    def get(self, keys: list[str]) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            found = ((key, self._values.get(key)) for key in keys)
            return {key: entry[0] for key, entry in found if entry and entry[1] > now}

    def decrement(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                entry = self._values.get(key)
                if entry is None:
                    continue
                if entry[0] <= 1:
                    del self._values[key]
                else:
                    self._values[key] = (entry[0] - 1, entry[1])

    def delete(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def __len__(self) -> int:
        return len(self._values)

    def _bound(self, now: float) -> None:
        if len(self._values) <= MAX_LOCAL_COUNTERS:
            return
        self._values = {k: v for k, v in self._values.items() if v[1] > now}
        while len(self._values) > MAX_LOCAL_COUNTERS:  # the oldest counters go first
            del self._values[next(iter(self._values))]


Counters = CacheCounters | LocalCounters


class Fallback:
    """This process's counters, and until when the cache is not tried."""

    def __init__(self) -> None:
        self.local = LocalCounters()
        self.retry_cache_at = 0.0

    def cache_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now >= self.retry_cache_at:
            log.warning(
                "login failure counters kept in this process for %.0f s: cache unavailable: %s",
                RETRY_CACHE_AFTER_SECONDS,
                exc,
            )
        self.retry_cache_at = now + RETRY_CACHE_AFTER_SECONDS


_cache_counters = CacheCounters()
_fallback = Fallback()


def run(operation: Callable[[Counters], T], counters: Counters | None = None) -> tuple[T, Counters]:
    """Run ``operation`` on the shared counters, or on this process's while the cache is
    unreachable; returns its result and the counters it ran on.

    ``counters`` pins the operation to the counters an earlier one used (giving back a
    reservation where it was made). Never raises for an unreachable cache: a cache error
    switches to this process's counters and runs the operation there.
    """
    fallback = _fallback
    if counters is None:
        use_cache = time.monotonic() >= fallback.retry_cache_at
        counters = _cache_counters if use_cache else fallback.local
    if isinstance(counters, LocalCounters):
        return operation(counters), counters
    try:
        return operation(counters), counters
    except Exception as exc:  # the cache (Redis) is down, or refuses
        fallback.cache_failed(exc)
        return operation(fallback.local), fallback.local
