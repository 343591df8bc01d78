"""The run command's processes (Procfile: gunicorn, Celery worker, beat) really work together.

Starts them with gateway.supervisor, as scripts/run.sh does, on a temporary var/ directory, and checks
the admin and health pages and that beat-scheduled work is executed by the worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


def _check_h2c_upgrade_is_answered_in_http11(port: int) -> None:
    """The Java client asks to upgrade to h2c on plain HTTP; it must get HTTP/1.1 back."""
    form = b"pass=p%40ss%2Bw%26rd&email=user%40example.com&token=NO_TOKEN"
    request = (
        b"POST /getdata/gettoken HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"User-Agent: Java 11 HttpClient Bot\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\n"
        b"HTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while b"}" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body) == {"error": 1, "message": "Login or password incorrect"}


@pytest.mark.parametrize("broker", ["filesystem", pytest.param("redis", marks=pytest.mark.redis)])
def test_web_worker_and_beat_run_together_on_the_embedded_database(tmp_path, broker):
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env['PATH']}",
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
        GATEWAY_PORT=str(port),
        WORKER_HEARTBEAT_SECONDS="1",
        WEB_WORKERS="1",
        WORKER_CONCURRENCY="1",
    )
    if broker == "redis":
        env["REDIS_URL"] = settings.REDIS_URL
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        subprocess.run(
            [sys.executable, "manage.py", *command, "-v0"], cwd=ROOT, env=env, check=True
        )
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.supervisor", "--procfile", "Procfile"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _get(f"{base}/healthz")[0] == 200, 30, "web start")
        status, page = _get(f"{base}/admin/login/")
        assert status == 200 and b"Email" in page
        css_status, _ = _get(f"{base}/static/admin/css/base.css")
        assert css_status == 200
        icon_status, icon = _get(f"{base}/favicon.ico")  # redirected to the collected icon
        assert icon_status == 200 and icon.startswith(b"<svg")
        _check_h2c_upgrade_is_answered_in_http11(port)

        def worker_ran() -> bool:
            status, body = _get(f"{base}/readyz")
            report = json.loads(body)
            return status == 200 and report["worker_seen_seconds_ago"] is not None

        _wait_for(worker_ran, 40, "a beat-scheduled task run by the worker")
        log.flush()
        started = (tmp_path / "run.log").read_text()
        # Start-up without noise: no warning kombu prints when a broker URL names no host.
        assert "No hostname was supplied" not in started

        # A clean stop, as Ctrl-C or a service manager asks for it: every program stops the
        # way it means to (Celery's warm shutdown stops its own pool), nothing is killed.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        log.flush()
        stopped = (tmp_path / "run.log").read_text()[len(started) :]
        assert "Warm shutdown" in stopped
        for noise in ("exited with", "signal 15", "SIGKILL", "killing it", "ERROR", "Traceback"):
            assert noise not in stopped, stopped
        assert stopped.count(" stopped in ") == 5, stopped
    except AssertionError:
        log.flush()
        print((tmp_path / "run.log").read_text()[-5000:])
        raise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
