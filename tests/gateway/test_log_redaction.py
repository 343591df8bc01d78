"""Secrets never reach a log line: Django's configured handlers, gunicorn's access and error
logs (started as the Procfile starts it), and the Celery worker's handlers."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.redaction import MASK, redact

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

COMPAT = "0123456789abcdef0123456789abcdef"
API = "sgw_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"
DEVICE = "dev_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8Nn7Mm6"
PASSWORD = "Hunter2-long-pass"


def test_redact_masks_tokens_passwords_and_credentials():
    lines = {
        f'"GET /getdata/getallsms?token={COMPAT}&device_id=3 HTTP/1.1" 200': COMPAT,
        f"POST /getdata/gettoken?email=a%40b.c&pass={PASSWORD}": PASSWORD,
        f"password={PASSWORD}&next=/admin/": PASSWORD,
        f"{{'email': 'a@b.c', 'password': '{PASSWORD}'}}": PASSWORD,
        f'{{"token": "{COMPAT}", "smsdata": []}}': COMPAT,
        f"access_token={API}": API,
        f"Authorization: Bearer {API}": API,
        f"'HTTP_AUTHORIZATION': 'Bearer {DEVICE}'": DEVICE,
        "Authorization: Basic dXNlcjpwYXNzd29yZA==": "dXNlcjpwYXNzd29yZA==",
        f"paired device 7, token {DEVICE}": DEVICE,
        f'"GET /api/v1/messages?key={COMPAT} HTTP/1.1"': COMPAT,
        f"kwargs=(password='{PASSWORD}')": PASSWORD,
    }
    for line, secret in lines.items():
        assert secret not in redact(line), line
        assert MASK in redact(line), line
        assert redact(redact(line)) == redact(line), line  # a second filter changes nothing


def test_redact_leaves_ordinary_lines_alone():
    for line in (
        '"GET /getdata/getallsms?device_id=3&status=6&page=2 HTTP/1.1" 200 512',
        "token sgw_Ab12Cd34 created (prefix shown in the admin)",
        "message 4f1c2a9e-0b7d-4c55-9e3a-1d2f3a4b5c6d claimed by device 12",
        "bypass=1 compass=north status_code=200",
        "Login or password incorrect",
    ):
        assert redact(line) == line


@contextlib.contextmanager
def captured_root_output() -> Iterator[io.StringIO]:
    """What the handlers settings.LOGGING configured on the root logger write."""
    output = io.StringIO()
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not type(h).__module__.startswith("_pytest")
    ]
    assert handlers, "settings.LOGGING configures a console handler"
    previous = [h.setStream(output) for h in handlers]
    try:
        yield output
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)


@pytest.mark.django_db(transaction=True)
def test_a_compat_get_with_a_token_leaves_no_secret_in_the_django_server_log(account):
    from django.core.servers.basehttp import (
        WSGIRequestHandler,
        WSGIServer,
        get_internal_wsgi_application,
    )

    from gateway import services

    token = services.compat_token(account)
    # runserver's own server: it logs each request line through the "django.server" logger.
    # Loading the WSGI application runs django.setup(), which configures logging afresh.
    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler, ipv6=False)
    server.set_app(get_internal_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with contextlib.ExitStack() as stack:
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        captured = stack.enter_context(captured_root_output())
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/getdata/getallsms?token={token}&page=1"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert b'"error":0' in response.read().replace(b" ", b"")
        bad = f"http://127.0.0.1:{port}/no/such/page/{API}?password={PASSWORD}"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(bad, timeout=10)
        logging.getLogger("gateway").error("boom", exc_info=ValueError(f"token={token}"))
    written = captured.getvalue()
    assert "/getdata/getallsms?token=[redacted]&page=1" in written
    assert "Not Found: /no/such/page/sgw_[redacted]" in written  # django.request
    assert "ValueError: token=[redacted]" in written
    for secret in (token, API, PASSWORD):
        assert secret not in written


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _embedded_env(var_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    }
    env.update(GATEWAY_VAR_DIR=str(var_dir), LOG_LEVEL="INFO", DEBUG="0")
    return env


@pytest.mark.slow
def test_gunicorn_access_and_error_logs_hide_tokens_and_passwords(tmp_path):
    env = _embedded_env(tmp_path / "var")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    created = subprocess.run(
        [*manage, "createaccount", "log@example.com", "--password", PASSWORD],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token = created.split("token:", 1)[1].split()[0]
    port = _free_port()
    log_path = tmp_path / "gunicorn.log"
    # The Procfile's web command, plus a header in the access format (operators add them).
    command = [
        str(BIN / "gunicorn"),
        "gateway.wsgi",
        "-c",
        "python:gateway.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "4",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        "--access-logformat",
        '%(h)s "%(r)s" %(s)s "%(f)s" "%({authorization}i)s"',
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(log_path.read_text()[-3000:]) from None
                time.sleep(0.2)
        with urllib.request.urlopen(f"{base}/getdata/getallsms?token={token}", timeout=10) as r:
            assert b'"error":0' in r.read().replace(b" ", b"")
        gettoken = f"{base}/getdata/gettoken?email=log%40example.com&pass={PASSWORD}"
        with urllib.request.urlopen(urllib.request.Request(gettoken, method="POST"), timeout=10):
            pass
        request = urllib.request.Request(
            f"{base}/api/v1/messages",
            headers={"Authorization": f"Bearer {API}", "Referer": f"{base}/x?token={token}"},
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/nothing/{DEVICE}", timeout=10)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    written = log_path.read_text()
    assert '"GET /getdata/getallsms?token=[redacted] HTTP/1.1" 200' in written
    assert "pass=[redacted]" in written
    assert '"Bearer [redacted]"' in written or '"[redacted]"' in written
    assert "/nothing/dev_[redacted]" in written
    for secret in (token, PASSWORD, API, DEVICE):
        assert secret not in written, written


def test_the_celery_worker_log_handlers_redact(tmp_path):
    script = (
        "import logging, django\n"
        "django.setup()\n"
        "from celery.utils.log import get_task_logger\n"
        "from gateway.celery import app\n"
        "app.log.setup(loglevel='INFO', colorize=False)\n"  # what the worker and beat run
        f"logging.getLogger('celery.worker').warning('calling https://hook.example/?token={COMPAT}')\n"
        f"get_task_logger('messaging.tasks').warning('header Authorization: Bearer {API}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=_embedded_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    written = result.stdout + result.stderr
    assert "https://hook.example/?token=[redacted]" in written
    assert "Authorization: [redacted]" in written
    assert COMPAT not in written and API not in written
