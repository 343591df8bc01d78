"""The gateway behind PgBouncer in transaction mode (docs/scaling.md), against a real one.

A throwaway PgBouncer (Debian's package, run in the foreground on a free port) pools the
test database in ``pool_mode = transaction`` with two server connections for all its clients.
Every process of the gateway (gunicorn with two workers of eight threads, a Celery worker
and a beat) connects through it, with ``DB_TRANSACTION_POOLER=1`` and persistent
connections (DB_CONN_MAX_AGE at its default):

- The flow: SMS created through the three public APIs while phones of both protocols take
  and report them; a newsletter fanned out by beat; webhook events delivered; the fleet
  problem sweep (a transaction-scoped advisory lock) opening and resolving a problem; the
  admin's CSV exports (a queryset's ``.iterator()``). Then every SMS is
  delivered and sent once, the newsletter is done, every event delivered, the server
  connections really were shared, and no process logged a database error.
- The control: the same ``.iterator()`` through this PgBouncer fails across transactions
  with server-side cursors (``DB_TRANSACTION_POOLER=0``) and works without them: the setting
  is what makes the difference, and the test above can fail.

PostgreSQL + Redis only. PgBouncer missing: skipped locally, a failure with CI=true.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from http import client as http_client
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

import tests.test_replicas as replicas
from contacts import services as contacts
from contacts.models import Contact, Newsletter
from devices import services as devices
from devices.models import Device
from messaging import webhooks
from messaging.models import Message, Problem, Status, WebhookEvent
from tests.conftest import missing_tool
from tests.messaging.test_webhooks import Receiver
from tests.test_background_integration import _database_url, _free_port, wait_for
from tests.test_replicas import (
    APIS,
    PASSWORD,
    AppPhone,
    OurPhone,
    Process,
    Sender,
    _keep_running,
    _phones,
    cluster,
    fresh_counters,  # noqa: F401 - a fixture
    http_call,
    phone_loop,
    server_user,
    stored_once,
)

ROOT = Path(__file__).resolve().parent.parent
POOL_SIZE = 2  # server connections per database/user pair: far fewer than the clients
PER_API = 6  # SMS each sender thread creates through each of the three APIs
SENDERS = 2
CONTACTS = 12

pytestmark = replicas.pytestmark  # slow, transactional, PostgreSQL + Redis only

# What a process of the gateway logs when the pooler breaks it (an exception's traceback,
# psycopg's and Django's errors, PgBouncer's own complaints as a client sees them).
DATABASE_TROUBLE = re.compile(
    r"Traceback|DatabaseError|OperationalError|InterfaceError|ProgrammingError|"
    r"InvalidCursorName|cursor \S+ does not exist|prepared statement|pooler error|"
    r"server closed the connection|query_wait_timeout",
    re.IGNORECASE,
)


def _pgbouncer_binary() -> str | None:
    """Debian installs it in /usr/sbin, which a non-root PATH often lacks."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    sbin = Path("/usr/sbin/pgbouncer")
    return str(sbin) if os.access(sbin, os.X_OK) else None


class PgBouncer:
    """One PgBouncer in transaction mode in front of the test database, in the foreground."""

    def __init__(self, binary: str, folder: Path) -> None:
        db = connection.settings_dict
        self.database = db["NAME"]
        self.port = _free_port()
        self.log = folder / "pgbouncer.log"
        config = folder / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            # auth_type = any: every client logs in to the server as this user.
            f"{self.database} = host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} "
            f"dbname={self.database} user={db['USER'] or 'postgres'}\n"
            "\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            "unix_socket_dir =\n"  # no socket in a shared folder
            "auth_type = any\n"
            "admin_users = postgres\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {POOL_SIZE}\n"
            "min_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 500\n"
            "logfile =\npidfile =\n"  # the log to stderr (our file), no pid file
            "log_connections = 0\nlog_disconnections = 0\n"
        )
        command = [binary]
        if os.geteuid() == 0:
            # "PgBouncer should not run as root": it reads its configuration, then changes
            # to this user (the configuration may stay in a folder only root can read).
            command += ["-u", _unprivileged_user()]
        self.process = subprocess.Popen(
            [*command, str(config)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, 20, "pgbouncer start")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"pgbouncer exited:\n{self.log.read_text()[-3000:]}")
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def show(self, what: str) -> list[dict[str, Any]]:
        """SHOW CLIENTS / SERVERS / POOLS ... on the admin console, as dicts."""
        admin = f"postgres://postgres@127.0.0.1:{self.port}/pgbouncer"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # a fast exit: closes every connection
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise AssertionError("no unprivileged user (postgres, nobody) to run pgbouncer as")


@pytest.fixture
def pgbouncer(tmp_path: Path, transactional_db: None) -> Iterator[PgBouncer]:
    binary = _pgbouncer_binary()
    if binary is None:
        missing_tool("pgbouncer is not installed")
    folder = tmp_path / "pgbouncer"
    folder.mkdir()
    bouncer = PgBouncer(binary, folder)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def through_pgbouncer(pgbouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch) -> PgBouncer:
    """Every process the replica helpers start connects through the PgBouncer, as a
    deployment behind one is configured (persistent connections: the default age)."""
    # Process takes the database from the module's _database_url() and the rest from
    # os.environ: both are pointed here for this test only.
    monkeypatch.setattr(replicas, "_database_url", lambda: pgbouncer.url)
    monkeypatch.setenv("DB_TRANSACTION_POOLER", "1")
    monkeypatch.delenv("DB_CONN_MAX_AGE", raising=False)
    return pgbouncer


class AdminSession:
    """A browser's admin session over plain HTTP, its cookies kept by hand.

    No page is rendered: a web process serves the admin's pages with the collectstatic
    manifest, which a test does not build into the checkout. The CSRF cookie is one of our
    own choosing (Django's check compares the form's token with the cookie's secret)."""

    def __init__(self, port: int) -> None:
        self.port = port
        alphabet = string.ascii_letters + string.digits
        self.cookies = {"csrftoken": "".join(secrets.choice(alphabet) for _ in range(32))}

    def post(self, path: str, form: dict[str, Any]) -> tuple[int, str, bytes]:
        """(status, Content-Type, body)."""
        conn = http_client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {
            "Host": "127.0.0.1",
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        data = urlencode({**form, "csrfmiddlewaretoken": self.cookies["csrftoken"]}, True)
        try:
            conn.request("POST", path, data, headers)
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
        for header in answer.headers.get_all("Set-Cookie") or ():
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return answer.status, answer.headers.get("Content-Type", ""), body

    def login(self, email: str, password: str) -> None:
        status, _, body = self.post(
            "/admin/login/?next=/admin/", {"username": email, "password": password}
        )
        assert status == 302 and "sessionid" in self.cookies, (status, body[-2000:])


def _admin_exports(port: int, email: str, contact_ids: list[int], tag_id: int) -> None:
    """The admin's CSV exports of contacts and of a tag's members: each iterates a
    queryset (.iterator()) outside a transaction."""
    admin = AdminSession(port)
    admin.login(email, PASSWORD)
    exports = [
        ("/admin/contacts/contact/", "export_csv", contact_ids),
        ("/admin/contacts/tag/", "export_members", [tag_id]),
    ]
    for changelist, action, ids in exports:
        form = {"action": action, "_selected_action": ids, "index": 0}
        status, kind, body = admin.post(changelist, form)
        assert status == 200 and kind.startswith("text/csv"), (action, status, body[-2000:])
        assert body.count(b"+4915711") == len(contact_ids), body


def _sessions(bouncer: PgBouncer) -> tuple[list[dict[str, Any]], set[int]]:
    """PgBouncer's server connections to the test database, and the test database's
    sessions that are not theirs (this process's own connection aside). PostgreSQL is asked
    first: a session opened in between is PgBouncer's, and in its list."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            [bouncer.database],
        )
        sessions = {pid for (pid,) in cursor.fetchall()}
    servers = [s for s in bouncer.show("SERVERS") if s["database"] == bouncer.database]
    return servers, sessions - {s["remote_pid"] for s in servers}


def _process_logs(processes: list[Process]) -> dict[str, str]:
    return {p.name: p.log.read_text(errors="replace") for p in processes}


@pytest.mark.usefixtures("fresh_counters")
def test_the_gateway_works_behind_pgbouncer_in_transaction_mode(
    tmp_path, make_user, settings, through_pgbouncer
):
    bouncer = through_pgbouncer
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    user = server_user(make_user, "pgbouncer@example.com", is_staff=True)
    account = user.account
    our_phones, app_phones, device_ids = _phones(account, ours=2, apps=2)
    # A phone silent for an hour: what is sent to it makes the problem sweep open a
    # device_silent problem, which it resolves once the phone is back and has sent it.
    silent_device, silent_token = devices.pair_with_login(
        account, devices.DeviceDetails(title="silent", imei="350000000008888")
    )
    Device.objects.filter(pk=silent_device.pk).update(
        segments_per_minute=1000, batch_size=50, delay_between_sms=None,
        last_seen_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    silent_phone = OurPhone(silent_token)
    creates = Sender(user)
    receiver = Receiver()
    status_hooks = webhooks.add_endpoint(account, "status", receiver.url)
    problem_hooks = webhooks.add_endpoint(account, "problem", receiver.url)
    tag = contacts.save_tag(account, "customers")
    contact_ids = [
        contacts.save_contact(account, f"+4915711{i:06d}", tag_ids=[tag.pk]).pk
        for i in range(CONTACTS)
    ]
    newsletter = contacts.create_newsletter(
        account, title="Pooled", device_id=device_ids[0], sim=0, body="news",
        tag_ids=[tag.pk], send_at=timezone.now() + timedelta(seconds=2),
    )  # fmt: skip
    accepted: list[tuple[str, Any]] = []
    refused: list[Any] = []
    stop_phones = threading.Event()
    peak = {"servers": 0, "clients": 0, "direct": 0}
    direct_before = len(_sessions(bouncer)[1])

    with cluster(tmp_path, webs=1, workers=1, beats=1) as nodes:
        web = nodes.webs[0].port

        def send(api: str, device: int, number: str) -> None:
            def call(*args: Any) -> tuple[int, Any]:
                return http_call(web, *args)

            status, answer, key = creates.send(call, api, device, number)
            if key is None:
                refused.append((api, status, answer))
            else:
                accepted.append((api, key))

        def sender(seed: int) -> Callable[[], None]:
            def run() -> None:
                for i in range(PER_API):
                    for j, api in enumerate(APIS):
                        device = device_ids[(seed + i + j) % len(device_ids)]
                        send(api, device, f"+49157{seed}{i:03d}{j:03d}")

            return run

        def sample() -> None:
            servers, direct = _sessions(bouncer)
            clients = [c for c in bouncer.show("CLIENTS") if c["database"] == bouncer.database]
            peak["servers"] = max(peak["servers"], len(servers))
            peak["clients"] = max(peak["clients"], len(clients))
            peak["direct"] = max(peak["direct"], len(direct))

        send("compat", silent_device.pk, "+4915799999999")
        senders = [threading.Thread(target=sender(seed)) for seed in range(SENDERS)]
        for thread in senders:
            thread.start()
        everyone: list[OurPhone | AppPhone] = [*our_phones, *app_phones]
        phones = [
            _keep_running(stop_phones, phone_loop(nodes, p), i) for i, p in enumerate(everyone)
        ]
        admin_error: list[BaseException] = []

        def admin() -> None:
            try:
                for _ in range(3):
                    _admin_exports(web, user.email, contact_ids, tag.pk)
            except BaseException as exc:  # reported below
                admin_error.append(exc)

        admin_thread = threading.Thread(target=admin)
        admin_thread.start()

        silent = Problem.objects.filter(device=silent_device, kind=Problem.Kind.DEVICE_SILENT)

        def opened() -> bool:
            sample()
            return silent.exists()

        wait_for(opened, 60, "the problem sweep opens the silent phone's problem")
        phones.append(_keep_running(stop_phones, phone_loop(nodes, silent_phone), 99))
        for thread in [*senders, admin_thread]:
            thread.join(60)
        assert not admin_error, admin_error
        assert not refused, refused

        outgoing = Message.objects.filter(account=account).exclude(status=Status.INCOMING)

        def drained() -> bool:
            sample()
            return (
                not outgoing.exclude(status=Status.DELIVERED).exists()
                and Newsletter.objects.get(pk=newsletter.pk).state == Newsletter.State.DONE
                and silent.filter(resolved_at__isnull=False).exists()
            )

        wait_for(drained, 90, "every SMS delivered, the newsletter done, the problem resolved")
        stop_phones.set()
        for thread in phones:
            thread.join(30)
            assert not thread.errors, thread.errors  # type: ignore[attr-defined]
        events = WebhookEvent.objects.filter(endpoint__in=[status_hooks, problem_hooks])

        def delivered() -> bool:
            sample()
            return not events.exclude(state=WebhookEvent.State.DELIVERED).exists()

        wait_for(delivered, 60, "every webhook event delivered")
        stats = {row["database"]: row for row in bouncer.show("STATS")}[bouncer.database]
        processes = nodes.everyone()
    logs = _process_logs(processes)
    receiver.close()
    bouncer.stop()
    pgbouncer_log = bouncer.log.read_text(errors="replace")

    # Every SMS stored is one accepted (or the silent phone's, or the newsletter's), sent
    # once by one phone, and delivered.
    assert len(accepted) == 3 * PER_API * SENDERS + 1
    sent: Counter[int] = Counter()
    for phone in [*everyone, silent_phone]:
        sent.update(phone.sent)
    assert set(sent.values()) == {1}, sent
    stored = set(outgoing.values_list("id", flat=True))
    assert set(sent) == stored
    assert outgoing.filter(newsletter=newsletter).count() == CONTACTS
    assert outgoing.filter(newsletter__isnull=True).count() == len(accepted)
    assert set(outgoing.values_list("status", flat=True)) == {Status.DELIVERED}
    stored_once(outgoing, accepted)
    # The sweep opened the problem once and resolved it; both were announced.
    assert silent.count() == 1 and silent.get().resolved_at is not None
    problem_events = events.filter(endpoint=problem_hooks)
    assert problem_events.count() >= 2
    # Every event delivered, once each (nothing was killed).
    per_event = [item["headers"]["X-Webhook-Id"] for item in receiver.received]
    assert len(per_event) == len(set(per_event)) == events.count() > CONTACTS

    # The pooling was real: many clients, never more server connections than the pool,
    # and nothing reached PostgreSQL past PgBouncer (no more sessions of the test database
    # outside PgBouncer's than before the processes started: this process's own threads).
    assert peak["clients"] > 2 * POOL_SIZE, peak
    assert 0 < peak["servers"] <= POOL_SIZE and peak["direct"] <= direct_before, peak
    assert stats["total_xact_count"] > 100, stats
    print(f"pgbouncer: peak {peak}, stats {stats}")

    # No process met a database error, and PgBouncer reported none to a client.
    for name, text in logs.items():
        assert not DATABASE_TROUBLE.search(text), f"{name}:\n{text[-5000:]}"
    assert not re.search(r"\b(ERROR|WARNING)\b", pgbouncer_log), pgbouncer_log[-5000:]


# A Django process iterating a queryset (chunks of 2) while another client holds a
# transaction open: PgBouncer hands that client the server connection the iteration's
# cursor was declared on (it reuses the most recently released one first), so the next
# chunk is fetched on another server connection.
ITERATE = """
import sys

import django

django.setup()
import psycopg

from contacts.models import Contact

rows = Contact.objects.order_by("pk").values_list("phone", flat=True).iterator(chunk_size=2)
seen = [next(rows)]
with psycopg.connect(sys.argv[1]) as other:
    other.execute("SELECT 1")  # a transaction: it keeps its server connection
    seen.extend(rows)
    other.rollback()
print("rows", len(seen))
"""


@pytest.mark.parametrize(
    ("through", "pooler", "works"),
    [("pgbouncer", "0", False), ("pgbouncer", "1", True), ("postgresql", "0", True)],
    ids=["pgbouncer-server-side-cursors", "pgbouncer-transaction-pooler", "direct"],
)
def test_server_side_cursors_break_behind_pgbouncer_and_the_setting_avoids_them(
    tmp_path, make_account, pgbouncer, through, pooler, works
):
    """Through PgBouncer a named cursor (declared WITH HOLD: Django is outside a
    transaction) is gone on the server connection the next FETCH runs on; without
    server-side cursors (DB_TRANSACTION_POOLER=1) the iteration works, as it does with them
    on a direct connection."""
    account = make_account()
    for i in range(6):
        contacts.save_contact(account, f"+4915722{i:06d}")
    assert Contact.objects.count() == 6
    url = pgbouncer.url if through == "pgbouncer" else _database_url()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DB_TRANSACTION_POOLER": pooler,
        "REDIS_URL": django_settings.REDIS_URL,
        "SECRET_KEY": django_settings.SECRET_KEY,
        "GATEWAY_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DB_CONN_MAX_AGE", None)
    done = subprocess.run(
        [sys.executable, "-c", ITERATE, url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if works:
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["rows", "6"]
    else:
        assert done.returncode != 0, done.stdout
        assert re.search(r'cursor "_django_curs_\S+" does not exist', done.stderr), done.stderr
