"""An unreachable database answers 503 with Retry-After in each API's error shape
(gateway.outage), in process: views of every face that raise the error Django raises when
the connection is refused or lost. The database itself is never mocked; tests/
test_database_outage.py stops a real PostgreSQL under a running server."""

from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
from typing import Any

import psycopg
import psycopg.errors
import pytest
from django.db import IntegrityError, InterfaceError, OperationalError, utils
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.request import Request
from rest_framework.views import APIView

from devices.api.views import DeviceView
from devices.mobile import views as mobile
from gateway import asgi, jwt_tokens, outage
from messaging.api import compat
from messaging.api.smsgate import views as smsgate

MESSAGE = "The database is not reachable; the request was not completed. Retry shortly."


# In the order Django's DatabaseErrorWrapper tries them.
DJANGO_ERRORS = (
    utils.DataError,
    utils.OperationalError,
    utils.IntegrityError,
    utils.InternalError,
    utils.ProgrammingError,
    utils.NotSupportedError,
    utils.DatabaseError,
    utils.InterfaceError,
    utils.Error,
)


def raise_database_error(cause: Exception) -> None:
    """Raise a driver's error as Django's DatabaseErrorWrapper does: as the Django error of
    the same name, the driver's as its cause (done here by hand, so that psycopg's errors
    can be raised on the SQLite run too)."""
    driver: Any = psycopg if isinstance(cause, psycopg.Error) else sqlite3
    for kind in DJANGO_ERRORS:
        if isinstance(cause, getattr(driver, kind.__name__)):
            raise kind(*cause.args) from cause
    raise cause


def connection_lost(*args: Any, **kwargs: Any) -> HttpResponse:
    raise_database_error(
        psycopg.OperationalError("consuming input failed: server closed the connection")
    )
    raise AssertionError("not reached")


class RestView(APIView):
    """A view of the REST API's kind: DRF, the API's own exception handler (settings)."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []

    def get(self, request: Request) -> HttpResponse:
        return connection_lost()


class DeviceApiView(DeviceView):
    """A view of the device protocol: DRF with devices.api.views.exception_handler."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def get(self, request: Request) -> HttpResponse:
        return connection_lost()


def statement_timeout(request: HttpRequest) -> HttpResponse:
    raise_database_error(psycopg.errors.QueryCanceled("canceling statement due to timeout"))
    raise AssertionError("not reached")


urlpatterns = [
    path("getdata/<str:method>", compat.getdata),
    path("api/v1/lost", RestView.as_view()),
    path("api/device/v1/lost", DeviceApiView.as_view()),
    path("api/mobile/v1/lost", mobile._protocol(connection_lost)),
    path("api/3rdparty/v1/lost", smsgate.api(GET=(connection_lost, jwt_tokens.ALL))),
    path("admin/lost", connection_lost),
    path("slow", statement_timeout),
]

pytestmark = pytest.mark.urls(__name__)


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def _answered_503(
    response: Any, content_type: str, body: Any, log: pytest.LogCaptureFixture
) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == content_type
    assert response.json() == body
    # One WARNING line of ours, nothing else at WARNING or above (no traceback, no
    # "Service Unavailable" error from django.request).
    records = log.records
    loud = [(r.name, r.levelname, r.getMessage()) for r in records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, loud
    name, level, text = loud[0]
    assert (name, level) == ("gateway.outage", "WARNING")
    assert "refused" in text and "server closed the connection" in text
    assert all(r.exc_info is None for r in records)


def test_compat_answers_its_error_body_with_http_200(monkeypatch, log_lines):
    # The method's handler is where the error rises; getdata's own error handling is real.
    # SMSGateway24's clients read errors only from HTTP 200 bodies: so does this one.
    monkeypatch.setitem(compat.METHODS, "addsms", connection_lost)
    response = Client().post("/getdata/addsms", {"token": "x", "sendto": "+4915752982212"})
    assert response.status_code == 200
    assert response.json() == {"error": 1, "message": MESSAGE}
    loud = [r for r in log_lines.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname, r.exc_info) for r in loud] == [
        ("gateway.outage", "WARNING", None)
    ]


def test_rest_api_answers_503_as_a_problem_document(log_lines):
    # DRF's exception handler (ours, around DRF's) leaves the error to the middleware.
    problem = {
        "type": "https://sms-gateway.invalid/problems/database_unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": MESSAGE,
    }
    _answered_503(Client().get("/api/v1/lost"), "application/problem+json", problem, log_lines)


def test_device_api_answers_503_in_its_error_shape(log_lines):
    body = {"error": {"code": "database_unavailable", "message": MESSAGE}}
    _answered_503(Client().get("/api/device/v1/lost"), "application/json", body, log_lines)


def test_smsgate_app_protocol_answers_503_in_its_shape(log_lines):
    response = Client().get("/api/mobile/v1/lost")
    _answered_503(response, "application/json", {"message": MESSAGE}, log_lines)


def test_smsgate_integration_api_answers_503_in_its_shape(make_user, log_lines):
    user = make_user("outage@example.com", "correct horse battery")
    basic = base64.b64encode(b"outage@example.com:correct horse battery").decode()
    assert user.account is not None
    response = Client(HTTP_AUTHORIZATION=f"Basic {basic}").get("/api/3rdparty/v1/lost")
    _answered_503(response, "application/json", {"message": MESSAGE}, log_lines)


def test_other_paths_answer_503_in_one_json_shape(log_lines):
    body = {"error": "database_unavailable", "message": MESSAGE}
    _answered_503(Client().get("/admin/lost"), "application/json", body, log_lines)


def test_a_failed_statement_on_a_working_connection_stays_a_server_error():
    response = Client(raise_request_exception=False).get("/slow")
    assert response.status_code == 500
    assert "Retry-After" not in response


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (psycopg.OperationalError("connection failed: Connection refused"), True),
        (psycopg.OperationalError("consuming input failed: EOF detected"), True),
        (psycopg.errors.ConnectionFailure("connection failure"), True),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.TooManyConnections("too many clients already"), True),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (psycopg.errors.SerializationFailure("could not serialize access"), False),
        (psycopg.errors.DeadlockDetected("deadlock detected"), False),
        (psycopg.InterfaceError("the cursor is closed"), True),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (sqlite3.OperationalError("database is locked"), False),
        (sqlite3.OperationalError("no such table: messaging_message"), False),
    ],
)
def test_only_connection_failures_count_as_unreachable(cause, expected):
    with pytest.raises(Exception) as raised:
        raise_database_error(cause)
    assert raised.value.__cause__ is cause
    assert outage.unreachable(raised.value) is expected


def test_errors_that_are_not_the_databases_are_not_unreachable():
    assert outage.unreachable(InterfaceError("connection already closed"))
    assert not outage.unreachable(OperationalError("no driver error behind it"))
    assert not outage.unreachable(IntegrityError("duplicate key"))
    assert not outage.unreachable(ValueError("nothing to do with it"))


def _asgi_messages(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(asgi._answering_outages(app, scope, receive, send))
    return sent


def test_the_stream_process_native_paths_answer_503_too(log_lines):
    async def poll(scope: Any, receive: Any, send: Any) -> None:
        connection_lost()  # where longpoll.app authenticates the phone

    start, body = _asgi_messages(poll, "/api/device/v1/poll")
    assert start["status"] == 503
    assert dict(start["headers"]) == {b"content-type": b"application/json", b"retry-after": b"5"}
    assert body["body"] == b'{"error":{"code":"database_unavailable","message":"%s"}}' % (
        MESSAGE.encode()
    )
    loud = [r.name for r in log_lines.records if r.levelno >= logging.WARNING]
    assert loud == ["gateway.outage"]


def test_an_open_stream_is_ended_when_the_database_goes(log_lines):
    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
        connection_lost()

    sent = _asgi_messages(stream, "/api/mobile/v1/events")
    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_the_stream_process_leaves_other_errors_to_the_server():
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise_database_error(psycopg.errors.QueryCanceled("canceling statement"))

    with pytest.raises(OperationalError):
        _asgi_messages(broken, "/api/device/v1/poll")
