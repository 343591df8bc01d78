"""When the database does not answer: 503 with Retry-After, in the caller's API's shape
(SMSGateway24's /getdata/ excepted: its contract is HTTP 200 with the error in the body).

PostgreSQL stopped, restarting or cut off makes every query raise, and Django would answer
its generic 500 (an HTML page and a traceback in the log for every request). Instead the
request gets a 503 saying what happened, in the error shape of the API it called, and the
log one WARNING line. What the request was to store is not stored: each of the APIs' writes
is one transaction, which rolled back with the connection or never began. (Only a
connection lost during the COMMIT itself leaves the outcome unknown, to the server too:
docs/operations.md, "When PostgreSQL is down".)

Recovery needs nothing from here: Django closes a connection that raised and fails its
usability check when the request ends, and with CONN_HEALTH_CHECKS each thread checks the
connection it keeps before its next request uses it, so requests succeed again as soon as
PostgreSQL answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
CODE = "database_unavailable"
MESSAGE = "The database is not reachable; the request was not completed. Retry shortly."
# The REST API's problem types (messaging.api.v1.base.PROBLEM_TYPES; an interface this
# module may not import).
PROBLEM_TYPE = "https://sms-gateway.invalid/problems/" + CODE

# What the server says when it ends or refuses a session: a connection exception (08...),
# shut down, crashed or still starting up (57P...), no connection slot left (53300).
_REFUSALS = ("08", "57P", "53300")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached, rather than that a statement
    failed. psycopg gives a failure of the connection itself (refused, lost, timed out) no
    SQLSTATE; the server's own refusals are _REFUSALS. Other operational errors (a
    statement timeout 57014, a serialization failure 40001, a deadlock 40P01, any SQLite
    error, which has no SQLSTATE attribute at all) say something about the request, not the
    server, and stay 500s."""
    if isinstance(exc, InterfaceError):  # the connection was already closed
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", "")
    return sqlstate is None or (bool(sqlstate) and sqlstate.startswith(_REFUSALS))


def report(method: str, path: str, exc: BaseException) -> None:
    """The one log line of a request refused for it (the exception's first line only: a
    traceback per request would bury the log while the database is away)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    log.warning("database unreachable, %s %s refused: %s: %s", method, path,
                type(exc).__name__, first)  # fmt: skip


def body(path: str) -> tuple[str, dict[str, Any]]:
    """(content type, JSON body) of the 503 for ``path``, in its API's error shape."""
    # (/getdata/ answers in its own view: HTTP 200 with the error in the body, its
    # contract, messaging.api.compat.getdata.)
    if path.startswith("/api/v1/"):
        problem = {"type": PROBLEM_TYPE, "title": "Service unavailable", "status": 503}
        return "application/problem+json", {**problem, "detail": MESSAGE}
    if path.startswith("/api/device/v1/"):
        return "application/json", {"error": {"code": CODE, "message": MESSAGE}}
    if path.startswith(("/api/mobile/v1/", "/api/3rdparty/v1/", "/3rdparty/v1/")):
        return "application/json", {"message": MESSAGE}  # SMSGate's shape, both faces
    return "application/json", {"error": CODE, "message": MESSAGE}


def response(path: str) -> HttpResponse:
    content_type, payload = body(path)
    answer = HttpResponse(orjson.dumps(payload), status=503, content_type=content_type)
    answer["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return answer


def asgi_response(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same answer as the two ASGI messages that send it."""
    content_type, payload = body(path)
    headers = [
        (b"content-type", content_type.encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    ]
    start = {"type": "http.response.start", "status": 503, "headers": headers}
    return start, {"type": "http.response.body", "body": orjson.dumps(payload)}


class DatabaseOutageMiddleware:
    """A view that raised because the database is unreachable answers 503. DRF's views get
    here too: their exception handlers answer only APIExceptions (and 404s, permission
    errors) and re-raise the rest. An error raised in a middleware is not seen here (it
    stays a 500); none in MIDDLEWARE touches the database on the APIs' paths (sessions
    and users are read lazily, by the views)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not unreachable(exception):
            return None
        report(request.method or "", request.path, exception)
        answer = response(request.path)
        # report() was its log line: not Django's "Service Unavailable" error line as well.
        answer._has_been_logged = True  # type: ignore[attr-defined]
        return answer
