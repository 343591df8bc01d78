"""A hung Redis (``kill -STOP``) delays no request by more than a second or so.

A stopped Redis still completes TCP connections in the kernel and then answers nothing, the
worst case for a client: only timeouts end the wait. The gateway runs as in production
(gunicorn from the Procfile) against a throwaway redis-server on a free port, which these
tests stop and continue at will; the machine's own Redis is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from devices import wake
from gateway import redis_guard
from gateway import services as accounts
from messaging.models import Message, WebhookEndpoint, WebhookEvent
from tests.test_background_integration import RedisServer, _database_url, _free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The promise is about 1 s per Redis call and 2 s for /readyz; the bounds leave room for a
# busy machine.
QUICK = 5.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


class PausableRedis(RedisServer):
    """The throwaway redis-server, which can also hang (SIGSTOP) and go on (SIGCONT)."""

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()  # a stopped process would not act on SIGTERM
        super().stop()


@contextmanager
def throwaway_redis(tmp_path: Path) -> Iterator[PausableRedis]:
    server = PausableRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, float]:
    """(status, parsed JSON body, seconds taken)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw or b"null"), time.monotonic() - started


class Gateway:
    """The web process of the Procfile (gunicorn), on the test database and a given Redis."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "web.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL"}
        }
        env.update(
            PATH=f"{BIN}{os.pathsep}{env['PATH']}",
            DATABASE_URL=_database_url(),
            REDIS_URL=redis_url,
            SECRET_KEY=django_settings.SECRET_KEY,  # the compatibility tokens derive from it
            GATEWAY_VAR_DIR=str(tmp_path / "var"),
            GATEWAY_PORT=str(self.port),
            WEB_WORKERS="1",
            WEB_THREADS="8",
            WEBHOOK_ALLOW_PRIVATE_TARGETS="1",
            PYTHONUNBUFFERED="1",
            # Not the default under $HOME, which other gunicorns on this machine share.
            GUNICORN_CMD_ARGS=f"--control-socket {tmp_path / 'gunicorn.ctl'}",
        )
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.supervisor", "--procfile", "Procfile", "web"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until_up(self) -> None:
        def up() -> bool:
            try:
                return self.get("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, 30, "web start")

    def get(self, path: str, token: str | None = None) -> tuple[int, Any, float]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return _request("GET", self.base + path, headers=headers)

    def post_json(self, path: str, payload: Any, token: str) -> tuple[int, Any, float]:
        return _request(
            "POST",
            self.base + path,
            json.dumps(payload).encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    def addsms(self, token: str, device_id: int, body: str, **extra: Any) -> tuple[int, Any, float]:
        form = {"token": token, "sendto": "+4915752982212", "body": body, "device_id": device_id}
        form.update(extra)
        return _request(
            "POST",
            self.base + "/getdata/addsms",
            urllib.parse.urlencode(form).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@contextmanager
def running_gateway(tmp_path: Path, redis_url: str) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path, redis_url)
    try:
        gateway.wait_until_up()
        yield gateway
    except BaseException:
        gateway.log.flush()
        print(gateway.log_path.read_text(errors="replace")[-8000:])
        raise
    finally:
        gateway.stop()


@pytest.fixture
def customer(paired) -> dict[str, Any]:
    device, device_token = paired()
    _, api_token = accounts.create_api_token(device.account, "hung redis")
    return {
        "device": device,
        "device_token": device_token,
        "compat_token": accounts.compat_token(device.account),
        "api_token": api_token,
    }


@pytest.mark.django_db(transaction=True)
def test_while_redis_hangs_sms_are_accepted_and_readyz_fails_fast_then_all_resumes(
    tmp_path, customer
):
    device = customer["device"]
    # A status webhook: cancelling a message then sends a Celery task after the commit.
    WebhookEndpoint.objects.create(account=device.account, kind="status", url="http://127.0.0.1:9/")
    with throwaway_redis(tmp_path) as server, running_gateway(tmp_path, server.url) as web:
        # Warm: the web process holds open connections to Redis when it hangs.
        assert web.get("/readyz")[0] == 200
        assert web.addsms(customer["compat_token"], device.pk, "before")[1]["error"] == 0
        server.pause()

        status, answer, took = web.addsms(customer["compat_token"], device.pk, "during the hang")
        assert status == 200 and answer["error"] == 0, answer
        assert took < QUICK, f"addsms took {took:.1f} s"
        assert Message.objects.filter(pk=answer["sms_id"], body="during the hang").exists()

        status, created, took = web.post_json(
            "/api/v1/messages",
            {"to": "+4915752982212", "body": "REST during the hang", "device_id": device.pk},
            customer["api_token"],
        )
        assert status == 201, created
        assert took < QUICK, f"POST /api/v1/messages took {took:.1f} s"
        message_id = created["messages"][0]["id"]

        status, cancelled, took = web.post_json(
            f"/api/v1/messages/{message_id}/cancel", {}, customer["api_token"]
        )
        assert status == 200 and cancelled["status"] == 20, cancelled
        assert took < QUICK, f"cancel (which enqueues a webhook task) took {took:.1f} s"
        assert WebhookEvent.objects.filter(state="pending").exists()  # the sweep's to send

        status, report, took = web.get("/readyz")
        assert status == 503 and report["status"] == "unavailable", report
        assert report["database"] == "ok" and report["broker"] != "ok"
        assert took < QUICK, f"/readyz took {took:.1f} s"

        # A burst does not pay a timeout per request: after one failure each process
        # leaves the hung server alone for a few seconds.
        started = time.monotonic()
        for i in range(30):
            status, answer, _ = web.addsms(customer["compat_token"], device.pk, f"burst {i}")
            assert status == 200 and answer["error"] == 0, answer
        burst = time.monotonic() - started
        assert burst < 15, f"30 addsms took {burst:.1f} s"
        assert Message.objects.filter(body__startswith="burst ").count() == 30

        server.resume()
        wait_for(lambda: web.get("/readyz")[0] == 200, 20, "/readyz ready again")
        # The doorbell rings again (once the pause after the failures is over).
        listener = redis.Redis.from_url(server.url, socket_timeout=5).pubsub()
        listener.subscribe(wake.channel(device.pk))
        listener.get_message(timeout=2)  # the subscribe confirmation

        def rung() -> bool:
            web.addsms(customer["compat_token"], device.pk, "after", urgent=1)
            message = listener.get_message(timeout=1)
            return message is not None and message["type"] == "message"

        wait_for(rung, 20, "a ring after Redis resumed")
        listener.close()
        # And the rate limit counts again (its counter lives in Redis).
        store = redis.Redis.from_url(server.url, socket_timeout=5)

        def counted() -> bool:
            web.get("/api/v1/messages", customer["api_token"])
            return any(b"ratelimit:" in key for key in store.scan_iter(count=1000))

        wait_for(counted, 20, "a rate limit counter after Redis resumed")
    log = web.log_path.read_text(errors="replace")
    # The publish that could not happen is logged, not raised.
    assert "could not enqueue messaging.tasks.deliver_webhook" in log
    assert "Internal Server Error" not in log


@pytest.mark.django_db(transaction=True)
def test_while_redis_hangs_a_phone_waiting_in_a_long_poll_still_gets_a_new_sms(tmp_path, customer):
    device = customer["device"]
    with throwaway_redis(tmp_path) as server, running_gateway(tmp_path, server.url) as web:
        server.pause()
        result: dict[str, Any] = {}

        def long_poll() -> None:
            status, answer, _ = web.post_json(
                "/api/device/v1/poll", {"wait": 20}, customer["device_token"]
            )
            result.update(status=status, answer=answer, at=time.monotonic())

        waiter = threading.Thread(target=long_poll)
        waiter.start()
        time.sleep(2)  # the phone is waiting (its doorbell could not subscribe)
        sent = time.monotonic()
        _, answer, _ = web.addsms(customer["compat_token"], device.pk, "OTP 4711", urgent=1)
        assert answer["error"] == 0, answer
        waiter.join(timeout=40)
        assert result["status"] == 200, result
        assert [m["id"] for m in result["answer"]["messages"]] == [answer["sms_id"]]
        # The poll looks at the database every second while the doorbell is out.
        took = result["at"] - sent
        assert took < QUICK, f"reached the phone {took:.1f} s after it was sent"


def test_after_a_timeout_a_redis_server_is_left_alone_for_a_few_seconds_then_tried_again(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(redis_guard, "RETRY_AFTER_SECONDS", 1.0)
    with throwaway_redis(tmp_path) as server:
        pool = redis_guard.GuardedConnectionPool.from_url(
            server.url, socket_connect_timeout=0.5, socket_timeout=0.5
        )
        client = redis.Redis(connection_pool=pool)
        assert client.ping()
        server.pause()
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.set("k", 1)
        assert time.monotonic() - started < 3
        started = time.monotonic()
        with pytest.raises(redis_guard.Unavailable):
            client.set("k", 1)  # not even tried
        assert time.monotonic() - started < 0.2
        server.resume()
        wait_for(lambda: _tried_again(client), 10, "the server tried again")
        pool.disconnect()


def _tried_again(client: redis.Redis) -> bool:
    try:
        return bool(client.set("k", 1))
    except redis_guard.Unavailable:
        return False


def test_a_long_poll_without_a_reachable_redis_checks_the_database_every_second(settings):
    # A port where nothing listens: every subscribe is refused at once.
    settings.REDIS_URL = f"redis://127.0.0.1:{_free_port()}/0"
    with wake.Doorbell(1) as bell:
        started = time.monotonic()
        assert bell.wait(5) is False
        waited = time.monotonic() - started
    # Neither at once (the poll loop would spin on the database) nor the whole wait (a new
    # SMS would wait for the phone's next poll).
    assert 0.8 <= waited < 3, waited
