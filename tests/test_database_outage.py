"""PostgreSQL stopped under a running server, then started again (gateway.outage).

The gateway runs as in production, a gunicorn web process and a uvicorn streams process,
on a throwaway PostgreSQL of its own (initdb into a temporary folder, a free port, trust
authentication), which the test stops (``pg_ctl stop -m fast``) and starts again; the
machine's own PostgreSQL is never touched. While it is down: SMS creation through the
three public APIs and a phone's poll and event stream answer 503 with Retry-After and
JSON in each API's shape, one WARNING line each and no traceback; /healthz stays 200 and
/readyz is 503. Once it is back the same calls succeed without a restart, and the listing
holds the SMS created before the outage and after it, none from during it.

The test brings its own server, so the suite's database adds nothing: it runs in the
embedded (SQLite) run only, which runs everywhere. PostgreSQL's server binaries missing:
skipped locally, a failure with CI=true.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

import tests.test_replicas as replicas
from tests.conftest import missing_tool
from tests.test_background_integration import _free_port, wait_for
from tests.test_replicas import Process
from tests.test_replicas import exchange as call

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "outage-password-1"
MESSAGE = "The database is not reachable; the request was not completed. Retry shortly."

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        connection.vendor == "postgresql",
        reason="runs in the embedded run: it brings its own PostgreSQL",
    ),
]


def _server_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: the newest of Debian's /usr/lib/postgresql/*/bin,
    else the one on PATH."""
    debian = sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda folder: [int(n) for n in re.findall(r"\d+", folder.parent.name)],
    )
    if debian:
        return debian[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class ThrowawayPostgres:
    """One PostgreSQL server in its own folder (data, socket, log) on a free port."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = _free_port()
        self.running = False
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            # initdb and the server refuse to run as root: they run as the postgres user,
            # which owns the folder (made outside pytest's tmp_path, which only root may
            # enter).
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale", "C", "--no-sync", "--no-instructions")  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/gateway"

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_owner, str(self.binaries / program), *args],
            cwd=self.folder, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            server_log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(
                f"{program} {' '.join(args)} failed:\n{done.stdout.decode()}{done.stderr.decode()}"
                f"{server_log}"
            )

    def start(self) -> None:
        # Its socket in its own folder (-k), TCP on loopback only; fsync off: a throwaway.
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", options)  # fmt: skip
        self.running = True

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
        self.running = False

    def create_database(self) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "gateway")

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    binaries = _server_binaries()
    if binaries is None:
        missing_tool("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    server = ThrowawayPostgres(binaries)
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.remove()


def _manage(postgres: ThrowawayPostgres, folder: Path, *args: str) -> str:
    """``manage.py`` on the throwaway database, as the servers started below see it."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "CELERY_BROKER_URL"}}
    env.update(
        DATABASE_URL=postgres.url,
        GATEWAY_VAR_DIR=str(folder / "var"),
        SECRET_KEY=django_settings.SECRET_KEY,
        LOG_LEVEL="WARNING",
    )
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


SETUP = f"""
import json
from devices import services as devices
from gateway import services as accounts
user = accounts.create_account("outage@example.com", {PASSWORD!r}, name="outage")
device, device_token = devices.pair_with_login(
    user.account, devices.DeviceDetails(title="ours", imei="350000000000001")
)
_, api_token = accounts.create_api_token(user.account, "outage")
print(json.dumps({{
    "device": device.pk, "device_token": device_token, "api_token": api_token,
    "compat_token": accounts.compat_token(user.account),
}}))
"""


class Client:
    """The three APIs' creation calls and a phone's calls, against one server."""

    def __init__(self, web: int, streams: int, account: dict[str, Any]) -> None:
        self.web, self.streams, self.account = web, streams, account
        self.rest = {"Authorization": f"Bearer {account['api_token']}"}
        self.phone = {"Authorization": f"Bearer {account['device_token']}"}
        basic = base64.b64encode(f"outage@example.com:{PASSWORD}".encode()).decode()
        self.basic = {"Authorization": f"Basic {basic}"}

    def create_rest(self, text: str) -> tuple[int, dict[str, str], Any]:
        body = {"to": "+4915752982212", "body": text, "device_id": self.account["device"]}
        return call(self.web, "POST", "/api/v1/messages", body, self.rest)

    def create_compat(self, text: str) -> tuple[int, dict[str, str], Any]:
        form = (f"token={self.account['compat_token']}&sendto=%2B4915752982212&body={text}"
                f"&device_id={self.account['device']}")  # fmt: skip
        return call(self.web, "POST", "/getdata/addsms", form)

    def create_smsgate(self, text: str) -> tuple[int, dict[str, str], Any]:
        body = {"phoneNumbers": ["+4915752982212"], "textMessage": {"text": text},
                "deviceId": str(self.account["device"]), "id": uuid.uuid4().hex}  # fmt: skip
        return call(self.web, "POST", "/api/3rdparty/v1/messages", body, self.basic)

    def create_all(self, prefix: str) -> list[tuple[int, dict[str, str], Any]]:
        return [
            self.create_rest(f"{prefix}-rest"),
            self.create_compat(f"{prefix}-compat"),
            self.create_smsgate(f"{prefix}-smsgate"),
        ]

    def poll(self, port: int, wait: int = 0) -> tuple[int, dict[str, str], Any]:
        return call(port, "POST", "/api/device/v1/poll", {"wait": wait}, self.phone)

    def in_parallel(self, n: int) -> list[int]:
        """The statuses of ``n`` listings sent at once, so that every thread serves some."""
        with ThreadPoolExecutor(n) as pool:
            answers = pool.map(
                lambda _: call(self.web, "GET", "/api/v1/messages", None, self.rest)[0], range(n)
            )
            return list(answers)

    def bodies(self) -> list[str]:
        status, _, page = call(self.web, "GET", "/api/v1/messages?page_size=500", None, self.rest)
        assert status == 200, page
        return sorted(m["body"] for m in page["results"])


def _created(answers: list[tuple[int, dict[str, str], Any]]) -> None:
    (rest, _, r), (compat, _, c), (smsgate, _, s) = answers
    assert (rest, compat, smsgate) == (201, 200, 202), (r, c, s)
    assert c["error"] == 0, c


def _refused(answer: tuple[int, dict[str, str], Any], content_type: str, body: Any) -> None:
    status, headers, payload = answer
    assert status == 503, payload
    assert headers["retry-after"] == "5"
    assert headers["content-type"] == content_type
    assert payload == body


def test_while_postgresql_is_down_requests_answer_503_and_all_resumes_when_it_returns(
    tmp_path, postgres, monkeypatch, settings
):
    folder = tmp_path / "gateway"
    (folder / "var").mkdir(parents=True)
    _manage(postgres, folder, "migrate", "--noinput")
    account = json.loads(_manage(postgres, folder, "shell", "-c", SETUP).strip().splitlines()[-1])
    # The replica helpers' processes take the database from this module function and the
    # broker from REDIS_URL: the throwaway PostgreSQL and the embedded broker under folder.
    monkeypatch.setattr(replicas, "_database_url", lambda: postgres.url)
    settings.REDIS_URL = ""

    web_port, streams_port = _free_port(), _free_port()
    servers = [
        Process("web", [
            sys.executable, "-m", "gunicorn", "gateway.wsgi", "-c", "python:gateway.gunicorn_conf",
            "--bind", f"127.0.0.1:{web_port}", "--workers", "1", "--threads", "4",
            "--control-socket", str(folder / "gunicorn.ctl"),
        ], folder, web_port),
    ]  # fmt: skip
    try:
        servers.append(Process("streams", [
            sys.executable, "-m", "uvicorn", "gateway.asgi:application", "--host", "127.0.0.1",
            "--port", str(streams_port), "--no-access-log", "--timeout-graceful-shutdown", "1",
        ], folder, streams_port))  # fmt: skip
        client = Client(web_port, streams_port, account)

        _created(client.create_all("before"))
        assert client.poll(web_port)[0] == 200
        # Each thread of the web process keeps a connection from here on (DB_CONN_MAX_AGE).
        assert client.in_parallel(8) == [200] * 8
        assert call(web_port, "GET", "/readyz")[0] == 200

        postgres.stop()
        rest, compat, smsgate = client.create_all("during")
        _refused(rest, "application/problem+json", {
            "type": "https://sms-gateway.invalid/problems/database_unavailable",
            "title": "Service unavailable", "status": 503, "detail": MESSAGE,
        })  # fmt: skip
        # SMSGateway24's contract: every error is HTTP 200 with the error in the body.
        assert compat[0] == 200 and compat[2] == {"error": 1, "message": MESSAGE}, compat
        _refused(smsgate, "application/json", {"message": MESSAGE})
        device_error = {"error": {"code": "database_unavailable", "message": MESSAGE}}
        _refused(client.poll(web_port), "application/json", device_error)
        app_phone = {"Authorization": "Bearer dev_not-registered-but-looked-up"}
        app_fetch = call(web_port, "GET", "/api/mobile/v1/message", None, app_phone)
        _refused(app_fetch, "application/json", {"message": MESSAGE})
        refusals = 5  # on the web process, each one WARNING line
        # The stream process: a long poll's wait and an app's event stream.
        _refused(client.poll(streams_port, wait=5), "application/json", device_error)
        stream = call(streams_port, "GET", "/api/mobile/v1/events", None, app_phone)
        _refused(stream, "application/json", {"message": MESSAGE})

        assert call(web_port, "GET", "/healthz")[0] == 200
        status, _, ready = call(web_port, "GET", "/readyz")
        assert status == 503 and ready["database"] != "ok" and ready["broker"] == "ok", ready

        postgres.start()

        def serves() -> bool:
            return call(web_port, "GET", "/api/v1/messages", None, client.rest)[0] == 200

        wait_for(serves, 20, "the web process serving again")
        # The threads that held a connection when PostgreSQL went serve too (their broken
        # connection fails its health check and is replaced).
        assert client.in_parallel(8) == [200] * 8
        _created(client.create_all("after"))
        assert client.poll(web_port)[0] == 200
        assert client.poll(streams_port, wait=1)[0] == 200
        assert call(web_port, "GET", "/readyz")[0] == 200
        expected = [f"{when}-{api}" for when in ("after", "before")
                    for api in ("compat", "rest", "smsgate")]  # fmt: skip
        assert client.bodies() == expected

        web_log = servers[0].log.read_text(errors="replace")
        streams_log = servers[1].log.read_text(errors="replace")
        assert web_log.count("gateway.outage database unreachable") == refusals, web_log[-3000:]
        assert streams_log.count("gateway.outage database unreachable") == 2, streams_log[-3000:]
        for log in (web_log, streams_log):
            assert "Traceback" not in log and "Internal Server Error" not in log, log[-3000:]
            # Django's error line for a 503 comes only from the /readyz probes, not from the
            # refused requests (their WARNING line is their log).
            unavailable = re.findall(r"Service Unavailable: (\S+)", log)
            assert set(unavailable) <= {"/readyz"}, unavailable
    except BaseException:
        for server in servers:
            print(f"--- {server.name}\n{server.log.read_text(errors='replace')[-4000:]}")
        print(f"--- postgres\n{postgres.log.read_text(errors='replace')[-2000:]}")
        raise
    finally:
        for server in servers:
            server.stop(timeout=15)
