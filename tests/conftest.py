"""Shared fixtures: small factories, and the rule that CI never skips for a missing service.

Tests marked ``postgres`` need real row locks and run only when DATABASE_URL points at
PostgreSQL; tests marked ``redis`` need REDIS_URL. With GATEWAY_REQUIRE_SERVICES=1 (set by
the CI run against PostgreSQL + Redis) a missing service fails the run instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn

import pytest
from django.conf import settings
from django.db import connection

REQUIRE_SERVICES = os.environ.get("GATEWAY_REQUIRE_SERVICES") == "1"


def _is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def _redis_error() -> str | None:
    if not settings.REDIS_URL:
        return "REDIS_URL is not set"
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at REDIS_URL is unreachable: {exc}"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    if not REQUIRE_SERVICES:
        return
    problems = []
    if not _is_postgres():
        problems.append("DATABASE_URL does not point at PostgreSQL")
    redis_error = _redis_error()
    if redis_error:
        problems.append(redis_error)
    if problems:
        pytest.exit("required services missing: " + "; ".join(problems), returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    postgres = _is_postgres()
    redis_error = _redis_error()
    for item in items:
        if "postgres" in item.keywords and not postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL)"))
        if "redis" in item.keywords and redis_error:
            item.add_marker(pytest.mark.skip(reason=redis_error))


@pytest.fixture(autouse=True)
def _plain_static_storage(settings: Any) -> None:
    # In-process tests render admin pages without a collectstatic manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The real hasher is slow on purpose; tests hash hundreds of passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_account(db: None) -> Callable[..., Any]:
    from gateway.models import Account

    counter = iter(range(1, 10_000))

    def make(**overrides: Any) -> Account:
        overrides.setdefault("name", f"account-{next(counter)}")
        return Account.objects.create(**overrides)

    return make


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    from gateway.models import User

    counter = iter(range(1, 10_000))

    def make(email: str | None = None, password: str = "correct horse battery", **extra: Any):
        return User.objects.create_user(
            email or f"user{next(counter)}@example.com", password, **extra
        )

    return make


@pytest.fixture
def account(make_account: Callable[..., Any]) -> Any:
    return make_account()


@pytest.fixture
def make_device(db: None) -> Callable[..., Any]:
    from devices.models import Device, SimSlot

    def make(account: Any, *, slots: tuple[int, ...] = (0,), **overrides: Any) -> Device:
        device = Device.objects.create(account=account, **overrides)
        SimSlot.objects.bulk_create(SimSlot(device=device, slot=s) for s in slots)
        return device

    return make


@pytest.fixture
def make_message(make_device: Callable[..., Any]) -> Callable[..., Any]:
    from messaging import services

    def make(account: Any, *, device: Any = None, **overrides: Any):
        from messaging.models import Message

        phone = overrides.pop("phone", "+4915752982212")
        body = overrides.pop("body", "Hello")
        device = device or make_device(account)
        request = services.OutgoingSms(device.pk, phone, body, **overrides)
        (message_id,) = services.submit(account, [request])
        return Message.objects.get(pk=message_id)

    return make


@pytest.fixture
def db_is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def paired(make_account, make_device):
    """A device of a fresh account, paired (it has a token), with SIM slots 0 and 1."""
    from devices import services
    from devices.models import Device

    def make(**overrides: Any):
        account = overrides.pop("account", None) or make_account()
        overrides.setdefault("imei", f"35824005{Device.objects.count():07d}")
        device = make_device(account, slots=overrides.pop("slots", (0, 1)), **overrides)
        paired_device, token = services.pair_with_login(
            account, services.DeviceDetails(imei=device.imei)
        )
        assert paired_device.pk == device.pk
        return paired_device, token

    return make


def purge_task_queues() -> None:
    """Empty the broker's task queues (the filesystem folder embedded, Redis otherwise) of
    what earlier tests queued through the app with no worker running: a test's fresh worker
    would work through all of it first, oldest first, and beat's sweeps queued behind would
    expire (a run is dropped once two more are due) before it got there."""
    from kombu import Queue

    from gateway.celery import app

    with app.connection_for_write() as connection:
        for name in ("celery", "webhooks"):
            Queue(name, channel=connection.default_channel).purge()


def missing_tool(why: str) -> NoReturn:
    """A program a test runs is not installed: skipped here, a failure where CI=true
    (scripts/test.sh installs the Debian packages CI needs)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI requires it (scripts/test.sh installs what Debian packages)")
    pytest.skip(why)
