"""Login limits: one count for every way to present a password, atomic under parallel
attempts, still limiting while the cache is down; and the password hasher (Argon2id) that
re-hashes old PBKDF2 hashes on login.

The attempts run through the real views and services against the configured database and
cache (SQLite + the file cache embedded; PostgreSQL + Redis in the CI run). Password checks
are counted by wrapping the configured hasher's verify/encode, which still do the real work.
Tests that break the cache point it at a Redis they start themselves, or at a closed port.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import make_password
from django.core.cache import cache
from django.db import connection
from django.test import Client

from devices import services as devices
from gateway import counters, hashers, services
from gateway import settings as project_settings
from gateway.models import User

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
TOO_MANY_COMPAT = "Too many failed logins; try again in 15 minutes"
LIMIT = services.FAILURE_LIMIT


@pytest.fixture(autouse=True)
def _fresh_counters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # This process's fallback counters and its "cache is down" mark start empty and are put
    # back afterwards, so a test that breaks the cache leaves nothing behind for others.
    monkeypatch.setattr(counters, "_fallback", counters.Fallback())
    cache.clear()
    yield
    # A test that pointed the cache elsewhere may still have it so here (the settings
    # fixture restores it later): there is nothing to clear then.
    with contextlib.suppress(Exception):
        cache.clear()


@pytest.fixture
def real_hasher(settings: Any) -> None:
    """The project's configured hashers (tests/conftest.py swaps in MD5 for speed)."""
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS


class HashCounter:
    """Counts password hashes run by the configured hasher (verify for a known user, encode
    for an unknown one: Django hashes anyway so both take the same time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._lock = threading.Lock()
        cls = hashers.GatewayArgon2PasswordHasher
        for name in ("verify", "encode"):
            monkeypatch.setattr(cls, name, self._counted(getattr(cls, name)))

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(hasher: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.count += 1
            return method(hasher, *args, **kwargs)

        return counted


def gettoken(email: str, password: str, address: str = "10.0.0.1") -> dict[str, Any]:
    response = Client().post(
        "/getdata/gettoken", {"email": email, "pass": password}, REMOTE_ADDR=address
    )
    assert response.status_code == 200
    return json.loads(response.content)


def in_parallel(count: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run attempt(0..count-1) in as many threads, released together."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = attempt(index)
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_cache(port: int) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "KEY_PREFIX": "gateway",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


@pytest.fixture
def throwaway_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server of this test only (no persistence), on a free port."""
    import redis

    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, socket_connect_timeout=1).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port, process
    finally:
        process.kill()
        process.wait(timeout=10)


# --- Atomic under parallel attempts ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_passwords_for_one_account_run_at_most_the_limit_of_checks(
    real_hasher, make_user, monkeypatch
):
    make_user("victim@example.com", PASSWORD)
    hashes = HashCounter(monkeypatch)
    answers = in_parallel(
        30, lambda i: gettoken("victim@example.com", "wrong", address=f"10.1.0.{i}")
    )
    messages = [a["message"] for a in answers]
    assert hashes.count <= LIMIT
    assert messages.count("Login or password incorrect") == hashes.count
    assert messages.count(TOO_MANY_COMPAT) == 30 - hashes.count
    # The limit is reached: even the right password is refused now, without a hash.
    before = hashes.count
    assert gettoken("victim@example.com", PASSWORD, address="10.1.1.1")["message"] == (
        TOO_MANY_COMPAT
    )
    assert hashes.count == before


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_logins_from_one_address_run_at_most_the_limit_of_checks(
    real_hasher, monkeypatch
):
    hashes = HashCounter(monkeypatch)
    answers = in_parallel(30, lambda i: gettoken(f"guess{i}@example.com", "x", "10.2.0.1"))
    assert hashes.count <= LIMIT
    assert [a["message"] for a in answers].count(TOO_MANY_COMPAT) == 30 - hashes.count


@pytest.mark.django_db(transaction=True)
def test_parallel_pairing_code_guesses_check_at_most_the_limit_of_codes(account):
    def guess(i: int) -> int:
        response = Client().post(
            "/api/device/v1/pair", {"code": f"AAAA-{i:04d}"}, content_type="application/json"
        )
        return response.status_code

    statuses = in_parallel(30, guess)
    assert statuses.count(403) <= LIMIT  # codes looked up and refused
    assert statuses.count(429) == 30 - statuses.count(403)
    _, code = devices.create_pairing_code(account)
    response = Client().post("/api/device/v1/pair", {"code": code}, content_type="application/json")
    assert response.status_code == 429


def test_the_file_cache_counts_exactly_across_processes(tmp_path):
    # The embedded default's cache is a folder shared by every process of the machine;
    # four processes incrementing one counter at once must each get distinct values.
    script = (
        "import django, json, sys; django.setup()\n"
        "from gateway import counters\n"
        "c = counters.CacheCounters()\n"
        "print(json.dumps([c.increment(['fail:test:race'], 600)[0] for _ in range(40)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(DJANGO_SETTINGS_MODULE="gateway.settings", GATEWAY_VAR_DIR=str(tmp_path))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    values = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        values += json.loads(out)
    assert sorted(values) == list(range(1, 161))


# --- What counts, and what is given back ----------------------------------------------------


@pytest.mark.django_db
def test_a_successful_login_does_not_use_up_the_address_allowance(make_user):
    make_user("a@example.com", PASSWORD)
    for i in range(LIMIT - 1):
        assert gettoken(f"nobody{i}@example.com", "x")["error"] == 1
    for _ in range(3):
        assert gettoken("a@example.com", PASSWORD)["error"] == 0
    assert gettoken("nobody@example.com", "x")["message"] == "Login or password incorrect"
    assert gettoken("a@example.com", PASSWORD)["message"] == TOO_MANY_COMPAT


@pytest.mark.django_db
def test_a_successful_login_clears_its_account_count(make_user):
    make_user("a@example.com", PASSWORD)
    for i in range(LIMIT - 1):
        gettoken("a@example.com", "wrong", address=f"10.3.0.{i}")
    assert gettoken("a@example.com", PASSWORD, address="10.3.1.1")["error"] == 0
    for i in range(LIMIT - 1):
        assert gettoken("a@example.com", "wrong", address=f"10.3.2.{i}")["error"] == 1
    assert gettoken("a@example.com", PASSWORD, address="10.3.3.1")["error"] == 0


@pytest.mark.django_db
def test_refused_attempts_are_not_counted(make_user):
    make_user("a@example.com", PASSWORD)
    for i in range(LIMIT):
        gettoken("a@example.com", "wrong", address=f"10.4.0.{i}")
    limiter = services.FailureLimiter("login", "email:a@example.com", "ip:10.4.1.1")

    def counted() -> list[int]:
        counts, _ = counters.run(lambda store: store.get(limiter.current + limiter.previous))
        return [
            counts.get(now, 0) + counts.get(before, 0)
            for now, before in zip(limiter.current, limiter.previous, strict=True)
        ]

    assert counted() == [LIMIT, 0]
    for _ in range(5):
        assert gettoken("a@example.com", "wrong", address="10.4.1.1")["message"] == TOO_MANY_COMPAT
    assert counted() == [LIMIT, 0]


# --- The admin counts with the APIs ---------------------------------------------------------


def admin_login(client: Client, email: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": email, "password": password},
        REMOTE_ADDR=address,
    )


@pytest.mark.django_db
def test_the_admin_login_is_refused_after_the_limit_even_with_the_right_password(make_user):
    make_user("ops@example.com", PASSWORD, is_staff=True)
    client = Client()
    for i in range(LIMIT):
        page = admin_login(client, "ops@example.com", "wrong", address=f"10.5.0.{i}")
        assert page.status_code == 200 and b"Please enter the correct email" in page.content
    page = admin_login(client, "ops@example.com", PASSWORD, address="10.5.1.1")
    assert page.status_code == 200
    assert b"Too many failed logins for this account or from this address" in page.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_wrong_admin_and_gettoken_passwords_count_together(make_user):
    make_user("ops@example.com", PASSWORD, is_staff=True)
    for i in range(LIMIT // 2):
        admin_login(Client(), "ops@example.com", "wrong", address=f"10.6.0.{i}")
        gettoken("ops@example.com", "wrong", address=f"10.6.1.{i}")
    assert gettoken("ops@example.com", PASSWORD, address="10.6.2.1")["message"] == TOO_MANY_COMPAT
    page = admin_login(Client(), "ops@example.com", PASSWORD, address="10.6.2.2")
    assert b"Too many failed logins" in page.content


@pytest.mark.django_db
def test_the_admin_login_with_the_right_password_signs_in(make_user):
    user = make_user("ops@example.com", PASSWORD, is_staff=True)
    client = Client()
    response = admin_login(client, "OPS@example.com", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.session["_auth_user_id"] == str(user.pk)


@pytest.mark.django_db
def test_the_admin_password_change_counts_wrong_current_passwords(make_user):
    user = make_user("ops@example.com", PASSWORD, is_staff=True)
    client = Client()
    client.force_login(user)
    change = {"new_password1": "a brand new phrase 42", "new_password2": "a brand new phrase 42"}
    for _ in range(LIMIT):
        page = client.post("/admin/password_change/", {"old_password": "wrong", **change})
        assert b"Your old password was entered incorrectly" in page.content
    page = client.post("/admin/password_change/", {"old_password": PASSWORD, **change})
    assert b"Too many failed logins" in page.content
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert gettoken("ops@example.com", PASSWORD, address="10.7.0.1")["message"] == TOO_MANY_COMPAT


@pytest.mark.django_db
def test_the_admin_password_change_works_with_the_right_current_password(make_user):
    user = make_user("ops@example.com", PASSWORD, is_staff=True)
    client = Client()
    client.force_login(user)
    response = client.post(
        "/admin/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": "a brand new phrase 42",
            "new_password2": "a brand new phrase 42",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/admin/password_change/done/"
    user.refresh_from_db()
    assert user.check_password("a brand new phrase 42")


# --- The cache is down ----------------------------------------------------------------------


@pytest.mark.django_db
def test_limits_hold_when_redis_dies_and_right_passwords_still_work(
    settings, make_user, throwaway_redis
):
    port, redis_process = throwaway_redis
    settings.CACHES = redis_cache(port)
    make_user("a@example.com", PASSWORD)
    make_user("b@example.com", PASSWORD)
    for i in range(3):
        gettoken("a@example.com", "wrong", address=f"10.8.0.{i}")
    limiter = services.FailureLimiter("login", "email:a@example.com")
    assert sum(cache.get_many(limiter.current + limiter.previous).values()) == 3  # in Redis

    redis_process.kill()
    redis_process.wait(timeout=10)
    started = time.monotonic()
    for i in range(LIMIT):
        assert gettoken("a@example.com", "wrong", address=f"10.8.1.{i}")["error"] == 1
    assert gettoken("a@example.com", PASSWORD, address="10.8.2.1")["message"] == TOO_MANY_COMPAT
    # Another account is not locked, and its right password works without Redis.
    assert gettoken("b@example.com", PASSWORD, address="10.8.2.2")["error"] == 0
    assert time.monotonic() - started < 20


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_passwords_are_limited_while_the_cache_is_unreachable(
    settings, real_hasher, make_user, monkeypatch
):
    settings.CACHES = redis_cache(free_port())  # nothing listens there
    make_user("victim@example.com", PASSWORD)
    hashes = HashCounter(monkeypatch)
    answers = in_parallel(
        30, lambda i: gettoken("victim@example.com", "wrong", address=f"10.9.0.{i}")
    )
    assert hashes.count <= LIMIT
    assert [a["message"] for a in answers].count(TOO_MANY_COMPAT) == 30 - hashes.count
    assert gettoken("victim@example.com", PASSWORD)["message"] == TOO_MANY_COMPAT


@pytest.mark.django_db
def test_a_cache_that_never_answers_costs_one_timeout_not_one_per_login(settings, make_user):
    # Accepts connections and never replies, like a Redis behind a dead network path.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        settings.CACHES = redis_cache(silent.getsockname()[1])  # 1 s socket timeout
        make_user("a@example.com", PASSWORD)
        started = time.monotonic()
        for i in range(LIMIT):
            assert gettoken("a@example.com", "wrong", address=f"10.10.0.{i}")["error"] == 1
        assert gettoken("a@example.com", PASSWORD)["message"] == TOO_MANY_COMPAT
        assert gettoken("b@example.com", "x", address="10.10.1.1")["error"] == 1
        # Without the fallback period each of these 12 logins would wait out several
        # 1 s timeouts (more than 24 s in all).
        assert time.monotonic() - started < 10
    finally:
        silent.close()


# --- The hasher -----------------------------------------------------------------------------


def test_passwords_are_hashed_with_argon2id_at_the_tuned_parameters(real_hasher):
    encoded = make_password(PASSWORD)
    assert encoded.startswith("argon2$argon2id$v=19$m=32768,t=3,p=1$")


@pytest.mark.django_db
def test_a_pbkdf2_hash_is_upgraded_to_argon2_by_a_successful_gettoken(real_hasher, make_user):
    user = make_user("old@example.com", PASSWORD)
    old_hash = make_password(PASSWORD, hasher="pbkdf2_sha256")
    User.objects.filter(pk=user.pk).update(password=old_hash)

    assert gettoken("old@example.com", "wrong")["error"] == 1
    user.refresh_from_db()
    assert user.password == old_hash  # a wrong password changes nothing

    assert gettoken("old@example.com", PASSWORD)["error"] == 0
    user.refresh_from_db()
    assert user.password.startswith("argon2$argon2id$v=19$m=32768,t=3,p=1$")
    assert gettoken("old@example.com", PASSWORD)["error"] == 0


@pytest.mark.django_db
def test_an_argon2_hash_with_other_parameters_is_rehashed_at_login(real_hasher, make_user):
    from django.contrib.auth.hashers import Argon2PasswordHasher

    user = make_user("old@example.com", PASSWORD)
    User.objects.filter(pk=user.pk).update(
        password=Argon2PasswordHasher().encode(PASSWORD, "s" * 22)
    )
    assert gettoken("old@example.com", PASSWORD)["error"] == 0
    user.refresh_from_db()
    assert user.password.startswith("argon2$argon2id$v=19$m=32768,t=3,p=1$")


@pytest.mark.django_db
def test_a_login_presented_again_is_accepted_without_the_hash_while_it_holds(
    make_user, monkeypatch
):
    user = make_user("basic@example.com", PASSWORD)
    checks: list[str] = []
    real = services.check_password_login

    def counted(email: str, password: str) -> Any:
        checks.append(password)
        return real(email, password)

    monkeypatch.setattr(services, "check_password_login", counted)
    for _ in range(3):
        assert services.login_with_limits("Basic@example.com", PASSWORD, "10.9.0.1") == user
    assert len(checks) == 1  # then remembered
    assert services.login_with_limits("basic@example.com", "wrong", "10.9.0.1") is None
    assert len(checks) == 2  # a wrong password is always checked, and never remembered

    # A password change ends it at once: the old password is checked again, and fails.
    user.set_password("a brand new passphrase")
    user.save()
    assert services.login_with_limits("basic@example.com", PASSWORD, "10.9.0.1") is None
    assert len(checks) == 3
    assert services.login_with_limits("basic@example.com", "a brand new passphrase", "10.9.0.1")
    # So does deactivating the user.
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert (
        services.login_with_limits("basic@example.com", "a brand new passphrase", "10.9.0.1")
        is None
    )

    # And a blocked address stays blocked for a remembered login too.
    other = make_user("other-basic@example.com", PASSWORD)
    assert services.login_with_limits("other-basic@example.com", PASSWORD, "10.9.0.2") == other
    for i in range(LIMIT):
        with contextlib.suppress(services.TooManyFailures):
            services.login_with_limits(f"nobody{i}@example.com", "x", "10.9.0.2")
    with pytest.raises(services.TooManyFailures):
        services.login_with_limits("other-basic@example.com", PASSWORD, "10.9.0.2")
