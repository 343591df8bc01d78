import socket

import pytest

from gateway.celery import app as celery_app
from gateway.health import record_heartbeat


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_answers_without_touching_anything(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ok_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["database"] == "ok" and body["broker"] == "ok"
    assert body["worker_seen_seconds_ago"] is None


@pytest.mark.django_db
def test_readyz_reports_the_last_worker_heartbeat(client):
    record_heartbeat("worker")
    assert client.get("/readyz").json()["worker_seen_seconds_ago"] in (0, 1)


@pytest.mark.django_db
def test_readyz_is_503_when_the_broker_is_unreachable(client, monkeypatch):
    # A Redis URL on a port where nothing listens: a real refused connection.
    monkeypatch.setattr(celery_app.conf, "broker_url", f"redis://127.0.0.1:{_free_port()}/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "refused" in response.json()["broker"].lower()
